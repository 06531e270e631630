"""Where a vault's data files live: ``storage=`` turned into a :class:`Storage`.

* nothing: the vault folder (``data/``, ``models/`` beside ``meta.db``);
* a local path or ``file://`` URI: a folder, e.g. a shared mount several machines see;
* ``s3://bucket/prefix``: an S3-compatible object store through ``pyarrow.fs``;
  ``storage_options`` go to ``pyarrow.fs.S3FileSystem`` (``endpoint_override``,
  ``region``, ...). Credentials come from the standard AWS environment and
  configuration (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, profiles, instance
  roles); the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when
  ``endpoint_override`` is not given;
* a ``pyarrow.fs.FileSystem`` object: its root (wrap it in ``SubTreeFileSystem`` for a prefix).

Nothing here is written to the metadata or the audit log: a URI with credentials
or settings in it (``s3://key:secret@bucket``, ``?access_key=``) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from ..exceptions import ConfigurationError
from .files import FolderStorage
from .objects import Storage

__all__ = ["StorageLocation", "open_storage"]

#: What ``storage=`` accepts.
StorageLocation: TypeAlias = str | os.PathLike[str] | pafs.FileSystem


def open_storage(
    storage: StorageLocation | None,
    *,
    options: Mapping[str, Any] | None,
    folder: Path | None,
) -> Storage:
    """The :class:`Storage` that ``storage=`` names (the folder ``folder`` when None).

    Examples
    --------
    >>> open_storage(None, options=None, folder=tmp_path).uri == str(tmp_path)
    True
    >>> open_storage("s3://bucket/team", options={"region": "eu-west-1"}, folder=None)
    <privml storage 's3://bucket/team'>
    """
    if storage is None:
        if options:
            raise ConfigurationError("storage_options= needs storage= (an s3:// URI)")
        if folder is None:
            raise ConfigurationError(
                "a vault without a folder needs storage= (a shared folder or s3://bucket/prefix)"
            )
        return FolderStorage(folder, unique=False)
    if isinstance(storage, pafs.FileSystem):
        return _filesystem(storage, options)
    if isinstance(storage, os.PathLike) or "://" not in storage:
        _no_options(options, "a local folder")
        return FolderStorage(Path(storage), unique=True)
    return _uri(str(storage), options)


def _filesystem(fs: pafs.FileSystem, options: Mapping[str, Any] | None) -> Storage:
    _no_options(options, "a pyarrow.fs.FileSystem object (configure the object instead)")
    if isinstance(fs, pafs.LocalFileSystem):
        raise ConfigurationError(
            "storage=LocalFileSystem() names the whole disk; pass the folder's path instead"
        )
    return Storage(fs, "", uri=f"<{fs.type_name} file system>")


def _uri(uri: str, options: Mapping[str, Any] | None) -> Storage:
    parts = urlsplit(uri)
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(
            "storage= must be a plain URI (scheme://bucket/prefix): put settings in "
            "storage_options= and credentials in the environment (AWS_ACCESS_KEY_ID, ...), "
            "never in the URI"
        )
    scheme = parts.scheme.lower()
    base = (parts.netloc + parts.path).rstrip("/")
    if scheme == "file":
        _no_options(options, "a file:// URI")
        return FolderStorage(Path(parts.path), unique=True)
    if not parts.netloc:
        raise ConfigurationError(
            f"storage= {scheme}:// URI names no bucket; use {scheme}://bucket/prefix"
        )
    clean = f"{scheme}://{base}"
    if scheme == "s3":
        return Storage(_s3(options), base, uri=clean)
    _no_options(options, f"a {scheme}:// URI (pass a configured pyarrow.fs.FileSystem)")
    try:
        fs, path = pafs.FileSystem.from_uri(clean)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigurationError(f"storage= {clean!r} is not usable: {err}") from None
    return Storage(fs, path, uri=clean)


def _s3(options: Mapping[str, Any] | None) -> pafs.S3FileSystem:
    settings = dict(options or {})
    if "endpoint_override" not in settings:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            settings["endpoint_override"] = endpoint
    try:
        return pafs.S3FileSystem(**settings)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"storage_options ({sorted(settings)}) holds a setting pyarrow.fs.S3FileSystem "
            "does not take, or a value of the wrong type; see its documentation "
            "(endpoint_override, region, ...)"
        ) from None


def _no_options(options: Mapping[str, Any] | None, what: str) -> None:
    if options:
        raise ConfigurationError(f"storage_options= applies to s3:// URIs, not to {what}")
