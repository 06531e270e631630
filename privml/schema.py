"""Schemas: what each column is, its bounds or categories, and how it is protected.

A schema is declared, never taken from the data: bounds and categories feed
differential privacy (sensitivity) and must not depend on the records
themselves. :meth:`Schema.infer` only *proposes* one for you to review.

Examples
--------
>>> import pandas as pd
>>> schema = Schema({
...     "patient": Field.identifier(),
...     "age": Field.integer(bounds=(0, 120), category="demographic"),
...     "sex": Field.categorical(categories=["F", "M"], category="demographic"),
...     "glucose": Field.numeric(bounds=(0.0, 500.0), category="health"),
...     "outcome": Field.categorical(categories=[0, 1], target=True),
... })
>>> schema.names
('patient', 'age', 'sex', 'glucose', 'outcome')
>>> schema["glucose"].bounds
(0.0, 500.0)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._canonical import canonical_json
from .exceptions import ConfigurationError, SchemaError, SchemaViolation

__all__ = ["Field", "Kind", "Schema"]

Kind = Literal["identifier", "numeric", "integer", "categorical", "text", "datetime"]
Category = str | int | float | bool
_SHOWN_ROWS = 5


@dataclass(frozen=True)
class Field:
    """One column of a schema. Build it with a constructor: ``Field.numeric(bounds=...)``.

    Parameters
    ----------
    kind : str
        ``"identifier"``, ``"numeric"``, ``"integer"``, ``"categorical"``,
        ``"text"`` or ``"datetime"``.
    sensitive : bool
        Encrypted at rest under its own data key (default ``True``).
    category : str, optional
        A tag such as ``"health"`` or ``"demographic"`` that policies can select.
    target : bool
        Marks the label column of a supervised task.
    nullable : bool
        Whether missing values are allowed (default ``False``).
    bounds : tuple of float, optional
        ``(low, high)`` for numeric and integer fields; required for them.
    categories : tuple, optional
        The allowed values of a categorical field; required for it.
    pseudonymize : bool
        For identifiers: store a keyed pseudonym (HMAC-SHA256 under a
        per-dataset key) instead of the value. Default ``True``.
    """

    kind: Kind
    sensitive: bool = True
    category: str | None = None
    target: bool = False
    nullable: bool = False
    bounds: tuple[float, float] | None = None
    categories: tuple[Category, ...] | None = None
    pseudonymize: bool = False

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def identifier(
        cls,
        *,
        pseudonymize: bool = True,
        sensitive: bool = True,
        category: str | None = None,
    ) -> Field:
        """A record identifier (patient id, employee number), stored as a keyed pseudonym.

        Pseudonyms are equal for equal identifiers within a dataset, so joins
        and de-duplication still work, but reveal nothing without the vault key.
        """
        return cls("identifier", sensitive=sensitive, category=category, pseudonymize=pseudonymize)

    @classmethod
    def numeric(
        cls,
        *,
        bounds: tuple[float, float],
        sensitive: bool = True,
        category: str | None = None,
        target: bool = False,
        nullable: bool = False,
    ) -> Field:
        """A real-valued column; ``bounds=(low, high)`` is required and is public knowledge."""
        return cls(
            "numeric",
            sensitive=sensitive,
            category=category,
            target=target,
            nullable=nullable,
            bounds=_check_bounds(bounds),
        )

    @classmethod
    def integer(
        cls,
        *,
        bounds: tuple[int, int],
        sensitive: bool = True,
        category: str | None = None,
        target: bool = False,
        nullable: bool = False,
    ) -> Field:
        """An integer column; ``bounds=(low, high)`` is required."""
        lo, hi = _check_bounds(bounds)
        if not (float(lo).is_integer() and float(hi).is_integer()):
            raise ConfigurationError(f"integer bounds must be whole numbers, got {bounds!r}")
        return cls(
            "integer",
            sensitive=sensitive,
            category=category,
            target=target,
            nullable=nullable,
            bounds=(int(lo), int(hi)),
        )

    @classmethod
    def categorical(
        cls,
        *,
        categories: Sequence[Category],
        sensitive: bool = True,
        category: str | None = None,
        target: bool = False,
        nullable: bool = False,
    ) -> Field:
        """A column whose values come from a declared, public list of ``categories``."""
        cats = tuple(_plain(c) for c in categories)
        if not cats:
            raise ConfigurationError("categorical field needs at least one category")
        if len(set(cats)) != len(cats):
            raise ConfigurationError(f"categories must be distinct, got {list(cats)!r}")
        return cls(
            "categorical",
            sensitive=sensitive,
            category=category,
            target=target,
            nullable=nullable,
            categories=cats,
        )

    @classmethod
    def text(
        cls, *, sensitive: bool = True, category: str | None = None, nullable: bool = False
    ) -> Field:
        """Free text (notes, addresses). Never used as a model feature directly."""
        return cls("text", sensitive=sensitive, category=category, nullable=nullable)

    @classmethod
    def datetime(
        cls, *, sensitive: bool = True, category: str | None = None, nullable: bool = False
    ) -> Field:
        """A timestamp, stored as microseconds; time-zone-aware values are converted to UTC."""
        return cls("datetime", sensitive=sensitive, category=category, nullable=nullable)

    # -- serialization ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description of the field."""
        out: dict[str, Any] = {"kind": self.kind, "sensitive": self.sensitive}
        for key in ("category", "bounds", "categories"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        for key in ("target", "nullable", "pseudonymize"):
            if getattr(self, key):
                out[key] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Field:
        """Inverse of :meth:`to_dict`."""
        kwargs = dict(data)
        for key in ("bounds", "categories"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class Schema(Mapping[str, Field]):
    """An ordered mapping of column name to :class:`Field`.

    Parameters
    ----------
    fields : mapping of str to Field
        Columns in storage order.
    """

    fields: Mapping[str, Field] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fields = dict(self.fields)
        if not fields:
            raise ConfigurationError("a schema needs at least one field")
        for name, f in fields.items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"column names must be non-empty strings, got {name!r}")
            if not isinstance(f, Field):
                raise ConfigurationError(
                    f"column {name!r}: expected a Field (e.g. Field.numeric(bounds=...)), "
                    f"got {type(f).__name__}"
                )
        object.__setattr__(self, "fields", fields)

    def __getitem__(self, name: str) -> Field:
        try:
            return self.fields[name]
        except KeyError:
            raise ConfigurationError(
                f"no column {name!r} in the schema; columns are {list(self.fields)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        """Column names in order."""
        return tuple(self.fields)

    @property
    def sensitive(self) -> tuple[str, ...]:
        """Names of the columns encrypted at rest."""
        return tuple(n for n, f in self.fields.items() if f.sensitive)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description (order preserved as a list)."""
        return {"fields": [{"name": n, **f.to_dict()} for n, f in self.fields.items()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        """Inverse of :meth:`to_dict`."""
        fields = {}
        for item in data["fields"]:
            item = dict(item)
            name = item.pop("name")
            fields[name] = Field.from_dict(item)
        return cls(fields)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON description, in hex."""
        return hashlib.sha256(canonical_json(self.to_dict())).hexdigest()

    # -- proposing a schema -----------------------------------------------------------
    @classmethod
    def infer(cls, df: pd.DataFrame, *, max_categories: int = 20) -> Schema:
        """Propose a schema from ``df`` for you to review. Never register it unreviewed.

        Bounds and categories proposed here come *from the data*, and data-derived
        bounds leak information in differentially private releases. Replace them
        with domain knowledge (ages 0-120, not the observed 18-93) before use.

        Examples
        --------
        >>> df = pd.DataFrame({"age": [34, 51], "smoker": ["y", "n"], "bmi": [21.5, 30.1]})
        >>> for name, f in Schema.infer(df).items():
        ...     print(name, f.kind, f.bounds or f.categories)
        age integer (34, 51)
        smoker categorical ('n', 'y')
        bmi numeric (21.5, 30.1)
        """
        fields: dict[str, Field] = {}
        for name in df.columns:
            s = df[name]
            nullable = bool(s.isna().any())
            if pd.api.types.is_bool_dtype(s):
                fields[name] = Field.categorical(categories=[False, True], nullable=nullable)
            elif pd.api.types.is_integer_dtype(s):
                fields[name] = Field.integer(bounds=(int(s.min()), int(s.max())), nullable=nullable)
            elif pd.api.types.is_float_dtype(s):
                fields[name] = Field.numeric(
                    bounds=(float(s.min()), float(s.max())), nullable=nullable
                )
            elif pd.api.types.is_datetime64_any_dtype(s):
                fields[name] = Field.datetime(nullable=nullable)
            elif s.nunique(dropna=True) <= max_categories:
                cats = sorted(s.dropna().unique().tolist(), key=str)
                fields[name] = Field.categorical(categories=cats, nullable=nullable)
            else:
                fields[name] = Field.text(nullable=nullable)
        return cls(fields)

    # -- validation -------------------------------------------------------------------
    def validate(
        self, df: pd.DataFrame, *, on_violation: Literal["reject", "clip"] = "reject"
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        """Check ``df`` strictly and return it in canonical dtypes.

        Parameters
        ----------
        df : pandas.DataFrame
            The data, with exactly the schema's columns (in any order).
        on_violation : {"reject", "clip"}
            With ``"clip"``, numeric values outside their bounds are clipped into
            them (and counted) instead of rejected. Every other problem rejects.

        Returns
        -------
        frame : pandas.DataFrame
            Columns in schema order, canonical dtypes, a fresh RangeIndex.
        clipped : dict of str to int
            Number of clipped values per column (empty unless ``on_violation="clip"``).

        Raises
        ------
        SchemaError
            Listing every (column, kind of problem) with the count and the first rows.

        Examples
        --------
        >>> schema = Schema({"age": Field.integer(bounds=(0, 120))})
        >>> schema.validate(pd.DataFrame({"age": [30, 130, -1]}))
        Traceback (most recent call last):
        ...
        privml.exceptions.SchemaError: data does not match the schema (1 problem(s)):
          - column 'age': bounds in 2 row(s) (rows 1, 2): values must lie in [0, 120]
        Pass on_violation="clip" to clip out-of-bounds numbers instead.
        >>> frame, clipped = schema.validate(pd.DataFrame({"age": [30, 130]}), on_violation="clip")
        >>> frame["age"].tolist(), clipped
        ([30, 120], {'age': 1})
        """
        if on_violation not in ("reject", "clip"):
            raise ConfigurationError(
                f"on_violation must be 'reject' or 'clip', got {on_violation!r}"
            )
        if not isinstance(df, pd.DataFrame):
            raise ConfigurationError(f"expected a pandas DataFrame, got {type(df).__name__}")
        violations: list[SchemaViolation] = []
        names = [str(c) for c in df.columns]
        for name in self.names:
            if name not in names:
                violations.append(
                    SchemaViolation(name, "missing_column", 0, (), "declared but not in the data")
                )
        for name in names:
            if name not in self.fields:
                violations.append(
                    SchemaViolation(
                        name, "unexpected_column", 0, (), "not in the schema; declare it or drop it"
                    )
                )
        if len(set(names)) != len(names):
            raise ConfigurationError("the data has duplicate column names")
        out: dict[str, Any] = {}
        clipped: dict[str, int] = {}
        for name, f in self.fields.items():
            if name not in names:
                continue
            col = df[name].reset_index(drop=True)
            converted, found, n_clipped = _convert(col, name, f, clip=on_violation == "clip")
            violations.extend(found)
            out[name] = converted
            if n_clipped:
                clipped[name] = n_clipped
        if violations:
            hint = ""
            if on_violation == "reject" and any(v.kind == "bounds" for v in violations):
                hint = 'Pass on_violation="clip" to clip out-of-bounds numbers instead.'
            raise SchemaError(violations, hint)
        return pd.DataFrame(out, index=pd.RangeIndex(len(df)), copy=False), clipped

    def coerce(self, df: pd.DataFrame) -> pd.DataFrame:
        """Give stored data back its canonical dtypes (after a Parquet round trip)."""
        out = {}
        for name in df.columns:
            f = self.fields[name]
            out[name] = _canonical_dtype(df[name], f)
        return pd.DataFrame(out, index=df.index, copy=False)


# --- helpers -------------------------------------------------------------------------------
def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = bounds
        lo_f, hi_f = float(lo), float(hi)
    except (TypeError, ValueError):
        raise ConfigurationError(f"bounds must be a pair (low, high), got {bounds!r}") from None
    if not (math.isfinite(lo_f) and math.isfinite(hi_f) and lo_f < hi_f):
        raise ConfigurationError(f"bounds must be finite with low < high, got {bounds!r}")
    return (lo_f, hi_f)


def _plain(value: Any) -> Category:
    """Turn numpy scalars into plain Python values so categories serialize to JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, str | int | float | bool):
        raise ConfigurationError(f"categories must be str, int, float or bool, got {value!r}")
    return value


def _violation(name: str, kind: str, mask: np.ndarray, detail: str) -> SchemaViolation:
    rows = np.flatnonzero(mask)
    return SchemaViolation(
        name, kind, int(rows.size), tuple(int(r) for r in rows[:_SHOWN_ROWS]), detail
    )


def _convert(
    col: pd.Series, name: str, f: Field, *, clip: bool
) -> tuple[pd.Series, list[SchemaViolation], int]:
    """Convert one column to its canonical dtype, collecting violations."""
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
        return _canonical_dtype(col, f), found, 0
    if f.kind in ("text", "identifier"):
        if pd.api.types.is_string_dtype(col) and not pd.api.types.is_object_dtype(col):
            return _canonical_dtype(col, f), found, 0  # a pandas string dtype holds only str
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
        if f.kind == "identifier" and pd.api.types.infer_dtype(obj, skipna=True) != "string":
            obj = obj.map(str, na_action="ignore")
        return _canonical_dtype(obj, f), found, 0
    if pd.api.types.is_datetime64_any_dtype(col):
        return _canonical_dtype(col, f), found, 0
    obj = col.astype(object)
    parsed = pd.to_datetime(obj, errors="coerce", utc=True, format="ISO8601")
    wrong = ~null & parsed.isna().to_numpy()
    if wrong.any():
        found.append(_violation(name, "dtype", wrong, "expected timestamps (ISO 8601)"))
        return obj, found, 0
    return _canonical_dtype(parsed, f), found, 0


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
    if col.dtype.kind in "iu":  # plain numpy integers: no nulls, no fractions, no copies
        values: np.ndarray = col.to_numpy()
        valid = np.ones(len(col), dtype=bool)
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
    outside = valid & ((values < lo) | (values > hi) | (values != values))
    n_clipped = 0
    if outside.any():
        if clip:
            n_clipped = int(outside.sum())
            values = np.where(outside, np.clip(values, lo, hi), values)
        else:
            found.append(
                _violation(name, "bounds", outside, f"values must lie in {_fmt(f.bounds)}")
            )
    if found:
        return col, found, n_clipped
    if f.kind == "numeric":
        return pd.Series(values, dtype="float64", copy=False), found, n_clipped
    if f.nullable:
        return pd.Series(pd.array(values, dtype="Int64")), found, n_clipped
    return pd.Series(values.astype("int64", copy=False), copy=False), found, n_clipped


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


def _canonical_dtype(col: pd.Series, f: Field) -> pd.Series:
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
