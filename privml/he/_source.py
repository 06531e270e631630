"""What an adapter (scikit-learn, torch) hands to ``compile``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._ir import Affine, Polynomial
from ._output import OutputSpec

__all__ = ["Source"]


@dataclass(frozen=True, eq=False)
class Source:
    """A model lowered to layers, with what is known about its inputs and outputs.

    ``reference`` computes the source model's own scores (shape (n, k)) in
    plaintext, for accuracy checks; ``declared_range`` is an input range the
    model itself enforces by clipping (a ``MinMaxScaler(clip=True)``, privml's
    ``SchemaScaler``), if any.
    """

    ops: tuple[Affine | Polynomial, ...]
    n_features: int
    output: OutputSpec
    description: str
    reference: Callable[[np.ndarray], np.ndarray]
    declared_range: tuple[np.ndarray, np.ndarray] | None = None
