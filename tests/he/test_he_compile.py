"""Lowering models: scalers folded, activations probed and fitted, clear errors otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

import privml.he as he
from privml.exceptions import ConfigurationError


@pytest.mark.parametrize(
    "scaler", [StandardScaler(), RobustScaler(), MaxAbsScaler(), MinMaxScaler()]
)
def test_scalers_are_folded_into_the_weights(cancer, scaler):
    X_train, X_test, y_train, _ = cancer
    pipe = make_pipeline(scaler, LogisticRegression(C=0.1)).fit(X_train, y_train)
    model = he.compile(pipe, calibration=X_train)
    assert len(model.network.layers) == 1 and model.depth == 1
    np.testing.assert_allclose(
        model.plaintext_scores(X_test)[:, 0], pipe.decision_function(X_test), atol=1e-9
    )
    assert "LogisticRegression" in model.spec.description


def test_clipping_scaler_makes_the_client_clip(cancer):
    X_train, X_test, y_train, _ = cancer
    pipe = make_pipeline(MinMaxScaler(clip=True), LogisticRegression(C=0.1)).fit(X_train, y_train)
    model = he.compile(pipe)  # the scaler's own range sizes the parameters
    assert model.spec.clip_inputs
    client = he.HEClient.for_model(model.spec)
    wild = X_test[:10] * np.where(np.arange(30) % 2, 3.0, -1.0)  # far outside the training range
    result = model.predict_encrypted(client.encrypt(wild), client.public_context())
    np.testing.assert_allclose(
        client.decrypt(result, output="scores"), pipe.decision_function(wild), atol=1e-3
    )


def test_privml_schema_scaler_pipeline():
    scaling = pytest.importorskip("privml.dp.scaling")
    rng = np.random.default_rng(1)
    X = rng.uniform([0, 20], [120, 40], size=(200, 2))
    y = (X[:, 0] / 120 + (X[:, 1] - 20) / 20 > 1).astype(int)
    scaler = scaling.SchemaScaler(
        bounds={"age": (0, 120), "bmi": (10, 50)}, features=["age", "bmi"]
    )
    pipe = make_pipeline(scaler, LogisticRegression()).fit(X, y)
    model = he.compile(pipe)
    assert model.spec.clip_inputs
    assert model.spec.input_low == (0.0, 10.0) and model.spec.input_high == (120.0, 50.0)
    np.testing.assert_allclose(
        model.plaintext_scores(X)[:, 0], pipe.decision_function(X), atol=1e-9
    )


def test_calibration_range_is_a_power_of_two(cancer, cancer_compiled):
    spec = cancer_compiled["default C"].spec
    high = np.array(spec.input_high)
    np.testing.assert_array_equal(np.log2(high), np.round(np.log2(high)))
    np.testing.assert_array_equal(spec.input_low, -high)
    assert np.all(high >= 1.5 * np.abs(cancer[0]).max(axis=0))


def test_unsupported_models_and_steps(cancer):
    from sklearn.ensemble import RandomForestClassifier

    X_train, _, y_train, _ = cancer
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X_train, y_train)
    with pytest.raises(ConfigurationError, match="cannot compile a RandomForestClassifier"):
        he.compile(forest, calibration=X_train)
    pipe = make_pipeline(StandardScaler(), PolynomialFeatures(), LogisticRegression())
    pipe.fit(X_train[:, :2], y_train)
    with pytest.raises(ConfigurationError, match="PolynomialFeatures is not an affine scaler"):
        he.compile(pipe, calibration=X_train[:, :2])
    with pytest.raises(ConfigurationError, match="not a fitted linear model"):
        he.compile(make_pipeline(StandardScaler(), LogisticRegression()), calibration=X_train)


def test_ranges_are_required_and_checked(cancer, cancer_models):
    model = cancer_models["default C"]
    with pytest.raises(ConfigurationError, match=r"input_range=.*calibration"):
        he.compile(model)
    with pytest.raises(ConfigurationError, match="calibration has 2 features"):
        he.compile(model, calibration=cancer[0][:, :2])
    with pytest.raises(ConfigurationError, match="low <= high"):
        he.compile(model, input_range=(1.0, 0.0))
    with pytest.raises(ConfigurationError, match="activation_degree"):
        he.compile(model, calibration=cancer[0], activation_degree=0)
    compiled = he.compile(model, input_range=(0.0, 5000.0))
    assert compiled.spec.input_low == (0.0,) * 30


def test_torch_layers_are_probed():
    torch = pytest.importorskip("torch")
    from _he_helpers import square_module

    torch.manual_seed(0)
    X = np.random.default_rng(0).normal(size=(50, 4))
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(4, 6),
        torch.nn.Dropout(0.5),  # identity at inference, folded away
        square_module(),
        torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Identity()),
        torch.nn.Linear(6, 3),
    )
    model = he.compile(net, calibration=X)
    assert len(model.network.layers) == 2  # Linear-Linear merged
    assert model.depth == 2 and model.spec.requirements.folded  # x**2 folded into the last
    with torch.no_grad():
        expected = net.eval()(torch.tensor(X, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(model.plaintext_scores(X), expected, atol=1e-4)
    for bad, why in (
        (torch.nn.Softmax(dim=1), "depend on the feature position"),
        (torch.nn.LayerNorm(6), "depend on the feature position"),
        (torch.nn.Linear(5, 6), "do not chain"),
    ):
        seq = torch.nn.Sequential(torch.nn.Linear(4, 6), bad, torch.nn.Linear(6, 2))
        with pytest.raises(ConfigurationError, match=why):
            he.compile(seq, calibration=X)
    with pytest.raises(ConfigurationError, match=r"nn\.Sequential"):
        he.compile(torch.nn.Linear(4, 2), calibration=X)
    with pytest.raises(ConfigurationError, match="link"):
        he.compile(torch.nn.Sequential(torch.nn.Linear(4, 2)), calibration=X, link="probit")
