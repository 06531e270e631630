"""Serving a vault-registered DP model on encrypted inputs through a session."""

from __future__ import annotations

import numpy as np
import pytest
from diffprivlib import models
from sklearn.datasets import load_breast_cancer

import privml
import privml.he
from privml import Budget, Field, Schema, Vault


@pytest.fixture
def served(tmp_path, key):
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    features = [c for c in frame.columns if c != "target"]
    bounds = {
        c: (float(np.floor(frame[c].min() * 0.9)), float(np.ceil(frame[c].max() * 1.1)))
        for c in features
    }
    fields = {c: Field.numeric(bounds=bounds[c]) for c in features}
    fields["target"] = Field.categorical(categories=[0, 1], target=True)
    with Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset("tumours", frame, schema=Schema(fields), budget=Budget(epsilon=5))
        vault.add_purpose("diagnosis", description="Diagnosis", lawful_basis="GDPR 9(2)(h)")
        vault.add_principal("lab", roles=["ml"])
        vault.grant(role="ml", dataset="tumours", purpose="diagnosis", mode="dp_training")
        session = vault.session("lab", purpose="diagnosis")
        fitted = session.dp.fit(
            models.LogisticRegression(epsilon=3.0), "tumours", features=features, target="target"
        )
        low = np.array([bounds[c][0] for c in features])
        high = np.array([bounds[c][1] for c in features])
        compiled = privml.he.compile(fitted, input_range=(low, high))
        vault.models.register("tumour-he", compiled, trained_on="tumours", epsilon=3.0, delta=0.0)
        yield vault, session, fitted, frame[features].to_numpy()[:64]


def test_predict_on_encrypted_inputs_matches_plaintext(served):
    vault, session, fitted, X = served
    client = privml.he.HEClient.for_model(session.he.spec("tumour-he"))  # the hospital
    batch = client.encrypt(X).to_bytes()
    result = session.he.predict("tumour-he", batch, public_context=client.public_context())
    labels = client.decrypt(privml.he.EncryptedResult.from_bytes(result), output="labels")
    np.testing.assert_array_equal(labels, fitted.predict(X))
    [entry] = vault.audit.entries(action="he.predict").to_dict("records")
    assert entry["details"]["samples"] == len(X) and entry["details"]["model_version"] == 1
    assert (entry["dataset"], entry["version"]) == ("tumours", 1)
    assert len(str(entry["details"])) < 500  # ids and counts, never ciphertext bytes
    assert vault.budget("tumours").epsilon_spent == pytest.approx(3.0, rel=1e-3)  # no charge


def test_server_refuses_a_private_context(served):
    _, session, _, X = served
    client = privml.he.HEClient.for_model(session.he.spec("tumour-he"))
    batch = client.encrypt(X).to_bytes()
    with pytest.raises(ValueError, match="secret key"):
        session.he.predict(
            "tumour-he", batch, public_context=client.to_bytes(include_secret_key=True)
        )


def test_non_he_models_are_refused(served):
    vault, session, fitted, _ = served
    vault.models.register("plain", fitted, trained_on="tumours", epsilon=3.0, delta=0.0)
    with pytest.raises(privml.ConfigurationError, match=r"privml\.he\.compile"):
        session.he.spec("plain")
