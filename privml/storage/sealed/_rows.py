"""Writing and reading protected rows: each write MAC'd and counted, each read checked."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ...exceptions import IntegrityError
from ..tables import PROTECTED, datasets
from ._binding import run, sealer_of, tx_state, typed
from ._heads import adjust, digest_of, head_of, scope_name, scope_of
from ._mac import RowSealer

__all__ = [
    "check_rows",
    "delete",
    "describe",
    "insert",
    "next_key",
    "scope_rows",
    "update",
    "update_row",
]


def _key_params(table: sa.Table, row: Mapping[Any, Any]) -> dict[str, Any]:
    return {f"key_{c.name}": row[c.name] for c in table.primary_key.columns}


@functools.cache
def _by_key(table: sa.Table, kind: str) -> Any:
    """``UPDATE`` or ``DELETE`` of one row by its key (bound as ``key_<column>``), built once.

    An UPDATE sets the columns its parameters name.
    """
    where = sa.and_(*(c == sa.bindparam(f"key_{c.name}") for c in table.primary_key.columns))
    return (table.update() if kind == "update" else table.delete()).where(where)


def insert(conn: sa.Connection, table: sa.Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """Insert one row with its MAC and count it in its scope's head; return the full row."""
    sealer = sealer_of(conn)
    row = {c.name: values.get(c.name) for c in table.columns if c.name != "mac"}
    unknown = set(values) - set(row)
    if unknown:
        raise ValueError(f"internal: {table.name} has no columns {sorted(unknown)}")
    missing = [c.name for c in table.primary_key.columns if row[c.name] is None]
    if missing:  # an autoincrement key: the MAC covers it, so take it before the INSERT
        row[_autoincrement(table, missing).name] = next_key(conn, table)
    mac = sealer.row_mac(table, row)
    run(conn, table.insert(), {**row, "mac": mac})
    adjust(conn, table.name, scope_of(table, row), add=mac)
    _recache(conn, table, None, {**row, "mac": mac})
    return row


def _autoincrement(table: sa.Table, missing: list[str]) -> sa.Column[Any]:
    column = table.autoincrement_column
    if column is None or missing != [column.name]:
        raise ValueError(f"internal: {table.name} needs values for its key {missing}")
    return column


def next_key(conn: sa.Connection, table: sa.Table) -> int:
    """The key the next row of ``table`` gets from the database (its autoincrement column).

    Call it under the writer lock, so keys grow in the order rows are written: on
    PostgreSQL the column's own sequence (as an INSERT without the key would take
    it), on SQLite one past the largest key (as SQLite picks a missing rowid).
    """
    with typed(f"the largest key of {table.name}"):
        return int(conn.execute(_next_key_query(table, conn.dialect.name)).scalar_one())


@functools.cache
def _next_key_query(table: sa.Table, dialect: str) -> Any:
    column = table.autoincrement_column
    if column is None:
        raise ValueError(f"internal: {table.name} has no autoincrement key")
    if dialect == "postgresql":
        return sa.select(sa.func.nextval(sa.func.pg_get_serial_sequence(table.name, column.name)))
    return sa.select(sa.func.coalesce(sa.func.max(column), 0) + 1)


def update(conn: sa.Connection, table: sa.Table, where: Any, values: Mapping[str, Any]) -> int:
    """Change ``values`` in every (checked) row matching ``where``; return how many changed."""
    rows = check_rows(conn, table, where)
    for old in rows:
        update_row(conn, table, old, values)
    return len(rows)


def update_row(conn: sa.Connection, table: sa.Table, old: Any, values: Mapping[str, Any]) -> None:
    """Change ``values`` in one row already read checked (from :func:`scope_rows`)."""
    row = {**{k: v for k, v in old._mapping.items() if k != "mac"}, **values}
    mac = sealer_of(conn).row_mac(table, row)
    params = {**values, "mac": mac, **_key_params(table, old._mapping)}
    run(conn, _by_key(table, "update"), params)
    adjust(conn, table.name, scope_of(table, old._mapping), remove=old.mac)
    adjust(conn, table.name, scope_of(table, row), add=mac)
    _recache(conn, table, old._mapping, {**row, "mac": mac})


def delete(conn: sa.Connection, table: sa.Table, where: Any) -> int:
    """Delete every (checked) row matching ``where``; return how many were deleted."""
    rows = check_rows(conn, table, where)
    for old in rows:
        run(conn, _by_key(table, "delete"), _key_params(table, old._mapping))
        adjust(conn, table.name, scope_of(table, old._mapping), remove=old.mac)
        _recache(conn, table, old._mapping, None)
    return len(rows)


class _Written:
    """A row this transaction wrote, as the scope cache serves it (like ``sa.Row``)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._mapping = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


def _recache(
    conn: sa.Connection,
    table: sa.Table,
    old: Mapping[Any, Any] | None,
    new: Mapping[str, Any] | None,
) -> None:
    """Keep the cached rows of the scopes touched by one write equal to what is stored."""
    scopes = tx_state(conn).scopes
    keys = [c.name for c in table.primary_key.columns]
    if old is not None and (table.name, scope_of(table, old)) in scopes:
        key = (table.name, scope_of(table, old))
        scopes[key] = [r for r in scopes[key] if any(r._mapping[k] != old[k] for k in keys)]
    if new is not None and (table.name, scope_of(table, new)) in scopes:
        key = (table.name, scope_of(table, new))
        scopes[key] = [*scopes[key], _Written(new)]


# --- reading ------------------------------------------------------------------------------
def check_rows(
    conn: sa.Connection, table: sa.Table, where: Any = None, *, lock: bool = False
) -> list[Any]:
    """The rows matching ``where``, each checked against its MAC (not for completeness).

    Use it for point look-ups whose absence is harmless (a missing row reads as
    "not found"); read a whole scope with :func:`scope_rows` when a decision
    depends on every row being there.
    """
    query = sa.select(table)
    if where is not None:
        query = query.where(where)
    return _checked_rows(conn, table, query.with_for_update() if lock else query)


def _checked_rows(
    conn: sa.Connection, table: sa.Table, query: Any, params: Mapping[str, Any] | None = None
) -> list[Any]:
    sealer = sealer_of(conn)
    with typed(f"a row of {table.name}"):
        rows = list(conn.execute(query, params))
        for row in rows:
            _check_mac(sealer, table, row)
    return rows


@functools.cache
def _scope_query(table: sa.Table) -> Any:
    """Every row of one scope of ``table`` (the scope bound as ``scope_value``), built once."""
    column = PROTECTED[table.name]
    query = sa.select(table)
    return query if column is None else query.where(table.c[column] == sa.bindparam("scope_value"))


def _check_mac(sealer: RowSealer, table: sa.Table, row: Any) -> None:
    if not hmac.compare_digest(sealer.row_mac(table, row._mapping), str(row.mac)):
        raise IntegrityError(
            f"a row of {table.name} ({describe(table, row)}) fails its MAC: the vault's "
            "metadata was edited without the key (restore meta.db from a backup and "
            "run vault.audit.verify())"
        )


def describe(table: sa.Table, row: Any) -> str:
    return ", ".join(f"{c.name}={row._mapping[c.name]!r}" for c in table.primary_key.columns)


def scope_rows(conn: sa.Connection, table: sa.Table, scope: str = "") -> list[Any]:
    """Every row of one scope, each MAC checked and the set checked against the scope's head.

    Raises :class:`~privml.exceptions.IntegrityError` if a row was modified, added or
    removed, or the head is missing where it must exist.
    """
    state = tx_state(conn)
    cached = state.scopes.get((table.name, scope))
    if cached is not None:
        return cached
    params = None if PROTECTED[table.name] is None else {"scope_value": scope}
    rows = _checked_rows(conn, table, _scope_query(table), params)
    head = head_of(conn, table.name, scope)
    if head is None:
        if rows or _head_required(conn, table.name, scope):
            raise IntegrityError(
                f"{table.name} has no integrity head for {scope_name(scope)}: the vault's "
                "metadata was edited without the key"
            )
    elif head.rows != len(rows) or head.digest != digest_of(r.mac for r in rows):
        raise IntegrityError(
            f"{table.name} ({scope_name(scope)}) holds {len(rows)} rows where its integrity "
            f"head records {head.rows}, or not the same rows: rows were deleted, inserted "
            "or restored from an older copy without the key"
        )
    state.scopes[(table.name, scope)] = rows
    return rows


def _head_required(conn: sa.Connection, table: str, scope: str) -> bool:
    column = PROTECTED[table]
    if column is None:
        return True
    if column != "dataset":
        return False
    return bool(check_rows(conn, datasets, datasets.c.name == scope))
