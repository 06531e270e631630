"""The budget check: compose a requested event with what is spent, scope by scope.

A check reads one running tally per scope (O(orders)) and decides by RDP (or
basic composition for pure ε-DP) when that alone admits the event; only when
it would refuse does it compute the PLD of the scope's events (cached per
scope state) to see whether the tighter figure admits it.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..exceptions import BudgetExceededError, ConfigurationError
from ._store import DatasetRow, allocations, event_rows, events_of, read_state, state_key
from .composition import (
    CHECK_DISCRETIZATION,
    TOLERANCE,
    Accounting,
    Tally,
    Unit,
    account,
    epsilon_alone,
    pld_of,
    units_of,
)
from .events import PrivacyEvent

__all__ = ["Decision", "PldCache", "ScopeCheck", "check", "refusal", "tightest", "within"]


def within(epsilon: float, cap: float) -> bool:
    """``epsilon`` fits ``cap`` up to the relative tolerance."""
    return epsilon <= cap * (1 + TOLERANCE)


class PldCache:
    """Composed PLDs of scope states, keyed by the state (so never stale)."""

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[tuple[Any, ...], tuple[Counter[Unit], Any]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[Counter[Unit], Any] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[Any, ...], units: Counter[Unit], pld: Any) -> None:
        with self._lock:
            self._items[key] = (units, pld)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def scope_pld(
        self,
        conn: sa.Connection,
        dataset: str,
        scope: str,
        tally: Tally,
        revision: int,
        discretization: float,
    ) -> tuple[Counter[Unit], Any]:
        """The units and composed PLD of a scope's current events."""
        key = (*state_key(dataset, scope, tally, revision), discretization)
        item = self.get(key)
        if item is None:
            units = units_of(events_of(event_rows(conn, dataset, scope)))
            item = (units, pld_of(units, discretization))
            self.put(key, *item)
        return item


@dataclass(frozen=True)
class ScopeCheck:
    """The check of one scope: its cap, and the figures before and after the event."""

    scope: str
    cap: float
    before: Accounting
    after: Accounting
    tally_after: Tally
    revision: int
    cache_after: tuple[Counter[Unit], Any] | None = None

    @property
    def allowed(self) -> bool:
        return within(self.after.epsilon, self.cap)


@dataclass(frozen=True)
class Decision:
    """Every scope's check; ``refused`` is the first scope that refuses, if any."""

    event: PrivacyEvent
    requested: float
    scopes: list[ScopeCheck] = field(default_factory=list)

    @property
    def total(self) -> ScopeCheck:
        return self.scopes[0]

    @property
    def refused(self) -> ScopeCheck | None:
        return next((s for s in self.scopes if not s.allowed), None)


def _with_pld(
    conn: sa.Connection,
    cache: PldCache,
    dataset: str,
    scope: str,
    cap: float,
    delta: float,
    event: PrivacyEvent,
) -> ScopeCheck:
    tally, revision = read_state(conn, dataset, scope)
    after_tally = tally.plus(event)
    units, pld_before = cache.scope_pld(conn, dataset, scope, tally, revision, CHECK_DISCRETIZATION)
    units_after = units + units_of([event])
    pld_after = pld_of(units_after, CHECK_DISCRETIZATION)
    before = account(tally, delta, pld=pld_before, discretization=CHECK_DISCRETIZATION)
    after = account(after_tally, delta, pld=pld_after, discretization=CHECK_DISCRETIZATION)
    return ScopeCheck(
        scope, cap, before, after, after_tally, revision, cache_after=(units_after, pld_after)
    )


def tightest(
    conn: sa.Connection, cache: PldCache, ds: DatasetRow, decision: Decision
) -> ScopeCheck:
    """The dataset scope's figures with PLD computed too (for reports, not for the decision)."""
    total = decision.total
    if total.cache_after is not None or ds.budget.delta == 0:
        return total
    return _with_pld(conn, cache, ds.name, "", total.cap, ds.budget.delta, decision.event)


def _check_scope(
    conn: sa.Connection,
    cache: PldCache,
    dataset: str,
    scope: str,
    cap: float,
    delta: float,
    event: PrivacyEvent,
) -> ScopeCheck:
    tally, revision = read_state(conn, dataset, scope)
    after_tally = tally.plus(event)
    after = account(after_tally, delta)
    if within(after.epsilon, cap) or delta == 0:
        return ScopeCheck(scope, cap, account(tally, delta), after, after_tally, revision)
    # RDP alone would refuse: ask the (tighter, costlier) PLD.
    return _with_pld(conn, cache, dataset, scope, cap, delta, event)


def check(
    conn: sa.Connection,
    cache: PldCache,
    ds: DatasetRow,
    event: PrivacyEvent,
    *,
    principal: str,
    purpose: str,
    stop_at_refusal: bool = True,
) -> Decision:
    """Check ``event`` against the dataset's budget and any caps on its principal and purpose.

    Raises
    ------
    ConfigurationError
        The dataset has a pure-DP budget (δ = 0) and the event is not pure ε-DP.
    """
    delta = ds.budget.delta
    if delta == 0 and not event.is_pure:
        raise ConfigurationError(
            f"dataset {ds.name!r} has a pure-DP budget (δ = 0), and a {event.kind} event is "
            "not ε-DP for any finite ε (its privacy loss is unbounded), so it can never be "
            "charged there. Use a pure mechanism (PrivacyEvent.laplace or "
            "PrivacyEvent.generic(epsilon=..., delta=0)), or give the dataset a budget with δ > 0."
        )
    caps = allocations(conn, ds.name)
    scopes = [("", ds.budget.epsilon)]
    for scope in (f"principal:{principal}", f"purpose:{purpose}"):
        if scope in caps:
            scopes.append((scope, caps[scope]))
    decision = Decision(event, epsilon_alone(event, delta))
    for scope, cap in scopes:
        result = _check_scope(conn, cache, ds.name, scope, cap, delta, event)
        decision.scopes.append(result)
        if stop_at_refusal and not result.allowed:
            break
    return decision


def _fmt(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.4g}"


def refusal(ds: DatasetRow, decision: Decision, scope: ScopeCheck) -> BudgetExceededError:
    """The error for a refused check: spent, requested, remaining, and how they were computed."""
    name = ds.name
    if scope.scope:
        kind, _, who = scope.scope.partition(":")
        whose = f"{kind} {who!r}'s share of dataset {name!r}"
        limit = f"its allocation ε={_fmt(scope.cap)}"
    else:
        whose = f"dataset {name!r}"
        limit = f"the budget ε={_fmt(scope.cap)}"
    spent, after = scope.before.epsilon, scope.after.epsilon
    remaining = max(scope.cap - spent, 0.0)
    err = BudgetExceededError(
        f"privacy budget exceeded for {whose}: spent ε={_fmt(spent)}, requested "
        f"{decision.event.describe()} (ε={_fmt(decision.requested)} on its own, "
        f"+{_fmt(after - spent)} composed) would bring it to ε={_fmt(after)}, over {limit} "
        f"at δ={ds.budget.delta:g}; remaining ε={_fmt(remaining)}. Computed by "
        f"{scope.after.describe()}. Nothing was charged; see vault.budget({name!r}) for "
        "what was spent and by whom."
    )
    vars(err).update(
        dataset=name,
        scope=scope.scope or "dataset",
        spent=spent,
        requested=decision.requested,
        after=after,
        remaining=remaining,
        total=scope.cap,
        delta=ds.budget.delta,
        method=scope.after.method,
        accounting=scope.after,
    )
    return err
