"""Folding the last layer into the square: fewer levels, same scores; older models still run."""

from __future__ import annotations

import json

import numpy as np
import pytest

import privml.he as he
from privml.he import _wire
from privml.he._model import HEModel
from privml.he._params import requirements
from privml.he._spec import ModelSpec


def _legacy_bytes(model: HEModel, calibration: np.ndarray) -> bytes:
    """``model`` as privml wrote it before folding: unfolded requirements, no ``fold_bits``."""
    network, spec = model.network, model.spec
    low, high = np.asarray(spec.input_low), np.asarray(spec.input_high)
    typical = [1.5 * np.abs(h).max(axis=0) for h in network.layer_inputs(calibration)]
    req = requirements(
        network,
        np.maximum(np.abs(low), np.abs(high)),
        tolerance=spec.requirements.tolerance,
        typical=typical,
        fold=False,
    )
    old = HEModel(network, ModelSpec(**{**vars(spec), "requirements": req}))
    header, blobs = _wire.unpack(old.to_bytes(), "model")
    del header["spec"]["requirements"]["fold_bits"]
    return _wire.pack("model", json.loads(json.dumps(header)), blobs)


def test_a_model_stored_before_folding_still_evaluates(digits, digits_compiled):
    X_train, X_test = digits[0], digits[1][:64]
    stored = _legacy_bytes(digits_compiled, X_train)
    assert b"fold_bits" not in stored
    legacy = HEModel.from_bytes(stored)
    assert not legacy.spec.requirements.folded and legacy.depth == 3
    client = he.HEClient.for_model(legacy.spec)
    assert len(client.parameters.coeff_mod_bit_sizes) == 5  # the unfolded chain
    for packing in ("columns", "rows"):
        report = legacy.check(X_test, client, packing=packing)
        assert report.agreement == 1.0 and report.max_logit_error < 1e-3


def test_folding_keeps_the_unfolded_scores(digits, digits_compiled, digits_client):
    X_test = digits[1][:64]
    legacy = HEModel.from_bytes(_legacy_bytes(digits_compiled, digits[0]))
    old_client = he.HEClient.for_model(legacy.spec)
    old = old_client.decrypt_scores(
        legacy.predict_encrypted(old_client.encrypt(X_test), old_client.public_context())
    )
    new = digits_client.decrypt_scores(
        digits_compiled.predict_encrypted(
            digits_client.encrypt(X_test), digits_client.public_context()
        )
    )
    exact = digits_compiled.plaintext_scores(X_test)
    np.testing.assert_allclose(new, exact, atol=1e-3)
    np.testing.assert_allclose(old, exact, atol=1e-3)
    new_params, old_params = digits_client.parameters, old_client.parameters
    assert new_params.depth == old_params.depth - 1  # one prime fewer ...
    assert new_params.scale_bits > old_params.scale_bits  # ... and its bits went to precision


def test_folded_layer_with_a_linear_term_and_an_unused_output():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.GELU(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        net[2].weight[1].zero_()  # output 1 ignores its inputs: it is its bias
    X = np.random.default_rng(1).normal(size=(300, 5))
    model = he.compile(net, calibration=X, activation_degree=2)
    coeffs = model.network.activations[0].coeffs
    assert model.spec.requirements.folded and coeffs[1] != 0.0  # x and x**2 terms
    client = he.HEClient.for_model(model.spec)
    for packing in ("columns", "rows"):
        scores = client.decrypt_scores(
            model.predict_encrypted(
                client.encrypt(X[:50], packing=packing), client.public_context(packing=packing)
            )
        )
        np.testing.assert_allclose(scores, model.plaintext_scores(X[:50]), atol=1e-3)
