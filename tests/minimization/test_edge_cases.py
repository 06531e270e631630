"""Cases that break other minimizers, and the shapes of data and models Minimizer takes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris, make_regression
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from privml.exceptions import ConfigurationError, NotFoundError, SchemaError
from privml.minimization import Minimizer
from privml.minimization._types import Candidate


class IsRed(ClassifierMixin, BaseEstimator):
    """Predicts 1 exactly when ``color`` is ``"red"`` (for any other columns)."""

    def fit(self, X, y=None):
        return self

    def __sklearn_is_fitted__(self):
        return True

    def predict(self, X):
        return (np.asarray(X["color"]) == "red").astype(int)


@pytest.fixture
def colors() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue", "black"], size=n),
            "size": rng.normal(size=n),
            "planet": ["earth"] * n,  # a categorical feature with a single category
        }
    )


def test_accuracy_exactly_at_the_target_is_accepted(cases, fitted):
    case = cases("breast_cancer")
    first = fitted("breast_cancer", 0.9)
    exact = min(first.accuracy_, first.fit_accuracy_)
    second = Minimizer(case.model, target_accuracy=exact, random_state=0).fit(case.X)
    assert min(second.accuracy_, second.fit_accuracy_) >= exact
    assert Candidate({}, accuracy=0.95, fit_accuracy=0.95, ncp=0.5, target=0.95).admissible
    assert not Candidate({}, accuracy=0.95, fit_accuracy=0.9499, ncp=0.5, target=0.95).admissible


def test_a_cell_holding_a_single_category(colors):
    minimizer = Minimizer(IsRed(), target_accuracy=1.0, random_state=0).fit(colors)
    assert minimizer.accuracy_ == 1.0
    released = minimizer.transform(colors)
    assert (released["color"] == "red").equals(colors["color"] == "red")
    assert minimizer.feature_ncp_["planet"] == 0.0  # one category: nothing to hide
    assert minimizer.feature_ncp_["size"] == 1.0  # the model ignores it: dropped


def test_a_constant_feature(cases):
    case = cases("breast_cancer")
    X = case.X.assign(constant=3.0)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, case.model.predict(case.X))
    minimizer = Minimizer(model, target_accuracy=0.95, random_state=0).fit(X)
    assert minimizer.feature_ncp_["constant"] == 0.0
    assert (minimizer.transform(X)["constant"] == 3.0).all()
    assert 0.0 <= minimizer.ncp_ <= 1.0


def test_a_single_class_prediction_drops_everything(cases):
    case = cases("breast_cancer")
    always = DummyClassifier(strategy="constant", constant=1).fit(case.X, np.ones(len(case.X)))
    minimizer = Minimizer(always, target_accuracy=0.99, random_state=0).fit(case.X)
    assert minimizer.accuracy_ == 1.0
    assert minimizer.ncp_ == 1.0
    assert minimizer.group_sizes_.tolist() == [len(case.X)]


def _state(kind_of_color: dict) -> dict:
    minimizer = Minimizer(IsRed(), features=["color"])
    minimizer.fit(pd.DataFrame({"color": ["red", "green", "blue", "black"] * 10}))
    state = minimizer.to_dict()
    state["generalizations"] = {"features": {"color": kind_of_color}, "cells": None}
    return state


def test_unseen_categories_are_refused_by_groups_with_the_column_named():
    state = _state({"type": "categorical", "kind": "groups",
                    "groups": [["red"], ["black", "blue", "green"]],
                    "representatives": ["red", "green"]})  # fmt: skip
    minimizer = Minimizer.from_dict(state)
    with pytest.raises(SchemaError, match=r"'color'.*never seen.*'purple'"):
        minimizer.transform(pd.DataFrame({"color": ["red", "purple"]}))


def test_unseen_categories_of_a_dropped_feature_are_released_like_any_other():
    state = _state({"type": "categorical", "kind": "dropped", "representative": "green",
                    "categories": ["black", "blue", "green", "red"]})  # fmt: skip
    released = Minimizer.from_dict(state).transform(pd.DataFrame({"color": ["red", "purple"]}))
    assert released["color"].tolist() == ["green", "green"]


def test_unseen_categories_answer_no_to_every_cell_question():
    state = _state({"type": "categorical", "kind": "cells"})
    state["generalizations"]["cells"] = {
        "features": ["color"],
        "domains": {"color": ["black", "blue", "green", "red"]},
        "nodes": [
            {"feature": "color", "equals": "red", "yes": 1, "no": 2},
            {"cell": 0},
            {"cell": 1},
        ],
        "representatives": [["red"], ["blue"]],
        "sizes": [10, 30],
    }
    minimizer = Minimizer.from_dict(state)
    released = minimizer.transform(pd.DataFrame({"color": ["red", "purple", "black"]}))
    assert released["color"].tolist() == ["red", "blue", "blue"]
    labels = minimizer.set_params(output="interval").transform(
        pd.DataFrame({"color": ["red", "purple"]})
    )
    assert labels["color"].tolist() == ["red", "not red"]


def test_multiclass_classification():
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    minimizer = Minimizer(model, target_accuracy=0.95, random_state=0).fit(X)
    held = X.iloc[minimizer.holdout_indices_]
    assert (model.predict(minimizer.transform(held)) == model.predict(held)).mean() >= 0.95
    assert minimizer.task_ == "classification"


def test_multi_output_regression_uses_the_mean_r2():
    X, y = make_regression(n_samples=300, n_features=5, n_targets=2, random_state=0)
    model = DecisionTreeRegressor(max_depth=4, random_state=0).fit(X, y)
    minimizer = Minimizer(model, target_accuracy=0.9, random_state=0).fit(X)
    held = X[minimizer.holdout_indices_]
    before, after = model.predict(held), model.predict(minimizer.transform(held))
    r2 = 1 - ((after - before) ** 2).sum(axis=0) / ((before - before.mean(axis=0)) ** 2).sum(axis=0)
    assert r2.mean() >= 0.9
    assert minimizer.task_ == "regression"


def test_multi_output_classification_keeps_every_output():
    X, y = make_regression(n_samples=300, n_features=4, n_targets=2, random_state=1)
    labels = (y > 0).astype(int)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, labels)
    minimizer = Minimizer(model, target_accuracy=0.9, random_state=0).fit(X)
    held = X[minimizer.holdout_indices_]
    same = (model.predict(minimizer.transform(held)) == model.predict(held)).all(axis=1)
    assert same.mean() >= 0.9


def test_arrays_in_arrays_out_with_features_by_position(cases):
    case = cases("diabetes")
    X = case.X.to_numpy(dtype=np.float32)
    model = LinearRegression().fit(X, case.model.predict(case.X))
    minimizer = Minimizer(model, features=[0, 1, 2], target_accuracy=0.95, random_state=0).fit(X)
    released = minimizer.transform(X)
    assert isinstance(released, np.ndarray) and released.dtype == np.float32
    np.testing.assert_array_equal(released[:, 3:], X[:, 3:])
    assert minimizer.features_ == ["x0", "x1", "x2"]


def test_interval_output_releases_labels_one_per_released_value(cases, fitted):
    case = cases("adult")
    minimizer = fitted("adult", 0.9)
    values = minimizer.transform(case.X)
    labels = minimizer.set_params(output="interval").transform(case.X)
    minimizer.set_params(output="representative")
    for name, rule in minimizer.generalizations_["features"].items():
        if rule["kind"] == "kept":
            assert labels[name].equals(case.X[name])
        elif rule["kind"] == "dropped":
            assert set(labels[name]) == {"*"}
        elif rule["kind"] in ("ranges", "groups"):
            pairs = pd.DataFrame(
                {"v": values[name].astype(str), "l": labels[name]}
            ).drop_duplicates()
            assert pairs["v"].is_unique and pairs["l"].is_unique


class NotFitted(ClassifierMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def predict(self, X):
        return np.zeros(len(X))


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"target_accuracy": 1.5}, ConfigurationError, "target_accuracy"),
        ({"target_accuracy": 0}, ConfigurationError, "target_accuracy"),
        ({"min_group_size": 0}, ConfigurationError, "min_group_size"),
        ({"output": "ranges"}, ConfigurationError, "output"),
        ({"features": ["no such column"]}, NotFoundError, "no column named"),
        ({"categorical": [99]}, NotFoundError, "out of range"),
        ({"cv": 1.5}, ConfigurationError, "fraction"),
        ({"cv": 5000}, ConfigurationError, "hold out between"),
        ({"cv": [([0, 1], [2]), ([2], [0, 1])]}, ConfigurationError, "exactly one"),
        ({"cv": ([0, 1, 2], [2, 3])}, ConfigurationError, "overlap"),
    ],
)
def test_bad_settings_name_the_fix(cases, params, error, match):
    case = cases("diabetes")
    with pytest.raises(error, match=match):
        Minimizer(case.model, **params).fit(case.X)


def test_an_unfitted_model_is_refused():
    with pytest.raises(ConfigurationError, match=r"not fitted.*FrozenEstimator"):
        Minimizer(NotFitted()).fit(np.zeros((10, 2)))


def test_an_explicit_split_is_used_as_given(cases):
    case = cases("diabetes")
    held = np.arange(0, len(case.X), 3)
    search = np.setdiff1d(np.arange(len(case.X)), held)
    minimizer = Minimizer(case.model, target_accuracy=0.9, cv=(search, held)).fit(case.X)
    assert minimizer.holdout_indices_.tolist() == held.tolist()
