"""session.dp.train on real data; module checks and bad arguments refused before reserving."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from privml import ConfigurationError, OptionalDependencyError
from privml.datasets import diabetes_schema, load_diabetes
from privml.dp.torch import TorchModel

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _dp(v):
    return v.session("eng", purpose="ml").dp


def _args(net, columns, **kwargs):
    return {
        "features": columns,
        "target": "target",
        "module": net,
        "optimizer": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        "batch_size": 64,
        "epochs": 1,
        "max_grad_norm": 1.0,
        **kwargs,
    }


def test_train_learns_digits_registers_the_model_and_reports_a_history(
    make_vault, digits, make_mlp, seeded_entropy
):
    frame, features = digits
    v = make_vault("digits")
    torch.manual_seed(0)
    model, history = _dp(v).train(
        "data", **_args(make_mlp(), features, epochs=6, target_epsilon=2.0, name="digits-mlp")
    )
    accuracy = float((model.predict(frame) == frame["target"].to_numpy()).mean())
    assert accuracy >= 0.8
    assert history["epoch"].tolist() == list(range(1, 7))
    assert history["steps"].tolist() == [28 * e for e in range(1, 7)]
    assert history["epsilon"].is_monotonic_increasing
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    info = v.models.info("digits-mlp")
    assert info.epsilon == pytest.approx(history["epsilon"].iloc[-1])
    assert info.epsilon <= 2.0
    assert info.epsilon == pytest.approx(v.budget("data").epsilon_fixed_sequence, rel=1e-6)
    assert info.epsilon < v.budget("data").epsilon_spent  # the privacy filter's figure
    assert history.attrs["binding"] == "target"
    assert info.metadata["training"]["grad_sample_mode"] == "ghost"
    assert info.metadata["training"]["optimizer_settings"]["momentum"] == 0.9
    assert {"torch", "opacus"} <= set(info.libraries)
    loaded = v.models.load("digits-mlp")
    assert isinstance(loaded, TorchModel)
    assert np.array_equal(loaded.predict(frame), model.predict(frame))
    assert np.allclose(model.predict_proba(frame[:5]).sum(axis=1), 1.0)


def test_train_regression_maps_the_target_by_its_bounds(tmp_path, key, seeded_entropy):
    from privml import Budget, Vault

    frame = load_diabetes()
    features = ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    with Vault.create(tmp_path / "d", key=key) as v:
        v.add_dataset(
            "data",
            frame,
            schema=diabetes_schema(),
            budget=Budget(epsilon=10, delta=1e-5),
            privacy_unit="row",
        )
        v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
        v.add_principal("eng", roles=["ml"])
        v.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
        torch.manual_seed(0)
        net = nn.Linear(len(features), 1)
        model, history = _dp(v).train(
            "data",
            **_args(
                net, features, batch_size=32, epochs=4, noise_multiplier=0.8, grad_sample_mode="bk"
            ),
        )
        predictions = model.predict(frame)
        assert model.task == "regression" and model.target_bounds == (0.0, 400.0)
        assert predictions.shape == (len(frame),)
        assert 0 < predictions.mean() < 400
        assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_progress_needs_tqdm_and_fails_before_reserving(make_vault, digits, make_mlp, monkeypatch):
    _, features = digits
    v = make_vault("digits")
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(OptionalDependencyError, match=r"pip install 'privml\[torch\]'"):
        _dp(v).train("data", **_args(make_mlp(), features, noise_multiplier=1.0), progress=True)
    assert v.ledger.events("data").empty


def test_progress_bar(make_vault, digits, make_mlp):
    pytest.importorskip("tqdm")
    _, features = digits
    v = make_vault("digits")
    _, history = _dp(v).train(
        "data", **_args(make_mlp(), features, noise_multiplier=1.0), progress=True
    )
    assert len(history) == 1


def _with_batchnorm(affine=True):
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(64, 16), nn.BatchNorm1d(16, affine=affine), nn.ReLU(), nn.Linear(16, 10)
    )


def test_batchnorm_is_refused_unless_fix_module(make_vault, digits):
    _, features = digits
    v = make_vault("digits")
    net = _with_batchnorm()
    with pytest.raises(ConfigurationError, match="fix_module=True"):
        _dp(v).train("data", **_args(net, features, noise_multiplier=1.0))
    assert v.ledger.events("data").empty
    before = [p.detach().clone() for p in net.parameters()]
    model, _ = _dp(v).train("data", **_args(net, features, noise_multiplier=1.0), fix_module=True)
    assert isinstance(model.module[1], nn.GroupNorm)
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    assert len(v.ledger.events("data")) == 1


def test_batchnorm_without_parameters_is_refused_even_with_fix_module(make_vault, digits):
    _, features = digits
    v = make_vault("digits")
    with pytest.raises(ConfigurationError, match="mixes the samples"):
        _dp(v).train(
            "data",
            **_args(_with_batchnorm(affine=False), features, noise_multiplier=1.0),
            fix_module=True,
        )
    assert v.ledger.events("data").empty


def test_bad_arguments_are_refused_before_anything_is_reserved(make_vault, digits, make_mlp):
    _, features = digits
    v = make_vault("digits")
    dp = _dp(v)
    net = make_mlp()
    cases = [
        ({"noise_multiplier": 1.0, "target_epsilon": 1.0}, "exactly one"),
        ({}, "exactly one"),
        ({"noise_multiplier": 1.0, "grad_sample_mode": "fast"}, "grad_sample_mode"),
        ({"noise_multiplier": 1.0, "batch_size": 5000}, "exceeds the 1797 rows"),
        ({"noise_multiplier": 1.0, "epochs": 0}, "epochs"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "name": "no spaces"}, "model name"),
        (
            {"noise_multiplier": 1.0, "optimizer": torch.optim.SGD(make_mlp().parameters(), lr=1)},
            "not the module's",
        ),
        (
            {"noise_multiplier": 1.0, "criterion": nn.CrossEntropyLoss(reduction="none")},
            "reduction",
        ),
    ]
    cases.append(({"noise_multiplier": 1.0, "columns": "pixel_0_0"}, "list of column names"))
    for kwargs, message in cases:
        columns = kwargs.pop("columns", features)
        with (
            pytest.raises(ConfigurationError, match=message),
            dp.private_training("data", **_args(net, columns, **kwargs)),
        ):
            pytest.fail("the block must not run")
    assert v.ledger.events("data").empty
    assert list(v.ledger.events("data").columns)  # the ledger is readable and empty
