"""The vault's key-management methods: rotation, crypto-shredding, subject erasure.

Kept beside :class:`~privml.Vault` (which inherits them) so each file stays one concern.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..crypto.keys import VaultKey
from ..crypto.pseudonyms import pseudonymize
from ..exceptions import ConfigurationError, DecryptionError, IntegrityError, NotFoundError
from ..storage import sealed
from ..storage.engine import read, scrub, transaction
from ..storage.files import remove_files
from ..storage.tables import models, vault_info, versions
from ._view_erasure import ViewRefit, plan_view_erasures, subject_mask

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..crypto import FieldCipher
    from ..crypto.keyring import Keyring
    from ..storage.engine import Tx
    from ._datasets import DatasetStore, DatasetVersion

__all__ = ["KeyMethods"]


class KeyMethods:
    """Rotating the vault key and data keys, and erasing a data subject."""

    _key: VaultKey
    _keyring: Keyring
    _store: DatasetStore
    _actor: str
    audit: AuditLog
    models: Any
    path: Path

    @property
    def engine(self) -> sa.Engine:  # provided by Vault
        raise NotImplementedError

    def scrub(self) -> bool:
        """Make destroyed keys and erased data unrecoverable from a copy of the vault folder.

        Every rotation, erasure and field-key drop already ends with this; call it
        yourself only when one of them warned that another process kept it from
        completing. SQLite: copies the write-ahead log into ``meta.db`` (where
        ``secure_delete`` overwrote the deleted bytes) and truncates it to zero
        bytes. PostgreSQL: nothing can be guaranteed (see SECURITY.md).

        Returns
        -------
        bool
            False (with a warning) if another connection still holds the log.

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> vault.scrub()
        True
        """
        return scrub(self.engine)

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
        Afterwards the old wrappings are gone from ``meta.db`` and its
        write-ahead log, so the old key opens nothing in a copy taken later.

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
        self._require_intact("rotate_vault_key")
        old = self._key
        with transaction(self.engine) as tx:
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
        # The wrappings under the old key are overwritten in meta.db; now empty the WAL.
        scrub(self.engine)

    def rotate_data_keys(self, dataset: str) -> DatasetVersion:
        """Write a new version of ``dataset`` under fresh data keys and destroy the old keys.

        Every earlier version becomes unreadable, even with the vault key
        (crypto-shredding): the old keys' wrapped bytes are overwritten in
        ``meta.db`` and its write-ahead log is emptied, and the old files are
        deleted. The audit entry lists the versions shredded. Pseudonyms keep
        their key, so they stay stable.
        """
        self._require_intact("rotate_data_keys")
        written = self._store.rotate(dataset, actor=self._actor, action="dataset.rotate_keys")
        self._shred_files([written])
        return written

    def _require_intact(self, operation: str) -> None:
        """Refuse a key operation on a vault whose log or metadata fails verification.

        Key operations act on what the metadata says is live or destroyed: on rows
        put back from an older copy they would re-wrap shredded keys under a new
        vault key, or shred the wrong ones. The full check reads the whole log once.
        """
        report = self.audit.verify()
        if not report.ok:
            raise IntegrityError(
                f"{operation} refused: the vault fails verification ({report.reason}). "
                "Investigate with vault.audit.verify() and restore meta.db from a backup"
            )

    def _shred_files(self, written: list[DatasetVersion]) -> None:
        """Delete the files of every version older than ``written`` and empty the WAL."""
        with read(self.engine) as conn:
            old = [
                row.file
                for done in written
                for row in sealed.scope_rows(conn, versions, done.name)
                if row.version < done.version
            ]
        remove_files(Path(self.path), old)
        scrub(self.engine)

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
        """Erase one data subject (GDPR art. 17) from ``dataset`` and the views made from it.

        Writes a new version without the subject's rows (found through the
        identifier's pseudonym), under fresh keys, and crypto-shreds every
        earlier version: their keys are destroyed, their files deleted, and
        ``meta.db``'s write-ahead log emptied, so a copy of the vault folder
        taken afterwards cannot bring them back. Every minimized view derived
        from the dataset is rewritten without the subject by a minimizer fitted
        again without them (the old one may release their values), and shredded
        the same way; a view whose rows cannot be matched to the subject is
        refused before anything changes. The audit records the keyed pseudonym
        and the number of rows removed, never the identifier. Privacy budget
        already spent is not refunded: past releases may already reflect the subject.
        """
        self._require_intact("erase_subject")
        key, column = self._pseudonym_key(dataset, column)
        schema = self._store.schema(dataset)
        # The audit gets the keyed pseudonym even when the column stores identifiers raw.
        token = str(pseudonymize([str(identifier)], key)[0])
        match = token if schema[column].pseudonymize else str(identifier)

        def mask_of(version: int) -> np.ndarray | None:
            try:
                frame, _, _ = self._store.load(dataset, [column], version)
            except DecryptionError:  # shredded
                return None
            return subject_mask(frame, column, match)

        def remaining(version: int, mask: np.ndarray) -> pd.DataFrame:
            frame, _, _ = self._store.load(dataset, list(schema.names), version)
            return frame.loc[~mask].reset_index(drop=True)

        latest = self._store.latest_version(dataset)
        found = mask_of(latest)
        if found is None or not found.any():
            raise NotFoundError(f"no rows of {dataset!r} belong to that identifier")
        # Every derived view is matched and refitted before anything changes.
        plans = plan_view_erasures(
            self._store,
            self.models,
            self.engine,
            dataset=dataset,
            mask_of=mask_of,
            versions=[latest],
            remaining=remaining,
        )
        written = [
            self._store.rotate(
                dataset,
                actor=self._actor,
                action="dataset.erase_subject",
                keep=lambda frame: ~subject_mask(frame, column, match),
                details={"pseudonym": token},
            )
        ]
        for plan in plans:
            written.append(self._rewrite_view(plan, token, written))
        self._shred_files(written)
        return written[0]

    def _rewrite_view(
        self, plan: ViewRefit, token: str, written: list[DatasetVersion]
    ) -> DatasetVersion:
        """Store a view's new content under fresh keys, shredding its old versions and its
        old minimizer; register the refitted minimizer."""
        schema = self._store.schema(plan.view)
        self._store.append(plan.view, plan.frame, schema=schema, clipped={}, actor=self._actor)
        done = self._store.rotate(
            plan.view,
            actor=self._actor,
            action="dataset.erase_subject",
            details={"pseudonym": token, "source": plan.source, "rows_removed": plan.rows_removed},
        )
        source = next(w for w in reversed(written) if w.name == plan.source)
        old = plan.registered
        self.models._register(
            old.name,
            plan.minimizer,
            trained_on=(source.name, source.version),
            epsilon=None,
            delta=None,
            notes=f"minimizer behind view {plan.view!r}, fitted again without an erased subject",
            extra={
                key: old.metadata[key]
                for key in ("for_model", "view", "settings")
                if key in old.metadata
            },
            principal=self._actor,
            purpose="administration",
            admin=True,  # erasure is the key holder's act, on the name minimize registered
            minimizer=True,
        )
        with read(self.engine) as conn:
            files = [
                row
                for row in sealed.scope_rows(conn, models)
                if row.name == old.name and row.version in old.versions
            ]
            remove_files(Path(self.path), [row.file for row in files])
        return done

    def field_cipher(self, dataset: str, *, deterministic: bool = False) -> FieldCipher:
        """A :class:`~privml.crypto.FieldCipher` for ``dataset`` whose keys live in the vault.

        The keyset is created on first use and stored wrapped by the vault key;
        ``cipher.rotate()`` stores the new primary (audited, key ids only) before
        using it, and older keys stay to decrypt until ``cipher.drop(key_id)``
        destroys their wrapped bytes (audited, shredded like data keys). Rotating
        the vault key re-wraps them without changing any token.

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> cipher = vault.field_cipher("patients")
        >>> token = cipher.encrypt("P-1001", column="patient", row_key=7)
        >>> vault.field_cipher("patients").decrypt(token, column="patient", row_key=7)
        'P-1001'
        """
        from ..crypto import FieldCipher, FieldKeyset

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
        with transaction(self.engine) as tx:
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
            self.audit.append(
                tx,
                principal=self._actor,
                purpose="administration",
                action="crypto.field_key_drop",
                outcome="ok",
                dataset=dataset,
                details={"key_id": prefix},
            )
        scrub(self.engine)

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
