"""TrainingSpec: the one declaration of a DP-SGD run's parameters, checked before anything runs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from privml import ConfigurationError
from privml.dp.torch import TrainingSpec


def _valid(net: torch.nn.Module) -> dict[str, object]:
    return {
        "features": ["pixel_0_0"],
        "target": "target",
        "module": net,
        "optimizer": torch.optim.SGD(net.parameters(), lr=0.1),
        "batch_size": 64,
        "epochs": 1,
        "max_grad_norm": 1.0,
        "noise_multiplier": 1.0,
    }


NET = torch.nn.Linear(1, 10)

#: Every field, with values it refuses (each a separate case).
INVALID: list[tuple[str, object]] = [
    ("features", "pixel_0_0"),
    ("features", []),
    ("features", [1, 2]),
    ("features", None),
    ("target", 3),
    ("target", None),
    ("module", "a network"),
    ("module", None),
    ("optimizer", "sgd"),
    ("optimizer", None),
    ("batch_size", 0),
    ("batch_size", -1),
    ("batch_size", 2.5),
    ("batch_size", True),
    ("batch_size", np.bool_(True)),
    ("batch_size", "64"),
    ("epochs", 0),
    ("epochs", 1.5),
    ("epochs", True),
    ("max_grad_norm", 0),
    ("max_grad_norm", -1.0),
    ("max_grad_norm", math.nan),
    ("max_grad_norm", math.inf),
    ("max_grad_norm", True),
    ("max_grad_norm", "1"),
    ("noise_multiplier", 0),
    ("noise_multiplier", -1.0),
    ("noise_multiplier", math.inf),
    ("noise_multiplier", None),  # neither σ nor a target ε
    ("target_epsilon", 1.0),  # both σ and a target ε
    ("criterion", 5),
    ("criterion", torch.nn.CrossEntropyLoss(reduction="none")),
    ("grad_sample_mode", "fast"),
    ("grad_sample_mode", None),
    ("name", "a/../b"),
    ("name", ""),
    ("name", 5),
    ("fix_module", "yes"),
    ("fix_module", 1),
    ("canaries", -1),
    ("canaries", True),
    ("canaries", 10_001),
    ("holdout", 0.6),
    ("holdout", -0.1),
    ("holdout", math.nan),
    ("holdout", True),
    ("holdout", "0.3"),
    ("transform", 5),
    ("augmentations", 0),
    ("augmentations", True),
    ("augmentations", 1.5),
    ("augmentations", 2),  # with the default ghost clipping
    ("max_physical_batch_size", 0),
    ("max_physical_batch_size", 2.5),
    ("resume", 42),
    ("resume", b"ckpt-0"),
    ("distributed", "yes"),
    ("distributed", 1),
]

BAD_TARGET_EPSILON = [0, -1.0, math.inf, math.nan, True]


def _cases() -> list[tuple[str, dict[str, object]]]:
    cases = [(f"{field}={value!r}", {field: value}) for field, value in INVALID]
    cases += [
        (f"target_epsilon={value!r}", {"noise_multiplier": None, "target_epsilon": value})
        for value in BAD_TARGET_EPSILON
    ]
    return cases


CASES = _cases()


def test_every_field_has_refused_values():
    fields = {f.name for f in dataclasses.fields(TrainingSpec)}
    refused = {key for _, change in CASES for key in change}
    assert refused == fields


@pytest.mark.parametrize("change", [c for _, c in CASES], ids=[i for i, _ in CASES])
def test_the_spec_refuses_an_invalid_value(change):
    with pytest.raises(ConfigurationError):
        TrainingSpec(**{**_valid(NET), **change})


@pytest.mark.parametrize("change", [c for _, c in CASES], ids=[i for i, _ in CASES])
def test_the_public_call_refuses_it_before_any_charge_or_read(make_vault, change):
    v = make_vault("digits")
    before = len(v.audit.entries())
    dp = v.session("eng", purpose="ml").dp
    params = {**_valid(torch.nn.Linear(1, 10)), **change}
    with pytest.raises(ConfigurationError), dp.private_training("data", **params):
        pytest.fail("the run started")
    assert v.ledger.events("data").empty
    assert len(v.audit.entries()) == before
    assert v.budget("data").epsilon_spent == 0


def test_numpy_numbers_are_taken_and_held_as_python_numbers():
    change = {
        "batch_size": np.int64(64),
        "epochs": np.int32(2),
        "max_grad_norm": np.float32(1.5),
        "noise_multiplier": np.float64(1.25),
    }
    spec = TrainingSpec(**{**_valid(NET), **change})
    assert (spec.batch_size, spec.epochs, spec.max_grad_norm, spec.noise_multiplier) == (
        64,
        2,
        1.5,
        1.25,
    )
    assert [type(getattr(spec, k)) for k in change] == [int, int, float, float]


def test_the_spec_is_frozen_and_keeps_its_own_copy_of_the_features():
    features = ["pixel_0_0"]
    spec = TrainingSpec(**{**_valid(NET), "features": features})
    features.append("pixel_0_1")
    assert spec.features == ("pixel_0_0",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.epochs = 5  # type: ignore[misc]


def test_a_misspelt_keyword_names_itself_and_the_right_one(make_vault):
    v = make_vault("digits")
    before = len(v.audit.entries())
    params = {**_valid(NET), "epoch": 1}
    del params["epochs"]
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'epoch' .*'epochs'"):
        v.session("eng", purpose="ml").dp.private_training("data", **params)
    with pytest.raises(TypeError, match=r"train\(\) got an unexpected keyword argument 'epoch'"):
        v.session("eng", purpose="ml").dp.train("data", **params)
    assert len(v.audit.entries()) == before


def test_a_missing_or_positional_argument_is_named():
    from privml.dp import DPSession

    dp = DPSession(gate=None)  # type: ignore[arg-type]  (refused before the gate is asked)
    params = _valid(NET)
    del params["max_grad_norm"]
    with pytest.raises(TypeError, match="missing keyword arguments: max_grad_norm"):
        dp.private_training("data", **params)
    with pytest.raises(TypeError, match="only positional argument"):
        dp.private_training("data", ["pixel_0_0"])  # type: ignore[misc]


def test_help_shows_the_spec_parameters():
    import inspect

    from privml.dp import DPSession

    fields = [f.name for f in dataclasses.fields(TrainingSpec)]
    assert list(inspect.signature(DPSession.private_training).parameters) == [
        "self",
        "dataset",
        *fields,
    ]
    assert list(inspect.signature(DPSession.train).parameters) == [
        "self",
        "dataset",
        *fields,
        "progress",
    ]
