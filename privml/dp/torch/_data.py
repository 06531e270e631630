"""Training tensors from a session's values: features scaled by the schema, targets encoded by it.

Nothing here is learned from the data: numeric features are clipped to their
declared bounds and mapped into [0, 1], categoricals one-hot encoded by their
declared categories (privml's :class:`~privml.dp.SchemaScaler`), a categorical
target becomes class indices in its declared order, and a numeric one is
clipped to its bounds and mapped into [0, 1] by them (predictions are mapped
back). Missing feature values become 0 (the lower bound).

One tensor or sequence field may be the only feature instead
(:mod:`privml.dp.torch._array_input`): a tensor gives float32 batches of shape
``(B, *shape)`` in [0, 1] by its bounds, a sequence int64 ids ``(B, max_length)``
padded with its pad id (the vocabulary size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...exceptions import ConfigurationError
from ...schema import Schema
from .._fit import _scaler
from ..scaling import SchemaScaler
from ._array_input import ArrayScaler, array_feature

__all__ = [
    "Encoding",
    "Task",
    "default_criterion",
    "inputs",
    "prepare",
    "scaler_for",
    "task_of",
]

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Encoding:
    """How the feature and target tensors were made from the columns (no values)."""

    scaler: SchemaScaler
    task: Task
    classes: list[Any] | None
    target_bounds: tuple[float, float] | None


def task_of(schema: Schema, target: str) -> tuple[Task, list[Any] | None]:
    """Classification for a categorical target (with its classes), regression for a numeric one."""
    if target not in schema:
        raise ConfigurationError(f"no target column {target!r} in the schema")
    field = schema[target]
    if field.kind == "categorical":
        return "classification", list(field.categories or ())
    if field.kind in ("numeric", "integer"):
        if field.bounds is None:
            raise ConfigurationError(f"numeric target {target!r} needs declared bounds")
        return "regression", None
    raise ConfigurationError(
        f"target {target!r} is {field.kind}; it must be categorical (classification) "
        "or numeric with bounds (regression)"
    )


def scaler_for(schema: Schema, features: Sequence[str]) -> SchemaScaler:
    """The fixed feature scaler given by the schema (no privacy cost)."""
    if isinstance(features, str) or not features:
        raise ConfigurationError("features= takes a non-empty list of column names")
    array = array_feature(schema, list(features))
    if array is not None:
        return ArrayScaler.for_field(schema, array)
    return _scaler(schema, list(features), normed=False)


def prepare(
    schema: Schema,
    frame: pd.DataFrame,
    features: Sequence[str],
    target: str,
    scaler: SchemaScaler,
) -> tuple[torch.Tensor, torch.Tensor, Encoding]:
    """Tensors for ``frame``: float32 features; int64 classes or float32 ``(N, 1)`` in [0, 1]."""
    task, classes = task_of(schema, target)
    column = frame[target]
    if column.isna().any():
        raise ConfigurationError(
            f"target {target!r} has missing values; DP-SGD needs a target on every row "
            "(add a version of the dataset without them)"
        )
    if task == "classification":
        assert classes is not None
        codes = pd.Categorical(column.astype(object), categories=classes).codes
        y = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        bounds = None
    else:
        bounds_ = schema[target].bounds
        assert bounds_ is not None  # task_of checked it
        lo, hi = bounds_
        values = (np.clip(column.to_numpy(dtype=float), lo, hi) - lo) / (hi - lo)
        y = torch.as_tensor(values, dtype=torch.float32).reshape(-1, 1)
        bounds = (float(lo), float(hi))
    return inputs(scaler, frame, features), y, Encoding(scaler, task, classes, bounds)


def inputs(scaler: SchemaScaler, frame: pd.DataFrame, features: Sequence[str]) -> torch.Tensor:
    """The network's input for the rows of ``frame``: scaled scalars, or one array column."""
    if isinstance(scaler, ArrayScaler):
        return scaler.tensor(frame)
    X = np.nan_to_num(scaler.transform(frame[list(features)]), nan=0.0)
    return torch.as_tensor(X, dtype=torch.float32)


def default_criterion(task: Task) -> nn.Module:
    """Cross-entropy for classification, mean squared error for regression."""
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
