"""Parquet files streamed in and out of a vault's storage, hash-checked, in bounded memory.

A dataset version larger than memory is written row group by row group and read
batch by batch. Writing hashes the bytes as they go out (SHA-256 of the stored,
encrypted file, as :meth:`Storage.write` records it); reading hashes the whole file
in fixed-size pieces before the first batch is handed out and again after the
last, through one open handle.

Engine: pyarrow. It reads and writes Parquet modular encryption natively (the
vault's :class:`~privml.crypto.parquet.ParquetCrypto` properties go straight to
``ParquetFile`` / ``ParquetWriter``), decrypts page by page with a bounded
read buffer (``buffer_size``, no pre-buffering) and hands batches to
``pyarrow.compute``/NumPy. DuckDB and Polars cannot take pyarrow's decryption
properties, so they would need the plaintext handed over (or written out) first,
and would add a dependency for aggregates that are sums and counts.

What the hash covers while a file is read: Parquet's AES-GCM authenticates every
encrypted page and the footer (bound to the file's unique AAD), so an encrypted
column cannot be altered or moved unnoticed at any moment. A plaintext
(non-sensitive) column is covered only by the file hash: someone who can write
the storage *during* a read could change its bytes after the first hash and put
them back before the second; a change still present at either check is detected
and nothing is released.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import ConfigurationError, IntegrityError
from .parquet_options import write_options

__all__ = ["HashingSink", "READ_BUFFER", "hash_handle", "read_batches", "write_tables"]

#: Bytes read or hashed at a time (the read buffer of a streamed Parquet file).
READ_BUFFER = 1 << 20


class HashingSink:
    """A writable file that hashes (SHA-256) every byte passed on to ``inner``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._inner.write(view)
        self._position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._inner.flush()

    def close(self) -> None:
        self.closed = True  # the owner of ``inner`` closes it

    def writable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def write_tables(sink: Any, tables: Iterable[pa.Table], **options: Any) -> tuple[str, int]:
    """Write ``tables`` (one row group or more each) as one Parquet file to ``sink``.

    Returns the SHA-256 of the bytes written and the number of rows. The first
    table fixes the schema (and the encoding, :func:`write_options`, unless ``options``
    say otherwise); an iterable of no tables is refused.
    """
    hashing = HashingSink(sink)
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for table in tables:
            if writer is None:
                chosen = {**write_options(table), **options}
                writer = pq.ParquetWriter(pa.PythonFile(hashing, mode="w"), table.schema, **chosen)
            writer.write_table(table, row_group_size=max(len(table), 1))
            rows += len(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ConfigurationError("internal: a streamed Parquet file needs at least one table")
    return hashing.hexdigest(), rows


def hash_handle(handle: pa.NativeFile) -> str:
    """The SHA-256 (hex) of a whole random-access file, read in :data:`READ_BUFFER` pieces."""
    digest = hashlib.sha256()
    handle.seek(0)
    while True:
        piece = handle.read_buffer(READ_BUFFER)
        if not piece.size:
            break
        digest.update(memoryview(piece))
    return digest.hexdigest()


def read_batches(
    open_input: Callable[[], AbstractContextManager[pa.NativeFile]],
    where: str,
    *,
    expected_hash: str,
    columns: list[str],
    batch_rows: int,
    **options: Any,
) -> Iterator[pa.RecordBatch]:
    """The batches of ``columns`` (``batch_rows`` rows at most), read from one open handle.

    The whole file is hashed before the first batch and again after the last;
    either mismatch raises :class:`IntegrityError`, so a consumer that folds the
    batches into one result learns of a modified file before it releases anything.
    A read error is reported as tampering when the file no longer matches its hash.
    """
    with open_input() as handle:
        _check(where, hash_handle(handle), expected_hash)
        handle.seek(0)
        try:
            parquet = pq.ParquetFile(handle, buffer_size=READ_BUFFER, pre_buffer=False, **options)
            yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)
        except Exception:
            _check(where, hash_handle(handle), expected_hash)  # tampered: say so, not pyarrow
            raise
        _check(where, hash_handle(handle), expected_hash)


def _check(where: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise IntegrityError(
            f"file {where!r} does not match the content hash recorded when it "
            "was written: it was modified or replaced"
        )
