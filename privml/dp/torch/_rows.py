"""The run's rows, sealed away from the objects a run hands out.

A ``private_training`` block needs its scaled rows in memory to draw batches,
but nothing reachable from the run (loader, model, optimizer, their
attributes and closures) holds them: the loader keeps an opaque token, and
only :func:`take` turns a token and the indices of one Poisson sample into
that batch's tensors. :func:`drop` forgets the rows when the block ends, so
a loader kept past its block cannot draw again. This keeps the table out of
the run's object graph; it is not a boundary against code in the same
process, which can read memory (server-side training is the boundary).
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

from ...exceptions import ConfigurationError

__all__ = ["drop", "row_shape", "seal", "take"]

_SEALED: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def seal(X: torch.Tensor, y: torch.Tensor) -> str:
    """Keep ``X`` and ``y`` (one row each per record) under a new random token."""
    token = secrets.token_hex(16)
    _SEALED[token] = (X, y)
    return token


def take(token: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh tensors holding the rows ``indices`` of the sealed table (a copy, not a view)."""
    try:
        X, y = _SEALED[token]
    except KeyError:
        raise ConfigurationError(
            "this run has ended: its loader draws no more batches; start a new "
            "private_training(...) block"
        ) from None
    index = torch.as_tensor(indices, dtype=torch.long)
    return X[index], y[index]


def row_shape(token: str) -> tuple[tuple[int, ...], torch.dtype]:
    """The shape and dtype of one sealed feature row (no values)."""
    X, _ = _SEALED[token]
    return tuple(X.shape[1:]), X.dtype


def drop(token: str) -> None:
    """Forget the rows sealed under ``token`` (nothing happens if they are gone already)."""
    _SEALED.pop(token, None)
