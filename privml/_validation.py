"""Strict validation of a column against its field, and canonical dtypes."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._array_fields import ARRAY_KINDS, stored_array
from ._array_intake import convert_array
from .exceptions import ConfigurationError, SchemaViolation

if TYPE_CHECKING:
    from .schema import Field

__all__ = [
    "MAX_TEXT_CHARS",
    "canonical_dtype",
    "check_name",
    "check_request",
    "column_problems",
    "convert",
    "is_unicode",
    "printable",
]

_SHOWN_ROWS = 5
#: The longest text or identifier value accepted, in characters (1 Mi).
MAX_TEXT_CHARS = 1 << 20


def is_unicode(text: str) -> bool:
    """True when ``text`` can be stored: valid Unicode, no lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(name: object) -> str:
    """A column name as it can safely appear in messages and the audit log."""
    if isinstance(name, str):
        return repr(name) if is_unicode(name) else ascii(name)
    return f"a value of type {type(name).__name__}"


#: Names that become part of a file name (datasets, models): letters, digits, ``_.-``.
_FILE_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_name(value: object, what: str, *, file_safe: bool = False) -> str:
    """Return ``value`` if it is a usable name; else refuse with the rule it breaks.

    The one check for the names a caller passes (datasets, columns, models,
    principals, purposes) before they reach a query, a file name or the audit log:
    a non-blank string of valid Unicode; with ``file_safe`` (dataset and model
    names, which name files) letters, digits, ``_``, ``.`` and ``-`` only, at most
    128 characters, not starting with ``.`` or ``-``.

    Examples
    --------
    >>> check_name("visits-2024", "dataset name", file_safe=True)
    'visits-2024'
    >>> check_name("../etc", "dataset name", file_safe=True)
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: dataset name '../etc' is not allowed: ...
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{what} must be a non-empty string, got {printable(value)}")
    if not is_unicode(value):
        raise ConfigurationError(
            f"{what} {printable(value)} is not valid Unicode (it holds a lone surrogate)"
        )
    if file_safe and not _FILE_SAFE.match(value):
        raise ConfigurationError(
            f"{what} {printable(value)} is not allowed: use letters, digits, '_', '.', '-' "
            "(at most 128 characters, not starting with '.' or '-')"
        )
    return value


def check_request(dataset: object, columns: object, version: object) -> None:
    """Refuse a malformed request (names, column list, version) before it is decided."""
    check_name(dataset, "dataset name")
    if columns is not None:
        if isinstance(columns, str) or not isinstance(columns, Sequence):
            raise ConfigurationError("columns= takes a list of names, e.g. columns=['age']")
        for column in columns:
            check_name(column, "a column name in columns=")
    if version is not None and (
        not isinstance(version, int | np.integer) or isinstance(version, bool)
    ):
        raise ConfigurationError(
            f"version= takes a version number (an int), got {printable(version)}"
        )


def column_problems(columns: Iterable[object]) -> list[SchemaViolation]:
    """Column names that are not unique, non-empty, valid Unicode strings."""
    found: list[SchemaViolation] = []
    seen: set[str] = set()
    for position, name in enumerate(columns):
        if not isinstance(name, str) or not name:
            what = "empty" if name == "" else f"of type {type(name).__name__}"
            found.append(
                SchemaViolation(
                    f"#{position}",
                    "column_name",
                    0,
                    (),
                    f"column names must be non-empty strings, this one is {what}",
                )
            )
        elif not is_unicode(name):
            found.append(
                SchemaViolation(
                    f"#{position}",
                    "column_name",
                    0,
                    (),
                    "the name is not valid Unicode (a lone surrogate); fix the source's encoding",
                )
            )
        elif name in seen:
            found.append(
                SchemaViolation(name, "duplicate_column", 0, (), "the name appears more than once")
            )
        else:
            seen.add(name)
    return found


def _violation(name: str, kind: str, mask: np.ndarray, detail: str) -> SchemaViolation:
    rows = np.flatnonzero(mask)
    return SchemaViolation(
        name, kind, int(rows.size), tuple(int(r) for r in rows[:_SHOWN_ROWS]), detail
    )


def convert(
    col: pd.Series, name: str, f: Field, *, clip: bool
) -> tuple[pd.Series, list[SchemaViolation], int]:
    """Convert one column to its canonical dtype, collecting violations."""
    if f.kind in ARRAY_KINDS:
        return convert_array(col, name, f, clip=clip)
    found: list[SchemaViolation] = []
    null = col.isna().to_numpy()
    if null.any() and not f.nullable:
        found.append(_violation(name, "null", null, "missing values are not allowed"))
    if f.kind in ("numeric", "integer"):
        return _convert_number(col, name, f, null, found, clip=clip)
    if f.kind == "categorical":
        allowed = list(f.categories or ())
        if isinstance(col.dtype, pd.CategoricalDtype):
            # Check the few categories, not the million values.
            known = np.array([c in allowed for c in col.cat.categories] + [True])
            wrong = ~null & ~known[col.cat.codes.to_numpy()]
        else:
            wrong = ~null & ~col.isin(allowed).to_numpy()
        if wrong.any():
            found.append(_violation(name, "category", wrong, f"allowed values are {allowed}"))
            return col, found, 0
        return canonical_dtype(col, f), found, 0
    if f.kind in ("text", "identifier"):
        if pd.api.types.is_string_dtype(col) and not pd.api.types.is_object_dtype(col):
            # A pandas string dtype holds only valid Unicode str; only the length is left.
            if _bytes_at_most(col, MAX_TEXT_CHARS):  # no value has more characters either
                return canonical_dtype(col, f), found, 0
            long = (col.str.len() > MAX_TEXT_CHARS).fillna(False).to_numpy(dtype=bool)
            if long.any():
                found.append(_violation(name, "too_long", long, _TOO_LONG))
                return col, found, 0
            return canonical_dtype(col, f), found, 0
        obj = col.astype(object)
        if pd.api.types.infer_dtype(obj, skipna=True) in ("string", "empty"):
            is_ok = np.ones(len(col), dtype=bool)
        else:
            kinds: tuple[type, ...] = (str, int, np.integer) if f.kind == "identifier" else (str,)
            is_ok = np.fromiter(
                (isinstance(v, kinds) and not isinstance(v, bool | np.bool_) for v in obj),
                dtype=bool,
                count=len(obj),
            )
        wrong = ~null & ~is_ok
        if wrong.any():
            expected = "strings or integers" if f.kind == "identifier" else "strings"
            found.append(_violation(name, "dtype", wrong, f"expected {expected}, got {col.dtype}"))
            return obj, found, 0
        found.extend(_text_problems(obj, name, null))
        if found:
            return obj, found, 0
        if f.kind == "identifier" and pd.api.types.infer_dtype(obj, skipna=True) != "string":
            obj = obj.map(str, na_action="ignore")
        return canonical_dtype(obj, f), found, 0
    if pd.api.types.is_datetime64_any_dtype(col):
        return canonical_dtype(col, f), found, 0
    obj = col.astype(object)
    # Only text and timestamps can be timestamps: numbers would be read as epochs.
    kinds = (str, dt.datetime, dt.date, np.datetime64)
    parseable = np.fromiter(
        (isinstance(v, kinds) and (not isinstance(v, str) or is_unicode(v)) for v in obj),
        dtype=bool,
        count=len(obj),
    )
    parsed = pd.to_datetime(obj.where(parseable), errors="coerce", utc=True, format="ISO8601")
    wrong = ~null & parsed.isna().to_numpy()
    if wrong.any():
        found.append(_violation(name, "dtype", wrong, "expected timestamps (ISO 8601)"))
        return obj, found, 0
    return canonical_dtype(parsed, f), found, 0


def _bytes_at_most(col: pd.Series, limit: int) -> bool:
    """Whether an Arrow-backed string column's longest value is at most ``limit`` bytes
    of UTF-8 (read from its offsets, no character counted); False if not Arrow-backed."""
    if not isinstance(col.dtype, pd.StringDtype) or col.dtype.storage != "pyarrow":
        return False
    import pyarrow as pa  # Arrow-backed data: pyarrow is loaded already
    import pyarrow.compute as pc

    longest = pc.max(pc.binary_length(pa.array(col.array))).as_py()
    return longest is None or longest <= limit


_TOO_LONG = f"values may hold at most {MAX_TEXT_CHARS:,} characters"


def _text_problems(obj: pd.Series, name: str, null: np.ndarray) -> list[SchemaViolation]:
    """Values that cannot be stored as text: not valid Unicode, or too long."""
    found = []
    bad = np.fromiter(
        (isinstance(v, str) and not is_unicode(v) for v in obj), dtype=bool, count=len(obj)
    )
    if bad.any():
        detail = "not valid Unicode (a lone surrogate); fix the source's encoding"
        found.append(_violation(name, "encoding", bad & ~null, detail))
    long = np.fromiter(
        (isinstance(v, str) and len(v) > MAX_TEXT_CHARS for v in obj), dtype=bool, count=len(obj)
    )
    if long.any():
        found.append(_violation(name, "too_long", long, _TOO_LONG))
    return found


def _convert_number(
    col: pd.Series,
    name: str,
    f: Field,
    null: np.ndarray,
    found: list[SchemaViolation],
    *,
    clip: bool,
) -> tuple[pd.Series, list[SchemaViolation], int]:
    lo, hi = f.bounds or (-np.inf, np.inf)
    integers = col.dtype.kind in "iu"
    if integers:  # NumPy or nullable integers: exact, no fractions, no copies of NumPy ones
        values: np.ndarray = _integer_values(col)
        valid = ~null
    else:
        values, not_number = _as_float(col)
        if not_number.any():
            found.append(
                _violation(name, "dtype", not_number, f"expected numbers, got {col.dtype}")
            )
        valid = ~null & ~not_number
        if f.kind == "integer":
            fractional = valid & np.isfinite(values) & (values != np.round(values))
            if fractional.any():
                found.append(_violation(name, "dtype", fractional, "expected whole numbers"))
            valid &= ~fractional
    outside = None if _all_within(values, valid, lo, hi) else _outside(values, valid, lo, hi)
    n_clipped = 0
    if outside is not None and outside.any():
        if clip:
            n_clipped = int(outside.sum())
            values = np.where(outside, np.clip(values, lo, hi), values)
        else:
            found.append(
                _violation(name, "bounds", outside, f"values must lie in {_fmt(f.bounds)}")
            )
    if found:
        return col, found, n_clipped
    if integers and null.any():  # a nullable integer column's nulls (0 in ``values``)
        return _with_nulls(values, null, numeric=f.kind == "numeric"), found, n_clipped
    if f.kind == "numeric":
        return pd.Series(values, dtype="float64", copy=False), found, n_clipped
    if f.nullable:
        return pd.Series(pd.array(values, dtype="Int64")), found, n_clipped
    return pd.Series(values.astype("int64", copy=False), copy=False), found, n_clipped


def _integer_values(col: pd.Series) -> np.ndarray:
    """An integer column's values as NumPy integers (a nullable column's nulls as 0)."""
    dtype = col.dtype if isinstance(col.dtype, np.dtype) else col.dtype.numpy_dtype
    values: np.ndarray = col.to_numpy(dtype=dtype, na_value=0)
    return values


def _with_nulls(values: np.ndarray, null: np.ndarray, *, numeric: bool) -> pd.Series:
    """Integer ``values`` with their ``null`` rows missing: float64 with NaN for a numeric
    field, nullable Int64 for an integer one."""
    if numeric:
        floats = values.astype("float64")
        floats[null] = np.nan
        return pd.Series(floats, copy=False)
    return pd.Series(pd.arrays.IntegerArray(values.astype("int64"), null.copy()))


def _all_within(values: np.ndarray, valid: np.ndarray, lo: float, hi: float) -> bool:
    """Whether every value lies in [lo, hi], from the column's minimum and maximum alone.

    Only for a column whose every value is a number (no null, no text): then its
    extremes within bounds mean every value is. A NaN makes both comparisons false,
    and a column with nulls is left to :func:`_outside`, which finds the rows.
    """
    if values.size == 0:
        return True
    if not valid.all():
        return False
    return bool(lo <= values.min() and values.max() <= hi)


def _outside(values: np.ndarray, valid: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Which valid values lie outside [lo, hi] (NaN included), row by row."""
    outside: np.ndarray = valid & ((values < lo) | (values > hi) | (values != values))
    return outside


def _as_float(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return (float64 values, mask of values that are not numbers)."""
    if pd.api.types.is_bool_dtype(col):
        return np.full(len(col), np.nan), np.ones(len(col), dtype=bool)
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(col), dtype=bool)
    obj = col.astype(object)
    is_num = np.fromiter(
        (
            isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
            for v in obj
        ),
        dtype=bool,
        count=len(obj),
    )
    values = pd.to_numeric(obj.where(is_num), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )
    return values, ~is_num & obj.notna().to_numpy()


def canonical_dtype(col: pd.Series, f: Field) -> pd.Series:
    if f.kind in ARRAY_KINDS:
        return stored_array(col, f)
    if f.kind == "numeric":
        return col.astype("float64")
    if f.kind == "integer":
        return col.astype("Int64" if f.nullable else "int64")
    if f.kind == "categorical":
        dtype = pd.CategoricalDtype(list(f.categories or ()))
        if isinstance(col.dtype, pd.CategoricalDtype):
            return col.cat.set_categories(dtype.categories)
        return col.astype(object).astype(dtype)
    if f.kind in ("text", "identifier"):
        return col.astype("str")
    if getattr(col.dtype, "tz", None) is not None:
        col = col.dt.tz_convert("UTC").dt.tz_localize(None)
    return col.astype("datetime64[us]")


def _fmt(bounds: tuple[float, float] | None) -> str:
    lo, hi = bounds or (0, 0)
    return f"[{lo:g}, {hi:g}]"
