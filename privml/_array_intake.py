"""Strict, bounded intake of tensor and sequence values.

A value's length is looked at before it is converted (a huge or ragged value is
refused without copying it), and the checks on the values themselves run on one
stacked block per column, so the work and memory are linear in the data.
Violations name the column, the kind of problem and the rows, never a value.

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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .exceptions import SchemaViolation

if TYPE_CHECKING:
    from .schema import Field

__all__ = ["convert_array"]

_SHOWN_ROWS = 5


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
    for row, value in zip(present, block, strict=True):  # one by one: never broadcast
        out[row] = value
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
