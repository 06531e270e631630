"""Networks described as data: an allowlist of layers, each parameter typed and bounded.

A declared network is ``{"layers": [{"type": "Linear", "in_features": 4,
"out_features": 16}, {"type": "ReLU"}, ...]}``, built as an ``nn.Sequential``.
Only the layers below are accepted, each with its own keyword parameters;
everything is checked, the parameters counted and the per-sample shapes traced
through every layer before any tensor is allocated, so a description can name
neither code nor a network too large to hold. Every layer is one Opacus
trains with per-sample clipping (Linear, Conv1d/2d, LayerNorm and GroupNorm
have grad samplers; the rest hold no parameters), and each has a rule in
privml's book-keeping (``grad_sample_mode="bk"``).

``Embedding`` is not offered: a declared network reads the features as
float32 values scaled by the schema, and an embedding needs integer indices.
Layers with state besides parameters (BatchNorm) mix the samples of a batch
and are not offered either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from .._wire import (
    at,
    boolean,
    choice,
    int_or_ints,
    integer,
    keys,
    number,
    refuse,
    sequence,
)

__all__ = [
    "KINDS",
    "MAX_ACTIVATIONS",
    "MAX_LAYERS",
    "MAX_PARAMETERS",
    "Declared",
    "build_module",
    "declare",
]

#: The most layers a declared network may have.
MAX_LAYERS = 64
#: The most trainable parameters, counted from the description before anything is allocated.
MAX_PARAMETERS = 20_000_000
#: The most values one sample's activations may hold, summed over the layers' outputs.
MAX_ACTIVATIONS = 1 << 24
#: The largest feature width, unflattened size or normalized dimension.
MAX_DIM = 65_536
#: The most channels of a convolution or group norm.
MAX_CHANNELS = 4_096
#: The largest kernel size, stride, padding or dilation.
MAX_KERNEL = 64

Shape = tuple[int, ...]
REQUIRED = object()


@dataclass(frozen=True)
class Kind:
    """One allowed layer type: its parameters (checker, default), size, shape and constructor."""

    params: Mapping[str, tuple[Callable[[Any, str], Any], Any]]
    make: Callable[..., nn.Module]
    count: Callable[[dict[str, Any]], int] = lambda p: 0
    # (params, per-sample input shape or None for a flat input of unknown width, path) -> output
    shape: Callable[[dict[str, Any], Shape | None, str], Shape | None] = lambda p, s, path: s
    check: Callable[[dict[str, Any], str], None] = lambda p, path: None


def _int(low: int, high: int) -> Callable[[Any, str], int]:
    return lambda v, path: integer(v, path, low, high)


def _float(low: float, high: float, *, open_low: bool = False) -> Callable[[Any, str], float]:
    return lambda v, path: number(v, path, low, high, open_low=open_low)


def _ints(n: int, low: int, high: int) -> Callable[[Any, str], tuple[int, ...]]:
    return lambda v, path: int_or_ints(v, path, n, low, high)


def _sizes(v: Any, path: str) -> tuple[int, ...]:
    items = sequence(v, path, min_items=1, max_items=4)
    return tuple(integer(x, at(path, i), 1, MAX_DIM) for i, x in enumerate(items))


def _dims(v: Any, path: str) -> tuple[int, ...]:
    """``normalized_shape``: an integer or a list of 1 to 4 integers."""
    return _sizes(v, path) if isinstance(v, list | tuple) else (integer(v, path, 1, MAX_DIM),)


def _end_dim(v: Any, path: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v == -1:
        return -1
    return integer(v, path, 1, 8)


_BOOL = (boolean, True)
_EPS = (_float(0.0, 1.0, open_low=True), 1e-5)


def _need(shape: Shape | None, dims: int, path: str, what: str) -> Shape:
    if shape is None or len(shape) != dims:
        raise refuse(
            path,
            f"{what} needs each sample shaped with {dims} dimensions (channels first); "
            "put an Unflatten before it",
        )
    return shape


def _fix(shape: Shape | None, width: int) -> Shape:
    """A flat input of unknown width takes the width a layer expects."""
    return (width,) if shape is None else shape


def _linear_shape(p: dict[str, Any], s: Shape | None, path: str) -> Shape:
    s = _fix(s, p["in_features"])
    if s[-1] != p["in_features"]:
        raise refuse(path, f"in_features is {p['in_features']} but its input has {s[-1]}")
    return (*s[:-1], p["out_features"])


def _window(length: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (length + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _spatial(
    n: int, p: dict[str, Any], s: Shape | None, path: str, channels: int | None, what: str
) -> Shape:
    s = _need(s, n + 1, path, what)
    if channels is not None and s[0] != channels:
        raise refuse(path, f"in_channels is {channels} but its input has {s[0]} channels")
    stride = p.get("stride") or p["kernel_size"]
    dilation = p.get("dilation", (1,) * n)
    out = tuple(
        _window(length, k, st, pad, dil)
        for length, k, st, pad, dil in zip(
            s[1:], p["kernel_size"], stride, p["padding"], dilation, strict=True
        )
    )
    if min(out) < 1:
        raise refuse(path, f"its kernel is larger than its (padded) input {s[1:]}")
    return (p.get("out_channels", s[0]), *out)


def _conv(n: int) -> Kind:
    cls = nn.Conv1d if n == 1 else nn.Conv2d

    def check(p: dict[str, Any], path: str) -> None:
        if p["in_channels"] % p["groups"] or p["out_channels"] % p["groups"]:
            raise refuse(at(path, "groups"), "must divide in_channels and out_channels")

    def count(p: dict[str, Any]) -> int:
        kernel = math.prod(p["kernel_size"])
        weights = p["out_channels"] * (p["in_channels"] // p["groups"]) * kernel
        return int(weights + (p["out_channels"] if p["bias"] else 0))

    return Kind(
        params={
            "in_channels": (_int(1, MAX_CHANNELS), REQUIRED),
            "out_channels": (_int(1, MAX_CHANNELS), REQUIRED),
            "kernel_size": (_ints(n, 1, MAX_KERNEL), REQUIRED),
            "stride": (_ints(n, 1, MAX_KERNEL), (1,) * n),
            "padding": (_ints(n, 0, MAX_KERNEL), (0,) * n),
            "dilation": (_ints(n, 1, MAX_KERNEL), (1,) * n),
            "groups": (_int(1, MAX_CHANNELS), 1),
            "bias": _BOOL,
        },
        make=cls,
        count=count,
        shape=lambda p, s, path: _spatial(n, p, s, path, p["in_channels"], cls.__name__),
        check=check,
    )


def _pool(n: int, maximum: bool) -> Kind:
    name = f"{'Max' if maximum else 'Avg'}Pool{n}d"
    cls = getattr(nn, name)
    params: dict[str, tuple[Callable[[Any, str], Any], Any]] = {
        "kernel_size": (_ints(n, 1, MAX_KERNEL), REQUIRED),
        "stride": (_ints(n, 1, MAX_KERNEL), None),
        "padding": (_ints(n, 0, MAX_KERNEL), (0,) * n),
    }
    if maximum:
        params["dilation"] = (_ints(n, 1, MAX_KERNEL), (1,) * n)

    def check(p: dict[str, Any], path: str) -> None:
        if any(pad > k // 2 for pad, k in zip(p["padding"], p["kernel_size"], strict=True)):
            raise refuse(at(path, "padding"), "must be at most half the kernel size")

    return Kind(
        params=params,
        make=cls,
        shape=lambda p, s, path: _spatial(n, p, s, path, None, name),
        check=check,
    )


def _layer_norm_shape(p: dict[str, Any], s: Shape | None, path: str) -> Shape:
    dims = p["normalized_shape"]
    s = _fix(s, dims[0]) if len(dims) == 1 else s
    if s is None or tuple(s[len(s) - len(dims) :]) != dims:
        raise refuse(path, f"normalized_shape {list(dims)} is not the end of its input's shape")
    return s


def _group_norm_shape(p: dict[str, Any], s: Shape | None, path: str) -> Shape:
    s = _fix(s, p["num_channels"])
    if s[0] != p["num_channels"]:
        raise refuse(path, f"num_channels is {p['num_channels']} but its input has {s[0]}")
    return s


def _group_norm_check(p: dict[str, Any], path: str) -> None:
    if p["num_channels"] % p["num_groups"]:
        raise refuse(at(path, "num_groups"), "must divide num_channels")


def _flatten_shape(p: dict[str, Any], s: Shape | None, path: str) -> Shape | None:
    start, end = p["start_dim"] - 1, p["end_dim"]
    if s is None and start == 0 and end in (-1, 1):
        return None
    if s is None:
        raise refuse(path, "flattens dimensions its flat input does not have")
    end = len(s) - 1 if end == -1 else end - 1
    if not 0 <= start <= end < len(s):
        raise refuse(path, f"start_dim and end_dim do not fit its input's {len(s)} dimensions")
    return (*s[:start], math.prod(s[start : end + 1]), *s[end + 1 :])


def _unflatten_shape(p: dict[str, Any], s: Shape | None, path: str) -> Shape:
    sizes, index = p["unflattened_size"], p["dim"] - 1
    s = _fix(s, math.prod(sizes)) if index == 0 else s
    if s is None or index >= len(s) or s[index] != math.prod(sizes):
        raise refuse(path, "unflattened_size does not multiply to the size of that dimension")
    return (*s[:index], *sizes, *s[index + 1 :])


KINDS: dict[str, Kind] = {
    "Linear": Kind(
        params={
            "in_features": (_int(1, MAX_DIM), REQUIRED),
            "out_features": (_int(1, MAX_DIM), REQUIRED),
            "bias": _BOOL,
        },
        make=nn.Linear,
        count=lambda p: p["in_features"] * p["out_features"] + (p["out_features"] * p["bias"]),
        shape=_linear_shape,
    ),
    "Conv1d": _conv(1),
    "Conv2d": _conv(2),
    "LayerNorm": Kind(
        params={
            "normalized_shape": (_dims, REQUIRED),
            "eps": _EPS,
            "elementwise_affine": _BOOL,
            "bias": _BOOL,
        },
        make=nn.LayerNorm,
        count=lambda p: (
            math.prod(p["normalized_shape"]) * (p["elementwise_affine"] * (1 + p["bias"]))
        ),
        shape=_layer_norm_shape,
    ),
    "GroupNorm": Kind(
        params={
            "num_groups": (_int(1, MAX_CHANNELS), REQUIRED),
            "num_channels": (_int(1, MAX_CHANNELS), REQUIRED),
            "eps": _EPS,
            "affine": _BOOL,
        },
        make=nn.GroupNorm,
        count=lambda p: 2 * p["num_channels"] * p["affine"],
        shape=_group_norm_shape,
        check=_group_norm_check,
    ),
    "ReLU": Kind(params={}, make=nn.ReLU),
    "LeakyReLU": Kind(params={"negative_slope": (_float(-100.0, 100.0), 0.01)}, make=nn.LeakyReLU),
    "GELU": Kind(
        params={"approximate": (lambda v, p: choice(v, p, ("none", "tanh")), "none")},
        make=nn.GELU,
    ),
    "ELU": Kind(params={"alpha": (_float(0.0, 100.0, open_low=True), 1.0)}, make=nn.ELU),
    "SiLU": Kind(params={}, make=nn.SiLU),
    "Tanh": Kind(params={}, make=nn.Tanh),
    "Sigmoid": Kind(params={}, make=nn.Sigmoid),
    "Dropout": Kind(params={"p": (_float(0.0, 0.99), 0.5)}, make=nn.Dropout),
    "Flatten": Kind(
        params={"start_dim": (_int(1, 8), 1), "end_dim": (_end_dim, -1)},
        make=nn.Flatten,
        shape=_flatten_shape,
    ),
    "Unflatten": Kind(
        params={"dim": (_int(1, 8), 1), "unflattened_size": (_sizes, REQUIRED)},
        make=nn.Unflatten,
        shape=_unflatten_shape,
    ),
    "MaxPool1d": _pool(1, True),
    "MaxPool2d": _pool(2, True),
    "AvgPool1d": _pool(1, False),
    "AvgPool2d": _pool(2, False),
}


@dataclass(frozen=True)
class Layer:
    """One checked layer: its type, all its parameters (defaults filled in) and its path."""

    kind: str
    params: dict[str, Any]
    path: str

    def make(self) -> nn.Module:
        return KINDS[self.kind].make(**self.params)


@dataclass(frozen=True)
class Declared:
    """A checked network description: its layers and trainable parameter count."""

    layers: tuple[Layer, ...]
    parameters: int

    def trace(self, width: int | None = None) -> tuple[int | None, Shape | None, int]:
        """Trace one sample's shape: (input width, output shape, values held by the outputs).

        ``width`` is the input's; ``None`` lets the first layer that needs one fix it (the
        input width returned is then that, or ``None`` when no layer needs one).
        """
        shape: Shape | None = None if width is None else (width,)
        fixed, held = width, 0
        for layer in self.layers:
            before = shape
            shape = KINDS[layer.kind].shape(layer.params, shape, layer.path)
            if before is None and shape is not None:  # the flat input took this layer's width
                fixed = _width_taken(layer)
            held += math.prod(shape) if shape is not None else 0
            if held > MAX_ACTIVATIONS:
                raise refuse(
                    layer.path,
                    f"the outputs up to here hold more than {MAX_ACTIVATIONS} values per sample",
                )
        return fixed, shape, held

    def build(self) -> nn.Sequential:
        """The ``nn.Sequential`` of the layers (freshly initialized by torch)."""
        return nn.Sequential(*(layer.make() for layer in self.layers))


def _width_taken(layer: Layer) -> int:
    """The width of flat input ``layer`` expects (a layer that gives a flat input a shape)."""
    p = layer.params
    if layer.kind == "Unflatten":
        return math.prod(p["unflattened_size"])
    if layer.kind == "LayerNorm":
        return int(p["normalized_shape"][0])
    return int(p["in_features"] if layer.kind == "Linear" else p["num_channels"])


def _layer(value: Any, path: str) -> Layer:
    if not isinstance(value, Mapping):
        raise refuse(path, f"must be an object with a 'type', got {type(value).__name__}")
    kind = choice(value.get("type"), at(path, "type"), list(KINDS))
    spec = KINDS[kind]
    given = keys(value, path, ["type", *spec.params])
    params: dict[str, Any] = {}
    for name, (check, default) in spec.params.items():
        if name in given:
            params[name] = check(given[name], at(path, name))
        elif default is REQUIRED:
            raise refuse(path, f"{kind} needs {name}")
        else:
            params[name] = default
    spec.check(params, path)
    return Layer(kind, params, path)


def declare(spec: Any, path: str = "") -> Declared:
    """Check a network description and count its parameters; allocate nothing.

    Raises
    ------
    ConfigurationError
        Naming the path of the first thing wrong (``layers[2].out_features: ...``).
    """
    given = keys(spec, path, ["layers"], required=["layers"])
    items = sequence(given["layers"], at(path, "layers"), min_items=1, max_items=MAX_LAYERS)
    layers = tuple(_layer(item, at(at(path, "layers"), i)) for i, item in enumerate(items))
    total = 0
    for layer in layers:
        total += KINDS[layer.kind].count(layer.params)
        if total > MAX_PARAMETERS:
            raise refuse(
                layer.path, f"the layers up to here hold more than {MAX_PARAMETERS} parameters"
            )
    if total == 0:
        raise refuse(at(path, "layers"), "has no trainable parameters")
    declared = Declared(layers, total)
    declared.trace()
    return declared


def build_module(spec: Mapping[str, Any]) -> nn.Sequential:
    """Build the ``nn.Sequential`` a network description declares, after checking all of it.

    Parameters
    ----------
    spec : mapping
        ``{"layers": [{"type": ..., <keyword parameters>}, ...]}`` with types from
        :data:`KINDS` (Linear, Conv1d, Conv2d, LayerNorm, GroupNorm, ReLU, LeakyReLU,
        GELU, ELU, SiLU, Tanh, Sigmoid, Dropout, Flatten, Unflatten, Max/AvgPool1d/2d)
        and, per type, that layer's keyword parameters of ``torch.nn``.

    Raises
    ------
    ConfigurationError
        An unknown type or key, a wrong type, a value out of bounds, layers whose
        shapes do not fit together, more than :data:`MAX_LAYERS` layers or
        :data:`MAX_PARAMETERS` parameters; the message names the path.

    Examples
    --------
    >>> net = build_module({"layers": [
    ...     {"type": "Linear", "in_features": 4, "out_features": 8}, {"type": "ReLU"},
    ...     {"type": "Linear", "in_features": 8, "out_features": 3},
    ... ]})
    >>> sum(p.numel() for p in net.parameters())
    67
    >>> build_module({"layers": [{"type": "Linear", "in_features": 4, "out_features": 0}]})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: layers[0].out_features: must be an integer between ...
    """
    return declare(spec).build()
