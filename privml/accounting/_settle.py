"""Settling and releasing reservations. Either only lowers what a dataset has spent.

Neither needs a check: the privacy filter admitted the reservation at its
planned cost, and the actual cost is no higher (a settle) or nothing at all
(a release: no data was touched), so the filter's proof still covers every
later admission (see :mod:`privml.accounting.filter`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .._canonical import utcnow
from ..audit import AuditLog
from ..exceptions import ConfigurationError, NotFoundError
from ..storage.engine import Tx, transaction
from ._charging import charge_from_row, same_seq
from ._spend import spent
from ._store import (
    DatasetRow,
    encode_curve,
    event_rows,
    events_of,
    find_request,
    lock_dataset,
    recompute_states,
    scopes_of,
    update_event,
)
from .composition import Tally, rdp_curve
from .events import PrivacyEvent
from .filter import filter_figure
from .records import Charge

__all__ = ["not_above", "release", "settle"]


def not_above(actual: PrivacyEvent, planned: PrivacyEvent) -> str | None:
    """Why ``actual`` may cost more than ``planned`` (None when it cannot).

    Each accepted case is a genuine dominance: more noise, a lower sampling
    rate, fewer steps or smaller (ε, δ) never increase any privacy loss.
    """
    if actual.kind != planned.kind:
        return f"a {planned.kind} reservation cannot settle as {actual.kind}"
    a, p = actual.params, planned.params
    if actual.kind == "laplace" and a["epsilon"] > p["epsilon"]:
        return f"ε={a['epsilon']:g} exceeds the reserved ε={p['epsilon']:g}"
    if actual.kind in ("gaussian", "dp_sgd") and a["noise_multiplier"] < p["noise_multiplier"]:
        return (
            f"noise multiplier {a['noise_multiplier']:g} is below the reserved "
            f"{p['noise_multiplier']:g}"
        )
    if actual.kind == "dp_sgd":
        if a["sample_rate"] > p["sample_rate"]:
            return f"sample rate {a['sample_rate']:g} exceeds the reserved {p['sample_rate']:g}"
        if a["steps"] > p["steps"]:
            return f"{a['steps']} steps exceed the {p['steps']} reserved"
    if actual.kind == "generic" and (a["epsilon"] > p["epsilon"] or a["delta"] > p["delta"]):
        return f"(ε, δ)=({a['epsilon']:g}, {a['delta']:g}) exceeds the reserved one"
    return None


def _reservation(tx: Tx, request_id: str) -> tuple[Any, DatasetRow]:
    row = find_request(tx.conn, request_id)
    if row is None:
        raise NotFoundError(f"no reservation with request id {request_id!r}")
    ds = lock_dataset(tx.conn, row.dataset)
    if row.planned is None:
        raise ConfigurationError(f"request {request_id!r} is a charge, not a reservation")
    return row, ds


def _to_charge(row: Any, ds: DatasetRow, seq: int) -> Charge:
    charge = charge_from_row(row, ds)
    return Charge(**{**charge.__dict__, "audit_seq": seq})


def _update(tx: Tx, row: Any, ds: DatasetRow, seq: int, **values: Any) -> Any:
    update_event(tx.conn, row.id, {"updated": utcnow(), "audit_seq": seq, **values})
    recompute_states(tx.conn, ds.name, scopes_of(row.principal, row.purpose))
    return find_request(tx.conn, row.request_id)


def settle(engine: sa.Engine, audit: AuditLog, request_id: str, event: PrivacyEvent) -> Charge:
    """Commit reservation ``request_id`` at the actual cost ``event``."""
    if not isinstance(event, PrivacyEvent):
        raise ConfigurationError("event= must be a privml.accounting.PrivacyEvent")
    error: ConfigurationError | None = None
    with transaction(engine) as tx:
        row, ds = _reservation(tx, request_id)
        if row.status == "committed" and row.event == event.to_json():
            return _to_charge(row, ds, int(row.audit_seq))  # a retried settle
        if row.status != "reserved":
            raise ConfigurationError(
                f"reservation {request_id!r} is already {row.status}; reserve again"
            )
        planned = PrivacyEvent.from_json(row.planned)
        reason = not_above(event, planned)
        common = {"request_id": request_id, "planned": planned.to_dict(), "event": event.to_dict()}
        if reason is not None:
            error = ConfigurationError(f"a settle may only lower a reservation: {reason}")
            audit.append(
                tx,
                principal=row.principal,
                purpose=row.purpose,
                action="ledger.settle",
                outcome="refused",
                dataset=ds.name,
                version=row.version,
                details={**common, "reason": str(error)},
            )
        else:
            tally, _ = spent(tx.conn, ds.name, ("",))
            others = [r for r in event_rows(tx.conn, ds.name) if r.id != row.id]
            before = filter_figure(tally, ds.budget.delta)
            after = filter_figure(Tally.of([*events_of(others), event]), ds.budget.delta)
            # The row first, then its audit entry: it records the ledger heads it moved.
            seq = audit.next_seq(tx)
            row = _update(
                tx,
                row,
                ds,
                seq,
                event=event.to_json(),
                status="committed",
                rdp=encode_curve(rdp_curve(event)),
                pure_epsilon=event.pure_epsilon,
                epsilon_after=after.epsilon,
                method=after.method,
                accountant=after.accountant,
                discretization=None,
            )
            logged = audit.append(
                tx,
                principal=row.principal,
                purpose=row.purpose,
                action="ledger.settle",
                outcome="ok",
                dataset=ds.name,
                version=row.version,
                details={
                    **common,
                    "epsilon_before": before.epsilon,
                    "epsilon_after": after.epsilon,
                    "method": after.method,
                    "accountant": after.accountant,
                    "discretization": after.discretization,
                },
            )
            same_seq(seq, logged)
            return _to_charge(row, ds, seq)
    raise error


def release(engine: sa.Engine, audit: AuditLog, request_id: str) -> Charge:
    """Return reservation ``request_id`` unused."""
    with transaction(engine) as tx:
        row, ds = _reservation(tx, request_id)
        if row.status == "released":
            return _to_charge(row, ds, int(row.audit_seq))
        if row.status != "reserved":
            raise ConfigurationError(
                f"reservation {request_id!r} was settled; a committed charge is never refunded"
            )
        planned = PrivacyEvent.from_json(row.planned).to_dict()
        seq = audit.next_seq(tx)  # the row first: its audit entry records the heads it moved
        row = _update(tx, row, ds, seq, status="released")
        logged = audit.append(
            tx,
            principal=row.principal,
            purpose=row.purpose,
            action="ledger.release",
            outcome="ok",
            dataset=ds.name,
            version=row.version,
            details={"request_id": request_id, "planned": planned},
        )
        same_seq(seq, logged)
        return _to_charge(row, ds, seq)
