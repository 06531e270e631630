"""Sessions: a principal acting for a purpose. The only way to data in a vault.

Every request through a session is decided by the vault's policy, column by
column, and written to the audit log with the decision (grant ids and policy
hash) whether it is served, refused or fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._optional import require
from .._validation import check_name
from ..policy._explain import explain
from ..storage.engine import transaction
from . import _decide
from ._door import Door
from ._fetch import fetch, render, tokenized
from ._requests import policy_hash

if TYPE_CHECKING:
    from .._gate import Where
    from ..accounting.ledger import Ledger
    from ..accounting.records import BudgetStatus
    from ..attacks import PrivacyReport
    from ..audit import AuditLog
    from ..dp import DPSession
    from ..he._session import HESession
    from ..policy import ColumnDecision
    from ..schema import Schema
    from ._datasets import DatasetStore, DatasetVersion
    from ._models import ModelRegistry
    from ._policy_store import PolicyAdmin
    from ._requests import Via
    from ._state import VaultState

__all__ = ["Session", "open_session"]


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

    def __init__(self, door: Door) -> None:
        # Make one with Vault.session(); the door is what privml's mechanisms are handed.
        self._door = door

    @property
    def principal(self) -> str:
        """Who acts in this session (fixed when it is opened: open another session to change)."""
        return self._door.principal

    @property
    def purpose(self) -> str:
        """The purpose this session acts for (fixed when it is opened)."""
        return self._door.purpose

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
            self._door,
            dataset,
            model_name,
            target_accuracy=target_accuracy,
            name=name,
            min_group_size=min_group_size,
            features=features,
            model_version=model_version,
            random_state=random_state,
        )

    def privacy_report(
        self,
        name: str,
        *,
        version: int | None = None,
        attacks: Sequence[str] = ("loss-threshold", "lira-offline"),
        delta: float | None = None,
        confidence: float = 0.95,
        random_state: int = 0,
        references: int = 4,
    ) -> PrivacyReport:
        """Attack a registered model; see :meth:`privml.vault._models.ModelRegistry.privacy_report`.

        Needs ``raw`` on every column the model uses, on every row (no row filter),
        for this principal and purpose: the report reads the member rows, and charges
        no budget because its figures go only to a party that may read them raw.
        A refusal is audited, and so is every report, with its figures.
        """
        from ._privacy_report import session_report

        return session_report(
            self._door,
            name,
            version,
            attacks=attacks,
            delta=delta,
            confidence=confidence,
            random_state=random_state,
            references=references,
        )

    def load_model(self, name: str, *, version: int | None = None) -> Any:
        """A registered model (the latest version by default), if the policy allows its use.

        Decided on the model's training data like a read (see :mod:`privml.vault._model_access`):
        a DP model needs ``dp_aggregate`` or more on its training columns, any other
        ``raw``; refusals raise :class:`~privml.AccessDenied`. Audited as ``model.load``.
        """
        from ._model_access import serve_model

        return serve_model(self._door, name, version)

    @property
    def he(self) -> HESession:
        """Encrypted inference with registered models (:class:`privml.he._session.HESession`)."""
        require("tenseal", feature="session.he (encrypted inference)")
        from ..he._session import HESession

        return HESession(self._door)

    @property
    def dp(self) -> DPSession:
        """Differentially private statistics and models (:class:`privml.dp.DPSession`)."""
        from ..dp import DPSession

        return DPSession(self._door)

    # -- what this session may do ----------------------------------------------------
    def budget(self, dataset: str) -> BudgetStatus:
        """The privacy budget of ``dataset`` as this session may see it.

        The dataset's totals (spent, total, remaining) and this principal's and
        this purpose's shares; other principals' and purposes' shares are left out.
        Needs some grant on ``dataset`` for this purpose (``dp_aggregate`` or more on
        a column); refused with :class:`~privml.AccessDenied` otherwise. Audited.

        Examples
        --------
        >>> session = getfixture("dp_vault").session("ana", purpose="studies")
        >>> _ = session.dp.count("patients", epsilon=0.25)
        >>> status = session.budget("patients")
        >>> mine = status.by_principal
        >>> status.epsilon_total, sorted(mine), mine["ana"].epsilon_spent
        (1.0, ['ana'], 0.25)
        """
        door = self._door
        with door.request("budget.view", dataset):
            self._require_some_grant(dataset)
            status = door._ledger.status(dataset)
            mine = dataclasses.replace(
                status,
                by_principal={k: v for k, v in status.by_principal.items() if k == self.principal},
                by_purpose={k: v for k, v in status.by_purpose.items() if k == self.purpose},
            )
        door.record("budget.view", "ok", dataset, None, {})
        return mine

    def explain(self, dataset: str) -> pd.DataFrame:
        """What this session gets from each column of ``dataset``, and why (audited).

        One row per column: its schema tags, the decided mode, the deciding grant
        ids and their row filters (see :meth:`privml.Vault.explain`). Needs some
        grant on ``dataset`` for this purpose (``dp_aggregate`` or more on a column):
        a session without one is refused with :class:`~privml.AccessDenied` and
        learns nothing of the dataset's columns.

        Examples
        --------
        >>> session = getfixture("dp_vault").session("ana", purpose="studies")
        >>> session.explain("patients")[["column", "mode"]].head(2)
            column         mode
        0  patient         deny
        1      age  dp_training
        """
        door = self._door
        with door.request("policy.explain", dataset):
            schema = self._require_some_grant(dataset)
            frame = explain(door._policy.model(), self.principal, self.purpose, dataset, schema)
        door.record("policy.explain", "ok", dataset, None, {})
        return frame

    def _require_some_grant(self, dataset: str) -> Schema:
        """The schema, if the policy lets this session use some column of ``dataset``
        (``dp_aggregate`` or more); else :class:`~privml.AccessDenied`, naming no column."""
        door = self._door
        schema = door.schema(dataset)
        decisions = door._column_decisions(dataset, schema)
        _decide.countable(door._asker, dataset, schema, decisions, "dp_aggregate")
        return schema

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
            ``attrs["privml_modes"]`` maps each returned column to its mode,
            ``attrs["privml_version"]`` is the version read.
        """
        door, asker = self._door, self._door._asker
        door._log.check_request("dataset.read", dataset, columns, version)
        request: dict[str, Any] = {
            "columns": list(columns) if columns is not None else None,
            "version": version,
        }
        decisions: dict[str, ColumnDecision] = {}
        try:
            schema = door.schema(dataset)
            decisions = door._column_decisions(dataset, schema)
            wanted = _decide.readable(asker, dataset, schema, decisions, columns)
            conditions = _decide.conditions(asker, dataset, schema, decisions, where)
            request["where"] = [[p.column, p.op] for p in conditions]
            rows_by = _decide.row_columns(wanted, conditions)
            got = fetch(
                door._store,
                dataset,
                schema,
                decisions,
                wanted,
                conditions,
                version,
                row_columns=rows_by,
                tokenized=tokenized(schema, decisions, wanted),
            )
            result = render(door._store, dataset, schema, decisions, got.frame)
        except Exception as err:
            door._log.failure(
                "dataset.read", dataset, version, err, decisions, request, where=where
            )
            raise
        modes = {c: decisions[c].mode for c in wanted}
        omitted = {
            c: decisions[c].mode for c in schema.names if c not in wanted and columns is None
        }
        result.attrs["privml_modes"] = modes
        result.attrs["privml_omitted"] = omitted
        result.attrs["privml_version"] = got.version
        used_ids = sorted({g for c in wanted for g in decisions[c].grant_ids})
        details = {
            **request,
            "columns": modes,
            "omitted": omitted,
            "rows": len(result),
            "rows_withheld": got.rows_withheld,
            "grant_ids": used_ids,
            "policy_hash": policy_hash(decisions),
            "content_hash": got.content_hash,
        }
        door.record("dataset.read", "ok", dataset, got.version, details)
        return result


def open_session(
    principal: str,
    purpose: str,
    *,
    state: VaultState,
    store: DatasetStore,
    policy: PolicyAdmin,
    audit: AuditLog,
    ledger: Ledger,
    models: ModelRegistry,
    via: Via | None = None,
) -> Session:
    """A new session and its door; an unknown principal or purpose is refused, and audited.

    ``via`` (a served request: client address, token id, request id) joins every
    audit entry of the session, and a retried request's charges keep their ids.
    """
    check_name(principal, "principal")
    check_name(purpose, "purpose=")
    asker = _decide.Asker(principal, purpose)
    problem = asker.unknown(policy.model())
    if problem:
        with transaction(state.engine) as tx:
            audit.append(
                tx,
                principal=principal,
                purpose=purpose,
                action="session.open",
                outcome="denied",
                details={"message": problem, **({"via": via.details()} if via else {})},
            )
        raise asker.denied(problem)
    door = Door(
        state=state,
        store=store,
        policy=policy,
        audit=audit,
        ledger=ledger,
        models=models,
        asker=asker,
        via=via,
    )
    return Session(state.guard(door))
