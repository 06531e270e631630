"""Three vaults train one model over Flower's deployment engine under SecAgg+ (real processes).

A SuperLink (``privml federated server``) and three sites (``privml federated site``, each
starting its own SuperNode) run as separate processes on 127.0.0.1; each site's ledger
must then hold exactly its own DP-SGD rounds, checked against dp_accounting.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import dp_accounting
import numpy as np
import pytest

from privml import Vault
from privml.federated import ModelSpec
from privml.federated._deploy import free_port

pytestmark = pytest.mark.slow

ROUNDS = 2
BATCH = 16
SIGMA = 1.0
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


def _site_args(vault: Path, key: Path, port: int, ready: Path) -> list[str]:
    return [
        "federated", "site", str(vault), "--key-file", str(key),
        "--principal", "eng", "--purpose", "ml", "--dataset", "data",
        "--features", ",".join(FEATURES), "--target", "target",
        "--batch-size", str(BATCH), "--max-grad-norm", "1.0",
        "--noise-multiplier", str(SIGMA), *MODEL,
        "--superlink", f"127.0.0.1:{port}", "--ready-file", str(ready),
    ]  # fmt: skip


def _wait(path: Path, process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None or path.exists(), f"{process.args} exited"
        assert time.monotonic() < deadline, f"{path} not written in {timeout} s"
        time.sleep(0.2)


def test_three_sites_train_under_secagg_and_each_ledger_holds_its_own_rounds(
    site_vaults, processes, tmp_path
):
    port = free_port()
    output = tmp_path / "out"
    server = processes(
        "federated", "server", *MODEL, "--sites", "3", "--rounds", str(ROUNDS),
        "--port", str(port), "--output", str(output), "--timeout", "400",
        log=tmp_path / "server.log",
    )  # fmt: skip
    sites = []
    for i, (vault, key) in enumerate(site_vaults):
        ready = tmp_path / f"ready{i}"
        sites.append(processes(*_site_args(vault, key, port, ready), log=tmp_path / f"s{i}.log"))
    assert server.wait(timeout=420) == 0, (tmp_path / "server.log").read_text()[-3000:]
    summary = json.loads((tmp_path / "server.log").read_text().strip().splitlines()[-1])
    assert summary["secagg"] is True
    assert summary["rounds"] == [
        {"round": r, "results": 3, "failures": 0} for r in range(1, ROUNDS + 1)
    ]
    # The global model has the declared shape and moved away from the initial weights.
    with np.load(output / "global.npz") as data:
        final = [data[f"arr_{i}"] for i in range(len(data.files))]
    initial = ModelSpec(inputs=len(FEATURES), outputs=2, hidden=(8,)).initial_weights()
    assert [a.shape for a in final] == [a.shape for a in initial]
    assert max(float(np.abs(a - b).max()) for a, b in zip(final, initial, strict=True)) > 1e-3

    for process in sites:  # a clean stop: each site closes its vault
        process.send_signal(signal.SIGTERM)
    for process in sites:
        assert process.wait(timeout=60) == 0

    for vault_path, key in site_vaults:
        with Vault.open(vault_path, key_file=key) as vault:
            events = vault.ledger.events("data")
            assert list(events["kind"]) == ["dp_sgd"] * ROUNDS
            assert set(events["status"]) == {"committed"}
            rows = {int(p["n"]) for p in events["params"]}
            assert len(rows) == 1
            (rows_n,) = rows
            for params in events["params"]:
                assert params["noise_multiplier"] == SIGMA
                assert params["sample_rate"] == pytest.approx(BATCH / rows_n)
            # Independent accounting with dp_accounting on the rounds' q = B/N, σ and steps:
            # the fixed-sequence figure is the tighter of PLD and RDP for those steps; the
            # admission figure (the privacy filter, valid under adaptive composition) is above.
            steps = int(sum(events["steps"]))
            event = dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(
                    BATCH / rows_n, dp_accounting.GaussianDpEvent(SIGMA)
                ),
                steps,
            )
            pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
            rdp = dp_accounting.rdp.RdpAccountant()
            reference = [a.compose(event).get_epsilon(1e-5) for a in (pld, rdp)]
            status = vault.ledger.status("data")
            assert status.epsilon_fixed_sequence == pytest.approx(min(reference), rel=1e-3)
            assert reference[1] < status.epsilon_spent
            assert vault.audit.verify().ok
