"""Orphan data files: stored, but named by no metadata row.

A dataset version or model is written to storage, read back and checked, and
only then is the row naming it committed. A crash (or a lost connection) in
between leaves the file without a row: an *orphan*. It holds ciphertext only,
under keys that were never committed (or were committed and later destroyed),
and no read ever reaches it. :func:`orphans` lists them and
:func:`remove_orphans` deletes those older than a grace period, which protects
the files of writes still in flight on another machine.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..audit import ADMIN_PURPOSE, AuditLog
from ..exceptions import ConfigurationError
from ..storage.engine import read, transaction
from ..storage.objects import Storage, StoredObject
from ..storage.tables import models, training_checkpoints, versions

if TYPE_CHECKING:
    from ._state import VaultState

__all__ = ["orphans", "remove_orphans"]


def orphans(state: VaultState, storage: Storage) -> list[StoredObject]:
    """The data files in ``storage`` that no version or model row names (any age)."""
    with read(state.engine) as conn:
        # Every row that names a file protects it, even a row whose MAC fails.
        named = {str(f) for (f,) in conn.execute(sa.select(versions.c.file))}
        named |= {str(f) for (f,) in conn.execute(sa.select(models.c.file))}
        named |= {str(f) for (f,) in conn.execute(sa.select(training_checkpoints.c.file))}
    return [item for item in storage.listing() if item.relative not in named]


def remove_orphans(
    state: VaultState, storage: Storage, audit: AuditLog, *, older_than: timedelta
) -> list[str]:
    """Delete the orphans last modified more than ``older_than`` ago; audited by count."""
    if older_than < timedelta(0):
        raise ConfigurationError("older_than must not be negative")
    cutoff = datetime.now(UTC) - older_than
    doomed = [o.relative for o in orphans(state, storage) if _before(o.modified, cutoff)]
    storage.remove(doomed)
    with transaction(state.engine) as tx:
        audit.append(
            tx,
            principal=state.actor,
            purpose=ADMIN_PURPOSE,
            action="storage.remove_orphans",
            outcome="ok",
            details={"removed": len(doomed), "older_than_s": older_than.total_seconds()},
        )
    return doomed


def _before(modified: datetime | None, cutoff: datetime) -> bool:
    if modified is None:
        return False  # age unknown: keep it
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    return modified < cutoff
