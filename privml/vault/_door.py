"""The vault's door: the one implementation of :class:`privml._gate.Gate`.

Every request a mechanism makes for a session passes here, in the same order:
malformed requests are refused (audited without their values), the policy
decides (:mod:`privml.vault._decide`), a DP event is charged or reserved, and
only then are values decrypted (:mod:`privml.vault._fetch`) and handed over.
Every refusal and failure leaves one audit entry.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from .._gate import Authorization, Loaded, ModelUse, Released, Reserved, Streamed
from ..accounting._unit import ROW
from ..exceptions import AccessDenied, BudgetExceededError, ConfigurationError, NotFoundError
from ..policy import mode_allows
from ..policy._digest import row_digest
from . import _decide, _failures, _model_access, _stream
from ._checkpoints import TrainingCheckpoints
from ._fetch import fetch, needed_columns
from ._requests import RequestLog, Via, policy_hash, release_context

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from pathlib import Path

    from .._gate import Where
    from ..accounting._unit import PrivacyUnit
    from ..accounting.budget import Budget
    from ..accounting.events import PrivacyEvent
    from ..accounting.ledger import Ledger, Reservation
    from ..accounting.records import WhatIf
    from ..audit import AuditLog
    from ..policy import ColumnDecision
    from ..schema import Schema
    from ._datasets import DatasetStore, DatasetVersion
    from ._models import ModelInfo, ModelRegistry
    from ._policy_store import PolicyAdmin
    from ._state import VaultState

__all__ = ["Door"]

T = TypeVar("T")

#: What a reservation's audit entry records from the door itself: a mechanism's context
#: (or its plan's) adds to it and may not rewrite it.
_OWN_CONTEXT = frozenset(
    {
        "release",
        "columns",
        "grant_ids",
        "policy_hash",
        "where",
        "content_hash",
        "rows_withheld",
        "via",
        "privacy_unit",
    }
)


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
        via: Via | None = None,
    ) -> None:
        self._state = state
        self._store = store
        self._policy = policy
        self._audit = audit
        self._ledger = ledger
        self._models = models
        self._asker = asker
        self._log = RequestLog(state=state, audit=audit, policy=policy, asker=asker, via=via)
        self._via = via
        self._charges = 0  # charges and reservations taken: a served request's retry repeats them
        # The authorizations this door decided, by identity, with what they decided and
        # whether they reveal values uncharged (decided at pseudonymized or more, conditions
        # included). Held weakly: an authorization nobody holds any more can never be
        # presented again.
        self._issued: dict[int, tuple[weakref.ref[Authorization], tuple[Any, ...], bool]] = {}

    @property
    def principal(self) -> str:
        """Who acts."""
        return self._asker.principal

    @property
    def purpose(self) -> str:
        """For which purpose."""
        return self._asker.purpose

    def check_open(self) -> None:
        """Raise :class:`~privml.exceptions.VaultClosedError` once the vault is closed."""
        self._state.check()

    # -- lookups (no data) ------------------------------------------------------------
    def schema(self, dataset: str) -> Schema:
        """The declared schema of ``dataset``.

        Served over the network, a dataset on which this principal, for this purpose,
        may use no column at all is answered as an unknown one: a token holder learns
        neither its existence nor its columns.
        """
        schema = self._store.schema(dataset)
        if self._via is not None and all(
            d.mode == "deny" for d in self._column_decisions(dataset, schema).values()
        ):
            raise NotFoundError(f"no dataset {dataset!r}; see vault.datasets()")
        return schema

    def budget(self, dataset: str) -> Budget:
        """The declared total budget of ``dataset``."""
        self.schema(dataset)
        return self._store.budget(dataset)

    def privacy_unit(self, dataset: str) -> PrivacyUnit:
        """The privacy unit of ``dataset``: what its budget protects, and the contribution bound."""
        self.schema(dataset)
        return self._store.unit(dataset)

    def latest_version(self, dataset: str) -> int:
        """The newest version number of ``dataset``."""
        self.schema(dataset)
        return self._store.latest_version(dataset)

    def _column_decisions(self, dataset: str, schema: Schema) -> dict[str, ColumnDecision]:
        """Every column's decision for this session's principal and purpose."""
        return _decide.decide(self._policy.model(), self._asker, dataset, schema)

    def what_if(self, dataset: str, event: PrivacyEvent) -> WhatIf:
        """Whether ``event`` would be admitted now for this principal and purpose."""
        return self._ledger.what_if(dataset, event, principal=self.principal, purpose=self.purpose)

    def refusal(self, dataset: str, event: PrivacyEvent) -> BudgetExceededError | None:
        """The error a charge of ``event`` would raise now (None: it would be admitted)."""
        return self._ledger.refusal(dataset, event, principal=self.principal, purpose=self.purpose)

    def rows_digest(self, dataset: str, columns: Sequence[str]) -> str | None:
        """The row conditions under which this session reads ``columns`` (None: every row)."""
        return row_digest(self._column_decisions(dataset, self.schema(dataset)), columns)

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
        self._log.check_request(action, dataset, columns, version)
        request = {"columns": list(columns), "needed": needed, "version": version}
        decisions: dict[str, ColumnDecision] = {}
        asker = self._asker
        try:
            schema = self.schema(dataset)
            source = self._store.derived_from(dataset)
            if source is not None and needed in ("dp_aggregate", "dp_training"):
                raise ConfigurationError(
                    f"{dataset!r} is a minimized view of {source!r} and carries no privacy "
                    f"budget of its own: run DP releases on {source!r}"
                )
            decisions = self._column_decisions(dataset, schema)
            for column in columns:
                _decide.require(asker, dataset, schema, decisions, column, needed)
            _decide.check_array_use(schema, columns, needed, action)
            counted = list(columns) or _decide.countable(asker, dataset, schema, decisions, needed)
            conditions = _decide.conditions(
                asker, dataset, schema, decisions, where, needs=where_needs
            )
        except Exception as err:
            self._log.failure(action, dataset, version, err, decisions, request, where=where)
            raise
        used = sorted({g for c in counted for g in decisions[c].grant_ids})
        auth = Authorization(
            dataset,
            list(columns),
            schema,
            decisions,
            conditions,
            used,
            policy_hash(decisions) or "",
            _decide.row_columns(counted, conditions),
        )
        if len(self._issued) >= 64:
            self._issued = {k: v for k, v in self._issued.items() if v[0]() is not None}
        uncharged = mode_allows(needed, "pseudonymized") and (
            not conditions or mode_allows(where_needs, "pseudonymized")
        )
        self._issued[id(auth)] = (weakref.ref(auth), _decided(auth), uncharged)
        return auth

    def release(
        self,
        auth: Authorization,
        *,
        event: PrivacyEvent,
        action: str,
        version: int,
        units: bool = False,
    ) -> Released:
        """Charge ``event`` (with its audit entry), then decrypt the authorized values.

        The order is what makes every DP release paid for: nothing is read until
        the charge has committed, and a refused charge reads nothing. With a
        person-level unit, the values handed out keep at most ``max_rows`` rows of
        each person (a keyed random sample fixed by the charge's request id).
        ``units=True`` (for a mechanism that bounds or counts people, e.g. a group-by)
        adds each kept row's person as an opaque integer code, never a unit value.
        """
        unit = self._store.unit(auth.dataset)
        context = {**release_context(auth, action), "privacy_unit": _unit_context(unit)}
        _, request_id = self._admit(self._ledger.charge, auth, event, action, version, context)
        codes: list[np.ndarray] = []
        loaded = self._load(
            auth, version, unit=unit, max_rows=unit.max_rows, key=request_id, codes=codes
        )
        people = (codes or [np.arange(len(loaded.frame))])[0] if units else None
        return Released(loaded.frame, loaded.version, request_id, loaded.positions, people)

    def release_stream(
        self,
        auth: Authorization,
        *,
        event: PrivacyEvent,
        action: str,
        version: int,
        spilled: Callable[[list[Path]], None] | None = None,
        units: bool = False,
    ) -> Streamed:
        """Charge ``event`` exactly as :meth:`release` does, then hand out the values in chunks.

        A version whose requested columns fit :attr:`DatasetStore.memory_limit` is read
        whole (one chunk, the same rows as :meth:`release`); a larger one is read in
        bounded memory (:mod:`privml.vault._stream`), bounded per person through
        encrypted spill files. ``spilled`` (tests only) sees those files between passes.
        ``units=True`` fills :attr:`Streamed.coded`: each chunk with its rows' people as
        opaque codes, all rows of one person in one chunk (see :class:`Streamed`).
        """
        unit = self._store.unit(auth.dataset)
        context = {**release_context(auth, action), "privacy_unit": _unit_context(unit)}
        _, request_id = self._admit(self._ledger.charge, auth, event, action, version, context)
        column = None if unit.is_row else unit.column
        filters = [auth.decisions[c].grants for c in self._row_columns(auth)]
        needed = needed_columns(auth.schema, filters, auth.columns, auth.conditions, column)
        rows, size = self._store.size(auth.dataset, needed, version)
        codes: list[np.ndarray] | None = [] if units else None
        if size <= self._store.memory_limit:
            loaded = self._load(
                auth, version, unit=unit, max_rows=unit.max_rows, key=request_id, codes=codes
            )
            whole = iter([loaded.frame])
            return _streamed(whole, loaded.version, request_id, codes, streamed=False)
        read, used, _ = self._store.stream(auth.dataset, needed, version)
        chunks = _stream.filtered(read, auth.schema, filters, auth.conditions)
        if column is None:
            out: Iterator[pd.DataFrame] = (c[list(auth.columns)] for c in chunks)
        else:
            out = _stream.bounded(
                chunks,
                unit=column,
                columns=auth.columns,
                schema=auth.schema,
                max_rows=unit.max_rows,
                key=self._store.bounding_key(auth.dataset, request_id),
                partitions=_stream.partitions_for(
                    rows, size / max(rows, 1), self._store.memory_limit
                ),
                spilled=spilled,
                codes=codes,
            )
        return _streamed(out, used, request_id, codes, streamed=True)

    def _row_columns(self, auth: Authorization) -> tuple[str, ...]:
        return tuple(auth.row_columns or _decide.row_columns(auth.columns, auth.conditions))

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
        values themselves leave the door only once the reservation is held. With a
        person-level unit, a reserved run samples people: the values keep **one**
        row of each person (a keyed random sample fixed by the request id), so the
        plan's row count is the number of people and its sampling rate is exact.
        """
        _check_context(context)
        self._check_issued(auth)
        unit = self._store.unit(auth.dataset)
        request_id = self._request_id(action)
        loaded = self._load(auth, version, unit=unit, max_rows=1, key=request_id)
        event, chosen = plan(len(loaded.frame))
        _check_context(chosen)
        context = {
            **context,
            **chosen,
            **release_context(auth, action),
            "content_hash": loaded.content_hash,
            "rows_withheld": loaded.rows_withheld,
            "privacy_unit": {**_unit_context(unit), "rows_per_unit_used": 1},
        }
        reservation, request_id = self._admit(
            self._ledger.reserve, auth, event, action, version, context, request_id
        )
        return Reserved(loaded, reservation, request_id)

    def resume(
        self,
        auth: Authorization,
        *,
        request_id: str,
        action: str,
        version: int,
        context: Mapping[str, Any],
    ) -> Reserved:
        """The values of the open reservation ``request_id``, under it: nothing new is charged.

        Only for a reservation of this principal and purpose on ``auth``'s dataset and
        ``version``, still ``reserved`` (a settled run cannot be continued). A person-level
        unit keeps the same one row per person as :meth:`reserve` did (keyed by the id).
        The read is audited as ``action``, with ``context`` and the door's own fields.
        """
        _check_context(context)
        self._check_issued(auth)
        reservation = self._open_reservation(auth, request_id, version)
        unit = self._store.unit(auth.dataset)
        loaded = self._load(auth, version, unit=unit, max_rows=1, key=request_id)
        details = {
            **context,
            **release_context(auth, action),
            "request_id": request_id,
            "content_hash": loaded.content_hash,
            "rows_withheld": loaded.rows_withheld,
            "privacy_unit": {**_unit_context(unit), "rows_per_unit_used": 1},
        }
        self.record(action, "ok", auth.dataset, version, details)
        return Reserved(loaded, reservation, request_id)

    # -- a reservation joined by the other processes of one data-parallel run ------------
    def join(self, auth: Authorization, *, request_id: str, action: str, version: int) -> Loaded:
        """Hand out, to another process of one run, the rows an open reservation covers.

        A data-parallel DP-SGD run is reserved once (by its first process); each other
        process asks its own session for the same rows. The reservation must be open and
        held by this principal and purpose on ``version`` of the authorized dataset; the
        rows are those :meth:`reserve` handed out (on a person-level unit, the same one row
        per person, under the same request id). Nothing is charged; the read is audited.
        """
        self._check_issued(auth)
        try:
            self._open_reservation(auth, request_id, version)
        except (AccessDenied, ConfigurationError, NotFoundError):
            self.record(action, "refused", auth.dataset, version, {"request_id": request_id})
            raise ConfigurationError(
                f"no open reservation {request_id!r} of {self.principal!r} for purpose "
                f"{self.purpose!r} on version {version} of {auth.dataset!r}: a process joins "
                "only a run its first process reserved under the same principal and purpose"
            ) from None
        unit = self._store.unit(auth.dataset)
        loaded = self._load(auth, version, unit=unit, max_rows=1, key=request_id)
        details = {
            "request_id": request_id,
            **release_context(auth, action),
            "content_hash": loaded.content_hash,
            "rows": len(loaded.frame),
        }
        self.record(action, "joined", auth.dataset, version, details)
        return loaded

    def _open_reservation(self, auth: Authorization, request_id: str, version: int) -> Reservation:
        """The open reservation ``request_id`` of this principal and purpose, on ``auth``'s
        dataset and ``version`` (what :meth:`resume` and :meth:`join` continue)."""
        reservation = self._ledger.reservation(request_id)  # refuses settled or unknown ids
        held = reservation.charge
        if (held.principal, held.purpose) != (self.principal, self.purpose):
            raise AccessDenied(
                f"reservation {request_id!r} belongs to another principal or purpose",
                principal=self.principal,
                purpose=self.purpose,
                dataset=auth.dataset,
            )
        if (held.dataset, held.version) != (auth.dataset, version):
            raise ConfigurationError(
                f"reservation {request_id!r} is on dataset {held.dataset!r} version "
                f"{held.version}, not {auth.dataset!r} version {version}"
            )
        return reservation

    def training_checkpoints(self) -> TrainingCheckpoints:
        """The DP-SGD checkpoints this session's principal and purpose may write and resume."""
        return TrainingCheckpoints(
            state=self._state,
            storage=self._models._storage,  # the vault's one storage, as models use it
            audit=self._audit,
            principal=self.principal,
            purpose=self.purpose,
        )

    def _admit(
        self,
        take: Callable[..., T],
        auth: Authorization,
        event: PrivacyEvent,
        action: str,
        version: int,
        context: Mapping[str, Any],
        request_id: str | None = None,
    ) -> tuple[T, str]:
        """Charge or reserve ``event`` (``take``) under a fresh request id, with its audit entry."""
        self._check_issued(auth)
        if request_id is None:
            request_id = self._request_id(action)
        if self._via is not None:
            context = {**context, "via": self._via.details()}
        try:
            held = take(
                auth.dataset,
                event=event,
                principal=self.principal,
                purpose=self.purpose,
                request_id=request_id,
                version=version,
                context=context,
            )
        except BudgetExceededError as err:
            _failures.mark_audited(err)  # the ledger audited it in its own transaction
            raise
        return held, request_id

    @property
    def _charges_asked(self) -> int:
        """Charges and reservations this door has asked the ledger for (made or refused)."""
        return self._charges

    def _request_id(self, action: str) -> str:
        """A fresh request id for a charge or reservation (a served retry gets the same one)."""
        self._charges += 1
        served = self._via.charge_id(self.principal, action, self._charges) if self._via else None
        return served or f"{action}-{secrets.token_hex(8)}"

    def load(self, auth: Authorization) -> Loaded:
        """Decrypt values that carry no budget, for a mechanism (never the caller) to use.

        Only for an authorization decided at ``pseudonymized`` or more (its conditions
        too): one decided for a DP release reveals its values only through a charge.
        """
        if not self._check_issued(auth):
            raise ConfigurationError(
                f"this authorization was decided for a release that carries a charge (a DP "
                f"mode on {auth.dataset!r}): its values leave the door only through release() "
                f"or reserve(); load() needs an authorization decided at 'pseudonymized' or more"
            )
        return self._load(auth, None)

    def _check_issued(self, auth: Authorization) -> bool:
        """Refuse an authorization this door did not decide (hand-built, or another session's)
        or whose decisions the policy no longer makes; True if it reveals values uncharged."""
        issued = self._issued.get(id(auth))
        if issued is None or issued[0]() is not auth or issued[1] != _decided(auth):
            raise ConfigurationError(
                "this authorization was not decided by this session's door: ask "
                "authorize() of the session that will use it"
            )
        now = self._column_decisions(auth.dataset, auth.schema)
        if _decisions(now) != _decisions(auth.decisions):
            raise ConfigurationError(
                f"the policy changed since this authorization on {auth.dataset!r} was decided: "
                "authorize() again under the policy in force"
            )
        return issued[2]

    def _load(
        self,
        auth: Authorization,
        version: int | None,
        *,
        unit: PrivacyUnit | None = None,
        max_rows: int = 1,
        key: str = "",
        codes: list[np.ndarray] | None = None,
    ) -> Loaded:
        """The authorized values; with a person-level ``unit``, at most ``max_rows`` per person,
        sampled under the bounding key of request ``key``. The unit's values never leave here:
        ``codes`` (when given) receives each kept row's person as an opaque integer code
        (:func:`~privml.vault._stream.person_codes`, keyed per release)."""
        # Every caller has checked the authorization (_check_issued) just before.
        column = None if unit is None else unit.column
        got = fetch(
            self._store,
            auth.dataset,
            auth.schema,
            auth.decisions,
            auth.columns,
            auth.conditions,
            version,
            row_columns=auth.row_columns or _decide.row_columns(auth.columns, auth.conditions),
            unit=column,
        )
        frame, positions = got.frame, got.positions
        if column is not None and got.units is not None:
            from ..dp._bounding import bound_rows  # here: privml.dp imports scikit-learn

            bounding = self._store.bounding_key(auth.dataset, key)
            kept = bound_rows(got.units, max_rows, bounding)
            if codes is not None:
                codes.append(
                    _stream.person_codes(np.asarray(got.units, dtype=object)[kept], bounding)
                )
            if len(kept) < len(frame):
                frame = frame.iloc[kept].reset_index(drop=True)
                positions = (np.arange(len(got.units)) if positions is None else positions)[kept]
        return Loaded(frame, got.version, got.content_hash, got.rows_withheld, positions)

    # -- what mechanisms make ---------------------------------------------------------
    def use_model(self, name: str, version: int | None, *, action: str) -> tuple[Any, ModelUse]:
        """A registered model, if the policy allows this session's use of it (refusal audited)."""
        return _model_access.load_model(self, name, version, action=action)

    def check_may_register(self, name: str, *, minimizer: bool = False) -> None:
        """Refuse (audited) before any work a model name this principal may not register."""
        self._models._check_may_register(
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
        return self._models._register(
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
        unit = self._store.unit(source)
        return self._store.add(
            name,
            frame,
            schema=schema,
            budget=self._store.budget(source),
            clipped={},
            actor=self.principal,
            purpose=self.purpose,
            action="dataset.minimize",
            extra=summary,
            derived_from=source,
            unit=unit if unit.column in schema else ROW,
        )

    # -- the audit log ----------------------------------------------------------------
    def request(
        self, action: str, dataset: str, *, where: Any = None, version: int | None = None
    ) -> AbstractContextManager[None]:
        """Audit a failure anywhere inside the block (once), as ``action`` on ``dataset``."""
        return self._log.request(action, dataset, where=where, version=version)

    def record(
        self,
        action: str,
        outcome: str,
        dataset: str | None,
        version: int | None,
        details: dict[str, Any],
    ) -> None:
        """Append one audit entry for this session's principal and purpose."""
        self._log.record(action, outcome, dataset, version, details)


def _streamed(
    chunks: Iterator[pd.DataFrame],
    version: int,
    request_id: str,
    codes: list[np.ndarray] | None,
    *,
    streamed: bool,
) -> Streamed:
    """The chunks as handed out; with ``codes`` (asked for), paired with their people's codes."""
    if codes is None:
        return Streamed(chunks, version, request_id, streamed=streamed)
    coded = _coded(chunks, codes)
    return Streamed((frame for frame, _ in coded), version, request_id, streamed, coded)


def _coded(
    chunks: Iterator[pd.DataFrame], codes: list[np.ndarray]
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Each chunk with its people's codes: those its producer appended to ``codes`` before
    yielding it (a person-level chunk), or one fresh code per row (a row is its own person)."""
    rows = 0
    for frame in chunks:
        people = codes.pop() if codes else np.arange(rows, rows + len(frame), dtype=np.int64)
        if len(people) != len(frame):
            raise RuntimeError("internal: a chunk and its people's codes differ in length")
        rows += len(frame)
        yield frame, people


def _unit_context(unit: PrivacyUnit) -> dict[str, Any]:
    """What a release's audit entry records of the unit it was charged at."""
    return {"unit": unit.name, "max_rows_per_unit": unit.max_rows}


def _check_context(context: Mapping[str, Any]) -> None:
    """Refuse context that would rewrite what the door itself records of a reservation."""
    clash = sorted(_OWN_CONTEXT.intersection(context))
    if clash:
        raise ConfigurationError(
            f"context keys {clash} are the door's own record of the request (the columns, "
            "grants and policy it was decided under, the data it read); rename them"
        )


def _decisions(decisions: Mapping[str, ColumnDecision]) -> tuple[Any, ...]:
    """Each column's mode and deciding grants (what a policy change would alter)."""
    return tuple(sorted((c, d.mode, tuple(d.grant_ids)) for c, d in decisions.items()))


def _decided(auth: Authorization) -> tuple[Any, ...]:
    """What an authorization decided, as values: an edit in place changes it."""
    return (
        auth.dataset,
        tuple(auth.columns),
        tuple((p.column, p.op, repr(p.value)) for p in auth.conditions),
        auth.row_columns,
        _decisions(auth.decisions),
        id(auth.schema),
    )
