"""The budget check: the privacy filter's decision, scope by scope, from running tallies.

A check reads one running tally per scope (the dataset, the principal's
allocation, and the allocation of the purpose and of each of its ancestors),
adds the requested event's RDP curve and ε, and asks the filter
(:mod:`privml.accounting.filter`) whether it still admits. That is
O(orders) per scope and never composes a PLD, so a request that cannot fit
is refused as cheaply as one that fits is admitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..exceptions import BudgetExceededError, ConfigurationError
from ._spend import scopes_to_check, spent
from ._store import DatasetRow
from .composition import epsilon_alone
from .events import PrivacyEvent
from .filter import GENERIC_DELTA_SHARE, TOLERANCE, Accounting, admits, filter_figure

__all__ = ["Admission", "ScopeCheck", "check", "refusal"]


@dataclass(frozen=True)
class ScopeCheck:
    """The check of one scope: its cap, and the filter's figures before and after the event."""

    scope: str
    cap: float
    before: Accounting
    after: Accounting

    @property
    def allowed(self) -> bool:
        return admits(self.after, self.cap)


@dataclass(frozen=True)
class Admission:
    """The ledger's admission decision for one event: every scope's check.

    ``refused`` is the first scope that refuses, if any.
    """

    event: PrivacyEvent
    requested: float
    scopes: list[ScopeCheck] = field(default_factory=list)

    @property
    def total(self) -> ScopeCheck:
        return self.scopes[0]

    @property
    def refused(self) -> ScopeCheck | None:
        return next((s for s in self.scopes if not s.allowed), None)


def _refuse_impure_at_pure_budget(ds: DatasetRow, event: PrivacyEvent) -> None:
    if ds.budget.delta == 0 and not event.is_pure:
        raise ConfigurationError(
            f"dataset {ds.name!r} has a pure-DP budget (δ = 0), and a {event.kind} event is "
            "not ε-DP for any finite ε (its privacy loss is unbounded), so it can never be "
            "charged there. Use a pure mechanism (PrivacyEvent.laplace or "
            "PrivacyEvent.generic(epsilon=..., delta=0)), or give the dataset a budget with δ > 0."
        )


def check(
    conn: sa.Connection,
    ds: DatasetRow,
    event: PrivacyEvent,
    *,
    principal: str,
    purpose: str,
    stop_at_refusal: bool = True,
) -> Admission:
    """Check ``event`` against the dataset's budget and every allocation it counts against.

    Raises
    ------
    ConfigurationError
        The dataset has a pure-DP budget (δ = 0) and the event is not pure ε-DP.
    """
    _refuse_impure_at_pure_budget(ds, event)
    delta = ds.budget.delta
    decision = Admission(event, epsilon_alone(event, delta, tight=False))
    for scope in scopes_to_check(conn, ds, principal, purpose):
        tally, _ = spent(conn, ds.name, scope.members)
        before = filter_figure(tally, delta)
        after = filter_figure(tally.plus(event), delta)
        result = ScopeCheck(scope.key, scope.cap, before, after)
        decision.scopes.append(result)
        if stop_at_refusal and not result.allowed:
            break
    return decision


def _fmt(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.4g}"


def _reserve_note(ds: DatasetRow, after: Accounting) -> str:
    reserve = GENERIC_DELTA_SHARE * ds.budget.delta
    if after.generic_delta <= reserve * (1 + TOLERANCE):
        return ""
    return (
        f" Generic (ε, δ > 0) events may use up δ={reserve:g} together "
        f"({GENERIC_DELTA_SHARE:g} of the budget's δ); with this one they would use "
        f"δ={after.generic_delta:g}. Prefer a pure-ε (δ = 0) or a specific mechanism."
    )


def refusal(ds: DatasetRow, decision: Admission, scope: ScopeCheck) -> BudgetExceededError:
    """The error for a refused check: spent, requested, remaining, and how they were computed."""
    name = ds.name
    if scope.scope:
        kind, _, who = scope.scope.partition(":")
        below = " and the purposes below it" if kind == "purpose" else ""
        whose = f"{kind} {who!r}'s share{below} of dataset {name!r}"
        limit = f"its allocation ε={_fmt(scope.cap)}"
    else:
        whose = f"dataset {name!r}"
        limit = f"the budget ε={_fmt(scope.cap)}"
    spent_eps, after = scope.before.epsilon, scope.after.epsilon
    remaining = max(scope.cap - spent_eps, 0.0)
    return BudgetExceededError(
        f"privacy budget exceeded for {whose}: spent ε={_fmt(spent_eps)}, requested "
        f"{decision.event.describe()} (ε={_fmt(decision.requested)} on its own, "
        f"+{_fmt(after - spent_eps)} composed) would bring it to ε={_fmt(after)}, over {limit} "
        f"at δ={ds.budget.delta:g}; remaining ε={_fmt(remaining)}. Admission by the "
        f"{scope.after.describe()}.{_reserve_note(ds, scope.after)} Nothing was charged; see "
        f"vault.budget({name!r}) for what was spent and by whom.",
        dataset=name,
        scope=scope.scope or "dataset",
        spent=spent_eps,
        requested=decision.requested,
        after=after,
        remaining=remaining,
        total=scope.cap,
        delta=ds.budget.delta,
        method=scope.after.method,
    )
