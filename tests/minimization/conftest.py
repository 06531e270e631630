"""Datasets, fitted models and fitted minimizers shared by the minimization tests.

Each case splits its data into the rows given to ``Minimizer.fit`` (the model's
training rows, as in real use) and fresh rows that neither the model nor the
minimizer has seen. Minimizers are fitted once per (case, target) and shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from privml.datasets import ADULT_CATEGORICAL, load_adult
from privml.minimization import Minimizer

TARGETS = (0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Case:
    name: str
    X: pd.DataFrame  # rows given to fit (the model was trained on them)
    fresh: pd.DataFrame  # rows neither the model nor the minimizer saw
    model: Any
    regression: bool


def agreement(case: Case, original: pd.DataFrame, released: pd.DataFrame) -> float:
    """Accuracy (R² for regression) of the model on ``released`` against ``original``."""
    before = np.asarray(case.model.predict(original))
    after = np.asarray(case.model.predict(released))
    if case.regression:
        sst = float(((before - before.mean()) ** 2).sum())
        return 1.0 - float(((after - before) ** 2).sum()) / sst
    return float((after == before).mean())


def _breast_cancer() -> Case:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_fit, X_fresh, y_fit, _ = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    model = DecisionTreeClassifier(max_depth=6, random_state=0).fit(X_fit, y_fit)
    return Case("breast_cancer", X_fit, X_fresh, model, False)


def _diabetes() -> Case:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X_fit, X_fresh, y_fit, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    model = RandomForestRegressor(n_estimators=30, min_samples_leaf=5, random_state=0)
    return Case("diabetes", X_fit, X_fresh, model.fit(X_fit, y_fit), True)


def _adult() -> Case:
    train = load_adult("train").sample(n=3000, random_state=1).reset_index(drop=True)
    fresh = load_adult("test").sample(n=3000, random_state=1).reset_index(drop=True)
    encode = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), list(ADULT_CATEGORICAL))],
        remainder="passthrough",
    )
    forest = RandomForestClassifier(n_estimators=30, min_samples_leaf=5, random_state=0)
    model = Pipeline([("encode", encode), ("forest", forest)])
    model.fit(train.drop(columns="income"), train["income"])
    # Categories never seen in training are refused by per-feature rules (tested on their own).
    known = np.ones(len(fresh), dtype=bool)
    for column in ADULT_CATEGORICAL:
        known &= fresh[column].isin(set(train[column])).to_numpy()
    fresh = fresh[known].reset_index(drop=True)
    return Case("adult", train.drop(columns="income"), fresh.drop(columns="income"), model, False)


CASES: dict[str, Callable[[], Case]] = {
    "breast_cancer": _breast_cancer,
    "diabetes": _diabetes,
    "adult": _adult,
}


@pytest.fixture(scope="session")
def cases() -> Callable[[str], Case]:
    """``cases(name)``: the named case, built once per session."""
    built: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in built:
            built[name] = CASES[name]()
        return built[name]

    return get


@pytest.fixture(scope="session")
def fitted(cases: Callable[[str], Case]) -> Callable[..., Minimizer]:
    """``fitted(name, target, **params)``: a fitted Minimizer, built once per session."""
    built: dict[tuple[Any, ...], Minimizer] = {}

    def get(name: str, target: float, **params: Any) -> Minimizer:
        key = (name, target, tuple(sorted(params.items())))
        if key not in built:
            case = cases(name)
            minimizer = Minimizer(case.model, target_accuracy=target, random_state=0, **params)
            built[key] = minimizer.fit(case.X)
        return built[key]

    return get
