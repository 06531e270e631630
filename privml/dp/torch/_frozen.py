"""The module's state besides its parameters: fixed for the whole run, checked before registering.

Why: DP-SGD's noise covers the parameter updates only. Everything else a
module carries (buffers, tensors or other values set as attributes on it, on
its submodules or on its parameters) is pickled with it into
``vault.models``; a forward pass that wrote batch rows there (with gradients
or under ``torch.no_grad()``) would publish them without noise. So a run
fingerprints that state before it touches data, and:

* before every step, :meth:`Frozen.moved` compares the buffers' and tensor
  attributes' names, identities and version counters (cheap: no data is read;
  the tensors are held, so no new one can take a freed one's identity);
* when the block ends, after the training wrappers came off,
  :meth:`Frozen.changed` compares the full fingerprint (the contents of every
  buffer and attribute, recursively), so a write that restored the version,
  a new attribute or a mutated list is caught too.

Either finding stops the run and keeps it from registering a model. Names of
what changed are reported, never values. The ``training`` flag (``eval()`` /
``train()``) carries no data and is not part of the fingerprint.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Frozen"]

# Flags torch itself flips (train()/eval(), backward-hook kind): no data in them.
_FLAGS = frozenset({"training", "_is_full_backward_hook"})
_DEPTH = 8


def _tensor(t: torch.Tensor) -> tuple[Any, ...]:
    flat = t.detach().cpu().contiguous().reshape(-1)
    try:
        raw = flat.view(torch.uint8).numpy().tobytes()
    except (RuntimeError, TypeError):  # dtypes numpy cannot view: fall back to their text
        raw = repr(flat.tolist()).encode()
    return ("tensor", str(t.dtype), tuple(t.shape), hashlib.sha256(raw).hexdigest())


def _digest(value: Any, depth: int = 0) -> Any:
    """A fingerprint of ``value`` that changes when any data in it changes."""
    if isinstance(value, torch.Tensor):
        return _tensor(value)
    if isinstance(value, nn.Module):
        return ("module", id(value))  # its own state is fingerprinted as a submodule
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, hashlib.sha256(value.tobytes()).hexdigest())
    if depth < _DEPTH:
        if isinstance(value, dict):
            return (
                "dict",
                tuple((_digest(k, depth + 1), _digest(v, depth + 1)) for k, v in value.items()),
            )
        if isinstance(value, list | tuple):
            return (type(value).__name__, tuple(_digest(v, depth + 1) for v in value))
    try:
        return ("pickle", hashlib.sha256(pickle.dumps(value)).hexdigest())
    except Exception:  # not picklable (closures, hooks): it cannot be registered; its identity
        return (
            "id",
            id(value),
            _digest(vars(value), depth + 1)
            if hasattr(value, "__dict__") and depth < _DEPTH
            else None,
        )


def _fingerprint(module: nn.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        at = f"{name}." if name else ""
        for key, value in vars(sub).items():
            if key in _FLAGS:
                continue
            if key == "_modules":
                out[f"{at}<submodules>"] = tuple((k, id(m)) for k, m in value.items())
            elif key == "_parameters":
                out[f"{at}<parameters>"] = tuple((k, id(p)) for k, p in value.items())
                for k, p in value.items():
                    if p is not None:
                        out[f"attributes of parameter {at}{k}"] = _digest(vars(p))
            elif key == "_buffers":
                out[f"{at}<buffers>"] = tuple(value)
                for k, b in value.items():
                    out[f"buffer {at}{k}"] = _digest(b)
            else:
                out[f"attribute {at}{key}"] = _digest(value)
    return out


def _tensors(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Identity and version of every buffer and tensor attribute (what a step may not move)."""
    out: dict[str, tuple[int, int]] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        at = f"{name}." if name else ""
        for k, b in sub._buffers.items():
            if b is not None:
                out[f"buffer {at}{k}"] = (id(b), b._version)
        for k, v in vars(sub).items():
            if isinstance(v, torch.Tensor):
                out[f"attribute {at}{k}"] = (id(v), v._version)
    return out


# type -> whether it is a tensor type: ``isinstance(v, torch.Tensor)`` costs several times
# a dict lookup, for each of the dozens of attributes every module has.
_TENSOR_TYPES: dict[type, bool] = {}


def _walk(module: nn.Module) -> tuple[list[object], list[int]]:
    """What :func:`_tensors` depends on, unnamed: each module, and each submodule's, buffer's
    and tensor attribute's name and object, compared by identity; the tensors' versions."""
    objects: list[object] = []
    versions: list[int] = []
    stack = [module]
    while stack:
        sub = stack.pop()
        objects.append(sub)
        for k, b in sub._buffers.items():
            objects += (k, b)
            if b is not None:
                versions.append(b._version)
        for k, v in vars(sub).items():
            kind = type(v)
            tensor = _TENSOR_TYPES.get(kind)
            if tensor is None:
                tensor = _TENSOR_TYPES[kind] = issubclass(kind, torch.Tensor)
            if tensor:
                objects += (k, v)
                versions.append(v._version)
        for k, m in sub._modules.items():
            objects.append(k)
            if m is not None:
                stack.append(m)
    return objects, versions


def _differ(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class Frozen:
    """The fingerprint of ``module``'s non-parameter state, taken before the run touches data."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._full = _fingerprint(module)
        self._quick = _tensors(module)
        # Held, so no tensor or module here can be freed and another take its id.
        self._objects, self._versions = _walk(module)

    def moved(self) -> list[str]:
        """Buffers and tensor attributes written, replaced, added or removed since the start.

        Every step asks, so the common answer (nothing) comes from the same objects and
        versions found in the same order, without building the names.
        """
        objects, versions = _walk(self._module)
        same = versions == self._versions and len(objects) == len(self._objects)
        if same and all(a is b for a, b in zip(objects, self._objects, strict=True)):
            return []
        return _differ(self._quick, _tensors(self._module))

    def changed(self) -> list[str]:
        """Everything but the parameters' values that differs from the start (full comparison)."""
        return _differ(self._full, _fingerprint(self._module))
