"""Real data (scikit-learn's breast_cancer and digits), trained models and clients, built once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _he_helpers import square_module, train_mlp
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import privml.he as he

pytest.importorskip("tenseal")


@pytest.fixture(scope="session")
def cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """breast_cancer split: X_train, X_test, y_train, y_test (raw, unscaled features)."""
    X, y = load_breast_cancer(return_X_y=True)
    return tuple(train_test_split(X, y, test_size=0.25, random_state=0))  # type: ignore[return-value]


@pytest.fixture(scope="session")
def cancer_models(cancer: Any) -> dict[str, Pipeline]:
    """Scaler + logistic regression, at the default C and with strong regularization."""
    X_train, _, y_train, _ = cancer
    return {
        name: make_pipeline(StandardScaler(), LogisticRegression(C=C)).fit(X_train, y_train)
        for name, C in (("default C", 1.0), ("strong regularization", 0.01))
    }


@pytest.fixture(scope="session")
def cancer_compiled(cancer: Any, cancer_models: dict[str, Pipeline]) -> dict[str, he.HEModel]:
    X_train = cancer[0]
    return {name: he.compile(m, calibration=X_train) for name, m in cancer_models.items()}


@pytest.fixture(scope="session")
def cancer_clients(cancer_compiled: dict[str, he.HEModel]) -> dict[str, he.HEClient]:
    return {name: he.HEClient.for_model(m.spec) for name, m in cancer_compiled.items()}


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """digits split, pixels scaled to [0, 1]."""
    X, y = load_digits(return_X_y=True)
    return tuple(train_test_split(X / 16.0, y, test_size=0.25, random_state=0))  # type: ignore[return-value]


@pytest.fixture(scope="session")
def digits_mlp(digits: Any) -> Any:
    """64-16-10 MLP with x**2 activation on digits (about 97% test accuracy)."""
    X_train, _, y_train, _ = digits
    return train_mlp(X_train, y_train, square_module(), hidden=16)


@pytest.fixture(scope="session")
def digits_compiled(digits: Any, digits_mlp: Any) -> he.HEModel:
    return he.compile(digits_mlp, calibration=digits[0], link="softmax")


@pytest.fixture(scope="session")
def digits_client(digits_compiled: he.HEModel) -> he.HEClient:
    return he.HEClient.for_model(digits_compiled.spec)


@pytest.fixture(scope="session")
def tiny() -> tuple[he.HEModel, he.HEClient, np.ndarray]:
    """A 3-feature logistic regression at N=4096: cheap to encrypt in many tests."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X @ [1.0, -2.0, 0.5] > 0).astype(int)
    model = he.compile(LogisticRegression().fit(X, y), input_range=(-8.0, 8.0))
    return model, he.HEClient.for_model(model.spec), X[:5]
