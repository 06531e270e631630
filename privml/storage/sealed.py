"""Authenticated metadata rows: the one way to write and to read a protected table.

Someone with the vault folder but not the key can edit ``meta.db`` with any
SQLite tool. These rows decide budgets, access and what a read returns, so each
edit must be caught before anything depends on it:

* **Row MAC.** Every row of a protected table (``tables.PROTECTED``) carries
  ``mac`` = HMAC-SHA256 under a key derived (HKDF, label ``privml/rows/v1``)
  from the vault's audit MAC key, over a domain tag, the vault's log id, the
  table name and every other column, primary key included. A modified row, a
  row copied to another key, scope, table or vault, fails.
* **Scope head.** Each table is split into scopes (a dataset's ledger, its
  versions, a model's versions, or the whole table); ``row_heads`` holds, per
  scope, the number of rows and the sum (mod 2**256) of their MACs, itself
  MAC'd. Deleting or inserting a whole row (even a valid row from an older copy)
  changes the sum: :func:`scope_rows` reads a scope whole and checks it, so a
  decision never rests on a scope with a row missing. Heads of table-wide scopes
  exist from vault creation and those of a dataset's scopes from the dataset's,
  so deleting a head with its rows is caught too.
* **Rollback.** Restoring an older, consistent copy of rows and heads passes
  the checks above. Every change bumps the head's ``generation`` and clears
  ``logged``; the next audit entry records each unlogged head (generation and
  digest, :func:`take_unlogged`) in the hash-chained log, so
  :func:`verify_rows` finds a head older than the log. Changes made since the
  last audit entry are the one window, as for the log's own tail.
* **No way around it.** :func:`bind` installs an engine hook that refuses any
  INSERT, UPDATE or DELETE of a protected table not made through this module.

Heads are cached per connection and written once, by :func:`flush` (the
vault's ``transaction`` calls it before committing).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import event

from ..exceptions import ConfigurationError, IntegrityError
from .tables import PROTECTED, datasets, metadata, row_heads

__all__ = [
    "RowSealer",
    "bind",
    "check_rows",
    "create_heads",
    "delete",
    "flush",
    "insert",
    "mac_for",
    "scope_rows",
    "take_unlogged",
    "unbind",
    "update",
    "update_row",
    "verify_rows",
]

_ROW_TAG = b"privml/row/v1\x00"
_HEAD_TAG = b"privml/row-head/v1\x00"
_MODULUS = 2**256
_SEALED = "privml_sealed"  # execution option that lets a write through the guard
_HEADS = "row_heads"
HeadKey = tuple[str, str]


class RowSealer:
    """Computes row and head MACs for one vault (key derived from its audit MAC key)."""

    def __init__(self, audit_mac_key: bytes, log_id: str) -> None:
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"privml/rows/v1"
        ).derive(audit_mac_key)
        self._vault = bytes.fromhex(log_id)

    def row_mac(self, table: sa.Table, row: Mapping[Any, Any]) -> str:
        """The MAC of one row of ``table`` (every column but ``mac``)."""
        body = {c.name: _canonical(c, row.get(c.name)) for c in table.columns if c.name != "mac"}
        message = _ROW_TAG + self._vault + _text(table.name) + _json(body)
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def head_mac(self, head: _Head) -> str:
        body = [head.table, head.scope, head.rows, head.digest, head.generation, head.logged]
        return hmac.new(
            self._key, _HEAD_TAG + self._vault + _json(body), hashlib.sha256
        ).hexdigest()


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return len(data).to_bytes(4, "big") + data


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _canonical(column: sa.Column[Any], value: Any) -> Any:
    """One encoding of a value, whatever the database hands back (1 vs 1.0, bytes vs memoryview)."""
    if value is None:
        return None
    if isinstance(column.type, sa.Float):
        return ["f", float(value).hex()]  # exact, and inf/nan have a form too
    if isinstance(value, bytes | bytearray | memoryview):
        return ["b", bytes(value).hex()]
    if isinstance(value, bool):
        return ["t", value]
    if isinstance(value, int):
        return ["i", value]
    return ["s", str(value)]


# --- per-vault binding and per-transaction state -----------------------------------------
_sealers: weakref.WeakKeyDictionary[sa.Engine, RowSealer] = weakref.WeakKeyDictionary()


@dataclass
class _Head:
    table: str
    scope: str
    rows: int
    digest: str
    generation: int
    logged: bool
    stored: bool  # a row exists in row_heads (else it must be inserted)
    dirty: bool = False


@dataclass
class _TxState:
    heads: dict[HeadKey, _Head | None] = field(default_factory=dict)
    scopes: dict[HeadKey, list[Any]] = field(default_factory=dict)


_states: weakref.WeakKeyDictionary[sa.Connection, _TxState] = weakref.WeakKeyDictionary()


def mac_for(conn: sa.Connection, table: sa.Table, row: Mapping[Any, Any]) -> str:
    """The MAC of ``row`` of ``table`` under the vault bound to ``conn``'s engine.

    For a single-row table outside :data:`~privml.storage.tables.PROTECTED`
    (``vault_info``), whose MAC is checked when the vault opens.
    """
    return _sealer(conn).row_mac(table, row)


def bind(engine: sa.Engine, sealer: RowSealer) -> None:
    """Use ``sealer`` for ``engine``'s rows and refuse writes that bypass this module."""
    _sealers[engine] = sealer
    if not event.contains(engine, "before_execute", _guard):
        event.listen(engine, "before_execute", _guard)


def unbind(engine: sa.Engine) -> None:
    """Forget ``engine``'s row key (the vault closed)."""
    _sealers.pop(engine, None)


def _guard(
    conn: sa.Connection, clause: Any, multiparams: Any, params: Any, options: Mapping[str, Any]
) -> None:
    if isinstance(clause, sa.Insert | sa.Update | sa.Delete):
        name = getattr(clause.table, "name", "")
        if (name in PROTECTED or name == _HEADS) and not options.get(_SEALED):
            raise IntegrityError(
                f"internal: {name} rows are authenticated; write them through "
                "privml.storage.sealed, not with a bare statement"
            )


def _sealer(conn: sa.Connection) -> RowSealer:
    try:
        return _sealers[conn.engine]
    except KeyError:
        raise ConfigurationError(
            "the vault's metadata cannot be checked: the vault is closed; open it again "
            "with Vault.open()"
        ) from None


def _state(conn: sa.Connection) -> _TxState:
    state = _states.get(conn)
    if state is None:
        state = _states[conn] = _TxState()
    return state


def _run(conn: sa.Connection, statement: Any) -> sa.CursorResult[Any]:
    return conn.execute(statement, execution_options={_SEALED: True})


# --- heads --------------------------------------------------------------------------------
def _scope_of(table: sa.Table, row: Mapping[Any, Any]) -> str:
    column = PROTECTED[table.name]
    return "" if column is None else str(row[column])


@contextmanager
def _typed(what: str) -> Iterator[None]:
    """Turn a stored value of the wrong type (SQLite keeps any type in any column) into an
    :class:`~privml.exceptions.IntegrityError`: reading it fails before its MAC is checked."""
    try:
        yield
    except (ValueError, TypeError, OverflowError, AttributeError):
        raise IntegrityError(
            f"{what} holds a value of the wrong type: the vault's metadata was edited without "
            "the key"
        ) from None


def _head(conn: sa.Connection, table: str, scope: str) -> _Head | None:
    state = _state(conn)
    if (table, scope) not in state.heads:
        with _typed(f"the integrity head of {table} ({_scope_name(scope)})"):
            row = conn.execute(
                sa.select(row_heads).where(
                    row_heads.c.table_name == table, row_heads.c.scope == scope
                )
            ).first()
            head = None
            if row is not None:
                head = _Head(
                    table, scope, int(row.rows), str(row.digest), int(row.generation),
                    bool(row.logged), stored=True,
                )  # fmt: skip
        if (
            head is not None
            and row is not None
            and not hmac.compare_digest(_sealer(conn).head_mac(head), str(row.mac))
        ):
            raise IntegrityError(
                f"the integrity head of {table} ({_scope_name(scope)}) fails its MAC: "
                "the vault's metadata was edited without the key"
            )
        state.heads[(table, scope)] = head
    return state.heads[(table, scope)]


def _scope_name(scope: str) -> str:
    return "the whole table" if scope == "" else f"scope {scope!r}"


def create_heads(conn: sa.Connection, tables: Iterable[str], scope: str = "") -> None:
    """Start empty scopes (at vault or dataset creation): their heads must exist from now on."""
    state = _state(conn)
    for table in tables:
        if _head(conn, table, scope) is not None:
            raise IntegrityError(f"internal: {table} already has a head for {_scope_name(scope)}")
        state.heads[(table, scope)] = _Head(table, scope, 0, "0" * 64, 0, False, False, True)


def dataset_tables() -> list[str]:
    """The protected tables split by dataset (their heads are made with the dataset)."""
    return sorted(name for name, column in PROTECTED.items() if column == "dataset")


def global_tables() -> list[str]:
    """The protected tables that are one scope each (their heads are made with the vault)."""
    return sorted(name for name, column in PROTECTED.items() if column is None)


def _adjust(
    conn: sa.Connection, table: str, scope: str, *, add: str = "", remove: str = ""
) -> None:
    head = _head(conn, table, scope)
    if head is None:
        if PROTECTED[table] in (None, "dataset") or remove:
            raise IntegrityError(
                f"{table} has no integrity head for {_scope_name(scope)}: the vault's "
                "metadata was edited without the key"
            )
        head = _Head(table, scope, 0, "0" * 64, 0, False, False)
        _state(conn).heads[(table, scope)] = head
    total = int(head.digest, 16)
    if add:
        total, head.rows = total + int(add, 16), head.rows + 1
    if remove:
        total, head.rows = total - int(remove, 16), head.rows - 1
    head.digest = f"{total % _MODULUS:064x}"
    if head.logged or not head.dirty:  # first change since the audit log recorded the head
        head.generation += 1
        head.dirty = True
    head.logged = False


def flush(conn: sa.Connection) -> None:
    """Write the heads changed in this transaction (call before it commits)."""
    state = _states.get(conn)
    if state is None:
        return
    sealer = _sealer(conn)
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
            _run(
                conn,
                row_heads.update()
                .where(row_heads.c.table_name == head.table, row_heads.c.scope == head.scope)
                .values(**values),
            )
        else:
            _run(conn, row_heads.insert().values(table_name=head.table, scope=head.scope, **values))
            head.stored = True
        head.dirty = False


def take_unlogged(conn: sa.Connection) -> list[list[Any]]:
    """Every head whose current generation the audit log does not record yet, now marked logged.

    Returns ``[[table, scope, generation, digest], ...]`` for the audit entry being written
    in this transaction.
    """
    if conn.engine not in _sealers:
        return []
    flush(conn)
    rows = conn.execute(
        sa.select(row_heads.c.table_name, row_heads.c.scope)
        .where(row_heads.c.logged == sa.false())
        .order_by(row_heads.c.table_name, row_heads.c.scope)
    ).all()
    out = []
    for row in rows:
        head = _head(conn, row.table_name, row.scope)
        if head is None or head.logged:
            continue
        head.logged, head.dirty = True, True
        out.append([head.table, head.scope, head.generation, head.digest])
    flush(conn)
    return out


# --- writing ------------------------------------------------------------------------------
def _key_of(table: sa.Table, row: Mapping[Any, Any]) -> Any:
    return sa.and_(*(c == row[c.name] for c in table.primary_key.columns))


def insert(conn: sa.Connection, table: sa.Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """Insert one row with its MAC and count it in its scope's head; return the full row."""
    sealer = _sealer(conn)
    row = {c.name: values.get(c.name) for c in table.columns if c.name != "mac"}
    unknown = set(values) - set(row)
    if unknown:
        raise ValueError(f"internal: {table.name} has no columns {sorted(unknown)}")
    missing = [c.name for c in table.primary_key.columns if row[c.name] is None]
    if missing:  # an autoincrement key: the MAC covers it, so learn it first
        body = {k: v for k, v in row.items() if k not in missing}
        done = _run(conn, table.insert().values(**body, mac=""))
        row.update(zip(missing, tuple(done.inserted_primary_key or ()), strict=True))
        mac = sealer.row_mac(table, row)
        _run(conn, table.update().where(_key_of(table, row)).values(mac=mac))
    else:
        mac = sealer.row_mac(table, row)
        _run(conn, table.insert().values(**row, mac=mac))
    _adjust(conn, table.name, _scope_of(table, row), add=mac)
    _recache(conn, table, None, {**row, "mac": mac})
    return row


def update(conn: sa.Connection, table: sa.Table, where: Any, values: Mapping[str, Any]) -> int:
    """Change ``values`` in every (checked) row matching ``where``; return how many changed."""
    rows = check_rows(conn, table, where)
    for old in rows:
        update_row(conn, table, old, values)
    return len(rows)


def update_row(conn: sa.Connection, table: sa.Table, old: Any, values: Mapping[str, Any]) -> None:
    """Change ``values`` in one row already read checked (from :func:`scope_rows`)."""
    row = {**{k: v for k, v in old._mapping.items() if k != "mac"}, **values}
    mac = _sealer(conn).row_mac(table, row)
    _run(conn, table.update().where(_key_of(table, old._mapping)).values(**values, mac=mac))
    _adjust(conn, table.name, _scope_of(table, old._mapping), remove=old.mac)
    _adjust(conn, table.name, _scope_of(table, row), add=mac)
    _recache(conn, table, old._mapping, {**row, "mac": mac})


def delete(conn: sa.Connection, table: sa.Table, where: Any) -> int:
    """Delete every (checked) row matching ``where``; return how many were deleted."""
    rows = check_rows(conn, table, where)
    for old in rows:
        _run(conn, table.delete().where(_key_of(table, old._mapping)))
        _adjust(conn, table.name, _scope_of(table, old._mapping), remove=old.mac)
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
    scopes = _state(conn).scopes
    keys = [c.name for c in table.primary_key.columns]
    if old is not None and (table.name, _scope_of(table, old)) in scopes:
        key = (table.name, _scope_of(table, old))
        scopes[key] = [r for r in scopes[key] if any(r._mapping[k] != old[k] for k in keys)]
    if new is not None and (table.name, _scope_of(table, new)) in scopes:
        key = (table.name, _scope_of(table, new))
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
    sealer = _sealer(conn)
    with _typed(f"a row of {table.name}"):
        rows = list(conn.execute(query.with_for_update() if lock else query))
        for row in rows:
            _check_mac(sealer, table, row)
    return rows


def _check_mac(sealer: RowSealer, table: sa.Table, row: Any) -> None:
    if not hmac.compare_digest(sealer.row_mac(table, row._mapping), str(row.mac)):
        raise IntegrityError(
            f"a row of {table.name} ({_describe(table, row)}) fails its MAC: the vault's "
            "metadata was edited without the key (restore meta.db from a backup and "
            "run vault.audit.verify())"
        )


def _describe(table: sa.Table, row: Any) -> str:
    return ", ".join(f"{c.name}={row._mapping[c.name]!r}" for c in table.primary_key.columns)


def scope_rows(conn: sa.Connection, table: sa.Table, scope: str = "") -> list[Any]:
    """Every row of one scope, each MAC checked and the set checked against the scope's head.

    Raises :class:`~privml.exceptions.IntegrityError` if a row was modified, added or
    removed, or the head is missing where it must exist.
    """
    state = _state(conn)
    cached = state.scopes.get((table.name, scope))
    if cached is not None:
        return cached
    column = PROTECTED[table.name]
    where = None if column is None else table.c[column] == scope
    rows = check_rows(conn, table, where)
    head = _head(conn, table.name, scope)
    if head is None:
        if rows or _head_required(conn, table.name, scope):
            raise IntegrityError(
                f"{table.name} has no integrity head for {_scope_name(scope)}: the vault's "
                "metadata was edited without the key"
            )
    elif head.rows != len(rows) or head.digest != _digest(r.mac for r in rows):
        raise IntegrityError(
            f"{table.name} ({_scope_name(scope)}) holds {len(rows)} rows where its integrity "
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


def _digest(macs: Iterable[str]) -> str:
    return f"{sum(int(m, 16) for m in macs) % _MODULUS:064x}"


# --- verification -------------------------------------------------------------------------
def verify_rows(conn: sa.Connection, logged: Mapping[HeadKey, Sequence[Any]]) -> list[str]:
    """Every integrity problem of the protected tables, as sentences (empty when intact).

    ``logged`` maps each head to the newest ``(generation, digest)`` the audit log records.
    """
    sealer = _sealer(conn)
    problems: list[str] = []
    heads = _stored_heads(conn, sealer, problems)
    found: dict[HeadKey, list[str]] = {}
    names = set()
    for name in sorted(PROTECTED):
        table = metadata.tables[name]
        try:
            rows = list(conn.execute(sa.select(table)))
        except (ValueError, TypeError, OverflowError):
            problems.append(f"{name}: a row holds a value of the wrong type (modified)")
            continue
        for row in rows:
            try:
                intact = hmac.compare_digest(sealer.row_mac(table, row._mapping), str(row.mac))
            except (ValueError, TypeError, OverflowError, AttributeError):
                intact = False
            if not intact:
                problems.append(f"{name}: row {_describe(table, row)} fails its MAC (modified)")
                continue
            found.setdefault((name, _scope_of(table, row._mapping)), []).append(row.mac)
            if name == "datasets":
                names.add(row.name)
    required = {(t, "") for t in global_tables()} | {
        (t, d) for t in dataset_tables() for d in names
    }
    for key in sorted(set(found) | set(heads) | required):
        problems += _check_scope(key, found.get(key, []), heads.get(key), key in required)
    for key, (generation, digest) in sorted(logged.items()):
        problems += _check_logged(key, int(generation), str(digest), heads.get(key))
    for key, head in sorted(heads.items()):
        if head.logged and key not in logged:
            problems.append(
                f"{key[0]} ({_scope_name(key[1])}): head claims an audit entry none holds"
            )
    return problems


def _stored_heads(
    conn: sa.Connection, sealer: RowSealer, problems: list[str]
) -> dict[HeadKey, _Head]:
    heads = {}
    for row in conn.execute(sa.select(row_heads)):
        try:
            head = _Head(
                row.table_name, row.scope, int(row.rows), str(row.digest), int(row.generation),
                bool(row.logged), stored=True,
            )  # fmt: skip
        except (ValueError, TypeError, OverflowError):
            problems.append("row_heads: a head holds a value of the wrong type (modified)")
            continue
        if hmac.compare_digest(sealer.head_mac(head), str(row.mac)):
            heads[(head.table, head.scope)] = head
        else:
            problems.append(
                f"row_heads: head of {head.table} ({_scope_name(head.scope)}) fails its MAC"
            )
    return heads


def _check_scope(key: HeadKey, macs: list[str], head: _Head | None, required: bool) -> list[str]:
    where = f"{key[0]} ({_scope_name(key[1])})"
    if head is None:
        if macs or required:
            return [f"{where}: integrity head missing (deleted with its rows?)"]
        return []
    if head.rows != len(macs) or head.digest != _digest(macs):
        return [
            f"{where}: {len(macs)} valid rows where the head records {head.rows}, or not the "
            "same rows (rows deleted, inserted or restored from an older copy)"
        ]
    return []


def _check_logged(key: HeadKey, generation: int, digest: str, head: _Head | None) -> list[str]:
    where = f"{key[0]} ({_scope_name(key[1])})"
    if head is None:
        return [f"{where}: the audit log records generation {generation} but no head exists"]
    if head.generation < generation:
        return [
            f"{where}: rows are at generation {head.generation} but the audit log records "
            f"generation {generation}: rolled back to an older copy"
        ]
    if head.generation == generation and head.digest != digest:
        return [f"{where}: rows differ from the state the audit log records"]
    if head.generation > generation and head.logged:
        return [f"{where}: head claims an audit entry for generation {head.generation} none holds"]
    return []
