"""A model is used only by a principal whose row filters admit the rows it was trained on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from diffprivlib.models import GaussianNB

import privml
from privml import Budget


@pytest.fixture
def sites(tmp_path, key, vaults):
    """Rows of two sites; ana sees every row, bob site B only, carol site A only."""
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "site": pd.Categorical(rng.choice(["A", "B"], n), categories=["A", "B"]),
            "x": rng.uniform(0, 10, n),
            "label": pd.Categorical(rng.choice(["lo", "hi"], n), categories=["lo", "hi"]),
        }
    )
    schema = privml.Schema(
        {
            "site": privml.Field.categorical(categories=["A", "B"]),
            "x": privml.Field.numeric(bounds=(0.0, 10.0)),
            "label": privml.Field.categorical(categories=["lo", "hi"]),
        }
    )
    vault = vaults.create(tmp_path / "sites.vault", key=key)
    vault.add_dataset("visits", frame, schema=schema, budget=Budget(epsilon=50.0, delta=1e-6))
    vault.add_purpose("research", description="Research", lawful_basis="GDPR 9(2)(j)")
    for who, rows in (("ana", None), ("bob", "B"), ("carol", "A")):
        vault.add_principal(who, roles=[])
        vault.grant(
            principal=who,
            dataset="visits",
            purpose="research",
            mode="dp_training",
            row_filter=None if rows is None else [("site", "==", rows)],
        )
    yield vault
    vault.close()


def _train(vault, who: str, name: str) -> None:
    session = vault.session(who, purpose="research")
    session.dp.fit(GaussianNB(epsilon=1.0), "visits", features=["x"], target="label", name=name)


GRID = np.linspace(0.0, 10.0, 21).reshape(-1, 1)


def _serves(vault, who: str, name: str) -> bool:
    """``who`` gets the registered model ``name`` itself, and the use is audited as served."""
    served = vault.session(who, purpose="research").load_model(name)
    stored = vault.models.load(name)
    np.testing.assert_array_equal(served.predict(GRID), stored.predict(GRID))
    entries = vault.audit.entries(principal=who, action="model.load")
    return entries["outcome"].tolist()[-1] == "ok"


def test_a_row_filtered_principal_is_refused_a_model_trained_on_all_rows(sites):
    _train(sites, "ana", "everyone")
    bob = sites.session("bob", purpose="research")
    with pytest.raises(privml.AccessDenied, match="row filters") as refused:
        bob.load_model("everyone")
    assert "'B'" not in str(refused.value) and "site" not in str(refused.value)
    with pytest.raises(privml.AccessDenied, match="row filters"):
        bob.he.spec("everyone")
    entries = sites.audit.entries(principal="bob")
    denied = entries[entries["outcome"] == "denied"]
    assert set(denied["action"]) == {"model.load", "he.spec"}


def test_a_model_trained_under_a_filter_serves_that_filter_and_the_unfiltered(sites):
    _train(sites, "bob", "site-b")
    assert _serves(sites, "bob", "site-b")
    assert _serves(sites, "ana", "site-b")
    with pytest.raises(privml.AccessDenied, match="row filters"):
        sites.session("carol", purpose="research").load_model("site-b")


def test_an_unfiltered_principal_may_use_any_model(sites):
    _train(sites, "carol", "site-a")
    _train(sites, "ana", "everyone")
    assert _serves(sites, "ana", "site-a") and _serves(sites, "ana", "everyone")


def test_a_model_the_key_holder_registers_counts_as_trained_on_all_rows(sites):
    from sklearn.naive_bayes import GaussianNB as Plain

    model = Plain().fit([[0.0], [1.0]], ["lo", "hi"])
    extra = {"features": ["x"], "target": "label"}
    sites.models.register(
        "registered", model, trained_on="visits", epsilon=1.0, delta=0.0, extra=extra
    )
    with pytest.raises(privml.AccessDenied, match="row filters"):
        sites.session("bob", purpose="research").load_model("registered")
    assert _serves(sites, "ana", "registered")
