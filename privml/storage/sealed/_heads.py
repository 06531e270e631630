"""Scope heads: per scope, its row count and the sum of its MACs, MAC'd, with a generation."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from ...exceptions import IntegrityError
from ..tables import PROTECTED, row_heads
from ._binding import run, sealer_of, sealers, states, tx_state, typed
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
    state = tx_state(conn)
    if (table, scope) not in state.heads:
        with typed(f"the integrity head of {table} ({scope_name(scope)})"):
            row = conn.execute(
                sa.select(row_heads).where(
                    row_heads.c.table_name == table, row_heads.c.scope == scope
                )
            ).first()
            head = None
            if row is not None:
                head = Head(
                    table, scope, int(row.rows), str(row.digest), int(row.generation),
                    bool(row.logged), stored=True,
                )  # fmt: skip
        if (
            head is not None
            and row is not None
            and not hmac.compare_digest(sealer_of(conn).head_mac(head), str(row.mac))
        ):
            raise IntegrityError(
                f"the integrity head of {table} ({scope_name(scope)}) fails its MAC: "
                "the vault's metadata was edited without the key"
            )
        state.heads[(table, scope)] = head
    return state.heads[(table, scope)]


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


def flush(conn: sa.Connection) -> None:
    """Write the heads changed in this transaction (call before it commits)."""
    state = states.get(conn)
    if state is None:
        return
    sealer = sealer_of(conn)
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
            run(
                conn,
                row_heads.update()
                .where(row_heads.c.table_name == head.table, row_heads.c.scope == head.scope)
                .values(**values),
            )
        else:
            run(conn, row_heads.insert().values(table_name=head.table, scope=head.scope, **values))
            head.stored = True
        head.dirty = False


def take_unlogged(conn: sa.Connection) -> list[list[Any]]:
    """Every head whose current generation the audit log does not record yet, now marked logged.

    Returns ``[[table, scope, generation, digest], ...]`` for the audit entry being written
    in this transaction.
    """
    if conn.engine not in sealers:
        return []
    flush(conn)
    rows = conn.execute(
        sa.select(row_heads.c.table_name, row_heads.c.scope)
        .where(row_heads.c.logged == sa.false())
        .order_by(row_heads.c.table_name, row_heads.c.scope)
    ).all()
    out = []
    for row in rows:
        head = head_of(conn, row.table_name, row.scope)
        if head is None or head.logged:
            continue
        head.logged, head.dirty = True, True
        out.append([head.table, head.scope, head.generation, head.digest])
    flush(conn)
    return out


def digest_of(macs: Iterable[str]) -> str:
    """The sum of MACs (mod 2**256) a scope's head records."""
    return f"{sum(int(m, 16) for m in macs) % MODULUS:064x}"
