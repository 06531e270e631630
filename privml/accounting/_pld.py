"""Privacy-loss distributions with bounded memory and time (figures beside admission, never for it).

PLD composition (Meiser and Mohammadi 2018; Koskela et al. 2020, as
``dp_accounting``'s pessimistic PLDs) is the tightest figure for a sequence of
mechanisms whose parameters are fixed in advance: one event on its own (e.g.
one DP-SGD run, reserved with its σ, q and steps) or, labelled
"fixed-sequence", everything a dataset has spent. It is not a privacy filter
under adaptively chosen parameters, so the ledger never admits by it.

Every array here is bounded by :data:`MAX_POINTS`: a single mechanism's
discretization interval is widened until its privacy-loss support fits (a
coarser pessimistic discretization only overestimates ε, so the figure stays
an upper bound), and a composition whose result ``dp_accounting`` would make
longer is not computed (None: the figure is simply not reported).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .composition import Unit

__all__ = ["MAX_POINTS", "MAX_UNITS", "pld_epsilon", "pld_of", "support", "unit_pld"]

MAX_POINTS = 1_000_000  # most points of a composed PLD array (8 MB of float64)
MAX_SINGLE = 200_000  # most points of one mechanism's PLD (building it is the slow part)
MAX_UNITS = 32  # most distinct mechanisms composed into one fixed-sequence figure
_TAIL = 1e-15  # dp_accounting's default tail-mass truncation of a composition
_GAUSS_TAIL = 11.0  # the Gaussian tail (in σ) inside dp_accounting's truncation at e^-50


def support(unit: Unit) -> float:
    """An upper bound on the width of one application's privacy-loss support."""
    kind, a, b = unit
    if kind == "laplace":  # loss within ±1/a for noise multiplier b
        return 2.0 / a
    if kind == "generic":  # the dominating pair's losses are ±ε (and the ∞ flag)
        return 2.0 * a
    # Gaussian of noise multiplier σ: loss (2x - 1) / (2σ²) over x within _GAUSS_TAIL·σ
    # of either mean; Poisson subsampling at rate q maps a loss z to log(1 - q + q e^z).
    z = (2 * _GAUSS_TAIL * a + 1) / (2 * a**2)
    if kind == "gaussian" or b >= 1:
        return 2.0 * z
    top = float(np.logaddexp(math.log1p(-b), math.log(b) + z)) - math.log1p(-b)
    return 2.0 * top


def _interval(unit: Unit, discretization: float) -> float:
    return max(discretization, support(unit) / MAX_SINGLE)


def _single(unit: Unit, discretization: float) -> Any:
    from . import _dp

    pld, (kind, a, b) = _dp.pld, unit
    d = _interval(unit, discretization)
    if kind == "gaussian":
        return pld.from_gaussian_mechanism(standard_deviation=a, value_discretization_interval=d)
    if kind == "sampled_gaussian":
        return pld.from_gaussian_mechanism(
            standard_deviation=a, sampling_prob=b, value_discretization_interval=d
        )
    if kind == "laplace":
        return pld.from_laplace_mechanism(parameter=a, value_discretization_interval=d)
    params = _dp.pld_common.DifferentialPrivacyParameters(epsilon=a, delta=b)
    return pld.from_privacy_parameters(params, value_discretization_interval=d)


# The dp_accounting internals read here, for want of public accessors (pyproject keeps
# dp-accounting below 0.7; tests/dp/test_library_symbols.py checks each), all inside
# try/except so a change drops the PLD figure instead of failing: PrivacyLossDistribution's
# _pmf_remove/_pmf_add (sizing a composition before running it), a dense PMF's _probs (for
# pld_common.compute_self_convolve_bounds), and a PMF's _discretization (one interval to compose).
def _pmfs(pld: Any) -> list[Any]:
    remove, add = pld._pmf_remove, pld._pmf_add  # dp_accounting internals, guarded by callers
    return [remove] if add is remove else [remove, add]


def _composed_points(one: Any, count: int) -> int:
    """How long ``dp_accounting`` would make ``one`` self-composed ``count`` times."""
    from . import _dp

    longest = 0
    for pmf in _pmfs(one):
        dense = pmf.to_dense_pmf() if hasattr(pmf, "to_dense_pmf") else pmf
        low, high = _dp.pld_common.compute_self_convolve_bounds(dense._probs, count, _TAIL)
        longest = max(longest, high - low + 1, dense.size)
    return longest


def _size(pld: Any) -> int:
    return max(int(pmf.size) for pmf in _pmfs(pld))


@lru_cache(maxsize=16)
def unit_pld(unit: Unit, count: int, discretization: float) -> Any | None:
    """``count`` applications of ``unit`` as one PLD, or None when it would be too large.

    None too where ``dp_accounting`` cannot represent the mechanism (e.g. it
    overflows computing e^ε for a huge ε): the figure is then not reported.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            return _unit_pld(unit, count, discretization)
    except (ArithmeticError, ValueError, RuntimeWarning):
        return None


def _unit_pld(unit: Unit, count: int, discretization: float) -> Any | None:
    kind, a, _ = unit
    if kind == "gaussian":  # k Gaussians are one Gaussian with σ/√k: exact
        return _single(("gaussian", a / math.sqrt(count), 0.0), discretization)
    one = _single(unit, discretization)
    if count == 1:
        return one
    try:
        if _composed_points(one, count) > MAX_POINTS:
            return None
    except (AttributeError, TypeError):  # dp_accounting changed its internals: skip PLD
        return None
    return one.self_compose(count)


def pld_of(units: Mapping[Unit, int], discretization: float) -> Any | None:
    """The composed PLD of ``units`` (mechanism -> count), or None when too large."""
    from ._dp import pld as pld_module

    active = sorted(u for u in units if units[u] > 0)
    if len(active) > MAX_UNITS:
        return None
    out = pld_module.identity(value_discretization_interval=discretization)
    for unit in active:
        part = unit_pld(unit, units[unit], discretization)
        try:
            if part is None or _size(out) + _size(part) > MAX_POINTS:
                return None
            if _pmfs(part)[0]._discretization != _pmfs(out)[0]._discretization:
                return None  # composing needs one interval; a coarsened part cannot join
        except (AttributeError, TypeError):
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                out = out.compose(part)
        except (ArithmeticError, ValueError, RuntimeWarning):
            return None
    return out


def pld_epsilon(pld: Any, delta: float) -> float:
    """ε at ``delta`` of a PLD (∞ at δ = 0 for anything but the identity; ∞ if unusable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            value = float(pld.get_epsilon_for_delta(delta))
    except (ArithmeticError, ValueError, RuntimeWarning):
        return math.inf
    return math.inf if math.isnan(value) else value
