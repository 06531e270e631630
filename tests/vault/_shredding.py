"""An attacker's tools against a copy of a vault folder, for the crypto-shredding tests.

The attacker copies the folder (meta.db, its -wal and -shm, data/, the anchor)
right after a rotation, an erasure or a field-key drop, while the vault is still
open, and again after it is closed. Holding the vault key (the current one, or
the old one after a vault-key rotation), they try to unwrap every 60-byte window
of every metadata file under every slot a destroyed key had, and look for the
old wrapped bytes, the old data files and the erased values.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from privml.crypto.keyring import Keyring
from privml.crypto.keys import VaultKey
from privml.exceptions import DecryptionError

WRAPPED = 12 + 32 + 16  # nonce, key, tag


def copy_of(vault_folder: Path, into: Path) -> Path:
    """Copy every file of the vault folder as it is on disk now (the vault may be open)."""
    shutil.copytree(vault_folder, into)
    return into


def rows(folder: Path, query: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{folder / 'meta.db'}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def key_slots(folder: Path) -> list[str]:
    """Every slot a key of this vault was wrapped for (from the copy's own metadata)."""
    slots = [
        Keyring._slot(k, d, c, p)
        for k, d, c, p in rows(folder, 'SELECT key_id, dataset, "column", purpose FROM keys')
    ]
    slots += [f"model|{n}|{v}" for n, v in rows(folder, "SELECT name, version FROM models")]
    return [*slots, "audit-signing", "audit-mac"]


def destroyed_slots(folder: Path) -> list[str]:
    query = 'SELECT key_id, dataset, "column", purpose FROM keys WHERE destroyed IS NOT NULL'
    return [Keyring._slot(*row) for row in rows(folder, query)]


def unwrap_anywhere(folder: Path, vault_key: VaultKey, slots: list[str]) -> list[str]:
    """Try every WRAPPED-byte window of every metadata file under every slot; what unwraps."""
    found = []
    for path in sorted(folder.glob("meta.db*")):
        blob = path.read_bytes()
        for start in range(max(0, len(blob) - WRAPPED + 1)):
            window = blob[start : start + WRAPPED]
            # A wrapped key is random bytes: it holds four zero bytes in a row with
            # probability below 60 * 2**-32 < 1e-7, so such windows are skipped.
            if b"\0\0\0\0" in window:
                continue
            for slot in slots:
                try:
                    vault_key.unwrap(window, purpose=slot)
                except DecryptionError:
                    continue
                found.append(f"{path.name}@{start}: {slot}")
    return found


def all_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def containing(folder: Path, needles: list[bytes]) -> list[str]:
    return [name for name, blob in all_bytes(folder).items() for n in needles if n in blob]


def wrapped_now(folder: Path, where: str | None = None) -> list[bytes]:
    """The wrapped data keys matching ``where``; with no ``where``, every wrapped key."""
    found = [r[0] for r in rows(folder, f"SELECT wrapped FROM keys WHERE {where or '1=1'}")]
    if where is None:
        found += [r[0] for r in rows(folder, "SELECT wrapped_key FROM models")]
        found += [b for r in rows(folder, "SELECT signing_key, mac_key FROM vault_info") for b in r]
    return [b for b in found if b]


def key_of(key: bytes) -> VaultKey:
    return VaultKey.resolve(key=key, key_file=None, passphrase=None, salt=None)
