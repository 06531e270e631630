"""Verifying every protected table at once: MACs, heads, and heads against the audit log."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..tables import PROTECTED, metadata, row_heads
from ._binding import sealer_of
from ._heads import dataset_tables, digest_of, global_tables, scope_name, scope_of
from ._mac import Head, HeadKey, RowSealer
from ._rows import describe

__all__ = ["verify_rows"]


def verify_rows(conn: sa.Connection, logged: Mapping[HeadKey, Sequence[Any]]) -> list[str]:
    """Every integrity problem of the protected tables, as sentences (empty when intact).

    ``logged`` maps each head to the newest ``(generation, digest)`` the audit log records.
    """
    sealer = sealer_of(conn)
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
                problems.append(f"{name}: row {describe(table, row)} fails its MAC (modified)")
                continue
            found.setdefault((name, scope_of(table, row._mapping)), []).append(row.mac)
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
                f"{key[0]} ({scope_name(key[1])}): head claims an audit entry none holds"
            )
    return problems


def _stored_heads(
    conn: sa.Connection, sealer: RowSealer, problems: list[str]
) -> dict[HeadKey, Head]:
    heads = {}
    for row in conn.execute(sa.select(row_heads)):
        try:
            head = Head(
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
                f"row_heads: head of {head.table} ({scope_name(head.scope)}) fails its MAC"
            )
    return heads


def _check_scope(key: HeadKey, macs: list[str], head: Head | None, required: bool) -> list[str]:
    where = f"{key[0]} ({scope_name(key[1])})"
    if head is None:
        if macs or required:
            return [f"{where}: integrity head missing (deleted with its rows?)"]
        return []
    if head.rows != len(macs) or head.digest != digest_of(macs):
        return [
            f"{where}: {len(macs)} valid rows where the head records {head.rows}, or not the "
            "same rows (rows deleted, inserted or restored from an older copy)"
        ]
    return []


def _check_logged(key: HeadKey, generation: int, digest: str, head: Head | None) -> list[str]:
    where = f"{key[0]} ({scope_name(key[1])})"
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
