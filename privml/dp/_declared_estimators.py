"""diffprivlib estimators described as JSON, and fitted ones sent back as JSON, without pickle.

A client that may not send code names an estimator and its parameters;
:func:`build_estimator` checks both against an allowlist and builds the
diffprivlib estimator for ``session.dp.fit``, which sets its bounds and norms
from the schema, charges it and fits it. :func:`fitted_to_wire` turns what
``dp.fit`` returns (the schema scaler and the fitted model) into strict JSON:
the class, its parameters and only the fitted attributes that
``session.dp.fit`` keeps as DP releases (:data:`privml.dp._estimators.RELEASED`);
:func:`fitted_from_wire` rebuilds an equal pipeline, whose ``predict`` or
``transform`` on raw feature values gives what the server's gives.

Offered: LogisticRegression, GaussianNB, LinearRegression, KMeans, PCA and
StandardScaler. diffprivlib's DecisionTreeClassifier and
RandomForestClassifier are not: their fitted state is a scikit-learn ``Tree``
object, which has no public way to be rebuilt from plain arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .._optional import require
from ._estimators import RELEASED
from ._wire import (
    at,
    boolean,
    choice,
    integer,
    keys,
    name_list,
    number,
    refuse,
    sequence,
)
from ._wire_arrays import from_wire, to_wire
from .scaling import SchemaScaler

__all__ = [
    "ESTIMATORS",
    "FORMAT",
    "build_estimator",
    "fitted_from_wire",
    "fitted_to_wire",
    "scaler_from_wire",
    "scaler_to_wire",
]

#: The format tag of :func:`fitted_to_wire`'s output.
FORMAT = "privml.estimator/1"
#: The most features a bound, a scaler or an estimator may describe.
MAX_FEATURES = 4_096
#: The most categories one categorical feature may declare.
MAX_CATEGORIES = 10_000

Check = Callable[[Any, str], Any]


def _epsilon(v: Any, path: str) -> float:
    return number(v, path, 0.0, 100.0, open_low=True)


def _norm(v: Any, path: str) -> float:
    return number(v, path, 0.0, 1e6, open_low=True)


def _side(v: Any, path: str) -> float | list[float]:
    if isinstance(v, list | tuple):
        items = sequence(v, path, min_items=1, max_items=MAX_FEATURES)
        return [number(x, at(path, i), -1e12, 1e12) for i, x in enumerate(items)]
    return number(v, path, -1e12, 1e12)


def _bounds(v: Any, path: str) -> tuple[Any, Any]:
    """``[lower, upper]``: two numbers, or two equally long lists of numbers, lower <= upper."""
    pair = sequence(v, path, min_items=2, max_items=2)
    lower, upper = _side(pair[0], at(path, 0)), _side(pair[1], at(path, 1))
    low = lower if isinstance(lower, list) else [lower]
    high = upper if isinstance(upper, list) else [upper]
    if isinstance(lower, list) != isinstance(upper, list) or len(low) != len(high):
        raise refuse(path, "lower and upper must both be numbers or equally long lists")
    if any(a > b for a, b in zip(low, high, strict=True)):
        raise refuse(path, "each lower bound must be at most its upper bound")
    return lower, upper


def _bool(v: Any, path: str) -> bool:
    return boolean(v, path)


_COMMON: dict[str, Check] = {"epsilon": _epsilon}
#: Each offered diffprivlib estimator and the constructor parameters a request may set.
ESTIMATORS: dict[str, dict[str, Check]] = {
    "LogisticRegression": {
        **_COMMON,
        "data_norm": _norm,
        "tol": lambda v, p: number(v, p, 0.0, 1.0, open_low=True),
        "C": lambda v, p: number(v, p, 0.0, 1e6, open_low=True),
        "fit_intercept": _bool,
        "max_iter": lambda v, p: integer(v, p, 1, 10_000),
    },
    "GaussianNB": {
        **_COMMON,
        "bounds": _bounds,
        "var_smoothing": lambda v, p: number(v, p, 0.0, 1.0),
    },
    "LinearRegression": {
        **_COMMON,
        "bounds_X": _bounds,
        "bounds_y": _bounds,
        "fit_intercept": _bool,
    },
    "KMeans": {**_COMMON, "n_clusters": lambda v, p: integer(v, p, 1, 1_000), "bounds": _bounds},
    "PCA": {
        **_COMMON,
        "n_components": lambda v, p: integer(v, p, 1, MAX_FEATURES),
        "data_norm": _norm,
        "centered": _bool,
        "bounds": _bounds,
    },
    "StandardScaler": {
        **_COMMON,
        "bounds": _bounds,
        "with_mean": _bool,
        "with_std": _bool,
    },
}
#: Parameters ``session.dp.fit`` sets from the schema: not sent back, not needed to predict.
_FROM_SCHEMA = frozenset({"bounds", "bounds_X", "bounds_y", "data_norm"})


def _params(name: str, params: Any, path: str) -> dict[str, Any]:
    if isinstance(params, Mapping) and "random_state" in params:
        raise refuse(
            at(path, "random_state"),
            "not taken: a DP release may not use randomness its caller can seed; "
            "privml draws fresh randomness from the operating system",
        )
    allowed = ESTIMATORS[name]
    given = keys(params, path, list(allowed))
    return {key: allowed[key](value, at(path, key)) for key, value in given.items()}


def build_estimator(name: str, params: Mapping[str, Any], *, path: str = "params") -> Any:
    """The diffprivlib estimator ``name`` with ``params``, both checked against the allowlist.

    Parameters
    ----------
    name : str
        One of :data:`ESTIMATORS` (a class of ``diffprivlib.models``).
    params : mapping
        Its constructor parameters, each typed and bounded (``epsilon`` finite
        and > 0, ``bounds`` as ``[lower, upper]``, ...). ``random_state`` is
        refused (``session.dp.fit`` seeds from the operating system), and
        bounds and norms are replaced by the schema's when fitted.
    path : str
        Where ``params`` sits in the request, for messages.

    Raises
    ------
    ConfigurationError
        An unknown class or parameter, a wrong type or a value out of bounds,
        naming its path.

    Examples
    --------
    >>> vault = getfixture("dp_vault")
    >>> dp = vault.session("ana", purpose="studies").dp
    >>> model = build_estimator("GaussianNB", {"epsilon": 0.5})
    >>> fitted = dp.fit(model, "patients", features=["age"], target="sex")
    >>> wire = fitted_to_wire(fitted)
    >>> wire["class"], sorted(wire["fitted"])[:3]
    ('GaussianNB', ['class_prior_', 'classes_', 'epsilon_'])
    >>> client = fitted_from_wire(wire)
    >>> import pandas as pd
    >>> new = pd.DataFrame({"age": [30, 80]})
    >>> bool((client.predict(new) == fitted.predict(new)).all())
    True
    >>> build_estimator("GaussianNB", {"epsilon": -1})
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: params.epsilon: must be a finite number in (0, 100]
    """
    choice(name, "class", list(ESTIMATORS))
    checked = _params(name, params, path)
    models = require("diffprivlib", feature="session.dp.fit").models
    return getattr(models, name)(**checked)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def scaler_to_wire(scaler: SchemaScaler) -> dict[str, Any]:
    """A schema scaler as strict JSON (bounds and categories: the schema's, not the data's)."""
    features = list(scaler.features or [])
    categories = {
        f: [to_wire(c, f"scaler.categories.{f}")["data"] for c in cats]  # type: ignore[index]
        for f, cats in (scaler.categories or {}).items()
    }
    return {
        "features": features,
        "bounds": {f: [float(lo), float(hi)] for f, (lo, hi) in (scaler.bounds or {}).items()},
        "categories": categories,
        "low": float(scaler.low),
        "high": float(scaler.high),
        "unit_norm": bool(scaler.unit_norm),
    }


def fitted_to_wire(fitted: Any) -> dict[str, Any]:
    """What ``session.dp.fit`` returned, as strict JSON (no NaN literals, no pickle).

    ``fitted`` is the ``Pipeline(scale, model)`` ``dp.fit`` returns (or a bare
    fitted estimator). Only the attributes ``dp.fit`` keeps as DP releases are
    written, with the constructor parameters a request may set.
    """
    from sklearn.pipeline import Pipeline

    scaler, model = None, fitted
    if isinstance(fitted, Pipeline):
        steps = dict(fitted.steps)
        if list(steps) != ["scale", "model"] or not isinstance(steps["scale"], SchemaScaler):
            raise refuse("fitted", "must be what session.dp.fit returns: Pipeline(scale, model)")
        scaler, model = steps["scale"], steps["model"]
    name = type(model).__name__
    if name not in ESTIMATORS or not type(model).__module__.startswith("diffprivlib."):
        raise refuse("class", f"must be one of {', '.join(ESTIMATORS)}")
    settings = model.get_params(deep=False)
    params = {
        key: _plain(settings[key])
        for key in ESTIMATORS[name]
        if key not in _FROM_SCHEMA and settings.get(key) is not None
    }
    attributes = {
        attr: to_wire(getattr(model, attr), f"fitted.{attr}")
        for attr in sorted(RELEASED[name] | {"n_features_in_"})
        if hasattr(model, attr)
    }
    return {
        "format": FORMAT,
        "class": name,
        "params": params,
        "fitted": attributes,
        "scaler": None if scaler is None else scaler_to_wire(scaler),
    }


def _category(value: Any, path: str) -> Any:
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise refuse(path, "must be a string, a finite number or a boolean")


def scaler_from_wire(value: Any, path: str = "scaler") -> SchemaScaler:
    """The scaler :func:`scaler_to_wire` wrote; anything else is refused, naming the path."""
    given = keys(
        value,
        path,
        ["features", "bounds", "categories", "low", "high", "unit_norm"],
        required=["features", "bounds", "categories", "low", "high", "unit_norm"],
    )
    features = name_list(given["features"], at(path, "features"), max_items=MAX_FEATURES)
    bounds_in = keys(given["bounds"], at(path, "bounds"), features)
    cats_in = keys(given["categories"], at(path, "categories"), features)
    bounds = {}
    for f, pair in bounds_in.items():
        lower, upper = _bounds(pair, at(at(path, "bounds"), f))
        if isinstance(lower, list) or not lower < upper:
            raise refuse(at(at(path, "bounds"), f), "must be two numbers, lower < upper")
        bounds[f] = (lower, upper)
    categories = {}
    for f, cats in cats_in.items():
        where = at(at(path, "categories"), f)
        items = sequence(cats, where, min_items=1, max_items=MAX_CATEGORIES)
        categories[f] = [_category(c, at(where, i)) for i, c in enumerate(items)]
    missing = [f for f in features if (f in bounds) == (f in categories)]
    if missing:
        raise refuse(path, "each feature needs bounds or categories, not both")
    low = number(given["low"], at(path, "low"), -1e6, 1e6)
    high = number(given["high"], at(path, "high"), -1e6, 1e6)
    if not low < high:
        raise refuse(at(path, "high"), "must be greater than low")
    return SchemaScaler(
        bounds=bounds,
        categories=categories,
        features=features,
        low=low,
        high=high,
        unit_norm=boolean(given["unit_norm"], at(path, "unit_norm")),
    ).fit(None)


def fitted_from_wire(wire: Any) -> Any:
    """Rebuild what :func:`fitted_to_wire` wrote: a pipeline that predicts as the server's did.

    Everything is checked (the class and its parameters against the
    allowlist, each fitted attribute against the class's released ones, each
    array's dtype, shape and values) before an estimator is built.

    Raises
    ------
    ConfigurationError
        Naming the path of the first thing wrong.
    """
    given = keys(
        wire,
        "",
        ["format", "class", "params", "fitted", "scaler"],
        required=["format", "class", "params", "fitted"],
    )
    choice(given["format"], "format", [FORMAT])
    name = choice(given["class"], "class", list(ESTIMATORS))
    released = sorted(RELEASED[name] | {"n_features_in_"})
    attributes = keys(given["fitted"], "fitted", released)
    values = {attr: from_wire(v, at("fitted", attr)) for attr, v in attributes.items()}
    scaler = None
    if given.get("scaler") is not None:
        scaler = scaler_from_wire(given["scaler"])
    model = build_estimator(name, given["params"])
    for attr, value in values.items():
        setattr(model, attr, value)
    if scaler is None:
        return model
    from sklearn.pipeline import Pipeline

    return Pipeline([("scale", scaler), ("model", model)])
