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


def test_serving_is_a_policy_decision_and_deny_wins(served):
    vault, session, _, X = served
    client = privml.he.HEClient.for_model(session.he.spec("tumour-he"))
    batch, context = client.encrypt(X).to_bytes(), client.public_context()
    vault.add_purpose("marketing", description="Ads", lawful_basis="consent")
    vault.add_principal("eve", roles=["ml"])  # the role may train DP models for diagnosis
    vault.deny(principal="eve", dataset="tumours", purpose="diagnosis")
    vault.deny(principal="eve", dataset="tumours", purpose="marketing")
    vault.add_principal("outsider", roles=[])
    attempts = [("eve", "diagnosis"), ("eve", "marketing"), ("outsider", "diagnosis")]
    for principal, purpose in attempts:
        attacker = vault.session(principal, purpose=purpose)
        with pytest.raises(privml.AccessDenied, match="dp_aggregate"):
            attacker.he.spec("tumour-he")
        with pytest.raises(privml.AccessDenied):
            attacker.he.predict("tumour-he", batch, public_context=context)
        with pytest.raises(privml.AccessDenied):
            attacker.he.spec("tumour-he", version=1)
    refused = vault.audit.entries()
    refused = refused[refused["outcome"] == "denied"]
    assert sorted(set(zip(refused["principal"], refused["action"], strict=True))) == [
        ("eve", "he.predict"),
        ("eve", "he.spec"),
        ("outsider", "he.predict"),
        ("outsider", "he.spec"),
    ]
    assert len(refused) == 9
    assert all(d["needed"] == "dp_aggregate" for d in refused["details"])


def test_serving_a_dp_model_needs_dp_aggregate_and_records_the_grants(served):
    vault, _, _, X = served
    vault.add_principal("scorer", roles=["serving"])
    grant = vault.grant(role="serving", dataset="tumours", purpose="diagnosis", mode="dp_aggregate")
    scorer = vault.session("scorer", purpose="diagnosis")
    client = privml.he.HEClient.for_model(scorer.he.spec("tumour-he"))
    scorer.he.predict(
        "tumour-he", client.encrypt(X).to_bytes(), public_context=client.public_context()
    )
    for action in ("he.spec", "he.predict"):
        entries = vault.audit.entries(principal="scorer", action=action)
        [entry] = entries.to_dict("records")
        assert entry["outcome"] == "ok" and entry["details"]["grant_ids"] == [grant]
        assert entry["details"]["policy_hash"] == vault.policy.hash


def test_a_model_that_is_not_dp_needs_raw(served):
    vault, session, fitted, X = served
    low, high = X.min(axis=0) - 1, X.max(axis=0) + 1
    compiled = privml.he.compile(fitted, input_range=(low, high))
    vault.models.register("not-dp", compiled, trained_on="tumours", epsilon=None, delta=None)
    with pytest.raises(privml.AccessDenied, match="'raw'"):
        session.he.spec("not-dp")  # dp_training on the data is not enough for a non-DP model
    vault.grant(role="ml", dataset="tumours", purpose="diagnosis", mode="raw")
    assert session.he.spec("not-dp")
