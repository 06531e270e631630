"""Reports on the ledger: budget status, the event table, and the cumulative-ε plot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..storage.engine import read
from ._check import PldCache
from ._store import (
    allocations,
    event_rows,
    events_of,
    lock_dataset,
    read_state,
    scope_names,
    status_counts,
)
from .composition import (
    CHECK_DISCRETIZATION,
    REPORT_DISCRETIZATION,
    Accounting,
    Tally,
    account,
    naive_costs,
    pld_of,
    units_of,
)
from .events import PrivacyEvent
from .records import BudgetStatus, Share

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["events_frame", "plot", "status"]

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


def _scope_figure(
    conn: sa.Connection, plds: PldCache, dataset: str, scope: str, delta: float
) -> tuple[Accounting, int]:
    tally, revision = read_state(conn, dataset, scope)
    if tally.count == 0 or delta == 0:
        return account(tally, delta), tally.count
    _, pld = plds.scope_pld(conn, dataset, scope, tally, revision, REPORT_DISCRETIZATION)
    return account(tally, delta, pld=pld, discretization=REPORT_DISCRETIZATION), tally.count


def status(engine: sa.Engine, plds: PldCache, dataset: str) -> BudgetStatus:
    """The dataset's budget status, with PLD at the report discretization."""
    with read(engine) as conn:
        ds = lock_dataset(conn, dataset, lock=False)
        delta, total = ds.budget.delta, ds.budget.epsilon
        caps = allocations(conn, dataset)
        counts = status_counts(conn, dataset)
        overall, _ = _scope_figure(conn, plds, dataset, "", delta)
        shares: dict[str, dict[str, Share]] = {"principal": {}, "purpose": {}}
        for scope in sorted(set(scope_names(conn, dataset)) | set(caps)):
            if not scope:
                continue
            figure, _ = _scope_figure(conn, plds, dataset, scope, delta)
            cap = caps.get(scope)
            left = None if cap is None else max(cap - figure.epsilon, 0.0)
            kind, _, name = scope.partition(":")
            shares[kind][name] = Share(figure.epsilon, cap, left, figure.method)
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
    """Charge numbers (1-based), the tight ε after each, and the naive running sum."""
    naive = np.cumsum(naive_costs(events, delta)).tolist()
    n = len(events)
    marks = sorted({int(k) for k in np.linspace(1, n, min(n, points))}) if n else []
    tight, tally, done = [], Tally.empty(), 0
    for k in marks:
        for event in events[done:k]:
            tally = tally.plus(event)
        done = k
        pld = pld_of(units_of(events[:k]), CHECK_DISCRETIZATION) if delta > 0 else None
        tight.append(account(tally, delta, pld=pld, discretization=CHECK_DISCRETIZATION).epsilon)
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
        ax.plot(marks, tight, marker="o", markersize=3, label="privml (min of RDP, PLD, basic)")
    ax.axhline(total, color="crimson", linewidth=1, label=f"budget ε={total:g}")
    ax.set_xlabel("charges, in time order (reserved and committed)")
    ax.set_ylabel(f"cumulative ε at δ={delta:g}")
    ax.set_title(f"privacy budget of {dataset!r}")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    return ax
