"""Scope heads: per scope, its row count and the sum of its MACs, MAC'd, with a generation."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from ...exceptions import IntegrityError
from ..tables import PROTECTED, row_heads
from ._binding import TxState, run, sealer_of, sealers, states, tx_state, typed
from ._mac import MODULUS, Head

__all__ = [
    "adjust",
    "create_heads",
    "dataset_tables",
    "digest_of",
    "flush",
    "global_tables",
    "head_of",
    "scope_name",
    "scope_of",
    "take_unlogged",
]


def scope_of(table: sa.Table, row: Mapping[Any, Any]) -> str:
    column = PROTECTED[table.name]
    return "" if column is None else str(row[column])


def head_of(conn: sa.Connection, table: str, scope: str) -> Head | None:
    """The head of one scope, MAC checked, as this transaction has it (None if there is none).

    The first look at a scope reads all of its heads, and every head not yet logged,
    in one query (:func:`_load`); each is checked when first asked for.
    """
    state = tx_state(conn)
    key = (table, scope)
    if key not in state.heads:
        if scope not in state.loaded:
            _load(conn, state, scope)
        row = state.fetched.pop(key, None)
        state.heads[key] = None if row is None else _checked(conn, table, scope, row)
    return state.heads[key]


def _load(conn: sa.Connection, state: TxState, scope: str | None) -> None:
    """Read ``scope``'s head rows (none if None) and every unlogged one, in one query."""
    unlogged = row_heads.c.logged == sa.false()
    where = unlogged if scope is None else sa.or_(row_heads.c.scope == scope, unlogged)
    with typed("the integrity heads"):
        rows = conn.execute(sa.select(row_heads).where(where)).all()
        found = {(str(r.table_name), str(r.scope)): r for r in rows}
    for key, row in found.items():
        if key not in state.heads:
            state.fetched[key] = row
    if scope is not None:
        state.loaded.add(scope)
    if state.unlogged is None:
        state.unlogged = {key for key, row in found.items() if not row.logged}


def _checked(conn: sa.Connection, table: str, scope: str, row: Any) -> Head:
    with typed(f"the integrity head of {table} ({scope_name(scope)})"):
        head = Head(
            table, scope, int(row.rows), str(row.digest), int(row.generation),
            bool(row.logged), stored=True,
        )  # fmt: skip
    if not hmac.compare_digest(sealer_of(conn).head_mac(head), str(row.mac)):
        raise IntegrityError(
            f"the integrity head of {table} ({scope_name(scope)}) fails its MAC: "
            "the vault's metadata was edited without the key"
        )
    return head


def scope_name(scope: str) -> str:
    return "the whole table" if scope == "" else f"scope {scope!r}"


def create_heads(conn: sa.Connection, tables: Iterable[str], scope: str = "") -> None:
    """Start empty scopes (at vault or dataset creation): their heads must exist from now on."""
    state = tx_state(conn)
    for table in tables:
        if head_of(conn, table, scope) is not None:
            raise IntegrityError(f"internal: {table} already has a head for {scope_name(scope)}")
        state.heads[(table, scope)] = Head(table, scope, 0, "0" * 64, 0, False, False, True)


def dataset_tables() -> list[str]:
    """The protected tables split by dataset (their heads are made with the dataset)."""
    return sorted(name for name, column in PROTECTED.items() if column == "dataset")


def global_tables() -> list[str]:
    """The protected tables that are one scope each (their heads are made with the vault)."""
    return sorted(name for name, column in PROTECTED.items() if column is None)


def adjust(conn: sa.Connection, table: str, scope: str, *, add: str = "", remove: str = "") -> None:
    head = head_of(conn, table, scope)
    if head is None:
        if PROTECTED[table] in (None, "dataset") or remove:
            raise IntegrityError(
                f"{table} has no integrity head for {scope_name(scope)}: the vault's "
                "metadata was edited without the key"
            )
        head = Head(table, scope, 0, "0" * 64, 0, False, False)
        tx_state(conn).heads[(table, scope)] = head
    total = int(head.digest, 16)
    if add:
        total, head.rows = total + int(add, 16), head.rows + 1
    if remove:
        total, head.rows = total - int(remove, 16), head.rows - 1
    head.digest = f"{total % MODULUS:064x}"
    if head.logged or not head.dirty:  # first change since the audit log recorded the head
        head.generation += 1
        head.dirty = True
    head.logged = False


_UPDATE = row_heads.update().where(
    row_heads.c.table_name == sa.bindparam("key_table"),
    row_heads.c.scope == sa.bindparam("key_scope"),
)


def flush(conn: sa.Connection) -> None:
    """Write the heads changed in this transaction (call before it commits)."""
    state = states.get(conn)
    if state is None:
        return
    sealer = sealer_of(conn)
    updates, inserts = [], []
    for head in state.heads.values():
        if head is None or not head.dirty:
            continue
        values = {
            "rows": head.rows,
            "digest": head.digest,
            "generation": head.generation,
            "logged": head.logged,
            "mac": sealer.head_mac(head),
        }
        if head.stored:
            updates.append({"key_table": head.table, "key_scope": head.scope, **values})
        else:
            inserts.append({"table_name": head.table, "scope": head.scope, **values})
        head.stored, head.dirty = True, False
    if updates:
        run(conn, _UPDATE, updates)
    if inserts:
        run(conn, row_heads.insert(), inserts)


def take_unlogged(conn: sa.Connection) -> list[list[Any]]:
    """Every head whose current generation the audit log does not record yet, now marked logged.

    Returns ``[[table, scope, generation, digest], ...]`` for the audit entry being written
    in this transaction. The heads stored unlogged are known from the transaction's first
    read of them (it holds the writer lock: only its own writes move them since), the others
    from what it changed.
    """
    if conn.engine not in sealers:
        return []
    state = tx_state(conn)
    if state.unlogged is None:
        _load(conn, state, None)
    stored = state.unlogged or set()
    changed = {key for key, head in state.heads.items() if head is not None and not head.logged}
    out = []
    for table, scope in sorted(stored | changed):
        head = head_of(conn, table, scope)
        if head is None or head.logged:
            continue
        head.logged, head.dirty = True, True
        out.append([head.table, head.scope, head.generation, head.digest])
    flush(conn)
    return out


def digest_of(macs: Iterable[str]) -> str:
    """The sum of MACs (mod 2**256) a scope's head records."""
    return f"{sum(int(m, 16) for m in macs) % MODULUS:064x}"
