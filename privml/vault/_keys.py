"""The vault's keys: rotating the vault key and data keys, crypto-shredding, field ciphers.

Erasing a data subject, which shreds with these, is :mod:`privml.vault._erasure`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..audit import ADMIN_PURPOSE
from ..crypto.keys import VaultKey
from ..crypto.pseudonyms import pseudonymize
from ..exceptions import ConfigurationError, IntegrityError, NotFoundError
from ..storage import sealed
from ..storage.engine import read, scrub, transaction
from ..storage.tables import models, vault_info, versions

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..crypto import FieldCipher
    from ..crypto.keyring import Keyring
    from ..storage.engine import Tx
    from ..storage.objects import Storage
    from ._datasets import DatasetStore, DatasetVersion
    from ._models import ModelRegistry
    from ._state import VaultState

__all__ = ["VaultKeys"]


class VaultKeys:
    """The vault's keys: rotation, crypto-shredding, pseudonyms and field ciphers.

    A service of :class:`~privml.Vault`, which forwards its public methods; it
    reaches the engine, the vault key and the actor through the shared
    :class:`~privml.vault._state.VaultState`.
    """

    def __init__(
        self,
        state: VaultState,
        *,
        storage: Storage,
        keyring: Keyring,
        store: DatasetStore,
        audit: AuditLog,
        models: ModelRegistry,
    ) -> None:
        self._state = state
        self._storage = storage
        self._keyring = keyring
        self._store = store
        self._audit = audit
        self._models = models

    def _record(self, tx: Tx, action: str, *, dataset: str | None = None, **details: Any) -> None:
        """Audit one of the key holder's acts (key ids and counts only, never key bytes)."""
        self._audit.append(
            tx,
            principal=self._state.actor,
            purpose=ADMIN_PURPOSE,
            action=action,
            outcome="ok",
            dataset=dataset,
            details=details,
        )

    def scrub(self) -> bool:
        """Empty the write-ahead log so that destroyed keys cannot be recovered from a copy."""
        return scrub(self._state.engine)

    def rotate_vault_key(
        self,
        new_key: bytes | str | None = None,
        *,
        key_file: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
    ) -> None:
        """Re-wrap every key of the vault under a new vault key, in one transaction."""
        fresh, kdf = VaultKey.new(key=new_key, key_file=key_file, passphrase=passphrase)
        self._require_intact("rotate_vault_key")
        old = self._state.key
        with transaction(self._state.engine) as tx:
            count = self._keyring.rewrap(tx.conn, fresh)
            info = tx.conn.execute(sa.select(vault_info)).one()
            signing = old.unwrap(info.signing_key, purpose="audit-signing")
            mac = old.unwrap(info.mac_key, purpose="audit-mac")
            updated = {
                **info._mapping,
                "key_check": fresh.check_value,
                "kdf": kdf,
                "signing_key": fresh.wrap(signing, purpose="audit-signing"),
                "mac_key": fresh.wrap(mac, purpose="audit-mac"),
            }
            updated["mac"] = sealed.mac_for(tx.conn, vault_info, updated)
            tx.conn.execute(vault_info.update().values(**updated))
            for row in sealed.scope_rows(tx.conn, models):
                slot = f"model|{row.name}|{row.version}"
                raw = old.unwrap(row.wrapped_key, purpose=slot)
                where = sa.and_(models.c.name == row.name, models.c.version == row.version)
                sealed.update(
                    tx.conn, models, where, {"wrapped_key": fresh.wrap(raw, purpose=slot)}
                )
            self._record(tx, "vault.rotate_key", key_source=fresh.source.kind, rewrapped=count)
        self._state.rekey(fresh)
        self._keyring.use(fresh)
        # The wrappings under the old key are overwritten in meta.db; now empty the WAL.
        scrub(self._state.engine)

    def rotate_data_keys(self, dataset: str) -> DatasetVersion:
        """Write a new version of ``dataset`` under fresh data keys; destroy the old keys."""
        self._require_intact("rotate_data_keys")
        written = self._store.rotate(dataset, actor=self._state.actor, action="dataset.rotate_keys")
        self._shred_files([written])
        return written

    def _require_intact(self, operation: str) -> None:
        """Refuse a key operation on a vault whose log or metadata fails verification.

        Key operations act on what the metadata says is live or destroyed: on rows
        put back from an older copy they would re-wrap shredded keys under a new
        vault key, or shred the wrong ones. The full check reads the whole log once.
        """
        report = self._audit.verify()
        if not report.ok:
            raise IntegrityError(
                f"{operation} refused: the vault fails verification ({report.reason}). "
                "Investigate with vault.audit.verify() and restore meta.db from a backup"
            )

    def _shred_files(self, written: list[DatasetVersion]) -> None:
        """Delete the files of every version older than ``written`` and empty the WAL."""
        with read(self._state.engine) as conn:
            old = [
                row.file
                for done in written
                for row in sealed.scope_rows(conn, versions, done.name)
                if row.version < done.version
            ]
        self._storage.remove(old)
        scrub(self._state.engine)

    def pseudonymize(self, dataset: str, column: str, values: Iterable[Any]) -> list[str | None]:
        """The stored pseudonyms of known identifiers (audited by count)."""
        key, _ = self._pseudonym_key(dataset, column)
        tokens = pseudonymize([None if v is None else str(v) for v in values], key)
        with transaction(self._state.engine) as tx:
            self._record(
                tx, "dataset.pseudonymize", dataset=dataset, column=column, values=len(tokens)
            )
        return tokens

    def field_cipher(self, dataset: str, *, deterministic: bool = False) -> FieldCipher:
        """A field cipher for ``dataset`` whose keys live in the vault."""
        from ..crypto import FieldCipher, FieldKeyset

        self._store.schema(dataset)  # NotFoundError for an unknown dataset
        with transaction(self._state.engine) as tx:
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
            with transaction(self._state.engine) as tx:
                self._store_field_key(tx, dataset, key_id, material)

        def on_drop(*, key_id: int) -> None:
            self._drop_field_key(dataset, key_id)

        return FieldCipher(
            keyset,
            dataset=dataset,
            deterministic=deterministic,
            on_rotate=on_rotate,
            on_drop=on_drop,
        )

    def _drop_field_key(self, dataset: str, key_id: int) -> None:
        """Destroy the wrapped bytes of a field key (crypto-shredding), audited by key id."""
        prefix = f"{key_id:08x}"
        self._require_intact("dropping a field key")
        with transaction(self._state.engine) as tx:
            live = self._keyring.live(tx.conn, dataset=dataset, purpose="field")
            ids = [row_id for row_id, _ in live if row_id[:8] == prefix]
            if not ids:
                raise NotFoundError(f"field key 0x{prefix} of {dataset!r} is not in the vault")
            if live[-1][0] in ids:
                raise ConfigurationError(
                    f"field key 0x{prefix} is the primary key of {dataset!r} in the vault; "
                    "rotate first"
                )
            self._keyring.destroy(tx.conn, ids)
            self._record(tx, "crypto.field_key_drop", dataset=dataset, key_id=prefix)
        scrub(self._state.engine)

    def _store_field_key(self, tx: Tx, dataset: str, key_id: int, material: bytes) -> None:
        row_id = f"{key_id:08x}{secrets.token_hex(4)}"
        self._keyring.store(
            tx.conn, key_id=row_id, raw=material, dataset=dataset, column=None, purpose="field"
        )
        self._record(tx, "crypto.field_key", dataset=dataset, key_id=f"{key_id:08x}")

    def _pseudonym_key(self, dataset: str, column: str | None) -> tuple[bytes, str]:
        schema = self._store.schema(dataset)
        ids = [name for name, f in schema.items() if f.kind == "identifier"]
        if column is None:
            if len(ids) != 1:
                raise ConfigurationError(f"{dataset!r} has identifier columns {ids}; pass column=")
            column = ids[0]
        if column not in ids:
            raise ConfigurationError(f"{column!r} is not an identifier column of {dataset!r}")
        with transaction(self._state.engine) as tx:
            key = self._keyring.pseudonym_key(
                tx.conn, dataset=dataset, domain=schema[column].domain
            )
        return key, column
