"""The model registry: encrypted at rest, versioned, integrity-checked, audited."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import privml


@pytest.fixture
def model():
    X, y = load_breast_cancer(return_X_y=True)
    return LogisticRegression(max_iter=5000).fit(X[:, :5], y), X[:, :5]


def test_register_load_round_trip_and_versions(demo_vault, model):
    fitted, X = model
    first = demo_vault.models.register(
        "lr", fitted, trained_on="patients", epsilon=1.0, delta=0.0, notes="demo"
    )
    second = demo_vault.models.register(
        "lr", fitted, trained_on=("patients", 1), epsilon=0.5, delta=1e-6
    )
    assert (first.version, second.version) == (1, 2)
    loaded = demo_vault.models.load("lr")
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    assert demo_vault.models.info("lr", 1).metadata["notes"] == "demo"
    assert demo_vault.models.info("lr").libraries["sklearn"]
    table = demo_vault.models.list()
    assert table[["name", "version", "epsilon"]].values.tolist() == [["lr", 1, 1.0], ["lr", 2, 0.5]]
    actions = demo_vault.audit.entries()["action"].tolist()
    assert actions.count("model.register") == 2 and actions.count("model.load") == 1


def test_stored_model_holds_no_plaintext(demo_vault, model):
    fitted, _ = model
    demo_vault.models.register("lr", fitted, trained_on=None, epsilon=None, delta=None)
    stored = (Path(demo_vault.path) / "models" / "lr" / "1.bin").read_bytes()
    plain = pickle.dumps(fitted)
    assert plain[:64] not in stored and b"LogisticRegression" not in stored
    assert fitted.coef_.tobytes()[:16] not in stored


def test_tampered_or_swapped_model_is_refused(demo_vault, model):
    fitted, _ = model
    demo_vault.models.register("a", fitted, trained_on=None, epsilon=None, delta=None)
    demo_vault.models.register("a", fitted, trained_on=None, epsilon=None, delta=None)
    folder = Path(demo_vault.path) / "models" / "a"
    data = bytearray((folder / "2.bin").read_bytes())
    data[40] ^= 1
    (folder / "2.bin").write_bytes(bytes(data))
    with pytest.raises(privml.IntegrityError):
        demo_vault.models.load("a", 2)
    (folder / "2.bin").write_bytes((folder / "1.bin").read_bytes())
    with pytest.raises(privml.IntegrityError):  # a copy of version 1 is not version 2
        demo_vault.models.load("a", 2)


def test_unknown_model_and_bad_names(demo_vault, model):
    with pytest.raises(privml.NotFoundError, match=r"vault\.models\.list"):
        demo_vault.models.load("nope")
    with pytest.raises(privml.ConfigurationError):
        demo_vault.models.register("../x", model[0], trained_on=None, epsilon=None, delta=None)
    with pytest.raises(privml.NotFoundError):
        demo_vault.models.register(
            "x", model[0], trained_on=("patients", 9), epsilon=None, delta=None
        )


@pytest.fixture
def trainers(dp_vault):
    """``ana`` and ``mallory``, both allowed to train DP models on patients for studies."""
    dp_vault.add_principal("mallory", roles=["statistician"])
    return dp_vault


def _fit(vault, principal, name):
    from diffprivlib.models import GaussianNB

    return vault.session(principal, purpose="studies").dp.fit(
        GaussianNB(epsilon=0.1), "patients", features=["age"], target="sex", name=name
    )


def test_a_principal_cannot_register_a_version_of_another_principals_model(trainers, model):
    vault = trainers
    _fit(vault, "ana", "served")
    spent = vault.budget("patients").epsilon_spent
    with pytest.raises(privml.AccessDenied, match="belongs to 'ana'"):
        _fit(vault, "mallory", "served")
    assert vault.models.list()["version"].tolist() == [1]
    assert vault.budget("patients").epsilon_spent == spent  # refused before any release
    [refused] = vault.audit.entries(principal="mallory", action="model.register").to_dict("records")
    assert refused["outcome"] == "denied" and refused["details"]["model"] == "served"
    # the owner and the vault administrator may add versions
    _fit(vault, "ana", "served")
    vault.models.register("served", model[0], trained_on="patients", epsilon=0.5, delta=0.0)
    assert vault.models.list()["version"].tolist() == [1, 2, 3]


def test_registration_metadata_cannot_forge_the_owner(trainers, model):
    vault = trainers
    _fit(vault, "ana", "served")
    forged = {"registered_by": {"principal": "mallory", "admin": True}}
    with pytest.raises(privml.AccessDenied):
        vault.models._register(
            "served",
            model[0],
            trained_on="patients",
            epsilon=0.5,
            delta=0.0,
            notes=None,
            extra=forged,
            principal="mallory",
            purpose="studies",
        )
    vault.models._register(
        "other",
        model[0],
        trained_on=None,
        epsilon=None,
        delta=None,
        notes=None,
        extra=forged,
        principal="mallory",
        purpose="studies",
    )
    owner = vault.models.info("other").metadata["registered_by"]
    assert owner == {"principal": "mallory", "purpose": "studies", "admin": False}
    with pytest.raises(privml.AccessDenied):
        _fit(vault, "ana", "other")


def test_names_the_administrator_registered_cannot_be_taken_over(trainers):
    vault = trainers
    vault.models.register("admin-model", 1, trained_on=None, epsilon=None, delta=None)
    with pytest.raises(privml.AccessDenied, match="vault administrator"):
        _fit(vault, "mallory", "admin-model")
    assert vault.models.list()["version"].tolist() == [1]


def test_a_models_minimizer_name_cannot_be_taken_first(trainers):
    with pytest.raises(privml.AccessDenied, match="kept for the minimizers"):
        _fit(trainers, "mallory", "served.minimizer")
    assert trainers.models.list().empty
