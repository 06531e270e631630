"""Schemas: what each column is, its bounds or categories, and how it is protected.

A schema is declared, never taken from the data: bounds and categories feed
differential privacy (sensitivity) and must not depend on the records
themselves. :meth:`privml.Schema.infer` only *proposes* one for you to review.

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
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._array_fields import (
    ARRAY_KINDS,
    check_sequence_declaration,
    check_tensor_declaration,
    propose_array,
    stored_bytes,
)
from ._canonical import canonical_json
from ._renamed import renamed_keyword
from ._validation import canonical_dtype, column_problems, convert, is_unicode, printable
from .exceptions import ConfigurationError, SchemaError, SchemaViolation, UnknownColumnError
from .masks import Mask, check_mask, default_mask

__all__ = ["Field", "Kind", "Schema"]

#: A field's kind: what its values are, which decides its storage, masks and mechanisms.
Kind = Literal[
    "identifier", "numeric", "integer", "categorical", "text", "datetime", "tensor", "sequence"
]
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
        ``"text"``, ``"datetime"``, ``"tensor"`` or ``"sequence"``.
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
        (see :mod:`privml.masks`). Tensor and sequence fields have no default:
        ``masked`` reads of them are refused unless ``mask=Mask.redact()`` is declared.
    shape : tuple of int, optional
        A tensor field's shape (each value's; stored flattened in C order).
    dtype : str, optional
        A tensor field's element type (``"float32"``, ``"uint8"``, ...).
    max_length : int, optional
        A sequence field's longest sequence.
    vocabulary : int, optional
        A sequence field's vocabulary size ``V``: token ids lie in ``[0, V)``;
        ``V`` itself is the padding id (:attr:`pad_id`).
    tokens : tuple of str, optional
        A sequence field's tokens, when declared as a list: token ``i`` has id ``i``.
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
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    max_length: int | None = None
    vocabulary: int | None = None
    tokens: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", _tags(self.tags))
        _check_kind_options(self)  # every way of making a field, stored schemas included
        if self.mask is not None:
            check_mask(self.mask, self.kind, bounds=self.bounds, categories=self.categories)

    @property
    def effective_mask(self) -> Mask:
        """The mask applied in ``masked`` mode: the declared one or the kind's default.

        Never the identity on the field's domain (see :func:`privml.masks.check_mask`).
        """
        if self.mask is None and self.kind in ARRAY_KINDS:
            raise ConfigurationError(
                f"a {self.kind} field has no default mask: declare mask=Mask.redact() to let "
                "'masked' access see which values are present, or grant 'raw' access"
            )
        return self.mask or default_mask(self.kind, self.bounds)

    @property
    def pad_id(self) -> int:
        """A sequence field's padding id: its vocabulary size, one past the last token id.

        No token has it, so padding never collides with data; an embedding over a
        sequence field takes ``vocabulary + 1`` rows (``padding_idx=pad_id``).

        Examples
        --------
        >>> Field.sequence(max_length=16, vocabulary=["a", "b", "c"]).pad_id
        3
        """
        if self.kind != "sequence" or self.vocabulary is None:
            raise ConfigurationError(f"pad_id is a sequence field's; this field is {self.kind}")
        return self.vocabulary

    @property
    def stored_bytes(self) -> int:
        """About how many bytes one decrypted value takes (for bounding memory)."""
        return stored_bytes(self)

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

    @classmethod
    def tensor(
        cls,
        *,
        shape: Sequence[int],
        bounds: tuple[float, float],
        dtype: str | type | np.dtype[Any] = "float32",
        sensitive: bool = True,
        tags: str | Sequence[str] = (),
        nullable: bool = False,
        mask: Mask | None = None,
    ) -> Field:
        """A fixed-shape array per row (an image, a spectrum, an embedding).

        Every value must have exactly ``shape`` (or be its flattening in C order),
        hold finite numbers within ``bounds`` (public, declared, as for numeric
        fields) and convert to ``dtype`` without changing any value. The vault
        stores it flattened, as a Parquet fixed-size list encrypted under the
        column's own key, and reads it back as numpy arrays of ``shape``.
        DP-SGD scales it into [0, 1] by ``bounds``; no DP statistic takes it.
        Only ``Mask.redact()`` fits it, and ``masked`` reads are refused without it.

        Parameters
        ----------
        shape : sequence of int
            Each value's shape, e.g. ``(28, 28)`` or ``(3, 32, 32)``.
        bounds : (float, float)
            The declared range of every element (whole numbers for integer dtypes).
        dtype : str or numpy dtype
            ``"float32"`` (default), ``"float64"``, ``"uint8"``, ``"int8"``,
            ``"uint16"``, ``"int16"``, ``"int32"`` or ``"int64"`` (or ``np.uint8``...).
        sensitive : bool
            Encrypted at rest under its own data key (default ``True``).
        tags : str or list of str
            Policy tags.
        nullable : bool
            Whether missing values are allowed (default ``False``).
        mask : Mask, optional
            Only ``Mask.redact()``; without it ``masked`` reads of the field are refused.

        Examples
        --------
        >>> image = Field.tensor(shape=(8, 8), dtype="uint8", bounds=(0, 16))
        >>> image.shape, image.dtype, image.bounds
        ((8, 8), 'uint8', (0.0, 16.0))
        >>> Field.tensor(shape=(8, 8), dtype="uint8", bounds=(0, 300))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        privml.exceptions.ConfigurationError: bounds (0, 300) do not fit dtype 'uint8': ...
        """
        return cls(
            "tensor",
            sensitive=sensitive,
            tags=_tags(tags),
            nullable=nullable,
            bounds=_check_bounds(bounds),
            mask=mask,
            shape=_shape(shape),
            dtype=_dtype_name(dtype),
        )

    @classmethod
    def sequence(
        cls,
        *,
        max_length: int,
        vocabulary: int | Sequence[str],
        sensitive: bool = True,
        tags: str | Sequence[str] = (),
        nullable: bool = False,
        mask: Mask | None = None,
    ) -> Field:
        """A variable-length sequence of token ids per row (words, codes, events).

        ``vocabulary`` is either the number of tokens ``V`` (ids ``0 .. V-1``) or
        the list of tokens itself (token ``i`` has id ``i``; the data may then
        give tokens or ids). Values are stored and read back as int64 id arrays of
        at most ``max_length`` ids; an id outside the vocabulary or a longer
        sequence is refused. DP-SGD pads each sequence to ``max_length`` with
        :attr:`pad_id` (``V``, which no token has). No DP statistic takes it;
        only ``Mask.redact()`` fits it.

        Parameters
        ----------
        max_length : int
            The longest sequence allowed (at most 1,048,576).
        vocabulary : int or sequence of str
            The vocabulary size, or the distinct tokens in id order.
        sensitive : bool
            Encrypted at rest under its own data key (default ``True``).
        tags : str or list of str
            Policy tags.
        nullable : bool
            Whether missing values are allowed (default ``False``).
        mask : Mask, optional
            Only ``Mask.redact()``; without it ``masked`` reads of the field are refused.

        Examples
        --------
        >>> notes = Field.sequence(max_length=4, vocabulary=["<s>", "flu", "cough"])
        >>> notes.vocabulary, notes.tokens, notes.pad_id
        (3, ('<s>', 'flu', 'cough'), 3)
        >>> Field.sequence(max_length=64, vocabulary=1000).tokens is None
        True
        """
        size, tokens = _vocabulary(vocabulary)
        return cls(
            "sequence",
            sensitive=sensitive,
            tags=_tags(tags),
            nullable=nullable,
            mask=mask,
            max_length=max_length,
            vocabulary=size,
            tokens=tokens,
        )

    # -- serialization ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description of the field."""
        out: dict[str, Any] = {"kind": self.kind, "sensitive": self.sensitive}
        if self.tags:
            out["tags"] = list(self.tags)
        for key in ("bounds", "categories", "domain", *_ARRAY_OPTIONS):
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
        for key in ("bounds", "categories", "shape", "tokens"):
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
            elif (array := propose_array(s)) is not None:
                kind, options = array
                make = Field.tensor if kind == "tensor" else Field.sequence
                fields[name] = make(nullable=nullable, **options)
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

    def coerce(self, df: pd.DataFrame, *, categorical: Collection[str] = ()) -> pd.DataFrame:
        """Give stored data back its canonical dtypes (after a Parquet round trip).

        The ``categorical`` columns (read as Parquet dictionaries) are left as they
        are: pandas categoricals of their stored values.
        """
        out = {}
        for name in df.columns:
            f = self.fields[name]
            out[name] = df[name] if name in categorical else canonical_dtype(df[name], f)
        return pd.DataFrame(out, index=df.index, copy=False)


# --- helpers -------------------------------------------------------------------------------
#: The options of tensor and sequence fields, in their stored order (absent elsewhere, so
#: every schema stored before they existed keeps its description and fingerprint).
_ARRAY_OPTIONS = ("shape", "dtype", "max_length", "vocabulary", "tokens")
_KIND_OPTIONS = {"tensor": ("shape", "dtype"), "sequence": ("max_length", "vocabulary", "tokens")}


def _check_kind_options(f: Field) -> None:
    """Refuse array options on a field of another kind, and check those of an array field."""
    allowed = _KIND_OPTIONS.get(f.kind, ())
    stray = [k for k in _ARRAY_OPTIONS if getattr(f, k) is not None and k not in allowed]
    if stray:
        raise ConfigurationError(f"{', '.join(stray)} do(es) not apply to a {f.kind} field")
    if f.kind in ARRAY_KINDS and f.target:
        raise ConfigurationError(
            f"a {f.kind} field cannot be a target; use a categorical or numeric target"
        )
    if f.kind == "tensor":
        check_tensor_declaration(f.shape, f.dtype, f.bounds)
    elif f.kind == "sequence":
        check_sequence_declaration(f.max_length, f.vocabulary, f.tokens)
        if f.bounds is not None or f.categories is not None:
            raise ConfigurationError("bounds and categories do not apply to a sequence field")


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (int(shape),)
    if isinstance(shape, str | bytes) or not isinstance(shape, Iterable):
        raise ConfigurationError(f"shape= takes a tuple of sizes, e.g. (8, 8); got {shape!r}")
    return tuple(shape)


def _dtype_name(dtype: object) -> Any:
    """A numpy dtype or type (``np.uint8``) by its name; anything else as given (then refused)."""
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name  # type: ignore[call-overload]
    except TypeError:
        return dtype


def _vocabulary(vocabulary: int | Sequence[str]) -> tuple[Any, tuple[str, ...] | None]:
    """The vocabulary's size and, when given as a list, its tokens."""
    if isinstance(vocabulary, int | np.integer) and not isinstance(vocabulary, bool):
        return int(vocabulary), None
    if isinstance(vocabulary, str | bytes) or not isinstance(vocabulary, Iterable):
        raise ConfigurationError(
            "vocabulary= takes a size (an int, ids 0 .. V-1) or a list of distinct tokens, "
            f"got a {type(vocabulary).__name__}"
        )
    tokens = tuple(vocabulary)
    return len(tokens), tokens


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
