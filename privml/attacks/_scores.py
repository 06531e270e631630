"""Per-example loss of a fitted model: the signal membership inference reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import ConfigurationError

__all__ = ["is_classifier", "logit_confidence", "scores"]

#: Probabilities are clipped to [_FLOOR, 1 - _FLOOR]: the loss is at most -log(_FLOOR) ≈ 27.6.
_FLOOR = 1e-12


def _is_torch_model(model: object) -> bool:
    """privml's :class:`~privml.dp.torch.TorchModel`, recognized without importing torch."""
    return (
        type(model).__name__ == "TorchModel"
        and type(model).__module__.startswith("privml.dp.torch")
        and getattr(model, "task", None) in ("classification", "regression")
    )


def _true_class_proba(proba: np.ndarray, classes: Any, y: np.ndarray) -> np.ndarray:
    """Each row's probability of its own label (0 for a label the model never saw)."""
    classes = np.asarray(classes, dtype=object)
    lookup = {label: i for i, label in enumerate(classes.tolist())}
    index = np.asarray([lookup.get(label, -1) for label in y.tolist()], dtype=np.int64)
    picked = proba[np.arange(len(y)), np.maximum(index, 0)]
    return np.where(index >= 0, picked, 0.0)


def _cross_entropy(p_true: np.ndarray) -> np.ndarray:
    out: np.ndarray = -np.log(np.clip(p_true, _FLOOR, 1.0))
    return out


def _squared_error(predicted: Any, y: np.ndarray) -> np.ndarray:
    try:
        truth = y.astype(float)
    except (TypeError, ValueError):
        raise ConfigurationError(
            "a regression model needs a numeric target; the target column is not numeric"
        ) from None
    diff = np.asarray(predicted, dtype=float).reshape(len(y), -1)[:, 0] - truth
    return np.asarray(diff * diff)


def _decision_loss(model: Any, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    classes = np.asarray(model.classes_, dtype=object)
    if len(classes) != 2:
        raise ConfigurationError(
            "a classifier without predict_proba is supported only with two classes; "
            "fit one with predict_proba (e.g. probability=True for SVC)"
        )
    margin = np.asarray(model.decision_function(X), dtype=float).reshape(len(y))
    sign = np.where(y == classes[1], 1.0, np.where(y == classes[0], -1.0, 0.0))
    loss: np.ndarray = np.logaddexp(0.0, -sign * margin)  # logistic loss of the margin
    return loss


def scores(model: Any, X: pd.DataFrame, y: pd.Series | np.ndarray) -> np.ndarray:
    """The model's loss on each example: lower means the model fits it better.

    * classifiers with ``predict_proba`` (scikit-learn, diffprivlib, pipelines):
      cross-entropy ``-log p(y | x)``, the probability clipped at 1e-12, so a
      label the model never saw costs about 27.6;
    * binary classifiers with only ``decision_function``: the logistic loss of the margin;
    * regressors (no ``classes_``): squared error of ``predict``;
    * privml's ``TorchModel``: cross-entropy of its softmax outputs over its
      ``classes``, or squared error of its predictions in the target's units.

    Parameters
    ----------
    model : estimator or TorchModel
        Fitted.
    X : pandas.DataFrame
        The features, as the model takes them (raw values; a pipeline or a
        ``TorchModel`` scales them itself).
    y : pandas.Series or numpy.ndarray
        The true target of each row.

    Returns
    -------
    numpy.ndarray
        One non-negative float per row.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    >>> y = pd.Series([0, 0, 1, 1])
    >>> model = LogisticRegression().fit(X, y)
    >>> losses = scores(model, X, y)
    >>> losses.shape, bool((losses > 0).all())
    ((4,), True)
    """
    if not isinstance(X, pd.DataFrame):
        raise ConfigurationError(f"X must be a pandas DataFrame, got {type(X).__name__}")
    truth = np.asarray(y, dtype=object)
    if truth.ndim != 1 or len(truth) != len(X):
        raise ConfigurationError(f"y must be one value per row of X ({len(X)}), got {truth.shape}")
    if len(X) == 0:
        return np.zeros(0)
    if _is_torch_model(model):
        if model.task == "classification":
            proba = np.asarray(model.predict_proba(X), dtype=float)
            return _cross_entropy(_true_class_proba(proba, model.classes, truth))
        return _squared_error(model.predict(X), truth)
    if not hasattr(model, "predict"):
        raise ConfigurationError(f"{type(model).__name__} has no predict: pass a fitted model")
    if hasattr(model, "classes_"):
        if hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(X), dtype=float)
            return _cross_entropy(_true_class_proba(proba, model.classes_, truth))
        if hasattr(model, "decision_function"):
            return _decision_loss(model, X, truth)
        raise ConfigurationError(
            f"{type(model).__name__} gives neither predict_proba nor decision_function"
        )
    return _squared_error(model.predict(X), truth)


def is_classifier(model: Any) -> bool:
    """Whether :func:`scores` treats ``model`` as a classifier (cross-entropy)."""
    if _is_torch_model(model):
        return bool(model.task == "classification")
    return hasattr(model, "classes_")


def logit_confidence(model: Any, X: pd.DataFrame, y: pd.Series | np.ndarray) -> np.ndarray:
    """Each example's logit-scaled confidence ``log(p / (1 - p))`` in its label (classifiers),
    or its negative squared error (regressors): higher means a better fit.

    The scale on which Carlini et al. 2022 (LiRA) find per-example confidences
    close to Gaussian across models.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> X, y = pd.DataFrame({"x": [0, 1, 2, 3]}), pd.Series([0, 1, 1, 1])
    >>> logit_confidence(DummyClassifier().fit(X, y), X, y).round(3).tolist()
    [-1.099, 1.099, 1.099, 1.099]
    """
    loss = scores(model, X, y)
    if not is_classifier(model):
        return -loss
    clipped = np.clip(loss, _FLOOR, -np.log(_FLOOR))  # p = exp(-loss) in [1e-12, 1 - 1e-12]
    out: np.ndarray = -clipped - np.log(-np.expm1(-clipped))
    return out
