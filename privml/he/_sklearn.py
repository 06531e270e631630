"""Lowering scikit-learn linear models (and scaler pipelines) to a privml.he network.

Supported: any fitted linear estimator exposing ``coef_`` and ``intercept_``
(LinearRegression, Ridge, Lasso, LogisticRegression, LinearSVC, RidgeClassifier,
SGD models, diffprivlib's DP models, privml.dp pipelines), optionally inside a
``Pipeline`` whose earlier steps are affine scalers, which are folded into the
weights so the client encrypts raw feature values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from ._ir import Affine
from ._output import OutputSpec
from ._source import Source

__all__ = ["is_sklearn_model", "lower_sklearn"]

_SCALERS = "StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, privml's SchemaScaler"


def is_sklearn_model(model: object) -> bool:
    """Whether ``model`` looks like a fitted scikit-learn linear model or pipeline."""
    return hasattr(model, "coef_") or hasattr(model, "steps")


def lower_sklearn(model: Any) -> Source:
    """Lower a fitted linear estimator or ``Pipeline(scalers..., estimator)``."""
    steps = list(model.steps) if hasattr(model, "steps") else [("model", model)]
    final = steps[-1][1]
    if not hasattr(final, "coef_"):
        raise ConfigurationError(
            f"{type(final).__name__} is not a fitted linear model privml.he can compile: "
            "fit it first, or use a linear estimator with coef_ and intercept_ "
            "(LinearRegression, Ridge, LogisticRegression, LinearSVC, diffprivlib/privml.dp "
            "models) or a torch nn.Sequential"
        )
    coef = np.atleast_2d(np.asarray(final.coef_, dtype=float))
    n_out, n_in = coef.shape
    intercept = np.broadcast_to(np.atleast_1d(np.asarray(final.intercept_, dtype=float)), n_out)
    ops: list[Affine] = []
    declared: tuple[np.ndarray, np.ndarray] | None = None
    names = []
    for position, (_, step) in enumerate(
        s for s in steps[:-1] if s[1] not in (None, "passthrough")
    ):
        affine, clip_range = _scaler(step, n_in)
        if clip_range is not None:
            if position:
                raise ConfigurationError(
                    f"{type(step).__name__} clips its input but is not the first pipeline "
                    "step; privml.he can only honour clipping of the raw features"
                )
            declared = clip_range
        ops.append(affine)
        names.append(type(step).__name__)
    ops.append(Affine(coef, np.array(intercept)))
    names.append(type(final).__name__)
    return Source(
        ops=tuple(ops),
        n_features=int(ops[0].weight.shape[1]),
        output=_output(final, coef),
        description=" -> ".join(names),
        reference=lambda X: _reference(model, final, X),
        declared_range=declared,
    )


def _output(final: Any, coef: np.ndarray) -> OutputSpec:
    from sklearn.base import is_classifier
    from sklearn.linear_model import LogisticRegression

    if not is_classifier(final):
        return OutputSpec("identity", None, squeeze=np.ndim(final.coef_) == 1)
    classes = tuple(np.asarray(final.classes_).tolist())
    link = "identity"
    if isinstance(final, LogisticRegression):  # also LogisticRegressionCV, diffprivlib's
        multi = getattr(final, "multi_class", "auto")
        ovr = multi in ("ovr", "warn") or (
            multi in ("auto", "deprecated")
            and (len(classes) <= 2 or getattr(final, "solver", "") == "liblinear")
        )
        if len(classes) <= 2:
            link = "sigmoid" if ovr else "softmax_binary"
        else:
            link = "ovr" if ovr else "softmax"
    return OutputSpec(link, classes, squeeze=coef.shape[0] == 1)


def _reference(model: Any, final: Any, X: np.ndarray) -> np.ndarray:
    from sklearn.base import is_classifier

    scores = model.decision_function(X) if is_classifier(final) else model.predict(X)
    scores = np.asarray(scores, dtype=float)
    return scores.reshape(len(X), -1)


def _scaler(step: Any, width: int) -> tuple[Affine, tuple[np.ndarray, np.ndarray] | None]:
    """An affine scaler as (Affine, range it clips to or None)."""
    kind = type(step).__name__
    ones, zeros = np.ones(width), np.zeros(width)
    if kind == "StandardScaler":
        scale = ones if step.scale_ is None else np.asarray(step.scale_, dtype=float)
        mean = zeros if step.mean_ is None else np.asarray(step.mean_, dtype=float)
        return Affine(np.diag(1.0 / scale), -mean / scale), None
    if kind == "RobustScaler":
        scale = ones if step.scale_ is None else np.asarray(step.scale_, dtype=float)
        center = zeros if step.center_ is None else np.asarray(step.center_, dtype=float)
        return Affine(np.diag(1.0 / scale), -center / scale), None
    if kind == "MaxAbsScaler":
        return Affine(np.diag(1.0 / np.asarray(step.scale_, dtype=float)), zeros), None
    if kind == "MinMaxScaler":
        scale = np.asarray(step.scale_, dtype=float)
        affine = Affine(np.diag(scale), np.asarray(step.min_, dtype=float))
        clip = (np.asarray(step.data_min_), np.asarray(step.data_max_)) if step.clip else None
        return affine, clip
    if kind == "SchemaScaler" and type(step).__module__.startswith("privml."):
        if step.categories:
            raise ConfigurationError(
                "SchemaScaler one-hot encodes categorical features, which is not affine; "
                "encode them on the client and compile the estimator step on its own"
            )
        low = np.array([step.bounds[f][0] for f in step.features], dtype=float)
        high = np.array([step.bounds[f][1] for f in step.features], dtype=float)
        # x -> (out_low + (x - low) / (high - low) * (out_high - out_low)) / divisor
        span = (step.high - step.low) / ((high - low) * step.divisor_)
        offset = (step.low - low * (step.high - step.low) / (high - low)) / step.divisor_
        return Affine(np.diag(span), offset), (low, high)
    raise ConfigurationError(
        f"pipeline step {kind} is not an affine scaler privml.he can fold into the model "
        f"(supported: {_SCALERS}); apply it on the client before encrypting and compile "
        "the final estimator alone"
    )
