"""Dataset files: written atomically, hashed, and checked against their hash on every read."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import IntegrityError, NotFoundError

__all__ = ["read_checked", "read_parquet", "remove_files", "write_atomic", "write_parquet"]

T = TypeVar("T")

# hashlib releases the GIL on large buffers, so the SHA-256 of a file runs on the
# other core while the file is written or parsed.
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="privml-sha256")


def _sha256(data: pa.Buffer) -> Future[str]:
    return _HASHER.submit(lambda: hashlib.sha256(memoryview(data)).hexdigest())


def write_parquet(path: Path, table: pa.Table, **options: object) -> str:
    """Write ``table`` as Parquet to ``path`` atomically and durably; return its SHA-256."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return write_atomic(path, sink.getvalue())


def write_atomic(path: Path, data: pa.Buffer | bytes) -> str:
    """Write ``data`` to ``path`` atomically and durably; return the SHA-256 (hex) of the bytes.

    The bytes go to a temporary file beside ``path``, are fsync'd, then renamed
    into place, and the folder is fsync'd, so ``path`` either does not exist or
    holds the whole file. The hash runs on another thread during the write.
    """
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    digest = _sha256(buffer)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(memoryview(buffer))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no stray copy of the bytes is left beside the file
        raise
    _fsync_dir(path.parent)
    return digest.result()


def remove_files(root: Path, relatives: list[str]) -> None:
    """Delete the vault files ``relatives`` (paths under ``root``) and stray temporary files
    beside them, then fsync their folders, so a copy of the folder taken later lacks them.

    Used once the keys of those files were destroyed: they could no longer be
    decrypted, and now they are gone too. Missing files are skipped.
    """
    folders = set()
    for relative in relatives:
        path = root / relative
        if root.resolve() not in path.resolve().parents:
            raise ValueError("internal: a vault file outside the vault folder")
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in folders:
        if folder.is_dir():
            for stray in folder.glob(".*.tmp"):
                stray.unlink(missing_ok=True)
            _fsync_dir(folder)


def read_checked(path: Path, *, expected_hash: str) -> bytes:
    """Read ``path`` whole, after checking that its bytes hash to ``expected_hash``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"file {str(path)!r} is missing from the vault") from None
    _check(path, hashlib.sha256(data).hexdigest(), expected_hash)
    return data


def read_parquet(
    path: Path,
    *,
    expected_hash: str,
    convert: Callable[[pa.Table], T],
    columns: list[str] | None = None,
    **options: object,
) -> T:
    """Read ``path``, convert it with ``convert``, and return the result only if the
    file's bytes hash to ``expected_hash``.

    The hash runs on another thread while the file is parsed and converted; the
    result is released only after the check passes.
    """
    try:
        data = pa.memory_map(str(path)).read_buffer()
    except FileNotFoundError:
        raise NotFoundError(f"dataset file {str(path)!r} is missing from the vault") from None
    digest = _sha256(data)
    try:
        result = convert(pq.read_table(pa.BufferReader(data), columns=columns, **options))
    except Exception:
        _check(path, digest.result(), expected_hash)  # a tampered file: say so, not pyarrow's error
        raise
    _check(path, digest.result(), expected_hash)
    return result


def _check(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise IntegrityError(
            f"file {str(path)!r} does not match the content hash recorded when it "
            "was written: it was modified or replaced"
        )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
