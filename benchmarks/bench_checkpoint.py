"""The cost of checkpointing a DP-SGD run: durable drawn marks per step, and one checkpoint.

Two privml "ghost" runs of one epoch of an MLP 100-256-256-10 on synthetic rows,
batch size 256 (expected), on one CPU thread, in interleaved rounds: one that never
checkpoints, and one that checkpoints after its first step, so every later batch is
drawn only once the run's durable mark covers it (one metadata transaction per 16
batches). Every round runs each once, in a rotated order, after one warm-up round
(``_rounds.interleave``); the figure quoted is the median of the per-round ratio of
time per step (checkpointed / plain) with its quartiles, extremes and rounds, and
beside it the time of one ``run.checkpoint()`` in steps of the same round.

    .venv/bin/python benchmarks/bench_checkpoint.py [--rounds 5] [--rows 20000] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import interleave, load_average, pin_threads

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import privml  # noqa: E402
from privml import Budget, Field, Schema  # noqa: E402

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
    parser.add_argument("--quick", action="store_true", help="5,000 rows, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds = 5_000, 3
    saves: list[float] = []  # checkpoint seconds, in rounds
    steps: list[float] = []  # the checkpointed run's seconds per step, in rounds

    with tempfile.TemporaryDirectory() as tmp:
        vault = vault_with(args.rows, Path(tmp) / "v")

        def plain() -> float:
            return one_run(vault, checkpoint=False)[0]

        def marked() -> float:
            per_step, saving = one_run(vault, checkpoint=True)
            saves.append(saving)
            steps.append(per_step)
            return per_step

        times = interleave({"plain": plain, "checkpointed": marked}, rounds=args.rounds)
        vault.close()
    del saves[0], steps[0]  # the warm-up round's
    in_steps = [save / step for save, step in zip(saves, steps, strict=True)]
    print(f"MLP {FEATURES}-256-256-{CLASSES}, ghost, batch {BATCH}, {args.rows:,} rows, 1 thread")
    print(f"load average {load_average()}")
    print(f"plain: median {times.median('plain') * 1e3:.1f} ms per step")
    print(f"one run.checkpoint(): median {statistics.median(in_steps):.1f} steps' time")
    print(f"checkpointed / plain time per step (quoted): {times.ratio('checkpointed', 'plain')}")


if __name__ == "__main__":
    main()
