"""Numpy arrays as strict JSON and back: dtype, shape and nested lists, checked leaf by leaf.

``{"dtype": "float64", "shape": [2, 3], "data": [[...], [...]]}``. Floats that
JSON cannot hold are written ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``;
float values round-trip exactly (Python writes the shortest repr that reads
back the same double). Decoding walks ``data`` against ``shape`` (never
deeper, never more than :data:`MAX_VALUES` leaves) and checks each leaf's
type against the dtype, so a malformed array is refused by path rather than
handed to numpy.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ._wire import at, integer, keys, refuse, sequence, string

__all__ = ["MAX_VALUES", "from_wire", "to_wire"]

#: The most values one array may hold.
MAX_VALUES = 10_000_000
#: The most dimensions of an array.
MAX_DIMS = 4
_NUMERIC = ("float64", "float32", "int64", "int32", "bool")
_UNICODE = re.compile(r"^<U([1-9][0-9]{0,3})$")
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_INTS = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}


def _dtype_name(dtype: np.dtype[Any]) -> str:
    name = dtype.str if dtype.kind == "U" else str(dtype)
    if name in _NUMERIC or name == "object" or _UNICODE.match(name):
        return name
    raise refuse("fitted", f"an attribute has dtype {dtype}, which is not sent")


def _leaf_out(value: Any, path: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise refuse(path, f"holds a {type(value).__name__}, which is not sent")


def to_wire(value: Any, path: str) -> dict[str, Any] | None:
    """An array (or a numpy or Python scalar, as a 0-d array; ``None`` as ``None``) as JSON."""
    if value is None:
        return None
    array = np.asarray(value)
    name = _dtype_name(array.dtype)
    flat = [_leaf_out(v, path) for v in array.reshape(-1).tolist()]
    if array.ndim == 0:
        return {"dtype": name, "shape": [], "data": flat[0]}
    nested: Any = flat
    for size in reversed(array.shape[1:]):
        nested = [nested[i : i + size] for i in range(0, len(nested), size)]
    return {"dtype": name, "shape": list(array.shape), "data": nested}


def _leaf_in(value: Any, dtype: str, path: str) -> Any:
    if dtype.startswith("float"):
        if isinstance(value, str) and value in _SPECIAL:
            return _SPECIAL[value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise refuse(path, "must be a number, 'NaN', 'Infinity' or '-Infinity'")
    if dtype.startswith("int"):
        return integer(value, path, *_INTS[dtype])
    if dtype == "bool":
        if not isinstance(value, bool):
            raise refuse(path, "must be true or false")
        return value
    if dtype == "object":
        if isinstance(value, float) and not math.isfinite(value):
            raise refuse(path, "must be a finite number, a string or a boolean")
        if not isinstance(value, bool | int | float | str):
            raise refuse(path, "must be a number, a string or a boolean")
        return value
    return string(value, path, max_chars=int(dtype[2:]))


def _walk(data: Any, shape: list[int], dtype: str, path: str, out: list[Any]) -> None:
    if not shape:
        out.append(_leaf_in(data, dtype, path))
        return
    items = sequence(data, path, min_items=shape[0], max_items=shape[0])
    for i, item in enumerate(items):
        _walk(item, shape[1:], dtype, at(path, i), out)


def from_wire(value: Any, path: str) -> Any:
    """The array :func:`to_wire` wrote (a Python scalar for a 0-d one, ``None`` for ``None``)."""
    if value is None:
        return None
    given = keys(value, path, ["dtype", "shape", "data"], required=["dtype", "shape", "data"])
    dtype = given["dtype"]
    if not isinstance(dtype, str) or not (
        dtype in _NUMERIC or dtype == "object" or _UNICODE.match(dtype)
    ):
        raise refuse(at(path, "dtype"), f"must be one of {', '.join(_NUMERIC)}, object or <U<n>")
    dims = sequence(given["shape"], at(path, "shape"), min_items=0, max_items=MAX_DIMS)
    shape = [integer(d, at(at(path, "shape"), i), 0, MAX_VALUES) for i, d in enumerate(dims)]
    if math.prod(shape) > MAX_VALUES:
        raise refuse(at(path, "shape"), f"holds more than {MAX_VALUES} values")
    flat: list[Any] = []
    _walk(given["data"], shape, dtype, at(path, "data"), flat)
    array = np.empty(len(flat), dtype=object if dtype == "object" else dtype)
    array[:] = flat
    if not shape:
        return array[0].item() if dtype != "object" else array[0]
    return array.reshape(shape)
