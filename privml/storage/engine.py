"""Engines for the vault's metadata: embedded SQLite (default) or PostgreSQL, one code path.

SQLite is set up for durability and for one writer at a time across processes:
WAL journal, ``synchronous=FULL``, foreign keys on, and every transaction begun
with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe), so that a
check-then-write (the audit sequence, a budget charge) can never interleave
with another process's.

On PostgreSQL, a write transaction runs at READ COMMITTED (set here, whatever
the server's ``default_transaction_isolation``) and its first statement locks
the vault's single ``vault_info`` row (``SELECT ... FOR UPDATE``), so writers
queue on that row. At READ COMMITTED every later statement takes a fresh
snapshot, so everything the transaction reads (a budget's spent tally, the
audit head) was read after the lock was granted and includes what the previous
writer committed. Under REPEATABLE READ or SERIALIZABLE the snapshot would date
from before the wait: a writer would decide on state one commit old.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from . import sealed
from .tables import metadata, vault_info

__all__ = ["Tx", "create_tables", "make_engine", "read", "scrub", "transaction"]

_BUSY_TIMEOUT_MS = 30_000
_SCRUB_WAIT_MS = 2_000


def make_engine(*, sqlite_path: Path | None = None, url: str | None = None) -> sa.Engine:
    """Create the metadata engine: ``sqlite_path`` for the embedded default, or ``url``."""
    if url is None:
        if sqlite_path is None:
            raise ValueError("internal: need sqlite_path or url")
        url = f"sqlite:///{sqlite_path}"
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        # Overwrite deleted content (e.g. destroyed keys) instead of leaving it in free pages.
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_tables(engine: sa.Engine) -> None:
    """Create every table (first use of a new vault)."""
    metadata.create_all(engine)


@dataclass
class Tx:
    """An open write transaction and the actions to run once it has committed."""

    conn: sa.Connection
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    #: The audit log's last ``(seq, hash)`` once read in this transaction: it holds the
    #: writer lock, so only its own appends move it (saves a query per entry).
    audit_head: tuple[int, str] | None = None


@contextmanager
def transaction(engine: sa.Engine) -> Iterator[Tx]:
    """Open a serialized write transaction; run ``after_commit`` hooks once it commits.

    Nothing is read before the writer lock: on PostgreSQL the lock is the
    transaction's first statement (see the module's docstring).
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(vault_info.c.id).with_for_update())
            tx = Tx(conn)
            yield tx
            sealed.flush(conn)  # the integrity heads this transaction changed
        for hook in tx.after_commit:
            hook()


@contextmanager
def read(engine: sa.Engine) -> Iterator[sa.Connection]:
    """Open a transaction for reading only (a consistent snapshot)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # rows and their integrity heads from one snapshot
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def scrub(engine: sa.Engine) -> bool:
    """Make deleted metadata unrecoverable from the vault folder; call after a commit.

    With ``secure_delete`` on (every connection), SQLite overwrites what a
    transaction deleted or replaced, but in WAL mode the old page images stay in
    ``meta.db-wal`` until a checkpoint, so a copy of the folder would still hold
    them. This copies every committed page into ``meta.db`` (overwriting the old
    bytes there) and truncates the WAL to zero bytes. Returns False, with a
    warning, if another connection kept the checkpoint from completing (a
    process holding a read transaction); run it again once that process closes
    the vault. On PostgreSQL this does nothing: dead row versions stay in the
    table files until VACUUM reuses their space, and in the server's WAL and
    backups (see SECURITY.md).
    """
    if engine.dialect.name != "sqlite":
        return True
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # A reader in another process can hold the WAL for as long as it likes: wait a
        # little for it, not the 30 s a writer waits, then say so instead.
        cursor.execute(f"PRAGMA busy_timeout={_SCRUB_WAIT_MS}")
        try:
            busy, _frames, _copied = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            cursor.close()
    finally:
        raw.close()
    if busy:
        warnings.warn(
            "deleted key material may remain in meta.db-wal: another connection to the "
            "vault kept SQLite from checkpointing; close the other processes and call "
            "vault.scrub()",
            UserWarning,
            stacklevel=2,
        )
        return False
    return True
