"""Fitting diffprivlib estimators through a session, with bounds from the schema.

Why this is private: the estimator is one of diffprivlib's DP models, given
bounds and norms from the schema (public knowledge), never from the data, with
its ``PrivacyLeakWarning`` (emitted when it would look at the data to choose
them) turned into an error. Its (ε, δ) is charged to the ledger before any
training data is read, and it spends against a fresh ``BudgetAccountant``
(never diffprivlib's global default), whose total is checked against the charge.
Its randomness is drawn fresh from the operating system (a caller's
``random_state`` is refused), and only its DP outputs stay in the fitted model
(see :mod:`privml.dp._estimators`). A ``GaussianNB`` without ``priors`` gets
class priors from a Laplace histogram of the target with ε/4 (sensitivity 1)
and fits with the remaining 3ε/4: diffprivlib's own priors sum to the exact
row count.

Person-level units: on a dataset whose unit is a person with at most k rows,
the door hands over at most k rows per person and the estimator fits at ε/k
(group privacy, exact for pure ε-DP), so the person-level ε asked for is what
the ledger is charged. Estimators with δ > 0 are refused when k > 1: group
privacy for (ε, δ)-DP costs k·e^{(k−1)ε}·δ in δ, far more than the δ charged.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._array_fields import ARRAY_KINDS, array_refusal
from .._gate import TRAINING_ROWS
from .._optional import require
from ..accounting.events import PrivacyEvent
from ..attacks._holdout import MEMBERSHIP, Membership, check_holdout, version_rows
from ..exceptions import ConfigurationError, IntegrityError, PrivmlError
from . import _classifiers, _estimators, _noisy
from ._release import release
from .scaling import SchemaScaler

if TYPE_CHECKING:
    from .._gate import Gate

__all__ = ["fit"]


#: The share of a GaussianNB's ε that privml spends on DP class priors.
PRIOR_SHARE = 0.25


def fit(
    gate: Gate,
    estimator: Any,
    dataset: str,
    *,
    features: Sequence[str],
    target: str | None,
    name: str | None,
    holdout: float = 0.0,
) -> Any:
    """Fit a clone of ``estimator`` privately; return a fitted ``Pipeline(scale, model)``.

    Numeric features are scaled by their declared bounds and categoricals
    one-hot encoded by their declared categories (a fixed :class:`SchemaScaler`,
    so predictions take raw feature values): into [0, 1] for estimators bounded
    by boxes, and into [-1, 1] / sqrt(width) (rows of norm <= 1, ``data_norm=1``)
    for norm-bounded ones such as logistic regression. The
    estimator's bounds (``bounds``, ``bounds_X``), norm (``data_norm``), target
    bounds (``bounds_y``) and ``classes`` are set from the schema.

    With ``name``, the fitted pipeline is registered in ``vault.models`` with
    the dataset version it was trained on and its (ε, δ). ``holdout=h`` keeps
    ``floor(h · n)`` of the ``n`` rows read out of training (drawn from the
    operating system's randomness) and records which version rows were trained
    on and which were held out (:mod:`privml.attacks._holdout`), for
    ``vault.models.privacy_report``; the charge is unchanged (ε, δ of one fit).
    """
    diffprivlib = require("diffprivlib", feature="session.dp.fit")
    from diffprivlib.accountant import BudgetAccountant
    from diffprivlib.utils import PrivacyLeakWarning
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    _estimators.check_supported(estimator)
    _estimators.refuse_seeds(estimator)
    holdout = check_holdout(holdout)
    if holdout and name is None:
        raise ConfigurationError(
            "holdout= needs name=: the held-out rows are recorded with the registered model"
        )
    if isinstance(features, str):
        raise ConfigurationError("features= takes a list of column names")
    if name is not None:  # refused before any budget is spent
        gate.check_may_register(name)
    schema = gate.schema(dataset)
    model = clone(estimator)
    params = model.get_params()
    # Norm-bounded estimators (logistic regression, PCA) get centred features scaled so every
    # row has L2 norm <= 1 and data_norm = 1; box-bounded ones get features in [0, 1].
    normed = "data_norm" in params
    scaler = _scaler(schema, list(features), normed=normed)
    updates = _settings(model, params, schema, target, scaler.output_bounds, normed=normed)
    updates["accountant"] = BudgetAccountant()
    model.set_params(**updates)
    epsilon = float(model.epsilon)
    delta = float(getattr(model, "delta", 0.0) or 0.0)
    naive_bayes = type(model).__name__ == "GaussianNB"
    dp_priors = naive_bayes and params.get("priors") is None
    unit = gate.privacy_unit(dataset)
    row_epsilon = epsilon / _group_size(unit.max_rows, delta, unit.name)
    if dp_priors or unit.max_rows > 1:
        model.set_params(epsilon=row_epsilon * ((1 - PRIOR_SHARE) if dp_priors else 1.0))
    event = PrivacyEvent.generic(
        epsilon=epsilon, delta=delta, library="diffprivlib", library_version=diffprivlib.__version__
    )
    columns = [*features, *([target] if target else [])]
    released = release(gate, dataset, columns, needed="dp_training", event=event, action="dp.fit")
    frame, version = released.frame, released.version
    membership = None
    if holdout:  # the held-out rows never reach the estimator
        membership = Membership.draw(
            rows=version_rows(len(frame), released.positions),
            positions=released.positions,
            fraction=holdout,
        )
        frame = frame.loc[membership.training_rows(released.positions)].reset_index(drop=True)
    del released
    X = scaler.transform(frame[list(features)])
    y = None if target is None else np.asarray(frame[target].tolist())
    rows = gate.rows_digest(dataset, columns)
    classified = naive_bayes or type(model).__name__ in _classifiers.OWN_FIT
    classes = _classes(schema, target) if classified and y is not None else None
    if dp_priors and classes is not None:
        model.set_params(priors=_priors(y, classes, row_epsilon * PRIOR_SHARE))
    _estimators.seed(model)
    try:
        _train(model, X, y, classes, PrivacyLeakWarning)
    except Exception as err:
        # Its message may quote the data (a class present, a count): say only what failed.
        raise PrivmlError(
            f"{type(model).__name__} failed to fit ({type(err).__name__}); the (ε={epsilon}, "
            f"δ={delta}) charged stays spent. Check the estimator's parameters, the features "
            "and the row filters that apply."
        ) from None
    _estimators.forget_randomness(model)
    _estimators.strip(model)
    spent_epsilon, spent_delta = model.accountant.total()
    spent_epsilon += row_epsilon * PRIOR_SHARE if dp_priors else 0.0
    if spent_epsilon > row_epsilon * (1 + 1e-9) or spent_delta > delta + 1e-15:
        raise IntegrityError(
            f"{type(model).__name__} spent (ε={spent_epsilon}, δ={spent_delta}), "
            f"more than the (ε={epsilon}, δ={delta}) charged"
        )
    fitted = Pipeline([("scale", scaler), ("model", model)])
    if name is not None:
        gate.register_model(
            name,
            fitted,
            trained_on=(dataset, version),
            epsilon=epsilon,
            delta=delta,
            notes=None,
            extra={
                "features": list(features),
                "target": target,
                TRAINING_ROWS: rows,
                "privacy_unit": {"unit": unit.name, "max_rows_per_unit": unit.max_rows},
                **({MEMBERSHIP: membership.to_record()} if membership is not None else {}),
            },
        )
    return fitted


def _group_size(max_rows: int, delta: float, unit: str) -> int:
    """The rows one unit may contribute, by which a pure-ε fit divides its ε; refuses δ > 0
    with more than one row per person (group privacy would cost k·e^{(k−1)ε}·δ in δ)."""
    if max_rows > 1 and delta > 0:
        raise ConfigurationError(
            f"this estimator is (ε, δ)-DP with δ > 0, and the dataset's privacy unit {unit!r} "
            f"lets one person contribute up to {max_rows} rows: group privacy for (ε, δ) costs "
            f"k·e^((k-1)ε)·δ in δ for k = {max_rows}, so privml cannot charge an exact figure. "
            "Use a pure-ε estimator (δ = 0), or DP-SGD (session.dp.train), which samples people"
        )
    return max_rows


def _settings(
    model: Any,
    params: dict[str, Any],
    schema: Any,
    target: str | None,
    output_bounds: tuple[Any, Any],
    *,
    normed: bool,
) -> dict[str, Any]:
    """The estimator's bounds, norm, target bounds and classes, all from the schema."""
    lower, upper = output_bounds
    updates: dict[str, Any] = {}
    if "bounds" in params:
        updates["bounds"] = (lower, upper)
    if "bounds_X" in params:
        updates["bounds_X"] = (lower, upper)
    if normed:
        updates["data_norm"] = 1.0
    if "bounds_y" in params:
        field = schema[_target(model, target)]
        if field.bounds is None:
            raise ConfigurationError(f"target {target!r} needs declared bounds")
        updates["bounds_y"] = field.bounds
    if "classes" in params:
        updates["classes"] = _classes(schema, _target(model, target))
    return updates


def _target(model: Any, target: str | None) -> str:
    if target is None:
        raise ConfigurationError(f"{type(model).__name__} needs target=")
    return target


def _classes(schema: Any, target: str | None) -> list[Any]:
    """The target's declared classes, sorted: classes seen in the data are not a DP release.

    Sorted because diffprivlib's trees map labels to classes by binary search.
    """
    field = schema[target] if target is not None and target in schema else None
    if field is None or field.categories is None:
        raise ConfigurationError(f"target {target!r} must be a categorical column of the schema")
    return sorted(field.categories)


def _train(
    model: Any, X: np.ndarray, y: np.ndarray | None, classes: list[Any] | None, leak: type
) -> None:
    """Fit with diffprivlib's privacy-leak warnings as errors; classes from the schema."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", leak)
        # diffprivlib 0.6.6 passes options that SciPy >= 1.16 deprecates; not the user's to fix.
        warnings.filterwarnings(
            "ignore", message=r".*`disp` and `iprint`", category=DeprecationWarning
        )
        if y is None:
            model.fit(X)
        elif classes is not None and type(model).__name__ in _classifiers.OWN_FIT:
            # diffprivlib's fit would take the classes from the data (or skip absent ones)
            _classifiers.OWN_FIT[type(model).__name__](model, X, y, classes)
        else:
            model.fit(X, y)


def _scaler(schema: Any, features: list[str], *, normed: bool) -> SchemaScaler:
    bounds, categories = {}, {}
    for feature in features:
        if feature not in schema:
            raise ConfigurationError(f"no feature column {feature!r} in the schema")
        field = schema[feature]
        if field.kind in ("numeric", "integer"):
            bounds[feature] = field.bounds
        elif field.kind == "categorical":
            categories[feature] = list(field.categories)
        elif field.kind in ARRAY_KINDS:
            raise array_refusal(feature, field.kind, "a diffprivlib model")
        else:
            raise ConfigurationError(
                f"feature {feature!r} is {field.kind}; features must be numeric or categorical"
            )
    low = -1.0 if normed else 0.0
    return SchemaScaler(
        bounds=bounds,
        categories=categories,
        features=features,
        low=low,
        high=1.0,
        unit_norm=normed,
    ).fit(None)


def _priors(y: np.ndarray | None, classes: list[Any], epsilon: float) -> np.ndarray:
    """Class priors from a Laplace histogram of the target (each count at least 1)."""
    labels = np.asarray(y)
    exact = np.array([np.sum(labels == c) for c in classes], dtype=float)
    noisy, _ = _noisy.histogram(exact, epsilon)
    clipped = np.maximum(noisy, 1.0)
    priors: np.ndarray = clipped / clipped.sum()
    return priors
