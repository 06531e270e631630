"""CNN, recurrent and transformer networks trained end to end on the digits, registered, predicting.

Each network reads the 64 pixel columns (numeric fields bounded (0, 16), scaled by the
schema into [0, 1]) and reshapes them inside. At a generous ε (σ = 0.7, q = 128/1797,
two epochs) training must reach well above chance (10%); ``seeded_entropy`` fixes
privml's Poisson coins and noise, and ``torch.manual_seed`` the weights, so each
threshold always holds or never does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _layer_nets import make

from privml.dp.torch import TorchModel

pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    pytest.mark.filterwarnings("ignore:fix_module=True replaces:UserWarning"),
]

# σ given, not a target ε: calibrating σ is not what these tests are about, and costs seconds.
SETTINGS = {"batch_size": 128, "max_grad_norm": 1.0, "noise_multiplier": 0.7}


def _optimizer(net: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=0.03)


def _accuracy(model: TorchModel, frame) -> float:
    return float((model.predict(frame) == frame["target"].to_numpy()).mean())


def _check_registered(v, name: str, model: TorchModel, frame, fixed: bool) -> None:
    loaded = v.models.load(name)
    assert isinstance(loaded, TorchModel)
    assert np.array_equal(loaded.predict(frame), model.predict(frame))
    info = v.models.info(name)
    assert 0 < info.epsilon < 50.0  # the dataset's budget
    if fixed:  # the registered network is the fixed copy: no nn.LSTM/GRU/MultiheadAttention
        kinds = {type(m) for m in model.module.modules()}
        assert not kinds & {torch.nn.LSTM, torch.nn.GRU, torch.nn.MultiheadAttention}


@pytest.mark.parametrize(
    ("name", "mode", "epochs", "least"),
    [
        ("cnn", "ghost", 2, 0.7),
        ("lstm", "hooks", 2, 0.25),
        ("transformer", "ghost", 2, 0.25),
    ],
)
def test_train_learns_the_digits_and_registers(
    make_vault, digits, seeded_entropy, name, mode, epochs, least
):
    frame, features = digits
    v = make_vault("digits", epsilon=50.0)
    net, fix = make(name)
    model, history = v.session("eng", purpose="ml").dp.train(
        "data",
        features=features,
        target="target",
        module=net,
        optimizer=_optimizer(net),
        epochs=epochs,
        grad_sample_mode=mode,
        fix_module=fix,
        name=f"digits-{name}",
        **SETTINGS,
    )
    assert _accuracy(model, frame) >= least
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    _check_registered(v, f"digits-{name}", model, frame, fix)


@pytest.mark.parametrize(
    ("name", "mode", "epochs", "least"),
    [
        ("dpgru", "ghost", 2, 0.25),
        ("dpattention", "hooks", 2, 0.25),
        ("attention", "ghost", 2, 0.25),
    ],
)
def test_private_training_with_the_users_loop(
    make_vault, digits, seeded_entropy, train_loop, name, mode, epochs, least
):
    frame, features = digits
    v = make_vault("digits", epsilon=50.0)
    net, fix = make(name)
    with v.session("eng", purpose="ml").dp.private_training(
        "data",
        features=features,
        target="target",
        module=net,
        optimizer=_optimizer(net),
        epochs=epochs,
        grad_sample_mode=mode,
        fix_module=fix,
        name=f"loop-{name}",
        **SETTINGS,
    ) as run:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
            train_loop(run)
        with torch.no_grad():  # evaluation inside the block: no gradients, no guard
            X = torch.tensor(frame[features].to_numpy() / 16.0, dtype=torch.float32)
            inside = (run.model(X).argmax(1).numpy() == frame["target"].to_numpy()).mean()
    assert run.steps_taken == run.steps_planned
    assert run.trained is not None
    assert _accuracy(run.trained, frame) >= least
    assert _accuracy(run.trained, frame) == pytest.approx(float(inside))
    _check_registered(v, f"loop-{name}", run.trained, frame, fix)
