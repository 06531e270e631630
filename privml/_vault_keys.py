"""The vault's key-management methods: rotation, crypto-shredding, subject erasure.

Kept beside :class:`~privml.Vault` (which inherits them) so each file stays one concern.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from .crypto.keys import VaultKey
from .crypto.pseudonyms import pseudonymize
from .exceptions import ConfigurationError, NotFoundError
from .storage import sealed
from .storage.engine import transaction
from .storage.tables import models, vault_info

if TYPE_CHECKING:
    from ._datasets import DatasetStore, DatasetVersion
    from .audit import AuditLog
    from .crypto import FieldCipher
    from .crypto.keyring import Keyring
    from .storage.engine import Tx

__all__ = ["KeyMethods"]


class KeyMethods:
    """Rotating the vault key and data keys, and erasing a data subject."""

    _key: VaultKey
    _keyring: Keyring
    _store: DatasetStore
    _actor: str
    audit: AuditLog
    models: Any

    @property
    def engine(self) -> sa.Engine:  # provided by Vault
        raise NotImplementedError

    def rotate_vault_key(
        self,
        new_key: bytes | str | None = None,
        *,
        key_file: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
    ) -> None:
        """Re-wrap every key of the vault under a new vault key, in one transaction.

        A crash part-way leaves the vault openable with exactly one of the two
        keys (the old one until the transaction commits, the new one after).
        Data files are not rewritten: the data keys themselves do not change.

        Examples
        --------
        >>> import privml
        >>> vault = getfixture("demo_vault")
        >>> new = privml.generate_key()
        >>> vault.rotate_vault_key(new)
        >>> vault.close()
        >>> privml.Vault.open(vault.path, key=new).close()
        """
        fresh, kdf = VaultKey.new(key=new_key, key_file=key_file, passphrase=passphrase)
        old = self._key
        with transaction(self.engine) as tx:
            count = self._keyring.rewrap(tx.conn, fresh)
            info = tx.conn.execute(sa.select(vault_info)).one()
            signing = old.unwrap(info.signing_key, purpose="audit-signing")
            mac = old.unwrap(info.mac_key, purpose="audit-mac")
            tx.conn.execute(
                vault_info.update().values(
                    key_check=fresh.check_value,
                    kdf=kdf,
                    signing_key=fresh.wrap(signing, purpose="audit-signing"),
                    mac_key=fresh.wrap(mac, purpose="audit-mac"),
                )
            )
            for row in sealed.check_rows(tx.conn, models):
                slot = f"model|{row.name}|{row.version}"
                raw = old.unwrap(row.wrapped_key, purpose=slot)
                where = sa.and_(models.c.name == row.name, models.c.version == row.version)
                sealed.update(
                    tx.conn, models, where, {"wrapped_key": fresh.wrap(raw, purpose=slot)}
                )
            self.audit.append(
                tx,
                principal=self._actor,
                purpose="administration",
                action="vault.rotate_key",
                outcome="ok",
                details={"key_source": fresh.source.kind, "rewrapped": count},
            )
        self._key = fresh
        self._keyring.use(fresh)
        self.models._vault_key = fresh

    def rotate_data_keys(self, dataset: str) -> DatasetVersion:
        """Write a new version of ``dataset`` under fresh data keys and destroy the old keys.

        Every earlier version becomes unreadable, even with the vault key
        (crypto-shredding); the audit entry lists the versions shredded.
        Pseudonyms keep their key, so they stay stable.
        """
        return self._store.rotate(dataset, actor=self._actor, action="dataset.rotate_keys")

    def pseudonymize(self, dataset: str, column: str, values: Iterable[Any]) -> list[str | None]:
        """The stored pseudonyms of known identifiers (for look-ups and erasure requests).

        Audited with the number of values, never the values.
        """
        key, _ = self._pseudonym_key(dataset, column)
        tokens = pseudonymize([None if v is None else str(v) for v in values], key)
        with transaction(self.engine) as tx:
            self.audit.append(
                tx,
                principal=self._actor,
                purpose="administration",
                action="dataset.pseudonymize",
                outcome="ok",
                dataset=dataset,
                details={"column": column, "values": len(tokens)},
            )
        return tokens

    def erase_subject(
        self, dataset: str, *, identifier: Any, column: str | None = None
    ) -> DatasetVersion:
        """Erase one data subject (GDPR art. 17) from ``dataset``.

        Writes a new version without the subject's rows (found through the
        identifier's pseudonym), under fresh keys, and crypto-shreds every
        earlier version. The audit records the pseudonym and the number of rows
        removed, never the identifier. Privacy budget already spent on the
        dataset is not refunded: past releases may already reflect the subject.
        """
        key, column = self._pseudonym_key(dataset, column)
        field = self._store.schema(dataset)[column]
        token = pseudonymize([str(identifier)], key)[0] if field.pseudonymize else str(identifier)

        def keep(frame: pd.DataFrame) -> np.ndarray:
            mask = np.asarray((frame[column].astype(object) == token).to_numpy(), dtype=bool)
            if not mask.any():
                raise NotFoundError(f"no rows of {dataset!r} belong to that identifier")
            return ~mask

        return self._store.rotate(
            dataset,
            actor=self._actor,
            action="dataset.erase_subject",
            keep=keep,
            details={"pseudonym": token},
        )

    def field_cipher(self, dataset: str, *, deterministic: bool = False) -> FieldCipher:
        """A :class:`~privml.crypto.FieldCipher` for ``dataset`` whose keys live in the vault.

        The keyset is created on first use and stored wrapped by the vault key;
        ``cipher.rotate()`` stores the new primary (audited, key ids only) before
        using it, and older keys stay to decrypt. Rotating the vault key re-wraps
        them without changing any token.

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> cipher = vault.field_cipher("patients")
        >>> token = cipher.encrypt("P-1001", column="patient", row_key=7)
        >>> vault.field_cipher("patients").decrypt(token, column="patient", row_key=7)
        'P-1001'
        """
        from .crypto import FieldCipher, FieldKeyset

        self._store.schema(dataset)  # NotFoundError for an unknown dataset
        with transaction(self.engine) as tx:
            live = self._keyring.live(tx.conn, dataset=dataset, purpose="field")
            if not live:
                fresh = FieldKeyset.generate()
                self._store_field_key(
                    tx, dataset, fresh.primary_id, fresh._material(fresh.primary_id)
                )
                live = self._keyring.live(tx.conn, dataset=dataset, purpose="field")
        keys = {int(key_id[:8], 16): raw for key_id, raw in live}
        keyset = FieldKeyset(keys, primary=int(live[-1][0][:8], 16))

        def on_rotate(*, key_id: int, material: bytes) -> None:
            with transaction(self.engine) as tx:
                self._store_field_key(tx, dataset, key_id, material)

        return FieldCipher(
            keyset, dataset=dataset, deterministic=deterministic, on_rotate=on_rotate
        )

    def _store_field_key(self, tx: Tx, dataset: str, key_id: int, material: bytes) -> None:
        row_id = f"{key_id:08x}{secrets.token_hex(4)}"
        self._keyring.store(
            tx.conn, key_id=row_id, raw=material, dataset=dataset, column=None, purpose="field"
        )
        self.audit.append(
            tx,
            principal=self._actor,
            purpose="administration",
            action="crypto.field_key",
            outcome="ok",
            dataset=dataset,
            details={"key_id": f"{key_id:08x}"},
        )

    def _pseudonym_key(self, dataset: str, column: str | None) -> tuple[bytes, str]:
        schema = self._store.schema(dataset)
        ids = [name for name, f in schema.items() if f.kind == "identifier"]
        if column is None:
            if len(ids) != 1:
                raise ConfigurationError(f"{dataset!r} has identifier columns {ids}; pass column=")
            column = ids[0]
        if column not in ids:
            raise ConfigurationError(f"{column!r} is not an identifier column of {dataset!r}")
        with transaction(self.engine) as tx:
            key = self._keyring.pseudonym_key(
                tx.conn, dataset=dataset, domain=schema[column].domain
            )
        return key, column
