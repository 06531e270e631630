"""Federated DP-SGD over Flower's deployment engine: accuracy, time per round, bytes per site.

For each number of sites, Adult's numeric features are split across that many vaults
(rows dealt round-robin); a SuperLink (``privml federated server``) and one ``privml
federated site`` per vault run as processes on 127.0.0.1 for R rounds, once under SecAgg+
and once as plain FedAvg, in interleaved rounds (``_rounds.interleave``, ``--repeats``
each, no warm-up: every run starts its own processes). Each site reserves its whole run
at ε = ``--epsilon`` (σ fitted by its ledger, ``--target-epsilon``). Printed per site count:

* accuracy of the last global model (SecAgg+ run) on Adult's test split, and of
  centralized DP-SGD (one vault with every training row, ``bk`` mode, the same epochs,
  batch size and learning rate) at the same ε: the "same per-site ε" comparison;
* wall time per round (the median gap between consecutive aggregates), with and without
  SecAgg+, and the median and spread of their per-repeat ratio;
* bytes each site sends per round for its update: the float32 weights (plain FedAvg) and
  the quantized, masked vector (SecAgg+), as serialized by Flower (``.npy`` bytes), key
  shares not counted.

Targets: federated accuracy within 2 points of centralized at ε = 4; SecAgg+ time
≤ 2× plain FedAvg at 10 sites.

    .venv/bin/python benchmarks/bench_federated.py [--sites 3,10] [--rounds 5] [--rows 12000]
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
from _rounds import interleave, pin_threads

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
CLIP = 1.0
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
            (test[c].clip(*BOUNDS[c]) - BOUNDS[c][0])  # type: ignore[index]
            / (BOUNDS[c][1] - BOUNDS[c][0])
            for c in FEATURES
        ],
        axis=1,
    )
    with torch.no_grad():
        predicted = net(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy()
    return float((predicted == test["target"].to_numpy()).mean())  # type: ignore[index]


def _run(
    vaults: list[tuple[Path, Path]], args: argparse.Namespace, secagg: bool, work: Path
) -> dict:
    rounds = args.rounds
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
                 "--target", "target", "--batch-size", str(args.batch), "--max-grad-norm",
                 str(CLIP), "--target-epsilon", str(args.epsilon), "--lr", str(args.lr),
                 "--local-epochs", str(args.local_epochs), *MODEL,
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


def _site_epsilon(vaults: list[tuple[Path, Path]]) -> float:
    """The largest ε any site's one DP-SGD run cost (the ledger's figure for that run alone)."""
    spent = []
    for vault, key in vaults:
        with privml.Vault.open(vault, key_file=key) as v:
            status = v.ledger.status("adult")
            assert status.committed == 1  # the site's one run: its ε alone is the naive sum
            spent.append(float(status.epsilon_naive))
    return max(spent)


def _centralized(
    train: object, work: Path, args: argparse.Namespace, test: object
) -> tuple[float, float]:
    """Accuracy and ε of DP-SGD on the pooled rows: the sites' ε, epochs, batch size, lr."""
    key_file = _vault(work / "pooled.vault", train)
    with privml.Vault.open(work / "pooled.vault", key_file=key_file) as vault:
        net = SPEC.build()
        with vault.session("eng", purpose="model").dp.private_training(
            "adult", features=FEATURES, target="target", module=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=args.lr), batch_size=args.batch,
            epochs=args.rounds * args.local_epochs, max_grad_norm=CLIP,
            target_epsilon=args.epsilon, grad_sample_mode="bk",
        ) as run:  # fmt: skip
            for _ in range(run.epochs):
                for X, y in run.data_loader:
                    run.optimizer.zero_grad()
                    run.criterion(run.model(X), y).backward()
                    run.optimizer.step()
        weights = [p.detach().numpy() for p in run.model.parameters()]
        return _accuracy(weights, test), float(run.epsilon or 0.0)


def main() -> None:
    pin_threads()  # one math thread here and in every process started (they inherit it)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="3,10")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    train, test = _frame("train", args.rows), _frame("test", None)
    plain_bytes, masked_bytes = _bytes_per_round()
    print(f"update bytes per site per round: plain {plain_bytes}, SecAgg+ masked {masked_bytes}")
    print(
        f"settings: {args.rounds} rounds x {args.local_epochs} local epochs, B={args.batch}, "
        f"lr={args.lr}, C={CLIP}, ε={args.epsilon} per site (δ=1e-5), {args.rows} rows"
    )
    for k in (int(s) for s in args.sites.split(",")):
        work = Path(tempfile.mkdtemp(prefix=f"privml-bench-fed-{k}-"))
        last: dict[str, object] = {}

        def variant(
            secagg: bool, k: int = k, work: Path = work, last: dict[str, object] = last
        ) -> float:
            vaults = []  # fresh vaults for every run: each site's budget starts full
            for i in range(k):
                path = work / f"r{time.time_ns()}-site{i}.vault"
                vaults.append((path, _vault(path, train.iloc[i::k])))  # type: ignore[attr-defined]
            result = _run(vaults, args, secagg, work)
            if secagg:
                last["weights"], last["vaults"] = result["weights"], vaults
            return float(result["per_round"])

        times = interleave(
            {"secagg": lambda: variant(True), "plain": lambda: variant(False)},
            rounds=args.repeats,
            warmup=0,
        )
        accuracy = _accuracy(last["weights"], test)  # type: ignore[arg-type]
        site_epsilon = _site_epsilon(last["vaults"])  # type: ignore[arg-type]
        central, central_epsilon = _centralized(train, work, args, test)
        print(
            f"{k} sites: accuracy federated {accuracy:.3f} (largest site ε {site_epsilon:.2f}) "
            f"vs centralized {central:.3f} (ε {central_epsilon:.2f}); time per round SecAgg+ "
            f"{times.median('secagg'):.1f} s, plain {times.median('plain'):.1f} s; SecAgg+/plain "
            f"{times.ratio('secagg', 'plain')}"
        )


if __name__ == "__main__":
    main()
