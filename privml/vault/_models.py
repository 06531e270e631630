"""The model registry: trained models stored encrypted, versioned, with their provenance.

Why stored models are safe at rest: each version is encrypted with its own
random AES-256-GCM key, wrapped by the vault key; the associated data binds
the model's name and version, so a file copied over another version fails to
decrypt. The file's SHA-256 is recorded and checked before decryption.

Models are serialized with ``pickle`` (scikit-learn, diffprivlib, torch
modules), or, for privml's own objects with ``to_bytes``/``from_bytes`` (such
as compiled HE models), with those methods. Unpickling runs code, so only load
models from a vault you trust: the encryption guarantees the bytes were written
by someone holding the vault key, not that they were harmless.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from .._canonical import canonical_json, utcnow
from .._records import DatasetVersion, ModelInfo
from .._validation import check_name
from ..attacks._holdout import MEMBERSHIP
from ..audit import ADMIN_PURPOSE, AuditLog
from ..crypto.keyring import check_current
from ..crypto.keys import new_data_key
from ..exceptions import (
    AccessDenied,
    ConfigurationError,
    NotFoundError,
)
from ..storage import sealed
from ..storage.engine import read, transaction
from ..storage.objects import Storage
from ..storage.tables import models, versions
from ._model_bytes import deserialize, libraries_in_use, seal, serialize, unseal
from ._sealed_membership import open_membership, seal_membership

if TYPE_CHECKING:
    from ..attacks import PrivacyReport
    from ._datasets import DatasetStore
    from ._state import VaultState

__all__ = ["ModelInfo", "ModelRegistry"]

_REGISTRAR = "registered_by"
#: The metadata key naming the plaintext model an HE model was compiled from.
SOURCE_MODEL = "source_model"
MINIMIZER_SUFFIX = ".minimizer"


class ModelRegistry:
    """Trained models of a vault. Reach it as ``vault.models``.

    Examples
    --------
    >>> from sklearn.linear_model import LinearRegression
    >>> vault = getfixture("demo_vault")
    >>> model = LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
    >>> info = vault.models.register("glucose-trend", model, trained_on="patients",
    ...                              epsilon=None, delta=None, notes="not DP: a demo")
    >>> info.version, info.trained_on
    (1, ('patients', 1))
    >>> vault.models.load("glucose-trend").predict([[2.0]]).round(3).tolist()
    [4.0]
    """

    def __init__(
        self,
        state: VaultState,
        storage: Storage,
        audit: AuditLog,
        datasets: DatasetStore | None = None,
    ) -> None:
        self._state = state
        self._storage = storage
        self._audit = audit
        self._datasets = datasets  # read by privacy_report only

    def register(
        self,
        name: str,
        model: Any,
        *,
        trained_on: DatasetVersion | tuple[str, int] | str | None,
        epsilon: float | None,
        delta: float | None,
        notes: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ModelInfo:
        """Store ``model`` encrypted as the next version of ``name``.

        Parameters
        ----------
        name : str
            Letters, digits, ``_``, ``.``, ``-``.
        model : object
            A picklable model, or a privml object with ``to_bytes``/``from_bytes``.
        trained_on : DatasetVersion, (name, version), name or None
            The training data (a bare name means its latest version).
        epsilon, delta : float or None
            Its privacy cost as charged to the ledger; ``None`` for a non-DP model.
        notes : str, optional
            Free text for people reading the registry.
        extra : dict, optional
            JSON-able facts later steps need (e.g. the input view it expects).
        """
        return self._register(
            name,
            model,
            trained_on=trained_on,
            epsilon=epsilon,
            delta=delta,
            notes=notes,
            extra=extra,
            principal=self._state.actor,
            purpose=ADMIN_PURPOSE,
            admin=True,
        )

    def _check_may_register(
        self, name: str, *, principal: str, purpose: str, minimizer: bool = False
    ) -> None:
        """Refuse (audited) before any work if ``principal`` may not add a version of ``name``.

        A model name belongs to whoever registered its first version. Through a
        session only that principal may register later versions; the vault
        administrator (``vault.models.register``, the key holder) always may.
        Names ending in ``.minimizer`` are kept for ``session.minimize``
        (``minimizer=True``), so nobody can take a model's minimizer name first.
        """
        try:
            if name.endswith(MINIMIZER_SUFFIX) != minimizer:
                raise AccessDenied(
                    f"model names ending in {MINIMIZER_SUFFIX!r} are kept for the minimizers "
                    "that session.minimize registers (and only those); choose another name",
                    principal=principal,
                    purpose=purpose,
                )
            with read(self._state.engine) as conn:
                _check_owner(conn, name, principal, purpose)
        except AccessDenied as err:
            self._refused(name, principal, purpose, err)
            raise

    def _register(
        self,
        name: str,
        model: Any,
        *,
        trained_on: DatasetVersion | tuple[str, int] | str | None,
        epsilon: float | None,
        delta: float | None,
        notes: str | None,
        extra: dict[str, Any] | None,
        principal: str,
        purpose: str,
        admin: bool = False,
        minimizer: bool = False,
    ) -> ModelInfo:
        check_name(name, "model name", file_safe=True)
        kind, payload = serialize(model)
        if not admin:
            self._check_may_register(
                name, principal=principal, purpose=purpose, minimizer=minimizer
            )
        kind_of = f"{type(model).__module__}.{type(model).__qualname__}"
        if extra and SOURCE_MODEL in extra:
            _check_source_shape(kind_of, extra[SOURCE_MODEL])
        metadata = {
            "notes": notes,
            **(extra or {}),
            # Last, so no extra can forge them: the class stored (it decides how the model
            # is loaded and whether it is attacked through a twin), and who owns the name
            # (see _check_may_register).
            "class": kind_of,
            _REGISTRAR: {"principal": principal, "purpose": purpose, "admin": admin},
        }
        libraries = libraries_in_use()
        try:
            return self._write(name, kind, payload, trained_on, epsilon, delta, metadata, libraries)
        except AccessDenied as err:  # lost a race to another principal registering the name
            self._refused(name, principal, purpose, err)
            raise

    def _write(
        self,
        name: str,
        kind: str,
        payload: bytes,
        trained_on: DatasetVersion | tuple[str, int] | str | None,
        epsilon: float | None,
        delta: float | None,
        metadata: dict[str, Any],
        libraries: dict[str, str],
    ) -> ModelInfo:
        registrar = metadata[_REGISTRAR]
        principal, purpose = registrar["principal"], registrar["purpose"]
        with transaction(self._state.engine) as tx:
            if not registrar["admin"]:
                _check_owner(tx.conn, name, principal, purpose)
            source = _source(tx.conn, trained_on)
            if SOURCE_MODEL in metadata:
                _check_source_twin(tx.conn, metadata[SOURCE_MODEL], source)
            known = _versions(tx.conn, name)
            version = max((int(r.version) for r in known), default=0) + 1
            key = new_data_key()
            slot = f"model|{name}|{version}"
            blob = seal(key, slot, payload)
            if MEMBERSHIP in metadata:  # positions can reflect row filters: stored encrypted
                metadata = {**metadata, MEMBERSHIP: seal_membership(key, slot, metadata)}
            relative = self._storage.name_for(f"models/{name}/{version}", ".bin")
            # Written and verified before the row naming it commits (at worst an orphan).
            digest = self._storage.write(relative, blob)
            with self._storage.uncommitted(relative):
                created = utcnow()
                check_current(tx.conn, self._state.key)
                sealed.insert(
                    tx.conn,
                    models,
                    {
                        "name": name,
                        "version": version,
                        "format": kind,
                        "file": relative,
                        "content_hash": digest,
                        "wrapped_key": self._state.key.wrap(key, purpose=slot),
                        "dataset": source[0] if source else None,
                        "dataset_version": source[1] if source else None,
                        "epsilon": epsilon,
                        "delta": delta,
                        "libraries": canonical_json(libraries).decode(),
                        "metadata": canonical_json(metadata).decode(),
                        "created": created,
                    },
                )
                self._audit.append(
                    tx,
                    principal=principal,
                    purpose=purpose,
                    action="model.register",
                    outcome="ok",
                    dataset=source[0] if source else None,
                    version=source[1] if source else None,
                    details={
                        "model": name,
                        "model_version": version,
                        "epsilon": epsilon,
                        "delta": delta,
                        "content_hash": digest,
                        "class": metadata["class"],
                    },
                )
        return ModelInfo(
            name, version, source, epsilon, delta, libraries, metadata, digest, created
        )

    def _refused(self, name: str, principal: str, purpose: str, err: AccessDenied) -> None:
        with transaction(self._state.engine) as tx:
            self._audit.append(
                tx,
                principal=principal,
                purpose=purpose,
                action="model.register",
                outcome="denied",
                details={"model": name, "error": type(err).__name__, "message": str(err)},
            )

    def list(self) -> pd.DataFrame:
        """Every registered model version with its provenance, oldest first."""
        with read(self._state.engine) as conn:
            names = sorted({str(r.name) for r in sealed.scope_rows(conn, models)})
            rows = [r for n in names for r in _versions(conn, n)]
            infos = [_info(r) for r in rows]
        return pd.DataFrame(
            [
                {
                    "name": i.name,
                    "version": i.version,
                    "dataset": i.trained_on[0] if i.trained_on else None,
                    "dataset_version": i.trained_on[1] if i.trained_on else None,
                    "epsilon": i.epsilon,
                    "delta": i.delta,
                    "class": i.metadata.get("class"),
                    "created": i.created,
                }
                for i in infos
            ],
            columns=[
                "name",
                "version",
                "dataset",
                "dataset_version",
                "epsilon",
                "delta",
                "class",
                "created",
            ],
        )

    def info(self, name: str, version: int | None = None) -> ModelInfo:
        """The provenance of one model version (the latest by default)."""
        with read(self._state.engine) as conn:
            return _info(_row(conn, name, version))

    def privacy_report(
        self,
        name: str,
        version: int | None = None,
        *,
        attacks: Sequence[str] = ("loss-threshold", "lira-offline"),
        delta: float | None = None,
        confidence: float = 0.95,
        random_state: int = 0,
        references: int = 4,
        target: str | None = None,
        members: pd.DataFrame | None = None,
        non_members: pd.DataFrame | None = None,
    ) -> PrivacyReport:
        """Attack a registered model; put the ε its attacks prove beside the ledger's claim.

        Members are the rows of the dataset version the model trained on, non-members
        the rows its training held out (``holdout=`` of ``session.dp.fit`` and
        ``session.dp.train``), read from the model's authenticated membership record.
        A model registered by hand has none: pass ``members=`` and ``non_members=``
        (DataFrames of its features and ``target``). An HE-compiled model is attacked
        through the plaintext model its metadata names (``source_model``).

        It charges no privacy budget: it reads raw member rows, and its figures go only
        to the vault owner, who may read those rows anyway (``session.privacy_report``
        needs ``raw`` on every column and row). One audit entry records its figures.

        Parameters
        ----------
        name, version : str, int, optional
            The model (its latest version by default).
        attacks : sequence of str
            ``"loss-threshold"`` and/or ``"lira-offline"``. LiRA refits the model on half
            the held-out rows; a torch model whose layers cannot be re-initialized gets
            the loss-threshold attack only (noted).
        references : int
            LiRA's reference models, 2 to 16 (each a full refit).
        delta : float, optional
            The δ of the bounds; by default the model's claimed δ (1e-5 if it has none).
        confidence : float
            Of every lower bound.
        random_state : int
            Seeds the attacks' splits, reference models and any subsampling (sets above
            the attacks' row limit are subsampled, and the report says so).
        target : str, optional
            The target column, for a model whose metadata records none.
        members, non_members : pandas.DataFrame, optional
            Rows the model was / was not trained on (its features and target), for a
            model without a membership record (registered by hand): the owner vouches.

        Returns
        -------
        privml.attacks.PrivacyReport

        Raises
        ------
        privml.PrivacyAuditFailure
            If a lower bound exceeds the claimed ε (the report is still audited).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.tree import DecisionTreeClassifier
        >>> vault = getfixture("demo_vault")
        >>> rng = np.random.default_rng(0)
        >>> data = pd.DataFrame({"x": rng.normal(size=300), "y": rng.integers(0, 2, 300)})
        >>> tree = DecisionTreeClassifier(random_state=0).fit(data[:150][["x"]], data[:150]["y"])
        >>> _ = vault.models.register("tree", tree, trained_on=None, epsilon=None, delta=None,
        ...                           extra={"features": ["x"], "target": "y"})
        >>> report = vault.models.privacy_report("tree", members=data[:150],
        ...                                      non_members=data[150:])
        >>> report.verdict.startswith("Non-private model: the attacks prove ε ≥")
        True
        """
        from ._privacy_report import owner_report

        if self._datasets is None:
            raise ConfigurationError("this registry was opened without its vault's datasets")
        return owner_report(
            self,
            self._datasets,
            name,
            version,
            attacks=attacks,
            delta=delta,
            confidence=confidence,
            random_state=random_state,
            references=references,
            target=target,
            members=members,
            non_members=non_members,
        )

    def _membership_record(self, info: ModelInfo) -> dict[str, Any] | None:
        """The decrypted membership record of ``info``'s model version (None: it has none)."""
        if info.metadata.get(MEMBERSHIP) is None:
            return None
        with read(self._state.engine) as conn:
            row = _row(conn, info.name, info.version)
        slot = f"model|{row.name}|{row.version}"
        key = self._state.key.unwrap(row.wrapped_key, purpose=slot)
        return open_membership(key, slot, json.loads(row.metadata).get(MEMBERSHIP))

    def load(self, name: str, version: int | None = None) -> Any:
        """Decrypt and return a registered model (the latest version by default)."""
        return self._load(name, version, principal=self._state.actor, purpose=ADMIN_PURPOSE)

    def _load(
        self, name: str, version: int | None, *, principal: str, purpose: str, audit: bool = True
    ) -> Any:
        with read(self._state.engine) as conn:
            row = _row(conn, name, version)
        slot = f"model|{row.name}|{row.version}"
        blob = self._storage.read_checked(row.file, expected_hash=row.content_hash)
        key = self._state.key.unwrap(row.wrapped_key, purpose=slot)
        payload = unseal(key, slot, blob, what=f"model {name!r} v{row.version}")
        model = deserialize(row.format, payload, json.loads(row.metadata)["class"])
        if not audit:  # the caller audits the use of the model itself
            return model
        with transaction(self._state.engine) as tx:
            self._audit.append(
                tx,
                principal=principal,
                purpose=purpose,
                action="model.load",
                outcome="ok",
                dataset=row.dataset,
                version=row.dataset_version,
                details={"model": row.name, "model_version": row.version},
            )
        return model


def _check_owner(conn: sa.Connection, name: str, principal: str, purpose: str) -> None:
    known = _versions(conn, name)  # read whole and checked: the owner is in the first row
    first = known[0] if known else None
    if first is None:
        return  # a new name: whoever registers version 1 owns it
    owner = json.loads(first.metadata).get(_REGISTRAR) or {"admin": True}
    if not owner.get("admin") and owner.get("principal") == principal:
        return
    holder = "the vault administrator" if owner.get("admin") else repr(owner.get("principal"))
    raise AccessDenied(
        f"{principal!r} may not register a new version of model {name!r}: the name belongs to "
        f"{holder}, who registered its first version. Only the owner or the vault administrator "
        "(vault.models.register) may add versions; register under another name.",
        principal=principal,
        purpose=purpose,
    )


def _check_source_shape(kind: str, source: Any) -> None:
    """``source_model`` only on an HE model, as ``{"name": str, "version": int}``."""
    if not kind.startswith("privml.he."):
        raise ConfigurationError(
            f"extra={{{SOURCE_MODEL!r}: ...}} names the plaintext model an HE-compiled model was "
            f"compiled from; this model is a {kind}, not a privml.he model"
        )
    version = source.get("version") if isinstance(source, dict) else None
    if (
        not isinstance(source, dict)
        or set(source) != {"name", "version"}
        or not isinstance(source["name"], str)
        or not isinstance(version, int)
        or isinstance(version, bool)
    ):
        raise ConfigurationError(
            f"extra={{{SOURCE_MODEL!r}: ...}} takes {{'name': str, 'version': int}}: the exact "
            "registered plaintext model version it was compiled from"
        )


def _check_source_twin(
    conn: sa.Connection, source: dict[str, Any], trained_on: tuple[str, int] | None
) -> None:
    """The named plaintext twin exists, is no HE model itself, and has the same training data."""
    twin = _info(_row(conn, source["name"], source["version"]))
    if str(twin.metadata.get("class", "")).startswith("privml.he."):
        raise ConfigurationError(
            f"source_model {twin.name!r} v{twin.version} is itself an HE model; name the "
            "plaintext model it was compiled from"
        )
    if twin.trained_on != trained_on:
        raise ConfigurationError(
            f"source_model {twin.name!r} v{twin.version} was trained on {twin.trained_on}, "
            f"but this model is registered with trained_on={trained_on}: an HE model records "
            f"the training data of the model it was compiled from (trained_on={twin.trained_on})"
        )


def _source(
    conn: sa.Connection, trained_on: DatasetVersion | tuple[str, int] | str | None
) -> tuple[str, int] | None:
    if trained_on is None:
        return None
    if isinstance(trained_on, DatasetVersion):
        return (trained_on.name, trained_on.version)
    if isinstance(trained_on, str):
        known = sealed.scope_rows(conn, versions, trained_on)
        if not known:
            raise NotFoundError(f"no dataset {trained_on!r} to record as training data")
        return (trained_on, max(int(v.version) for v in known))
    dataset, version = trained_on
    found = [v for v in sealed.scope_rows(conn, versions, dataset) if v.version == version]
    if not found:
        raise NotFoundError(f"dataset {dataset!r} has no version {version!r}")
    return (dataset, int(version))


def _versions(conn: sa.Connection, name: str) -> list[Any]:
    """Every version of model ``name``, oldest first, read whole and checked."""
    mine = [r for r in sealed.scope_rows(conn, models) if r.name == name]
    return sorted(mine, key=lambda r: int(r.version))


def _row(conn: sa.Connection, name: str, version: int | None) -> Any:
    check_name(name, "model name")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ConfigurationError(f"version= takes a version number (an int), got {version!r}")
    found = _versions(conn, name)
    if version is not None:
        found = [r for r in found if r.version == version]
    row = found[-1] if found else None
    if row is None:
        raise NotFoundError(
            f"no model {name!r}"
            + (f" version {version}" if version else "")
            + "; see vault.models.list()"
        )
    return row


def _info(row: Any) -> ModelInfo:
    source = (row.dataset, row.dataset_version) if row.dataset is not None else None
    return ModelInfo(
        row.name,
        row.version,
        source,
        row.epsilon,
        row.delta,
        json.loads(row.libraries),
        json.loads(row.metadata),
        row.content_hash,
        row.created,
    )
