"""Declared diffprivlib estimators: allowlisted classes and parameters, fitted models as JSON."""

from __future__ import annotations

import contextlib
import copy
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import privml
from privml import Budget, ConfigurationError
from privml.dp._declared_estimators import (
    ESTIMATORS,
    build_estimator,
    fitted_from_wire,
    fitted_to_wire,
)
from privml.dp._wire_arrays import from_wire, to_wire

pytest.importorskip("diffprivlib")

FEATURES = ["x1", "x2", "site"]


@pytest.fixture
def labs(tmp_path, key):
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame(
        {
            "x1": rng.uniform(0, 10, n),
            "x2": rng.normal(5, 2, n),
            "site": pd.Categorical(rng.choice(["A", "B", "C"], n), categories=["A", "B", "C"]),
        }
    )
    frame["label"] = pd.Categorical(
        np.where(frame["x1"] > 5, "high", "low"), categories=["low", "high"]
    )
    frame["y"] = 2.0 * frame["x1"] + rng.normal(0, 1, n)
    schema = privml.Schema(
        {
            "x1": privml.Field.numeric(bounds=(0.0, 10.0)),
            "x2": privml.Field.numeric(bounds=(-5.0, 15.0)),
            "site": privml.Field.categorical(categories=["A", "B", "C"]),
            "label": privml.Field.categorical(categories=["low", "high"]),
            "y": privml.Field.numeric(bounds=(-5.0, 25.0)),
        }
    )
    vault = privml.Vault.create(tmp_path / "labs.vault", key=key)
    vault.add_dataset("labs", frame, schema=schema, budget=Budget(epsilon=50.0, delta=1e-6))
    vault.add_purpose("research", description="Research", lawful_basis="GDPR 9(2)(j)")
    vault.add_principal("ana", roles=[])
    vault.grant(principal="ana", dataset="labs", purpose="research", mode="dp_training")
    yield vault, frame
    vault.close()


CASES = [
    ("LogisticRegression", {"epsilon": 2.0, "C": 0.5, "max_iter": 200}, "label", "predict"),
    ("GaussianNB", {"epsilon": 2.0, "var_smoothing": 1e-6}, "label", "predict"),
    ("LinearRegression", {"epsilon": 2.0, "fit_intercept": True}, "y", "predict"),
    ("KMeans", {"n_clusters": 3, "epsilon": 2.0}, None, "predict"),
    ("PCA", {"n_components": 2, "epsilon": 2.0, "centered": False}, None, "transform"),
    ("StandardScaler", {"epsilon": 2.0, "with_mean": True}, None, "transform"),
]


def test_every_offered_class_has_a_case():
    assert {c[0] for c in CASES} == set(ESTIMATORS)


@pytest.mark.parametrize(("name", "params", "target", "method"), CASES)
def test_each_estimator_fits_through_the_session_and_round_trips_as_strict_json(
    labs, seeded_entropy, name, params, target, method
):
    vault, frame = labs
    dp = vault.session("ana", purpose="research").dp
    fitted = dp.fit(build_estimator(name, params), "labs", features=FEATURES, target=target)
    text = json.dumps(fitted_to_wire(fitted), allow_nan=False)  # strict JSON: no NaN literals
    client = fitted_from_wire(json.loads(text))
    rows = frame.sample(50, random_state=0)
    assert np.array_equal(getattr(client, method)(rows), getattr(fitted, method)(rows))
    if name == "LogisticRegression":
        assert np.array_equal(client.predict_proba(rows), fitted.predict_proba(rows))
    assert type(client["model"]) is type(fitted["model"])
    wire = json.loads(text)
    assert set(wire["fitted"]) <= {*fitted["model"].__dict__}  # only what dp.fit kept
    assert "random_state" not in wire["params"] and "accountant" not in wire["params"]
    # raw feature values in, as the server's pipeline takes them
    new = pd.DataFrame({"x1": [1.0, 9.0], "x2": [0.0, 30.0], "site": ["C", "A"]})
    assert np.array_equal(getattr(client, method)(new), getattr(fitted, method)(new))


def test_a_bare_fitted_estimator_round_trips_too(labs, seeded_entropy):
    vault, frame = labs
    dp = vault.session("ana", purpose="research").dp
    fitted = dp.fit(build_estimator("GaussianNB", {}), "labs", features=["x1"], target="label")
    client = fitted_from_wire(fitted_to_wire(fitted["model"]))
    X = fitted["scale"].transform(frame[["x1"]])
    assert np.array_equal(client.predict(X), fitted["model"].predict(X))


@pytest.mark.parametrize(
    ("name", "params", "says"),
    [
        ("os.system", {}, "class: must be one of"),
        ("__import__", {"name": "os"}, "class: must be one of"),
        ("diffprivlib.models.GaussianNB", {}, "class"),
        ("DecisionTreeClassifier", {"epsilon": 1.0}, "class"),
        ("GaussianNB", {"accountant": "x"}, "params: unknown key 'accountant'"),
        ("GaussianNB", {"random_state": 1}, "params.random_state: not taken"),
        ("GaussianNB", {"priors": [0.5, 0.5]}, "unknown key 'priors'"),
        ("GaussianNB", {"epsilon": float("nan")}, "params.epsilon"),
        ("GaussianNB", {"epsilon": float("inf")}, "params.epsilon"),
        ("GaussianNB", {"epsilon": 0}, "params.epsilon"),
        ("GaussianNB", {"epsilon": True}, "params.epsilon"),
        ("GaussianNB", {"epsilon": "1"}, "params.epsilon"),
        ("GaussianNB", {"bounds": [0, 1, 2]}, "params.bounds"),
        ("GaussianNB", {"bounds": [[0, 0], [1]]}, "params.bounds"),
        ("GaussianNB", {"bounds": [1, 0]}, "params.bounds"),
        ("GaussianNB", {"bounds": [[0], ["a"]]}, "params.bounds[1][0]"),
        ("LogisticRegression", {"data_norm": -1}, "params.data_norm"),
        ("LogisticRegression", {"max_iter": True}, "params.max_iter"),
        ("KMeans", {"n_clusters": 10**9}, "params.n_clusters"),
        ("PCA", {"whiten": True}, "unknown key 'whiten'"),
        ("PCA", {"n_components": "mle"}, "params.n_components"),
        ("GaussianNB", ["epsilon", 1.0], "params: must be an object"),
        ("GaussianNB", {"epsilon": {"__class__": "x"}}, "params.epsilon"),
    ],
)
def test_hostile_descriptions_are_refused_naming_the_path(name, params, says):
    with pytest.raises(ConfigurationError) as caught:
        build_estimator(name, params)
    assert says in str(caught.value)


def test_a_refused_description_spends_nothing(labs):
    vault, _ = labs
    with pytest.raises(ConfigurationError):
        build_estimator("GaussianNB", {"epsilon": 1.0, "random_state": 0})
    assert vault.budget("labs").epsilon_spent == 0


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=16,
)
PARAM_NAMES = sorted({p for params in ESTIMATORS.values() for p in params} | {"random_state"})


@settings(max_examples=300)
@given(
    name=st.sampled_from([*ESTIMATORS, "Tree"]) | st.text(max_size=8) | JSONISH,
    params=JSONISH | st.dictionaries(st.sampled_from(PARAM_NAMES), JSONISH, max_size=4),
)
def test_arbitrary_descriptions_build_or_are_refused(name, params):
    with contextlib.suppress(ConfigurationError):
        build_estimator(name, params)


@pytest.fixture(scope="module")
def wire():
    """A valid wire (a fitted LogisticRegression with a scaler), made without a vault."""
    from diffprivlib.models import LogisticRegression
    from sklearn.pipeline import Pipeline

    from privml.dp.scaling import SchemaScaler

    scaler = SchemaScaler(
        bounds={"x": (0.0, 1.0)}, categories={"s": ["a", 1]}, features=["x", "s"]
    ).fit(None)
    model = LogisticRegression(epsilon=1.0)
    model.classes_ = np.asarray(["n", "y"])
    model.coef_ = np.asarray([[0.5, -1.0, 2.0]])
    model.intercept_ = np.asarray([0.1])
    model.n_features_in_ = 3
    return fitted_to_wire(Pipeline([("scale", scaler), ("model", model)]))


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def test_the_wire_fixture_rebuilds(wire):
    client = fitted_from_wire(json.loads(json.dumps(wire, allow_nan=False)))
    rows = pd.DataFrame({"x": [0.2, 0.9], "s": ["a", 1]})
    assert client.predict(rows).tolist() == ["n", "y"]  # -0.8 and 2.55


@settings(max_examples=400)
@given(data=st.data(), replacement=JSONISH)
def test_a_mutated_wire_rebuilds_or_is_refused(wire, data, replacement):
    paths = [p for p in _paths(wire) if p]
    path = data.draw(st.sampled_from(paths))
    mutated = copy.deepcopy(wire)
    holder = mutated
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = replacement
    with contextlib.suppress(ConfigurationError):
        fitted_from_wire(mutated)


@settings(max_examples=200)
@given(value=JSONISH)
def test_arbitrary_json_is_refused_as_a_wire(value):
    with contextlib.suppress(ConfigurationError):
        fitted_from_wire(value)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"class": "DecisionTreeClassifier"}, "class"),
        ({"format": "pickle"}, "format"),
        ({"fitted": {"_obj_coefs": None}}, "fitted: unknown key '_obj_coefs'"),
        ({"fitted": {"coef_": {"dtype": "object", "shape": [1], "data": [{"a": 1}]}}}, "coef_"),
        ({"fitted": {"coef_": {"dtype": "<f8", "shape": [1], "data": [1.0]}}}, "dtype"),
        ({"fitted": {"coef_": {"dtype": "float64", "shape": [2], "data": [1.0]}}}, "data"),
        (
            {"fitted": {"coef_": {"dtype": "float64", "shape": [10**6, 10**6], "data": []}}},
            "shape: holds more than",
        ),
        ({"fitted": {"coef_": {"dtype": "int32", "shape": [1], "data": [2**40]}}}, "data[0]"),
        ({"params": {"random_state": 3}}, "params.random_state"),
        ({"scaler": {"features": ["x"]}}, "scaler: missing"),
    ],
)
def test_tampered_wires_are_refused_by_path(wire, changes, says):
    mutated = {**copy.deepcopy(wire), **changes}
    with pytest.raises(ConfigurationError) as caught:
        fitted_from_wire(mutated)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    "array",
    [
        np.asarray([[1.5, np.nan], [np.inf, -np.inf]]),
        np.asarray([1, 2, 3], dtype=np.int64),
        np.asarray(["a", "bcd"]),
        np.asarray([True, False]),
        np.asarray(["a", 1], dtype=object),
        np.float64(0.1),
        np.zeros((0, 3)),
    ],
)
def test_arrays_round_trip_exactly_through_strict_json(array):
    back = from_wire(json.loads(json.dumps(to_wire(array, "a"), allow_nan=False)), "a")
    np.testing.assert_array_equal(np.asarray(back), np.asarray(array))
    assert np.asarray(back).dtype == np.asarray(array).dtype
