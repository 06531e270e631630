"""Writing charges, reservations and allocations: one transaction each, audited inside it."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from .._canonical import canonical_json, utcnow
from ..audit import ADMIN_PURPOSE, AuditLog
from ..exceptions import ConfigurationError, NotFoundError
from ..storage.engine import Tx, transaction
from ._check import Admission, check, refusal
from ._spend import purpose_scope, spent
from ._store import (
    DatasetRow,
    encode_curve,
    find_request,
    insert_event,
    lock_dataset,
    read_state,
    scopes_of,
    version_exists,
    write_allocation,
    write_state,
)
from .composition import rdp_curve
from .events import PrivacyEvent
from .filter import Accounting, filter_figure
from .records import Allocation, Charge

__all__ = [
    "Request",
    "allocate",
    "charge_from_row",
    "make_request",
    "name",
    "retry_locked",
    "same_seq",
    "submit",
]

_T = TypeVar("_T")


def name(what: str, value: Any) -> str:
    """``value`` if it is a non-empty string, else a ConfigurationError naming ``what``."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what}= must be a non-empty string, got {value!r}")
    return value


_LEDGER_KEYS = frozenset(
    {"request_id", "event", "reason", "scope", "cap", "requested", "charged_in", "budget"}
    | {"epsilon_before", "epsilon_after", "method", "accountant", "discretization"}
)


@dataclass(frozen=True)
class Request:
    """One charge or reservation as asked for."""

    dataset: str
    event: PrivacyEvent
    principal: str
    purpose: str
    request_id: str
    version: int | None
    status: str  # "committed" (a charge) or "reserved"
    context: dict[str, Any]

    @property
    def action(self) -> str:
        return "ledger.charge" if self.status == "committed" else "ledger.reserve"

    def log(
        self,
        audit: AuditLog,
        tx: Tx,
        action: str,
        outcome: str,
        version: int | None,
        **details: Any,
    ) -> int:
        return audit.append(
            tx,
            principal=self.principal,
            purpose=self.purpose,
            action=action,
            outcome=outcome,
            dataset=self.dataset,
            version=version,
            details={"request_id": self.request_id, **details, **self.context},
        )


def make_request(
    dataset: str,
    event: PrivacyEvent,
    principal: str,
    purpose: str,
    request_id: str | None,
    version: int | None,
    status: str,
    context: Mapping[str, Any] | None,
) -> Request:
    """Validate a charge's arguments (before any transaction)."""
    if not isinstance(event, PrivacyEvent):
        raise ConfigurationError("event= must be a privml.accounting.PrivacyEvent")
    rid = name("request_id", request_id) if request_id is not None else uuid.uuid4().hex
    if len(rid) > 128:
        raise ConfigurationError("request_id= must be at most 128 characters")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise ConfigurationError(f"version= must be an int, got {version!r}")
    extra = dict(context or {})
    clash = sorted(set(extra) & _LEDGER_KEYS)
    if clash or not all(isinstance(k, str) for k in extra):
        raise ConfigurationError(
            f"context= keys must be strings other than the ledger's own ({clash}); rename them"
        )
    try:
        canonical_json(extra)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"context= must be JSON-serializable: {err}") from None
    return Request(
        dataset,
        event,
        name("principal", principal),
        name("purpose", purpose),
        rid,
        version,
        status,
        extra,
    )


def submit(engine: sa.Engine, audit: AuditLog, req: Request) -> Charge:
    """Check and record ``req`` in one transaction; retried on a SQLite lock."""

    def attempt() -> Charge:
        error: Exception
        with transaction(engine) as tx:
            ds = lock_dataset(tx.conn, req.dataset)
            existing = find_request(tx.conn, req.request_id)
            if existing is not None:
                return _replay(audit, tx, ds, existing, req)
            used = ds.latest_version if req.version is None else req.version
            if req.version is not None and not version_exists(tx.conn, ds.name, req.version):
                raise NotFoundError(f"dataset {ds.name!r} has no version {req.version}")
            try:
                decision = check(
                    tx.conn, ds, req.event, principal=req.principal, purpose=req.purpose
                )
            except ConfigurationError as err:
                _log_refusal(audit, tx, ds, used, req, str(err), None)
                error = err
            else:
                refused = decision.refused
                if refused is None:
                    return _record(audit, tx, ds, used, decision, req)
                error = refusal(ds, decision, refused)
                _log_refusal(audit, tx, ds, used, req, str(error), decision)
        raise error

    return retry_locked(attempt)


def _record(
    audit: AuditLog,
    tx: Tx,
    ds: DatasetRow,
    version: int | None,
    decision: Admission,
    req: Request,
) -> Charge:
    event, total = decision.event, decision.total
    figures = _figures(total.before, total.after, ds)
    # The rows first, then their audit entry: it records the ledger heads they moved.
    seq = audit.next_seq(tx)
    now = utcnow()
    insert_event(
        tx.conn,
        dict(
            request_id=req.request_id,
            dataset=ds.name,
            version=version,
            principal=req.principal,
            purpose=req.purpose,
            kind=event.kind,
            event=event.to_json(),
            planned=event.to_json() if req.status == "reserved" else None,
            status=req.status,
            rdp=encode_curve(rdp_curve(event)),
            pure_epsilon=event.pure_epsilon,
            epsilon_before=total.before.epsilon,
            epsilon_after=total.after.epsilon,
            method=total.after.method,
            accountant=total.after.accountant,
            discretization=total.after.discretization,
            audit_seq=seq,
            created=now,
            updated=now,
        ),
    )
    for scope in scopes_of(req.principal, req.purpose):
        before, revision = read_state(tx.conn, ds.name, scope)
        write_state(tx.conn, ds.name, scope, before.plus(event), revision + 1)
    logged = req.log(audit, tx, req.action, "ok", version, event=event.to_dict(), **figures)
    same_seq(seq, logged)
    return Charge(
        req.request_id, ds.name, version, req.principal, req.purpose, event, req.status,
        total.before.epsilon, total.after.epsilon, total.after, seq,
    )  # fmt: skip


def _replay(audit: AuditLog, tx: Tx, ds: DatasetRow, row: Any, req: Request) -> Charge:
    is_reservation = row.planned is not None
    same = (
        row.dataset == ds.name
        and row.principal == req.principal
        and row.purpose == req.purpose
        and (req.status == "reserved") == is_reservation
        and req.event.to_json() == (row.planned if is_reservation else row.event)
    )
    if not same:
        raise ConfigurationError(
            f"request id {row.request_id!r} was already used for a different request "
            f"({row.kind} on {row.dataset!r} by {row.principal!r}); use a new request id"
        )
    req.log(audit, tx, req.action, "replayed", row.version, charged_in=row.audit_seq)
    return charge_from_row(row, ds, replayed=True)


def _log_refusal(
    audit: AuditLog,
    tx: Tx,
    ds: DatasetRow,
    version: int | None,
    req: Request,
    reason: str,
    decision: Admission | None,
) -> None:
    details: dict[str, Any] = {"event": req.event.to_dict(), "reason": reason}
    if decision is not None and decision.refused is not None:
        refused = decision.refused
        details.update(
            scope=refused.scope or "dataset",
            cap=refused.cap,
            requested=_finite(decision.requested),
            **_figures(refused.before, refused.after, ds),
        )
    req.log(audit, tx, "ledger.refuse", "refused", version, **details)


def allocate(
    engine: sa.Engine,
    audit: AuditLog,
    dataset: str,
    *,
    principal: str | None,
    purpose: str | None,
    epsilon: float,
    actor: str,
) -> Allocation:
    """Cap one principal's or purpose's share of ``dataset``'s budget (audited).

    A purpose's allocation binds the purpose and every purpose below it.
    """
    if (principal is None) == (purpose is None):
        raise ConfigurationError("allocate one share: give principal= or purpose=, not both")
    scope = (
        f"principal:{name('principal', principal)}"
        if principal is not None
        else f"purpose:{name('purpose', purpose)}"
    )
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise ConfigurationError(f"epsilon= must be a number, got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigurationError(f"epsilon= must be finite and > 0, got {epsilon!r}")
    with transaction(engine) as tx:
        ds = lock_dataset(tx.conn, dataset)
        if epsilon > ds.budget.epsilon:
            raise ConfigurationError(
                f"an allocation of ε={epsilon:g} exceeds dataset {dataset!r}'s whole budget "
                f"ε={ds.budget.epsilon:g}"
            )
        previous = write_allocation(tx.conn, dataset, scope, float(epsilon), utcnow())
        members = purpose_scope(tx.conn, who_of(scope)) if purpose is not None else (scope,)
        tally, _ = spent(tx.conn, dataset, members)
        used = filter_figure(tally, ds.budget.delta)
        kind, _, who = scope.partition(":")
        audit.append(
            tx,
            principal=name("actor", actor),
            purpose=ADMIN_PURPOSE,
            action="ledger.allocate",
            outcome="ok",
            dataset=dataset,
            details={kind: who, "epsilon": float(epsilon), "previous": previous},
        )
    return Allocation(dataset, principal, purpose, float(epsilon), used.epsilon)


def same_seq(expected: int, logged: int) -> None:
    """Check that the audit entry got the ``seq`` its rows name."""
    if logged != expected:  # the transaction holds the write lock: never happens
        raise RuntimeError(f"audit entry {logged} written where {expected} was expected")


def who_of(scope: str) -> str:
    """The name in a scope key such as ``"purpose:research"``."""
    return scope.partition(":")[2]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _figures(before: Accounting, after: Accounting, ds: DatasetRow) -> dict[str, Any]:
    return {
        "epsilon_before": _finite(before.epsilon),
        "epsilon_after": _finite(after.epsilon),
        "budget": {"epsilon": ds.budget.epsilon, "delta": ds.budget.delta},
        "method": after.method,
        "accountant": after.accountant,
        "discretization": after.discretization,
    }


def charge_from_row(row: Any, ds: DatasetRow, *, replayed: bool = False) -> Charge:
    method = row.method
    figure = float(row.epsilon_after)
    accounting = Accounting(
        figure,
        ds.budget.delta,
        method,
        figure if method == "rdp" else None,
        figure if method == "basic" else None,
        fixed_sequence_epsilon=figure if method == "pld" else None,
        discretization=row.discretization,
        accountant=row.accountant,
    )
    return Charge(
        row.request_id, row.dataset, row.version, row.principal, row.purpose,
        PrivacyEvent.from_json(row.event), row.status, float(row.epsilon_before), figure,
        accounting, int(row.audit_seq), replayed,
    )  # fmt: skip


def retry_locked(fn: Callable[[], _T], attempts: int = 8) -> _T:
    """Run ``fn`` again if SQLite reports a lock (safe: a charge is idempotent by request id)."""
    for attempt in range(attempts):
        try:
            return fn()
        except sa.exc.OperationalError as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover
