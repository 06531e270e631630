"""Encrypted spill files: partitions of a release's rows on disk, readable only by this process.

Person-level bounding of a version larger than memory partitions its rows by
person (:mod:`privml.vault._stream`). Each partition is a file of records, each
record an Arrow IPC stream sealed with AES-256-GCM under a key drawn fresh for
this spill and held only in memory; the associated data binds (partition,
record number), and the number of records per partition is kept in memory, so a
record edited, moved, dropped or appended fails the read. No plaintext value
reaches the disk. The files live in a fresh private folder (mode 0700) and are
deleted by :meth:`Spill.close` (also on error or when the consumer stops early).
"""

from __future__ import annotations

import os
import secrets
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..exceptions import IntegrityError

__all__ = ["Spill"]

_HEADER = struct.Struct(">Q12s")  # record length, nonce
_AD = b"privml/spill/v1\x00"


class Spill:
    """``partitions`` encrypted spill files in a fresh private temporary folder."""

    def __init__(self, partitions: int) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="privml-spill-"))
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._records = [0] * partitions

    @property
    def paths(self) -> list[Path]:
        """The spill files written so far."""
        return sorted(self._folder.glob("*.spill")) if self._folder.exists() else []

    def write(self, partition: int, table: pa.Table) -> None:
        """Append ``table`` to ``partition`` as one sealed record."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(
            nonce, sink.getvalue().to_pybytes(), self._ad(partition, self._records[partition])
        )
        with open(self._path(partition), "ab", opener=_private) as handle:
            handle.write(_HEADER.pack(len(sealed), nonce))
            handle.write(sealed)
        self._records[partition] += 1

    def read(self, partition: int) -> Iterator[pa.Table]:
        """The records of ``partition`` in the order written, each checked and decrypted."""
        expected = self._records[partition]
        if not expected:
            return
        with open(self._path(partition), "rb") as handle:
            for number in range(expected):
                header = handle.read(_HEADER.size)
                if len(header) != _HEADER.size:
                    raise _tampered()
                length, nonce = _HEADER.unpack(header)
                sealed = handle.read(length)
                try:
                    data = self._aead.decrypt(nonce, sealed, self._ad(partition, number))
                except InvalidTag:
                    raise _tampered() from None
                yield pa.ipc.open_stream(data).read_all()
            if handle.read(1):
                raise _tampered()

    def close(self) -> None:
        """Delete every spill file and the folder (idempotent)."""
        shutil.rmtree(self._folder, ignore_errors=True)

    def _path(self, partition: int) -> Path:
        return self._folder / f"{partition}.spill"

    @staticmethod
    def _ad(partition: int, number: int) -> bytes:
        return _AD + struct.pack(">QQ", partition, number)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _tampered() -> IntegrityError:
    return IntegrityError(
        "a spill file of this release was modified while it was read: nothing was released"
    )
