"""The ledger's rows: reading and writing them inside a transaction (no accounting here)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..exceptions import IntegrityError, NotFoundError
from ..storage.tables import datasets, versions
from ._tables import ledger_allocations, ledger_events, ledger_state
from .budget import Budget
from .composition import ORDERS, Curve, Tally
from .events import PrivacyEvent

__all__ = [
    "ACTIVE",
    "DatasetRow",
    "allocations",
    "decode_curve",
    "encode_curve",
    "event_rows",
    "find_request",
    "lock_dataset",
    "read_state",
    "recompute_states",
    "scopes_of",
    "state_key",
    "tally_of",
    "write_state",
]

ACTIVE = ("reserved", "committed")  # the statuses that count against a budget
TOTAL = ""


def scopes_of(principal: str, purpose: str) -> tuple[str, str, str]:
    """The dataset scope and the principal's and purpose's scopes of one charge."""
    return TOTAL, f"principal:{principal}", f"purpose:{purpose}"


def encode_curve(curve: Curve) -> bytes:
    return np.asarray(curve, dtype="<f8").tobytes()


def decode_curve(blob: bytes) -> Curve:
    curve = np.frombuffer(blob, dtype="<f8").astype(np.float64)
    if curve.shape != (len(ORDERS),):
        raise IntegrityError("a stored RDP curve has the wrong length (ledger modified?)")
    return curve


@dataclass(frozen=True)
class DatasetRow:
    name: str
    budget: Budget
    latest_version: int | None


def lock_dataset(conn: sa.Connection, dataset: str, *, lock: bool = True) -> DatasetRow:
    """Read a dataset's budget, locking its row (PostgreSQL) for the rest of the transaction."""
    query = sa.select(datasets.c.budget_epsilon, datasets.c.budget_delta).where(
        datasets.c.name == dataset
    )
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        known = sorted(conn.execute(sa.select(datasets.c.name)).scalars())
        raise NotFoundError(f"no dataset {dataset!r}; known datasets: {known}")
    latest = conn.execute(
        sa.select(sa.func.max(versions.c.version)).where(versions.c.dataset == dataset)
    ).scalar()
    budget = Budget(epsilon=row.budget_epsilon, delta=row.budget_delta)
    return DatasetRow(dataset, budget, None if latest is None else int(latest))


def version_exists(conn: sa.Connection, dataset: str, version: int) -> bool:
    query = sa.select(versions.c.version).where(
        versions.c.dataset == dataset, versions.c.version == version
    )
    return conn.execute(query).first() is not None


def read_state(conn: sa.Connection, dataset: str, scope: str) -> tuple[Tally, int]:
    """A scope's running tally and its revision (an empty tally, revision 0, if none)."""
    row = conn.execute(
        sa.select(ledger_state).where(
            ledger_state.c.dataset == dataset, ledger_state.c.scope == scope
        )
    ).first()
    if row is None:
        return Tally.empty(), 0
    tally = Tally(decode_curve(row.rdp), float(row.pure_epsilon), int(row.impure), int(row.events))
    return tally, int(row.revision)


def state_key(dataset: str, scope: str, tally: Tally, revision: int) -> tuple[Any, ...]:
    """A cache key that changes whenever the scope's events change."""
    return (dataset, scope, revision, tally.count, encode_curve(tally.rdp))


def write_state(conn: sa.Connection, dataset: str, scope: str, tally: Tally, revision: int) -> None:
    values = {
        "rdp": encode_curve(tally.rdp),
        "pure_epsilon": tally.pure_epsilon,
        "impure": tally.impure,
        "events": tally.count,
        "revision": revision,
    }
    done = conn.execute(
        ledger_state.update()
        .where(ledger_state.c.dataset == dataset, ledger_state.c.scope == scope)
        .values(**values)
    )
    if done.rowcount == 0:
        conn.execute(ledger_state.insert().values(dataset=dataset, scope=scope, **values))


def _scope_filter(scope: str) -> Any:
    kind, _, name = scope.partition(":")
    if kind == "principal":
        return ledger_events.c.principal == name
    if kind == "purpose":
        return ledger_events.c.purpose == name
    return sa.true()


def event_rows(
    conn: sa.Connection, dataset: str, scope: str = TOTAL, statuses: Sequence[str] = ACTIVE
) -> list[Any]:
    """A scope's ledger rows with the given statuses, oldest first."""
    query = (
        sa.select(ledger_events)
        .where(
            ledger_events.c.dataset == dataset,
            ledger_events.c.status.in_(list(statuses)),
            _scope_filter(scope),
        )
        .order_by(ledger_events.c.id)
    )
    return list(conn.execute(query))


def events_of(rows: Iterable[Any]) -> list[PrivacyEvent]:
    return [PrivacyEvent.from_json(r.event) for r in rows]


def tally_of(rows: Iterable[Any]) -> Tally:
    """The tally of ledger rows, from their stored curves."""
    tally = Tally.empty()
    for row in rows:
        pure = row.pure_epsilon
        tally = Tally(
            tally.rdp + decode_curve(row.rdp),
            tally.pure_epsilon + (pure or 0.0),
            tally.impure + (pure is None),
            tally.count + 1,
        )
    return tally


def recompute_states(conn: sa.Connection, dataset: str, scopes: Iterable[str]) -> None:
    """Rebuild scopes' tallies from their rows (after a settle or release lowered them)."""
    for scope in scopes:
        tally = tally_of(event_rows(conn, dataset, scope))
        _, revision = read_state(conn, dataset, scope)
        write_state(conn, dataset, scope, tally, revision + 1)


def find_request(conn: sa.Connection, request_id: str) -> Any:
    return conn.execute(
        sa.select(ledger_events).where(ledger_events.c.request_id == request_id)
    ).first()


def allocations(conn: sa.Connection, dataset: str) -> dict[str, float]:
    """Scope -> ε cap for a dataset's sub-budgets."""
    rows = conn.execute(
        sa.select(ledger_allocations.c.scope, ledger_allocations.c.epsilon).where(
            ledger_allocations.c.dataset == dataset
        )
    )
    return {r.scope: float(r.epsilon) for r in rows}


def scope_names(conn: sa.Connection, dataset: str) -> list[str]:
    """Every scope with a running tally (principals and purposes that ever charged)."""
    rows = conn.execute(
        sa.select(ledger_state.c.scope)
        .where(ledger_state.c.dataset == dataset)
        .order_by(ledger_state.c.scope)
    )
    return [r.scope for r in rows]


def status_counts(conn: sa.Connection, dataset: str) -> dict[str, int]:
    rows = conn.execute(
        sa.select(ledger_events.c.status, sa.func.count())
        .where(ledger_events.c.dataset == dataset)
        .group_by(ledger_events.c.status)
    )
    return {str(status): int(n) for status, n in rows}
