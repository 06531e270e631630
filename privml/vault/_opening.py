"""What creating and opening a vault check and write besides the services: marker, identity row.

The marker file ``vault.json`` says a folder holds a vault and where its metadata
lives; the ``vault_info`` row holds the vault's identity, format, key-check value
and wrapped audit keys, authenticated under the vault's own MAC key.
"""

from __future__ import annotations

import getpass
import hmac
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .._canonical import canonical_json
from ..exceptions import IntegrityError
from ..storage import sealed
from ..storage.tables import vault_info

__all__ = ["FORMAT", "MARKER", "check_info", "default_actor", "write_marker"]

# 2: every security-relevant metadata row is authenticated (privml.storage.sealed).
FORMAT = 2
MARKER = "vault.json"


def default_actor() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"os:uid-{os.getuid()}"


def write_marker(folder: Path, *, external: bool) -> None:
    marker = {"format": FORMAT, "metadata": "external" if external else "sqlite"}
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
            "the vault's own row (vault_info: identity, audit keys, checkpoint interval) was "
            "edited without the key; restore meta.db from a backup"
        )
