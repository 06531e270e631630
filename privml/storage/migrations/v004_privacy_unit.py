"""Version 4: each dataset's privacy unit, in two columns of ``datasets``.

``privacy_unit`` ("row" or an identifier column) and ``max_rows_per_unit`` are
added nullable: the datasets of an older vault keep NULL there, which reads as
the row-level unit (what every release on them was charged at), and their rows
keep their MACs. A value written into either column without the key breaks the
row's MAC like any other edit.
"""

from __future__ import annotations

import sqlalchemy as sa

from ._ops import add_column

__all__ = ["upgrade"]


def upgrade(conn: sa.Connection) -> None:
    """Add ``datasets.privacy_unit`` and ``datasets.max_rows_per_unit`` (NULL: row-level)."""
    add_column(conn, "datasets", sa.Column("privacy_unit", sa.String(128), nullable=True))
    add_column(conn, "datasets", sa.Column("max_rows_per_unit", sa.Integer, nullable=True))
