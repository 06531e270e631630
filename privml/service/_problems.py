"""Refusals on the wire: RFC 9457 problem details, and back into privml's exceptions.

The server turns every privml exception into ``application/problem+json``
(:func:`to_problem`); the client raises the same exception type with the same
attributes (:func:`from_problem`), so ``except BudgetExceededError as err:
err.remaining`` reads the same figure in both places. Only privml's own error
types cross (looked up by name in :mod:`privml.exceptions`); anything else
arrives as :class:`~privml.service.ServiceError`. Errors that would describe
the server's insides (an integrity failure, an unexpected exception) cross as
a generic message with an incident id, recorded in the audit log.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .. import exceptions
from ..exceptions import (
    AccessDenied,
    AuthenticationError,
    BudgetExceededError,
    DecryptionError,
    IntegrityError,
    NotFoundError,
    OptionalDependencyError,
    PrivacyAuditFailure,
    PrivmlError,
    SchemaError,
    SchemaViolation,
    VaultClosedError,
)
from ._errors import ServiceError

__all__ = ["MEDIA_TYPE", "from_problem", "status_of", "to_problem"]

MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "https://privml.dev/problems/"

#: The status of each kind of refusal, most specific first.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (AccessDenied, 403),
    (NotFoundError, 404),
    (BudgetExceededError, 409),
    (PrivacyAuditFailure, 409),  # the model's claim conflicts with what the attacks prove
    (VaultClosedError, 503),
    (OptionalDependencyError, 501),
    (IntegrityError, 500),
    (DecryptionError, 500),
    (SchemaError, 422),
    (ValueError, 422),  # ConfigurationError, InvalidKeyError: a bad argument
)

#: Errors whose message may describe the server's storage: they cross without it.
_OPAQUE = (IntegrityError, DecryptionError)


def status_of(err: BaseException) -> int:
    """The HTTP status a privml error is sent with (401 for a bad token, 500 if unknown)."""
    if isinstance(err, ServiceError):
        return err.status
    if isinstance(err, AuthenticationError):
        return 401
    for cls, status in _STATUS:
        if isinstance(err, cls):
            return status
    return 500


def to_problem(err: BaseException, *, incident: str | None = None) -> tuple[int, dict[str, Any]]:
    """The status and problem document for ``err``.

    Examples
    --------
    >>> status, body = to_problem(AccessDenied("no", dataset="d", column="age", mode="deny"))
    >>> status, body["error"], body["fields"]["column"]
    (403, 'AccessDenied', 'age')
    """
    status = status_of(err)
    name = type(err).__name__
    known = isinstance(err, PrivmlError) and getattr(exceptions, name, None) is type(err)
    if isinstance(err, ServiceError):
        known = True
    if not known or isinstance(err, _OPAQUE):
        detail = (
            "the vault could not serve this request; its operator finds the cause in the "
            f"audit log under incident {incident}"
            if incident
            else "the vault could not serve this request"
        )
        code = status if isinstance(err, _OPAQUE) else 500
        body: dict[str, Any] = {
            "type": _TYPE_BASE + ("integrity" if isinstance(err, _OPAQUE) else "internal"),
            "title": "Internal error",
            "status": code,
            "detail": detail,
            "error": name if isinstance(err, _OPAQUE) else "ServiceError",
            "fields": {"kind": "internal", "incident": incident, "status": 500},
        }
        return code, body
    state = {k: v for k, v in vars(err).items() if not k.startswith("_")}
    report = state.pop("report", None) if isinstance(err, PrivacyAuditFailure) else None
    fields = {k: _plain(v) for k, v in state.items()}
    if isinstance(err, PrivacyAuditFailure):
        from ._reports import report_to_json

        # its figures and verdict, never its ROC curves
        fields["report"] = None if report is None else report_to_json(report)
    body = {
        "type": _TYPE_BASE + _slug(name),
        "title": _title(name),
        "status": status,
        "detail": str(err),
        "error": name,
        "fields": fields,
    }
    return status, body


def from_problem(status: int, body: Any) -> PrivmlError:
    """The privml exception a problem document stands for (a ServiceError if none fits).

    Examples
    --------
    >>> err = from_problem(*to_problem(BudgetExceededError(
    ...     "over", dataset="d", scope="dataset", spent=0.9, requested=0.5, after=1.4,
    ...     remaining=0.1, total=1.0, delta=0.0, method="basic")))
    >>> type(err).__name__, err.remaining, isinstance(err, ValueError)
    ('BudgetExceededError', 0.1, True)
    """
    if not isinstance(body, dict):
        return ServiceError(
            f"the server answered {status} without a problem document", status=status,
            kind="protocol",
        )  # fmt: skip
    name = body.get("error")
    detail = str(body.get("detail") or body.get("title") or f"HTTP {status}")
    given = body.get("fields")
    fields: dict[str, Any] = given if isinstance(given, dict) else {}
    cls = getattr(exceptions, name, None) if isinstance(name, str) else None
    if name == "ServiceError" or not (isinstance(cls, type) and issubclass(cls, PrivmlError)):
        retry = fields.get("retry_after")
        return ServiceError(
            detail,
            status=status,
            kind=str(fields.get("kind") or "protocol"),
            retry_after=float(retry) if isinstance(retry, int | float) else None,
            incident=fields.get("incident") if isinstance(fields.get("incident"), str) else None,
        )
    err: PrivmlError = cls.__new__(cls)
    err.args = (detail,)
    # an error's attributes are records: a sequence travels as a list and is a tuple again
    state = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in fields.items()
        if isinstance(k, str) and not k.startswith("_")
    }
    if issubclass(cls, PrivacyAuditFailure):
        from ._reports import report_from_json

        report = fields.get("report")
        state["report"] = None if report is None else report_from_json(report)
    if cls is SchemaError or issubclass(cls, SchemaError):
        state["violations"] = tuple(_violation(v) for v in state.get("violations") or ())
    for key in ("spent", "requested", "after", "remaining", "total", "delta"):
        if key in state and state[key] is None:
            state[key] = math.inf
    err.__dict__.update(state)
    return err


def _plain(value: Any) -> Any:
    """A JSON-ready copy of an error attribute (∞ as None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _violation(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return SchemaViolation(
        column=str(value.get("column")),
        kind=str(value.get("kind")),
        count=int(value.get("count") or 0),
        rows=tuple(int(r) for r in value.get("rows") or ()),
        detail=str(value.get("detail")),
    )


def _slug(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _title(name: str) -> str:
    return _slug(name).replace("-", " ").capitalize()
