"""What privml knows about each diffprivlib estimator: its randomness and its DP outputs.

Two rules for every estimator fitted through ``session.dp.fit``:

1. **No caller-chosen randomness.** A ``random_state`` set anywhere in the
   estimator (its own or a nested estimator's) is refused: with it the noise
   can be regenerated and subtracted. privml gives each estimator a generator
   keyed fresh from ``secrets`` (:func:`privml.dp._random.fresh_random_state`)
   and, after fitting, sets every ``random_state`` back to ``None`` (the used
   generator, or the per-tree seeds a forest draws from it, would replay the
   noise).
2. **Only DP outputs leave.** diffprivlib also stores values that are not
   differentially private (exact row counts such as ``n_samples_seen_``, the
   training rows' cluster labels, exact class counts, iteration counts). Every
   fitted attribute not listed in :data:`RELEASED` for its estimator is
   removed; an estimator privml has no list for is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from ._random import fresh_random_state

__all__ = ["RELEASED", "check_supported", "forget_randomness", "refuse_seeds", "seed", "strip"]

#: Fitted attributes present whatever the data: shapes and names from the schema.
_PUBLIC = frozenset({"n_features_in_", "feature_names_in_"})

#: For each supported diffprivlib estimator, the fitted attributes that are DP releases
#: (or fixed by the schema and parameters) and may stay in the fitted model.
RELEASED: dict[str, frozenset[str]] = {
    "LogisticRegression": frozenset({"classes_", "coef_", "intercept_"}),
    "LinearRegression": frozenset({"coef_", "intercept_"}),
    # class_prior_ is privml's own DP estimate (diffprivlib's sums to the exact row count).
    "GaussianNB": frozenset({"classes_", "theta_", "var_", "class_prior_", "epsilon_"}),
    "DecisionTreeClassifier": frozenset({"classes_", "n_classes_", "n_outputs_", "tree_"}),
    "RandomForestClassifier": frozenset(
        {"classes_", "n_classes_", "n_outputs_", "estimator_", "estimators_"}
    ),
    "KMeans": frozenset({"cluster_centers_"}),
    # explained_variance_ and noise_variance_ divide by the exact row count (the ratio does
    # not): explained_variance_ stays, as NaN, because scikit-learn's transform reads it.
    "PCA": frozenset(
        {
            "components_",
            "n_components_",
            "mean_",
            "explained_variance_",
            "explained_variance_ratio_",
            "singular_values_",
        }
    ),
    "StandardScaler": frozenset({"mean_", "var_", "scale_"}),
}
#: Private state some estimators keep that no prediction needs.
_PRIVATE = frozenset({"_obj_coefs"})
#: Attributes a prediction reads that are not DP: kept with their shape, filled with NaN.
_BLANKED = frozenset({("PCA", "explained_variance_")})


def check_supported(estimator: Any) -> None:
    """Refuse estimators privml has not vetted, and options that reveal the exact row count."""
    name = type(estimator).__name__
    if not type(estimator).__module__.startswith("diffprivlib.") or name not in RELEASED:
        raise ConfigurationError(
            f"session.dp.fit takes diffprivlib estimators (e.g. diffprivlib.models."
            f"LogisticRegression(epsilon=1.0)), one of {sorted(RELEASED)}; got {name}"
        )
    params = estimator.get_params(deep=False)
    if name == "PCA" and params.get("whiten"):
        raise ConfigurationError(
            "PCA(whiten=True) divides by a variance computed from the exact row count, "
            "which is not differentially private: leave whiten=False"
        )
    if name == "PCA" and params.get("n_components") == "mle":
        raise ConfigurationError(
            "PCA(n_components='mle') chooses the dimension from the exact row count: "
            "pass an int or a fraction of explained variance"
        )
    if params.get("warm_start"):
        raise ConfigurationError("warm_start=True is not supported: leave it False")


def _seed_keys(estimator: Any) -> list[str]:
    return [
        k
        for k in estimator.get_params(deep=True)
        if k == "random_state" or k.endswith("__random_state")
    ]


def refuse_seeds(estimator: Any) -> None:
    """Refuse an estimator with a ``random_state`` set anywhere (it would make noise replayable)."""
    params = estimator.get_params(deep=True)
    seeded = [k for k in _seed_keys(estimator) if params[k] is not None]
    if seeded:
        raise ConfigurationError(
            f"{type(estimator).__name__} has {', '.join(seeded)} set: a DP release may not use "
            "randomness its caller can seed (the noise could be regenerated and subtracted). "
            "Leave random_state=None; privml draws fresh randomness from the operating system."
        )


def seed(estimator: Any) -> None:
    """Give every ``random_state`` of ``estimator`` its own generator keyed from ``secrets``."""
    estimator.set_params(**{k: fresh_random_state() for k in _seed_keys(estimator)})


def forget_randomness(estimator: Any) -> None:
    """Set every ``random_state`` of a fitted estimator (and its sub-estimators) to ``None``."""
    estimator.set_params(**dict.fromkeys(_seed_keys(estimator)))
    for sub in _fitted_estimators(estimator):
        forget_randomness(sub)


def strip(estimator: Any) -> None:
    """Remove every fitted attribute that is not a DP output, here and in sub-estimators."""
    keep = RELEASED[type(estimator).__name__] | _PUBLIC
    for attr in list(vars(estimator)):
        fitted = attr.endswith("_") and not attr.startswith("__")
        if (fitted and attr not in keep) or attr in _PRIVATE:
            delattr(estimator, attr)
        elif (type(estimator).__name__, attr) in _BLANKED:
            setattr(estimator, attr, np.full(np.shape(getattr(estimator, attr)), np.nan))
    for sub in _fitted_estimators(estimator):
        strip(sub)


def _fitted_estimators(estimator: Any) -> list[Any]:
    found = []
    for attr in ("estimator_", "estimators_"):
        value = vars(estimator).get(attr)
        for item in value if isinstance(value, list) else [value]:
            if item is not None and hasattr(item, "get_params"):
                found.append(item)
    return found
