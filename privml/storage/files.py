"""Vault files in a local folder: written atomically, hashed, and checked on every read.

A local path (the vault folder by default, or a mounted shared folder) is a
:class:`FolderStorage`: the general :class:`~privml.storage.objects.Storage`
over ``pyarrow.fs.LocalFileSystem``, except that a write goes to a temporary
file that is fsync'd and renamed into place (a POSIX folder has an atomic
rename, an object store does not), and reads map the file into memory.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..exceptions import NotFoundError
from . import stream
from .objects import Storage, check_hash, sha256_async
from .parquet_options import encode

__all__ = [
    "FolderStorage",
    "read_checked",
    "read_parquet",
    "remove_files",
    "write_atomic",
    "write_parquet",
]

T = TypeVar("T")
_sha256 = sha256_async


class FolderStorage(Storage):
    """Vault files in the local folder ``root``: atomic, durable writes; mapped reads.

    ``unique`` gives every new file a random name part (as on object stores), for
    folders that several machines share; the vault's own folder keeps the plain
    ``data/<dataset>/<version>.parquet`` names.

    Examples
    --------
    >>> store = FolderStorage(tmp_path, unique=False)
    >>> digest = store.write("models/m/1.bin", b"sealed bytes")
    >>> store.read_checked("models/m/1.bin", expected_hash=digest)
    b'sealed bytes'
    """

    def __init__(self, root: Path, *, unique: bool) -> None:
        super().__init__(pafs.LocalFileSystem(), str(root.absolute()), uri=str(root))
        self.root = root
        self.unique_names = unique

    def check_unclaimed(self) -> None:
        if self.unique_names:  # the vault's own folder is checked by its marker
            super().check_unclaimed()

    def claim(self, vault_id: str) -> None:
        if self.unique_names:
            super().claim(vault_id)

    def check_claim(self, vault_id: str) -> None:
        if self.unique_names:
            super().check_claim(vault_id)

    def write(self, relative: str, data: pa.Buffer | bytes) -> str:
        self._path(relative)  # refuses a name outside the folder
        return write_atomic(self.root / relative, data)

    def write_parquet_stream(
        self, relative: str, tables: Iterable[pa.Table], **options: object
    ) -> tuple[str, int]:
        """Write ``tables`` as one Parquet file to ``relative`` atomically and durably (a
        temporary file, fsync'd and renamed); return its SHA-256, hashed while written,
        and its number of rows. A failure (the tables' source raising included) leaves
        nothing behind."""
        self._path(relative)
        path = self.root / relative
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                with os.fdopen(fd, "wb", closefd=False) as handle:
                    digest, rows = stream.write_tables(handle, tables, **options)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return digest, rows

    def _open_input(self, relative: str) -> pa.NativeFile:
        self._path(relative)
        path = self.root / relative
        try:
            return pa.OSFile(str(path), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"file {str(path)!r} is missing from the vault") from None

    def read_buffer(self, relative: str) -> pa.Buffer:
        self._path(relative)
        path = self.root / relative
        try:
            return pa.memory_map(str(path)).read_buffer()
        except FileNotFoundError:
            raise NotFoundError(f"file {str(path)!r} is missing from the vault") from None

    def _where(self, relative: str) -> str:
        return str(self.root / relative)

    def remove(self, relatives: Iterable[str]) -> None:
        relatives = list(relatives)
        for relative in relatives:
            self._path(relative)
        remove_files(self.root, relatives)


def write_parquet(path: Path, table: pa.Table, **options: object) -> str:
    """Write ``table`` as Parquet to ``path`` atomically and durably; return its SHA-256."""
    return write_atomic(path, encode(table, **options))


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
    check_hash(str(path), hashlib.sha256(data).hexdigest(), expected_hash)
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
        check_hash(str(path), digest.result(), expected_hash)  # tampered: say so, not pyarrow
        raise
    check_hash(str(path), digest.result(), expected_hash)
    return result


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
