"""Peak memory of DP-SGD with a logical batch in physical chunks against the same batch whole.

Both sides run ``session.dp.private_training`` on the same synthetic table and
MLP with the same logical (Poisson) batch, expected size ``--physical`` × 8:
"chunked" hands each batch out in chunks of at most ``--physical`` rows
(``max_physical_batch_size``, one release per batch), "whole" in one chunk.
Each run is its own subprocess, the sides interleaved over ``--rounds``; a run
reports its peak resident memory (VmHWM) above the high-water mark it had just
before the block (imports, the vault and the data already in memory), for a
few logical steps. Printed: each side's median peak, and the median and spread
(min–max) of the per-round ratio chunked / whole.

No timing ratio is involved: the figure is peak resident memory, each side measured the
same way in a fresh process. Data and weights are seeded; the Poisson batches come from
the operating system's CSPRNG (privml refuses a caller's seed), so a batch's size, and
with it the peak, varies slightly from run to run.

    .venv/bin/python benchmarks/bench_dpsgd_memory.py [--rounds 3] [--mode hooks]
        [--physical 128] [--width 256] [--steps 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

import privml
from privml import Budget, Field, Schema

TIMES_NOTHING = "peak resident memory of a chunked and a whole logical batch"
FEATURES, CLASSES, BOUND, FACTOR = 100, 10, 5.0, 8
SIDES = ("chunked", "whole")
for message in ("Full backward hook is firing", "Secure RNG turned off", "Optimal order"):
    warnings.filterwarnings("ignore", message=message)


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM, which starts afresh at exec), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _vault(folder: Path, rows: int) -> privml.Vault:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, FEATURES)).clip(-BOUND, BOUND)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(FEATURES)])
    frame["y"] = (X @ rng.normal(size=(FEATURES, CLASSES))).argmax(axis=1)
    fields: dict[str, Field] = {
        c: Field.numeric(bounds=(-BOUND, BOUND)) for c in frame.columns if c != "y"
    }
    fields["y"] = Field.categorical(categories=list(range(CLASSES)), target=True)
    vault = privml.Vault.create(folder, key=privml.generate_key())
    vault.add_dataset(
        "synthetic", frame, schema=Schema(fields), budget=Budget(epsilon=1e3, delta=1e-5)
    )
    vault.add_purpose("bench", description="Benchmark", lawful_basis="none (synthetic data)")
    vault.add_principal("bench", roles=["ml"])
    vault.grant(role="ml", dataset="synthetic", purpose="bench", mode="dp_training")
    return vault


def worker(side: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One run of ``side`` in this process: peak memory above the mark before the block."""
    torch.set_num_threads(1)
    logical = args.physical * FACTOR
    vault = _vault(folder, logical * 8)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(FEATURES, args.width),
        nn.ReLU(),
        nn.Linear(args.width, args.width),
        nn.ReLU(),
        nn.Linear(args.width, CLASSES),
    )
    features = [f"x{i}" for i in range(FEATURES)]
    before = _peak_mib()
    chunks = 0
    with vault.session("bench", purpose="bench").dp.private_training(
        "synthetic",
        features=features,
        target="y",
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        batch_size=logical,
        epochs=1,
        max_grad_norm=1.0,
        noise_multiplier=1.0,
        grad_sample_mode=args.mode,
        max_physical_batch_size=args.physical if side == "chunked" else None,
    ) as run:
        for X, y in run.data_loader:
            chunks += 1
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
            if run.steps_taken >= args.steps:
                break
        steps = run.steps_taken
    vault.close()
    return {"peak_mib": _peak_mib() - before, "steps": steps, "chunks": chunks}


def spawn(side: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, __file__, "--worker", side, "--out", str(out)]
        command += ["--mode", args.mode, "--physical", str(args.physical)]
        command += ["--width", str(args.width), "--steps", str(args.steps)]
        subprocess.run(command, check=True)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=["hooks", "ghost", "bk"], default="hooks")
    parser.add_argument("--physical", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 rounds, physical 32, 2 steps")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.physical, args.steps = 2, 32, 2
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            result = worker(args.worker, args, Path(tmp) / "vault")
        Path(args.out).write_text(json.dumps(result))
        return
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    ratios = []
    for r in range(args.rounds):
        order = SIDES if r % 2 == 0 else SIDES[::-1]  # interleaved, alternating who goes first
        got = {side: spawn(side, args) for side in order}
        for side in SIDES:
            runs[side].append(got[side])
        ratios.append(got["chunked"]["peak_mib"] / got["whole"]["peak_mib"])
    logical = args.physical * FACTOR
    print(
        f"DP-SGD peak memory above the start of the block, mode={args.mode}, MLP "
        f"{FEATURES}-{args.width}-{args.width}-{CLASSES}, logical batch {logical} "
        f"(expected), physical {args.physical}, {args.steps} steps, {args.rounds} rounds"
    )
    for side in SIDES:
        peaks = [run["peak_mib"] for run in runs[side]]
        chunks = statistics.median(run["chunks"] for run in runs[side])
        print(f"  {side:8s} median {statistics.median(peaks):8.1f} MiB  (chunks/run {chunks:g})")
    print(
        f"  ratio chunked / whole (quoted): median {statistics.median(ratios):.3f}  "
        f"spread {min(ratios):.3f}-{max(ratios):.3f}, {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()
