"""The link's messages and its client side, in one file that imports nothing from privml.

Flower starts a fresh ClientApp process for every message (four per SecAgg+ round), and
each imports its app. The ClientApp (:mod:`._client_app`) and this file are therefore
shipped inside the Flower app bundle as top-level modules, so those processes import
NumPy and Flower only, not privml (its root import alone costs about 0.7 s of CPU per
process). Inside privml the same file is :mod:`privml.federated._wire`; the site's side of
the link is :mod:`._link`. Errors here are built-in ones (``ValueError``, ``OSError``);
:mod:`._link` turns them into privml's typed errors.

A message is a JSON header and arrays in NumPy's ``.npy`` format, each part length-prefixed;
arrays are read with ``allow_pickle=False`` (no pickle either way).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["call", "decode", "encode", "read_address"]


def read_address(path: str | Path) -> tuple[str, int, bytes]:
    """Host, port and key from a site's link file (``OSError``, ``ValueError``, ``KeyError``)."""
    data = json.loads(Path(path).read_text())
    return str(data["host"]), int(data["port"]), bytes.fromhex(data["key"])


def encode(header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> bytes:
    """A JSON header and arrays as one message (length-prefixed parts, ``.npy`` arrays)."""
    parts = [json.dumps(header).encode()]
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        parts.append(buffer.getvalue())
    return b"".join(struct.pack("<Q", len(p)) + p for p in parts)


def decode(message: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The header and arrays of :func:`encode`; arrays are read without pickle."""
    parts: list[bytes] = []
    at = 0
    while at < len(message):
        (size,) = struct.unpack_from("<Q", message, at)
        parts.append(message[at + 8 : at + 8 + size])
        at += 8 + size
    header = json.loads(parts[0])
    if not isinstance(header, dict):
        raise ValueError("a link message must start with a JSON object")
    arrays = [np.load(io.BytesIO(p), allow_pickle=False) for p in parts[1:]]
    return header, arrays


def call(
    host: str, port: int, key: bytes, header: dict[str, Any], arrays: Sequence[np.ndarray] = ()
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Send one request to the site process at ``host:port`` (proving ``key``); its reply."""
    connection: Connection = Client((host, port), authkey=key)
    try:
        connection.send_bytes(encode(header, arrays))
        return decode(connection.recv_bytes())
    finally:
        connection.close()
