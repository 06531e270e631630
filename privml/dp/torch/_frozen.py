"""The module's state besides its parameters: fixed for the whole run, checked before registering.

Why: DP-SGD's noise covers the parameter updates only. Everything else a
module carries (buffers, tensors or other values set as attributes on it, on
its submodules or on its parameters) is pickled with it into
``vault.models``; a forward pass that wrote batch rows there (with gradients
or under ``torch.no_grad()``) would publish them without noise. So a run
fingerprints that state before it touches data, and:

* before every step, :meth:`Frozen.moved` compares the buffers' and tensor
  attributes' names, identities, version counters and values, and those of the
  tensors and modules kept in containers or outside the registered tree (a
  write through ``.data``, NumPy or the storage moves no version; the values
  are compared with a copy, :class:`._contents.Contents`; the tensors are held,
  so no new one can take a freed one's identity);
* when the block ends, after the training wrappers came off,
  :meth:`Frozen.changed` compares the full fingerprint (the contents of every
  buffer and attribute, recursively, modules kept outside the tree included),
  so a new attribute or a mutated list is caught too.

The parameters' values are the step guard's to compare (:mod:`._guard`).

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

from ._contents import Contents, digest

__all__ = ["Frozen"]

# Flags torch itself flips (train()/eval(), backward-hook kind): no data in them.
_FLAGS = frozenset({"training", "_is_full_backward_hook"})
_DEPTH = 8


def _tensor(t: torch.Tensor) -> tuple[Any, ...]:
    return ("tensor", str(t.dtype), tuple(t.shape), digest(t))


def _digest(value: Any, depth: int = 0, registered: frozenset[int] = frozenset()) -> Any:
    """A fingerprint of ``value`` that changes when any data in it changes.

    ``registered``: the identities of the module tree's own modules, whose state is
    fingerprinted as such; any other module met here (kept in a list, or set with
    ``object.__setattr__``) is pickled with the model too, so its whole state counts.
    """
    if isinstance(value, torch.Tensor):
        return _tensor(value)
    if isinstance(value, nn.Module):
        if id(value) in registered:
            return ("module", id(value))
        if depth < _DEPTH:
            return ("unregistered module", _digest(vars(value), depth + 1, registered))
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, hashlib.sha256(value.tobytes()).hexdigest())
    if depth < _DEPTH:
        if isinstance(value, dict):
            return (
                "dict",
                tuple(
                    (_digest(k, depth + 1, registered), _digest(v, depth + 1, registered))
                    for k, v in value.items()
                ),
            )
        if isinstance(value, list | tuple):
            return (type(value).__name__, tuple(_digest(v, depth + 1, registered) for v in value))
    try:
        return ("pickle", hashlib.sha256(pickle.dumps(value)).hexdigest())
    except Exception:  # not picklable (closures, hooks): it cannot be registered; its identity
        return (
            "id",
            id(value),
            _digest(vars(value), depth + 1, registered)
            if hasattr(value, "__dict__") and depth < _DEPTH
            else None,
        )


def _fingerprint(module: nn.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tree = list(module.named_modules(remove_duplicate=False))
    registered = frozenset(id(sub) for _, sub in tree)
    for name, sub in tree:
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
                        out[f"attributes of parameter {at}{k}"] = _digest(vars(p), 0, registered)
            elif key == "_buffers":
                out[f"{at}<buffers>"] = tuple(value)
                for k, b in value.items():
                    out[f"buffer {at}{k}"] = _digest(b)
            else:
                out[f"attribute {at}{key}"] = _digest(value, 0, registered)
    return out


# Containers followed into, for modules and tensors kept outside the registered tree
# (``self.side = [nn.Linear(...)]``, ``object.__setattr__(self, "box", module)``): they are
# pickled with the model like any buffer.
_CONTAINERS = (list, tuple, dict, set, frozenset)
# A registered module's own tables, walked as such (parameters are the run's to check), and
# torch's hook tables (callables, which training wrappers add to and remove from).
_OWN = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"})


def _own(key: str) -> bool:
    return key in _OWN or (key.startswith("_") and "hooks" in key)


# type -> 1 tensor, 2 container or module to follow, 0 anything else: ``isinstance`` through
# torch's metaclass costs several times a dict lookup, for each of every module's attributes.
_KINDS: dict[type, int] = {}


def _kind(value: object) -> int:
    kind = type(value)
    found = _KINDS.get(kind)
    if found is None:
        if issubclass(kind, torch.Tensor):
            found = 1
        elif issubclass(kind, (nn.Module, *_CONTAINERS)):
            found = 2
        else:
            found = 0
        _KINDS[kind] = found
    return found


class _Walk:
    """One walk of a module's state besides its parameters: objects, versions, tensors.

    ``objects`` holds, in order, each module, submodule, buffer and tensor attribute with
    its name, and each tensor or module kept in a container or outside the registered
    tree; ``tensors`` the tensors among them (``names``: theirs, when asked for).
    Registered parameters (``skip``, by identity) are left to the run's own check.
    """

    def __init__(
        self,
        module: nn.Module,
        skip: set[int],
        named: bool = False,
        follow: dict[int, frozenset[str]] | None = None,
    ) -> None:
        self.objects: list[object] = []
        # per registered module: the attributes whose containers held tensors or modules,
        # followed. Given ``follow`` (a first walk's), only those are followed: training
        # wrappers add lists of their own to the layers (Opacus's activations) while a run
        # is on, and a layer's tuples of numbers (kernel_size, ...) need no walk each step.
        # What is added later is compared when the run ends (:meth:`Frozen.changed`).
        self.followed: dict[int, frozenset[str]] = {}
        self._follow_only = follow
        self._found = 0  # tensors and modules met in containers so far
        self.versions: list[int] = []
        self.tensors: list[torch.Tensor] = []
        self.names: list[str] | None = [] if named else None
        self._skip = skip
        self._root = module
        self._registered: set[int] | None = None  # found when a container is followed
        stack: list[tuple[str, nn.Module]] = [("", module)]
        while stack:
            name, sub = stack.pop()
            self._module(name, sub)
            for k, m in reversed(sub._modules.items()):
                if m is not None:  # names are built only when asked for (each step: not)
                    stack.append(((f"{name}.{k}" if name else k) if named else "", m))

    def _add(self, key: str | None, t: torch.Tensor, label: str) -> None:
        if key is not None:  # a table's own key (the same object while the entry stays)
            self.objects.append(key)
        self.objects.append(t)
        self._found += 1
        self.versions.append(t._version)
        self.tensors.append(t)
        if self.names is not None:
            self.names.append(label)

    def _module(self, name: str, sub: nn.Module) -> None:
        named = self.names is not None
        at = f"{name}." if name else ""
        objects = self.objects
        objects.append(sub)
        objects += sub._modules
        for k, b in sub._buffers.items():
            if b is None:
                objects += (k, b)
            else:
                self._add(k, b, f"buffer {at}{k}" if named else "")
        only = None if self._follow_only is None else self._follow_only.get(id(sub), frozenset())
        followed: list[str] = []
        for k, v in vars(sub).items():
            kind = _KINDS.get(type(v))
            if kind is None:
                kind = _kind(v)
            if kind == 0:
                continue
            if kind == 1:
                self._add(k, v, f"attribute {at}{k}" if named else "")
            elif kind == 2 and (k in only if only is not None else not _own(k)):
                before = self._found
                self._follow(v, f"attribute {at}{k}" if named else "", 0)
                if only is not None or self._found > before:
                    followed.append(k)
        if followed:
            self.followed[id(sub)] = frozenset(followed)

    def _follow(self, value: object, label: str, depth: int) -> None:
        """Tensors and unregistered modules in a container or an unregistered module."""
        if depth > _DEPTH:
            return
        kind = _kind(value)
        if kind == 1:
            assert isinstance(value, torch.Tensor)
            if id(value) not in self._skip:
                self._add(None, value, label)
        elif isinstance(value, nn.Module):
            self.objects.append(value)
            self._found += 1
            if self._registered is None:
                self._registered = {id(m) for m in self._root.modules()}
            if id(value) not in self._registered:
                for k, v in vars(value).items():
                    if _kind(v) and v is not None:
                        self._follow(v, f"{label}.{k}" if label else "", depth + 1)
        elif isinstance(value, dict):
            self.objects.append(value)
            # entries by position: a key may be data, never shown
            for i, (k, v) in enumerate(value.items()):
                if _kind(k):
                    self._follow(k, f"{label}/key {i}" if label else "", depth + 1)
                if _kind(v):
                    self._follow(v, f"{label}/{i}" if label else "", depth + 1)
        elif kind == 2:
            assert isinstance(value, list | tuple | set | frozenset)
            self.objects.append(value)
            for i, v in enumerate(value):
                if _kind(v):
                    self._follow(v, f"{label}/{i}" if label else "", depth + 1)


def _tensors(
    module: nn.Module, skip: set[int], follow: dict[int, frozenset[str]] | None = None
) -> dict[str, tuple[int, int]]:
    """Name -> identity and version of every tensor a step may not move."""
    walk = _Walk(module, skip, named=True, follow=follow)
    assert walk.names is not None
    return {name: (id(t), t._version) for name, t in zip(walk.names, walk.tensors, strict=True)}


def _differ(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class Frozen:
    """The fingerprint of ``module``'s non-parameter state, taken before the run touches data."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        # the module's registered parameters are the run's to check (by value, each step);
        # held, like everything compared here, so no other tensor can take one's identity
        self._params = list(module.parameters())
        self._skip = {id(p) for p in self._params}
        self._full = _fingerprint(module)
        # Held, so no tensor or module here can be freed and another take its id.
        self._follow = _Walk(module, self._skip).followed
        walk = _Walk(module, self._skip, follow=self._follow)  # as each step walks it
        self._objects, self._versions = walk.objects, walk.versions
        self._quick = _tensors(module, self._skip, self._follow)
        self._contents = Contents(walk.tensors)

    def moved(self) -> list[str]:
        """Tensors written, replaced, added or removed since the start (parameters aside).

        Every step asks, so the common answer (nothing) comes from the same objects and
        versions found in the same order and the same values (compared in a few
        operations: a write through ``.data`` or NumPy moves no version), without building
        the names.
        """
        walk = _Walk(self._module, self._skip, follow=self._follow)
        objects = walk.objects
        same = walk.versions == self._versions and len(objects) == len(self._objects)
        if same and all(a is b for a, b in zip(objects, self._objects, strict=True)):
            changed = self._contents.differ()
            if not changed:
                return []
            names = _Walk(self._module, self._skip, named=True, follow=self._follow).names
            assert names is not None
            return sorted({names[i] for i in changed})
        now = _tensors(self._module, self._skip, self._follow)
        return _differ(self._quick, now) or ["<submodules or containers>"]

    def changed(self) -> list[str]:
        """Everything but the parameters' values that differs from the start (full comparison)."""
        return _differ(self._full, _fingerprint(self._module))
