"""The engine's row key, the guard against bare writes, and per-transaction state."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from ...exceptions import ConfigurationError, IntegrityError
from ..tables import PROTECTED
from ._mac import Head, HeadKey, RowSealer

__all__ = [
    "TxState",
    "bind",
    "mac_for",
    "run",
    "sealer_of",
    "sealers",
    "tx_state",
    "typed",
    "unbind",
]

SEALED = "privml_sealed"  # execution option that lets a write through the guard
HEADS = "row_heads"

sealers: weakref.WeakKeyDictionary[sa.Engine, RowSealer] = weakref.WeakKeyDictionary()


@dataclass
class TxState:
    heads: dict[HeadKey, Head | None] = field(default_factory=dict)
    scopes: dict[HeadKey, list[Any]] = field(default_factory=dict)
    #: Head rows read ahead (by scope, with every unlogged head), their MACs not checked yet.
    fetched: dict[HeadKey, Any] = field(default_factory=dict)
    #: The scopes whose every head row is in ``fetched`` or ``heads``.
    loaded: set[str] = field(default_factory=set)
    #: The heads stored unlogged when first read, once that was read (else None).
    unlogged: set[HeadKey] | None = None


states: weakref.WeakKeyDictionary[sa.Connection, TxState] = weakref.WeakKeyDictionary()


def mac_for(conn: sa.Connection, table: sa.Table, row: Mapping[Any, Any]) -> str:
    """The MAC of ``row`` of ``table`` under the vault bound to ``conn``'s engine.

    For a single-row table outside :data:`~privml.storage.tables.PROTECTED`
    (``vault_info``), whose MAC is checked when the vault opens.
    """
    return sealer_of(conn).row_mac(table, row)


def bind(engine: sa.Engine, sealer: RowSealer) -> None:
    """Use ``sealer`` for ``engine``'s rows and refuse writes that bypass this module."""
    sealers[engine] = sealer
    if not event.contains(engine, "before_execute", _guard):
        event.listen(engine, "before_execute", _guard)


def unbind(engine: sa.Engine) -> None:
    """Forget ``engine``'s row key (the vault closed)."""
    sealers.pop(engine, None)


def _guard(
    conn: sa.Connection, clause: Any, multiparams: Any, params: Any, options: Mapping[str, Any]
) -> None:
    if isinstance(clause, sa.Insert | sa.Update | sa.Delete):
        name = getattr(clause.table, "name", "")
        if (name in PROTECTED or name == HEADS) and not options.get(SEALED):
            raise IntegrityError(
                f"internal: {name} rows are authenticated; write them through "
                "privml.storage.sealed, not with a bare statement"
            )


def sealer_of(conn: sa.Connection) -> RowSealer:
    try:
        return sealers[conn.engine]
    except KeyError:
        raise ConfigurationError(
            "the vault's metadata cannot be checked: the vault is closed; open it again "
            "with Vault.open()"
        ) from None


def tx_state(conn: sa.Connection) -> TxState:
    state = states.get(conn)
    if state is None:
        state = states[conn] = TxState()
    return state


def run(conn: sa.Connection, statement: Any, params: Any = None) -> sa.CursorResult[Any]:
    return conn.execute(statement, params, execution_options={SEALED: True})


@contextmanager
def typed(what: str) -> Iterator[None]:
    """Turn a stored value of the wrong type (SQLite keeps any type in any column) into an
    :class:`~privml.exceptions.IntegrityError`: reading it fails before its MAC is checked."""
    try:
        yield
    except (ValueError, TypeError, OverflowError, AttributeError):
        raise IntegrityError(
            f"{what} holds a value of the wrong type: the vault's metadata was edited without "
            "the key"
        ) from None
