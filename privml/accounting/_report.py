"""Reports on the ledger: budget status, the event table, and the cumulative-ε plot."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..storage.engine import read
from ._pld import pld_epsilon, pld_of
from ._spend import purpose_parents, spent, subtree
from ._store import (
    allocations,
    event_rows,
    events_of,
    lock_dataset,
    scope_names,
    state_key,
    status_counts,
)
from .composition import REPORT_DISCRETIZATION, Tally, naive_costs, units_of
from .events import PrivacyEvent
from .filter import Accounting, filter_figure
from .records import BudgetStatus, Share

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["FixedSequenceCache", "events_frame", "plot", "status"]

_COLUMNS = [
    "id",
    "request_id",
    "time",
    "updated",
    "dataset",
    "version",
    "principal",
    "purpose",
    "kind",
    "status",
    "description",
    "steps",
    "planned_steps",
    "epsilon_before",
    "epsilon_after",
    "method",
    "accountant",
    "discretization",
    "library",
    "library_version",
    "reported_epsilon",
    "params",
    "dp_event",
    "audit_seq",
]


class FixedSequenceCache:
    """Fixed-sequence (PLD) figures of datasets, keyed by the dataset's state (never stale)."""

    def __init__(self, size: int = 16) -> None:
        self._items: OrderedDict[tuple[Any, ...], float | None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def figure(
        self, conn: sa.Connection, dataset: str, tally: Tally, revision: int
    ) -> float | None:
        """PLD ε of every active event of ``dataset`` at its δ, as if fixed in advance."""
        key = state_key(dataset, "", tally, revision)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        delta = lock_dataset(conn, dataset, lock=False).budget.delta
        pld = pld_of(units_of(events_of(event_rows(conn, dataset))), REPORT_DISCRETIZATION)
        value = None if pld is None else pld_epsilon(pld, delta)
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


def _overall(
    conn: sa.Connection, cache: FixedSequenceCache, dataset: str, delta: float
) -> Accounting:
    tally, revision = spent(conn, dataset, ("",))
    figure = filter_figure(tally, delta)
    if tally.count == 0 or delta == 0:
        return figure
    return figure.with_fixed_sequence(
        cache.figure(conn, dataset, tally, revision), REPORT_DISCRETIZATION
    )


def _shares(conn: sa.Connection, dataset: str, delta: float) -> dict[str, dict[str, Share]]:
    caps = allocations(conn, dataset)
    parents = purpose_parents(conn)
    shares: dict[str, dict[str, Share]] = {"principal": {}, "purpose": {}}
    for scope in sorted(set(scope_names(conn, dataset)) | set(caps)):
        if not scope:
            continue
        kind, _, name = scope.partition(":")
        members = (
            tuple(f"purpose:{p}" for p in subtree(parents, name)) if kind == "purpose" else (scope,)
        )
        figure = filter_figure(spent(conn, dataset, members)[0], delta)
        cap = caps.get(scope)
        left = None if cap is None else max(cap - figure.epsilon, 0.0)
        shares[kind][name] = Share(figure.epsilon, cap, left, figure.method)
    return shares


def status(engine: sa.Engine, cache: FixedSequenceCache, dataset: str) -> BudgetStatus:
    """The dataset's budget status: the filter's figures, and the fixed-sequence PLD beside them."""
    with read(engine) as conn:
        ds = lock_dataset(conn, dataset, lock=False)
        delta, total = ds.budget.delta, ds.budget.epsilon
        counts = status_counts(conn, dataset)
        overall = _overall(conn, cache, dataset, delta)
        shares = _shares(conn, dataset, delta)
        events = events_of(event_rows(conn, dataset))
    return BudgetStatus(
        dataset=dataset,
        epsilon_spent=overall.epsilon,
        epsilon_total=total,
        delta=delta,
        remaining=max(total - overall.epsilon, 0.0),
        method=overall.method,
        accounting=overall,
        epsilon_naive=float(sum(naive_costs(events, delta))),
        committed=counts.get("committed", 0),
        reserved=counts.get("reserved", 0),
        released=counts.get("released", 0),
        by_principal=shares["principal"],
        by_purpose=shares["purpose"],
        privacy_unit=ds.unit.name,
        max_rows_per_unit=ds.unit.max_rows,
    )


def events_frame(engine: sa.Engine, dataset: str) -> pd.DataFrame:
    """Every ledger row of ``dataset``, oldest first."""
    with read(engine) as conn:
        lock_dataset(conn, dataset, lock=False)
        rows = event_rows(conn, dataset, statuses=("reserved", "committed", "released"))
    records: list[dict[str, Any]] = []
    for r in rows:
        event = PrivacyEvent.from_json(r.event)
        planned = PrivacyEvent.from_json(r.planned) if r.planned is not None else None
        records.append(
            {
                **{c: getattr(r, c) for c in _COLUMNS if hasattr(r, c)},
                "time": r.created,
                "description": event.describe(),
                "steps": event.params.get("steps"),
                "planned_steps": planned.params.get("steps") if planned else None,
                "library": event.library,
                "library_version": event.library_version,
                "reported_epsilon": event.reported_epsilon,
                "params": dict(event.params),
                "dp_event": event.to_dict()["dp_event"],
            }
        )
    frame = pd.DataFrame(records, columns=_COLUMNS)
    for column in ("time", "updated"):
        frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    for column in ("version", "steps", "planned_steps"):
        frame[column] = frame[column].astype("Int64")
    return frame


def cumulative(
    events: list[PrivacyEvent], delta: float, *, points: int = 100
) -> tuple[list[int], list[float], list[float]]:
    """Charge numbers (1-based), the filter's ε after each, and the naive running sum."""
    naive = np.cumsum(naive_costs(events, delta)).tolist()
    n = len(events)
    marks = sorted({int(k) for k in np.linspace(1, n, min(n, points))}) if n else []
    tight, tally, done = [], Tally.empty(), 0
    for k in marks:
        for event in events[done:k]:
            tally = tally.plus(event)
        done = k
        tight.append(filter_figure(tally, delta).epsilon)
    return marks, tight, [naive[k - 1] for k in marks]


def plot(engine: sa.Engine, dataset: str, *, ax: Axes | None = None) -> Axes:
    """Cumulative ε (tight and naive) per charge, in time order, against the budget."""
    import matplotlib.pyplot as plt

    with read(engine) as conn:
        ds = lock_dataset(conn, dataset, lock=False)
        events = events_of(event_rows(conn, dataset))
    delta, total = ds.budget.delta, ds.budget.epsilon
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    marks, tight, naive = cumulative(events, delta)
    if marks:
        ax.step(marks, naive, where="post", linestyle="--", color="grey", label="naive sum")
        ax.plot(marks, tight, marker="o", markersize=3, label="privml privacy filter (admission)")
    ax.axhline(total, color="crimson", linewidth=1, label=f"budget ε={total:g}")
    ax.set_xlabel("charges, in time order (reserved and committed)")
    ax.set_ylabel(f"cumulative ε at δ={delta:g}")
    ax.set_title(f"privacy budget of {dataset!r}")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    return ax
