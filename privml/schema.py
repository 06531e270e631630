"""Schemas: what each column is, its bounds or categories, and how it is protected.

A schema is declared, never taken from the data: bounds and categories feed
differential privacy (sensitivity) and must not depend on the records
themselves. :meth:`Schema.infer` only *proposes* one for you to review.

Examples
--------
>>> import pandas as pd
>>> schema = Schema({
...     "patient": Field.identifier(),
...     "age": Field.integer(bounds=(0, 120), tags="demographic"),
...     "sex": Field.categorical(categories=["F", "M"], tags="demographic"),
...     "glucose": Field.numeric(bounds=(0.0, 500.0), tags=["health", "lab"]),
...     "outcome": Field.categorical(categories=[0, 1], target=True),
... })
>>> schema.names
('patient', 'age', 'sex', 'glucose', 'outcome')
>>> schema["glucose"].bounds, schema["glucose"].tags
((0.0, 500.0), ('health', 'lab'))
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._canonical import canonical_json
from ._renamed import renamed_keyword
from ._validation import canonical_dtype, column_problems, convert, is_unicode, printable
from .exceptions import ConfigurationError, SchemaError, SchemaViolation, UnknownColumnError
from .masks import Mask, check_mask, default_mask

__all__ = ["Field", "Kind", "Schema"]

Kind = Literal["identifier", "numeric", "integer", "categorical", "text", "datetime"]
Category = str | int | float | bool


_tags_keyword = renamed_keyword(
    "category",
    "a field's policy tags are tags=, e.g. tags='health' or tags=['health', 'lab'] "
    "(categories= stays the list of a categorical field's values)",
)


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
    tags : tuple of str
        Policy tags such as ``"health"`` or ``"demographic"``: a grant or deny
        with ``tags=[...]`` selects the fields that carry any of them. The
        constructors take one tag as a string or several as a list.
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
    mask : Mask, optional
        What principals with ``masked`` access see; a per-kind default otherwise
        (see :mod:`privml.masks`).
    """

    kind: Kind
    sensitive: bool = True
    tags: tuple[str, ...] = ()
    target: bool = False
    nullable: bool = False
    bounds: tuple[float, float] | None = None
    categories: tuple[Category, ...] | None = None
    pseudonymize: bool = False
    mask: Mask | None = None
    domain: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", _tags(self.tags))
        if self.mask is not None:  # every way of making a field, stored schemas included
            check_mask(self.mask, self.kind, bounds=self.bounds, categories=self.categories)

    @property
    def effective_mask(self) -> Mask:
        """The mask applied in ``masked`` mode: the declared one or the kind's default.

        Never the identity on the field's domain (see :func:`privml.masks.check_mask`).
        """
        return self.mask or default_mask(self.kind, self.bounds)

    def mask_values(self, values: pd.Series) -> pd.Series:
        """What ``masked`` mode shows of ``values``: the effective mask, over this domain.

        Examples
        --------
        >>> Field.integer(bounds=(0, 15)).mask_values(pd.Series([0, 1, 7, 15])).tolist()
        [0, 0, 6, 14]
        """
        return self.effective_mask.apply(values, bounds=self.bounds, integer=self.kind == "integer")

    # -- constructors -----------------------------------------------------------------
    @classmethod
    @_tags_keyword
    def identifier(
        cls,
        *,
        pseudonymize: bool = True,
        sensitive: bool = True,
        tags: str | Sequence[str] = (),
        mask: Mask | None = None,
        domain: str | None = None,
    ) -> Field:
        """A record identifier (patient id, employee number), stored as a keyed pseudonym.

        Pseudonyms are equal for equal identifiers within a dataset, so joins
        and de-duplication still work, but reveal nothing without the vault key.
        Identifier fields of different datasets that declare the same ``domain``
        (e.g. ``domain="patient-id"``) share one pseudonym key, so the datasets
        can be joined on their pseudonyms; without a domain each dataset has its
        own key and its pseudonyms do not link to any other dataset's.
        """
        if domain is not None and not pseudonymize:
            raise ConfigurationError("domain= only applies to pseudonymized identifiers")
        return cls(
            "identifier",
            sensitive=sensitive,
            tags=_tags(tags),
            pseudonymize=pseudonymize,
            mask=mask,
            domain=domain,
        )

    @classmethod
    @_tags_keyword
    def numeric(
        cls,
        *,
        bounds: tuple[float, float],
        sensitive: bool = True,
        tags: str | Sequence[str] = (),
        target: bool = False,
        nullable: bool = False,
        mask: Mask | None = None,
    ) -> Field:
        """A real-valued column; ``bounds=(low, high)`` is required and is public knowledge."""
        return cls(
            "numeric",
            sensitive=sensitive,
            tags=_tags(tags),
            target=target,
            nullable=nullable,
            bounds=_check_bounds(bounds),
            mask=mask,
        )

    @classmethod
    @_tags_keyword
    def integer(
        cls,
        *,
        bounds: tuple[int, int],
        sensitive: bool = True,
        tags: str | Sequence[str] = (),
        target: bool = False,
        nullable: bool = False,
        mask: Mask | None = None,
    ) -> Field:
        """An integer column; ``bounds=(low, high)`` is required."""
        lo, hi = _check_bounds(bounds)
        if not (float(lo).is_integer() and float(hi).is_integer()):
            raise ConfigurationError(f"integer bounds must be whole numbers, got {bounds!r}")
        return cls(
            "integer",
            sensitive=sensitive,
            tags=_tags(tags),
            target=target,
            nullable=nullable,
            bounds=(int(lo), int(hi)),
            mask=mask,
        )

    @classmethod
    @_tags_keyword
    def categorical(
        cls,
        *,
        categories: Sequence[Category],
        sensitive: bool = True,
        tags: str | Sequence[str] = (),
        target: bool = False,
        nullable: bool = False,
        mask: Mask | None = None,
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
            tags=_tags(tags),
            target=target,
            nullable=nullable,
            categories=cats,
            mask=mask,
        )

    @classmethod
    @_tags_keyword
    def text(
        cls,
        *,
        sensitive: bool = True,
        tags: str | Sequence[str] = (),
        nullable: bool = False,
        mask: Mask | None = None,
    ) -> Field:
        """Free text (notes, addresses). Never used as a model feature directly."""
        return cls("text", sensitive=sensitive, tags=_tags(tags), nullable=nullable, mask=mask)

    @classmethod
    @_tags_keyword
    def datetime(
        cls,
        *,
        sensitive: bool = True,
        tags: str | Sequence[str] = (),
        nullable: bool = False,
        mask: Mask | None = None,
    ) -> Field:
        """A timestamp, stored as microseconds; time-zone-aware values are converted to UTC."""
        return cls("datetime", sensitive=sensitive, tags=_tags(tags), nullable=nullable, mask=mask)

    # -- serialization ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description of the field."""
        out: dict[str, Any] = {"kind": self.kind, "sensitive": self.sensitive}
        if self.tags:
            out["tags"] = list(self.tags)
        for key in ("bounds", "categories", "domain"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        for key in ("target", "nullable", "pseudonymize"):
            if getattr(self, key):
                out[key] = True
        if self.mask is not None:
            out["mask"] = self.mask.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Field:
        """Inverse of :meth:`to_dict`.

        ``"tags"`` reads as the constructors' ``tags=`` (one string is one tag). A
        stored ``"category"``, the old name, is one more tag, so no tag is lost; it
        was never checked, and one that is not a non-empty string (which no grant
        could select) is no tag, so every schema stored before the rename reads.
        """
        kwargs = dict(data)
        legacy = kwargs.pop("category", None)
        tags = _tags(kwargs.pop("tags", ()))  # refuses what is not a string or a list of them
        kwargs["tags"] = (legacy, *tags) if isinstance(legacy, str) and legacy else tags
        for key in ("bounds", "categories"):
            if key in kwargs:
                value = kwargs[key]
                if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                    raise ConfigurationError(f"{key} takes a list, got a {type(value).__name__}")
                kwargs[key] = tuple(value)
        if "mask" in kwargs:
            kwargs["mask"] = Mask.from_dict(kwargs["mask"])
        return cls(**kwargs)


@dataclass(frozen=True, eq=False)  # equality, hashing: the Mapping contract
class Schema(Mapping[str, Field]):
    """An ordered mapping of column name to :class:`Field`.

    It follows the :class:`collections.abc.Mapping` contract: ``schema[name]``
    raises :class:`~privml.exceptions.UnknownColumnError` (a ``KeyError``)
    for a column it lacks, ``get`` returns a default instead, and a schema
    equals any mapping with the same columns and fields (order aside; the
    :attr:`fingerprint` tells orders apart). Like a dict, it is unhashable.

    Parameters
    ----------
    fields : mapping of str to Field
        Columns in storage order.

    Examples
    --------
    >>> schema = Schema({"age": Field.integer(bounds=(0, 120))})
    >>> schema.get("agee") is None, "age" in schema, schema == {"age": schema["age"]}
    (True, True, True)
    >>> schema["agee"]
    Traceback (most recent call last):
    ...
    privml.exceptions.UnknownColumnError: no column 'agee' in the schema; columns are ['age']
    """

    fields: Mapping[str, Field] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fields = dict(self.fields)
        if not fields:
            raise ConfigurationError("a schema needs at least one field")
        for name, f in fields.items():
            if not isinstance(name, str) or not name or not is_unicode(name):
                raise ConfigurationError(
                    "column names must be non-empty strings of valid Unicode, "
                    f"got {printable(name)}"
                )
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
            raise UnknownColumnError(column=name, known=self.fields) from None

    def __contains__(self, name: object) -> bool:
        return name in self.fields

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
        found = column_problems(df.columns)
        if found:  # nothing else can be checked reliably
            raise SchemaError(found, "Give the data unique, non-empty string column names.")
        violations: list[SchemaViolation] = []
        names = list(df.columns)
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
        out: dict[str, Any] = {}
        clipped: dict[str, int] = {}
        for name, f in self.fields.items():
            if name not in names:
                continue
            col = df[name].reset_index(drop=True)
            converted, found, n_clipped = convert(col, name, f, clip=on_violation == "clip")
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
            out[name] = canonical_dtype(df[name], f)
        return pd.DataFrame(out, index=df.index, copy=False)


# --- helpers -------------------------------------------------------------------------------
def _tags(value: str | Iterable[str]) -> tuple[str, ...]:
    """A field's tags as a tuple of distinct strings, in the order given."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise ConfigurationError(f"tags= takes a string or a list of strings, got a {_kind(items)}")
    out = tuple(dict.fromkeys(items))
    for tag in out:
        if not isinstance(tag, str) or not tag or not is_unicode(tag):
            raise ConfigurationError(
                f"tags must be non-empty strings of valid Unicode, e.g. tags=['health']; "
                f"got a {_kind(tag)}"
            )
    return out


def _kind(value: object) -> str:
    return "empty string" if value == "" else type(value).__name__


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
        raise ConfigurationError(
            f"categories must be str, int, float or bool, got a {type(value).__name__}"
        )
    if isinstance(value, str) and not is_unicode(value):
        raise ConfigurationError(
            "categories must be valid Unicode text (one holds a lone surrogate); fix its encoding"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError("categories must be finite numbers (not NaN or infinity)")
    return value
