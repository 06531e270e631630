"""Federated DP-SGD over Flower's deployment engine: accuracy, time per round, bytes per site.

For each number of sites, Adult's numeric features are split across that many vaults;
a SuperLink (``privml federated server``) and one ``privml federated site`` per vault run
as processes on 127.0.0.1 for R rounds, once under SecAgg+ and once as plain FedAvg,
interleaved (``--repeats`` pairs). Printed per site count:

* accuracy of the last global model on Adult's test split, and of centralized DP-SGD
  (one vault with every training row, ``bk`` mode, the same epochs) with σ calibrated to
  the largest ε any site spent — the "same per-site ε" comparison;
* wall time per round (the median gap between consecutive aggregates, round 2 on), with
  and without SecAgg+, and the median and spread of their per-repeat ratio;
* bytes each site sends per round for its update: the float32 weights (plain FedAvg) and
  the quantized, masked vector (SecAgg+), as serialized by Flower (``.npy`` bytes), key
  shares not counted.

Targets: federated accuracy within 2 points of centralized at ε ≈ 4; SecAgg+ time
≤ 2× plain FedAvg at 10 sites.

    .venv/bin/python benchmarks/bench_federated.py [--sites 3,10] [--rounds 3] [--rows 12000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import privml
from privml.datasets import load_adult
from privml.federated import ModelSpec
from privml.federated._deploy import free_port

FEATURES = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
BOUNDS = {
    "age": (17, 90),
    "education-num": (1, 16),
    "capital-gain": (0, 20000),
    "capital-loss": (0, 4000),
    "hours-per-week": (1, 99),
}
SIGMA, BATCH, CLIP, LR = 1.0, 64, 1.0, 0.5
SPEC = ModelSpec(inputs=len(FEATURES), outputs=2, hidden=(16,))
MODEL = ["--inputs", str(SPEC.inputs), "--outputs", "2", "--hidden", "16"]


def _frame(split: str, rows: int | None) -> object:
    frame = load_adult(split, n_rows=rows)
    frame["target"] = (frame["income"].str.rstrip(".") == ">50K").astype("int64")
    return frame[[*FEATURES, "target"]]


def _schema() -> privml.Schema:
    fields = {c: privml.Field.numeric(bounds=BOUNDS[c]) for c in FEATURES}
    fields["target"] = privml.Field.categorical(categories=[0, 1], target=True)
    return privml.Schema(fields)


def _vault(path: Path, rows: object) -> Path:
    key = privml.generate_key()
    key_file = path.with_suffix(".key")
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    with privml.Vault.create(path, key=key) as vault:
        vault.add_dataset(
            "adult",
            rows.reset_index(drop=True),  # type: ignore[attr-defined]
            schema=_schema(),
            budget=privml.Budget(epsilon=50.0, delta=1e-5),
            on_violation="clip",
        )
        vault.add_purpose("model", description="Income model", lawful_basis="consent")
        vault.add_principal("eng", roles=["ml"])
        vault.grant(role="ml", dataset="adult", purpose="model", mode="dp_training")
    return key_file


def _accuracy(weights: list[np.ndarray], test: object) -> float:
    net = SPEC.build(weights)
    X = np.stack(
        [
            (test[c].clip(*BOUNDS[c]) - BOUNDS[c][0]) / (BOUNDS[c][1] - BOUNDS[c][0])  # type: ignore[index]
            for c in FEATURES
        ],
        axis=1,
    )
    with torch.no_grad():
        predicted = net(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy()
    return float((predicted == test["target"].to_numpy()).mean())  # type: ignore[index]


def _run(vaults: list[tuple[Path, Path]], rounds: int, secagg: bool, work: Path) -> dict:
    port, output = free_port(), work / f"out-{time.time_ns()}"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    command = [sys.executable, "-m", "privml", "federated"]
    started = [
        subprocess.Popen(
            [*command, "server", *MODEL, "--sites", str(len(vaults)), "--rounds", str(rounds),
             "--port", str(port), "--output", str(output), "--round-timeout", "600",
             *([] if secagg else ["--no-secagg"])],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )
    ]  # fmt: skip
    for vault, key in vaults:
        started.append(
            subprocess.Popen(
                [*command, "site", str(vault), "--key-file", str(key), "--principal", "eng",
                 "--purpose", "model", "--dataset", "adult", "--features", ",".join(FEATURES),
                 "--target", "target", "--batch-size", str(BATCH), "--max-grad-norm", str(CLIP),
                 "--noise-multiplier", str(SIGMA), "--lr", str(LR), *MODEL,
                 "--superlink", f"127.0.0.1:{port}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )  # fmt: skip
    try:
        out, _ = started[0].communicate(timeout=3600)
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            process.wait()
    notes = [json.loads(line) for line in (output / "rounds.jsonl").read_text().splitlines()]
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(notes)]
    with np.load(output / "global.npz") as data:
        weights = [data[f"arr_{i}"] for i in range(len(data.files))]
    return {"per_round": statistics.median(gaps), "weights": weights, "summary": out.decode()}


def _bytes_per_round() -> tuple[int, int]:
    from flwr.common import ndarray_to_bytes
    from flwr.common.secure_aggregation.quantization import quantize

    weights = SPEC.initial_weights()
    plain = sum(len(ndarray_to_bytes(w)) for w in weights)
    masked = sum(len(ndarray_to_bytes(q)) for q in quantize(weights, 8.0, 1 << 22))
    return plain, masked


def _spent(vaults: list[tuple[Path, Path]]) -> float:
    spent = []
    for vault, key in vaults:
        with privml.Vault.open(vault, key_file=key) as v:
            spent.append(v.budget("adult").epsilon_spent)
    return max(spent)


def _centralized(train: object, work: Path, epsilon: float, epochs: int, test: object) -> float:
    key_file = _vault(work / "pooled.vault", train)
    with privml.Vault.open(work / "pooled.vault", key_file=key_file) as vault:
        net = SPEC.build()
        with vault.session("eng", purpose="model").dp.private_training(
            "adult", features=FEATURES, target="target", module=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=LR), batch_size=BATCH,
            epochs=epochs, max_grad_norm=CLIP, target_epsilon=epsilon, grad_sample_mode="bk",
        ) as run:  # fmt: skip
            for _ in range(run.epochs):
                for X, y in run.data_loader:
                    run.optimizer.zero_grad()
                    run.criterion(run.model(X), y).backward()
                    run.optimizer.step()
        return _accuracy([p.detach().numpy() for p in run.model.parameters()], test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="3,10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    train, test = _frame("train", args.rows), _frame("test", None)
    plain_bytes, masked_bytes = _bytes_per_round()
    print(f"update bytes per site per round: plain {plain_bytes}, SecAgg+ masked {masked_bytes}")
    for k in (int(s) for s in args.sites.split(",")):
        work = Path(tempfile.mkdtemp(prefix=f"privml-bench-fed-{k}-"))
        ratios, times = [], {"secagg": [], "plain": []}
        accuracy = spent = 0.0
        for _ in range(args.repeats):
            for secagg in (True, False):  # interleaved: fresh vaults for each run
                vaults = []
                for i in range(k):
                    path = work / f"r{time.time_ns()}-site{i}.vault"
                    vaults.append((path, _vault(path, train.iloc[i::k])))  # type: ignore[attr-defined]
                result = _run(vaults, args.rounds, secagg, work)
                times["secagg" if secagg else "plain"].append(result["per_round"])
                if secagg:
                    accuracy, spent = _accuracy(result["weights"], test), _spent(vaults)
            ratios.append(times["secagg"][-1] / times["plain"][-1])
        central = _centralized(train, work, spent, args.rounds, test)
        low, high = min(ratios), max(ratios)
        secagg_s, plain_s = statistics.median(times["secagg"]), statistics.median(times["plain"])
        print(
            f"{k} sites, {args.rounds} rounds: accuracy federated {accuracy:.3f} vs centralized "
            f"{central:.3f} at ε={spent:.2f} (per site, largest); time per round SecAgg+ "
            f"{secagg_s:.1f} s, plain {plain_s:.1f} s, ratio median "
            f"{statistics.median(ratios):.2f}x (min {low:.2f}, max {high:.2f})"
        )


if __name__ == "__main__":
    main()
