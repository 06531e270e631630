"""Composition: how much ε a set of privacy events has spent, at a dataset's δ.

Why the figures are sound (each is an upper bound on the true ε at δ under
adaptive composition, for add/remove-one neighbours; the ledger uses the
smallest):

* **RDP** (Mironov 2017): Rényi divergences of adaptively composed mechanisms
  add up order by order, so the dataset's curve is the sum of its events'
  curves; ε at δ is the conversion of Canonne, Kamath and Steinke (2020) as
  implemented by ``dp_accounting.rdp.compute_epsilon``. Per-event curves come
  from ``dp_accounting`` (Gaussian, Laplace, Poisson-sampled Gaussian); a
  generic pure ε event uses the binary randomized-response pair, of which
  every ε-DP mechanism is a post-processing (Kairouz, Oh and Viswanath 2015),
  so its divergences bound the mechanism's. A generic event with δ > 0 has no
  finite RDP bound (∞ at every order).
* **PLD** (Meiser and Mohammadi 2018; Koskela et al. 2020): ``dp_accounting``'s
  pessimistic privacy-loss distributions, composed by convolution. Rounding
  is pessimistic, so a coarser discretization only overestimates ε.
* **Basic** (Dwork et al. 2006): when every event is pure ε-DP, the εs add up,
  and this is exact for pure DP. It is the only figure at δ = 0, where PLD
  and RDP both give ∞ (``dp_accounting`` truncates tails), and events that are
  not pure ε-DP are refused there.

GDP/CLT approximations are never used: they are not upper bounds.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .events import PrivacyEvent

__all__ = [
    "CHECK_DISCRETIZATION",
    "ORDERS",
    "REPORT_DISCRETIZATION",
    "TOLERANCE",
    "Accounting",
    "Method",
    "Tally",
    "account",
    "accountant_name",
    "epsilon_alone",
    "naive_costs",
    "pld_epsilon",
    "pld_of",
    "rdp_curve",
    "rdp_epsilon",
    "unit_counts",
]

# RDP orders. Stored curves are sums over these exact orders: never change them
# without recomputing the stored curves.
ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)]
    + [float(a) for a in range(11, 64)]
    + [128, 256, 512, 1024]
)
CHECK_DISCRETIZATION = 1e-3  # PLD interval for charge checks
REPORT_DISCRETIZATION = 1e-4  # PLD interval for reports (status, plots)
TOLERANCE = 1e-9  # relative tolerance of a budget comparison

Method = Literal["none", "basic", "rdp", "pld"]
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
        if b > 0:
            curve = np.full(len(ORDERS), np.inf)
        else:
            # Binary randomized response with ratio e^ε, the worst ε-DP pair.
            lp = -math.log1p(math.exp(-a))  # log e^ε/(1+e^ε)
            lq = lp - a  # log 1/(1+e^ε), without overflow for large ε
            mix = np.logaddexp(orders * lp + (1 - orders) * lq, orders * lq + (1 - orders) * lp)
            curve = np.minimum(mix / (orders - 1), a)
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
        curve = np.array(accountant._rdp, dtype=np.float64)  # the composed curve
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


# -- PLD ------------------------------------------------------------------------------
@lru_cache(maxsize=512)
def _unit_pld(unit: Unit, count: int, discretization: float) -> Any:
    from . import _dp

    pld = _dp.pld
    kind, a, b = unit
    if kind == "gaussian":  # k Gaussians are one Gaussian with σ/√k: exact
        return pld.from_gaussian_mechanism(
            standard_deviation=a / math.sqrt(count), value_discretization_interval=discretization
        )
    if kind == "laplace":
        one = pld.from_laplace_mechanism(parameter=a, value_discretization_interval=discretization)
    elif kind == "sampled_gaussian":
        one = pld.from_gaussian_mechanism(
            standard_deviation=a, sampling_prob=b, value_discretization_interval=discretization
        )
    else:
        params = _dp.pld_common.DifferentialPrivacyParameters(epsilon=a, delta=b)
        one = pld.from_privacy_parameters(params, value_discretization_interval=discretization)
    return one if count == 1 else one.self_compose(count)


def pld_of(units: Mapping[Unit, int], discretization: float) -> Any:
    """The composed pessimistic PLD of ``units`` (unit mechanism -> count)."""
    from ._dp import pld

    out = pld.identity(value_discretization_interval=discretization)
    for unit in sorted(units):
        if units[unit] > 0:
            out = out.compose(_unit_pld(unit, units[unit], discretization))
    return out


def pld_epsilon(pld: Any, delta: float) -> float:
    """ε at ``delta`` of a PLD (∞ at δ = 0 for anything but the identity)."""
    return float(pld.get_epsilon_for_delta(delta))


# -- tallies and figures --------------------------------------------------------------
@dataclass
class Tally:
    """What a set of events has spent, in the forms a check needs (kept per dataset)."""

    rdp: Curve
    pure_epsilon: float = 0.0
    impure: int = 0
    count: int = 0

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
        return Tally(
            self.rdp + rdp_curve(event),
            self.pure_epsilon + (pure or 0.0),
            self.impure + (pure is None),
            self.count + 1,
        )


@dataclass(frozen=True)
class Accounting:
    """One ε figure and how it was obtained.

    Attributes
    ----------
    epsilon : float
        The smallest of the figures computed (an upper bound on the true ε).
    delta : float
        The δ it holds at.
    method : {"none", "basic", "rdp", "pld"}
        Which figure ``epsilon`` is ("none": nothing spent).
    rdp_epsilon, pld_epsilon, basic_epsilon : float or None
        Each figure computed (None: not computed or not applicable).
    discretization : float or None
        The PLD discretization interval, when a PLD figure was computed.
    accountant : str
        The accounting library and version, e.g. ``"dp_accounting 0.6.0"``.
    """

    epsilon: float
    delta: float
    method: Method
    rdp_epsilon: float | None
    pld_epsilon: float | None
    basic_epsilon: float | None
    discretization: float | None
    accountant: str

    def describe(self) -> str:
        """e.g. ``"PLD (dp_accounting 0.6.0, discretization 0.001)"``."""
        if self.method == "none":
            return "nothing spent"
        if self.method == "basic":
            return "basic composition (exact for pure ε-DP)"
        name = "RDP" if self.method == "rdp" else "PLD"
        extra = f", discretization {self.discretization:g}" if self.method == "pld" else ""
        return f"{name} ({self.accountant}{extra})"


def account(
    tally: Tally, delta: float, *, pld: Any | None = None, discretization: float | None = None
) -> Accounting:
    """The tightest figure for ``tally`` at ``delta``; ``pld`` (its composed PLD) if computed."""
    name = accountant_name()
    if tally.count == 0:
        return Accounting(0.0, delta, "none", 0.0, 0.0, 0.0, None, name)
    basic = tally.pure_epsilon if tally.impure == 0 else None
    if delta == 0:
        eps = basic if basic is not None else math.inf
        return Accounting(eps, delta, "basic", None, None, basic, None, name)
    rdp = rdp_epsilon(tally.rdp, delta)
    pld_eps = pld_epsilon(pld, delta) if pld is not None else None
    figures: list[tuple[float, Method]] = [(rdp, "rdp")]
    if pld_eps is not None:
        figures.append((pld_eps, "pld"))
    if basic is not None:
        figures.append((basic, "basic"))
    eps, method = min(figures, key=lambda f: f[0])
    return Accounting(
        eps, delta, method, rdp, pld_eps, basic, discretization if pld is not None else None, name
    )


@lru_cache(maxsize=1024)
def _alone(unit: Unit, count: int, delta: float) -> float:
    if unit[0] == "laplace":
        return count / unit[1]
    rdp = rdp_epsilon(_unit_rdp(unit) * count, delta)
    return min(rdp, pld_epsilon(_unit_pld(unit, count, REPORT_DISCRETIZATION), delta))


def epsilon_alone(event: PrivacyEvent, delta: float) -> float:
    """The ε of one event on its own at ``delta`` (what a release would claim by itself)."""
    if event.pure_epsilon is not None:
        return event.pure_epsilon
    if event.kind == "generic":
        return event.params["epsilon"] if event.params["delta"] <= delta else math.inf
    if delta <= 0:
        return math.inf
    unit, count = unit_counts(event)
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
