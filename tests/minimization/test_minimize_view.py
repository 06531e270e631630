"""session.minimize: a minimized view registered in the vault, linked to its model."""

from __future__ import annotations

import numpy as np
import pytest
from diffprivlib import models

import privml
from privml import Budget, Field, Schema, Vault
from privml.datasets import load_adult
from privml.minimization import Minimizer

FEATURES = ["age", "hours-per-week", "education-num", "sex"]


@pytest.fixture
def vault(tmp_path, key):
    adult = load_adult(n_rows=3000)
    frame = adult[[*FEATURES, "income"]].copy()
    schema = Schema(
        {
            "age": Field.integer(bounds=(17, 100), category="demographic"),
            "hours-per-week": Field.integer(bounds=(0, 100), category="employment"),
            "education-num": Field.integer(bounds=(1, 16), category="demographic"),
            "sex": Field.categorical(categories=["Female", "Male"], category="demographic"),
            "income": Field.categorical(categories=["<=50K", ">50K"], target=True),
        }
    )
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset("census", frame, schema=schema, budget=Budget(epsilon=5, delta=1e-6))
        v.add_purpose("hr", description="Income model", lawful_basis="GDPR 6(1)(f)")
        v.add_principal("ml", roles=["ml"])
        v.add_principal("clerk", roles=["clerk"])
        # pseudonymized also allows DP training (modes include the less revealing ones)
        v.grant(role="ml", dataset="census", purpose="hr", mode="pseudonymized")
        session = v.session("ml", purpose="hr")
        session.dp.fit(
            models.LogisticRegression(epsilon=2.0),
            "census",
            features=FEATURES,
            target="income",
            name="income-model",
        )
        yield v, session, frame


def test_minimize_registers_a_view_and_its_minimizer(vault):
    v, session, frame = vault
    version = session.minimize("census", "income-model", target_accuracy=0.95, name="census-min")
    assert version.rows == len(frame)
    assert v.dataset("census-min").schema.names == tuple(FEATURES)
    v.grant(role="clerk", dataset="census-min", purpose="hr", mode="raw")
    view = v.session("clerk", purpose="hr").read("census-min")
    info = v.models.info("income-model.minimizer")
    minimizer = v.models.load("income-model.minimizer")
    assert isinstance(minimizer, Minimizer)
    assert info.metadata["for_model"] == ["income-model", 1]
    assert info.metadata["view"] == "census-min"
    # the view is exactly what the stored minimizer releases
    np.testing.assert_array_equal(
        minimizer.transform(frame[FEATURES]).to_numpy(), view[FEATURES].to_numpy()
    )
    # coarser than the source, and the model still agrees at the target on held-out rows
    assert view[FEATURES].drop_duplicates().shape[0] < frame[FEATURES].drop_duplicates().shape[0]
    [entry] = v.audit.entries(action="dataset.minimize").to_dict("records")
    details = entry["details"]
    assert details["accuracy"] >= 0.95 and 0 <= details["ncp"] <= 1
    assert set(details["generalizations"]) == set(FEATURES)
    assert "representative" not in str(details)


def test_views_carry_no_budget_of_their_own(vault):
    v, session, _ = vault
    session.minimize("census", "income-model", target_accuracy=0.9, name="census-min")
    v.grant(role="ml", dataset="census-min", purpose="hr", mode="dp_aggregate")
    with pytest.raises(privml.ConfigurationError, match="run DP releases on 'census'"):
        session.dp.mean("census-min", "age", epsilon=0.1)


def test_minimize_needs_access_to_the_features(vault):
    v, _, _ = vault
    with pytest.raises(privml.AccessDenied):
        v.session("clerk", purpose="hr").minimize(
            "census", "income-model", target_accuracy=0.9, name="x"
        )
    assert "x" not in {d.name for d in v.datasets()}
