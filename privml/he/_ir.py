"""The model as privml.he sees it: affine layers separated by polynomial activations.

Every supported model (scikit-learn linear models and pipelines, torch
``nn.Sequential``) is lowered to a :class:`Network`: ``Affine``, then any number
of ``(Polynomial, Affine)`` pairs. Nothing here touches encryption: this is the
plaintext meaning of what the server computes on ciphertexts.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..exceptions import ConfigurationError

__all__ = ["Affine", "Network", "Polynomial", "lower"]


@dataclass(frozen=True, eq=False)
class Affine:
    """``x -> weight @ x + bias``; ``weight`` has shape (out, in)."""

    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def identity(cls, width: int) -> Affine:
        return cls(np.eye(width), np.zeros(width))


@dataclass(frozen=True, eq=False)
class Polynomial:
    """An elementwise activation ``sum(coeffs[k] * x**k)``.

    ``name`` says what it stands for (``"x**2"``, ``"ReLU"``); ``fit_range`` is the
    interval it was fitted on, ``max_fit_error`` the largest gap to the real
    activation there (0 when the activation is itself this polynomial).
    """

    coeffs: tuple[float, ...]
    name: str
    fit_range: tuple[float, float] | None = None
    max_fit_error: float = 0.0

    @property
    def degree(self) -> int:
        """Highest power with a non-zero coefficient (0 for a constant)."""
        nonzero = [k for k, c in enumerate(self.coeffs) if c != 0.0]
        return max(nonzero, default=0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.polynomial.polynomial.polyval(x, np.asarray(self.coeffs, dtype=float))
        return out


@dataclass(frozen=True, eq=False)
class Network:
    """``layers[0]``, then ``activations[i]`` followed by ``layers[i + 1]``."""

    layers: tuple[Affine, ...]
    activations: tuple[Polynomial, ...]

    @property
    def n_features(self) -> int:
        return int(self.layers[0].weight.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.layers[-1].weight.shape[0])

    @property
    def exact(self) -> bool:
        """Whether every activation is computed exactly (no polynomial approximation)."""
        return all(a.max_fit_error == 0.0 for a in self.activations)

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Plaintext scores, shape (n_samples, n_outputs), in float64."""
        h = np.asarray(X, dtype=float)
        for i, layer in enumerate(self.layers):
            if i:
                h = self.activations[i - 1](h)
            h = h @ layer.weight.T + layer.bias
        return h

    def layer_inputs(self, X: np.ndarray) -> list[np.ndarray]:
        """What each layer sees: ``X``, then each layer's output before the activation."""
        h = np.asarray(X, dtype=float)
        seen = [h]
        for i, layer in enumerate(self.layers[:-1]):
            if i:
                h = self.activations[i - 1](h)
            h = h @ layer.weight.T + layer.bias
            seen.append(h)
        return seen

    def terms(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Layer ``i`` with the activation before it folded in.

        Returns ``(coef, bias)``: ``coef[m, j, k - 1]`` multiplies the k-th power of
        input ``j`` for output ``m`` (shape (out, in, degree)); the activation's
        constant term is folded into ``bias``. This is what the server evaluates.
        """
        layer = self.layers[i]
        if i == 0:
            return layer.weight[:, :, None], layer.bias
        coeffs = np.asarray(self.activations[i - 1].coeffs, dtype=float)
        degree = max(self.activations[i - 1].degree, 1)
        coef = layer.weight[:, :, None] * coeffs[None, None, 1 : degree + 1]
        return coef, layer.bias + layer.weight.sum(axis=1) * coeffs[0]

    def fingerprint(self) -> str:
        """A hash of the weights and activations: changes whenever the model does."""
        h = hashlib.sha256(b"privml.he network v1")
        for layer in self.layers:
            for array in (layer.weight, layer.bias):
                h.update(repr(array.shape).encode())
                h.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
        for act in self.activations:
            h.update(np.asarray(act.coeffs, dtype="<f8").tobytes())
        return h.hexdigest()[:32]


def lower(ops: Sequence[Affine | Polynomial], *, n_features: int) -> Network:
    """Normalize a sequence of layers into a :class:`Network`.

    Consecutive affine layers are multiplied out; activations of degree 0 or 1
    (identity, dropout at inference, ...) are folded into the affine layers
    around them; an activation at either end gets an identity layer beside it
    (which costs one multiplicative level).
    """
    items: list[Affine | Polynomial] = []
    for op in ops:
        if isinstance(op, Polynomial) and op.degree <= 1:
            op = _as_affine(op, _width(items, n_features))
        if isinstance(op, Affine) and items and isinstance(items[-1], Affine):
            items[-1] = _compose(items[-1], op)
        else:
            items.append(op)
    if not items:
        raise ConfigurationError("the model has no layers to compile")
    if isinstance(items[0], Polynomial):
        items.insert(0, Affine.identity(n_features))
    if isinstance(items[-1], Polynomial):
        items.append(Affine.identity(_width(items, n_features)))
    layers = tuple(op for op in items if isinstance(op, Affine))
    activations = tuple(op for op in items if isinstance(op, Polynomial))
    for prev, nxt in itertools.pairwise(layers):
        if prev.weight.shape[0] != nxt.weight.shape[1]:
            raise ConfigurationError(
                f"layer shapes do not chain: {prev.weight.shape[0]} outputs feed a layer "
                f"expecting {nxt.weight.shape[1]} inputs"
            )
    return Network(layers, activations)


def _width(items: Sequence[Affine | Polynomial], n_features: int) -> int:
    for op in reversed(items):
        if isinstance(op, Affine):
            return int(op.weight.shape[0])
    return n_features


def _as_affine(poly: Polynomial, width: int) -> Affine:
    a0 = poly.coeffs[0] if poly.coeffs else 0.0
    a1 = poly.coeffs[1] if len(poly.coeffs) > 1 else 0.0
    return Affine(np.eye(width) * a1, np.full(width, a0))


def _compose(first: Affine, second: Affine) -> Affine:
    if second.weight.shape[1] != first.weight.shape[0]:
        raise ConfigurationError(
            f"layer shapes do not chain: {first.weight.shape[0]} outputs feed a layer "
            f"expecting {second.weight.shape[1]} inputs"
        )
    return Affine(second.weight @ first.weight, second.weight @ first.bias + second.bias)
