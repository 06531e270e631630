"""Fitted classifiers reveal nothing about which declared classes the training rows hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from diffprivlib import models

import privml
from privml import Budget

CLASSES = ["gamma", "alpha", "beta"]  # declared unsorted; "gamma" never occurs


@pytest.fixture
def labs(tmp_path, key):
    rng = np.random.default_rng(1)
    n = 300
    frame = pd.DataFrame(
        {
            "site": pd.Categorical(rng.choice(["A", "B", "C"], n), categories=["A", "B", "C"]),
            "x": rng.uniform(0, 10, n),
            "label": pd.Categorical(rng.choice(["alpha", "beta"], n), categories=CLASSES),
        }
    )
    frame.loc[frame["site"] == "B", "label"] = "alpha"  # site B holds one class
    frame = frame[frame["site"] != "C"].reset_index(drop=True)  # site C holds no rows
    schema = privml.Schema(
        {
            "site": privml.Field.categorical(categories=["A", "B", "C"]),
            "x": privml.Field.numeric(bounds=(0.0, 10.0)),
            "label": privml.Field.categorical(categories=CLASSES),
        }
    )
    vault = privml.Vault.create(tmp_path / "labs.vault", key=key)
    vault.add_dataset("labs", frame, schema=schema, budget=Budget(epsilon=100.0, delta=1e-6))
    vault.add_purpose("research", description="Research", lawful_basis="GDPR 9(2)(j)")
    for who, rows in (("ana", None), ("bob", "B"), ("cy", "C")):
        vault.add_principal(who, roles=[])
        vault.grant(
            principal=who,
            dataset="labs",
            purpose="research",
            mode="dp_training",
            row_filter=None if rows is None else [("site", "==", rows)],
        )
    yield vault
    vault.close()


def _fit(vault, who, estimator):
    session = vault.session(who, purpose="research")
    return session.dp.fit(estimator, "labs", features=["x"], target="label", name=None)


CLASSIFIERS = [
    lambda: models.LogisticRegression(epsilon=1.0),
    lambda: models.GaussianNB(epsilon=1.0),
    lambda: models.DecisionTreeClassifier(epsilon=1.0, max_depth=2),
    lambda: models.RandomForestClassifier(epsilon=1.0, n_estimators=2, max_depth=2),
]


@pytest.mark.parametrize("make", CLASSIFIERS)
@pytest.mark.parametrize("who", ["ana", "bob"])
def test_classes_are_the_declared_ones_whatever_the_rows_hold(labs, make, who):
    fitted = _fit(labs, who, make())
    assert list(fitted["model"].classes_) == sorted(CLASSES)
    predicted = fitted.predict(pd.DataFrame({"x": [1.0, 9.0]}))
    assert set(predicted) <= set(CLASSES)


def test_logistic_regression_on_one_present_class_fits_with_every_class(labs):
    fitted = _fit(labs, "bob", models.LogisticRegression(epsilon=1.0))
    assert fitted["model"].coef_.shape == (3, 1)  # one-vs-rest on every declared class


def test_an_absent_class_of_gaussian_nb_is_noised_like_the_others(labs):
    fitted = _fit(labs, "ana", models.GaussianNB(epsilon=1.0))
    model = fitted["model"]
    gamma = list(model.classes_).index("gamma")
    # diffprivlib leaves an absent class's var at exactly epsilon_; here it is drawn from
    # bounded-domain Laplace noise (no point mass), equal to epsilon_ with probability 0.
    # (Its mean may sit at the truncation bound, as a present class's may.)
    assert model.var_[gamma, 0] != model.epsilon_
    assert np.all(model.class_prior_ > 0)


def test_a_failed_fit_after_the_charge_quotes_no_data_and_is_audited(labs):
    with pytest.raises(privml.PrivmlError, match="failed to fit") as failed:
        _fit(labs, "cy", models.LogisticRegression(epsilon=1.0))  # no rows at all
    message = str(failed.value)
    assert not any(c in message for c in CLASSES) and failed.value.__cause__ is None
    entry = labs.audit.entries(principal="cy", action="dp.fit").iloc[-1]
    assert entry["outcome"] == "error"
    assert not any(c in str(entry["details"]) for c in CLASSES)
