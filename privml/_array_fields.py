"""Tensor and sequence fields: their declarations, strict intake, and their Arrow form.

A tensor value is an array of one declared shape and element type; a sequence
value is a list of token ids below a declared vocabulary size, at most
``max_length`` long. Intake is strict and bounded: a value's length is looked
at before it is converted (a huge or ragged value is refused without copying
it), and the checks on the values themselves run on one stacked block per
column, so the work and memory are linear in the data. Violations name the
column, the kind of problem and the rows, never a value.

Examples
--------
>>> import pandas as pd
>>> from privml import Field
>>> f = Field.sequence(max_length=3, vocabulary=5)
>>> values, found, _ = convert_array(pd.Series([[1, 2], [4, 0, 3]]), "codes", f, clip=False)
>>> [v.tolist() for v in values], found
([[1, 2], [4, 0, 3]], [])
>>> _, found, _ = convert_array(pd.Series([[1, 9], [0, 1, 2, 3]]), "codes", f, clip=False)
>>> [(v.kind, v.rows) for v in found]
[('too_long', (1,)), ('vocabulary', (0,))]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .exceptions import ConfigurationError, SchemaViolation

if TYPE_CHECKING:
    from .schema import Field

__all__ = [
    "ARRAY_KINDS",
    "MAX_SEQUENCE_LENGTH",
    "MAX_TENSOR_ELEMENTS",
    "TENSOR_DTYPES",
    "array_refusal",
    "arrow_array",
    "check_sequence_declaration",
    "check_tensor_declaration",
    "convert_array",
    "propose_array",
    "stored_array",
    "stored_bytes",
]

#: The kinds whose values are arrays: no DP statistic takes them, DP-SGD does.
ARRAY_KINDS = ("tensor", "sequence")
#: The element types a tensor field may declare.
TENSOR_DTYPES = ("float32", "float64", "uint8", "int8", "uint16", "int16", "int32", "int64")
#: The most elements one tensor value may hold (16 Mi).
MAX_TENSOR_ELEMENTS = 1 << 24
#: The longest ``max_length`` a sequence field may declare (1 Mi ids).
MAX_SEQUENCE_LENGTH = 1 << 20
_MAX_DIMS = 8
_SHOWN_ROWS = 5


# -- declarations ---------------------------------------------------------------------
def check_tensor_declaration(
    shape: tuple[int, ...] | None, dtype: str | None, bounds: tuple[float, float] | None
) -> None:
    """Refuse a tensor field whose shape, element type or bounds cannot hold together."""
    if shape is None or not isinstance(shape, tuple) or not 1 <= len(shape) <= _MAX_DIMS:
        raise ConfigurationError(
            f"a tensor field needs shape= with 1 to {_MAX_DIMS} sizes, e.g. shape=(8, 8)"
        )
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ConfigurationError(
                f"shape sizes must be positive whole numbers, got {list(shape)!r}"
            )
    if math.prod(int(s) for s in shape) > MAX_TENSOR_ELEMENTS:
        raise ConfigurationError(
            f"shape {tuple(shape)!r} holds more than {MAX_TENSOR_ELEMENTS:,} elements per value"
        )
    if dtype not in TENSOR_DTYPES:
        raise ConfigurationError(f"dtype must be one of {', '.join(TENSOR_DTYPES)}; got {dtype!r}")
    if bounds is None:
        raise ConfigurationError("a tensor field needs bounds=(low, high) for its elements")
    lo, hi = bounds
    kind = np.dtype(dtype)
    info: Any = np.finfo(kind) if kind.kind == "f" else np.iinfo(kind)
    whole = kind.kind == "f" or (float(lo).is_integer() and float(hi).is_integer())
    if not (whole and float(info.min) <= lo and hi <= float(info.max)):
        raise ConfigurationError(
            f"bounds ({lo:g}, {hi:g}) do not fit dtype {dtype!r}: they must lie within "
            f"[{info.min}, {info.max}]" + ("" if kind.kind == "f" else " and be whole numbers")
        )


def check_sequence_declaration(
    max_length: int | None, vocabulary: int | None, tokens: tuple[str, ...] | None
) -> None:
    """Refuse a sequence field whose length or vocabulary cannot hold together."""
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, int | np.integer)
        or not 1 <= max_length <= MAX_SEQUENCE_LENGTH
    ):
        raise ConfigurationError(
            f"max_length= must be a whole number in [1, {MAX_SEQUENCE_LENGTH:,}], "
            f"got {max_length!r}"
        )
    if (
        isinstance(vocabulary, bool)
        or not isinstance(vocabulary, int | np.integer)
        or not 1 <= vocabulary < 2**31 - 1
    ):
        raise ConfigurationError(
            "vocabulary= must be a size in [1, 2**31 - 2] or a non-empty list of tokens"
        )
    if tokens is not None:
        if len(tokens) != vocabulary:
            raise ConfigurationError("a sequence field's tokens must number its vocabulary size")
        if not all(isinstance(t, str) and t for t in tokens):
            raise ConfigurationError("vocabulary tokens must be non-empty strings")
        if len(set(tokens)) != len(tokens):
            raise ConfigurationError("vocabulary tokens must be distinct")
        for token in tokens:
            try:
                token.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigurationError("vocabulary tokens must be valid Unicode") from None


def stored_bytes(f: Field) -> int:
    """About how many bytes one decrypted value of ``f`` takes."""
    if f.kind == "tensor" and f.shape is not None and f.dtype is not None:
        return math.prod(f.shape) * np.dtype(f.dtype).itemsize + 8
    if f.kind == "sequence" and f.max_length is not None:
        return 8 * f.max_length + 8
    return 8 if f.kind in ("numeric", "integer", "datetime") else 32


def array_refusal(column: str, kind: str, use: str) -> ConfigurationError:
    """The refusal of a tensor or sequence column by a mechanism that takes scalars only."""
    return ConfigurationError(
        f"column {column!r} is a {kind} field, which {use} does not take: tensor and sequence "
        f"fields are read raw or trained on with DP-SGD "
        f"(session.dp.private_training(features=[{column!r}], ...)) only"
    )


def propose_array(s: pd.Series) -> tuple[str, dict[str, Any]] | None:
    """What :meth:`Schema.infer` proposes for a column of arrays (from the data: review it).

    numpy arrays all of one shape propose a tensor (bounds: the observed range);
    lists of whole numbers a sequence (vocabulary: one past the largest id).
    None for anything else.
    """
    values = s.dropna()
    if s.dtype != object or not len(values):
        return None
    first = values.iloc[0]
    same = isinstance(first, np.ndarray) and first.dtype.kind in "iuf" and first.size > 0
    if same and all(isinstance(v, np.ndarray) and v.shape == first.shape for v in values):
        block = np.stack(values.tolist())
        if not np.isfinite(block).all():
            return None
        lo, hi = float(block.min()), float(block.max())
        dtype = str(first.dtype) if str(first.dtype) in TENSOR_DTYPES else "float64"
        return "tensor", {"shape": first.shape, "dtype": dtype, "bounds": (lo, max(hi, lo + 1))}
    if all(isinstance(v, list | tuple | np.ndarray) for v in values):
        arrays = [np.asarray(v) for v in values]
        if all(a.ndim == 1 and (a.dtype.kind in "iu" or not len(a)) for a in arrays):
            longest = max(len(a) for a in arrays)
            top = max((int(a.max()) for a in arrays if len(a)), default=0)
            if min((int(a.min()) for a in arrays if len(a)), default=0) >= 0:
                return "sequence", {"max_length": max(longest, 1), "vocabulary": top + 1}
    return None


# -- intake ---------------------------------------------------------------------------
def _violation(name: str, kind: str, rows: np.ndarray, detail: str) -> SchemaViolation:
    rows = np.unique(rows)
    shown = tuple(int(r) for r in rows[:_SHOWN_ROWS])
    return SchemaViolation(name, kind, int(rows.size), shown, detail)


def convert_array(
    col: pd.Series, name: str, f: Field, *, clip: bool
) -> tuple[pd.Series, list[SchemaViolation], int]:
    """``col`` as a column of numpy arrays in the field's canonical form, or its violations.

    Each non-null value becomes an array of the declared shape and dtype (tensor)
    or a 1-D int64 id array (sequence); nulls stay ``None``. With ``clip``,
    tensor elements outside the bounds are clipped and the rows counted.
    """
    null = col.isna().to_numpy(dtype=bool) if len(col) else np.zeros(0, dtype=bool)
    found: list[SchemaViolation] = []
    if null.any() and not f.nullable:
        found.append(
            _violation(name, "null", np.flatnonzero(null), "missing values are not allowed")
        )
    present = np.flatnonzero(~null)
    values = col.to_numpy(dtype=object)
    if f.kind == "tensor":
        block, more, n_clipped = _tensor_block(values, present, name, f, clip=clip)
    else:
        block, more, n_clipped = _sequence_block(values, present, name, f)
    found.extend(more)
    if found:
        return col, found, 0
    out = np.full(len(col), None, dtype=object)
    out[present] = block
    return pd.Series(out, dtype=object, copy=False), found, n_clipped


def _tensor_block(
    values: np.ndarray, present: np.ndarray, name: str, f: Field, *, clip: bool
) -> tuple[list[np.ndarray], list[SchemaViolation], int]:
    assert f.shape is not None and f.dtype is not None and f.bounds is not None
    shape, size = f.shape, math.prod(f.shape)
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    wrong_shape: list[int] = []
    wrong_type: list[int] = []
    for row in present:
        arr = _as_array(values[row], (shape[0], size))
        if arr is None:
            wrong_type.append(int(row))
        elif arr.shape not in (shape, (size,)):
            wrong_shape.append(int(row))
        elif arr.dtype.kind not in "iuf":
            wrong_type.append(int(row))
        else:
            arrays.append(arr.reshape(size))
            kept.append(int(row))
    found = []
    expected = f"arrays of shape {shape} (or their {size} values flattened in C order)"
    if wrong_shape:
        found.append(_violation(name, "shape", np.array(wrong_shape), f"expected {expected}"))
    if wrong_type:
        found.append(
            _violation(name, "dtype", np.array(wrong_type), f"expected numeric {expected}")
        )
    target = np.dtype(f.dtype)
    if not arrays:
        return [], found, 0
    source = np.stack(arrays)  # (rows, size) in the common type of the values given
    del arrays
    rows = np.asarray(kept)
    bad = np.zeros(len(rows), dtype=bool)
    if source.dtype.kind == "f":
        finite = np.isfinite(source).all(axis=1)
        if not finite.all():
            found.append(
                _violation(name, "not_finite", rows[~finite], "NaN and infinity are not allowed")
            )
            bad |= ~finite
    lo, hi = f.bounds
    outside = ~bad & ((source < lo) | (source > hi)).any(axis=1)
    n_clipped = 0
    if outside.any():
        if clip:
            n_clipped = int(outside.sum())
            source = np.clip(source, lo, hi)
        else:
            found.append(
                _violation(name, "bounds", rows[outside], f"elements must lie in [{lo:g}, {hi:g}]")
            )
            bad |= outside
    if source.dtype.kind == "f" and bad.any():
        source[bad] = lo  # the cast below sees only finite values within bounds
    cast = source.astype(target)
    with np.errstate(invalid="ignore", over="ignore"):
        lossy = ~bad & (cast.astype(source.dtype) != source).any(axis=1)
    if lossy.any():
        found.append(
            _violation(
                name,
                "dtype",
                rows[lossy],
                f"values change when stored as {f.dtype} (a lossy cast); convert them yourself "
                "or declare a wider dtype",
            )
        )
    if found:
        return [], found, 0
    return list(cast.reshape(len(rows), *shape)), [], n_clipped


def _as_array(value: object, lengths: tuple[int, int]) -> np.ndarray | None:
    """``value`` as an ndarray, if it is array-like; its length is checked before copying."""
    if isinstance(value, str | bytes | dict) or not hasattr(value, "__len__"):
        return None
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            if len(value) not in lengths:
                return np.empty((0, 0, 0))  # a wrong shape, seen without converting
            arr = np.asarray(value)
        except (TypeError, ValueError):  # ragged nested lists
            return np.empty((0, 0, 0))
    if arr.dtype == object and arr.ndim == 1 and len(arr) in lengths:
        try:  # nested lists read back from a Parquet file: arrays of arrays
            arr = np.stack([np.asarray(part) for part in arr])
        except (TypeError, ValueError):
            return np.empty((0, 0, 0))
    if arr.dtype.kind == "b":
        return None
    return arr


def _sequence_block(
    values: np.ndarray, present: np.ndarray, name: str, f: Field
) -> tuple[list[np.ndarray], list[SchemaViolation], int]:
    assert f.max_length is not None and f.vocabulary is not None
    ids = {t: i for i, t in enumerate(f.tokens)} if f.tokens is not None else None
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    too_long: list[int] = []
    wrong_type: list[int] = []
    unknown: list[int] = []
    for row in present:
        value = values[row]
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__len__"):
            wrong_type.append(int(row))
            continue
        if len(value) > f.max_length:  # before converting: a huge value is never copied
            too_long.append(int(row))
            continue
        arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if arr.ndim != 1 and len(arr):
            wrong_type.append(int(row))
        elif len(arr) == 0:
            arrays.append(np.zeros(0, dtype=np.int64))
            kept.append(int(row))
        elif arr.dtype.kind in "iu":
            if arr.dtype.kind == "u" and arr.max() >= f.vocabulary:  # may not fit int64
                unknown.append(int(row))
            else:
                arrays.append(arr)
                kept.append(int(row))
        elif arr.dtype.kind in "UO" and ids is not None:
            mapped = [ids.get(t, -1) if isinstance(t, str) else -2 for t in arr.tolist()]
            if -2 in mapped:
                wrong_type.append(int(row))
            elif -1 in mapped:
                unknown.append(int(row))
            else:
                arrays.append(np.asarray(mapped, dtype=np.int64))
                kept.append(int(row))
        else:
            wrong_type.append(int(row))
    found = []
    expected = "token ids (whole numbers)" + (" or tokens of the vocabulary" if ids else "")
    if wrong_type:
        found.append(
            _violation(name, "dtype", np.array(wrong_type), f"expected lists of {expected}")
        )
    if too_long:
        found.append(
            _violation(
                name, "too_long", np.array(too_long), f"sequences may hold at most {f.max_length}"
            )
        )
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.zeros(0, dtype=np.int64)
    if arrays:
        flat = np.concatenate([a.astype(np.int64, copy=False) for a in arrays])
        owner = np.repeat(np.arange(len(arrays)), lengths)
        outside = (flat < 0) | (flat >= f.vocabulary)
        unknown.extend(int(r) for r in np.asarray(kept)[np.unique(owner[outside])])
    if unknown:
        found.append(
            _violation(
                name,
                "vocabulary",
                np.array(unknown),
                f"token ids must lie in [0, {f.vocabulary}) (the declared vocabulary)",
            )
        )
    if found or not arrays:
        return [], found, 0
    ends = np.cumsum(lengths)
    return [flat[e - n : e] for e, n in zip(ends, lengths, strict=True)], [], 0


# -- storage --------------------------------------------------------------------------
def arrow_array(col: pd.Series, f: Field) -> pa.Array:
    """A validated column as stored: a fixed-size list (tensor, flattened) or a list of int64."""
    null = col.isna().to_numpy(dtype=bool) if len(col) else np.zeros(0, dtype=bool)
    present = [v for v, n in zip(col.to_numpy(dtype=object), null, strict=True) if not n]
    if f.kind == "tensor":
        assert f.shape is not None and f.dtype is not None
        size = math.prod(f.shape)
        block = np.zeros((len(col), size), dtype=f.dtype)
        if present:
            block[~null] = np.stack([np.asarray(v).reshape(size) for v in present])
        flat = pa.array(block.reshape(-1))
        mask = pa.array(null) if null.any() else None
        return pa.FixedSizeListArray.from_arrays(flat, size, mask=mask)
    lengths = np.zeros(len(col), dtype=np.int64)
    lengths[~null] = [len(v) for v in present]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = (
        np.concatenate([np.asarray(v, dtype=np.int64) for v in present])
        if present
        else np.zeros(0, dtype=np.int64)
    )
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(flat, type=pa.int64()), mask=pa.array(null)
    )


def stored_array(col: pd.Series, f: Field) -> pd.Series:
    """A column read back from Parquet (flat arrays) in its canonical form."""
    if f.kind == "tensor":
        assert f.shape is not None and f.dtype is not None
        shape, dtype = f.shape, np.dtype(f.dtype)

        def restore(v: Any) -> Any:
            return None if v is None else np.asarray(v, dtype=dtype).reshape(shape)
    else:

        def restore(v: Any) -> Any:
            return None if v is None else np.asarray(v, dtype=np.int64)

    values = col.to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    out[:] = [restore(v) for v in values]
    return pd.Series(out, index=col.index, dtype=object, copy=False)
