"""Models trained on the server come back as data and predict as the registered ones do."""

from __future__ import annotations

import pandas as pd
import pytest

from privml import AccessDenied, ConfigurationError, NotFoundError

NET = {
    "layers": [
        {"type": "Linear", "in_features": 1, "out_features": 8},
        {"type": "ReLU"},
        {"type": "Linear", "in_features": 8, "out_features": 2},
    ]
}
RUN = dict(
    module=NET,
    features=["age"],
    target="sex",
    optimizer={"type": "SGD", "lr": 0.5},
    batch_size=64,
    epochs=2,
    max_grad_norm=1.0,
    noise_multiplier=2.0,
    grad_sample_mode="bk",
    seed=3,
)
NEW = pd.DataFrame({"age": [19, 35, 60, 88]})


def test_a_server_side_run_returns_the_registered_model(as_, setup):
    ana = as_("ana", "research")
    model, history = ana.dp.train("patients", name="sex-by-age", **RUN)
    assert list(history.columns) == ["epoch", "steps", "epsilon"]  # no loss: it is not DP
    with setup.open() as vault:
        served = vault.models.load("sex-by-age")
        info = vault.models.info("sex-by-age")
        charged = vault.ledger.events("patients")
    assert list(model.predict(NEW)) == list(served.predict(NEW))
    assert info.epsilon == pytest.approx(history.attrs["epsilon"])
    assert history["epsilon"].iloc[-1] == pytest.approx(info.epsilon)
    run = charged[charged["request_id"].str.startswith("dp.train-svc-")]
    assert list(run["status"]) == ["committed"]  # reserved, then settled on the batches drawn


def test_a_remote_fit_predicts_as_the_registered_pipeline(as_, setup):
    from diffprivlib.models import GaussianNB, LogisticRegression

    ana = as_("ana", "research")
    for estimator, name in (
        (LogisticRegression(epsilon=0.5), "lr"),
        (GaussianNB(epsilon=0.4), "nb"),
    ):
        fitted = ana.dp.fit(estimator, "patients", features=["age"], target="sex", name=name)
        with setup.open() as vault:
            served = vault.models.load(name)
        assert list(fitted.predict(NEW)) == list(served.predict(NEW))


def test_models_are_refused_as_data_before_any_charge(as_, setup):
    ana = as_("ana", "research")
    before = ana.budget("patients").epsilon_spent
    hostile = [
        {**RUN, "module": {"layers": [{"type": "__import__", "name": "os"}]}},
        {
            **RUN,
            "module": {"layers": [{"type": "Linear", "in_features": 1, "out_features": 10**9}]},
        },
        {**RUN, "target_epsilon": 1.0},  # with noise_multiplier too
        {**RUN, "optimizer": {"type": "torch.optim.SGD", "lr": 0.1}},
    ]
    for spec in hostile:
        with pytest.raises(ConfigurationError):
            ana.dp.train("patients", **spec)
    with pytest.raises(AccessDenied):  # glucose is dp_aggregate for ana, not dp_training
        ana.dp.train("patients", **{**RUN, "features": ["glucose"]})
    eve = as_("eve", "research")
    with pytest.raises(NotFoundError):  # no grant on the dataset: answered as an unknown one
        eve.dp.train("patients", **RUN)
    assert ana.budget("patients").epsilon_spent == before
