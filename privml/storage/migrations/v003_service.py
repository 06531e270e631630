"""Version 3: the tables of service mode, ``tokens`` (bearer tokens) and ``replies``.

Both are new tables, made empty. ``tokens`` is split into one scope per token, whose
head is made with the token's first row, so no head is needed here.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..tables import replies, tokens

__all__ = ["upgrade"]


def upgrade(conn: sa.Connection) -> None:
    """Create ``tokens`` (with its index on ``principal``) and ``replies``."""
    tokens.create(conn)
    replies.create(conn)
