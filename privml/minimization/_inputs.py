"""Checks on what ``Minimizer`` is given: the model, the column choices and the values."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import is_classifier, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import check_is_fitted

from ..exceptions import ConfigurationError, NotFoundError
from ._data import CLASSIFICATION, REGRESSION, Table

Array = npt.NDArray[Any]


def column_names(table: Table) -> list[str]:
    """Column names as strings: a DataFrame's own, ``x0, x1, …`` for an array."""
    if table.is_frame:
        return [str(c) for c in table.data.columns]
    return [f"x{i}" for i in range(table.data.shape[1])]


def positions(spec: Any, names: list[str], argument: str) -> list[int]:
    """Column positions named by ``spec`` (names or integer positions), in column order."""
    if isinstance(spec, (str, numbers.Integral)):
        spec = [spec]
    chosen = set()
    for item in spec:
        if isinstance(item, numbers.Integral) and not isinstance(item, bool):
            if not 0 <= int(item) < len(names):
                raise NotFoundError(
                    f"{argument}: column position {item} is out of range (X has {len(names)} "
                    "columns)"
                )
            chosen.add(int(item))
        elif str(item) in names:
            chosen.add(names.index(str(item)))
        else:
            raise NotFoundError(
                f"{argument}: no column named {item!r}; X has {', '.join(map(repr, names))}"
            )
    return sorted(chosen)


def auto_categorical(table: Table) -> set[int]:
    """DataFrame columns that are not numbers (strings, categories, booleans); none for arrays."""
    if not table.is_frame:
        return set()
    return {
        j
        for j, dtype in enumerate(table.data.dtypes)
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    }


def feature_values(table: Table, position: int, name: str, numeric: bool) -> Array:
    """One minimized column's values, checked: finite numbers, or categories without gaps."""
    values = table.column(position)
    if numeric:
        if values.dtype.kind not in "iuf":
            values = values.astype(np.float64)
        if values.dtype.kind == "f":
            assert_all_finite(values, input_name=f"X column {name!r}")
        return values
    if pd.isna(values).any():
        raise ValueError(
            f"X column {name!r} has missing values (NaN or None): replace them with a "
            "category of their own, such as 'missing', before minimizing"
        )
    return values


def check_model(estimator: Any) -> None:
    """Refuse a model that cannot predict yet."""
    if estimator is None or not callable(getattr(estimator, "predict", None)):
        raise ConfigurationError(
            f"estimator={estimator!r}: give the fitted model whose inputs are to be minimized "
            "(any object with predict(X))"
        )
    if hasattr(estimator, "fit"):
        try:
            check_is_fitted(estimator)
        except NotFittedError:
            raise ConfigurationError(
                f"{type(estimator).__name__} is not fitted: fit it before minimizing its inputs "
                "(to keep it fitted through sklearn.base.clone, wrap it in "
                "sklearn.frozen.FrozenEstimator)"
            ) from None
        except TypeError:
            pass  # not a scikit-learn estimator: trust that it is ready


def task_of(estimator: Any, reference: Array) -> str:
    """Regression or classification, from the estimator's tags or else its predictions."""
    if hasattr(estimator, "__sklearn_tags__"):
        if is_regressor(estimator):
            return REGRESSION
        if is_classifier(estimator):
            return CLASSIFICATION
    return REGRESSION if reference.dtype.kind == "f" else CLASSIFICATION


def check_settings(target: Any, k: Any, output: Any, outputs: Sequence[str]) -> tuple[float, int]:
    """Validated ``target_accuracy`` and ``min_group_size``."""
    if (
        not isinstance(target, numbers.Real)
        or isinstance(target, bool)
        or not 0.0 < float(target) <= 1.0
    ):
        raise ConfigurationError(
            f"target_accuracy={target!r}: give a number in (0, 1], the agreement with the "
            "model's own predictions that must be kept (R² for regressors)"
        )
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise ConfigurationError(
            f"min_group_size={k!r}: give an int >= 1 (1 sets no k-anonymity floor)"
        )
    if output not in outputs:
        raise ConfigurationError(f"output={output!r}: give one of {', '.join(map(repr, outputs))}")
    return float(target), int(k)
