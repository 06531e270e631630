"""White-box (Dirac) canaries of DP-SGD: every mode, the charge, soundness, power, secrecy.

Runs that train use ``seeded_entropy`` (privml's coins from a seeded stream),
so each assertion on a measurement either always holds or never does. The
soundness test asserts a bound computed at confidence 1 - 1e-7: with the OS's
coins instead of the seeded ones, the one-run theorem (Steinke, Nasr &
Jagielski 2023, with δ) puts the chance that it exceeds the true ε of
the run, hence the charged ε, at most 1e-7; the seeded stream is one fixed
draw of those coins, a failing one with probability at most 1e-7.
"""

from __future__ import annotations

import copy
import gc
import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from privml import Budget, ConfigurationError, Field, Schema, Vault

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from torch import nn  # noqa: E402  (after the skips)

from privml.attacks import one_run_lower_bound  # noqa: E402
from privml.attacks._canaries import Canaries  # noqa: E402
from privml.attacks._dirac import WHITE_BOX, DiracCanaries, trainable  # noqa: E402
from privml.dp.torch._engine import build, prepare_module  # noqa: E402
from privml.dp.torch._noise import NoiseSource  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

ROWS = 800
FEATURES = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
MODES = ["ghost", "hooks", "bk"]
CLIP = 0.5


@pytest.fixture
def vault(tmp_path, key):
    """800 digits as dataset "data"; "eng" may train on it for "ml"."""
    frame = load_digits(as_frame=True).frame.iloc[:ROWS].reset_index(drop=True)
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in FEATURES}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    v = Vault.create(tmp_path / "v", key=key)
    v.add_dataset("data", frame, schema=Schema(fields), budget=Budget(epsilon=1e5, delta=1e-5))
    v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
    v.add_principal("eng", roles=["ml"])
    v.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
    yield v
    v.close()


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def _spec(net, *, sigma, epochs, canaries, mode="ghost", name="digits-mlp"):
    return {
        "features": FEATURES,
        "target": "target",
        "module": net,
        "optimizer": torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.9),
        "batch_size": 100,
        "epochs": epochs,
        "max_grad_norm": 1.0,
        "noise_multiplier": sigma,
        "grad_sample_mode": mode,
        "canaries": canaries,
        "name": name,
    }


def _train(v, **kwargs):
    return v.session("eng", purpose="ml").dp.train("data", **_spec(_mlp(), **kwargs))


def _alive(kind):
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is kind]


# --- the gradient canaries themselves -----------------------------------------------------------
def test_coordinates_are_distinct_and_uniform_and_coins_fair():
    d = DiracCanaries([30, 70], 100, rate=0.5, clip=1.0, rng=np.random.default_rng(3))
    assert sorted(d._flat.tolist()) == list(range(100))  # m = all coordinates: each once
    d = DiracCanaries([6_000, 4_000], 2_000, rate=0.5, clip=1.0, rng=np.random.default_rng(4))
    assert len(set(d._flat.tolist())) == 2_000
    assert 800 < int((d._flat < 6_000).sum()) < 1_600  # 60% expected in the first (seeded)
    assert 900 < int(d.included.sum()) < 1_100  # a fair coin each (seeded: fixed outcome)


def test_included_canaries_are_sampled_at_rate_q_and_excluded_ones_never():
    """Only ``add`` touches the sums: with zero real gradient and no noise, sums count samples."""
    params = [torch.zeros(40), torch.zeros(5, 12)]
    d = DiracCanaries([40, 60], 100, rate=0.25, clip=2.0, rng=np.random.default_rng(5))
    steps = 400
    hits = np.zeros(100)
    for _ in range(steps):
        for p in params:
            p.summed_grad = torch.zeros_like(p)
        d.add(params)
        for p in params:
            p.grad = p.summed_grad.clone()
        d.observe(params)
        flat = torch.cat([p.summed_grad.reshape(-1) for p in params]).numpy()
        hits += flat[d._flat] / 2.0
    assert np.array_equal(d.scores(), 2.0 * hits)  # the score is C × times sampled, exactly
    assert np.all(hits[~d.included] == 0)
    rate = hits[d.included].sum() / (steps * d.included.sum())
    assert abs(rate - 0.25) < 0.01  # q, within 6 standard deviations (seeded: fixed outcome)


def _one_step(mode, net, X, y, dirac=None):
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    net, opt = prepare_module(net, opt, mode=mode, fix_module=False)
    engine = build(
        mode,
        net,
        opt,
        nn.CrossEntropyLoss(),
        noise_multiplier=0.0,
        max_grad_norm=CLIP,
        batch_size=len(X),
        guard=None,
        noise=NoiseSource(seed=0),
    )
    engine.optimizer.privml_dirac = dirac
    engine.optimizer.zero_grad()
    engine.criterion(engine.model(X), y).backward()
    engine.optimizer.step()
    # σ = 0 and a mean loss: the released gradient is the (canaried) clipped sum over len(X)
    sums = torch.cat([p.grad.reshape(-1) * len(X) for p in trainable(opt)])
    engine.close()
    return sums


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_adds_the_canaries_to_the_clipped_sum_and_scores_the_noisy_one(mode):
    data = load_digits()
    X = torch.as_tensor(data.data[:48] / 16.0, dtype=torch.float32)
    y = torch.as_tensor(data.target[:48])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    real = _one_step(mode, copy.deepcopy(net), X, y)
    sizes = [p.numel() for p in net.parameters()]
    d = DiracCanaries(sizes, 300, rate=1.0, clip=CLIP, rng=np.random.default_rng(6))
    with_canaries = _one_step(mode, net, X, y, d)
    added = torch.zeros_like(real)
    added[d._flat[d.included]] = CLIP
    torch.testing.assert_close(with_canaries, real + added, rtol=1e-5, atol=1e-6)
    # σ = 0: the noisy sum is the clipped sum; its value at each canary's coordinate is the score
    expected = (real + added)[d._flat].numpy().astype(float)
    np.testing.assert_allclose(d.scores(), expected, rtol=1e-5, atol=1e-6)


# --- runs: the charge, soundness, power ----------------------------------------------------------
def test_the_ledger_event_is_the_same_with_and_without_canaries(vault):
    session = vault.session("eng", purpose="ml")
    events = []
    for m, name in [(0, "plain"), (300, "measured")]:
        with session.dp.private_training(
            "data", **_spec(_mlp(), sigma=1.0, epochs=1, canaries=m, name=name)
        ) as run:
            for X, y in run.data_loader:
                run.optimizer.zero_grad()
                run.criterion(run.model(X), y).backward()
                run.optimizer.step()
        events.append(run.charge.event.to_json())
        assert (run.canary_measurement is None) == (m == 0)
    assert events[0] == events[1]


def test_the_white_box_bound_never_exceeds_the_charge(vault, seeded_entropy):
    _, history = _train(vault, sigma=1.0, epochs=3, canaries=400)
    found = history.attrs["canary_measurement"]["white_box"]
    charged = vault.models.info("digits-mlp").epsilon
    assert found["threat_model"] == WHITE_BOX and found["m"] == 400 and found["guesses"] == 80
    assert found["epsilon_claimed"] == pytest.approx(charged) and found["delta"] == 1e-5
    strict = one_run_lower_bound(
        found["m"], found["guesses"], found["correct"], delta=1e-5, confidence=1 - 1e-7
    )
    assert 0 <= strict <= found["epsilon_lower_bound"] <= charged


@pytest.mark.parametrize("mode", ["ghost", "bk"])
def test_an_under_noised_run_gives_a_white_box_bound_well_above_the_black_box_one(
    vault, seeded_entropy, mode
):
    _, history = _train(vault, sigma=0.3, epochs=4, canaries=ROWS, mode=mode)
    both = history.attrs["canary_measurement"]
    white, black = both["white_box"], both["black_box"]
    assert white["guesses"] == black["guesses"] == 160
    assert white["correct"] >= 150
    assert 2.0 < white["epsilon_lower_bound"] <= white["epsilon_claimed"]
    assert white["epsilon_lower_bound"] > black["epsilon_lower_bound"] + 1.0


# --- secrecy and refusals -------------------------------------------------------------------------
def test_no_coordinate_or_coin_outlives_the_run(vault):
    session = vault.session("eng", purpose="ml")
    with session.dp.private_training(
        "data", **_spec(_mlp(), sigma=1.0, epochs=1, canaries=200)
    ) as run:
        assert isinstance(run.optimizer.privml_dirac, DiracCanaries)  # in memory, during
        for X, y in run.data_loader:
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
    assert set(run.canary_measurement) == {"black_box", "white_box"}
    assert run._dirac is None and run._canaries is None and run.optimizer.privml_dirac is None
    assert _alive(DiracCanaries) == [] and _alive(Canaries) == []  # unreachable: collected
    metadata = vault.models.info("digits-mlp").metadata
    assert set(metadata["canary_measurement"]["white_box"]) == {
        "m",
        "guesses",
        "correct",
        "threat_model",
        "confidence",
        "epsilon_lower_bound",
        "epsilon_claimed",
        "delta",
    }
    logged = vault.audit.entries()["details"].map(json.dumps)
    assert not logged.str.contains("dirac|coordinate|included", case=False).any()


def test_a_block_that_fails_drops_the_canaries_too(vault):
    session = vault.session("eng", purpose="ml")
    with (
        pytest.raises(RuntimeError, match="stop"),
        session.dp.private_training(
            "data", **_spec(_mlp(), sigma=1.0, epochs=1, canaries=200)
        ) as run,
    ):
        X, y = next(iter(run.data_loader))
        run.criterion(run.model(X), y).backward()
        run.optimizer.step()
        raise RuntimeError("stop")
    assert run.canary_measurement is None and run.optimizer.privml_dirac is None
    assert _alive(DiracCanaries) == []


def test_more_canaries_than_coordinates_are_refused_before_any_budget(vault):
    net = nn.Linear(64, 10)  # 650 coordinates, and 800 rows: only the coordinates refuse 700
    spec = _spec(net, sigma=1.0, epochs=1, canaries=700)
    before = len(vault.audit.entries(action="dp.train"))
    with pytest.raises(ConfigurationError, match="650 trainable parameter coordinates"):
        vault.session("eng", purpose="ml").dp.train("data", **spec)
    assert vault.budget("data").epsilon_spent == 0
    assert len(vault.models.list()) == 0
    refused = vault.audit.entries(action="dp.train").iloc[before:]
    assert list(refused["outcome"]) == ["error"]  # audited once, as a bad request
