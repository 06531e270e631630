"""Checking ``where=`` conditions before any data is read or any budget is charged.

A condition's value must be of a kind its column can be compared with, so a
bad value is refused up front with a :class:`~privml.ConfigurationError` that
names the column, the operator and the expected kind, never the value itself
(it may be personal data: a name, a birth date).
"""

from __future__ import annotations

import datetime as dt
import numbers
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import ConfigurationError
from .policy import Predicate

__all__ = ["check_value", "compare_error"]

_NUMERIC = ("numeric", "integer")
_EXPECTED = {
    "numeric": "a number",
    "integer": "a number",
    "datetime": "a date or time (datetime, pandas.Timestamp or an ISO 8601 string)",
}
_SCALAR = "a string, number or boolean"


def check_value(predicate: Predicate, kind: str) -> None:
    """Refuse a condition whose value(s) cannot be compared with a ``kind`` column."""
    values = predicate.value if predicate.op in ("in", "not in") else (predicate.value,)
    for value in values:
        if not _fits(value, kind):
            got = "None (nulls never meet a condition)" if value is None else type(value).__name__
            raise ConfigurationError(
                f"row condition on column {predicate.column!r} ({predicate.op!r}) needs "
                f"{_EXPECTED.get(kind, _SCALAR)} as its value; got {got}"
            )


def compare_error(predicate: Predicate, kind: str) -> ConfigurationError:
    """The error for a condition its column's values could not be compared with."""
    return ConfigurationError(
        f"row condition on column {predicate.column!r} ({predicate.op!r}) cannot be "
        f"compared with the column's values ({kind}); pass {_EXPECTED.get(kind, _SCALAR)}"
    )


def _fits(value: Any, kind: str) -> bool:
    if value is None:
        return False
    if kind in _NUMERIC:
        return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if kind == "datetime":
        if isinstance(value, dt.date | np.datetime64):
            return True
        if isinstance(value, str):
            try:
                pd.Timestamp(value)
            except (ValueError, TypeError):
                return False
            return True
        return False
    return isinstance(value, str | numbers.Number | np.generic)
