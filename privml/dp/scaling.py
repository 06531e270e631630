"""Scaling features by the schema's declared bounds: public knowledge, no privacy cost."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["SchemaScaler"]


class SchemaScaler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Map numeric features into [low, high] by declared bounds; one-hot encode categoricals.

    Unlike ``MinMaxScaler``, nothing is learned from the data: the bounds and
    categories are the schema's, so fitting spends no privacy budget. Values
    outside the bounds are clipped.

    Parameters
    ----------
    bounds : dict of str to (float, float)
        Numeric features and their declared bounds.
    categories : dict of str to list, optional
        Categorical features and their declared categories.
    features : list of str
        All features, in order.
    low, high : float
        The output range of every column (one-hot columns take ``low``/``high``).
    unit_norm : bool
        Also divide by ``sqrt(width) * max(|low|, |high|)`` so that every output
        row has L2 norm at most 1 (what norm-bounded DP estimators need).

    Examples
    --------
    >>> scaler = SchemaScaler(bounds={"age": (0, 100)}, categories={"sex": ["F", "M"]},
    ...                       features=["age", "sex"])
    >>> scaler.fit_transform(pd.DataFrame({"age": [30, 120], "sex": ["M", "F"]}))
    array([[0.3, 0. , 1. ],
           [1. , 1. , 0. ]])
    """

    def __init__(
        self,
        bounds: dict[str, tuple[float, float]] | None = None,
        categories: dict[str, list[Any]] | None = None,
        features: Sequence[str] | None = None,
        low: float = 0.0,
        high: float = 1.0,
        unit_norm: bool = False,
    ) -> None:
        self.bounds = bounds
        self.categories = categories
        self.features = features
        self.low = low
        self.high = high
        self.unit_norm = unit_norm

    def fit(self, X: Any, y: Any = None) -> SchemaScaler:
        """Record the output layout (from the declared schema, not from ``X``)."""
        names: list[str] = []
        for feature in self.features or []:
            if feature in (self.categories or {}):
                names += [f"{feature}={c}" for c in (self.categories or {})[feature]]
            else:
                names.append(feature)
        self.feature_names_out_ = np.array(names, dtype=object)
        self.n_features_in_ = len(self.features or [])
        extent = max(abs(self.low), abs(self.high))
        self.divisor_ = np.sqrt(max(len(names), 1)) * extent if self.unit_norm else 1.0
        return self

    @property
    def output_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-column (lower, upper) bounds of the output: public, from the schema."""
        check_is_fitted(self, "feature_names_out_")
        width = len(self.feature_names_out_)
        return (np.full(width, self.low / self.divisor_), np.full(width, self.high / self.divisor_))

    def transform(self, X: Any) -> np.ndarray:
        """Scale and encode ``X`` (a DataFrame with the features, in any column order)."""
        check_is_fitted(self, "feature_names_out_")
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=self.features)
        parts = []
        for feature in self.features or []:
            if feature in (self.categories or {}):
                cats = list((self.categories or {})[feature])
                values = frame[feature].astype(object).to_numpy()
                hot = np.stack([values == c for c in cats], axis=1)
                parts.append(np.where(hot, self.high, self.low))
            else:
                lo, hi = (self.bounds or {})[feature]
                col = frame[feature].to_numpy(dtype=float)
                unit = (np.clip(col, lo, hi) - lo) / (hi - lo)
                parts.append((self.low + unit * (self.high - self.low))[:, None])
        out = np.hstack(parts) if parts else np.empty((len(frame), 0))
        return np.asarray(out / self.divisor_, dtype=float)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns (``feature=category`` for one-hot columns)."""
        check_is_fitted(self, "feature_names_out_")
        return np.asarray(self.feature_names_out_)
