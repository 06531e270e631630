"""Row and head MACs: one vault's key, one canonical encoding of a row whatever the database."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["MODULUS", "Head", "HeadKey", "RowSealer"]

_ROW_TAG = b"privml/row/v1\x00"
_HEAD_TAG = b"privml/row-head/v1\x00"
MODULUS = 2**256
#: A scope: (table name, scope value; "" for a table-wide scope).
HeadKey = tuple[str, str]


@dataclass
class Head:
    table: str
    scope: str
    rows: int
    digest: str
    generation: int
    logged: bool
    stored: bool  # a row exists in row_heads (else it must be inserted)
    dirty: bool = False


class RowSealer:
    """Computes row and head MACs for one vault (key derived from its audit MAC key)."""

    def __init__(self, audit_mac_key: bytes, log_id: str) -> None:
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"privml/rows/v1"
        ).derive(audit_mac_key)
        self._vault = bytes.fromhex(log_id)

    def row_mac(self, table: sa.Table, row: Mapping[Any, Any]) -> str:
        """The MAC of one row of ``table`` (every column but ``mac``).

        A column a schema step added (``info={"added": version}``) counts only when
        it holds a value, so rows stored before the step keep their MACs
        (:mod:`privml.storage.migrations`).
        """
        body = {
            c.name: _canonical(c, row.get(c.name))
            for c in table.columns
            if c.name != "mac" and not (c.info.get("added") and row.get(c.name) is None)
        }
        message = _ROW_TAG + self._vault + _text(table.name) + _json(body)
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def head_mac(self, head: Head) -> str:
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
