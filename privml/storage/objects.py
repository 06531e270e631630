"""Vault data on any ``pyarrow.fs`` file system: written, read back and hash-checked.

A :class:`Storage` keeps the vault's data files (dataset versions, models) under
one base path of a file system: an S3-compatible object store, or any other
``pyarrow.fs.FileSystem``. Object stores have no rename, so a file is written
straight to its final key, which is unique to that write (a random suffix: no
two writers, and no late retry of a failed one, ever share a key); it is then
read back and its SHA-256 checked before the caller commits the metadata row
that names it. A crash between the two leaves at most an *orphan*, an object no
row names: :meth:`Storage.orphans` lists those and :meth:`Storage.remove`
deletes them. Every read checks the bytes against the hash recorded at write.

The store sees only what it is given: Parquet files under modular encryption
and sealed model blobs, never plaintext or keys.
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..exceptions import ConfigurationError, IntegrityError, NotFoundError, VaultExistsError
from . import stream
from .parquet_options import encode

__all__ = ["DATA_FOLDERS", "Storage", "StoredObject", "check_hash", "sha256_async"]

T = TypeVar("T")

#: The folders (key prefixes) under the base path that hold vault data files.
DATA_FOLDERS = ("data", "models")
#: The object that says which vault's files the base path holds (its log id).
CLAIM = "privml-vault.id"

# hashlib releases the GIL on large buffers, so the SHA-256 of a file runs on
# another core while the file is written or parsed.
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="privml-sha256")


def sha256_async(data: pa.Buffer) -> Future[str]:
    """The SHA-256 (hex) of ``data``, computed on the hashing thread."""
    return _HASHER.submit(lambda: hashlib.sha256(memoryview(data)).hexdigest())


def check_hash(where: str, actual: str, expected: str) -> None:
    """Raise :class:`IntegrityError` naming ``where`` unless the hashes match."""
    if actual != expected:
        raise IntegrityError(
            f"file {where!r} does not match the content hash recorded when it "
            "was written: it was modified or replaced"
        )


@dataclass(frozen=True)
class StoredObject:
    """One data file in a vault's storage: its path relative to the base, size and age."""

    relative: str
    size: int
    modified: datetime | None


class Storage:
    """Vault data files on a ``pyarrow.fs`` file system under ``base`` (write, verify, read).

    Parameters
    ----------
    filesystem : pyarrow.fs.FileSystem
        Where the files go (``S3FileSystem``, ``SubTreeFileSystem``, ...).
    base : str
        The base path in that file system (``"bucket/prefix"`` for S3; may be empty).
    uri : str
        A description for messages, without credentials (``"s3://bucket/prefix"``).

    Examples
    --------
    >>> import pyarrow.fs as pafs
    >>> local = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    >>> store = Storage(local, "", uri="example")
    >>> name = store.name_for("models/m", ".bin")
    >>> digest = store.write(name, b"sealed bytes")
    >>> store.read_checked(name, expected_hash=digest)
    b'sealed bytes'
    """

    #: Whether a write goes to a fresh, unique name (objects are never replaced).
    unique_names = True

    def __init__(self, filesystem: pafs.FileSystem, base: str, *, uri: str) -> None:
        self._fs = filesystem
        self._base = base.strip("/")
        self.uri = uri
        self._needs_dirs = _has_directories(filesystem)

    def __repr__(self) -> str:
        return f"<privml storage {self.uri!r}>"

    # -- names --------------------------------------------------------------------------
    def name_for(self, stem: str, suffix: str) -> str:
        """The relative name of a new file: ``stem`` plus a random part plus ``suffix``."""
        if self.unique_names:
            return f"{stem}-{uuid.uuid4().hex}{suffix}"
        return f"{stem}{suffix}"

    def _path(self, relative: str) -> str:
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise IntegrityError(
                f"a metadata row names the data file {relative!r}, which is not a path inside "
                "the vault's storage; restore meta.db from a backup"
            )
        return f"{self._base}/{relative}" if self._base else relative

    # -- which vault ---------------------------------------------------------------------
    def check_unclaimed(self) -> None:
        """Refuse storage that already holds a vault's files (before creating a vault)."""
        if self._exists(CLAIM) or self.listing():
            raise VaultExistsError(
                f"the storage {self.uri!r} already holds a vault's files; give each vault "
                "its own prefix or folder"
            )

    def claim(self, vault_id: str) -> None:
        """Mark the storage as holding the files of the vault ``vault_id`` (its log id)."""
        self.write(CLAIM, vault_id.encode())

    def check_claim(self, vault_id: str) -> None:
        """Refuse storage that holds no vault's files, or another vault's."""
        try:
            found = self.read_buffer(CLAIM).to_pybytes().decode(errors="replace")
        except NotFoundError:
            raise NotFoundError(
                f"the storage {self.uri!r} holds no vault's files ({CLAIM} is missing): "
                "pass the storage= the vault was created with"
            ) from None
        if found != vault_id:
            raise ConfigurationError(
                f"the storage {self.uri!r} holds another vault's files: pass the storage= "
                "this vault was created with"
            )

    def _exists(self, relative: str) -> bool:
        info = self._fs.get_file_info(self._path(relative))
        return bool(info.type != pafs.FileType.NotFound)

    # -- writing ------------------------------------------------------------------------
    def write_parquet(self, relative: str, table: pa.Table, **options: object) -> str:
        """Write ``table`` as Parquet to ``relative``; return the SHA-256 of the file.

        Encoded as :func:`~privml.storage.parquet_options.encode` does."""
        return self.write(relative, encode(table, **options))

    def write_parquet_stream(
        self, relative: str, tables: Iterable[pa.Table], **options: object
    ) -> tuple[str, int]:
        """Write ``tables`` as one Parquet file, row group by row group, to ``relative``.

        Returns the SHA-256 of the file (hashed while written, then checked by
        reading the object back in pieces) and its number of rows. A failure
        (the tables' source raising included) deletes the object.
        """
        path = self._path(relative)
        if self._needs_dirs:
            self._fs.create_dir(posixpath.dirname(path), recursive=True)
        try:
            with self._fs.open_output_stream(path) as out:
                digest, rows = stream.write_tables(out, tables, **options)
            with self._open_input(relative) as back:
                check_hash(f"{self.uri}/{relative}", stream.hash_handle(back), digest)
        except BaseException:
            self._delete(path)
            raise
        return digest, rows

    def write(self, relative: str, data: pa.Buffer | bytes) -> str:
        """Write ``data`` to ``relative``, read it back and check it; return its SHA-256.

        Raises :class:`IntegrityError` (after deleting the object) if the store does
        not return the bytes written. Only then may a metadata row name the file.
        """
        buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
        digest = sha256_async(buffer)
        path = self._path(relative)
        if self._needs_dirs:
            self._fs.create_dir(posixpath.dirname(path), recursive=True)
        try:
            with self._fs.open_output_stream(path) as out:
                out.write(buffer)
            expected = digest.result()
            back = self._read(path, relative)
            check_hash(f"{self.uri}/{relative}", hashlib.sha256(back).hexdigest(), expected)
        except BaseException:
            self._delete(path)  # a failed write leaves no object (best effort: else an orphan)
            raise
        return expected

    @contextmanager
    def uncommitted(self, relative: str) -> Iterator[None]:
        """Delete the just-written ``relative`` if the block (its metadata row) fails.

        No committed row names the file yet, so removing it is safe; a crash
        instead leaves an orphan for :meth:`orphans`.
        """
        try:
            yield
        except BaseException:
            self.remove([relative])
            raise

    # -- reading ------------------------------------------------------------------------
    def _read(self, path: str, relative: str) -> pa.Buffer:
        try:
            with self._fs.open_input_file(path) as handle:
                return handle.read_buffer()
        except FileNotFoundError:
            raise NotFoundError(
                f"file {relative!r} is missing from the vault's storage {self.uri!r}"
            ) from None

    def read_buffer(self, relative: str) -> pa.Buffer:
        """The bytes of ``relative``, unchecked (:meth:`read_checked` checks them)."""
        return self._read(self._path(relative), relative)

    def read_checked(self, relative: str, *, expected_hash: str) -> bytes:
        """Read ``relative`` whole, after checking that its bytes hash to ``expected_hash``."""
        data: bytes = self.read_buffer(relative).to_pybytes()
        check_hash(self._where(relative), hashlib.sha256(data).hexdigest(), expected_hash)
        return data

    def read_parquet(
        self,
        relative: str,
        *,
        expected_hash: str,
        convert: Callable[[pa.Table], T],
        columns: list[str] | None = None,
        **options: object,
    ) -> T:
        """Read ``relative``, convert it with ``convert``, and return the result only if
        the file's bytes hash to ``expected_hash``.

        The hash runs on another thread while the file is parsed and converted; the
        result is released only after the check passes.
        """
        data = self.read_buffer(relative)
        digest = sha256_async(data)
        where = self._where(relative)
        try:
            result = convert(pq.read_table(pa.BufferReader(data), columns=columns, **options))
        except Exception:
            check_hash(where, digest.result(), expected_hash)  # tampered: say so, not pyarrow
            raise
        check_hash(where, digest.result(), expected_hash)
        return result

    def read_parquet_stream(
        self,
        relative: str,
        *,
        expected_hash: str,
        columns: list[str],
        batch_rows: int,
        **options: object,
    ) -> Iterator[pa.RecordBatch]:
        """The batches of ``columns`` of ``relative``, at most ``batch_rows`` rows each,
        in bounded memory; the file is hashed whole before the first batch and after
        the last (see :mod:`privml.storage.stream` for what that covers)."""
        return stream.read_batches(
            lambda: self._open_input(relative),
            self._where(relative),
            expected_hash=expected_hash,
            columns=columns,
            batch_rows=batch_rows,
            **options,
        )

    def _open_input(self, relative: str) -> pa.NativeFile:
        path = self._path(relative)
        try:
            return self._fs.open_input_file(path)
        except FileNotFoundError:
            raise NotFoundError(
                f"file {relative!r} is missing from the vault's storage {self.uri!r}"
            ) from None

    def _where(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    # -- removing and listing -----------------------------------------------------------
    def remove(self, relatives: Iterable[str]) -> None:
        """Delete the files ``relatives``; missing ones are skipped."""
        for relative in relatives:
            self._delete(self._path(relative))

    def _delete(self, path: str) -> None:
        with suppress(FileNotFoundError):
            self._fs.delete_file(path)

    def listing(self) -> list[StoredObject]:
        """Every file under the data folders (``data/``, ``models/``), sorted by name."""
        found = []
        for folder in DATA_FOLDERS:
            selector = pafs.FileSelector(self._path(folder), recursive=True, allow_not_found=True)
            for info in self._fs.get_file_info(selector):
                if info.type == pafs.FileType.File:
                    relative = info.path[len(self._base) + 1 :] if self._base else info.path
                    found.append(StoredObject(relative, int(info.size or 0), info.mtime))
        return sorted(found, key=lambda o: o.relative)


def _has_directories(filesystem: pafs.FileSystem) -> bool:
    """Whether files need their parent directories made first (not on object stores)."""
    inner = filesystem
    while isinstance(inner, pafs.SubTreeFileSystem):
        inner = inner.base_fs
    return inner.type_name not in ("s3", "gcs")
