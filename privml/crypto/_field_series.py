"""Turning pandas columns into the plain lists that :class:`~privml.crypto.FieldCipher` seals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..exceptions import ConfigurationError

__all__ = ["arrow_row_keys", "arrow_values", "row_keys_list", "uniform_kind", "values_list"]


def values_list(series: Iterable[Any]) -> list[Any]:
    """The values of ``series`` as Python objects, with pandas' missing markers as ``None``.

    ``pd.NA`` and ``pd.NaT`` become ``None`` anywhere; so does NaN in a string or
    categorical column, where it can only mean "missing". NaN in a float column is a
    float value and stays one.

    Examples
    --------
    >>> values_list(pd.Series(["a", None], dtype="str"))
    ['a', None]
    >>> values_list(pd.Series([1.5, float("nan")]))
    [1.5, nan]
    >>> values_list(pd.Series([1, None], dtype="Int64"))
    [1, None]
    """
    if not isinstance(series, pd.Series):
        return list(series)
    values: list[Any] = series.tolist()
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype | pd.CategoricalDtype):
        for i in np.flatnonzero(series.isna().to_numpy()):
            values[i] = None
    elif dtype.kind == "O" or isinstance(dtype, pd.api.extensions.ExtensionDtype):
        values = [None if v is pd.NA or v is pd.NaT else v for v in values]
    return values


def arrow_values(series: Iterable[Any]) -> pa.Array | None:
    """The values of an Arrow-backed string column with no missing value, without a copy.

    ``None`` for any other column: its values take :func:`values_list`.

    Examples
    --------
    >>> arrow_values(pd.Series(["a", "b"], dtype="str")).to_pylist()
    ['a', 'b']
    >>> arrow_values(pd.Series(["a", None], dtype="str")), arrow_values(["a"])
    (None, None)
    """
    if not isinstance(series, pd.Series) or not _arrow_strings(series):
        return None
    return _arrow(series)


def arrow_row_keys(row_keys: Iterable[Any] | None, count: int) -> pa.Array | None:
    """Integer or Arrow-backed string row keys as an Arrow array (``None`` otherwise).

    Refuses, as :func:`row_keys_list` does, a count that differs from ``count``.

    Examples
    --------
    >>> arrow_row_keys(pd.RangeIndex(2, 4), 2).to_pylist()
    [2, 3]
    >>> arrow_row_keys(pd.Series([1.5, 2.5]), 2) is None
    True
    """
    if isinstance(row_keys, pd.RangeIndex):
        keys: pa.Array | None = pa.array(np.arange(row_keys.start, row_keys.stop, row_keys.step))
    elif not isinstance(row_keys, pd.Series | pd.Index):
        return None
    elif isinstance(row_keys.dtype, np.dtype) and row_keys.dtype.kind in "iu":
        keys = pa.array(row_keys.to_numpy())
    elif _arrow_strings(row_keys):
        keys = _arrow(row_keys)
    else:
        return None
    if keys is not None and len(keys) != count:
        raise ConfigurationError(f"row_keys has {len(keys)} keys for {count} values")
    return keys


def _arrow_strings(data: pd.Series | pd.Index) -> bool:
    dtype = data.dtype
    return isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and not data.hasnans


def _arrow(data: pd.Series | pd.Index) -> pa.Array:
    array = pa.array(data.array)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def row_keys_list(row_keys: Iterable[Any] | None, count: int) -> list[Any]:
    """The row keys as a list of ``count`` Python objects (a Series or Index is unboxed)."""
    if row_keys is None:
        raise ConfigurationError(
            "randomized encryption binds every value to its row: pass row_keys= (a column "
            "of stable record ids, or frame.index), or use a cipher made with "
            "deterministic=True"
        )
    if isinstance(row_keys, str | bytes):
        raise ConfigurationError("row_keys is one key per value (a column or index), not a str")
    keys: list[Any] = (
        row_keys.tolist() if isinstance(row_keys, pd.Series | pd.Index) else list(row_keys)
    )
    if len(keys) != count:
        raise ConfigurationError(f"row_keys has {len(keys)} keys for {count} values")
    return keys


def uniform_kind(data: object) -> type | None:
    """The one Python type that every item of ``data.tolist()`` has, if its dtype says so.

    Lets the encoders skip per-item type dispatch; ``None`` means "look at each item".

    Examples
    --------
    >>> uniform_kind(pd.RangeIndex(3)), uniform_kind(pd.Series([1.5])), uniform_kind([1])
    (<class 'int'>, <class 'float'>, None)
    >>> uniform_kind(pd.Series(["a"], dtype="str")), uniform_kind(pd.Series(["a", None]))
    (<class 'str'>, None)
    """
    if isinstance(data, pd.RangeIndex):
        return int
    if not isinstance(data, pd.Series | pd.Index):
        return None
    dtype = data.dtype
    if isinstance(dtype, pd.StringDtype):
        return None if data.hasnans else str
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return int
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return float
    return None
