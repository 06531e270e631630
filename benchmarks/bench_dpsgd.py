"""DP-SGD through privml against non-private torch and Opacus called directly, on one CPU thread.

One epoch of an MLP 100-256-256-10 on 60,000 x 100 synthetic inputs, batch
size 256 (expected), for: non-private torch, raw Opacus "hooks", raw Opacus
"ghost" (``PrivacyEngine.make_private``), privml "ghost" and privml "bk"
(``session.dp.private_training``). Rounds are interleaved and each figure is
the median over rounds; ratios compare times per optimizer step (Opacus
samples with q = 1/len(loader), privml with q = B/N, so their step counts
differ by one or so). privml's "loop" time is the training loop inside the
``with`` block (what the raw Opacus time measures, plus Opacus's own
``make_private``); its "total" adds reading the data from the vault, the
reservation, settling and registering the model. Targets: privml ghost <=
1.05x raw Opacus ghost, privml bk <= 1.5x non-private.

Then peak memory above the loaded data, for width 1024, each variant in its
own process (a few steps; RSS sampled every 2 ms).

    .venv/bin/python benchmarks/bench_dpsgd.py [--rounds 3] [--rows 60000] [--memory-steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import privml
from privml import Budget, Field, Schema

FEATURES, CLASSES, BATCH, BOUND = 100, 10, 256, 5.0
SIGMA, CLIP = 1.0, 1.0
VARIANTS = ["non-private", "opacus hooks", "opacus ghost", "privml ghost", "privml bk"]
# torch's first-layer hook note and Opacus's RNG notes: expected here, not the benchmark's subject.
for message in ("Full backward hook is firing", "Secure RNG turned off", "Optimal order"):
    warnings.filterwarnings("ignore", message=message)


def data(rows: int) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """Learnable synthetic classes; the frame for the vault, tensors scaled as privml scales."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, FEATURES)).clip(-BOUND, BOUND)
    y = (X @ rng.normal(size=(FEATURES, CLASSES))).argmax(axis=1)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(FEATURES)])
    frame["y"] = y
    scaled = torch.as_tensor((X + BOUND) / (2 * BOUND), dtype=torch.float32)
    return frame, scaled, torch.as_tensor(y)


def mlp(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, CLASSES),
    )


def vault_with(frame: pd.DataFrame, folder: Path) -> privml.Vault:
    fields = {c: Field.numeric(bounds=(-BOUND, BOUND)) for c in frame.columns if c != "y"}
    fields["y"] = Field.categorical(categories=list(range(CLASSES)), target=True)
    vault = privml.Vault.create(folder, key=privml.generate_key())
    vault.add_dataset(
        "synthetic", frame, schema=Schema(fields), budget=Budget(epsilon=1e3, delta=1e-5)
    )
    vault.add_purpose("bench", description="Benchmark", lawful_basis="none (synthetic data)")
    vault.add_principal("bench", roles=["ml"])
    vault.grant(role="ml", dataset="synthetic", purpose="bench", mode="dp_training")
    return vault


def loop(model: Any, optimizer: Any, loader: Any, criterion: Any, limit: int | None) -> int:
    steps = 0
    for X, y in loader:
        optimizer.zero_grad()
        criterion(model(X), y).backward()
        optimizer.step()
        steps += 1
        if limit is not None and steps >= limit:
            break
    return steps


def run_variant(
    name: str,
    width: int,
    X: torch.Tensor,
    y: torch.Tensor,
    vault: privml.Vault | None,
    limit: int | None = None,
    before_loop: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Time one epoch (or ``limit`` steps) of ``name``; seconds for the loop and in total."""
    net = mlp(width)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    if name == "non-private":
        loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
        if before_loop:
            before_loop()
        t0 = time.perf_counter()
        steps = loop(net, optimizer, loader, criterion, limit)
        loop_s = time.perf_counter() - t0
    elif name.startswith("opacus"):
        from opacus import PrivacyEngine

        mode = name.split()[1]
        loader = DataLoader(TensorDataset(X, y), batch_size=BATCH)
        engine = PrivacyEngine(accountant="rdp")
        parts = engine.make_private(
            module=net,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=SIGMA,
            max_grad_norm=CLIP,
            poisson_sampling=True,
            grad_sample_mode=mode,
            criterion=criterion,
        )
        if mode == "ghost":  # ghost returns the criterion too, and it must be used
            model, dp_optimizer, dp_criterion, dp_loader = parts
        else:
            model, dp_optimizer, dp_loader = parts
            dp_criterion = criterion
        if before_loop:
            before_loop()
        t0 = time.perf_counter()
        steps = loop(model, dp_optimizer, dp_loader, dp_criterion, limit)
        loop_s = time.perf_counter() - t0
    else:
        assert vault is not None
        dp = vault.session("bench", purpose="bench").dp
        with dp.private_training(
            "synthetic",
            features=[f"x{i}" for i in range(FEATURES)],
            target="y",
            module=net,
            optimizer=optimizer,
            batch_size=BATCH,
            epochs=1,
            max_grad_norm=CLIP,
            noise_multiplier=SIGMA,
            grad_sample_mode=name.split()[1],
            name="bench",
        ) as run:
            if before_loop:
                before_loop()
            t0 = time.perf_counter()
            steps = loop(run.model, run.optimizer, run.data_loader, run.criterion, limit)
            loop_s = time.perf_counter() - t0
    return {"loop": loop_s, "total": time.perf_counter() - start, "steps": steps}


def timings(rounds: int, rows: int, width: int) -> None:
    frame, X, y = data(rows)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp, vault_with(frame, Path(tmp) / "v") as vault:
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]  # interleaved, alternating order
            for name in order:
                results[name].append(run_variant(name, width, X, y, vault))
                last = results[name][-1]
                print(f"  round {r + 1}: {name:<13} {last['loop']:7.2f} s", flush=True)
        spent = vault.budget("synthetic").epsilon_spent
    med = {
        name: {k: statistics.median(x[k] for x in runs) for k in ("loop", "total", "steps")}
        for name, runs in results.items()
    }
    per_step = {name: m["loop"] / m["steps"] for name, m in med.items()}
    base = per_step["non-private"]
    print(
        f"\nMLP {FEATURES}-{width}-{width}-{CLASSES}, {rows} rows, batch {BATCH}, one epoch, "
        f"torch {torch.__version__}, 1 thread; median of {rounds} interleaved rounds"
    )
    print(
        f"{'variant':<14}{'loop s':>9}{'total s':>9}{'steps':>7}{'ms/step':>9}{'x non-private':>15}"
    )
    for name in VARIANTS:
        m = med[name]
        print(
            f"{name:<14}{m['loop']:>9.2f}{m['total']:>9.2f}{m['steps']:>7.0f}"
            f"{1e3 * per_step[name]:>9.2f}{per_step[name] / base:>14.2f}x"
        )
    ghost = per_step["privml ghost"] / per_step["opacus ghost"]
    total = (med["privml ghost"]["total"] / med["privml ghost"]["steps"]) / per_step["opacus ghost"]
    print(f"\nprivml ghost / raw Opacus ghost, per step:    {ghost:.3f}x  (target <= 1.05x)")
    print(f"  including vault read, reserve, settle, register: {total:.3f}x")
    bk = per_step["privml bk"] / base
    print(f"privml bk / non-private, per step:            {bk:.3f}x  (target <= 1.5x)")
    versus_ghost = per_step["privml bk"] / per_step["opacus ghost"]
    print(f"privml bk / raw Opacus ghost, per step:       {versus_ghost:.3f}x")
    print(f"(the vault's ledger charged ε={spent:.3f} at δ=1e-5 for the {2 * rounds} privml runs)")


class _PeakRSS:
    """Samples this process's resident memory every 2 ms; ``peak - baseline`` in MiB."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.baseline = self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def start(self) -> None:
        self.baseline = self.peak = self.now()
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.002)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())
        return (self.peak - self.baseline) / 2**20


def memory_probe(name: str, rows: int, width: int, steps: int) -> None:
    frame, X, y = data(rows)
    probe = _PeakRSS()
    with tempfile.TemporaryDirectory() as tmp:
        vault = vault_with(frame, Path(tmp) / "v") if name.startswith("privml") else None
        result = run_variant(name, width, X, y, vault, limit=steps, before_loop=probe.start)
        if vault is not None:
            vault.close()
    print(json.dumps({"variant": name, "peak_mib": probe.stop(), "steps": result["steps"]}))


def memory(rows: int, width: int, steps: int) -> None:
    print(f"\npeak memory above the loaded data, width {width} ({steps} steps, own process each)")
    for name in VARIANTS:
        out = subprocess.run(
            [
                *(sys.executable, __file__, "--probe", name),
                *("--rows", str(rows), "--width", str(width), "--memory-steps", str(steps)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        figure = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {name:<14}{figure['peak_mib']:>8.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--memory-width", type=int, default=1024)
    parser.add_argument("--memory-steps", type=int, default=20)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.probe:
        memory_probe(args.probe, args.rows, args.width, args.memory_steps)
        return
    timings(args.rounds, args.rows, args.width)
    memory(args.rows, args.memory_width, args.memory_steps)


if __name__ == "__main__":
    main()
