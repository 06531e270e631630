"""DP-SGD input from one tensor or sequence column: scaled by the schema, never by the data.

A tensor field's values become float32 arrays of shape ``(N, *shape)``, each
element clipped to the declared bounds and mapped into [0, 1] by them (as
scalar features are); a sequence field's become int64 ids of shape
``(N, max_length)``, padded at the end with the field's pad id (its vocabulary
size, which no token has). A missing value is all zeros (tensor) or all padding
(sequence). Such a column is a model's only feature: a network that mixes an
image with scalar columns takes them through separate inputs, which a single
``features=`` list does not describe.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from privml import Field, Schema
>>> schema = Schema({"codes": Field.sequence(max_length=4, vocabulary=10)})
>>> scaler = ArrayScaler.for_field(schema, "codes")
>>> scaler.tensor(pd.DataFrame({"codes": [np.array([3, 1]), np.array([9])]}))
tensor([[ 3,  1, 10, 10],
        [ 9, 10, 10, 10]])
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..._array_fields import ARRAY_KINDS
from ...exceptions import ConfigurationError
from ...schema import Field, Schema
from ..scaling import SchemaScaler

__all__ = ["ArrayScaler", "array_feature"]


def array_feature(schema: Schema, features: list[str]) -> str | None:
    """The one tensor or sequence feature of ``features``, or None when all are scalar.

    Raises
    ------
    ConfigurationError
        An array feature is given with other features.
    """
    arrays = [f for f in features if f in schema and schema[f].kind in ARRAY_KINDS]
    if not arrays:
        return None
    if len(features) != 1:
        raise ConfigurationError(
            f"features={features!r} mixes {arrays[0]!r}, a {schema[arrays[0]].kind} field, with "
            "other features: a tensor or sequence field must be a model's only feature "
            f"(features=[{arrays[0]!r}]); train on the scalar columns in another model"
        )
    return arrays[0]


class ArrayScaler(SchemaScaler):
    """The fixed input view of one tensor or sequence column (from the schema, not the data).

    Parameters
    ----------
    column : str
        The feature column.
    kind : {"tensor", "sequence"}
    shape : tuple of int
        A tensor's shape; ``(max_length,)`` for a sequence.
    dtype : str
        A tensor's declared element type (``"int64"`` for a sequence).
    value_bounds : (float, float) or None
        A tensor's declared bounds.
    vocabulary : int or None
        A sequence's vocabulary size (also its pad id).
    """

    def __init__(
        self,
        column: str = "",
        kind: str = "tensor",
        shape: tuple[int, ...] = (1,),
        dtype: str = "float32",
        value_bounds: tuple[float, float] | None = None,
        vocabulary: int | None = None,
    ) -> None:
        super().__init__(features=[column])
        self.column = column
        self.kind = kind
        self.shape = shape
        self.dtype = dtype
        self.value_bounds = value_bounds
        self.vocabulary = vocabulary

    @classmethod
    def for_field(cls, schema: Schema, column: str) -> ArrayScaler:
        """The view of ``schema[column]`` (a tensor or sequence field), fitted."""
        f = schema[column]
        if f.kind == "tensor":
            assert f.shape is not None and f.dtype is not None
            made = cls(column, "tensor", tuple(f.shape), f.dtype, f.bounds, None)
        else:
            made = cls(column, "sequence", (int(f.max_length or 0),), "int64", None, f.vocabulary)
        return made.fit(None)

    def field(self) -> Field:
        """The field this view reads (to check new values as the vault did)."""
        if self.kind == "tensor":
            assert self.value_bounds is not None
            return Field.tensor(shape=self.shape, dtype=self.dtype, bounds=self.value_bounds)
        assert self.vocabulary is not None
        return Field.sequence(max_length=self.shape[0], vocabulary=self.vocabulary)

    def fit(self, X: Any, y: Any = None) -> ArrayScaler:
        """Record the layout (one column of ``prod(shape)`` values); reads nothing."""
        self.feature_names_out_ = np.array([self.column], dtype=object)
        self.n_features_in_ = 1
        self.divisor_ = 1.0
        return self

    @property
    def width(self) -> int:
        """The number of values one row gives the network."""
        return math.prod(self.shape)

    def transform(self, X: Any) -> np.ndarray:
        """The rows of ``X[column]`` as the network sees them (see :meth:`tensor`)."""
        return np.asarray(self.tensor(X).numpy())

    def tensor(self, X: pd.DataFrame) -> torch.Tensor:
        """float32 ``(N, *shape)`` in [0, 1] (tensor) or int64 ``(N, max_length)`` (sequence).

        Values are checked as the vault checks them on intake (shape, type, NaN,
        vocabulary, length), except that tensor elements outside the bounds are
        clipped into them; a problem raises :class:`~privml.exceptions.SchemaError`.
        """
        if not isinstance(X, pd.DataFrame) or self.column not in X.columns:
            raise ConfigurationError(f"expected a DataFrame with the column {self.column!r}")
        # checked as on intake: a frame given to predict may hold anything
        schema = Schema({self.column: replace(self.field(), nullable=True)})
        frame = pd.DataFrame({self.column: X[self.column].reset_index(drop=True)})
        column = schema.validate(frame, on_violation="clip")[0][self.column]
        rows = len(column)
        if self.kind == "tensor":
            return self._images(column, rows)
        return self._ids(column, rows)

    def _images(self, column: pd.Series, rows: int) -> torch.Tensor:
        assert self.value_bounds is not None
        lo, hi = self.value_bounds
        out = np.zeros((rows, self.width), dtype=np.float32)
        present = column.notna().to_numpy()
        if present.any():
            values = np.stack([np.asarray(v).reshape(-1) for v in column[present]])
            out[present] = (np.clip(values.astype(np.float64), lo, hi) - lo) / (hi - lo)
        return torch.as_tensor(out.reshape(rows, *self.shape))

    def _ids(self, column: pd.Series, rows: int) -> torch.Tensor:
        assert self.vocabulary is not None
        out = np.full((rows, self.shape[0]), self.vocabulary, dtype=np.int64)
        for i, v in enumerate(column):
            if v is not None:  # validated: at most max_length ids below the vocabulary size
                out[i, : len(v)] = v
        return torch.as_tensor(out)
