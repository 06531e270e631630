"""Version 5: the tables of DP-SGD checkpoints, ``training_runs`` and ``training_checkpoints``.

Both are new tables, made empty. Each is split into one scope per run (its ledger
request id), whose head is made with the run's first row, so no head is needed here.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..tables import training_checkpoints, training_runs

__all__ = ["upgrade"]


def upgrade(conn: sa.Connection) -> None:
    """Create ``training_runs`` and ``training_checkpoints`` (with its index)."""
    training_runs.create(conn)
    training_checkpoints.create(conn)
