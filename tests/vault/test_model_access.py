"""Every use of a registered model through a session is decided by the policy on its source."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

import privml
from privml import Budget


@pytest.fixture
def two_copies(demo_vault, patients, patients_schema):
    """``patients`` and a copy; ``bob`` may use the copy, and is denied the original."""
    demo_vault.add_dataset(
        "copy",
        patients,
        schema=patients_schema,
        budget=Budget(epsilon=1.0, delta=1e-6),
        privacy_unit="row",
    )
    demo_vault.add_principal("bob", roles=["clerk"])
    demo_vault.grant(role="clerk", dataset="copy", purpose="research", mode="raw")
    demo_vault.grant(role="clerk", dataset="patients", purpose="research", mode="dp_training")
    demo_vault.deny(principal="bob", dataset="patients", purpose="research", columns=["age"])
    model = LinearRegression().fit(patients[["age"]], patients["glucose"])
    extra = {"features": ["age"], "target": "glucose"}
    demo_vault.models.register(
        "dp-model", model, trained_on="patients", epsilon=0.5, delta=0.0, extra=extra
    )
    demo_vault.models.register(
        "plain-model", model, trained_on="patients", epsilon=None, delta=None, extra=extra
    )
    return demo_vault


def test_minimizing_with_a_model_of_a_denied_dataset_is_refused_and_audited(two_copies):
    session = two_copies.session("bob", purpose="research")
    for name in ("dp-model", "plain-model"):
        with pytest.raises(privml.AccessDenied, match="'age'"):
            session.minimize("copy", name, target_accuracy=0.5, name=f"view-{name}")
    assert {d.name for d in two_copies.datasets()} == {"patients", "copy"}
    refused = two_copies.audit.entries(principal="bob", action="dataset.minimize")
    assert refused["outcome"].tolist() == ["denied", "denied"]
    assert refused["dataset"].tolist() == ["patients", "patients"]


def test_the_mode_a_model_needs_follows_how_it_was_trained(two_copies):
    from privml.vault._model_access import authorize_model

    two_copies.add_principal("carol", roles=["clerk"])  # dp_training on patients, no deny
    carol = two_copies.session("carol", purpose="research")
    use = authorize_model(carol._door, "dp-model", None, action="model.use")
    assert use.details["needed"] == "dp_aggregate" and use.details["grant_ids"]
    with pytest.raises(privml.AccessDenied, match="needs 'raw'"):
        authorize_model(carol._door, "plain-model", None, action="model.use")
    two_copies.add_purpose("ads", description="Ads", lawful_basis="consent")
    with pytest.raises(privml.AccessDenied):  # an unrelated purpose gets nothing
        ads = two_copies.session("carol", purpose="ads")._door
        authorize_model(ads, "dp-model", None, action="x")


def test_loading_a_model_through_a_session_is_decided_and_audited(two_copies):
    bob = two_copies.session("bob", purpose="research")
    with pytest.raises(privml.AccessDenied):
        bob.load_model("dp-model")  # denied on 'age', a feature of the model
    two_copies.add_principal("carol", roles=["clerk"])
    carol = two_copies.session("carol", purpose="research")
    assert carol.load_model("dp-model").predict(pd.DataFrame({"age": [40]})).shape == (1,)
    with pytest.raises(privml.AccessDenied, match="needs 'raw'"):
        carol.load_model("plain-model")
    entries = two_copies.audit.entries(action="model.load")
    assert sorted(zip(entries["principal"], entries["outcome"], strict=True)) == [
        ("bob", "denied"),
        ("carol", "denied"),
        ("carol", "ok"),
    ]
    assert set(entries["dataset"]) == {"patients"}


def test_a_minimizer_state_is_kept_only_in_the_encrypted_model(tmp_path, key, vaults):
    """Someone with the folder but not the key must not find the minimizer's training values."""
    from diffprivlib import models

    from privml.datasets import load_adult
    from privml.minimization import Minimizer

    features = ["age", "education-num"]
    frame = load_adult(n_rows=1500)[[*features, "income"]].copy()
    schema = privml.Schema(
        {
            "age": privml.Field.integer(bounds=(17, 100)),
            "education-num": privml.Field.integer(bounds=(1, 16)),
            "income": privml.Field.categorical(categories=["<=50K", ">50K"], target=True),
        }
    )
    with vaults.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset("census", frame, schema=schema, budget=Budget(epsilon=5, delta=1e-6))
        vault.add_purpose("hr", description="Income model", lawful_basis="GDPR 6(1)(f)")
        vault.add_principal("ml", roles=[])
        vault.grant(principal="ml", dataset="census", purpose="hr", mode="pseudonymized")
        session = vault.session("ml", purpose="hr")
        session.dp.fit(
            models.LogisticRegression(epsilon=2.0),
            "census",
            features=features,
            target="income",
            name="income",
        )
        session.minimize("census", "income", target_accuracy=0.9, name="census-min")
        metadata = vault.models.info("income.minimizer").metadata
        state = vault.models.load("income.minimizer").to_dict()
    assert "minimization" not in metadata and set(metadata) >= {"for_model", "view"}
    assert isinstance(Minimizer.from_dict(state), Minimizer)
    stored = vaults.stored(tmp_path / "v")
    assert b"representatives" not in stored and b'"features":{"age"' not in stored
