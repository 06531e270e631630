"""Four vaults train one model over Flower's deployment engine under SecAgg+ (real processes).

A SuperLink (``privml federated server``) and four sites (``privml federated site``, each
starting its own SuperNode) run as separate processes on 127.0.0.1, for two rounds:

* every site reserves the planned rounds as one DP-SGD run before round 1; sites 0 and 1
  take both rounds, and each ledger holds exactly that one run, settled on its steps and
  checked against an independent dp_accounting computation;
* site 2's budget covers one round: the two-round reservation is refused (nothing
  charged, the refusal audited), it reserves one round, and refuses round 2, which the
  server sees as a dropout;
* site 3's process is killed (SIGKILL) once round 1 is done, as round 2 begins: its
  SuperNode's ClientApps can no longer reach it, round 2 completes with the sites left
  (SecAgg+ threshold 2). Its run stays reserved until ``privml federated site`` starts
  again at that site: the restart settles it on the batches the killed process drew
  (round 1's and at most a lease more), from its checkpoint and durable drawn mark.
  (The fixture then ends the site's process group, its SuperNode with it.)
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import dp_accounting
import numpy as np
import pytest

from privml import Vault
from privml.federated import ModelSpec
from privml.federated._deploy import free_port
from privml.vault._checkpoints import LEASE

pytest.importorskip("flwr")  # the `federated` extra
pytestmark = pytest.mark.slow

ROUNDS = 2
BATCH = 16
SIGMA = 1.0
DELTA = 1e-5
FEATURES = [
    "mean_radius",
    "mean_texture",
    "mean_perimeter",
    "mean_area",
    "mean_smoothness",
    "mean_compactness",
    "mean_concavity",
    "mean_concave_points",
]
MODEL = ["--inputs", str(len(FEATURES)), "--outputs", "2", "--hidden", "8"]


def _site_args(vault: Path, key: Path, port: int) -> list[str]:
    return [
        "federated", "site", str(vault), "--key-file", str(key),
        "--principal", "eng", "--purpose", "ml", "--dataset", "data",
        "--features", ",".join(FEATURES), "--target", "target",
        "--batch-size", str(BATCH), "--max-grad-norm", "1.0",
        "--noise-multiplier", str(SIGMA), *MODEL, "--superlink", f"127.0.0.1:{port}",
    ]  # fmt: skip


def _wait_for_round(output: Path, round: int, server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    rounds = output / "rounds.jsonl"
    while not (rounds.exists() and f'"round": {round},' in rounds.read_text()):
        assert server.poll() is None, "the server exited before the round finished"
        assert time.monotonic() < deadline, f"round {round} not finished in {timeout} s"
        time.sleep(0.1)


def _reference_epsilons(q: float, steps: int) -> list[float]:
    """dp_accounting's PLD and RDP ε for ``steps`` Poisson-sampled Gaussian steps."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(SIGMA)), steps
    )
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    rdp = dp_accounting.rdp.RdpAccountant()
    return [a.compose(event).get_epsilon(DELTA) for a in (pld, rdp)]


def test_sites_train_under_secagg_each_ledger_holds_its_own_rounds_and_dropouts_survive(
    site_vaults, processes, tmp_path
):
    port = free_port()
    output = tmp_path / "out"
    server = processes(
        "federated", "server", *MODEL, "--sites", str(len(site_vaults)),
        "--rounds", str(ROUNDS), "--threshold", "2", "--round-timeout", "90",
        "--port", str(port), "--output", str(output), "--timeout", "500",
        log=tmp_path / "server.log",
    )  # fmt: skip
    sites = [
        processes(*_site_args(vault, key, port), log=tmp_path / f"s{i}.log")
        for i, (vault, key) in enumerate(site_vaults)
    ]
    _wait_for_round(output, 1, server, timeout=400)
    os.kill(sites[3].pid, signal.SIGKILL)  # site 3's process (the key holder) dies at once
    sites[3].wait()
    vault3, key3 = site_vaults[3]
    with Vault.open(vault3, key_file=key3) as vault:  # killed: its run is still reserved
        assert list(vault.ledger.events("data")["status"]) == ["reserved"]
    # Site 3 starts again (during round 2, on a SuperLink port of its own: it does not join
    # this run) and first settles the run its killed process left open.
    ready = tmp_path / "ready3"
    again = processes(
        *_site_args(vault3, key3, free_port()), "--ready-file", str(ready),
        log=tmp_path / "s3-again.log",
    )  # fmt: skip
    assert server.wait(timeout=400) == 0, (tmp_path / "server.log").read_text()[-3000:]
    summary = json.loads((tmp_path / "server.log").read_text().strip().splitlines()[-1])
    assert summary["secagg"] is True
    first, second = summary["rounds"]
    assert (first["round"], first["results"], first["failures"]) == (1, 4, 0)
    # Site 2 refused round 2 and site 3 was killed: the round completed with sites 0 and 1.
    assert second["round"] == 2 and second["results"] == 2 and second["failures"] >= 1
    # The global model has the declared shape and moved away from the initial weights.
    with np.load(output / "global.npz") as data:
        final = [data[f"arr_{i}"] for i in range(len(data.files))]
    initial = ModelSpec(inputs=len(FEATURES), outputs=2, hidden=(8,)).initial_weights()
    assert [a.shape for a in final] == [a.shape for a in initial]
    assert max(float(np.abs(a - b).max()) for a, b in zip(final, initial, strict=True)) > 1e-3

    deadline = time.monotonic() + 120
    while not ready.exists():  # written once the old run is settled and the site serves
        assert again.poll() is None, (tmp_path / "s3-again.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for process in [*sites[:3], again]:  # a clean stop: each site settles, closes its vault
        process.send_signal(signal.SIGTERM)
    for process in [*sites[:3], again]:
        assert process.wait(timeout=60) == 0

    rounds_taken = {0: ROUNDS, 1: ROUNDS, 2: 1, 3: 1}
    for i, (vault_path, key) in enumerate(site_vaults):
        with Vault.open(vault_path, key_file=key) as vault:
            events = vault.ledger.events("data")
            status = vault.ledger.status("data")
            # One reservation for the whole run, settled: one dp_sgd event per site.
            assert list(events["kind"]) == ["dp_sgd"], i
            assert list(events["status"]) == ["committed"], i
            assert status.epsilon_spent <= status.epsilon_total
            (params,) = events["params"]
            rows = int(params["n"])
            per_round = int(1 / (BATCH / rows))  # steps per epoch (as Opacus), one epoch a round
            steps = int(events["steps"].iloc[0])
            assert params["noise_multiplier"] == SIGMA
            assert params["sample_rate"] == pytest.approx(BATCH / rows)
            if i == 3:  # round 1, and whatever round 2 drew before the kill (within a lease)
                assert per_round <= steps <= per_round + LEASE, steps
            else:
                assert steps == per_round * rounds_taken[i], (i, steps)
            # The fixed-sequence figure is the tighter of dp_accounting's PLD and RDP for the
            # steps settled; the admission figure (the privacy filter, valid under adaptive
            # composition) lies above RDP.
            pld, rdp = _reference_epsilons(BATCH / rows, steps)
            assert status.epsilon_fixed_sequence == pytest.approx(min(pld, rdp), rel=1e-3)
            assert rdp <= status.epsilon_spent * (1 + 1e-9)
            assert vault.audit.verify().ok
            log = vault.audit.entries(action="ledger.refuse")
            assert len(log) == (1 if i == 2 else 0), i  # the refused two-round reservation
            loads = vault.audit.entries(action="dp.train.load")
            assert list(loads["outcome"]) == ["allowed"] * rounds_taken[i], i
