"""The vault's door: the one implementation of :class:`privml._gate.Gate`.

Every request a mechanism makes for a session passes here, in the same order:
malformed requests are refused (audited without their values), the policy
decides (:mod:`privml.vault._decide`), a DP event is charged or reserved, and
only then are values decrypted (:mod:`privml.vault._fetch`) and handed over.
Every refusal and failure leaves one audit entry.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._gate import Authorization, Loaded, ModelUse, Released, Reserved
from .._validation import check_request
from ..exceptions import AccessDenied, BudgetExceededError, ConfigurationError
from ..policy._digest import row_digest
from ..storage.engine import transaction
from . import _decide, _failures, _model_access
from ._fetch import fetch

if TYPE_CHECKING:
    import pandas as pd

    from .._gate import Where
    from ..accounting.budget import Budget
    from ..accounting.events import PrivacyEvent
    from ..accounting.ledger import Ledger
    from ..accounting.records import WhatIf
    from ..audit import AuditLog
    from ..policy import ColumnDecision
    from ..schema import Schema
    from ._datasets import DatasetStore, DatasetVersion
    from ._models import ModelInfo, ModelRegistry
    from ._policy_store import PolicyAdmin
    from ._state import VaultState

__all__ = ["Door"]


class Door:
    """A session's door: what privml's mechanisms may ask on behalf of its principal and purpose."""

    def __init__(
        self,
        *,
        state: VaultState,
        store: DatasetStore,
        policy: PolicyAdmin,
        audit: AuditLog,
        ledger: Ledger,
        models: ModelRegistry,
        asker: _decide.Asker,
    ) -> None:
        self._state = state
        self.store = store
        self.policy = policy
        self._audit = audit
        self._ledger = ledger
        self.models = models
        self.asker = asker

    @property
    def principal(self) -> str:
        """Who acts."""
        return self.asker.principal

    @property
    def purpose(self) -> str:
        """For which purpose."""
        return self.asker.purpose

    def check_open(self) -> None:
        """Raise :class:`~privml.exceptions.VaultClosedError` once the vault is closed."""
        self._state.check()

    # -- lookups (no data) ------------------------------------------------------------
    def schema(self, dataset: str) -> Schema:
        """The declared schema of ``dataset``."""
        return self.store.schema(dataset)

    def budget(self, dataset: str) -> Budget:
        """The declared total budget of ``dataset``."""
        return self.store.budget(dataset)

    def latest_version(self, dataset: str) -> int:
        """The newest version number of ``dataset``."""
        return self.store.latest_version(dataset)

    def decide(self, dataset: str, schema: Schema) -> dict[str, ColumnDecision]:
        """Every column's decision for this session's principal and purpose."""
        return _decide.decide(self.policy.model(), self.asker, dataset, schema)

    def what_if(self, dataset: str, event: PrivacyEvent) -> WhatIf:
        """Whether ``event`` would be admitted now for this principal and purpose."""
        return self._ledger.what_if(dataset, event, principal=self.principal, purpose=self.purpose)

    def refusal(self, dataset: str, event: PrivacyEvent) -> BudgetExceededError | None:
        """The error a charge of ``event`` would raise now (None: it would be admitted)."""
        return self._ledger.refusal(dataset, event, principal=self.principal, purpose=self.purpose)

    def rows_digest(self, dataset: str, columns: Sequence[str]) -> str | None:
        """The row conditions under which this session reads ``columns`` (None: every row)."""
        return row_digest(self.decide(dataset, self.schema(dataset)), columns)

    # -- the door ---------------------------------------------------------------------
    def authorize(
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
        self.check_request(action, dataset, columns, version)
        request = {"columns": list(columns), "needed": needed, "version": version}
        decisions: dict[str, ColumnDecision] = {}
        asker = self.asker
        try:
            schema = self.store.schema(dataset)
            source = self.store.derived_from(dataset)
            if source is not None and needed in ("dp_aggregate", "dp_training"):
                raise ConfigurationError(
                    f"{dataset!r} is a minimized view of {source!r} and carries no privacy "
                    f"budget of its own: run DP releases on {source!r}"
                )
            decisions = self.decide(dataset, schema)
            for column in columns:
                _decide.require(asker, dataset, schema, decisions, column, needed)
            counted = list(columns) or _decide.countable(asker, dataset, schema, decisions, needed)
            conditions = _decide.conditions(
                asker, dataset, schema, decisions, where, needs=where_needs
            )
        except Exception as err:
            self.log_failure(action, dataset, version, err, decisions, request, where=where)
            raise
        used = sorted({g for c in counted for g in decisions[c].grant_ids})
        return Authorization(
            dataset,
            list(columns),
            schema,
            decisions,
            conditions,
            used,
            policy_hash(decisions) or "",
            _decide.row_columns(counted, conditions),
        )

    def release(
        self, auth: Authorization, *, event: PrivacyEvent, action: str, version: int
    ) -> Released:
        """Charge ``event`` (with its audit entry), then decrypt the authorized values.

        The order is what makes every DP release paid for: nothing is read until
        the charge has committed, and a refused charge reads nothing.
        """
        request_id = f"{action}-{secrets.token_hex(8)}"
        try:
            self._ledger.charge(
                auth.dataset,
                event=event,
                principal=self.principal,
                purpose=self.purpose,
                request_id=request_id,
                version=version,
                context=release_context(auth, action),
            )
        except BudgetExceededError as err:
            _failures.mark_audited(err)  # the ledger audited it in its own transaction
            raise
        loaded = self._load(auth, version)
        return Released(loaded.frame, loaded.version, request_id)

    def reserve(
        self,
        auth: Authorization,
        *,
        plan: Callable[[int], tuple[PrivacyEvent, Mapping[str, Any]]],
        action: str,
        version: int,
        context: Mapping[str, Any],
    ) -> Reserved:
        """Reserve the event ``plan(rows)`` makes, then hand out the values of those rows.

        The row count fixes a DP-SGD run's sampling rate, so it is read first; the
        values themselves leave the door only once the reservation is held.
        """
        loaded = self._load(auth, version)
        event, chosen = plan(len(loaded.frame))
        request_id = f"{action}-{secrets.token_hex(8)}"
        try:
            reservation = self._ledger.reserve(
                auth.dataset,
                event=event,
                principal=self.principal,
                purpose=self.purpose,
                request_id=request_id,
                version=version,
                context={
                    **release_context(auth, action),
                    "content_hash": loaded.content_hash,
                    "rows_withheld": loaded.rows_withheld,
                    **context,
                    **chosen,
                },
            )
        except BudgetExceededError as err:
            _failures.mark_audited(err)
            raise
        return Reserved(loaded, reservation, request_id)

    def load(self, auth: Authorization) -> Loaded:
        """Decrypt values that carry no budget, for a mechanism (never the caller) to use."""
        return self._load(auth, None)

    def _load(self, auth: Authorization, version: int | None) -> Loaded:
        got = fetch(
            self.store,
            auth.dataset,
            auth.schema,
            auth.decisions,
            auth.columns,
            auth.conditions,
            version,
            row_columns=auth.row_columns or _decide.row_columns(auth.columns, auth.conditions),
        )
        return Loaded(got.frame, got.version, got.content_hash, got.rows_withheld)

    # -- what mechanisms make ---------------------------------------------------------
    def use_model(self, name: str, version: int | None, *, action: str) -> tuple[Any, ModelUse]:
        """A registered model, if the policy allows this session's use of it (refusal audited)."""
        return _model_access.load_model(self, name, version, action=action)

    def check_may_register(self, name: str, *, minimizer: bool = False) -> None:
        """Refuse (audited) before any work a model name this principal may not register."""
        self.models._check_may_register(
            name, principal=self.principal, purpose=self.purpose, minimizer=minimizer
        )

    def register_model(
        self,
        name: str,
        model: Any,
        *,
        trained_on: tuple[str, int],
        epsilon: float | None,
        delta: float | None,
        notes: str | None,
        extra: dict[str, Any],
        minimizer: bool = False,
    ) -> ModelInfo:
        """Store ``model`` in the registry, owned by this session's principal."""
        return self.models._register(
            name,
            model,
            trained_on=trained_on,
            epsilon=epsilon,
            delta=delta,
            notes=notes,
            extra=extra,
            principal=self.principal,
            purpose=self.purpose,
            minimizer=minimizer,
        )

    def add_view(
        self,
        name: str,
        frame: pd.DataFrame,
        *,
        schema: Schema,
        source: str,
        summary: dict[str, Any],
    ) -> DatasetVersion:
        """Store a minimized view of ``source`` as dataset ``name`` (its budget is the source's)."""
        return self.store.add(
            name,
            frame,
            schema=schema,
            budget=self.store.budget(source),
            clipped={},
            actor=self.principal,
            purpose=self.purpose,
            action="dataset.minimize",
            extra=summary,
            derived_from=source,
        )

    # -- the audit log ----------------------------------------------------------------
    @contextmanager
    def request(
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
                self.log_failure(action, dataset, version, err, {}, {}, where=where)
            raise

    def check_request(self, action: str, dataset: object, columns: object, version: object) -> None:
        """Refuse a malformed request (names, column list, version), audited without its values.

        Its names may be unprintable or personal data, so the entry records only that a
        malformed request of this kind was refused, and the error's type.
        """
        try:
            check_request(dataset, columns, version)
        except ConfigurationError as err:
            details = {"error": type(err).__name__, "message": "malformed request"}
            self.record(action, "error", None, None, details)
            _failures.mark_audited(err)
            raise

    def log_failure(
        self,
        action: str,
        dataset: str,
        version: int | None,
        err: Exception,
        decisions: Mapping[str, ColumnDecision],
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
        details["policy_hash"] = policy_hash(decisions) or self.policy.hash
        self.record(action, outcome, dataset, version, details)
        _failures.mark_audited(err)

    def record(
        self,
        action: str,
        outcome: str,
        dataset: str | None,
        version: int | None,
        details: dict[str, Any],
    ) -> None:
        """Append one audit entry for this session's principal and purpose."""
        with transaction(self._state.engine) as tx:
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


def policy_hash(decisions: Mapping[str, ColumnDecision]) -> str | None:
    """The policy version the decisions were made under (None before any decision)."""
    first = next(iter(decisions.values()), None)
    return first.policy_hash if first is not None else None


def release_context(auth: Authorization, action: str) -> dict[str, Any]:
    """What a release's audit entry records besides the charge itself."""
    return {
        "release": action,
        "columns": auth.columns,
        "grant_ids": auth.grant_ids,
        "policy_hash": auth.policy_hash,
        "where": [[p.column, p.op] for p in auth.conditions],
    }
