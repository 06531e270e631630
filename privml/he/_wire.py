"""The byte format shared by every privml.he object that leaves a process.

Layout (all integers big-endian)::

    b"PRIVMLHE" | u16 format version | u8 kind | u32 header length | header (canonical JSON)
    | u32 blob count | (u64 length | blob)* | SHA-256 of everything before it (32 bytes)

The checksum detects truncation and accidental corruption; it is not a
signature (anyone can recompute it), so it protects against accidents, not
against a malicious sender.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from typing import Any

from ..exceptions import ConfigurationError, IntegrityError

__all__ = ["FORMAT_VERSION", "KINDS", "pack", "peek_kind", "unpack"]

MAGIC = b"PRIVMLHE"
FORMAT_VERSION = 1
KINDS = {
    "model": 1,
    "spec": 2,
    "public_context": 3,
    "client": 4,
    "batch": 5,
    "result": 6,
}
_NAMES = {code: name for name, code in KINDS.items()}
_WHAT = {
    "model": "a compiled model (HEModel.to_bytes)",
    "spec": "a model spec (HEModel.spec.to_bytes)",
    "public_context": "a public context (HEClient.public_context)",
    "client": "a client key file holding a SECRET key (HEClient.to_bytes)",
    "batch": "an encrypted batch (EncryptedBatch.to_bytes)",
    "result": "an encrypted result (EncryptedResult.to_bytes)",
}
_PREFIX = struct.Struct(">8sHBI")
_DIGEST = 32


def pack(kind: str, header: dict[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    """Serialize ``header`` and ``blobs`` as one ``kind`` record."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False)
    raw = text.encode("utf-8")
    parts = [_PREFIX.pack(MAGIC, FORMAT_VERSION, KINDS[kind], len(raw)), raw]
    parts.append(struct.pack(">I", len(blobs)))
    for blob in blobs:
        parts += [struct.pack(">Q", len(blob)), bytes(blob)]
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def unpack(data: bytes, kind: str) -> tuple[dict[str, Any], list[bytes]]:
    """Parse a record written by :func:`pack`, checking magic, checksum, version and kind.

    Raises
    ------
    IntegrityError
        The bytes are truncated, corrupted, or not privml.he data at all.
    ConfigurationError
        They are intact but of another kind, or from a newer format version.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes holding {_WHAT[kind]}, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size + 4 + _DIGEST or not data.startswith(MAGIC):
        raise IntegrityError(
            f"these {len(data)} bytes are not privml.he data (expected {_WHAT[kind]}): "
            "they were truncated, corrupted, or written by another tool"
        )
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise IntegrityError(
            f"checksum mismatch reading {_WHAT[kind]}: the bytes were truncated or "
            "corrupted in storage or transit; fetch or re-create them"
        )
    _, version, code, header_len = _PREFIX.unpack_from(body)
    if version > FORMAT_VERSION:
        raise ConfigurationError(
            f"{_WHAT[kind]} was written in privml.he format {version}; this privml reads "
            f"format {FORMAT_VERSION} and older: upgrade privml"
        )
    found = _NAMES.get(code)
    if found != kind:
        what = _WHAT[found] if found else f"an unknown record kind {code}"
        raise ConfigurationError(f"expected {_WHAT[kind]}, got {what}")
    try:
        return _split(body, _PREFIX.size, header_len)
    except (ValueError, struct.error, UnicodeDecodeError) as err:
        raise IntegrityError(f"malformed {_WHAT[kind]}: {err}") from err


def _split(body: bytes, offset: int, header_len: int) -> tuple[dict[str, Any], list[bytes]]:
    end = offset + header_len
    if end + 4 > len(body):
        raise ValueError("header runs past the end")
    header = json.loads(body[offset:end].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    (count,) = struct.unpack_from(">I", body, end)
    offset = end + 4
    blobs: list[bytes] = []
    for _ in range(count):
        (size,) = struct.unpack_from(">Q", body, offset)
        offset += 8
        if offset + size > len(body):
            raise ValueError("a blob runs past the end")
        blobs.append(body[offset : offset + size])
        offset += size
    if offset != len(body):
        raise ValueError("trailing bytes after the last blob")
    return header, blobs


def peek_kind(data: object) -> str | None:
    """The record kind ``data`` claims to be, without checking it (None if not ours)."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < _PREFIX.size:
        return None
    magic, _, code, _ = _PREFIX.unpack_from(bytes(data[: _PREFIX.size]))
    return _NAMES.get(code) if magic == MAGIC else None
