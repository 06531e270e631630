"""Checking a vault's recorded schema version and upgrading it in one transaction."""

from __future__ import annotations

import hmac
from typing import Any

import sqlalchemy as sa

from ...exceptions import ConfigurationError, IntegrityError
from .. import sealed
from ..engine import transaction
from ..tables import vault_info
from . import _registry
from ._registry import BASELINE, current

__all__ = ["check_version", "read_info", "upgrade"]


def read_info(conn: sa.Connection) -> Any:
    """The ``vault_info`` row (None if missing), with the columns its database has.

    A column a step added to ``vault_info`` is absent before the upgrade; it reads
    as missing, which its MAC treats as NULL.
    """
    stored = {c["name"] for c in sa.inspect(conn).get_columns(vault_info.name)}
    columns = [c for c in vault_info.columns if c.name in stored]
    return conn.execute(sa.select(*columns)).one_or_none()


def check_version(version: Any) -> int:
    """``version`` if this privml can open a vault at it (at once, or after :func:`upgrade`).

    Raises :class:`~privml.exceptions.ConfigurationError` for a vault written by
    a newer privml or by one from before authenticated metadata rows.
    """
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise IntegrityError(
            "the vault's own row (vault_info: its schema version) was edited without the key; "
            "restore meta.db from a backup"
        ) from None
    if number > current():
        from ... import __version__

        raise ConfigurationError(
            f"this vault's metadata has format {number} (its schema version), written by a newer "
            f"privml; privml {__version__} knows formats up to {current()}. Upgrade privml "
            "(pip install --upgrade privml) to open it"
        )
    if number < BASELINE:
        raise ConfigurationError(
            f"this vault's metadata has format {number} (its schema version); this privml opens "
            f"format {BASELINE} and later only (authenticated metadata rows). Export its "
            "datasets with the privml version that wrote it and add them to a new vault"
        )
    return number


def upgrade(engine: sa.Engine) -> list[int]:
    """Run every pending step and record :func:`current`, in one transaction.

    ``engine`` must be bound to the vault's row key (:func:`privml.storage.sealed.bind`).
    Returns the versions applied (empty if the vault was already current, e.g.
    upgraded by another process meanwhile). If a step fails, nothing is kept.
    """
    with transaction(engine) as tx:
        info = read_info(tx.conn)
        if info is None or not _intact(tx.conn, info):
            raise IntegrityError(
                "the vault's own row (vault_info: its schema version) was edited without the "
                "key; restore meta.db from a backup"
            )
        version = check_version(info.format)
        pending = _registry.STEPS[version - BASELINE :]
        for step in pending:
            try:
                step.upgrade(tx.conn)
            except Exception as exc:
                exc.add_note(
                    f"privml: upgrading the vault's metadata from schema version {version} to "
                    f"{current()} failed at step {step.version} ({step.name}); nothing was "
                    f"changed, the vault is still at version {version}"
                )
                raise
        if pending:
            _record(tx.conn, current())
    return [step.version for step in pending]


def _intact(conn: sa.Connection, info: Any) -> bool:
    try:
        return hmac.compare_digest(sealed.mac_for(conn, vault_info, info._mapping), str(info.mac))
    except (ValueError, TypeError, OverflowError, AttributeError):
        return False  # a value of the wrong type (SQLite keeps any type in any column)


def _record(conn: sa.Connection, version: int) -> None:
    """Write ``version`` into ``vault_info`` and MAC the row again."""
    row = {k: v for k, v in read_info(conn)._mapping.items() if k != "mac"}
    row["format"] = version
    mac = sealed.mac_for(conn, vault_info, row)
    conn.execute(
        vault_info.update().where(vault_info.c.id == row["id"]).values(format=version, mac=mac)
    )
