"""The admission test: a privacy filter proven for fully adaptive composition.

Analysts choose each release (its mechanism and its ε, σ, q, steps) after
seeing earlier answers. An accountant's bound for a sequence fixed in advance
(PLD in general, or the minimum of several accountants picked path by path)
does not cover that. The ledger therefore admits a release only when a
*privacy filter* admits it; the figures it reports as "spent" are the filter's.

The filter
----------
A dataset with budget (ε, δ), δ > 0, runs one family of sub-filters, fixed
before the first release:

* **Rényi orders** α_1 … α_k (:data:`FILTER_ORDERS`, k = 17). Order α_j has
  its own share δ_j = (1 - s)·δ / k of δ and the RDP budget
  B_j = ε - log1p(-1/α_j) + log(δ_j α_j) / (α_j - 1), the largest total Rényi
  divergence whose conversion (Canonne, Kamath and Steinke 2020, Prop. 12)
  gives ε at δ_j. Order j is *alive* while the sum S_j of the admitted
  events' RDP at α_j is at most B_j; sums only grow, so a dead order stays
  dead.
* **Basic composition**, with δ share 0: alive while every admitted event is
  ε_i-DP (Laplace, generic) and Σ ε_i <= ε.
* **A δ reserve** of s·δ (:data:`GENERIC_DELTA_SHARE`, s = 1/10) for generic
  (ε_i, δ_i) events: Σ δ_i over admitted ones must stay within it.

A release is admitted iff, with it, the δ reserve holds and at least one
sub-filter is still alive. Equivalently, the *filter figure*
min(Σ ε_i if basic is alive, min_j ε_j(S_j)) stays <= ε, where ε_j(S) is the
conversion above at δ_j; this is the "spent" figure reported everywhere.

Why it is (ε, δ)-DP under fully adaptive composition (proof sketch)
-------------------------------------------------------------------
Replace each generic (ε_i, δ_i) mechanism by its dominating pair (Kairouz, Oh
and Viswanath 2015: every (ε_i, δ_i)-DP mechanism is a post-processing of it):
with probability δ_i a *flag* (privacy loss ∞), otherwise ε_i-randomized
response. Let L = Σ L_i be the privacy loss of the whole transcript (refused
requests output a fixed ⊥ and cost nothing). For each sub-filter m let L^(m)
be the loss of the admitted events counted while m was alive; the choice of
which events count is predictable (it depends only on parameters fixed before
each release runs). At the end some sub-filter is alive (each admission keeps
one alive, and alive sets only shrink), and for it L^(m) = L. Hence pointwise
(1 - e^(ε - L))_+ <= 1[flag] + Σ_m (1 - e^(ε - L^(m)))_+ 1[no flag], and the
hockey-stick divergence δ(ε) = E_P[(1 - e^(ε - L))_+] is at most

* P[flag] <= E[Σ admitted δ_i] <= s·δ (the reserve);
* for order α_j: M_n = 1[no flag] exp((α_j - 1)(L^(j)_n - S_j,n)) is a
  supermartingale (each counted event has E_P[e^((α_j-1) L_i)] <=
  e^((α_j-1) ρ_i(α_j)) given the past), so E_P[1[no flag] e^((α_j-1) L^(j))]
  <= e^((α_j-1) B_j) because S_j <= B_j on every path (Feldman and Zrnic 2021,
  "Individual privacy accounting via a Rényi filter", Thm 3.1). The pointwise
  bound (1 - e^(ε-L))_+ <= c_α e^((α-1)(L-ε)), c_α = (1 - 1/α)^(α-1) / α
  (Canonne, Kamath and Steinke 2020, Prop. 12) turns that into <= δ_j;
* basic composition: on no flag, |L_i| <= ε_i for every counted event, so
  L^(basic) <= Σ ε_i <= ε and its term is 0.

Summing: δ(ε) <= s·δ + Σ_j δ_j = δ. The union bound over a grid of orders is
that of Lécuyer 2021 ("Practical privacy filters and odometers with Rényi
differential privacy", §3); basic composition is a valid filter for pure DP
(Rogers, Roth, Ullman and Vadhan 2016). With δ = 0 only basic composition
remains, and events that are not ε-DP are refused.

Reservations fit the same proof: a reservation is checked at its planned cost
and settles at a cost no higher (fewer steps, more noise), or is released
unused (it never touched data), so the final sums are at most those checked at
the last admission.

Figures that are *not* admission figures — PLD composition of everything
spent, valid only for a sequence fixed in advance — are reported beside it and
labelled "fixed-sequence" (:mod:`privml.accounting._pld`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .composition import ORDERS, Tally, accountant_name

__all__ = [
    "FILTER_ORDERS",
    "GENERIC_DELTA_SHARE",
    "TOLERANCE",
    "Accounting",
    "Method",
    "admits",
    "filter_figure",
    "order_epsilons",
]

# The filter's Rényi orders, a fixed subset of the stored ORDERS (integers, where
# dp_accounting's sampled-Gaussian RDP is exact). Each order costs a share of δ, so
# the grid is short: it spans the orders that bind for budgets ε ≈ 0.1 … 20.
FILTER_ORDERS: tuple[float, ...] = (
    1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0, 48.0, 63.0, 128.0,
    256.0,
)  # fmt: skip
GENERIC_DELTA_SHARE = 0.1  # the part of δ that generic (ε, δ > 0) events may use up together
TOLERANCE = 1e-9  # relative slack of a comparison with a cap (float rounding of sums)

_INDEX = np.array([ORDERS.index(a) for a in FILTER_ORDERS])
_ALPHA = np.array(FILTER_ORDERS, dtype=np.float64)

Method = Literal["none", "basic", "rdp", "pld"]


@dataclass(frozen=True)
class Accounting:
    """A spent figure of the ledger's privacy filter, and how it was obtained.

    Attributes
    ----------
    epsilon : float
        The admission figure: the privacy filter's ε at ``delta`` (what is
        compared with the budget and reported as spent).
    delta : float
        The budget's δ the figure holds at.
    method : {"none", "basic", "rdp"}
        The filter member that gives ``epsilon`` ("none": nothing spent).
        Ledger rows written before the filter may say "pld".
    rdp_epsilon, basic_epsilon : float or None
        The RDP filter member's figure (orders sharing δ) and the basic
        composition member's (None where not applicable).
    order : float or None
        The Rényi order of ``rdp_epsilon``.
    generic_delta : float
        δ used up by generic (ε, δ > 0) events, from the reserve of
        :data:`GENERIC_DELTA_SHARE` · δ.
    fixed_sequence_epsilon : float or None
        PLD composition of the same events, valid only for a sequence fixed in
        advance; reported for comparison, never used for admission (None when
        not computed).
    discretization : float or None
        The PLD discretization interval of ``fixed_sequence_epsilon``.
    accountant : str
        The accounting library and version, e.g. ``"dp_accounting 0.6.0"``.
    """

    epsilon: float
    delta: float
    method: Method
    rdp_epsilon: float | None
    basic_epsilon: float | None
    order: float | None = None
    generic_delta: float = 0.0
    fixed_sequence_epsilon: float | None = None
    discretization: float | None = None
    accountant: str = ""

    @property
    def pld_epsilon(self) -> float | None:
        """Alias of ``fixed_sequence_epsilon`` (PLD, valid only for a fixed sequence)."""
        return self.fixed_sequence_epsilon

    def describe(self) -> str:
        """e.g. ``"RDP filter, α=10 of 17 orders sharing δ (dp_accounting 0.6.0)"``."""
        if self.method == "none":
            return "nothing spent"
        if self.method == "basic":
            return "basic-composition filter (pure ε adds up)"
        if self.method == "pld":
            return f"PLD ({self.accountant}; recorded before the privacy filter)"
        order = f"α={self.order:g} of " if self.order is not None else ""
        return f"RDP filter, {order}{len(FILTER_ORDERS)} orders sharing δ ({self.accountant})"

    def with_fixed_sequence(self, epsilon: float | None, discretization: float) -> Accounting:
        """The same figure with a labelled fixed-sequence (PLD) figure beside it."""
        return Accounting(
            self.epsilon, self.delta, self.method, self.rdp_epsilon, self.basic_epsilon,
            self.order, self.generic_delta, epsilon,
            discretization if epsilon is not None else None, self.accountant,
        )  # fmt: skip


def order_epsilons(rdp: np.ndarray, delta: float) -> np.ndarray:
    """ε_j of each filter order for the RDP sums ``rdp`` (over ORDERS) at budget δ."""
    share = (1 - GENERIC_DELTA_SHARE) * delta / len(FILTER_ORDERS)
    sums = rdp[_INDEX]
    with np.errstate(over="ignore", invalid="ignore"):
        eps = sums + np.log1p(-1 / _ALPHA) - np.log(share * _ALPHA) / (_ALPHA - 1)
    eps = np.where(np.isnan(eps), np.inf, eps)
    return np.maximum(eps, 0.0)


def filter_figure(tally: Tally, delta: float) -> Accounting:
    """The filter's figure for everything in ``tally`` at budget δ (see the module docstring).

    Examples
    --------
    >>> from privml.accounting import PrivacyEvent
    >>> t = Tally.of([PrivacyEvent.laplace(epsilon=0.5), PrivacyEvent.laplace(epsilon=0.25)])
    >>> filter_figure(t, 1e-5).epsilon, filter_figure(t, 1e-5).method
    (0.75, 'basic')
    """
    name = accountant_name()
    if tally.count == 0:
        return Accounting(0.0, delta, "none", 0.0, 0.0, accountant=name)
    basic_alive = tally.impure == tally.approx
    basic = tally.pure_epsilon + tally.approx_epsilon if basic_alive else None
    if delta == 0:
        eps = basic if basic is not None and tally.approx == 0 else math.inf
        return Accounting(eps, 0.0, "basic", None, basic, accountant=name)
    per_order = order_epsilons(tally.rdp, delta)
    best = int(np.argmin(per_order))
    rdp, order = float(per_order[best]), FILTER_ORDERS[best]
    reserve_ok = tally.approx_delta <= GENERIC_DELTA_SHARE * delta * (1 + TOLERANCE)
    method: Method = "basic" if basic is not None and basic <= rdp else "rdp"
    eps = basic if method == "basic" and basic is not None else rdp
    return Accounting(
        eps if reserve_ok else math.inf, delta, method, rdp, basic, order,
        tally.approx_delta, accountant=name,
    )  # fmt: skip


def admits(after: Accounting, cap: float) -> bool:
    """Whether the filter figure after a release fits ``cap`` (up to float rounding)."""
    return after.epsilon <= cap * (1 + TOLERANCE)
