"""Encrypted predictions agree with the plaintext models on real data, for both packings."""

from __future__ import annotations

import numpy as np
import pytest

import privml.he as he
from privml.exceptions import ConfigurationError

PACKINGS = ["columns", "rows"]


@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("name", ["default C", "strong regularization"])
def test_breast_cancer_logistic_regression_agrees(
    cancer, cancer_models, cancer_compiled, cancer_clients, name, packing
):
    X_test = cancer[1]
    report = cancer_compiled[name].check(X_test, cancer_clients[name], packing=packing)
    print(report)  # shown with pytest -rP
    assert report.n_samples == len(X_test)
    assert report.agreement == 1.0
    assert report.max_approximation_error < 1e-9  # a linear model needs no approximation
    assert report.max_logit_error < 1e-3  # compile's default tolerance


def test_breast_cancer_outputs_match_sklearn(
    cancer, cancer_models, cancer_compiled, cancer_clients
):
    X_test = cancer[1][:50]
    model, client = cancer_compiled["default C"], cancer_clients["default C"]
    sk = cancer_models["default C"]
    result = model.predict_encrypted(client.encrypt(X_test), client.public_context())
    np.testing.assert_allclose(client.decrypt(result), sk.predict_proba(X_test), atol=1e-4)
    np.testing.assert_allclose(
        client.decrypt(result, output="scores"), sk.decision_function(X_test), atol=1e-3
    )
    np.testing.assert_array_equal(client.decrypt(result, output="labels"), sk.predict(X_test))


@pytest.mark.parametrize("packing", PACKINGS)
def test_digits_mlp_with_square_agrees(digits, digits_compiled, digits_client, packing):
    X_test = digits[1]
    report = digits_compiled.check(X_test, digits_client, packing=packing)
    print(report)  # shown with pytest -rP
    assert report.agreement == 1.0
    assert report.max_logit_error < 1e-3
    assert report.max_approximation_error < 1e-4  # x**2 is reproduced exactly (float32 model)


def test_digits_mlp_parameters_follow_depth(digits_compiled, digits_client):
    assert digits_compiled.depth == 2  # Linear, then x**2 folded into the last Linear
    assert digits_compiled.network.activations[0].name == "x**2"
    assert digits_compiled.spec.requirements.fold_bits >= 20
    params = digits_client.parameters
    assert params.poly_modulus_degree == 8192
    assert len(params.coeff_mod_bit_sizes) == 4  # [q0, r, s, special]
    assert sum(params.coeff_mod_bit_sizes) <= 218


def test_digits_probabilities_and_labels(digits, digits_mlp, digits_compiled, digits_client):
    torch = pytest.importorskip("torch")
    X = digits[1][:20]
    result = digits_compiled.predict_encrypted(
        digits_client.encrypt(X), digits_client.public_context()
    )
    with torch.no_grad():
        logits = digits_mlp(torch.tensor(X, dtype=torch.float32)).double()
    np.testing.assert_allclose(
        digits_client.decrypt(result), torch.softmax(logits, dim=1).numpy(), atol=1e-4
    )
    np.testing.assert_array_equal(
        digits_client.decrypt(result, output="labels"), logits.argmax(1).numpy()
    )


def test_relu_mlp_is_approximated_and_reported(digits):
    torch = pytest.importorskip("torch")
    from _he_helpers import train_mlp

    X_train, X_test, y_train, _ = digits
    net = train_mlp(X_train[:500], y_train[:500], torch.nn.ReLU(), hidden=8, steps=100)
    with pytest.raises(ConfigurationError, match="calibration"):
        he.compile(net)  # a ReLU must be fitted over some range
    model = he.compile(net, calibration=X_train, link="softmax")
    act = model.network.activations[0]
    assert act.name == "ReLU" and act.max_fit_error > 0 and act.fit_range is not None
    client = he.HEClient.for_model(model.spec)
    report = model.check(X_test[:64], client)
    assert report.max_approximation_error > 10 * report.max_he_noise  # the split is visible
    assert report.max_he_noise < 1e-3
    assert report.approximation_agreement is not None and report.approximation_agreement > 0.5
    assert "activation approximation" in str(report)


def test_multinomial_logistic_regression_and_linear_svc(digits):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    X_train, X_test, y_train, _ = digits
    X_test = X_test[:64]
    for estimator, output in (
        (LogisticRegression(), "proba"),
        (LinearSVC(), "scores"),
    ):
        est = estimator.fit(X_train[:600], y_train[:600])
        model = he.compile(est, input_range=(0.0, 1.0))
        client = he.HEClient.for_model(model.spec)
        result = model.predict_encrypted(client.encrypt(X_test), client.public_context())
        expected = est.predict_proba(X_test) if output == "proba" else est.decision_function(X_test)
        np.testing.assert_allclose(client.decrypt(result), expected, atol=1e-4)
        np.testing.assert_array_equal(client.decrypt(result, output="labels"), est.predict(X_test))


def test_regression_models(cancer):
    from sklearn.linear_model import LinearRegression, Ridge

    X_train, X_test, _, _ = cancer
    target = X_train[:, 0] * 0.5 + X_train[:, 3] * 0.01
    for est in (LinearRegression(), Ridge(alpha=10.0)):
        fitted = est.fit(X_train[:, 1:], target)
        model = he.compile(fitted, calibration=X_train[:, 1:])
        client = he.HEClient.for_model(model.spec)
        result = model.predict_encrypted(client.encrypt(X_test[:30, 1:]), client.public_context())
        out = client.decrypt(result)
        assert out.shape == (30,)
        np.testing.assert_allclose(out, fitted.predict(X_test[:30, 1:]), atol=1e-3)
        with pytest.raises(ValueError, match="no probabilistic link"):
            client.decrypt(result, output="proba")


# diffprivlib passes scipy's deprecated `iprint` to L-BFGS-B (diffprivlib's issue, not ours).
@pytest.mark.filterwarnings("ignore:scipy.optimize. The .disp. and .iprint.:DeprecationWarning")
def test_diffprivlib_model(cancer):
    dp = pytest.importorskip("diffprivlib")
    X_train, X_test, y_train, _ = cancer
    X_train, X_test = X_train[:, :5], X_test[:40, :5]
    high = X_train.max(axis=0)
    est = dp.models.LogisticRegression(epsilon=5.0, data_norm=float(np.linalg.norm(high)))
    est.fit(X_train, y_train)
    model = he.compile(est, input_range=(0.0, high))
    client = he.HEClient.for_model(model.spec)
    result = model.predict_encrypted(client.encrypt(X_test), client.public_context())
    np.testing.assert_allclose(client.decrypt(result), est.predict_proba(X_test), atol=1e-4)
