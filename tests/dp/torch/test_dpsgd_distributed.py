"""Data-parallel DP-SGD (``distributed=True``): real gloo process groups on this machine.

Two-rank runs spawn ``_ddp_child.py`` twice (a FileStore rendezvous: no port is chosen by
hand, gloo binds its own); the one-process reference and the one-rank runs run here. Runs
that are compared replace privml's entropy with the same seeded stream in every process.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from sklearn.datasets import load_digits

import privml
from privml import Budget, ConfigurationError, Field, Schema, Vault
from privml.accounting import PrivacyEvent
from privml.dp import _random

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

N, B, STEPS, SEED = 1797, 64, 8, 7
CHILD = Path(__file__).with_name("_ddp_child.py")
ROOT = Path(__file__).resolve().parents[3]
FRAME = load_digits(as_frame=True).frame
FEATURES = [c for c in FRAME.columns if c != "target"]


def _vault(path: Path, key: bytes) -> None:
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in FEATURES}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    v = Vault.create(path, key=key)
    v.add_dataset("data", FRAME, schema=Schema(fields), budget=Budget(epsilon=10.0, delta=1e-5))
    v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
    v.add_principal("eng", roles=["ml"])
    v.add_principal("other", roles=["ml"])
    v.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
    v.close()


Result = dict[str, Any] | None


def _spawn(
    folder: Path, key: bytes, *, stop_others: bool = False, **per_rank: dict[str, Any]
) -> dict[int, Result]:
    """Run one child per rank (``per_rank["r0"]``...: its own settings); their results.

    ``stop_others``: once rank 0 has finished, SIGKILL the rest (they were lingering).
    """
    procs = []
    for rank in range(2):
        settings = {
            "vault": str(folder / "vault"),
            "key": key.hex(),
            "out": str(folder / f"rank{rank}.json"),
            "world": 2,
            "rank": rank,
            "store": str(folder / "store"),
            "mode": "ghost",
            "steps": STEPS,
            "seed": SEED,
            **per_rank.get(f"r{rank}", {}),
        }
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        procs.append(
            subprocess.Popen([sys.executable, str(CHILD), json.dumps(settings)], env=env, cwd=ROOT)
        )
    results: dict[int, Result] = {}
    for rank, proc in enumerate(procs):
        if rank and stop_others:
            proc.kill()
        proc.wait(timeout=240)
        out = folder / f"rank{rank}.json"
        results[rank] = json.loads(out.read_text()) if out.exists() else None
    return results


def _train(v: Vault, net: Any, *, principal: str = "eng", **kwargs: Any) -> Any:
    features = FEATURES
    settings = {
        "batch_size": B,
        "epochs": 1,
        "max_grad_norm": 1.0,
        "noise_multiplier": 1.0,
        "grad_sample_mode": "ghost",
        **kwargs,
    }
    return v.session(principal, purpose="ml").dp.private_training(
        "data",
        features=features,
        target="target",
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        **settings,
    )


def _net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _reference(v: Vault, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> dict[str, Any]:
    """The run here, on the children's seeded stream: noisy gradients per step, final weights."""
    monkeypatch.setattr(_random, "entropy", random.Random(SEED).randbytes)
    net, out = _net(), {"grads": [], "rows": []}
    with _train(v, net, **kwargs) as run:
        for X, y in run.data_loader:
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
            out["grads"].append(torch.cat([p.grad.reshape(-1) for p in run.model.parameters()]))
            out["rows"].append(len(y))
            if run.steps_taken >= STEPS:
                break
    monkeypatch.undo()
    out["params"] = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    out["run"] = run
    return out


def _epsilon(q: float, sigma: float, steps: int) -> float:
    """An independent dp_accounting figure: the tighter of PLD and RDP, as one run reports."""
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
    )
    pld = PLDAccountant(value_discretization_interval=1e-4).compose(event).get_epsilon(1e-5)
    rdp = RdpAccountant().compose(event).get_epsilon(1e-5)
    return float(min(pld, rdp))


# -- two ranks against one process ---------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-rank ghost run of STEPS steps on its own vault, and a vault for the reference run."""
    folder, key = tmp_path_factory.mktemp("ddp"), privml.generate_key()
    _vault(folder / "vault", key)
    _vault(folder / "reference", key)
    ranks = _spawn(folder, key)
    return {"folder": folder, "key": key, "ranks": ranks}


def test_two_ranks_release_what_one_process_releases(two_ranks, monkeypatch):
    r0, r1 = two_ranks["ranks"][0], two_ranks["ranks"][1]
    assert r0 is not None and r1 is not None
    assert "error" not in r0 and "error" not in r1
    v = Vault.open(two_ranks["folder"] / "reference", key=two_ranks["key"])
    try:
        one = _reference(v, monkeypatch)
    finally:
        v.close()
    # The ranks' shares of each logical batch add up to the one process's batch (same coins).
    assert [a + b for a, b in zip(r0["rows"], r1["rows"], strict=True)] == one["rows"]
    assert all(a > 0 and b > 0 for a, b in zip(r0["rows"], r1["rows"], strict=True))
    # The noisy sum of every step (noise σ·C once, from rank 0) and the final weights.
    for rank in (r0, r1):
        np.testing.assert_allclose(np.array(rank["grads"]), torch.stack(one["grads"]), atol=1e-5)
        np.testing.assert_allclose(np.array(rank["params"]), one["params"], atol=1e-5)
    assert r0["params"] == r1["params"]  # the same update on every rank, bit for bit
    assert r0["epsilon"] == pytest.approx(one["run"].epsilon, rel=1e-12)


def test_noise_added_once_not_per_rank(two_ranks, monkeypatch):
    """The reference's noise is one N(0, σ²C²) draw; the ranks' gradients carry exactly it.

    Runs at σ = 1 and σ = 2 on the same stream share coins and noise seeds, so their noisy
    sums differ by one standard normal draw Z per coordinate (C = 1): its spread shows the
    reference adds σ·C·Z once. The 2-rank gradients match the σ = 1 reference within 1e-5
    (above); noise drawn on both ranks would add a second independent draw, moving each of
    the 2410 coordinates by ~1/64, and all staying within 1e-5 has probability far below 1e-6.
    """
    r0 = two_ranks["ranks"][0]
    assert r0 is not None
    v = Vault.open(two_ranks["folder"] / "reference", key=two_ranks["key"])
    try:
        one = _reference(v, monkeypatch, noise_multiplier=1.0)
        two = _reference(v, monkeypatch, noise_multiplier=2.0)
    finally:
        v.close()
    z = (two["grads"][0] - one["grads"][0]) * B  # the step's Z, unscaled
    # 2410 draws: the sample std is within 10% of 1 except with probability ~1e-11
    assert float(z.std()) == pytest.approx(1.0, rel=0.1)
    assert abs(float(z.mean())) < 0.15  # ~7 standard errors of the mean
    np.testing.assert_allclose(np.array(r0["grads"][0]), one["grads"][0], atol=1e-5)


def test_one_reservation_one_settled_charge_at_dp_accounting_epsilon(two_ranks):
    v = Vault.open(two_ranks["folder"] / "vault", key=two_ranks["key"])
    try:
        events = v.ledger.events("data")
        assert len(events) == 1  # rank 1 joined rank 0's reservation: nothing of its own
        row = events.iloc[0]
        assert (row["status"], row["steps"], row["planned_steps"]) == ("committed", STEPS, N // B)
        assert row["params"] == {
            "noise_multiplier": 1.0,
            "batch_size": B,
            "n": N,
            "sample_rate": B / N,
            "steps": STEPS,
            "max_grad_norm": 1.0,
        }
        expected = _epsilon(B / N, 1.0, STEPS)
        assert v.budget("data").epsilon_fixed_sequence == pytest.approx(expected, rel=1e-6)
        for rank in two_ranks["ranks"].values():
            assert rank is not None
            assert rank["epsilon"] == pytest.approx(expected, rel=1e-6)
            assert rank["request_id"] == row["request_id"]
            assert rank["charge"] == "committed"
        assert [r["registered"] for r in two_ranks["ranks"].values()] == [True, False]
        assert len(v.models.list()) == 1  # rank 0 alone registers
    finally:
        v.close()


def test_the_audit_log_has_each_ranks_access(two_ranks):
    v = Vault.open(two_ranks["folder"] / "vault", key=two_ranks["key"])
    try:
        request = two_ranks["ranks"][0]["request_id"]
        joined = v.audit.entries(action="dp.train.join")
        assert list(joined["outcome"]) == ["joined"]
        details = joined.iloc[0]["details"]
        assert details["request_id"] == request and details["rows"] == N
        assert "content_hash" in details and details["columns"][-1] == "target"
        batches = v.audit.entries(action="dp.train.batches")
        got = sorted((d["rank"], d["batches_drawn"], d["rows_drawn"]) for d in batches["details"])
        r0, r1 = two_ranks["ranks"][0], two_ranks["ranks"][1]
        assert got == [(0, STEPS, sum(r0["rows"])), (1, STEPS, sum(r1["rows"]))]
        assert {d["request_id"] for d in batches["details"]} == {request}
        assert v.audit.verify().ok
    finally:
        v.close()


# -- a rank that dies ------------------------------------------------------------------------


@pytest.mark.slow  # two processes, each importing torch and opacus
@pytest.mark.parametrize("dies", [1, 0])
def test_a_sigkilled_rank_ends_the_run(dies, tmp_path):
    """Rank ``dies`` SIGKILLs itself after 3 steps, having drawn batch 4.

    Rank 1 dead: rank 0's next collective fails at once (the connection drops) and it
    settles on the 4 batches drawn (3 released). Rank 0 dead: rank 1 fails the same way, and
    the reservation stays reserved with its whole planned cost (conservative).
    """
    key = privml.generate_key()
    _vault(tmp_path / "vault", key)
    results = _spawn(tmp_path, key, **{f"r{dies}": {"die_at": 3}})
    survivor = results[1 - dies]
    assert results[dies] is None  # killed before writing anything
    assert survivor is not None and survivor["error"].startswith(("RuntimeError", "DistBackend"))
    assert survivor["steps_taken"] == 3 and survivor["registered"] is False
    v = Vault.open(tmp_path / "vault", key=key)
    try:
        (row,) = v.ledger.events("data").itertuples()
        if dies == 1:
            assert (row.status, row.steps) == ("committed", 4)  # 4 drawn >= 3 released
            assert survivor["charge"] == "committed"
        else:
            assert (row.status, row.steps) == ("reserved", N // B)
        assert v.models.list().empty
        assert v.audit.verify().ok
    finally:
        v.close()


@pytest.mark.slow  # two processes, each importing torch and opacus
def test_a_rank_that_leaves_with_an_error_takes_the_group_down(tmp_path):
    """Rank 1's loop raises after 3 steps and its process lives on (until rank 0 is done).

    Rank 0's next collective fails on the dropped connection, not on the 120 s timeout:
    rank 1's block took the run's group down on its way out.
    """
    key = privml.generate_key()
    _vault(tmp_path / "vault", key)
    lingering = {"raise_at": 3, "linger": 600, "timeout": 120}
    results = _spawn(tmp_path, key, stop_others=True, r0={"timeout": 120}, r1=lingering)
    r0 = results[0]
    assert r0 is not None
    # gloo words a dropped peer as "closed by peer" or "reset by peer", never as a timeout
    assert re.search(r"Connection (closed|reset) by peer", r0["error"]), r0["error"]
    assert "timed out" not in r0["error"].lower() and "timeout" not in r0["error"].lower()
    assert (r0["steps_taken"], r0["charge"]) == (3, "committed")


@pytest.mark.slow  # two processes, each importing torch and opacus
def test_ranks_that_disagree_refuse_before_anything_is_reserved(tmp_path):
    key = privml.generate_key()
    _vault(tmp_path / "vault", key)
    results = _spawn(tmp_path, key, r1={"net_seed": 2, "settings": {"max_grad_norm": 2.0}})
    for rank in results.values():
        assert rank is not None and rank["error"].startswith("ConfigurationError")
        assert "steps_taken" not in rank  # the block never started
    assert "differs from rank 0's in: max_grad_norm, parameters" in results[1]["error"]
    assert "rank 1 of the data-parallel run refused to start" in results[0]["error"]
    v = Vault.open(tmp_path / "vault", key=key)
    try:
        assert v.ledger.events("data").empty
        assert v.audit.entries(action="dp.train.join").empty
    finally:
        v.close()


# -- one rank, in this process ---------------------------------------------------------------


@pytest.fixture
def one_rank(tmp_path: Path) -> Any:
    """A one-process gloo group here (a FileStore), taken down after the test."""
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp_path / 'store'}",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=30),
    )
    yield
    dist.destroy_process_group()


@pytest.fixture
def vault(tmp_path: Path) -> Any:
    key = privml.generate_key()
    _vault(tmp_path / "v", key)
    v = Vault.open(tmp_path / "v", key=key)
    yield v
    v.close()


def test_distributed_needs_an_initialised_process_group(vault):
    assert not dist.is_initialized()
    with (
        pytest.raises(ConfigurationError, match="init_process_group"),
        _train(vault, _net(), distributed=True),
    ):
        pass
    assert vault.ledger.events("data").empty
    (refusal,) = vault.audit.entries(action="dp.train").itertuples()
    assert refusal.outcome != "allowed"


def test_canaries_and_holdout_are_refused_with_distributed(vault, one_rank):
    for extra in ({"canaries": 4}, {"holdout": 0.2}):
        with (
            pytest.raises(ConfigurationError, match="not available with distributed=True"),
            _train(vault, _net(), distributed=True, **extra),
        ):
            pass
    assert vault.ledger.events("data").empty


def test_one_rank_equals_one_process(vault, one_rank, monkeypatch):
    one = _reference(vault, monkeypatch)
    spread = _reference(vault, monkeypatch, distributed=True)
    assert spread["rows"] == one["rows"]
    torch.testing.assert_close(spread["params"], one["params"], rtol=0, atol=1e-6)
    run = spread["run"]
    assert run.charge.status == "committed" and run.model_info is not None
    entries = vault.audit.entries(action="dp.train.batches")["details"]
    assert entries.iloc[-1]["rank"] == 0 and "rank" not in entries.iloc[0]


# -- joining a reservation, as an attacker -------------------------------------------------


def _door_and_auth(v: Vault, principal: str = "eng") -> tuple[Any, Any]:
    features = FEATURES
    gate = v.session(principal, purpose="ml").dp._gate
    auth = gate.authorize(
        "data", columns=[*features, "target"], needed="dp_training", action="dp.train"
    )
    return gate, auth


def _plan() -> PrivacyEvent:
    return PrivacyEvent.dp_sgd(noise_multiplier=1.0, batch_size=B, n=N, steps=28)


def test_join_refuses_anything_but_an_open_reservation_of_the_same_principal(vault):
    gate, auth = _door_and_auth(vault)
    others = vault.ledger.reserve("data", event=_plan(), principal="other", purpose="ml")
    settled = vault.ledger.reserve("data", event=_plan(), principal="eng", purpose="ml")
    settled.settle(_plan().with_steps(1))
    for request_id in ("dp.train-0000000000000000", others.request_id, settled.request_id):
        with pytest.raises(ConfigurationError, match="no open reservation"):
            gate.join(auth, request_id=request_id, action="dp.train.join", version=1)
    own = vault.ledger.reserve("data", event=_plan(), principal="eng", purpose="ml")
    with pytest.raises(ConfigurationError, match="no open reservation"):
        gate.join(auth, request_id=own.request_id, action="dp.train.join", version=2)
    outcomes = list(vault.audit.entries(action="dp.train.join")["outcome"])
    assert outcomes == ["refused"] * 4
    loaded = gate.join(auth, request_id=own.request_id, action="dp.train.join", version=1)
    assert len(loaded.frame) == N  # the reserved rows, read under the reservation
    assert vault.audit.entries(action="dp.train.join").iloc[-1]["outcome"] == "joined"


def test_join_refuses_an_authorization_of_another_session(vault):
    _, auth = _door_and_auth(vault)
    gate, _ = _door_and_auth(vault)
    own = vault.ledger.reserve("data", event=_plan(), principal="eng", purpose="ml")
    with pytest.raises(ConfigurationError, match="not decided by this session"):
        gate.join(auth, request_id=own.request_id, action="dp.train.join", version=1)
