"""Rows of X in the form the model takes, and how well predictions on them agree.

No Python loop here runs over records: rows are selected with ``iloc``/fancy
indexing and columns replaced whole, each in its own dtype so that a pipeline
(one-hot encoders, categorical dtypes) sees the kind of data it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

CLASSIFICATION = "classification"
REGRESSION = "regression"


class Table:
    """``X`` as given (a DataFrame or a 2-D ndarray), with row selection and column swaps."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.is_frame = isinstance(data, pd.DataFrame)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def column(self, position: int) -> Array:
        if self.is_frame:
            return np.asarray(self.data.iloc[:, position].to_numpy())
        return np.asarray(self.data[:, position])

    def take(self, rows: IntArray) -> Table:
        if self.is_frame:
            return Table(self.data.iloc[rows].reset_index(drop=True))
        return Table(self.data[rows])

    def tile(self, rows: IntArray, times: int) -> Table:
        """``rows`` repeated ``times`` times, one block after the other."""
        return self.take(np.tile(rows, times))

    def replaced(self, columns: Mapping[int, Array], *, keep_dtypes: bool = True) -> Any:
        """A copy with the given columns replaced; ``keep_dtypes`` casts to each column's dtype."""
        if self.is_frame:
            out = self.data.copy(deep=False)
            for position, values in columns.items():
                dtype = self.data.dtypes.iloc[position]
                out.isetitem(position, _as_dtype(values, dtype) if keep_dtypes else values)
            return out
        out = self.data.copy() if keep_dtypes else self.data.astype(object)
        for position, values in columns.items():
            out[:, position] = values
        return out


def _as_dtype(values: Array, dtype: Any) -> Any:
    if isinstance(dtype, pd.CategoricalDtype):
        return pd.Categorical(values, dtype=dtype)
    if isinstance(dtype, np.dtype):
        return np.asarray(values).astype(dtype, copy=False)
    return pd.array(values, dtype=dtype)


def predict(estimator: Any, data: Any) -> Array:
    """The estimator's predictions as an array of shape (n,) or (n, outputs)."""
    out = np.asarray(estimator.predict(data))
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    return out


class Agreement:
    """How far new predictions are from the model's predictions on the original rows.

    Classification: the share of rows whose predicted label (every output, for
    multi-output models) is unchanged. Regression: R² of the new predictions
    against the original ones (averaged over outputs; an output whose
    original predictions are constant scores 1 if unchanged, else 0, as
    scikit-learn's ``r2_score`` does).
    """

    def __init__(self, task: str, reference: Array) -> None:
        self.task = task
        self.reference = reference

    def score(self, rows: IntArray, predicted: Array) -> float:
        ref = self.reference[rows]
        if rows.size == 0:
            return 1.0
        if self.task == CLASSIFICATION:
            same = predicted == ref
            return float(np.mean(same if same.ndim == 1 else same.all(axis=1)))
        ref2 = ref.reshape(len(ref), -1).astype(np.float64)
        new2 = predicted.reshape(len(ref), -1).astype(np.float64)
        sse = ((new2 - ref2) ** 2).sum(axis=0)
        sst = ((ref2 - ref2.mean(axis=0)) ** 2).sum(axis=0)
        flat = sst == 0
        r2 = np.where(flat, (sse == 0).astype(np.float64), 1.0 - sse / np.where(flat, 1.0, sst))
        return float(r2.mean())

    def losses(self, rows: IntArray, predicted: Array) -> FloatArray:
        """Per-row loss of agreement; over ``rows`` it sums to about ``1 - score``."""
        ref = self.reference[rows]
        n = max(len(ref), 1)
        if self.task == CLASSIFICATION:
            differs = predicted != ref
            if differs.ndim == 2:
                differs = differs.any(axis=1)
            return np.asarray(differs, dtype=np.float64) / n
        ref2 = ref.reshape(len(ref), -1).astype(np.float64)
        new2 = predicted.reshape(len(ref), -1).astype(np.float64)
        squared = (new2 - ref2) ** 2
        sst = ((ref2 - ref2.mean(axis=0)) ** 2).sum(axis=0)
        changed = np.where(squared > 0, 1.0 / n, 0.0)
        scaled = np.where(sst > 0, squared / np.where(sst > 0, sst, 1.0), changed)
        return np.asarray(scaled.mean(axis=1), dtype=np.float64)
