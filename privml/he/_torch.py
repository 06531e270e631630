"""Lowering a torch ``nn.Sequential`` of Linear layers and elementwise activations.

Each non-Linear module is probed on a grid to check that it acts elementwise
and identically on every feature, then replaced by the least-squares
polynomial of degree ``activation_degree`` over the range its inputs take
(from the calibration data, or bounded from ``input_range``). An activation
that already is such a polynomial (``x * x``) is reproduced exactly.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from ._ir import Affine, Polynomial
from ._output import LINKS, OutputSpec
from ._source import Source

__all__ = ["is_torch_model", "lower_torch", "torch_n_features"]

_GRID = 513
_WIDEN = 0.1  # fit on the calibration range widened by 10% on each side
_EXACT = 1e-5  # relative residual below which the activation is taken to be the polynomial


def is_torch_model(model: object) -> bool:
    """Whether ``model`` is a torch module (without importing torch if it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def torch_n_features(model: Any) -> int:
    """Inputs of the first ``nn.Linear`` in ``model``."""
    for module in model.modules():
        if type(module).__name__ == "Linear" and hasattr(module, "in_features"):
            return int(module.in_features)
    raise ConfigurationError(f"the {type(model).__name__} has no nn.Linear layer to compile")


def lower_torch(
    model: Any,
    *,
    calibration: np.ndarray | None,
    input_bound: np.ndarray | None,
    degree: int,
    link: str | None,
) -> Source:
    """Lower ``model``; ``input_bound`` bounds |x| per feature when there is no calibration."""
    import torch

    if not isinstance(model, torch.nn.Sequential):
        raise ConfigurationError(
            f"privml.he compiles torch nn.Sequential models, got {type(model).__name__}; "
            "put its Linear layers and activations in an nn.Sequential"
        )
    net = copy.deepcopy(model).eval()  # probe without touching the caller's model
    modules = _flatten(net)
    linears = [m for m in modules if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ConfigurationError("the nn.Sequential has no nn.Linear layer to compile")
    dtype = linears[0].weight.dtype
    n_features = int(linears[0].in_features)
    h = None if calibration is None else np.asarray(calibration, dtype=float)
    bound = None if input_bound is None else np.asarray(input_bound, dtype=float)
    ops: list[Affine | Polynomial] = []
    names = []
    width = n_features
    for position, module in enumerate(modules):
        if isinstance(module, torch.nn.Linear):
            if module.in_features != width:
                raise ConfigurationError(
                    f"layer shapes do not chain: module {position} (Linear) expects "
                    f"{module.in_features} inputs but receives {width}"
                )
            weight = module.weight.detach().to(torch.float64).numpy().copy()
            bias = (
                np.zeros(weight.shape[0])
                if module.bias is None
                else module.bias.detach().to(torch.float64).numpy().copy()
            )
            ops.append(Affine(weight, bias))
            width = int(weight.shape[0])
            h = None if h is None else h @ weight.T + bias
            bound = None if bound is None else np.abs(bias) + np.abs(weight) @ bound
            names.append(f"Linear({weight.shape[1]}, {weight.shape[0]})")
            continue
        poly = _fit(module, position, h, bound, width, degree, dtype)
        ops.append(poly)
        h = None if h is None else poly(h)
        if bound is not None:
            top = float(bound.max(initial=0.0))
            value = sum(abs(c) * top**k for k, c in enumerate(poly.coeffs))
            bound = np.full(width, value)
        names.append(poly.name)
    n_out = int(linears[-1].out_features)
    return Source(
        ops=tuple(ops),
        n_features=n_features,
        output=_output(link, n_out),
        description="Sequential(" + ", ".join(names) + ")",
        reference=lambda X: _run(net, X, dtype),
    )


def _flatten(module: Any) -> list[Any]:
    import torch

    out: list[Any] = []
    for child in module.children():
        out += _flatten(child) if isinstance(child, torch.nn.Sequential) else [child]
    return out


def _run(net: Any, X: np.ndarray, dtype: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = net(torch.as_tensor(np.asarray(X, dtype=float), dtype=dtype))
    return np.asarray(out.to(torch.float64).numpy()).reshape(len(X), -1)


def _output(link: str | None, n_out: int) -> OutputSpec:
    link = link or "identity"
    if link not in ("identity", "sigmoid", "softmax"):
        raise ConfigurationError(
            f"link for a torch model must be 'identity', 'sigmoid' or 'softmax' "
            f"(of {LINKS}), got {link!r}"
        )
    if link == "softmax" and n_out < 2:
        raise ConfigurationError("link='softmax' needs at least two outputs")
    classes: tuple[Any, ...] | None = None
    if n_out > 1:
        classes = tuple(range(n_out))
    elif link == "sigmoid":
        classes = (0, 1)
    return OutputSpec(link, classes, squeeze=False)


def _fit(
    module: Any,
    position: int,
    h: np.ndarray | None,
    bound: np.ndarray | None,
    width: int,
    degree: int,
    dtype: Any,
) -> Polynomial:
    name = type(module).__name__
    if h is not None:
        lo, hi = float(h.min()), float(h.max())
        pad = _WIDEN * max(hi - lo, 1e-6)
        lo, hi = lo - pad, hi + pad
    elif bound is not None:
        top = max(float(bound.max(initial=0.0)), 1e-6)
        lo, hi = -top, top
    else:
        lo, hi = -1.0, 1.0
    grid = np.linspace(lo, hi, _GRID)
    y = _probe(module, name, position, grid, width, dtype)
    coeffs = np.polynomial.polynomial.polyfit(grid, y, degree)
    error = float(np.max(np.abs(np.polynomial.polynomial.polyval(grid, coeffs) - y)))
    scale = max(1.0, float(np.max(np.abs(y))))
    if error <= _EXACT * scale:
        coeffs[np.abs(coeffs) <= _EXACT * np.max(np.abs(coeffs))] = 0.0
        return Polynomial(tuple(float(c) for c in coeffs), _poly_name(coeffs, name))
    if h is None and bound is None:
        raise ConfigurationError(
            f"activation {name} (module {position}) is not a polynomial of degree <= {degree}, "
            "so privml.he must fit one over the values it will see: pass calibration=X_sample "
            "or input_range=(low, high) to compile"
        )
    return Polynomial(
        tuple(float(c) for c in coeffs), name, fit_range=(lo, hi), max_fit_error=error
    )


def _poly_name(coeffs: np.ndarray, name: str) -> str:
    nonzero = [(k, c) for k, c in enumerate(coeffs) if c != 0.0]
    if len(nonzero) == 1 and abs(nonzero[0][1] - 1.0) < _EXACT:
        k = nonzero[0][0]
        return "identity" if k == 1 else f"x**{k}"
    return f"{name} (polynomial)"


def _probe(
    module: Any, name: str, position: int, grid: np.ndarray, width: int, dtype: Any
) -> np.ndarray:
    """``module`` on ``grid``, after checking it is elementwise and the same on every feature."""
    import torch

    probe = np.stack([np.roll(grid, c) for c in range(width)], axis=1)
    try:
        with torch.no_grad():
            out = module(torch.as_tensor(probe, dtype=dtype)).to(torch.float64).numpy()
    except Exception as err:
        raise _not_elementwise(name, position, f"it failed on a probe: {err}") from err
    if out.shape != probe.shape:
        raise _not_elementwise(name, position, f"it maps shape {probe.shape} to {out.shape}")
    y = out[:, 0]
    tol = 1e-5 * (1.0 + float(np.max(np.abs(y))))
    for c in range(1, width):
        if not np.allclose(out[:, c], np.roll(y, c), rtol=0.0, atol=tol):
            raise _not_elementwise(name, position, "its outputs depend on the feature position")
    return np.asarray(y, dtype=float)


def _not_elementwise(name: str, position: int, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"module {position} ({name}) is not an elementwise activation: {why}. privml.he "
        "compiles nn.Sequential models of nn.Linear layers and elementwise activations "
        "(x**2, ReLU, Tanh, Sigmoid, ...); fold normalization layers into the Linear weights"
    )
