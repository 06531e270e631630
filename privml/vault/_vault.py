"""The vault: one folder holding encrypted datasets, their keys, and the audit log.

Everything sensitive is reached through a :class:`Vault`: data goes in with
:meth:`Vault.add_dataset` and comes out only through a :class:`~privml.Session`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .._renamed import renamed_keyword
from .._validation import check_name
from ..accounting.budget import Budget
from ..accounting.ledger import Ledger
from ..accounting.records import Allocation, BudgetStatus
from ..audit import ADMIN_PURPOSE, AuditLog
from ..crypto.keyring import Keyring
from ..crypto.keys import VaultKey
from ..exceptions import ConfigurationError, NotFoundError, SchemaError
from ..policy._explain import explain
from ..policy._grants import TAGS_FIX
from ..schema import Schema
from ..storage import migrations, sealed
from ..storage.engine import read, transaction
from ..storage.location import StorageLocation, open_storage
from ..storage.objects import Storage, StoredObject
from ..storage.tables import vault_info
from . import _erasure, _memory, _orphans
from ._datasets import DatasetInfo, DatasetStore, DatasetVersion
from ._intake import load_frame, reject, validate
from ._intake_stream import chunked
from ._keys import VaultKeys
from ._models import ModelRegistry
from ._opening import check_folderless, check_info, default_actor, new_metadata, open_metadata
from ._policy_store import PolicyAdmin
from ._replies import ReplyStore
from ._session import Session, open_session
from ._state import VaultState
from ._tokens import TokenService
from ._unit import declare_unit

if TYPE_CHECKING:
    from .._gate import Where
    from ..crypto import FieldCipher
    from ..report import DpoReport
    from ._requests import Via

__all__ = ["DatasetInfo", "DatasetVersion", "Vault"]


class Vault:
    """An embedded privml vault. Create one with :meth:`create`, reopen it with :meth:`open`.

    Examples
    --------
    >>> import privml, pandas as pd
    >>> key = privml.generate_key()
    >>> with privml.Vault.create(tmp_path / "vault", key=key) as vault:
    ...     v = vault.add_dataset(
    ...         "visits",
    ...         pd.DataFrame({"age": [34, 71], "bp": [120.0, 145.5]}),
    ...         schema=privml.Schema({
    ...             "age": privml.Field.integer(bounds=(0, 120)),
    ...             "bp": privml.Field.numeric(bounds=(50, 250)),
    ...         }),
    ...         budget=privml.Budget(epsilon=1.0, delta=1e-6),
    ...     )
    ...     vault.add_purpose("care", description="Treatment", lawful_basis="GDPR 9(2)(h)")
    ...     vault.add_principal("dr.lee", roles=["clinician"])
    ...     grant_id = vault.grant(role="clinician", dataset="visits", purpose="care", mode="raw")
    >>> with privml.Vault.open(tmp_path / "vault", key=key) as vault:
    ...     vault.session("dr.lee", purpose="care").read("visits")
       age     bp
    0   34  120.0
    1   71  145.5
    """

    def __init__(
        self,
        *,
        path: Path | None,
        storage: Storage,
        engine: sa.Engine,
        vault_key: VaultKey,
        info: Any,
        anchor_path: Path,
        actor: str,
    ) -> None:
        # Use Vault.create / Vault.open.
        self.path = path
        self._storage = storage
        state = self._state = VaultState(actor=actor)
        seed = vault_key.unwrap(info.signing_key, purpose="audit-signing")
        mac_key = vault_key.unwrap(info.mac_key, purpose="audit-mac")
        sealer = sealed.RowSealer(mac_key, info.log_id)
        check_info(sealer, info, seed)
        sealed.bind(engine, sealer)
        state.on_close(lambda: sealed.unbind(engine))
        state.bind(engine, vault_key)
        keyring = Keyring(vault_key)
        state.on_close(keyring.forget)
        self.audit = AuditLog(
            engine,
            log_id=info.log_id,
            mac_key=mac_key,
            signing_key=Ed25519PrivateKey.from_private_bytes(seed),
            verify_key=Ed25519PublicKey.from_public_bytes(info.verify_key),
            anchor_path=anchor_path,
            checkpoint_every=info.checkpoint_every,
        )
        self._store = DatasetStore(state, storage, keyring, self.audit)
        self.ledger = Ledger(engine, self.audit)
        self.policy = PolicyAdmin(state, self.audit)
        self.models = ModelRegistry(state, storage, self.audit, self._store)
        self._keys = VaultKeys(
            state,
            storage=storage,
            keyring=keyring,
            store=self._store,
            audit=self.audit,
            models=self.models,
        )
        for service in (self.audit, self._store, self.ledger, self.policy, self.models, self._keys):
            state.guard(service)
        self.tokens = state.guard(TokenService(state, self.audit, mac_key))
        self._replies = state.guard(ReplyStore(state, mac_key, info.log_id))
        state.on_close(self.tokens._forget)
        state.on_close(self._replies._forget)
        state.on_close(self.ledger.close)
        state.on_close(self.audit.close)

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        key: bytes | str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
        metadata_url: str | None = None,
        storage: StorageLocation | None = None,
        storage_options: Mapping[str, Any] | None = None,
        anchor_path: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 100,
        actor: str | None = None,
    ) -> Vault:
        """Create a new vault in the folder ``path`` (made if needed, must not hold a vault).

        Parameters
        ----------
        path : path-like, optional
            The vault folder: ``meta.db``, ``data/`` and (by default) the audit anchor.
            Without it the vault has no folder: pass ``metadata_url`` (PostgreSQL),
            ``storage`` and ``anchor_path``; every machine of a team opens it the same way.
        key, key_file, passphrase : optional
            Exactly one vault key source; without any, ``PRIVML_VAULT_KEY`` is used.
            A passphrase is stretched with scrypt (salt stored in the vault).
        metadata_url : str, optional
            SQLAlchemy URL of a PostgreSQL database for the metadata instead of
            ``meta.db`` (``postgresql+psycopg://...``). Pass it again at open.
        storage : path-like, str or pyarrow.fs.FileSystem, optional
            Where dataset versions and models are stored (encrypted): the vault
            folder by default; a local or shared folder; ``"s3://bucket/prefix"``
            (an S3-compatible object store; credentials from the standard AWS
            environment, never stored); or a ``pyarrow.fs.FileSystem``. Pass it again
            at open. See :mod:`privml.storage.location`.
        storage_options : mapping, optional
            Settings for ``pyarrow.fs.S3FileSystem`` (``endpoint_override``, ``region``).
        anchor_path : path-like, optional
            The append-only file that receives every signed audit checkpoint.
            Defaults to ``<path>/audit.anchor``; put it on other storage (another
            disk, a WORM bucket mount) so that truncating the log is detected.
            Required without a folder.
        checkpoint_every : int
            Sign a checkpoint every this many audit entries (and at close).
        actor : str, optional
            Who performs administrative actions, for the audit log. Defaults to
            the operating-system user.
        """
        folder = None if path is None else Path(path)
        if folder is None:
            check_folderless(metadata_url, anchor_path)
        anchor = _anchor(folder, anchor_path)
        where = open_storage(storage, options=storage_options, folder=folder)
        where.check_unclaimed()
        engine, vault_key = new_metadata(
            folder,
            key=key,
            key_file=key_file,
            passphrase=passphrase,
            metadata_url=metadata_url,
            checkpoint_every=checkpoint_every,
            external_storage=storage is not None,
        )
        vault = cls._from_engine(folder, where, engine, vault_key, anchor, actor, new=True)
        vault._admin_event(
            "vault.create",
            details={"key_source": vault_key.source.kind, "metadata": engine.dialect.name},
        )
        return vault

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        key: bytes | str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
        metadata_url: str | None = None,
        storage: StorageLocation | None = None,
        storage_options: Mapping[str, Any] | None = None,
        anchor_path: str | os.PathLike[str] | None = None,
        actor: str | None = None,
    ) -> Vault:
        """Open an existing vault. A wrong key raises :class:`~privml.InvalidKeyError` here.

        Parameters are as for :meth:`create`: a vault made without a folder is opened
        with ``metadata_url``, ``storage`` and ``anchor_path`` and no ``path``.
        """
        folder = None if path is None else Path(path)
        if folder is None:
            check_folderless(metadata_url, anchor_path)
        anchor = _anchor(folder, anchor_path)
        where = open_storage(storage, options=storage_options, folder=folder)
        engine, vault_key, upgraded = open_metadata(
            folder,
            key=key,
            key_file=key_file,
            passphrase=passphrase,
            metadata_url=metadata_url,
            external_storage=storage is not None,
        )
        vault = cls._from_engine(folder, where, engine, vault_key, anchor, actor)
        if upgraded is not None:  # the schema upgrade committed before the log could say so
            vault._admin_event(
                "vault.upgrade", details={"from": upgraded, "to": migrations.current()}
            )
        return vault

    @classmethod
    def _from_engine(
        cls,
        folder: Path | None,
        storage: Storage,
        engine: sa.Engine,
        vault_key: VaultKey,
        anchor: Path,
        actor: str | None,
        *,
        new: bool = False,
    ) -> Vault:
        try:
            with read(engine) as conn:
                info = conn.execute(sa.select(vault_info)).one()
            if new:
                storage.claim(str(info.log_id))
            else:
                storage.check_claim(str(info.log_id))
            vault = cls(
                path=folder,
                storage=storage,
                engine=engine,
                vault_key=vault_key,
                info=info,
                anchor_path=anchor,
                actor=actor or default_actor(),
            )
        except Exception:
            engine.dispose()
            raise
        return vault._state.guard(vault)

    def close(self) -> None:
        """Sign a final audit checkpoint, then close the vault and everything reached through it.

        Afterwards every method of the vault, of its services (``policy``, ``models``,
        ``audit``, ``ledger``, ``tokens``) and of every session, ``session.he``, ``session.dp``,
        field cipher and reservation obtained from it raises
        :class:`~privml.exceptions.VaultClosedError`; keys are dropped from memory and
        the database is released. Closing again does nothing.
        """
        if self._state.closed:
            return
        with transaction(self._state.engine) as tx:
            self.audit.checkpoint(tx)
        self._state.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._state.closed else "open"
        where = self._storage.uri if self.path is None else str(self.path)
        return f"<privml.Vault {where!r} ({state})>"

    # -- datasets ---------------------------------------------------------------------
    def add_dataset(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        schema: Schema,
        budget: Budget,
        privacy_unit: str | None = None,
        max_rows_per_unit: int | None = None,
        on_violation: Literal["reject", "clip"] = "reject",
    ) -> DatasetVersion:
        """Register a new dataset and store its first version, encrypted.

        Parameters
        ----------
        name : str
            Letters, digits, ``_``, ``.``, ``-``; at most 128 characters.
        data : DataFrame or path
            A pandas DataFrame, or the path of a CSV or Parquet file.
        schema : Schema
            The declared schema; the data is validated strictly against it.
        budget : Budget
            The total privacy budget of this dataset, across all its versions.
        privacy_unit : str, optional
            What the budget protects, fixed for the dataset's life: ``"row"`` (every
            row is a different person) or the name of an identifier field (all rows
            of one person). Omitted, it is ``"row"`` for a schema without identifier
            fields; a schema with one must declare it.
        max_rows_per_unit : int, optional
            With an identifier unit, required: the most rows of one person a release
            uses (1 to 10,000), kept by a keyed random sample per release. DP noise
            is calibrated to this bound. Not given with ``"row"``.
        on_violation : {"reject", "clip"}
            ``"clip"`` clips out-of-bounds numbers (recorded in the audit log).

        Returns
        -------
        DatasetVersion

        Raises
        ------
        SchemaError
            The data does not match the schema; nothing was stored.
        ConfigurationError
            The privacy unit is missing (a schema with an identifier), not an
            identifier field, or ``max_rows_per_unit`` is missing or out of range.
        """
        check_name(name, "dataset name", file_safe=True)
        if not isinstance(schema, Schema):
            raise ConfigurationError("schema= must be a privml.Schema")
        if not isinstance(budget, Budget):
            raise ConfigurationError("budget= must be a privml.Budget(epsilon=..., delta=...)")
        unit = declare_unit(schema, privacy_unit, max_rows_per_unit)
        if any(d.name == name for d in self.datasets()):
            raise ConfigurationError(f"dataset {name!r} exists; add data with add_version()")
        source = chunked(data, schema, on_violation, self._store.memory_limit)
        if source is None:
            frame, clipped = validate(
                self.audit, self._state, name, None, load_frame(data), schema, on_violation
            )
        try:
            return self._store.add(
                name,
                frame if source is None else source,
                schema=schema,
                budget=budget,
                clipped=clipped if source is None else {},
                actor=self._state.actor,
                unit=unit,
            )
        except SchemaError as err:  # a chunk of a streamed file: nothing was stored
            reject(self.audit, self._state, name, None, err)
            raise

    def add_version(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        on_violation: Literal["reject", "clip"] = "reject",
    ) -> DatasetVersion:
        """Store a new immutable version of dataset ``name`` (same schema, budget and unit).

        The privacy unit never changes; its identifier column is validated like
        every column of the schema (present in every row, never null).
        """
        info = self.dataset(name)
        version = info.latest.version + 1
        source = chunked(data, info.schema, on_violation, self._store.memory_limit)
        if source is None:
            frame, clipped = validate(
                self.audit, self._state, name, version, load_frame(data), info.schema,
                on_violation,
            )  # fmt: skip
        try:
            return self._store.append(
                name,
                frame if source is None else source,
                schema=info.schema,
                clipped=clipped if source is None else {},
                actor=self._state.actor,
            )
        except SchemaError as err:  # a chunk of a streamed file: nothing was stored
            reject(self.audit, self._state, name, version, err)
            raise

    @property
    def memory_limit(self) -> int:
        """Bytes one streamed read or write of a dataset version may hold at once.

        A Parquet file given by path is stored in chunks sized to it; a DP statistic
        on a version whose decrypted columns would exceed it reads the version in
        chunks, and person-level bounding spills encrypted partitions that each fit
        it (see :mod:`privml.vault._memory`). Set it to a whole number of bytes, at
        least 8 MiB.

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> vault.memory_limit = 64 * 1024**2
        >>> vault.memory_limit
        67108864
        """
        return self._store.memory_limit

    @memory_limit.setter
    def memory_limit(self, memory: int) -> None:
        self._store.memory_limit = _memory.check(memory)

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset with its schema, budget, versions and privacy unit."""
        return self._store.all()

    def dataset(self, name: str) -> DatasetInfo:
        """One dataset's schema, budget, versions and privacy unit; :class:`NotFoundError` if
        unknown."""
        for info in self.datasets():
            if info.name == name:
                return info
        raise NotFoundError(
            f"no dataset {name!r}; known datasets: {[d.name for d in self.datasets()]}"
        )

    def session(self, principal: str, *, purpose: str) -> Session:
        """Open a session for ``principal`` acting for ``purpose``: the only way to data.

        An unknown principal or purpose is refused (and the refusal audited).
        Every request made through the session is decided by the policy and
        written to the audit log.
        """
        return open_session(
            principal,
            purpose,
            state=self._state,
            store=self._store,
            policy=self.policy,
            audit=self.audit,
            ledger=self.ledger,
            models=self.models,
        )

    def _served_session(self, principal: str, purpose: str, via: Via) -> Session:
        """A session for a request served over the network (see :mod:`privml.service`)."""
        return open_session(
            principal,
            purpose,
            state=self._state,
            store=self._store,
            policy=self.policy,
            audit=self.audit,
            ledger=self.ledger,
            models=self.models,
            via=via,
        )

    # -- privacy budget ---------------------------------------------------------------
    def budget(self, dataset: str) -> BudgetStatus:
        """The privacy budget of ``dataset``: spent, total, remaining, and by whom."""
        return self.ledger.status(dataset)

    def allocate(
        self,
        dataset: str,
        *,
        principal: str | None = None,
        purpose: str | None = None,
        epsilon: float,
    ) -> Allocation:
        """Cap one principal's or one purpose's share of ``dataset``'s budget at ``epsilon``."""
        return self.ledger.allocate(
            dataset, principal=principal, purpose=purpose, epsilon=epsilon, actor=self._state.actor
        )

    def report(
        self,
        path: str | os.PathLike[str],
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> DpoReport:
        """Write the data-protection officer's report to ``path``: one self-contained HTML file.

        Every dataset's budget and ledger (table and plot), the audit log's verification
        with its checkpoints and anchor, refusals and key or erasure events between
        ``since`` and ``until`` (datetimes or ISO strings; a naive time is local), and
        models with their (ε, δ) and recorded empirical audits. Names, figures and counts
        only; one audit entry records the read. A vault that fails verification still
        gets a report, its failure shown at the top. See :mod:`privml.report`.

        Returns
        -------
        privml.report.DpoReport
            What the file shows.
        """
        from ..report._write import write_report

        return write_report(self, path, since=since, until=until, record=self._admin_event)

    # -- access policy ----------------------------------------------------------------
    def add_principal(
        self, name: str, *, roles: Sequence[str] = (), attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Register a principal (a person or a service) with its roles; audited."""
        self.policy.add_principal(name, roles=roles, attributes=attributes)

    def add_purpose(
        self, name: str, *, description: str, lawful_basis: str, parent: str | None = None
    ) -> None:
        """Register a purpose of processing; grants for ``parent`` cover it too. Audited."""
        self.policy.add_purpose(
            name, description=description, lawful_basis=lawful_basis, parent=parent
        )

    @renamed_keyword("categories", TAGS_FIX)
    def grant(
        self,
        *,
        role: str | None = None,
        principal: str | None = None,
        dataset: str,
        purpose: str,
        mode: str,
        columns: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        row_filter: Where | None = None,
        expires: datetime | str | None = None,
    ) -> str:
        """Allow a role or a principal to use a dataset for a purpose in ``mode``.

        Parameters
        ----------
        role, principal : str
            Exactly one: who the grant is for.
        dataset, purpose : str
            What, and why (the grant also covers the purpose's child purposes).
        mode : str
            ``"raw"``, ``"pseudonymized"``, ``"masked"``, ``"dp_training"`` or
            ``"dp_aggregate"`` (most revealing first).
        columns, tags : list of str, optional
            Select columns by name, or those whose schema tags include any of
            ``tags``; all columns by default.
        row_filter : list of (column, op, value), optional
            Only rows meeting every condition are revealed through this grant.
        expires : datetime or ISO string, optional
            The grant stops matching at this time.

        Returns
        -------
        str
            The grant id (for :meth:`revoke` and in audit entries).
        """
        return self.policy.add_grant(
            effect="allow",
            role=role,
            principal=principal,
            dataset=dataset,
            purpose=purpose,
            mode=mode,
            columns=columns,
            tags=tags,
            row_filter=row_filter,
            expires=expires,
        )

    @renamed_keyword("categories", TAGS_FIX)
    def deny(
        self,
        *,
        role: str | None = None,
        principal: str | None = None,
        dataset: str,
        purpose: str,
        columns: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        row_filter: Where | None = None,
        expires: datetime | str | None = None,
    ) -> str:
        """Forbid what the selectors match; an explicit deny wins over every grant."""
        return self.policy.add_grant(
            effect="deny",
            role=role,
            principal=principal,
            dataset=dataset,
            purpose=purpose,
            mode="deny",
            columns=columns,
            tags=tags,
            row_filter=row_filter,
            expires=expires,
        )

    def revoke(self, grant_id: str) -> None:
        """Revoke a grant or deny by id; audited."""
        self.policy.revoke(grant_id)

    def explain(self, principal: str, *, purpose: str, dataset: str) -> pd.DataFrame:
        """What ``principal`` acting for ``purpose`` gets from each column, and why.

        Returns a DataFrame with one row per column: its schema tags, the
        decided mode, the deciding grant ids and their row filters.

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> vault.add_purpose("studies", description="Studies", lawful_basis="GDPR 9(2)(j)")
        >>> vault.add_principal("ana", roles=["statistician"])
        >>> _ = vault.grant(role="statistician", dataset="patients", purpose="studies",
        ...                 mode="dp_aggregate", tags=["health"])
        >>> vault.explain("ana", purpose="studies", dataset="patients")[["column", "mode"]]
            column          mode
        0  patient          deny
        1      age          deny
        2      sex          deny
        3  glucose  dp_aggregate
        4     note  dp_aggregate
        5     seen          deny
        """
        schema = self.dataset(dataset).schema
        return explain(self.policy.model(), principal, purpose, dataset, schema)

    # -- storage ----------------------------------------------------------------------
    def storage_orphans(self) -> list[StoredObject]:
        """Data files in the vault's storage that no metadata row names.

        A file is written and checked before the row naming it commits, so a crash
        in between leaves an orphan: ciphertext that no read reaches. A write still
        in flight on another handle looks like one too; see
        :meth:`remove_storage_orphans`.

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> vault.storage_orphans()
        []
        """
        return _orphans.orphans(self._state, self._storage)

    def remove_storage_orphans(self, *, older_than: timedelta = timedelta(hours=1)) -> list[str]:
        """Delete the orphans (:meth:`storage_orphans`) older than ``older_than``; audited.

        The grace period spares files that another handle is writing right now (its
        row not yet committed); keep it longer than your slowest write.
        Returns the names of the files removed.

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> vault.remove_storage_orphans(older_than=timedelta(minutes=10))
        []
        """
        return _orphans.remove_orphans(
            self._state, self._storage, self.audit, older_than=older_than
        )

    # -- keys -------------------------------------------------------------------------
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
        return self._keys.scrub()

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
        self._keys.rotate_vault_key(new_key, key_file=key_file, passphrase=passphrase)

    def rotate_data_keys(self, dataset: str) -> DatasetVersion:
        """Write a new version of ``dataset`` under fresh data keys and destroy the old keys.

        Every earlier version becomes unreadable, even with the vault key
        (crypto-shredding): the old keys' wrapped bytes are overwritten in
        ``meta.db`` and its write-ahead log is emptied, and the old files are
        deleted. The audit entry lists the versions shredded. Pseudonyms keep
        their key, so they stay stable.
        """
        return self._keys.rotate_data_keys(dataset)

    def pseudonymize(self, dataset: str, column: str, values: Iterable[Any]) -> list[str | None]:
        """The stored pseudonyms of known identifiers (for look-ups and erasure requests).

        Audited with the number of values, never the values.
        """
        return self._keys.pseudonymize(dataset, column, values)

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
        return _erasure.erase_subject(self._keys, dataset, identifier=identifier, column=column)

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
        return self._keys.field_cipher(dataset, deterministic=deterministic)

    # -- internals --------------------------------------------------------------------
    def _admin_event(
        self,
        action: str,
        *,
        outcome: str = "ok",
        dataset: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        with transaction(self._state.engine) as tx:
            self.audit.append(
                tx,
                principal=self._state.actor,
                purpose=ADMIN_PURPOSE,
                action=action,
                outcome=outcome,
                dataset=dataset,
                details=details,
            )


def _anchor(folder: Path | None, anchor_path: str | os.PathLike[str] | None) -> Path:
    """The audit anchor's file: ``anchor_path``, else ``<folder>/audit.anchor``."""
    if anchor_path is None:
        if folder is None:
            raise ConfigurationError("internal: a vault without a folder needs anchor_path")
        return folder / "audit.anchor"
    if "://" in os.fspath(anchor_path):
        raise ConfigurationError(
            "anchor_path must be a local file (appended to, never rewritten); object "
            "stores cannot append: mount the storage, or use a file on another disk"
        )
    return Path(anchor_path)
