"""Composition: the RDP curves of privacy events, running tallies, and single-event figures.

* **RDP** (Mironov 2017): Rényi divergences of adaptively composed mechanisms
  add up order by order, so a scope's curve is the sum of its events' curves.
  Per-event curves come from ``dp_accounting`` (Gaussian, Laplace,
  Poisson-sampled Gaussian); a generic ε event uses the binary
  randomized-response pair, of which every ε-DP mechanism is a
  post-processing (Kairouz, Oh and Viswanath 2015), so its divergences bound
  the mechanism's. A generic (ε, δ > 0) event has the same curve for its
  randomized-response part; its δ is accounted separately (see
  :mod:`privml.accounting.filter`, which decides admission from these sums).
* **One event on its own** (:func:`epsilon_alone`, what a release claims by
  itself and what DP-SGD calibrates σ on): the smaller of its RDP conversion
  and its PLD (``dp_accounting``'s pessimistic privacy-loss distribution,
  bounded in size by :mod:`privml.accounting._pld`). One event's parameters
  are fixed before it runs, so both are valid for it.
* **Naive** (:func:`naive_costs`): basic composition of each event's own ε,
  for comparison only.

GDP/CLT approximations are never used: they are not upper bounds.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from .events import PrivacyEvent

__all__ = [
    "ORDERS",
    "REPORT_DISCRETIZATION",
    "Curve",
    "Tally",
    "Unit",
    "accountant_name",
    "epsilon_alone",
    "naive_costs",
    "rdp_curve",
    "rdp_epsilon",
    "unit_counts",
    "units_of",
]

# RDP orders. Stored curves are sums over these exact orders: never change them
# without recomputing the stored curves.
ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)]
    + [float(a) for a in range(11, 64)]
    + [128, 256, 512, 1024]
)
REPORT_DISCRETIZATION = 1e-4  # PLD interval of single-event and fixed-sequence figures

Curve = npt.NDArray[np.float64]
# A mechanism applied once: ("laplace", noise multiplier, 0), ("gaussian", nm, 0),
# ("sampled_gaussian", nm, q), ("generic", ε, δ). Events are counts of units.
Unit = tuple[str, float, float]


def accountant_name() -> str:
    """The accounting library and its version, recorded with every figure."""
    from ._dp import LIBRARY

    return LIBRARY


def unit_counts(event: PrivacyEvent) -> tuple[Unit, int]:
    """The event as ``count`` applications of one unit mechanism."""
    p = event.params
    if event.kind == "laplace":
        return ("laplace", p["scale"] / p["sensitivity"], 0.0), 1
    if event.kind == "gaussian":
        return ("gaussian", p["noise_multiplier"], 0.0), 1
    if event.kind == "dp_sgd":
        if p["sample_rate"] == 1.0:
            return ("gaussian", p["noise_multiplier"], 0.0), p["steps"]
        return ("sampled_gaussian", p["noise_multiplier"], p["sample_rate"]), p["steps"]
    return ("generic", p["epsilon"], p["delta"]), 1


# -- RDP ------------------------------------------------------------------------------
class _QuietNonConvergence(logging.Filter):
    """Drop dp_accounting's note that an RDP order did not converge: that order is set
    to ∞ (excluded), which keeps the bound sound, and the user can do nothing about it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


@lru_cache(maxsize=4096)
def _unit_rdp(unit: Unit) -> Curve:
    kind, a, b = unit
    orders = np.array(ORDERS)
    if kind == "generic":
        # Binary randomized response with ratio e^ε, the worst ε-DP pair (for an
        # (ε, δ) event: the part outside its δ flag, which the filter keeps apart).
        lp = -math.log1p(math.exp(-a))  # log e^ε/(1+e^ε)
        lq = lp - a  # log 1/(1+e^ε), without overflow for large ε
        mix = np.logaddexp(orders * lp + (1 - orders) * lq, orders * lq + (1 - orders) * lp)
        curve: Curve = np.minimum(mix / (orders - 1), a)
    else:
        from . import _dp

        de = _dp.dp_event
        inner = de.GaussianDpEvent(a) if kind != "laplace" else de.LaplaceDpEvent(a)
        event = de.PoissonSampledDpEvent(b, inner) if kind == "sampled_gaussian" else inner
        accountant = _dp.RdpAccountant(orders=list(ORDERS))
        quiet, logger = _QuietNonConvergence(), logging.getLogger("absl")
        logger.addFilter(quiet)
        try:
            accountant.compose(event)
        finally:
            logger.removeFilter(quiet)
        curve = np.array(accountant.rdp, dtype=np.float64)  # the composed curve
    curve.setflags(write=False)
    return curve


def rdp_curve(event: PrivacyEvent) -> Curve:
    """The event's RDP curve over :data:`ORDERS` (a new array)."""
    unit, count = unit_counts(event)
    return _unit_rdp(unit) * count


def rdp_epsilon(curve: Curve, delta: float) -> float:
    """ε at ``delta`` of an RDP curve; ∞ at δ = 0 unless the curve is zero."""
    from ._dp import compute_epsilon

    if not np.any(curve):
        return 0.0
    if delta <= 0:
        return math.inf
    return float(compute_epsilon(ORDERS, [float(r) for r in curve], delta)[0])


# -- tallies and figures --------------------------------------------------------------
@dataclass
class Tally:
    """What a set of events has spent, in the forms the privacy filter needs.

    ``rdp`` sums the events' RDP curves; ``pure_epsilon`` the ε of the pure
    ε-DP ones; ``impure`` counts the others. Generic (ε, δ > 0) events are
    among the impure ones and are also summed in ``approx`` (their number),
    ``approx_epsilon`` and ``approx_delta``.
    """

    rdp: Curve
    pure_epsilon: float = 0.0
    impure: int = 0
    count: int = 0
    approx: int = 0
    approx_epsilon: float = 0.0
    approx_delta: float = 0.0

    @classmethod
    def empty(cls) -> Tally:
        return cls(np.zeros(len(ORDERS)))

    @classmethod
    def of(cls, events: Iterable[PrivacyEvent]) -> Tally:
        tally = cls.empty()
        for event in events:
            tally = tally.plus(event)
        return tally

    def plus(self, event: PrivacyEvent) -> Tally:
        pure = event.pure_epsilon
        approx = event.kind == "generic" and pure is None
        p = event.params
        return Tally(
            self.rdp + rdp_curve(event),
            self.pure_epsilon + (pure or 0.0),
            self.impure + (pure is None),
            self.count + 1,
            self.approx + approx,
            self.approx_epsilon + (p["epsilon"] if approx else 0.0),
            self.approx_delta + (p["delta"] if approx else 0.0),
        )

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.rdp + other.rdp,
            self.pure_epsilon + other.pure_epsilon,
            self.impure + other.impure,
            self.count + other.count,
            self.approx + other.approx,
            self.approx_epsilon + other.approx_epsilon,
            self.approx_delta + other.approx_delta,
        )


@lru_cache(maxsize=1024)
def _alone(unit: Unit, count: int, delta: float) -> float:
    if unit[0] == "laplace":
        return count / unit[1]
    from ._pld import pld_epsilon, unit_pld

    rdp = rdp_epsilon(_unit_rdp(unit) * count, delta)
    pld = unit_pld(unit, count, REPORT_DISCRETIZATION)  # None when too large to compute
    return rdp if pld is None else min(rdp, pld_epsilon(pld, delta))


def epsilon_alone(event: PrivacyEvent, delta: float, *, tight: bool = True) -> float:
    """The ε of one event on its own at ``delta`` (what a release would claim by itself).

    Valid for that one event, whose parameters are fixed before it runs; it is
    not an admission figure (the ledger composes with its privacy filter).
    Memory and time are bounded for any valid event; ``tight=False`` skips
    the PLD (RDP conversion only: cheaper, never smaller).
    """
    if event.pure_epsilon is not None:
        return event.pure_epsilon
    if event.kind == "generic":
        return event.params["epsilon"] if event.params["delta"] <= delta else math.inf
    if delta <= 0:
        return math.inf
    unit, count = unit_counts(event)
    if not tight:
        return rdp_epsilon(rdp_curve(event), delta)
    return _alone(unit, count, delta)


def naive_costs(events: list[PrivacyEvent], delta: float) -> list[float]:
    """Each event's cost under basic composition, whose sum is the "naive" total.

    Pure events cost their ε; a generic (ε, δᵢ) event costs ε and uses up δᵢ;
    the rest of δ is split evenly among the other events, each costing its own
    ε at its share. The sum is a valid (ε, δ) bound, as diffprivlib's
    ``BudgetAccountant`` would compute it; tight composition is compared to it.
    """
    needs = [e for e in events if e.kind in ("gaussian", "dp_sgd")]
    used = sum(e.params["delta"] for e in events if e.kind == "generic")
    share = (delta - used) / len(needs) if needs else delta
    return [
        epsilon_alone(e, share) if e.kind in ("gaussian", "dp_sgd") else epsilon_alone(e, delta)
        for e in events
    ]


def units_of(events: Iterable[PrivacyEvent]) -> Counter[Unit]:
    """Group events into unit mechanisms and counts (identical work composes once)."""
    units: Counter[Unit] = Counter()
    for event in events:
        unit, count = unit_counts(event)
        units[unit] += count
    return units
