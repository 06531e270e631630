"""No DP release uses randomness its caller can seed, replay or read back.

Written as the attacker: a curious analyst in the same process who seeds NumPy's
global generator, or sets ``random_state`` on an estimator, hoping to regenerate
the noise and subtract it.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from diffprivlib import models

import privml
from privml import Budget, Field, Schema, Vault

N = 400
SCHEMA = Schema(
    {
        "age": Field.integer(bounds=(0, 100)),
        "income": Field.numeric(bounds=(0.0, 200.0)),
        "label": Field.categorical(categories=[0, 1]),
    }
)


@pytest.fixture
def vault(tmp_path, key):
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, N),
            "income": rng.uniform(10, 190, N),
            "label": rng.integers(0, 2, N),
        }
    )
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1000.0, delta=1e-5))
        v.add_purpose("p", description="Tests", lawful_basis="consent")
        v.add_principal("eve", roles=[])
        v.grant(principal="eve", dataset="d", purpose="p", mode="dp_training")
        yield v, frame


def _twice(release):
    """Run ``release`` twice, each time right after seeding NumPy's global generator alike."""
    out = []
    for _ in range(2):
        np.random.seed(1)
        out.append(release())
    return out


# Each pair below is two draws of continuous noise (or, for the quantile, a uniform draw
# inside the chosen interval) from fresh OS randomness: they coincide with probability 0.
@pytest.mark.parametrize(
    "call",
    [
        lambda dp: dp.count("d", epsilon=1.0).value,
        lambda dp: dp.sum("d", "income", epsilon=1.0).value,
        lambda dp: dp.mean("d", "income", epsilon=1.0).value,
        lambda dp: dp.var("d", "income", epsilon=1.0).value,
        lambda dp: dp.std("d", "income", epsilon=1.0).value,
        lambda dp: tuple(dp.histogram("d", "label", epsilon=1.0).value),
        lambda dp: dp.quantile("d", "income", 0.5, epsilon=1.0).value,
    ],
    ids=["count", "sum", "mean", "var", "std", "histogram", "quantile"],
)
def test_seeding_numpy_does_not_replay_statistics(vault, call):
    v, _ = vault
    dp = v.session("eve", purpose="p").dp
    first, second = _twice(lambda: call(dp))
    assert first != second


ESTIMATORS = [
    lambda **kw: models.StandardScaler(epsilon=1.0, **kw),
    lambda **kw: models.LogisticRegression(epsilon=1.0, **kw),
    lambda **kw: models.LinearRegression(epsilon=1.0, **kw),
    lambda **kw: models.GaussianNB(epsilon=1.0, **kw),
    lambda **kw: models.KMeans(n_clusters=2, epsilon=1.0, **kw),
    lambda **kw: models.PCA(n_components=1, epsilon=1.0, **kw),
    lambda **kw: models.DecisionTreeClassifier(epsilon=1.0, max_depth=2, **kw),
    lambda **kw: models.RandomForestClassifier(epsilon=1.0, n_estimators=3, max_depth=2, **kw),
]
IDS = ["scaler", "logistic", "linear", "nb", "kmeans", "pca", "tree", "forest"]


def _fit(dp, estimator):
    name = type(estimator).__name__
    target = {"LinearRegression": "income"}.get(name, "label")
    supervised = name not in ("StandardScaler", "KMeans", "PCA")
    features = ["age"] if name == "LinearRegression" else ["age", "income"]
    return dp.fit(estimator, "d", features=features, target=target if supervised else None)


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_a_caller_seed_is_refused_before_any_charge(vault, make):
    v, _ = vault
    dp = v.session("eve", purpose="p").dp
    with pytest.raises(privml.ConfigurationError, match="random_state"):
        _fit(dp, make(random_state=2))
    assert len(v.ledger.events("d")) == 0
    [entry] = v.audit.entries(principal="eve").to_dict("records")
    assert entry["action"] == "dp.fit" and entry["outcome"] == "error"


def test_exact_means_cannot_be_recovered_by_replaying_the_noise(vault):
    """The attack: fit at ε=1 with a seed, replay the seeded noise, subtract it."""
    v, _frame = vault
    dp = v.session("eve", purpose="p").dp
    with pytest.raises(privml.ConfigurationError):
        _fit(dp, models.StandardScaler(epsilon=1.0, random_state=2))
    # Without a seed of its own, seeding NumPy globally before each fit does not replay it.
    a, b = _twice(lambda: _fit(dp, models.StandardScaler(epsilon=1.0))["model"].mean_)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_fitted_models_carry_no_generator_or_seed(vault, make):
    """A kept generator could be rewound, and a forest's per-tree seeds replayed."""
    v, _ = vault
    dp = v.session("eve", purpose="p").dp
    fitted = _fit(dp, make())
    first, second = _twice(lambda: _fit(dp, make())["model"])
    blob = pickle.dumps(fitted)
    for marker in (b"RandomState", b"Philox", b"MT19937", b"PCG64", b"SystemRandom"):
        assert marker not in blob
    models_to_check = [fitted["model"], *getattr(fitted["model"], "estimators_", [])]
    for model in models_to_check:
        seeds = {k: p for k, p in model.get_params(deep=True).items() if "random_state" in k}
        assert set(seeds.values()) <= {None}
    assert pickle.dumps(first) != pickle.dumps(second)


# -- the keystream behind DP-SGD's Poisson coins ---------------------------------------


@pytest.mark.parametrize("nbytes", [0, 1, 15, 16, 32_768, 32_769, 65_535, 65_536, 65_537, 200_003])
def test_keystream_fills_exactly_what_was_asked_with_no_zero_run(nbytes):
    """Every size, from the operating system or across the 64 KiB pieces the cipher
    writes, comes back full.

    A piece left unwritten would stay zero: a run of 16 zero bytes in a keystream
    has probability under 2**-128 per position.
    """
    from privml.dp._random import keystream

    out = bytes(keystream(nbytes))
    assert len(out) == nbytes
    if nbytes >= 16:
        assert bytes(16) not in out


@pytest.mark.parametrize("nbytes", [1000, 100_000])  # the OS's own bytes; the cipher's
def test_keystream_is_keyed_by_entropy_alone(monkeypatch, nbytes):
    """Replaying the operating system's bytes replays the stream, and nothing else does.

    Two calls with the same entropy give the same bytes (the key is all there is: no
    caller seed reaches it); NumPy's and torch's seeds leave it fresh.
    """
    import random

    import torch

    from privml.dp import _random

    draws = []
    for _ in range(2):
        monkeypatch.setattr(_random, "entropy", random.Random(5).randbytes)
        draws.append(bytes(_random.keystream(nbytes)))
    assert draws[0] == draws[1]
    monkeypatch.undo()
    seeded = []
    for _ in range(2):
        np.random.seed(1)
        torch.manual_seed(1)
        seeded.append(bytes(_random.keystream(nbytes)))
    assert seeded[0] != seeded[1]


def test_keystream_bytes_are_uniform():
    """A chi-square test of 2**20 bytes over 256 values.

    255 degrees of freedom: the statistic exceeds 400 with probability about 2e-8
    for uniform bytes, so this fails by chance with probability under 1e-6.
    """
    from privml.dp._random import keystream

    counts = np.bincount(np.frombuffer(keystream(1 << 20), dtype=np.uint8), minlength=256)
    expected = (1 << 20) / 256
    assert ((counts - expected) ** 2 / expected).sum() < 400
