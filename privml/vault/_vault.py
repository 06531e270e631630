"""The vault: one folder holding encrypted datasets, their keys, and the audit log.

Everything sensitive is reached through a :class:`Vault`: data goes in with
:meth:`Vault.add_dataset` and comes out only through a :class:`~privml.Session`.
"""

from __future__ import annotations

import base64
import getpass
import hmac
import json
import os
import re
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .._canonical import canonical_json, utcnow
from .._validation import check_name
from ..accounting.budget import Budget
from ..accounting.ledger import Ledger
from ..accounting.records import Allocation, BudgetStatus
from ..audit import AuditLog
from ..crypto.keyring import Keyring
from ..crypto.keys import VaultKey, new_data_key
from ..exceptions import (
    AccessDenied,
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    SchemaError,
    VaultClosedError,
    VaultExistsError,
)
from ..schema import Schema
from ..storage import sealed
from ..storage.engine import create_tables, make_engine, read, transaction
from ..storage.tables import vault_info
from ._datasets import DatasetInfo, DatasetStore, DatasetVersion, load_frame
from ._keys import KeyMethods
from ._models import ModelRegistry
from ._policy import PolicyMethods
from ._policy_store import PolicyAdmin
from ._session import Session
from ._state import VaultState

__all__ = ["DatasetInfo", "DatasetVersion", "Vault"]

# 2: every security-relevant metadata row is authenticated (privml.storage.sealed).
_FORMAT = 2
_MARKER = "vault.json"
ADMIN_PURPOSE = "administration"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _default_actor() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"os:uid-{os.getuid()}"


class Vault(PolicyMethods, KeyMethods):
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
        path: Path,
        engine: sa.Engine,
        vault_key: VaultKey,
        info: Any,
        anchor_path: Path,
        actor: str,
    ) -> None:
        # Use Vault.create / Vault.open.
        self.path = path
        self._state = VaultState()
        self._state.bind_engine(engine)
        self._engine: sa.Engine | None = engine
        self._key = vault_key
        self._actor = actor
        self._keyring = Keyring(vault_key)
        seed = vault_key.unwrap(info.signing_key, purpose="audit-signing")
        mac_key = vault_key.unwrap(info.mac_key, purpose="audit-mac")
        sealer = sealed.RowSealer(mac_key, info.log_id)
        _check_info(sealer, info, seed)
        sealed.bind(engine, sealer)
        self.audit = AuditLog(
            engine,
            log_id=info.log_id,
            mac_key=mac_key,
            signing_key=Ed25519PrivateKey.from_private_bytes(seed),
            verify_key=Ed25519PublicKey.from_public_bytes(info.verify_key),
            anchor_path=anchor_path,
            checkpoint_every=info.checkpoint_every,
        )
        self._store = DatasetStore(path, engine, self._keyring, self.audit)
        self.ledger = Ledger(engine, self.audit)
        self.policy = PolicyAdmin(engine, self.audit, actor=actor)
        self.models = ModelRegistry(path, engine, vault_key, self.audit, actor=actor)
        for service in (self.audit, self._store, self.ledger, self.policy, self.models):
            self._state.guard(service)
        self._state.on_close(self._release)

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
        metadata_url: str | None = None,
        anchor_path: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 100,
        actor: str | None = None,
    ) -> Vault:
        """Create a new vault in the folder ``path`` (made if needed, must not hold a vault).

        Parameters
        ----------
        path : path-like
            The vault folder: ``meta.db``, ``data/`` and (by default) the audit anchor.
        key, key_file, passphrase : optional
            Exactly one vault key source; without any, ``PRIVML_VAULT_KEY`` is used.
            A passphrase is stretched with scrypt (salt stored in the vault).
        metadata_url : str, optional
            SQLAlchemy URL of a PostgreSQL database for the metadata instead of
            ``meta.db`` (``postgresql+psycopg://...``). Pass it again at open.
        anchor_path : path-like, optional
            The append-only file that receives every signed audit checkpoint.
            Defaults to ``<path>/audit.anchor``; put it on other storage (another
            disk, a WORM bucket mount) so that truncating the log is detected.
        checkpoint_every : int
            Sign a checkpoint every this many audit entries (and at close).
        actor : str, optional
            Who performs administrative actions, for the audit log. Defaults to
            the operating-system user.
        """
        folder = Path(path)
        if (folder / _MARKER).exists():
            raise VaultExistsError(f"{str(folder)!r} already holds a vault; use Vault.open()")
        if folder.exists() and any(folder.iterdir()):
            raise VaultExistsError(f"{str(folder)!r} is not empty; give a new or empty folder")
        if checkpoint_every < 1:
            raise ConfigurationError("checkpoint_every must be at least 1")
        vault_key, kdf = VaultKey.new(key=key, key_file=key_file, passphrase=passphrase)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_marker(folder, external=metadata_url is not None)
        if metadata_url is None:
            # SQLite gives its -wal and -shm files the database file's permissions.
            os.close(os.open(folder / "meta.db", os.O_WRONLY | os.O_CREAT, 0o600))
        engine = make_engine(sqlite_path=folder / "meta.db", url=metadata_url)
        create_tables(engine)
        signing = Ed25519PrivateKey.generate()
        log_id, mac_key = uuid.uuid4().hex, new_data_key()
        sealed.bind(engine, sealed.RowSealer(mac_key, log_id))
        with transaction(engine) as tx:
            info = {
                "id": 1,
                "format": _FORMAT,
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
        vault = cls._from_engine(folder, engine, vault_key, anchor_path, actor)
        vault._admin_event(
            "vault.create",
            details={"key_source": vault_key.source.kind, "metadata": engine.dialect.name},
        )
        return vault

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
        metadata_url: str | None = None,
        anchor_path: str | os.PathLike[str] | None = None,
        actor: str | None = None,
    ) -> Vault:
        """Open an existing vault. A wrong key raises :class:`~privml.InvalidKeyError` here.

        Parameters are as for :meth:`create`.
        """
        folder = Path(path)
        marker = folder / _MARKER
        if not marker.exists():
            raise NotFoundError(f"no vault at {str(folder)!r} (no {_MARKER}); use Vault.create()")
        external = json.loads(marker.read_text())["metadata"] == "external"
        if external and metadata_url is None:
            raise ConfigurationError(
                "this vault keeps its metadata in an external database: pass metadata_url="
            )
        engine = make_engine(sqlite_path=folder / "meta.db", url=metadata_url)
        with read(engine) as conn:
            info = conn.execute(sa.select(vault_info)).one()
        if info.format != _FORMAT:
            engine.dispose()
            raise ConfigurationError(
                f"the vault at {str(folder)!r} has format {info.format}; this privml opens "
                f"format {_FORMAT} only (authenticated metadata rows). Export its datasets "
                "with the privml version that wrote it and add them to a new vault"
            )
        salt = None
        if info.kdf is not None:
            salt = base64.b64decode(json.loads(info.kdf)["salt"])
        try:
            vault_key = VaultKey.resolve(
                key=key, key_file=key_file, passphrase=passphrase, salt=salt
            )
            vault_key.verify(info.key_check)
        except Exception:
            engine.dispose()
            raise
        return cls._from_engine(folder, engine, vault_key, anchor_path, actor)

    @classmethod
    def _from_engine(
        cls,
        folder: Path,
        engine: sa.Engine,
        vault_key: VaultKey,
        anchor_path: str | os.PathLike[str] | None,
        actor: str | None,
    ) -> Vault:
        with read(engine) as conn:
            info = conn.execute(sa.select(vault_info)).one()
        anchor = Path(anchor_path) if anchor_path is not None else folder / "audit.anchor"
        try:
            vault = cls(
                path=folder,
                engine=engine,
                vault_key=vault_key,
                info=info,
                anchor_path=anchor,
                actor=actor or _default_actor(),
            )
        except Exception:
            engine.dispose()
            raise
        return vault._state.guard(vault)

    def close(self) -> None:
        """Sign a final audit checkpoint, then close the vault and everything reached through it.

        Afterwards every method of the vault, of its services (``policy``, ``models``,
        ``audit``, ``ledger``) and of every session, ``session.he``, ``session.dp``,
        field cipher and reservation obtained from it raises
        :class:`~privml.exceptions.VaultClosedError`; keys are dropped from memory and
        the database is released. Closing again does nothing.
        """
        if self._state.closed:
            return
        with transaction(self.engine) as tx:
            self.audit.checkpoint(tx)
        self._state.close()

    def _release(self) -> None:
        """Drop every key this vault's objects hold and release the database (on close)."""
        self._keyring.forget()
        self._store.close()
        self.ledger.close()
        self.audit.close()
        self.models.close()
        self.__dict__.pop("_key", None)
        if self._engine is not None:
            sealed.unbind(self._engine)
            self._engine.dispose()
        self._engine = None

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
        return f"<privml.Vault {str(self.path)!r} ({state})>"

    @property
    def engine(self) -> sa.Engine:
        self._state.check()
        if self._engine is None:  # pragma: no cover - the state closes before the engine goes
            raise VaultClosedError("the vault is closed; open it again with Vault.open()")
        return self._engine

    # -- datasets ---------------------------------------------------------------------
    def add_dataset(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        schema: Schema,
        budget: Budget,
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
        on_violation : {"reject", "clip"}
            ``"clip"`` clips out-of-bounds numbers (recorded in the audit log).

        Returns
        -------
        DatasetVersion

        Raises
        ------
        SchemaError
            The data does not match the schema; nothing was stored.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"dataset name {name!r} is not allowed: use letters, digits, '_', '.', '-' "
                "(at most 128 characters, not starting with '.' or '-')"
            )
        if not isinstance(schema, Schema):
            raise ConfigurationError("schema= must be a privml.Schema")
        if not isinstance(budget, Budget):
            raise ConfigurationError("budget= must be a privml.Budget(epsilon=..., delta=...)")
        if any(d.name == name for d in self.datasets()):
            raise ConfigurationError(f"dataset {name!r} exists; add data with add_version()")
        frame, clipped = self._validate(name, None, load_frame(data), schema, on_violation)
        self.engine  # noqa: B018 - raises if closed
        return self._store.add(
            name, frame, schema=schema, budget=budget, clipped=clipped, actor=self._actor
        )

    def add_version(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        on_violation: Literal["reject", "clip"] = "reject",
    ) -> DatasetVersion:
        """Store a new immutable version of dataset ``name`` (same schema and budget)."""
        info = self.dataset(name)
        frame, clipped = self._validate(
            name, info.latest.version + 1, load_frame(data), info.schema, on_violation
        )
        return self._store.append(
            name, frame, schema=info.schema, clipped=clipped, actor=self._actor
        )

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset with its schema, budget and versions."""
        self.engine  # noqa: B018 - raises if closed
        return self._store.all()

    def dataset(self, name: str) -> DatasetInfo:
        """One dataset's schema, budget and versions; :class:`NotFoundError` if unknown."""
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
        check_name(principal, "principal")
        check_name(purpose, "purpose=")
        model = self.policy.model()
        problem = None
        if not model.knows_principal(principal):
            problem = (
                f"unknown principal {principal!r}: register it with "
                f"vault.add_principal({principal!r}, roles=[...])"
            )
        elif not model.knows_purpose(purpose):
            problem = (
                f"unknown purpose {purpose!r}: register it with vault.add_purpose("
                f"{purpose!r}, description=..., lawful_basis=...)"
            )
        if problem:
            with transaction(self.engine) as tx:
                self.audit.append(
                    tx,
                    principal=principal,
                    purpose=purpose,
                    action="session.open",
                    outcome="denied",
                    details={"message": problem},
                )
            raise AccessDenied(problem, principal=principal, purpose=purpose)
        return Session(
            store=self._store,
            policy=self.policy,
            audit=self.audit,
            engine=self.engine,
            ledger=self.ledger,
            models=self.models,
            principal=principal,
            purpose=purpose,
        )

    # -- privacy budget ---------------------------------------------------------------
    def budget(self, dataset: str) -> BudgetStatus:
        """The privacy budget of ``dataset``: spent, total, remaining, and by whom."""
        self.engine  # noqa: B018 - raises if closed
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
        self.engine  # noqa: B018 - raises if closed
        return self.ledger.allocate(
            dataset, principal=principal, purpose=purpose, epsilon=epsilon, actor=self._actor
        )

    # -- internals --------------------------------------------------------------------
    def _validate(
        self,
        name: str,
        version: int | None,
        frame: pd.DataFrame,
        schema: Schema,
        on_violation: Literal["reject", "clip"],
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        try:
            return schema.validate(frame, on_violation=on_violation)
        except SchemaError as err:
            summary = [
                {"column": v.column, "kind": v.kind, "rows": v.count} for v in err.violations
            ]
            self._admin_event(
                "dataset.add" if version is None else "dataset.add_version",
                outcome="rejected",
                dataset=name,
                details={"name": name, "violations": summary},
            )
            raise

    def _admin_event(
        self,
        action: str,
        *,
        outcome: str = "ok",
        dataset: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        with transaction(self.engine) as tx:
            self.audit.append(
                tx,
                principal=self._actor,
                purpose=ADMIN_PURPOSE,
                action=action,
                outcome=outcome,
                dataset=dataset,
                details=details,
            )


def _write_marker(folder: Path, *, external: bool) -> None:
    marker = {"format": _FORMAT, "metadata": "external" if external else "sqlite"}
    tmp = folder / f".{_MARKER}.tmp"
    tmp.write_bytes(canonical_json(marker))
    os.replace(tmp, folder / _MARKER)


def _check_info(sealer: sealed.RowSealer, info: Any, seed: bytes) -> None:
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
