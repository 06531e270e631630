"""What creating and opening a vault check and write besides the services: marker, identity row.

The marker file ``vault.json`` says a folder holds a vault, where its metadata
lives and whether its data files live elsewhere (``storage=``); the ``vault_info``
row holds the vault's identity, format, key-check value and wrapped audit keys,
authenticated under the vault's own MAC key.

A vault without a folder (PostgreSQL metadata, data on shared or object storage)
has no marker: its ``vault_info`` row plays the marker's part (a database holds a
vault when it has that row; the row says the format), and the audit anchor is
given explicitly by every handle.
"""

from __future__ import annotations

import base64
import getpass
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .._canonical import canonical_json, utcnow
from ..crypto.keys import VaultKey, new_data_key
from ..exceptions import ConfigurationError, IntegrityError, NotFoundError, VaultExistsError
from ..storage import migrations, sealed
from ..storage.engine import create_tables, make_engine, read, transaction
from ..storage.tables import vault_info

__all__ = [
    "MARKER",
    "check_folderless",
    "check_info",
    "default_actor",
    "new_metadata",
    "open_metadata",
]

MARKER = "vault.json"


def default_actor() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"os:uid-{os.getuid()}"


def write_marker(folder: Path, *, external: bool, storage: bool = False) -> None:
    marker: dict[str, Any] = {
        "format": migrations.current(),
        "metadata": "external" if external else "sqlite",
    }
    if storage:
        marker["storage"] = "external"  # where is not recorded: a URI may say too much
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_bytes(canonical_json(marker))
    os.replace(tmp, folder / MARKER)


def check_info(sealer: sealed.RowSealer, info: Any, seed: bytes) -> None:
    """Refuse a ``vault_info`` row edited without the key.

    Its MAC covers the vault's identity, format, key-check value, wrapped audit keys,
    verify key and checkpoint interval; the verify key must also be the signing key's.
    """
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    try:
        intact = hmac.compare_digest(sealer.row_mac(vault_info, info._mapping), str(info.mac))
        intact = intact and bytes(info.verify_key) == public and int(info.checkpoint_every) >= 1
    except (ValueError, TypeError, OverflowError, AttributeError):
        intact = False  # a value of the wrong type (SQLite keeps any type in any column)
    if not intact:
        raise IntegrityError(
            "the vault's own row (vault_info: identity, schema version, audit keys, checkpoint "
            "interval) was edited without the key; restore meta.db from a backup"
        )


def check_folderless(metadata_url: str | None, anchor_path: object) -> None:
    """Refuse a vault without a folder that lacks what the folder would have given."""
    if metadata_url is None:
        raise ConfigurationError(
            "a vault without a folder keeps its metadata in PostgreSQL: pass "
            "metadata_url='postgresql+psycopg://...' (or give the vault folder as path)"
        )
    if anchor_path is None:
        raise ConfigurationError(
            "a vault without a folder has no default place for its audit anchor: pass "
            "anchor_path= (a local file every handle appends to, ideally on other storage "
            "than the database, such as a shared or WORM mount)"
        )


def new_metadata(
    folder: Path | None,
    *,
    key: bytes | str | None,
    key_file: str | os.PathLike[str] | None,
    passphrase: str | None,
    metadata_url: str | None,
    checkpoint_every: int,
    external_storage: bool = False,
) -> tuple[sa.Engine, VaultKey]:
    """Make the vault folder, its marker and its metadata database with the identity row.

    Without a folder (``folder`` None) only the database is made; one that already
    holds a vault is refused.
    """
    if folder is None:
        return _new_database(
            key=key,
            key_file=key_file,
            passphrase=passphrase,
            metadata_url=metadata_url,
            checkpoint_every=checkpoint_every,
        )
    if (folder / MARKER).exists():
        raise VaultExistsError(f"{str(folder)!r} already holds a vault; use Vault.open()")
    if folder.exists() and any(folder.iterdir()):
        raise VaultExistsError(f"{str(folder)!r} is not empty; give a new or empty folder")
    if checkpoint_every < 1:
        raise ConfigurationError("checkpoint_every must be at least 1")
    vault_key, kdf = VaultKey.new(key=key, key_file=key_file, passphrase=passphrase)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_marker(folder, external=metadata_url is not None, storage=external_storage)
    if metadata_url is None:
        # SQLite gives its -wal and -shm files the database file's permissions.
        os.close(os.open(folder / "meta.db", os.O_WRONLY | os.O_CREAT, 0o600))
    engine = make_engine(sqlite_path=folder / "meta.db", url=metadata_url)
    try:
        _identity(engine, vault_key, kdf, checkpoint_every)
    except BaseException:
        engine.dispose()
        raise
    return engine, vault_key


def _new_database(
    *,
    key: bytes | str | None,
    key_file: str | os.PathLike[str] | None,
    passphrase: str | None,
    metadata_url: str | None,
    checkpoint_every: int,
) -> tuple[sa.Engine, VaultKey]:
    if checkpoint_every < 1:
        raise ConfigurationError("checkpoint_every must be at least 1")
    vault_key, kdf = VaultKey.new(key=key, key_file=key_file, passphrase=passphrase)
    engine = make_engine(sqlite_path=None, url=metadata_url)
    try:
        if sa.inspect(engine).has_table(vault_info.name):
            with read(engine) as conn:
                taken = conn.execute(sa.select(vault_info.c.id)).first() is not None
            if taken:
                raise VaultExistsError(
                    "the database at metadata_url already holds a vault; use Vault.open()"
                )
        _identity(engine, vault_key, kdf, checkpoint_every)
    except BaseException:
        engine.dispose()
        raise
    return engine, vault_key


def _identity(engine: sa.Engine, vault_key: VaultKey, kdf: Any, checkpoint_every: int) -> None:
    """Create the tables and write the vault's identity row."""
    create_tables(engine)
    signing = Ed25519PrivateKey.generate()
    log_id, mac_key = uuid.uuid4().hex, new_data_key()
    sealed.bind(engine, sealed.RowSealer(mac_key, log_id))
    with transaction(engine) as tx:
        info = {
            "id": 1,
            "format": migrations.current(),
            "log_id": log_id,
            "created": utcnow(),
            "key_check": vault_key.check_value,
            "kdf": kdf,
            "signing_key": vault_key.wrap(signing.private_bytes_raw(), purpose="audit-signing"),
            "verify_key": signing.public_key().public_bytes_raw(),
            "mac_key": vault_key.wrap(mac_key, purpose="audit-mac"),
            "checkpoint_every": checkpoint_every,
        }
        info["mac"] = sealed.mac_for(tx.conn, vault_info, info)
        tx.conn.execute(vault_info.insert().values(**info))
        sealed.create_heads(tx.conn, sealed.global_tables())


def open_metadata(
    folder: Path | None,
    *,
    key: bytes | str | None,
    key_file: str | os.PathLike[str] | None,
    passphrase: str | None,
    metadata_url: str | None,
    external_storage: bool = False,
) -> tuple[sa.Engine, VaultKey, int | None]:
    """The metadata engine of the vault in ``folder`` (or at ``metadata_url`` when there
    is no folder) and its key, checked against the vault, with the schema version it was
    upgraded from (None: it was current).

    ``external_storage`` says whether the caller named the data files' storage; a
    folder's marker must agree.
    """
    if folder is not None:
        marker = _read_marker(folder)
        _check_storage(marker, external_storage)
        if marker["metadata"] == "external" and metadata_url is None:
            raise ConfigurationError(
                "this vault keeps its metadata in an external database: pass metadata_url="
            )
    engine = make_engine(
        sqlite_path=None if folder is None else folder / "meta.db", url=metadata_url
    )
    try:
        with read(engine) as conn:
            info = _info_row(engine, conn, folder)
        version = migrations.check_version(info.format)  # a newer vault: refused here
        vault_key = VaultKey.resolve(
            key=key, key_file=key_file, passphrase=passphrase, salt=_salt(info.kdf)
        )
        vault_key.verify(info.key_check)
        upgraded = None
        if version < migrations.current():
            _upgrade(engine, vault_key, info)
            upgraded = version
            if folder is not None:
                write_marker(
                    folder,
                    external=marker["metadata"] == "external",
                    storage=marker.get("storage") == "external",
                )
    except BaseException:
        engine.dispose()
        raise
    return engine, vault_key, upgraded


def _upgrade(engine: sa.Engine, vault_key: VaultKey, info: Any) -> None:
    """Bring an older vault's metadata schema up to this privml's, in one transaction.

    The version it records must pass ``vault_info``'s MAC first: lowered without the
    key, it is an :class:`IntegrityError`, not a second run of a step.
    """
    seed = vault_key.unwrap(info.signing_key, purpose="audit-signing")
    sealer = sealed.RowSealer(vault_key.unwrap(info.mac_key, purpose="audit-mac"), info.log_id)
    check_info(sealer, info, seed)
    sealed.bind(engine, sealer)
    try:
        migrations.upgrade(engine)
    except BaseException:
        sealed.unbind(engine)
        raise


def _info_row(engine: sa.Engine, conn: sa.Connection, folder: Path | None) -> Any:
    """The ``vault_info`` row; a database without one holds no vault (no folder) or a
    damaged one (a folder's ``meta.db``)."""
    if folder is None and not sa.inspect(engine).has_table(vault_info.name):
        info = None
    else:
        info = migrations.read_info(conn)
    if info is None and folder is None:
        raise NotFoundError("the database at metadata_url holds no vault; use Vault.create()")
    if info is None:
        raise IntegrityError(
            "the vault's own row (vault_info) is missing; restore meta.db from a backup"
        )
    return info


def _check_storage(marker: dict[str, Any], external_storage: bool) -> None:
    elsewhere = marker.get("storage") == "external"
    if elsewhere and not external_storage:
        raise ConfigurationError(
            "this vault keeps its data files outside its folder: pass storage= (and "
            "storage_options=) as when it was created"
        )
    if external_storage and not elsewhere:
        raise ConfigurationError(
            "this vault keeps its data files in its folder: open it without storage="
        )


def _read_marker(folder: Path) -> dict[str, Any]:
    """The marker's content; one edited into something else is an :class:`IntegrityError`."""
    marker = folder / MARKER
    if not marker.exists():
        raise NotFoundError(f"no vault at {str(folder)!r} (no {MARKER}); use Vault.create()")
    try:
        content = json.loads(marker.read_text())
    except (ValueError, UnicodeDecodeError):
        content = None
    if (
        not isinstance(content, dict)
        or content.get("metadata") not in ("sqlite", "external")
        or content.get("storage", "external") != "external"
    ):
        raise IntegrityError(
            f"{MARKER} in {str(folder)!r} was edited: it says neither where the metadata "
            'lives nor its format; restore it ({"format": 2, "metadata": "sqlite"} for a '
            "vault whose metadata is meta.db)"
        )
    return content


def _salt(kdf: Any) -> bytes | None:
    """The passphrase salt recorded in ``vault_info.kdf`` (None: the vault has no passphrase)."""
    if kdf is None:
        return None
    try:
        salt = base64.b64decode(json.loads(kdf)["salt"], validate=True)
    except (ValueError, TypeError, KeyError, IndexError):
        salt = b""
    if not salt:
        raise IntegrityError(
            "the vault's own row (vault_info: its passphrase salt) was edited without the key; "
            "restore meta.db from a backup"
        )
    return salt
