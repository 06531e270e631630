"""The cost of checkpointing a DP-SGD run: durable drawn marks per step, and one checkpoint.

Two privml "ghost" runs of one epoch of an MLP 100-256-256-10 on synthetic rows,
batch size 256 (expected), on one CPU thread, in interleaved rounds: one that never
checkpoints, and one that checkpoints after its first step, so every later batch is
drawn only once the run's durable mark covers it (one metadata transaction per 16
batches). Printed: the per-round ratio of time per step (checkpointed / plain), its
median and spread, and the time of one ``run.checkpoint()`` in steps.

    .venv/bin/python benchmarks/bench_checkpoint.py [--rounds 5] [--rows 20000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import privml
from privml import Budget, Field, Schema

FEATURES, CLASSES, BATCH, BOUND = 100, 10, 256, 5.0
for message in ("Full backward hook is firing", "Secure RNG turned off", "Optimal order"):
    warnings.filterwarnings("ignore", message=message)


def vault_with(rows: int, folder: Path) -> privml.Vault:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, FEATURES)).clip(-BOUND, BOUND)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(FEATURES)])
    frame["y"] = (X @ rng.normal(size=(FEATURES, CLASSES))).argmax(axis=1)
    fields = {c: Field.numeric(bounds=(-BOUND, BOUND)) for c in frame.columns if c != "y"}
    fields["y"] = Field.categorical(categories=list(range(CLASSES)), target=True)
    vault = privml.Vault.create(folder, key=privml.generate_key())
    vault.add_dataset("d", frame, schema=Schema(fields), budget=Budget(epsilon=1e6, delta=1e-5))
    vault.add_purpose("b", description="benchmark", lawful_basis="n/a")
    vault.add_principal("eng", roles=["ml"])
    vault.grant(role="ml", dataset="d", purpose="b", mode="dp_training")
    return vault


def one_run(vault: privml.Vault, *, checkpoint: bool) -> tuple[float, float]:
    """(seconds per step after the first, seconds of the checkpoint or 0)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, CLASSES),
    )  # fmt: skip
    features = [f"x{i}" for i in range(FEATURES)]
    saving = 0.0
    with vault.session("eng", purpose="b").dp.private_training(
        "d", features=features, target="y", module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        batch_size=BATCH, epochs=1, max_grad_norm=1.0, noise_multiplier=1.0,
    ) as run:  # fmt: skip
        for i, (X, y) in enumerate(run.data_loader):
            if i == 1:
                start = time.perf_counter()
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
            if i == 0 and checkpoint:
                began = time.perf_counter()
                run.checkpoint()
                saving = time.perf_counter() - began
        steps = run.steps_taken - 1
        elapsed = time.perf_counter() - start
    return elapsed / steps, saving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        vault = vault_with(args.rows, Path(tmp) / "v")
        one_run(vault, checkpoint=True)  # warm-up
        ratios, saves = [], []
        for r in range(args.rounds):
            order = [False, True] if r % 2 == 0 else [True, False]
            times = {flag: one_run(vault, checkpoint=flag) for flag in order}
            plain, (marked, saving) = times[False][0], times[True]
            ratios.append(marked / plain)
            saves.append(saving / plain)
            print(f"round {r + 1}: step {plain * 1e3:.1f} ms plain, ratio {ratios[-1]:.3f}")
        vault.close()
    spread = (min(ratios), max(ratios))
    print(
        f"checkpointed / plain time per step: median {statistics.median(ratios):.3f}x "
        f"(range {spread[0]:.3f}-{spread[1]:.3f}, {args.rounds} rounds, {args.rows} rows)"
    )
    print(f"one run.checkpoint(): median {statistics.median(saves):.1f} steps' time")


if __name__ == "__main__":
    main()
