"""Schema changes SQLAlchemy Core has no construct for."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateColumn

__all__ = ["add_column"]


def add_column(conn: sa.Connection, table: str, column: sa.Column[Any]) -> None:
    """``ALTER TABLE table ADD COLUMN column`` on SQLite and PostgreSQL alike.

    The column must be nullable: the rows already stored get NULL, which a column
    marked ``info={"added": version}`` leaves out of their MACs.
    """
    if not column.nullable:
        raise ValueError(f"internal: a column added to {table} must be nullable")
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    name = conn.dialect.identifier_preparer.quote(table)
    conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {spec}")
