"""What ``session.dp.fit`` returns holds DP outputs only: no exact count, no exact statistic.

Written as the attacker: an analyst granted ``dp_training`` who inspects every
fitted attribute (``n_samples_seen_``, ``class_count_``, ``labels_``, ...) of
the model it gets back, hoping to read the exact, row-filtered row count.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from diffprivlib import models
from sklearn.datasets import load_breast_cancer

from privml import Budget, Field, Schema, Vault
from privml.dp._estimators import RELEASED

ESTIMATORS = {
    "LogisticRegression": lambda: models.LogisticRegression(epsilon=2.0),
    "LinearRegression": lambda: models.LinearRegression(epsilon=2.0),
    "GaussianNB": lambda: models.GaussianNB(epsilon=2.0),
    "DecisionTreeClassifier": lambda: models.DecisionTreeClassifier(epsilon=2.0, max_depth=3),
    "RandomForestClassifier": lambda: models.RandomForestClassifier(
        epsilon=2.0, n_estimators=3, max_depth=3
    ),
    "KMeans": lambda: models.KMeans(n_clusters=2, epsilon=2.0),
    "PCA": lambda: models.PCA(n_components=2, epsilon=2.0),
    "StandardScaler": lambda: models.StandardScaler(epsilon=2.0),
}
UNSUPERVISED = {"KMeans", "PCA", "StandardScaler"}


def test_every_supported_estimator_is_checked_here():
    assert set(ESTIMATORS) == set(RELEASED)


@pytest.fixture(scope="module")
def data():
    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.replace(" ", "_"))
    features = [c for c in frame.columns if c != "target"][:8]
    fields = {
        c: Field.numeric(bounds=(float(frame[c].min()) - 1, float(frame[c].max()) + 1))
        for c in features
    }
    fields["target"] = Field.categorical(categories=[0, 1])
    fields["site"] = Field.categorical(categories=["A", "B"])
    frame["site"] = np.where(np.arange(len(frame)) % 3 == 0, "B", "A")
    return frame[[*features, "target", "site"]], Schema(fields), features


def _numbers(value, depth=0):
    """Every number reachable from a fitted attribute (arrays, lists, trees, sub-estimators)."""
    if depth > 4 or value is None or isinstance(value, str | bool):
        return []
    if isinstance(value, int | float | np.number):
        return [float(value)]
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        return value.astype(float).ravel().tolist()
    if isinstance(value, list | tuple | np.ndarray):
        return [n for item in value for n in _numbers(item, depth + 1)]
    if hasattr(value, "n_node_samples"):  # a scikit-learn Tree
        arrays = (value.n_node_samples, value.weighted_n_node_samples, value.value)
        return [n for a in arrays for n in _numbers(np.asarray(a), depth + 1)]
    if hasattr(value, "get_params"):
        return [n for k, v in vars(value).items() if k.endswith("_") for n in _numbers(v, depth)]
    return []


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_no_fitted_attribute_is_an_exact_count_or_statistic(tmp_path, key, data, name):
    frame, schema, features = data
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset("d", frame, schema=schema, budget=Budget(epsilon=100.0, delta=1e-5))
        v.add_purpose("p", description="Tests", lawful_basis="consent")
        v.add_principal("eve", roles=[])
        # Eve trains on site A only: the row-filtered count is what she must not learn.
        v.grant(
            principal="eve", dataset="d", purpose="p", mode="dp_training",
            row_filter=[("site", "==", "A")],
        )  # fmt: skip
        seen = frame[frame["site"] == "A"]
        n = len(seen)
        target = None if name in UNSUPERVISED else "target"
        if name == "LinearRegression":  # a numeric target
            features, target = features[:-1], features[-1]
        fitted = v.session("eve", purpose="p").dp.fit(
            ESTIMATORS[name](), "d", features=features, target=target
        )
    model = fitted["model"]
    fitted_attrs = {k for k in vars(model) if k.endswith("_") and not k.startswith("__")}
    assert fitted_attrs <= RELEASED[name] | {"n_features_in_", "feature_names_in_"}
    numbers = _numbers(model)
    assert numbers, "the model releases nothing?"
    exact_counts = {float(n), float(n - 1), *map(float, seen["target"].value_counts())}
    assert not exact_counts & set(numbers)
    scaled = fitted["scale"].transform(seen[features])
    exact = np.concatenate([scaled.mean(axis=0), scaled.var(axis=0)])
    assert not np.isclose(np.asarray(numbers)[:, None], exact[None, :], rtol=0, atol=1e-12).any()
    # No ratio k/n (e.g. exact class priors) either: a float in (0, 1) whose nearest
    # fraction with denominator n is within 1e-9. Continuous noise lands that close with
    # probability < 2e-9 * n per value, below 1e-6 for the few hundred values checked.
    for x in numbers:
        if 0 < x < 1:
            k = round(x * n)
            assert k in (0, n) or abs(x - Fraction(k, n)) > 1e-9, f"{x} = {k}/{n}"
