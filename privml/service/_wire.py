"""What crosses between server and client besides refusals: frames, releases, conditions.

Frames travel as an Arrow IPC stream (``application/vnd.apache.arrow.stream``),
never as JSON, with the read's modes in the schema's metadata. DP results and
everything small travel as JSON. Nothing on the wire is ever unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..dp._result import DPResult
from ..exceptions import ConfigurationError

__all__ = [
    "ARROW",
    "frame_from_ipc",
    "frame_to_ipc",
    "plain_from_json",
    "plain_json",
    "result_from_json",
    "result_to_json",
    "where_to_json",
]

ARROW = "application/vnd.apache.arrow.stream"
_ATTRS = b"privml.attrs"
_SHAPES = b"privml.shapes"  # tensor columns travel flattened; their shapes ride here


def frame_to_ipc(frame: pd.DataFrame, *, batch_rows: int = 65_536) -> bytes:
    """``frame`` as an Arrow IPC stream; its ``attrs`` (modes, omitted) ride in the metadata.

    Examples
    --------
    >>> frame = pd.DataFrame({"age": [34, 71]})
    >>> frame.attrs["privml_modes"] = {"age": "raw"}
    >>> back = frame_from_ipc(frame_to_ipc(frame))
    >>> back.equals(frame), back.attrs["privml_modes"]
    (True, {'age': 'raw'})
    """
    attrs = frame.attrs
    frame, shapes = _flattened(frame)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_ATTRS] = json.dumps(attrs, default=str).encode()
    meta[_SHAPES] = json.dumps(shapes).encode()
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def frame_from_ipc(data: bytes) -> pd.DataFrame:
    """The frame :func:`frame_to_ipc` wrote."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise ConfigurationError(f"the server sent an unreadable Arrow stream: {err}") from None
    attrs = json.loads((table.schema.metadata or {}).get(_ATTRS, b"{}"))
    shapes = json.loads((table.schema.metadata or {}).get(_SHAPES, b"{}"))
    frame = table.to_pandas()
    for name, shape in (shapes if isinstance(shapes, dict) else {}).items():
        if name in frame.columns:
            frame[name] = _reshaped(frame[name], tuple(shape))
    frame.attrs.update(attrs if isinstance(attrs, dict) else {})
    return frame


def _flattened(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """``frame`` with columns of multi-dimensional arrays (tensor fields) flattened, and
    their shapes (one per column: a tensor field's values all have its declared shape)."""
    shapes: dict[str, list[int]] = {}
    flat: dict[str, pd.Series] = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        first = next((v for v in column if isinstance(v, np.ndarray)), None)
        if first is not None and first.ndim > 1:
            shapes[str(name)] = list(first.shape)
            values = np.full(len(column), None, dtype=object)
            for row, value in enumerate(column):  # one by one: never broadcast
                values[row] = value.reshape(-1) if isinstance(value, np.ndarray) else value
            flat[name] = pd.Series(values, index=column.index, dtype=object)
    return (frame.assign(**flat) if flat else frame), shapes


def _reshaped(column: pd.Series, shape: tuple[int, ...]) -> pd.Series:
    values = np.full(len(column), None, dtype=object)
    for row, value in enumerate(column):
        values[row] = None if value is None else np.asarray(value).reshape(shape)
    return pd.Series(values, index=column.index, dtype=object)


def result_to_json(result: DPResult) -> dict[str, Any]:
    """A DP release as JSON: a histogram's Series keeps its labels (bins as [left, right))."""
    value: Any = result.value
    if isinstance(value, pd.Series):
        labels = [
            {"left": _num(x.left), "right": _num(x.right), "closed": x.closed}
            if isinstance(x, pd.Interval)
            else _num(x)
            for x in value.index
        ]
        value = {
            "series": [_num(v) for v in value.to_numpy()],
            "index": labels,
            "name": value.index.name,
        }
    else:
        value = _num(value)
    return {
        "value": value,
        "epsilon": result.epsilon,
        "delta": result.delta,
        "mechanism": result.mechanism,
        "noise_scale": _num(result.noise_scale),
        "interval": None if result.interval is None else [_num(x) for x in result.interval],
        "request_id": result.request_id,
        "privacy_unit": result.privacy_unit,
        "max_rows_per_unit": result.max_rows_per_unit,
    }


def result_from_json(body: Mapping[str, Any]) -> DPResult:
    """The :class:`~privml.dp.DPResult` :func:`result_to_json` wrote."""
    value = body["value"]
    if isinstance(value, dict):
        index = [
            pd.Interval(_back(x["left"]), _back(x["right"]), closed=x["closed"])
            if isinstance(x, dict)
            else x
            for x in value["index"]
        ]
        value = pd.Series(
            [_back(v) for v in value["series"]],
            index=pd.Index(index, name=value.get("name")),
            dtype=float,
        )
    else:
        value = _back(value)
    interval = body.get("interval")
    return DPResult(
        value=value,
        epsilon=float(body["epsilon"]),
        delta=float(body["delta"]),
        mechanism=str(body["mechanism"]),
        noise_scale=None if body.get("noise_scale") is None else float(body["noise_scale"]),
        interval=None if interval is None else (float(interval[0]), float(interval[1])),
        request_id=str(body["request_id"]),
        privacy_unit=str(body.get("privacy_unit", "row")),
        max_rows_per_unit=int(body.get("max_rows_per_unit", 1)),
    )


def where_to_json(where: Sequence[Any] | None) -> list[Any] | None:
    """Row conditions as JSON: ``(column, op, value)`` triples or mappings, kept as given."""
    if where is None:
        return None
    out: list[Any] = []
    for condition in where:
        if isinstance(condition, Mapping):
            out.append(dict(condition))
        elif hasattr(condition, "to_dict"):
            out.append(condition.to_dict())
        else:
            out.append(list(condition))
    return out


def plain_json(value: Any) -> Any:
    """``value`` with JSON's types only: mappings, lists, and numbers as :func:`_num` writes them.

    Examples
    --------
    >>> plain_json({"m": 8, "bound": float("inf"), "pair": (1, 2)})
    {'m': 8, 'bound': 'inf', 'pair': [1, 2]}
    """
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    return _num(value)


def plain_from_json(value: Any) -> Any:
    """What :func:`plain_json` wrote, with its non-finite numbers as floats again."""
    if isinstance(value, Mapping):
        return {k: plain_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_from_json(v) for v in value]
    return _back(value)


def _num(value: Any) -> Any:
    """A JSON-safe number: non-finite floats as strings ("inf", "-inf", "nan")."""
    if value is None or isinstance(value, bool | str):
        return value
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _back(value: Any) -> Any:
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value
