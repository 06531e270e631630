"""Dataset files: written atomically, hashed, and checked against their hash on every read."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import IntegrityError, NotFoundError

__all__ = ["read_parquet", "write_parquet"]


def write_parquet(path: Path, table: pa.Table, **options: object) -> str:
    """Write ``table`` to ``path`` atomically and durably; return the file's SHA-256 (hex).

    The bytes go to a temporary file beside ``path``, are fsync'd, then renamed
    into place, and the folder is fsync'd, so ``path`` either does not exist or
    holds the whole file.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)  # type: ignore[arg-type]
    data = sink.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as handle:
            handle.write(memoryview(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return hashlib.sha256(memoryview(data)).hexdigest()


def read_parquet(
    path: Path, *, expected_hash: str, columns: list[str] | None = None, **options: object
) -> pa.Table:
    """Read ``path`` after checking that its bytes hash to ``expected_hash``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"dataset file {str(path)!r} is missing from the vault") from None
    if hashlib.sha256(data).hexdigest() != expected_hash:
        raise IntegrityError(
            f"dataset file {str(path)!r} does not match the content hash recorded when it "
            "was written: it was modified or replaced"
        )
    return pq.read_table(pa.BufferReader(data), columns=columns, **options)  # type: ignore[arg-type]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
