"""Data keys: created random, stored wrapped by the vault key, unwrapped into memory on use."""

from __future__ import annotations

import json
import secrets
from typing import Any

import sqlalchemy as sa

from .._canonical import utcnow
from ..exceptions import DecryptionError, InvalidKeyError
from ..storage import sealed
from ..storage.tables import keys, vault_info
from .keys import VaultKey, new_data_key

__all__ = ["Keyring", "check_current"]


def check_current(conn: sa.Connection, vault_key: VaultKey) -> None:
    """Refuse to wrap under ``vault_key`` unless it is still the vault's key.

    Another process with the same vault open may have rotated it: a key wrapped
    under the old one would be lost with it. Read in the wrapping transaction
    (locking the row where the database can), so a rotation cannot slip between.
    """
    row = conn.execute(sa.select(vault_info.c.key_check).with_for_update()).one()
    try:
        vault_key.verify(str(row.key_check))
    except InvalidKeyError:
        raise InvalidKeyError(
            "the vault key was rotated since this vault was opened (by another process or "
            "Vault object on the same folder): nothing was written; close this vault and "
            "reopen it with the new key"
        ) from None


class Keyring:
    """The vault's data keys, by key id. Unwrapped keys stay in this process only."""

    def __init__(self, vault_key: VaultKey) -> None:
        self._vault_key = vault_key
        self._cache: dict[str, bytes] = {}

    def create(self, conn: sa.Connection, *, dataset: str, column: str | None, purpose: str) -> str:
        """Create a key for ``(dataset, column, purpose)`` inside the open transaction."""
        key_id = secrets.token_hex(8)
        self.store(
            conn, key_id=key_id, raw=new_data_key(), dataset=dataset, column=column, purpose=purpose
        )
        return key_id

    def store(
        self,
        conn: sa.Connection,
        *,
        key_id: str,
        raw: bytes,
        dataset: str,
        column: str | None,
        purpose: str,
    ) -> None:
        """Store a key made elsewhere (e.g. a field keyset's new primary), wrapped."""
        check_current(conn, self._vault_key)
        wrapped = self._vault_key.wrap(raw, purpose=self._slot(key_id, dataset, column, purpose))
        sealed.insert(
            conn,
            keys,
            {
                "key_id": key_id,
                "dataset": dataset,
                "column": column,
                "purpose": purpose,
                "wrapped": wrapped,
                "created": utcnow(),
            },
        )
        self._cache[key_id] = raw

    def live(self, conn: sa.Connection, *, dataset: str, purpose: str) -> list[tuple[str, bytes]]:
        """Every live key of ``dataset`` with ``purpose``, oldest first, unwrapped."""
        rows = sorted(
            (r for r in _live(conn, dataset) if r.purpose == purpose),
            key=lambda r: (r.created, r.key_id),
        )
        out = []
        for row in rows:
            if row.key_id not in self._cache:
                slot = self._slot(row.key_id, row.dataset, row.column, row.purpose)
                self._cache[row.key_id] = self._vault_key.unwrap(row.wrapped, purpose=slot)
            out.append((row.key_id, self._cache[row.key_id]))
        return out

    def pseudonym_key(self, conn: sa.Connection, *, dataset: str, domain: str | None) -> bytes:
        """The pseudonym key of ``dataset``, or of the vault-wide ``domain`` (made on first use)."""
        if domain is None:
            return self.get(self.active(conn, dataset=dataset)[(None, "pseudonym")])
        found = sealed.check_rows(
            conn,
            keys,
            sa.and_(
                keys.c.purpose == "pseudonym-domain",
                keys.c.column == domain,
                keys.c.destroyed.is_(None),
            ),
        )
        row = found[0] if found else None
        if row is None:
            key_id = self.create(conn, dataset=dataset, column=domain, purpose="pseudonym-domain")
            return self.get(key_id)
        if row.key_id not in self._cache:
            slot = self._slot(row.key_id, row.dataset, domain, "pseudonym-domain")
            self._cache[row.key_id] = self._vault_key.unwrap(row.wrapped, purpose=slot)
        return self._cache[row.key_id]

    def active(self, conn: sa.Connection, *, dataset: str) -> dict[tuple[str | None, str], str]:
        """Load every live key of ``dataset``; return ``{(column, purpose): key_id}`` (newest)."""
        rows = sorted(_live(conn, dataset), key=lambda r: r.created)
        found: dict[tuple[str | None, str], str] = {}
        for row in rows:
            if row.key_id not in self._cache:
                slot = self._slot(row.key_id, row.dataset, row.column, row.purpose)
                self._cache[row.key_id] = self._vault_key.unwrap(row.wrapped, purpose=slot)
            found[(row.column, row.purpose)] = row.key_id
        return found

    def get(self, key_id: str) -> bytes:
        """Return a loaded key; :class:`DecryptionError` if it is unknown or was destroyed."""
        try:
            return self._cache[key_id]
        except KeyError:
            raise DecryptionError(
                f"data key {key_id!r} is not available: it was destroyed or belongs to "
                "another vault"
            ) from None

    def forget(self) -> None:
        """Drop every unwrapped key and the vault key from memory; later unwraps fail."""
        self._cache.clear()
        self.__dict__.pop("_vault_key", None)

    def destroy(self, conn: sa.Connection, key_ids: list[str]) -> None:
        """Erase the wrapped bytes of ``key_ids`` for good (crypto-shredding), in ``conn``'s tx."""
        if key_ids:
            sealed.update(
                conn, keys, keys.c.key_id.in_(key_ids), {"wrapped": b"", "destroyed": utcnow()}
            )
        for key_id in key_ids:
            self._cache.pop(key_id, None)

    def destroyed(self, conn: sa.Connection, key_ids: list[str]) -> list[tuple[str, str]]:
        """Which of ``key_ids`` were destroyed, and when."""
        rows = sealed.check_rows(
            conn, keys, sa.and_(keys.c.key_id.in_(key_ids), keys.c.destroyed.is_not(None))
        )
        return [(r.key_id, r.destroyed) for r in rows]

    def rewrap(self, conn: sa.Connection, new_key: VaultKey) -> int:
        """Re-wrap every live data key under ``new_key`` (inside ``conn``'s transaction)."""
        rows = sealed.check_rows(conn, keys, keys.c.destroyed.is_(None))
        for row in rows:
            slot = self._slot(row.key_id, row.dataset, row.column, row.purpose)
            raw = self._vault_key.unwrap(row.wrapped, purpose=slot)
            sealed.update(
                conn,
                keys,
                keys.c.key_id == row.key_id,
                {"wrapped": new_key.wrap(raw, purpose=slot)},
            )
        return len(rows)

    def use(self, vault_key: VaultKey) -> None:
        """Switch to a new vault key (after :meth:`rewrap` committed)."""
        self._vault_key = vault_key

    def __repr__(self) -> str:
        return f"<privml Keyring: {len(self._cache)} key(s) unwrapped>"

    @staticmethod
    def _slot(key_id: str, dataset: str, column: str | None, purpose: str) -> str:
        # JSON, not a joined string: a column name holding a separator cannot alias a slot.
        return "data-key" + json.dumps([key_id, dataset, column, purpose])


def _live(conn: sa.Connection, dataset: str) -> list[sa.Row[Any]]:
    """The live keys of ``dataset``, read whole and checked (a destroyed flag cannot be undone)."""
    return [r for r in sealed.scope_rows(conn, keys, dataset) if r.destroyed is None]
