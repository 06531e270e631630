"""Fitting diffprivlib estimators through a session, with bounds from the schema.

Why this is private: the estimator is one of diffprivlib's DP models, given
bounds and norms from the schema (public knowledge), never from the data, with
its ``PrivacyLeakWarning`` (emitted when it would look at the data to choose
them) turned into an error. Its (ε, δ) is charged to the ledger before any
training data is read, and it spends against a fresh ``BudgetAccountant``
(never diffprivlib's global default), whose total is checked against the charge.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..accounting.events import PrivacyEvent
from ..exceptions import ConfigurationError, IntegrityError, OptionalDependencyError
from .scaling import SchemaScaler

if TYPE_CHECKING:
    from ._session import DPSession

__all__ = ["fit"]


def _diffprivlib() -> Any:
    try:
        import diffprivlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise OptionalDependencyError(
            "session.dp.fit needs diffprivlib: pip install 'privml[dp]'"
        ) from err
    return diffprivlib


def fit(
    dp: DPSession,
    estimator: Any,
    dataset: str,
    *,
    features: Sequence[str],
    target: str | None,
    name: str | None,
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
    the dataset version it was trained on and its (ε, δ).
    """
    diffprivlib = _diffprivlib()
    from diffprivlib.accountant import BudgetAccountant
    from diffprivlib.utils import PrivacyLeakWarning
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    if not type(estimator).__module__.startswith("diffprivlib."):
        raise ConfigurationError(
            f"session.dp.fit takes diffprivlib estimators (e.g. diffprivlib.models."
            f"LogisticRegression(epsilon=1.0)), got {type(estimator).__name__}"
        )
    if isinstance(features, str):
        raise ConfigurationError("features= takes a list of column names")
    session = dp._session
    if name is not None:  # refused before any budget is spent
        session._models._check_may_register(
            name, principal=session.principal, purpose=session.purpose
        )
    schema = session._store.schema(dataset)
    model = clone(estimator)
    params = model.get_params()
    # Norm-bounded estimators (logistic regression, PCA) get centred features scaled so every
    # row has L2 norm <= 1 and data_norm = 1; box-bounded ones get features in [0, 1].
    normed = "data_norm" in params
    scaler = _scaler(schema, list(features), normed=normed)
    lower, upper = scaler.output_bounds
    updates: dict[str, Any] = {"accountant": BudgetAccountant()}
    if "bounds" in params:
        updates["bounds"] = (lower, upper)
    if "bounds_X" in params:
        updates["bounds_X"] = (lower, upper)
    if normed:
        updates["data_norm"] = 1.0
    if "bounds_y" in params or "classes" in params:
        if target is None:
            raise ConfigurationError(f"{type(model).__name__} needs target=")
        field = schema[target]
        if "bounds_y" in params:
            if field.bounds is None:
                raise ConfigurationError(f"target {target!r} needs declared bounds")
            updates["bounds_y"] = field.bounds
        if "classes" in params:
            if field.categories is None:
                raise ConfigurationError(f"target {target!r} must be categorical")
            updates["classes"] = list(field.categories)
    model.set_params(**updates)
    epsilon = float(model.epsilon)
    delta = float(getattr(model, "delta", 0.0) or 0.0)
    event = PrivacyEvent.generic(
        epsilon=epsilon, delta=delta, library="diffprivlib", library_version=diffprivlib.__version__
    )
    columns = [*features, *([target] if target else [])]
    frame, _, version = dp._release(dataset, columns, "dp_training", event, None, "dp.fit")
    X = scaler.transform(frame[list(features)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)
        # diffprivlib 0.6.6 passes options that SciPy >= 1.16 deprecates; not the user's to fix.
        warnings.filterwarnings(
            "ignore", message=r".*`disp` and `iprint`", category=DeprecationWarning
        )
        if target is None:
            model.fit(X)
        else:
            model.fit(X, np.asarray(frame[target].tolist()))
    spent_epsilon, spent_delta = model.accountant.total()
    if spent_epsilon > epsilon * (1 + 1e-9) or spent_delta > delta + 1e-15:
        raise IntegrityError(
            f"{type(model).__name__} spent (ε={spent_epsilon}, δ={spent_delta}), "
            f"more than the (ε={epsilon}, δ={delta}) charged"
        )
    fitted = Pipeline([("scale", scaler), ("model", model)])
    if name is not None:
        session._models._register(
            name,
            fitted,
            trained_on=(dataset, version),
            epsilon=epsilon,
            delta=delta,
            notes=None,
            extra={"features": list(features), "target": target},
            principal=session.principal,
            purpose=session.purpose,
        )
    return fitted


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
