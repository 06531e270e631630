"""Checkpoint and resume of a DP-SGD run: one reservation, no gap in the guard, one settle.

The attackers: a process killed (SIGKILL) after a checkpoint, with batches drawn since;
a second process resuming a run that a live process holds; a caller resuming with other
settings, as another principal, or a settled run; someone with the vault folder but not
the key who edits the checkpoint's bytes or its rows, or reads them for the parameters.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from sklearn.datasets import load_digits

from privml import (
    AccessDenied,
    Budget,
    ConfigurationError,
    Field,
    IntegrityError,
    NotFoundError,
    Schema,
    Vault,
    generate_key,
)
from privml.exceptions import RunEndedError, StepLimitExceeded, VaultClosedError
from privml.vault._checkpoints import LEASE

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

N = 1797  # digits
DELTA = 1e-5
SIGMA = 1.1

CHILD = textwrap.dedent(
    """
    import hashlib, os, sys, time
    import torch
    from sklearn.datasets import load_digits
    import privml

    features = [c for c in load_digits(as_frame=True).frame.columns if c != "target"]
    vault = privml.Vault.open(os.environ["VAULT"], key=os.environ["KEY"])
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    dp = vault.session("eng", purpose="ml").dp
    with dp.private_training(
        "data", features=features, target="target", module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        batch_size=64, epochs=2, max_grad_norm=1.0, noise_multiplier=1.1,
    ) as run:
        batches = iter(run.data_loader)
        def step():
            global batches
            X, y = next(batches, (None, None))
            if X is None:  # the epoch's end
                batches = iter(run.data_loader)
                X, y = next(batches)
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
        for _ in range(int(sys.argv[1])):
            step()
        checkpoint = run.checkpoint()
        weight = net[0].weight.detach().numpy().tobytes()
        with open(os.environ["WEIGHTS"], "wb") as out:
            out.write(weight)
        print("CHECKPOINT", checkpoint, run.request_id, flush=True)
        while run.steps_taken < int(sys.argv[2]):  # killed somewhere in here, or asleep after
            step()
            print("DRAWN", run.batches_drawn, flush=True)
            if run.batches_drawn == int(sys.argv[1]) + 20:
                print("READY", flush=True)
        time.sleep(300)
    """
)


def _mlp():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _settings(digits, net, **kwargs):
    _, features = digits
    return {
        "features": features,
        "target": "target",
        "module": net,
        "optimizer": torch.optim.SGD(net.parameters(), lr=0.5),
        "batch_size": 64,
        "epochs": 2,
        "max_grad_norm": 1.0,
        "noise_multiplier": SIGMA,
        **kwargs,
    }


def _train(v, digits, net, *, principal="eng", **kwargs):
    return v.session(principal, purpose="ml").dp.private_training(
        "data", **_settings(digits, net, **kwargs)
    )


def _steps(run, count):
    batches = iter(run.data_loader)
    for _ in range(count):
        X, y = next(batches, (None, None))
        if X is None:  # the epoch's end: the next epoch's iterator
            batches = iter(run.data_loader)
            X, y = next(batches)
        run.optimizer.zero_grad()
        run.criterion(run.model(X), y).backward()
        run.optimizer.step()


def _independent_epsilon(steps):
    """dp_accounting on its own: the tighter of RDP and PLD, as the ledger reports one run."""
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(64 / N, dp_event.GaussianDpEvent(SIGMA)), steps
    )
    pld = PLDAccountant(value_discretization_interval=1e-4).compose(event).get_epsilon(DELTA)
    rdp = RdpAccountant().compose(event).get_epsilon(DELTA)
    return min(pld, rdp)


def _folder(v) -> Path:
    return Path(v.path)


def _crash_after_checkpoint(v, key, digits, make_mlp, *, steps=3, after=0, **settings):
    """Checkpoint after ``steps`` steps, draw ``after`` more, then lose the process's vault.

    Closing the vault inside the block stands in for a crash in this process: nothing can
    be settled any more and the reservation stays reserved (the SIGKILL test kills a real
    process). Returns the checkpoint id and the vault opened again.
    """
    folder = _folder(v)
    with pytest.raises(VaultClosedError), _train(v, digits, make_mlp(), **settings) as run:
        _steps(run, steps)
        checkpoint = run.checkpoint()
        _steps(run, after)
        v.close()
    return checkpoint, Vault.open(folder, key=key)


@pytest.fixture(scope="module")
def crashed_once(tmp_path_factory):
    """A vault folder whose run checkpointed after 3 steps and then lost its process."""
    frame = load_digits(as_frame=True).frame
    features = [c for c in frame.columns if c != "target"]
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in features}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    schema = Schema(fields)
    key = generate_key()
    folder = tmp_path_factory.mktemp("crashed") / "v"
    v = Vault.create(folder, key=key)
    v.add_dataset("data", frame, schema=schema, budget=Budget(epsilon=10.0, delta=DELTA))
    v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
    v.add_principal("eng", roles=["ml"])
    v.add_principal("eve", roles=["ml"])
    v.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
    checkpoint, v = _crash_after_checkpoint(v, key, (frame, features), _mlp)
    v.close()
    return folder, key, checkpoint


@pytest.fixture
def crashed(crashed_once, tmp_path):
    """A copy of that folder (each test may edit its own): folder, key, checkpoint id."""
    folder, key, checkpoint = crashed_once
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy, key, checkpoint


# --- the process that dies -------------------------------------------------------------------
def test_resume_after_sigkill_settles_once_on_every_batch_drawn_by_every_process(
    make_vault, key, digits, make_mlp, tmp_path
):
    v = make_vault("digits")
    weights = tmp_path / "weights.bin"
    env = {**os.environ, "VAULT": str(_folder(v)), "KEY": key.decode(), "WEIGHTS": str(weights)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, "5", "30"], env=env, stdout=subprocess.PIPE, text=True
    )
    lines = []
    try:
        while not lines or lines[-1] != "READY":
            line = child.stdout.readline()
            assert line, f"the child ended early: {lines}"
            lines.append(line.strip())
        _, checkpoint, request_id = lines[0].split()
        # While the child lives (still stepping) it holds the run: no other process may
        # continue it.
        with (
            pytest.raises(ConfigurationError, match="live process"),
            _train(v, digits, make_mlp(), resume=checkpoint),
        ):
            pytest.fail("the block must not run")
    finally:
        os.kill(child.pid, signal.SIGKILL)  # mid-steps, or asleep after its 30th step
        child.wait(timeout=30)
        lines += child.stdout.read().split("\n")
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    # The child had drawn at least this many batches (at most one more, drawn unprinted).
    drawn_in_child = max(int(line.split()[1]) for line in lines if line.startswith("DRAWN"))
    assert drawn_in_child >= 25
    # A process that died keeps its whole reservation: the ledger never releases it alone.
    events = v.ledger.events("data")
    assert list(events["status"]) == ["reserved"]
    assert list(events["request_id"]) == [request_id]

    # The vault folder holds no byte of the checkpointed parameters in the clear.
    secret = weights.read_bytes()
    windows = [secret[i : i + 32] for i in range(0, len(secret) - 32, len(secret) // 8)]
    for path in _folder(v).rglob("*"):
        if path.is_file():
            stored = path.read_bytes()
            assert not any(w in stored for w in windows), path

    net = make_mlp(seed=7)  # other initial weights: the checkpoint's replace them
    with _train(v, digits, net, resume=checkpoint) as run:
        assert run.request_id == request_id
        assert net[0].weight.detach().numpy().tobytes() == secret  # the checkpoint's state
        assert run.steps_taken == 5  # the checkpoint's steps
        # Every batch the dead process drew is counted (at most a lease more).
        assert drawn_in_child <= run.batches_drawn <= drawn_in_child + LEASE
        counted = run.batches_drawn
        _steps(run, 10)
    total = counted + 10
    assert total >= drawn_in_child + 10  # never fewer than the batches of both processes
    assert run.steps_taken == 15
    events = v.ledger.events("data")
    assert len(events) == 1  # one reservation for the whole run, settled once
    assert list(events["status"]) == ["committed"]
    assert run.charge.request_id == request_id
    assert run.charge.event.params["steps"] == total
    assert run.epsilon == pytest.approx(_independent_epsilon(total), rel=1e-6)
    # The same as an uninterrupted run of the same total steps.
    w = make_vault("digits")
    with _train(w, digits, make_mlp(), epochs=2) as whole:
        _steps(whole, total)
    assert whole.charge.event.params == run.charge.event.params
    assert w.budget("data").epsilon_spent == pytest.approx(v.budget("data").epsilon_spent)
    assert whole.epsilon == pytest.approx(run.epsilon, rel=1e-9)
    # The model is registered once, by the process that finished the run.
    assert v.models.list()["name"].tolist() == ["data-dpsgd"]
    info = v.models.info("data-dpsgd")
    assert (info.version, info.epsilon) == (1, run.epsilon)
    assert info.metadata["training"]["steps"] == 15
    resumed = v.audit.entries(action="dp.train.resume")
    assert resumed["details"].iloc[0]["checkpoint"] == checkpoint
    assert v.audit.verify().ok
    # A settled run cannot be continued.
    with (
        pytest.raises(RunEndedError, match="already committed"),
        _train(v, digits, make_mlp(), resume=checkpoint),
    ):
        pytest.fail("the block must not run")
    assert len(v.ledger.events("data")) == 1


# --- resuming in this process -----------------------------------------------------------------
def test_a_resumed_run_draws_no_more_than_the_original_plan(make_vault, key, digits, make_mlp):
    v = make_vault("digits")
    checkpoint, v = _crash_after_checkpoint(v, key, digits, make_mlp, steps=3, after=2, epochs=1)
    try:
        with _train(v, digits, make_mlp(), resume=checkpoint, epochs=1) as run:
            assert (run.steps_taken, run.steps_planned) == (3, 28)
            assert 5 <= run.batches_drawn <= 5 + LEASE - 1
            left = run.steps_planned - run.batches_drawn
            _steps(run, left)
            with pytest.raises(StepLimitExceeded):  # the guard's limit: the original plan
                _steps(run, 1)
        assert run.charge.event.params["steps"] == 28
        assert len(v.ledger.events("data")) == 1
    finally:
        v.close()


def test_a_second_resume_while_one_is_live_is_refused(crashed, digits, make_mlp):
    folder, key, checkpoint = crashed
    v = Vault.open(folder, key=key)
    try:
        with _train(v, digits, make_mlp(), resume=checkpoint) as run:
            with (
                pytest.raises(ConfigurationError, match="live process"),
                _train(v, digits, make_mlp(), resume=checkpoint),
            ):
                pytest.fail("the block must not run")
            _steps(run, 1)
        assert run.charge.status == "committed"
        assert len(v.ledger.events("data")) == 1
    finally:
        v.close()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"batch_size": 32}, "batch_size"),
        ({"epochs": 3}, "epochs"),
        ({"noise_multiplier": 2.0}, "noise_multiplier"),
        ({"max_grad_norm": 0.5}, "max_grad_norm"),
        ({"name": "other"}, "name"),
        ({"hidden": 16}, "parameters and buffers"),
        ({"lr": 0.1}, "optimizer_settings"),
        ({"max_physical_batch_size": 16}, "max_physical_batch_size"),
        ({"transform": torch.flipud}, "transform"),
    ],
)
def test_a_resume_with_other_settings_is_refused_naming_the_difference(
    crashed, digits, make_mlp, change, named
):
    folder, key, checkpoint = crashed
    v = Vault.open(folder, key=key)
    try:
        net = make_mlp(hidden=change.pop("hidden", 32))
        lr = change.pop("lr", 0.5)
        kwargs = {"optimizer": torch.optim.SGD(net.parameters(), lr=lr), **change}
        with (
            pytest.raises(ConfigurationError, match=named) as refused,
            _train(v, digits, net, resume=checkpoint, **kwargs),
        ):
            pytest.fail("the block must not run")
        assert "cannot be resumed" in str(refused.value)
        assert list(v.ledger.events("data")["status"]) == ["reserved"]  # nothing settled
        assert v.audit.entries(action="dp.train.resume").empty
    finally:
        v.close()


def test_a_checkpoint_belongs_to_the_principal_that_made_it(crashed, digits, make_mlp):
    folder, key, checkpoint = crashed
    v = Vault.open(folder, key=key)
    try:
        with (
            pytest.raises(AccessDenied),
            _train(v, digits, make_mlp(), principal="eve", resume=checkpoint),
        ):
            pytest.fail("the block must not run")
        refused = v.audit.entries(action="dp.train")
        assert "refused" in set(refused["outcome"]) or "denied" in set(refused["outcome"])
    finally:
        v.close()


def test_a_tampered_checkpoint_file_is_refused(crashed, digits, make_mlp):
    folder, key, checkpoint = crashed
    v = Vault.open(folder, key=key)
    try:
        stored = list((_folder(v)).rglob(f"{checkpoint[:29]}*.bin"))
        assert len(stored) == 1
        data = bytearray(stored[0].read_bytes())
        data[100] ^= 1
        stored[0].write_bytes(bytes(data))
        with pytest.raises(IntegrityError), _train(v, digits, make_mlp(), resume=checkpoint):
            pytest.fail("the block must not run")
        assert list(v.ledger.events("data")["status"]) == ["reserved"]
    finally:
        v.close()


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE training_checkpoints SET steps_taken = 0",
        "UPDATE training_runs SET drawn_mark = 0",
        "UPDATE training_runs SET principal = 'eve'",
    ],
)
def test_tampered_checkpoint_rows_are_refused(crashed, digits, make_mlp, edit):
    folder, key, checkpoint = crashed
    with sqlite3.connect(folder / "meta.db") as db:  # someone with the folder, not the key
        db.execute(edit)
    v = Vault.open(folder, key=key)
    try:
        with pytest.raises(IntegrityError), _train(v, digits, make_mlp(), resume=checkpoint):
            pytest.fail("the block must not run")
    finally:
        v.close()


def test_checkpoints_are_sealed_and_audited(make_vault, digits, make_mlp):
    v = make_vault("digits")
    with _train(v, digits, make_mlp()) as run:
        _steps(run, 2)
        first = run.checkpoint()
        _steps(run, 1)
        second = run.checkpoint()
    assert first != second
    details = v.audit.entries(action="dp.train.checkpoint")["details"].tolist()
    assert [(d["checkpoint"], d["steps_taken"]) for d in details] == [(first, 2), (second, 3)]
    assert all(d["request_id"] == run.request_id for d in details)
    stored = list(_folder(v).rglob("ckpt-*.bin"))
    assert len(stored) == 2
    weight = run.model[0].weight.detach().numpy().tobytes()[:64]
    assert all(weight not in p.read_bytes() for p in stored)
    # The checkpoint files are named by rows: never orphans to be cleaned up.
    assert not any("ckpt-" in o.relative for o in v.storage_orphans())


def test_runs_with_canaries_or_holdout_cannot_be_checkpointed(make_vault, digits, make_mlp):
    v = make_vault("digits")
    with _train(v, digits, make_mlp(), holdout=0.1) as run:
        _steps(run, 1)
        with pytest.raises(ConfigurationError, match="holdout"):
            run.checkpoint()
    assert run.charge.status == "committed"


def test_a_bad_resume_value_is_refused_before_anything(make_vault, digits, make_mlp):
    v = make_vault("digits")
    with (
        pytest.raises(ConfigurationError, match="resume="),
        _train(v, digits, make_mlp(), resume=42),
    ):
        pytest.fail("the block must not run")
    with (
        pytest.raises(ConfigurationError, match="ckpt-"),
        _train(v, digits, make_mlp(), resume="not-a-checkpoint"),
    ):
        pytest.fail("the block must not run")
    with (
        pytest.raises(NotFoundError, match="no checkpoint"),
        _train(v, digits, make_mlp(), resume="ckpt-" + "0" * 24 + ":dp.train-0"),
    ):
        pytest.fail("the block must not run")
    assert v.ledger.events("data").empty


def test_the_payload_digest_of_a_checkpoint_is_recorded(make_vault, digits, make_mlp):
    v = make_vault("digits")
    with _train(v, digits, make_mlp()) as run:
        _steps(run, 1)
        checkpoint = run.checkpoint()
    (stored,) = _folder(v).rglob(f"{checkpoint[:29]}*.bin")
    recorded = v.audit.entries(action="dp.train.checkpoint")["details"].iloc[0]["content_hash"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == recorded


def test_the_standard_loop_takes_no_resume(make_vault, digits, make_mlp):
    v = make_vault("digits")
    with pytest.raises(ConfigurationError, match="private_training"):
        v.session("eng", purpose="ml").dp.train(
            "data", **_settings(digits, make_mlp()), resume="ckpt-0"
        )
    assert v.ledger.events("data").empty
