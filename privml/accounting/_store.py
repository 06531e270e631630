"""The ledger's rows: reading and writing them inside a transaction (no accounting here)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..exceptions import IntegrityError, NotFoundError
from ..storage import sealed
from ..storage.tables import datasets, versions
from ._tables import ledger_allocations, ledger_events, ledger_state
from ._unit import ROW, PrivacyUnit
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
    "insert_event",
    "lock_dataset",
    "read_state",
    "recompute_states",
    "scopes_of",
    "state_key",
    "tally_of",
    "update_event",
    "write_allocation",
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
    unit: PrivacyUnit = ROW


def lock_dataset(conn: sa.Connection, dataset: str, *, lock: bool = True) -> DatasetRow:
    """Read a dataset's budget, locking its row (PostgreSQL) for the rest of the transaction.

    The budget row, the dataset's versions and (through :func:`read_state`) its ledger
    are read checked: an edit made without the vault key raises ``IntegrityError``.
    """
    found = sealed.check_rows(conn, datasets, datasets.c.name == dataset, lock=lock)
    if not found:
        known = sorted(r.name for r in sealed.scope_rows(conn, datasets))
        raise NotFoundError(f"no dataset {dataset!r}; known datasets: {known}")
    row = found[0]
    numbers = [int(v.version) for v in sealed.scope_rows(conn, versions, dataset)]
    budget = Budget(epsilon=row.budget_epsilon, delta=row.budget_delta)
    unit = PrivacyUnit.stored(row.privacy_unit, row.max_rows_per_unit)
    return DatasetRow(dataset, budget, max(numbers) if numbers else None, unit)


def version_exists(conn: sa.Connection, dataset: str, version: int) -> bool:
    return any(v.version == version for v in sealed.scope_rows(conn, versions, dataset))


def _states(conn: sa.Connection, dataset: str) -> dict[str, Any]:
    """Every running tally of ``dataset`` by scope, read whole and checked."""
    return {str(r.scope): r for r in sealed.scope_rows(conn, ledger_state, dataset)}


def read_state(conn: sa.Connection, dataset: str, scope: str) -> tuple[Tally, int]:
    """A scope's running tally and its revision (an empty tally, revision 0, if none)."""
    row = _states(conn, dataset).get(scope)
    if row is None:
        return Tally.empty(), 0
    tally = Tally(
        decode_curve(row.rdp),
        float(row.pure_epsilon),
        int(row.impure),
        int(row.events),
        int(row.approx),
        float(row.approx_epsilon),
        float(row.approx_delta),
    )
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
        "approx": tally.approx,
        "approx_epsilon": tally.approx_epsilon,
        "approx_delta": tally.approx_delta,
        "revision": revision,
    }
    old = _states(conn, dataset).get(scope)
    if old is not None:
        sealed.update_row(conn, ledger_state, old, values)
    else:
        sealed.insert(conn, ledger_state, {"dataset": dataset, "scope": scope, **values})


def _in_scope(row: Any, scope: str) -> bool:
    kind, _, name = scope.partition(":")
    if kind == "principal":
        return bool(row.principal == name)
    if kind == "purpose":
        return bool(row.purpose == name)
    return True


def _events(conn: sa.Connection, dataset: str) -> list[Any]:
    """Every ledger row of ``dataset``, oldest first, read whole and checked."""
    return sorted(sealed.scope_rows(conn, ledger_events, dataset), key=lambda r: int(r.id))


def event_rows(
    conn: sa.Connection, dataset: str, scope: str = TOTAL, statuses: Sequence[str] = ACTIVE
) -> list[Any]:
    """A scope's ledger rows with the given statuses, oldest first."""
    wanted = set(statuses)
    return [r for r in _events(conn, dataset) if r.status in wanted and _in_scope(r, scope)]


def insert_event(conn: sa.Connection, values: dict[str, Any]) -> None:
    """Record one ledger row (authenticated, counted in its dataset's head)."""
    sealed.insert(conn, ledger_events, values)


def update_event(conn: sa.Connection, event_id: int, values: dict[str, Any]) -> Any:
    """Change one ledger row; return it as stored."""
    sealed.update(conn, ledger_events, ledger_events.c.id == event_id, values)
    return sealed.check_rows(conn, ledger_events, ledger_events.c.id == event_id)[0]


def write_allocation(
    conn: sa.Connection, dataset: str, scope: str, epsilon: float, created: str
) -> float | None:
    """Set one sub-budget; return the ε cap it replaces (None if new)."""
    where = sa.and_(ledger_allocations.c.dataset == dataset, ledger_allocations.c.scope == scope)
    previous = allocations(conn, dataset).get(scope)
    sealed.delete(conn, ledger_allocations, where)
    values = {"dataset": dataset, "scope": scope, "epsilon": epsilon, "created": created}
    sealed.insert(conn, ledger_allocations, values)
    return previous


def events_of(rows: Iterable[Any]) -> list[PrivacyEvent]:
    return [PrivacyEvent.from_json(r.event) for r in rows]


def tally_of(rows: Iterable[Any]) -> Tally:
    """The tally of ledger rows, from their stored curves."""
    tally = Tally.empty()
    for row in rows:
        pure = row.pure_epsilon
        approx = row.kind == "generic" and pure is None  # (ε, δ > 0): the filter's δ reserve
        params = PrivacyEvent.from_json(row.event).params if approx else {}
        tally = Tally(
            tally.rdp + decode_curve(row.rdp),
            tally.pure_epsilon + (pure or 0.0),
            tally.impure + (pure is None),
            tally.count + 1,
            tally.approx + approx,
            tally.approx_epsilon + params.get("epsilon", 0.0),
            tally.approx_delta + params.get("delta", 0.0),
        )
    return tally


def recompute_states(conn: sa.Connection, dataset: str, scopes: Iterable[str]) -> None:
    """Rebuild scopes' tallies from their rows (after a settle or release lowered them)."""
    for scope in scopes:
        tally = tally_of(event_rows(conn, dataset, scope))
        _, revision = read_state(conn, dataset, scope)
        write_state(conn, dataset, scope, tally, revision + 1)


def find_request(conn: sa.Connection, request_id: str) -> Any:
    found = sealed.check_rows(conn, ledger_events, ledger_events.c.request_id == request_id)
    return found[0] if found else None


def allocations(conn: sa.Connection, dataset: str) -> dict[str, float]:
    """Scope -> ε cap for a dataset's sub-budgets."""
    rows = sealed.scope_rows(conn, ledger_allocations, dataset)
    return {str(r.scope): float(r.epsilon) for r in rows}


def scope_names(conn: sa.Connection, dataset: str) -> list[str]:
    """Every scope with a running tally (principals and purposes that ever charged)."""
    return sorted(_states(conn, dataset))


def status_counts(conn: sa.Connection, dataset: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in _events(conn, dataset):
        counts[str(row.status)] = counts.get(str(row.status), 0) + 1
    return counts
