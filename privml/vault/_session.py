"""Sessions: a principal acting for a purpose. The only way to data in a vault.

Every request through a session is decided by the vault's policy, column by
column, and written to the audit log with the decision (grant ids and policy
hash) whether it is served, refused or fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._optional import require
from .._validation import check_request
from ..exceptions import AccessDenied, BudgetExceededError, ConfigurationError
from ..policy import _where
from ..policy._model import MODES, ROW_MODES, Decision, Predicate, mode_allows
from ..schema import Field, Schema
from ..storage.engine import transaction
from . import _failures

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ..accounting.ledger import Ledger
    from ..audit import AuditLog
    from ..dp import DPSession
    from ..he._session import HESession
    from ._datasets import DatasetStore, DatasetVersion
    from ._models import ModelRegistry
    from ._policy_store import PolicyAdmin

__all__ = ["Authorization", "LoadedValues", "Session"]

Where = Sequence[Predicate | Sequence[Any] | Mapping[str, Any]]


@dataclass(frozen=True)
class Authorization:
    """A request that passed the policy: what may be used, and the deciding grants.

    ``row_columns`` are the columns whose deciding grants' row filters decide
    which rows the request sees: the columns used, the columns of its
    conditions, and for a request that names no column (a row count) every
    column usable at the mode needed. A row is seen only if, for each of them,
    some deciding grant admits it.
    """

    dataset: str
    columns: list[str]
    schema: Schema
    decisions: dict[str, Decision]
    conditions: list[Predicate]
    grant_ids: list[str]
    policy_hash: str
    row_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadedValues:
    """Decrypted values of an authorized request, for privml's own mechanisms."""

    frame: pd.DataFrame
    version: int
    content_hash: str
    rows_withheld: int


class Session:
    """A principal acting for a purpose. Make one with :meth:`privml.Vault.session`.

    Examples
    --------
    >>> vault = getfixture("demo_vault")
    >>> vault.add_purpose("care", description="Treating patients", lawful_basis="GDPR 9(2)(h)")
    >>> vault.add_principal("nurse.kim", roles=["nurse"])
    >>> _ = vault.grant(role="nurse", dataset="patients", purpose="care", mode="masked")
    >>> _ = vault.grant(role="nurse", dataset="patients", purpose="care", mode="raw",
    ...                 columns=["age", "sex"])
    >>> session = vault.session("nurse.kim", purpose="care")
    >>> session.read("patients", columns=["age", "glucose", "note"])
       age  glucose      note
    0   34      5.0      ****
    1   71      5.0  ****w up
    2   52      5.0      ****
    3   35      5.0      ****
    """

    def __init__(
        self,
        *,
        store: DatasetStore,
        policy: PolicyAdmin,
        audit: AuditLog,
        engine: sa.Engine,
        ledger: Ledger,
        models: ModelRegistry,
        principal: str,
        purpose: str,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._models = models
        self._policy = policy
        self._audit = audit
        self._engine = engine
        self._principal = principal
        self._purpose = purpose

    @property
    def principal(self) -> str:
        """Who acts in this session (fixed when it is opened: open another session to change)."""
        return self._principal

    @property
    def purpose(self) -> str:
        """The purpose this session acts for (fixed when it is opened)."""
        return self._purpose

    def __repr__(self) -> str:
        return f"<privml.Session principal={self.principal!r} purpose={self.purpose!r}>"

    def minimize(
        self,
        dataset: str,
        model_name: str,
        *,
        target_accuracy: float,
        name: str,
        min_group_size: int = 1,
        features: Sequence[str] | None = None,
        model_version: int | None = None,
        random_state: int | None = 0,
    ) -> DatasetVersion:
        """Register a minimized view of ``dataset``: the coarsest version of a model's features
        that keeps its held-out agreement at ``target_accuracy``.

        Needs ``pseudonymized`` (or more) on the features; the values reach only the
        minimizer. The view is a new dataset ``name`` (its schema the features' fields,
        its source recorded); the fitted minimizer is registered as
        ``"<model_name>.minimizer"`` in ``vault.models``, linked to the model and the
        view, so a data-collection form can ask only for the generalized values. DP
        releases run on the source, never on the view. See :mod:`privml.minimization._view`.
        """
        from ..minimization._view import minimize

        return minimize(
            self,
            dataset,
            model_name,
            target_accuracy=target_accuracy,
            name=name,
            min_group_size=min_group_size,
            features=features,
            model_version=model_version,
            random_state=random_state,
        )

    def load_model(self, name: str, *, version: int | None = None) -> Any:
        """A registered model (the latest version by default), if the policy allows its use.

        Decided on the model's training data like a read (see :mod:`privml.vault._model_access`):
        a DP model needs ``dp_aggregate`` or more on its training columns, any other
        ``raw``; refusals raise :class:`~privml.AccessDenied`. Audited as ``model.load``.
        """
        from ._model_access import serve_model

        return serve_model(self, name, version)

    @property
    def he(self) -> HESession:
        """Encrypted inference with registered models (:class:`privml.he._session.HESession`)."""
        require("tenseal", feature="session.he (encrypted inference)")
        from ..he._session import HESession

        return HESession(self)

    @property
    def dp(self) -> DPSession:
        """Differentially private statistics and models (:class:`privml.dp.DPSession`)."""
        from ..dp import DPSession

        return DPSession(self)

    # -- reading values ---------------------------------------------------------------
    def read(
        self,
        dataset: str,
        *,
        columns: Sequence[str] | None = None,
        version: int | None = None,
        where: Where | None = None,
    ) -> pd.DataFrame:
        """Read the columns this session may see, each in its decided mode.

        ``raw`` columns come back decrypted, ``pseudonymized`` ones as stable
        keyed tokens, ``masked`` ones through their field's mask. Row filters of
        the deciding grants are applied before anything leaves.

        Parameters
        ----------
        dataset : str
            The dataset's name.
        columns : sequence of str, optional
            Columns to read. Asking for a column whose mode does not reveal
            values (``dp_*`` or ``deny``) raises :class:`~privml.AccessDenied`.
            By default every readable column is returned and the others are
            listed in ``result.attrs["privml_omitted"]`` (column -> mode).
        version : int, optional
            A version number (the latest by default).
        where : list of (column, op, value), optional
            Keep only rows meeting every condition; each column used needs ``raw``.

        Returns
        -------
        pandas.DataFrame
            ``attrs["privml_modes"]`` maps each returned column to its mode.
        """
        self._check_request("dataset.read", dataset, columns, version)
        request: dict[str, Any] = {
            "columns": list(columns) if columns is not None else None,
            "version": version,
        }
        decisions: dict[str, Decision] = {}
        try:
            schema = self._store.schema(dataset)
            decisions = self._decide(dataset, schema)
            wanted = self._readable(dataset, schema, decisions, columns)
            conditions = self._conditions(dataset, schema, decisions, where)
            request["where"] = [[p.column, p.op] for p in conditions]
            rows_by = _row_columns(wanted, conditions)
            result, used, digest, hidden = self._fetch(
                dataset, schema, decisions, wanted, conditions, version, row_columns=rows_by
            )
        except Exception as err:
            self._log("dataset.read", dataset, version, err, decisions, request, where=where)
            raise
        modes = {c: decisions[c].mode for c in wanted}
        omitted = {
            c: decisions[c].mode for c in schema.names if c not in wanted and columns is None
        }
        result.attrs["privml_modes"] = modes
        result.attrs["privml_omitted"] = omitted
        used_ids = sorted({g for c in wanted for g in decisions[c].grant_ids})
        details = {
            **request,
            "columns": modes,
            "omitted": omitted,
            "rows": len(result),
            "rows_withheld": hidden,
            "grant_ids": used_ids,
            "policy_hash": self._policy_hash(decisions),
            "content_hash": digest,
        }
        self._write("dataset.read", "ok", dataset, used, details)
        return result

    # -- the seam for privml's own DP / HE / minimization code -------------------------
    # These hand decrypted values to privml's mechanisms, never to the caller.
    def _authorize(
        self,
        dataset: str,
        *,
        columns: Sequence[str],
        needed: str,
        action: str,
        where: Where | None = None,
        where_needs: str = "raw",
        version: int | None = None,
    ) -> Authorization:
        """Check that every column is allowed at least ``needed``; audit a refusal as ``action``.

        Reads no data. ``where`` conditions need ``where_needs`` on their columns.
        With no ``columns`` (a row count) at least one column must be usable at
        ``needed``, and the row filters of every usable column's grants apply.
        """
        self._check_request(action, dataset, columns, version)
        request = {"columns": list(columns), "needed": needed, "version": version}
        decisions: dict[str, Decision] = {}
        try:
            schema = self._store.schema(dataset)
            source = self._store.derived_from(dataset)
            if source is not None and needed in ("dp_aggregate", "dp_training"):
                raise ConfigurationError(
                    f"{dataset!r} is a minimized view of {source!r} and carries no privacy "
                    f"budget of its own: run DP releases on {source!r}"
                )
            decisions = self._decide(dataset, schema)
            for column in columns:
                self._require(dataset, schema, decisions, column, needed)
            counted = list(columns) or self._countable(dataset, schema, decisions, needed)
            conditions = self._conditions(dataset, schema, decisions, where, needs=where_needs)
        except Exception as err:
            self._log(action, dataset, version, err, decisions, request, where=where)
            raise
        used = sorted({g for c in counted for g in decisions[c].grant_ids})
        return Authorization(
            dataset,
            list(columns),
            schema,
            decisions,
            conditions,
            used,
            self._policy_hash(decisions) or "",
            _row_columns(counted, conditions),
        )

    @contextmanager
    def _request(
        self, action: str, dataset: str, *, where: Any = None, version: int | None = None
    ) -> Iterator[None]:
        """Audit a request that fails anywhere inside, unless its failure is audited already.

        Wrap every public entry point that serves a request, so that a refusal
        raised before or after the policy decision (a bad argument, a missing
        optional dependency, a failed comparison) leaves its audit entry.
        """
        try:
            yield
        except Exception as err:
            if not _failures.is_audited(err):
                self._log(action, dataset, version, err, {}, {}, where=where)
            raise

    def _charge_audited(self, err: BaseException) -> None:
        """Mark a ledger refusal as audited: the ledger wrote its entry in its own transaction."""
        if isinstance(err, BudgetExceededError):
            _failures.mark_audited(err)

    def _load(self, auth: Authorization, *, version: int | None = None) -> LoadedValues:
        """Decrypt an authorized request's columns (row filters and conditions applied).

        Not audited by itself: the caller records the release (e.g. with its ledger charge).
        """
        frame, used, digest, hidden = self._fetch(
            auth.dataset,
            auth.schema,
            auth.decisions,
            auth.columns,
            auth.conditions,
            version,
            render=False,
            row_columns=auth.row_columns or _row_columns(auth.columns, auth.conditions),
        )
        return LoadedValues(frame, used, digest, hidden)

    def _values_for(
        self,
        dataset: str,
        *,
        columns: Sequence[str],
        needed: str,
        action: str,
        version: int | None = None,
    ) -> tuple[pd.DataFrame, int, Schema]:
        """Authorize, decrypt and audit (as ``action``) in one step."""
        auth = self._authorize(
            dataset, columns=columns, needed=needed, action=action, version=version
        )
        loaded = self._load(auth, version=version)
        details = {
            "columns": list(columns),
            "needed": needed,
            "version": version,
            "modes": {c: auth.decisions[c].mode for c in columns},
            "rows": len(loaded.frame),
            "rows_withheld": loaded.rows_withheld,
            "grant_ids": auth.grant_ids,
            "policy_hash": auth.policy_hash,
            "content_hash": loaded.content_hash,
        }
        self._write(action, "ok", dataset, loaded.version, details)
        return loaded.frame, loaded.version, auth.schema

    # -- steps ------------------------------------------------------------------------
    def _decide(self, dataset: str, schema: Schema) -> dict[str, Decision]:
        model = self._policy.model()
        if not model.knows_principal(self.principal):
            raise AccessDenied(
                f"unknown principal {self.principal!r}: register it with "
                f"vault.add_principal({self.principal!r}, roles=[...])",
                principal=self.principal,
                purpose=self.purpose,
                dataset=dataset,
            )
        if not model.knows_purpose(self.purpose):
            raise AccessDenied(
                f"unknown purpose {self.purpose!r}: register it with "
                f"vault.add_purpose({self.purpose!r}, description=..., lawful_basis=...)",
                principal=self.principal,
                purpose=self.purpose,
                dataset=dataset,
            )
        tags = {name: f.category for name, f in schema.items()}
        return model.decide(self.principal, self.purpose, dataset, tags)

    def _require(
        self,
        dataset: str,
        schema: Schema,
        decisions: dict[str, Decision],
        column: str,
        needed: str,
    ) -> None:
        if column not in schema:
            raise ConfigurationError(
                f"dataset {dataset!r} has no column {column!r}; columns are {list(schema.names)}"
            )
        mode = decisions[column].mode
        if not mode_allows(mode, needed):
            raise AccessDenied(
                f"{self.principal!r} acting for {self.purpose!r} may not use column {column!r} "
                f"of dataset {dataset!r} this way: its mode is {mode!r}, this needs {needed!r} "
                f"or more revealing (modes, most revealing first: {', '.join(MODES[:-1])}). "
                f"See vault.explain({self.principal!r}, purpose={self.purpose!r}, "
                f"dataset={dataset!r}), or ask for vault.grant(..., mode={needed!r}, "
                f"columns=[{column!r}]).",
                principal=self.principal,
                purpose=self.purpose,
                dataset=dataset,
                column=column,
                mode=mode,
                needed=needed,
            )

    def _countable(
        self, dataset: str, schema: Schema, decisions: dict[str, Decision], needed: str
    ) -> list[str]:
        """The columns usable at ``needed``: a row count sees the rows all of them admit."""
        usable = [c for c in schema.names if mode_allows(decisions[c].mode, needed)]
        if not usable:
            raise AccessDenied(
                f"{self.principal!r} acting for {self.purpose!r} may use no column of "
                f"{dataset!r} for this release (needs {needed!r}). See "
                f"vault.explain({self.principal!r}, purpose={self.purpose!r}, "
                f"dataset={dataset!r}).",
                principal=self.principal,
                purpose=self.purpose,
                dataset=dataset,
                mode="deny",
                needed=needed,
            )
        return usable

    def _readable(
        self,
        dataset: str,
        schema: Schema,
        decisions: dict[str, Decision],
        columns: Sequence[str] | None,
    ) -> list[str]:
        if columns is not None:
            for column in columns:
                self._require(dataset, schema, decisions, column, "masked")
            return list(dict.fromkeys(columns))
        wanted = [c for c in schema.names if decisions[c].mode in ROW_MODES]
        if not wanted:
            raise AccessDenied(
                f"{self.principal!r} acting for {self.purpose!r} may read no column of "
                f"dataset {dataset!r}. See vault.explain({self.principal!r}, "
                f"purpose={self.purpose!r}, dataset={dataset!r}).",
                principal=self.principal,
                purpose=self.purpose,
                dataset=dataset,
                mode="deny",
                needed="masked",
            )
        return wanted

    def _conditions(
        self,
        dataset: str,
        schema: Schema,
        decisions: dict[str, Decision],
        where: Where | None,
        *,
        needs: str = "raw",
    ) -> list[Predicate]:
        if where is None:
            return []
        if isinstance(where, Predicate | Mapping) or (
            isinstance(where, Sequence)
            and len(where) == 3
            and isinstance(where[1], str)
            and not isinstance(where[0], Sequence | Mapping | Predicate)
        ):
            where = [where]
        conditions = [Predicate.parse(p) for p in where]
        kinds = {name: f.kind for name, f in schema.items()}
        for p in conditions:
            p.check(kinds)  # the value's kind, before any read or charge
            # Filtering rows on a value reveals it, so reads need the column in raw;
            # inside a DP release the filter is covered by the noise.
            self._require(dataset, schema, decisions, p.column, needs)
        return conditions

    def _fetch(
        self,
        dataset: str,
        schema: Schema,
        decisions: dict[str, Decision],
        wanted: list[str],
        conditions: list[Predicate],
        version: int | None,
        *,
        row_columns: Sequence[str],
        render: bool = True,
    ) -> tuple[pd.DataFrame, int, str, int]:
        filters = [decisions[c].grants for c in row_columns]
        extra = {p.column for gs in filters for g in gs for p in g.row_filter}
        extra |= {p.column for p in conditions}
        needed = list(dict.fromkeys([*wanted, *(c for c in schema.names if c in extra)]))
        frame, used, digest = self._store.load(dataset, needed, version)
        keep = np.ones(len(frame), dtype=bool)
        for grants in filters:
            # A row is visible in this column if any deciding grant admits it.
            admitted = np.zeros(len(frame), dtype=bool)
            for grant in grants:
                admitted |= grant.admits(frame)
            keep &= admitted
        for predicate in conditions:
            try:
                keep &= predicate.mask(frame)
            except (TypeError, ValueError):
                raise _where.compare_error(predicate, schema[predicate.column].kind) from None
        hidden = int((~keep).sum())
        if hidden:
            frame = frame.loc[keep].reset_index(drop=True)
        if not render:
            return frame[wanted], used, digest, hidden
        out = {c: self._render(dataset, c, schema[c], decisions[c].mode, frame[c]) for c in wanted}
        return pd.DataFrame(out, index=frame.index, copy=False), used, digest, hidden

    def _render(self, dataset: str, column: str, field: Field, mode: str, values: pd.Series) -> Any:
        if mode == "raw" or (
            mode == "pseudonymized" and field.kind == "identifier" and field.pseudonymize
        ):
            return values
        if mode == "pseudonymized":
            return self._store.tokens(dataset, column, values)
        return field.mask_values(values)

    # -- audit ------------------------------------------------------------------------
    def _policy_hash(self, decisions: Mapping[str, Decision]) -> str | None:
        first = next(iter(decisions.values()), None)
        return first.policy_hash if first is not None else None

    def _check_request(
        self, action: str, dataset: object, columns: object, version: object
    ) -> None:
        """Refuse a malformed request (names, column list, version), audited without its values.

        Its names may be unprintable or personal data, so the entry records only that a
        malformed request of this kind was refused, and the error's type.
        """
        try:
            check_request(dataset, columns, version)
        except ConfigurationError as err:
            details = {"error": type(err).__name__, "message": "malformed request"}
            self._write(action, "error", None, None, details)
            _failures.mark_audited(err)
            raise

    def _log(
        self,
        action: str,
        dataset: str,
        version: int | None,
        err: Exception,
        decisions: Mapping[str, Decision],
        request: dict[str, Any],
        *,
        where: Any = None,
    ) -> None:
        """Audit a failed request: the error's type and a message that quotes no request value."""
        outcome = "denied" if isinstance(err, AccessDenied) else "error"
        message = _failures.safe_message(err, _failures.request_values(where))
        details: dict[str, Any] = {**request, "error": type(err).__name__, "message": message}
        if isinstance(err, AccessDenied):
            column = err.column
            decision = decisions.get(column) if column else None
            details.update(
                column=column,
                mode=err.mode,
                needed=err.needed,
                grant_ids=list(decision.grant_ids) if decision else [],
            )
        details["policy_hash"] = self._policy_hash(decisions) or self._policy.hash
        self._write(action, outcome, dataset, version, details)
        _failures.mark_audited(err)

    def _write(
        self,
        action: str,
        outcome: str,
        dataset: str | None,
        version: int | None,
        details: dict[str, Any],
    ) -> None:
        with transaction(self._engine) as tx:
            self._audit.append(
                tx,
                principal=self.principal,
                purpose=self.purpose,
                action=action,
                outcome=outcome,
                dataset=dataset,
                version=version,
                details=details,
            )


def _row_columns(columns: Sequence[str], conditions: Sequence[Predicate]) -> tuple[str, ...]:
    """The columns whose grants' row filters apply: those used and those filtered on."""
    return tuple(dict.fromkeys([*columns, *(p.column for p in conditions)]))
