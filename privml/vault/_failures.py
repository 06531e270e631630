"""How a failed session request is described in the audit log: never with a request value.

A request's ``where=`` values (a name, a birth date) are personal data the
caller typed; error messages can quote them (privml's own are written not to,
but a library underneath may). So the audit entry of a failure records the
exception's type, and its message only when the message quotes none of the
request's values; messages of exceptions that are not privml's own are never
recorded (their text is not under privml's control).

An exception is audited once: whoever writes its entry marks it, and the
request scope around it (``Session._request``) writes one only if nobody did.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from ..exceptions import PrivmlError
from ..policy._model import Predicate

__all__ = ["WITHHELD", "is_audited", "mark_audited", "request_values", "safe_message"]

WITHHELD = "(message withheld from the log: it quoted a value of the request)"
_MARK = "_privml_audited"


def mark_audited(err: BaseException) -> None:
    """Record that ``err`` has its audit entry."""
    with contextlib.suppress(AttributeError):  # exceptions without a __dict__
        setattr(err, _MARK, True)


def is_audited(err: BaseException) -> bool:
    """Whether ``err`` already has its audit entry."""
    return bool(getattr(err, _MARK, False))


def request_values(where: Any) -> list[Any]:
    """The values a ``where=`` argument holds, however malformed it is.

    Predicates and mappings give their ``value``; ``(column, op, value)``
    triples their third item; anything else is walked whole (all of it may be
    a value when the shape is not understood).
    """
    if where is None:
        return []
    if isinstance(where, Predicate):
        return [where.value]
    if isinstance(where, Mapping):
        return [where.get("value"), *(() if "value" in where else where.values())]
    if isinstance(where, str | bytes) or not isinstance(where, Iterable):
        return [where]
    items = list(where)
    if len(items) == 3 and isinstance(items[1], str) and not _nested(items[0]):
        return [items[2]]
    return [v for item in items for v in request_values(item)]


def safe_message(err: BaseException, values: Iterable[Any]) -> str | None:
    """``str(err)`` if it is privml's own and quotes none of ``values``; else a fixed text."""
    if not isinstance(err, PrivmlError):
        return None
    message = str(err)
    if any(form in message for value in values for form in _forms(value)):
        return WITHHELD
    return message


def _nested(item: Any) -> bool:
    return isinstance(item, Predicate | Mapping) or (
        isinstance(item, Iterable) and not isinstance(item, str | bytes)
    )


def _forms(value: Any) -> set[str]:
    """The ways ``value`` could appear in a message."""
    if value is None:
        return set()
    if isinstance(value, str | bytes | int | float | dt.date):
        forms = {str(value), repr(value)}
    elif isinstance(value, Mapping):
        forms = {f for v in value.values() for f in _forms(v)}
    elif isinstance(value, Iterable):
        forms = {f for v in value for f in _forms(v)}
    else:
        forms = {str(value), repr(value)}
    return {f for f in forms if f.strip()}
