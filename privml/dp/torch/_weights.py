"""A network's weights as bytes without pickle: a JSON header, then the raw tensors.

The layout (all integers little-endian)::

    b"PRIVMLW1"                  8 bytes, the format and its version
    header length                8 bytes, unsigned
    header                       UTF-8 JSON: {"tensors": [[name, dtype, shape], ...]}
    data                         each tensor's values in that order, C-contiguous

Loading reads nothing but numbers: the header must list exactly the module's
state-dict entries, in order, with their dtypes and shapes, and the data must
be exactly as long as they need. Anything else (other names, a changed shape,
truncated or extended bytes, a malformed header) is refused with
:class:`~privml.exceptions.ConfigurationError` before any weight is set.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .._wire import refuse
from ._layers import MAX_PARAMETERS

__all__ = ["MAX_WEIGHT_BYTES", "load_weights", "weights_to_bytes"]

MAGIC = b"PRIVMLW1"
#: Torch dtypes stored, by their name in the header, as little-endian numpy dtypes.
DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "float32": (torch.float32, "<f4"),
    "float64": (torch.float64, "<f8"),
    "int64": (torch.int64, "<i8"),
}
_NAMES = {dtype: name for name, (dtype, _) in DTYPES.items()}
#: The longest header accepted.
MAX_HEADER_BYTES = 1 << 20
#: The most bytes of weights written or read (every parameter at 8 bytes, and the header).
MAX_WEIGHT_BYTES = MAX_PARAMETERS * 8 + MAX_HEADER_BYTES + 16


def _layout(module: nn.Module) -> list[tuple[str, str, list[int]]]:
    entries = []
    for name, tensor in module.state_dict().items():
        if tensor.dtype not in _NAMES:
            raise refuse(name, f"has dtype {tensor.dtype}; weights are stored as {list(DTYPES)}")
        entries.append((name, _NAMES[tensor.dtype], list(tensor.shape)))
    return entries


def _size(entries: list[tuple[str, str, list[int]]]) -> int:
    return sum(math.prod(shape) * np.dtype(DTYPES[d][1]).itemsize for _, d, shape in entries)


def weights_to_bytes(module: nn.Module) -> bytes:
    """The module's state dict (parameters and buffers) as bytes, without pickle.

    Examples
    --------
    >>> net = torch.nn.Linear(3, 2)
    >>> data = weights_to_bytes(net)
    >>> other = torch.nn.Linear(3, 2)
    >>> load_weights(other, data)
    >>> bool(torch.equal(other.weight, net.weight))
    True
    >>> load_weights(torch.nn.Linear(3, 4), data)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: weights: they do not fit this network: weight has ...
    """
    entries = _layout(module)
    header = json.dumps({"tensors": entries}, separators=(",", ":")).encode()
    if len(header) > MAX_HEADER_BYTES or _size(entries) + len(header) + 16 > MAX_WEIGHT_BYTES:
        raise refuse("weights", f"the network is larger than {MAX_WEIGHT_BYTES} bytes")
    parts = [MAGIC, len(header).to_bytes(8, "little"), header]
    for (_, dtype, _), tensor in zip(entries, module.state_dict().values(), strict=True):
        values = tensor.detach().cpu().contiguous().numpy()
        parts.append(values.astype(DTYPES[dtype][1], copy=False).tobytes())
    return b"".join(parts)


def _header(data: bytes) -> tuple[Any, int]:
    if len(data) < 16 or data[:8] != MAGIC:
        raise refuse("weights", "not privml weights (they start with b'PRIVMLW1')")
    length = int.from_bytes(data[8:16], "little")
    if length > min(MAX_HEADER_BYTES, len(data) - 16):
        raise refuse("weights", "their header is truncated or too long")
    try:
        header = json.loads(data[16 : 16 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise refuse("weights", "their header is not valid JSON") from None
    return header, 16 + length


def _check_header(header: Any, expected: list[tuple[str, str, list[int]]]) -> None:
    listed = header.get("tensors") if isinstance(header, dict) else None
    if not isinstance(listed, list) or set(header) != {"tensors"}:
        raise refuse("weights", "their header must be {'tensors': [[name, dtype, shape], ...]}")
    names = [e[0] if isinstance(e, list) and e else None for e in listed]
    if names != [name for name, _, _ in expected]:
        raise refuse("weights", "they do not fit this network: their tensors are not the network's")
    for entry, (name, dtype, shape) in zip(listed, expected, strict=True):
        if entry[1:] != [dtype, shape]:
            raise refuse(
                "weights",
                f"they do not fit this network: {name} has "
                + (
                    f"shape {entry[2]} in the weights, {shape} in the network"
                    if len(entry) == 3 and entry[1] == dtype and isinstance(entry[2], list)
                    else f"another dtype or shape than the network's {dtype} {shape}"
                ),
            )


def load_weights(module: nn.Module, data: bytes) -> None:
    """Set the module's state dict from :func:`weights_to_bytes`'s bytes, checked exactly.

    Raises
    ------
    ConfigurationError
        The bytes are not privml weights, are truncated or extended, or their
        tensors' names, dtypes or shapes are not exactly the module's.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise refuse("weights", f"must be bytes, got {type(data).__name__}")
    data = bytes(data[: MAX_WEIGHT_BYTES + 1])
    if len(data) > MAX_WEIGHT_BYTES:
        raise refuse("weights", f"more than {MAX_WEIGHT_BYTES} bytes")
    expected = _layout(module)
    header, offset = _header(data)
    _check_header(header, expected)
    if len(data) - offset != _size(expected):
        raise refuse("weights", "their data is truncated or extended")
    state = {}
    for name, dtype, shape in expected:
        torch_dtype, numpy_dtype = DTYPES[dtype]
        count = math.prod(shape)
        values = np.frombuffer(data, dtype=numpy_dtype, count=count, offset=offset)
        offset += values.nbytes
        native = values.astype(np.dtype(numpy_dtype).newbyteorder("="))
        state[name] = torch.from_numpy(native.reshape(shape)).to(torch_dtype)
    module.load_state_dict(state, strict=True)
