"""Tensor and sequence fields: their declarations, proposals and their Arrow form.

A tensor value is an array of one declared shape and element type; a sequence
value is a list of token ids below a declared vocabulary size, at most
``max_length`` long. Intake (:mod:`privml._array_intake`) checks values against
these declarations; here they are checked themselves, and a validated column is
turned into the Parquet list it is stored as, and back.

Examples
--------
>>> from privml import Field
>>> stored_bytes(Field.tensor(shape=(28, 28), dtype="uint8", bounds=(0, 255)))
792
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .exceptions import ConfigurationError

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
    out = np.full(len(values), None, dtype=object)
    for row, value in enumerate(values):  # one by one: never broadcast
        out[row] = restore(value)
    return pd.Series(out, index=col.index, dtype=object, copy=False)
