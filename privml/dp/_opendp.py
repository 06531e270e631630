"""OpenDP's proven measurements, as privml's group-by uses them: vector Laplace, Laplace threshold.

privml writes no noise sampler here: each function builds an OpenDP 0.16
measurement (whose privacy map has a proof in OpenDP's documentation), asks
its map for the privacy loss at the sensitivity privml computed, and runs it.
OpenDP samples in Rust from the operating system's CSPRNG (no seed a caller
can set, never NumPy's generator) and with floating-point-safe discretized
noise. The loss each map reports is kept beside privml's own event (the ledger
composes the event itself and never trusts a library's figure).

Building these measurements needs OpenDP's ``"contrib"`` feature, enabled
when one is first built (an OpenDP-wide switch, never at import).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._optional import require
from ..exceptions import ConfigurationError

__all__ = ["Threshold", "laplace_epsilon", "laplace_vector", "threshold", "version"]

#: The largest threshold searched for (a δ below what any budget accepts needs more).
_MAX_THRESHOLD = 2**40


def _dp(feature: str) -> Any:
    dp = require("opendp.prelude", feature=feature, extra="dp")
    dp.enable_features("contrib")
    return dp


def version() -> str:
    """The installed OpenDP's version (recorded with each event)."""
    from importlib.metadata import version as installed

    return installed("opendp")


def _laplace(scale: float) -> Any:
    dp = _dp("a DP group-by")
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    return dp.m.make_laplace(domain, dp.l1_distance(T=float), scale=scale)


def laplace_epsilon(scale: float, sensitivity: float) -> float:
    """The ε OpenDP's vector Laplace map gives for an L1 ``sensitivity`` at ``scale``."""
    return float(_laplace(scale).map(float(sensitivity)))


def laplace_vector(values: np.ndarray, scale: float) -> np.ndarray:
    """``values`` plus independent Laplace(``scale``) noise on each entry (OpenDP ``make_laplace``).

    Private because: for a vector of L1 sensitivity Δ, Laplace(b) noise on each
    entry is (Δ/b)-DP (OpenDP's proven map, floating-point safe).
    """
    if len(values) == 0:
        return np.zeros(0)
    return np.asarray(_laplace(scale)([float(v) for v in values]), dtype=float)


@dataclass(frozen=True)
class Threshold:
    """A Laplace threshold measurement: its scale, threshold and the (ε, δ) its map gives."""

    scale: float
    threshold: int
    epsilon: float
    delta: float
    _measurement: Any

    def select(self, counts: Mapping[int, int]) -> list[int]:
        """The keys whose noisy count reaches the threshold (their noisy counts are dropped)."""
        if not counts:
            return []
        released = self._measurement({int(k): int(v) for k, v in counts.items()})
        return sorted(int(k) for k in released)

    def release(self, counts: Mapping[int, int]) -> dict[int, float]:
        """The keys whose noisy count reaches the threshold, with those noisy counts."""
        if not counts:
            return {}
        released = self._measurement({int(k): int(v) for k, v in counts.items()})
        return {int(k): float(v) for k, v in released.items()}


def threshold(
    *, epsilon: float, delta: float, keys_per_unit: int, rows_per_key: int = 1
) -> Threshold:
    """Partition selection: noisy distinct-person counts per key, only keys above a threshold.

    The input is, per key, the number of distinct people holding it, each person
    holding at most ``keys_per_unit`` keys (so the count map's L0 sensitivity is
    ``keys_per_unit``, its L∞ 1, its L1 ``keys_per_unit``). Laplace noise of scale
    ``keys_per_unit / epsilon`` on each count; a key is released only if its noisy
    count reaches the threshold ``τ``. The smallest whole ``τ`` is chosen whose map
    (OpenDP's ``make_laplace_threshold``, Rogers 2023, "A Unifying Privacy Analysis
    Framework for Unknown Domain Algorithms in Differential Privacy") stays within
    ``(epsilon, delta)``. The classic form of the bound (Korolova et al. 2009,
    "Releasing search queries and clicks privately"; Wilson et al. 2020,
    "Differentially private SQL with bounded user contribution") is
    ``τ = 1 - (C/ε)·ln(2 - 2(1 - δ)^(1/C))`` for ``C`` keys per person.

    The noisy count of a key released *reaches* ``τ``, where OpenDP's map assumes it
    exceeds it: ``δ`` and ``ε`` are that map's for ``τ - 1``, the map of what the
    measurement does (taken at ``τ``, it gave a lone key ``e^(1/scale)`` times less
    than its chance of release).

    Why it is private: a key held by nobody is never in the input; a key held by
    one person (count 1) passes ``τ`` with probability at most ``δ`` (summed over
    the person's ``C`` keys); on keys both neighbours hold, the noisy counts are
    ``ε``-DP. Which keys and noisy counts are released is then ``(ε, δ)``-DP.
    """
    dp = _dp("DP partition selection")
    domain = dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64))
    metric = dp.l01inf_distance(dp.absolute_distance(T=dp.i64))
    c, k = int(keys_per_unit), int(rows_per_key)
    if k == 1:
        scale, d_in = c / epsilon, (c, c, 1)
    else:
        scale, d_in = k / epsilon, (min(c, k), k, k)

    def make(tau: int) -> Any:
        return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=tau)

    def build(tau: int) -> tuple[Any, float, float]:
        # The measurement keeps a key whose noisy count *reaches* tau (measured: keys at
        # tau - 1 pass with probability α/(1+α), α = exp(-1/scale)), while its privacy map
        # gives δ as if the count had to exceed it, e^(1/scale) times too small for a lone
        # key. A key reaching tau is one exceeding tau - 1: that map is this measurement's.
        eps, dlt = make(tau - 1).map(d_in)
        return make(tau), float(eps), float(dlt)

    # OpenDP's map needs a threshold of at least the counts' L∞ sensitivity (k rows on one
    # key with select_on="rows"); the one analysed is tau - 1
    lo, hi = max(2, d_in[2] + 1), _MAX_THRESHOLD
    if build(hi)[2] > delta:
        raise ConfigurationError(
            f"no partition selection threshold up to {hi} keeps δ at or below the delta asked "
            f"at this epsilon and {c} keys per person: raise epsilon or delta, or lower "
            "max_groups_per_unit"
        )
    while lo < hi:  # the smallest threshold whose δ is within delta
        mid = (lo + hi) // 2
        if build(mid)[2] <= delta:
            hi = mid
        else:
            lo = mid + 1
    m, eps, dlt = build(lo)
    if eps > epsilon * (1 + 1e-9):
        raise ValueError("internal: the threshold's map exceeds the ε it was built for")
    return Threshold(scale, lo, eps, dlt, m)
