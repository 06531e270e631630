"""DP-SGD on CNN, transformer and LSTM networks: privml against Opacus called directly, one thread.

The digits (1,792 of the 1,797 rows, 64 pixels each), batch size 64 (expected), for three small
networks: a CNN on the 8x8 images (Conv2d + GroupNorm, Conv2d, LayerNorm,
Linear), a transformer encoder (2 of torch's ``nn.TransformerEncoderLayer``,
their attention made Opacus's ``DPMultiheadAttention`` by ``ModuleValidator.fix``
before any side sees it) and an LSTM (Opacus's ``DPLSTM``) over 8 steps of 8
pixels. Sides: non-private torch, Opacus "hooks" and "ghost" through Opacus's
own ``PrivacyEngine.make_private`` (Poisson sampling), privml "ghost" through
``session.dp.private_training`` (and whether privml's "bk" mode accepts each network,
or the layers it cannot clip, which the script shows; it is not timed here).

Every side is set up first (same weights, same data; privml's block stays
open), then each round runs ``--steps`` optimizer steps of every side in turn
(``_rounds.interleave``: the order rotated between rounds, a first round warms up
and is not counted). Times are the training thread's CPU time (``time.thread_time``;
torch runs on one thread), which a machine shared with other work disturbs far less
than wall time (printed too). The ratios are per round (privml's time per step
over Opacus ghost's, and over non-private's); the script prints their median,
quartiles, extremes and rounds, privml ghost / Opacus ghost last. Then peak memory,
no timing: each side in its own process, measured the same way, VmHWM (reset through
``/proc/self/clear_refs`` just before the loop) minus VmRSS at that point.

    .venv/bin/python benchmarks/bench_dpsgd_layers.py [--rounds 5] [--steps 20] [--models cnn,...]
        [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import Timings, interleave, load_average, pin_threads

pin_threads()

import torch  # noqa: E402
from opacus.layers import DPLSTM  # noqa: E402
from opacus.validators import ModuleValidator  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import privml  # noqa: E402
from privml import Budget, ConfigurationError, Field, Schema  # noqa: E402

BATCH, SIGMA, CLIP, ROWS = 64, 1.0, 1.0, 1792
SIDES = ["non-private", "opacus hooks", "opacus ghost", "privml ghost"]
for message in (
    "Full backward hook is firing",
    "Secure RNG turned off",
    "Optimal order",
    "enable_nested_tensor",
):
    warnings.filterwarnings("ignore", message=message)


class CNN(nn.Module):
    """Conv2d + GroupNorm, Conv2d (stride 2), LayerNorm, Linear on ``side`` x ``side`` images.

    The 8x8 digits as they are (``side=8``), or resized to MNIST's 28x28 (bilinear, in the
    forward pass, the same on every side).
    """

    def __init__(self, side: int = 8) -> None:
        super().__init__()
        resize: list[nn.Module] = [] if side == 8 else [nn.Upsample((side, side), mode="bilinear")]
        half = (side + 1) // 2
        self.net = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            *resize,
            nn.Conv2d(1, 16, 3, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.LayerNorm(32 * half * half),
            nn.Linear(32 * half * half, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class Transformer(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.inputs = nn.Linear(8, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder(self.inputs(x.reshape(-1, 8, 8))).mean(1))
        return out


class LSTM(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.rnn = DPLSTM(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.reshape(-1, 8, 8))
        result: torch.Tensor = self.head(out[:, -1])
        return result


MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": CNN, "transformer": Transformer, "lstm": LSTM}


def network(name: str) -> nn.Module:
    """The same weights on every side: seeded, and already fixed for Opacus."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed: nn.Module = ModuleValidator.fix(MODELS[name]())
    return fixed


def digits() -> tuple[Any, list[str], torch.Tensor, torch.Tensor]:
    """The first 1,792 = 28 x 64 rows: Opacus's q = 1/len(loader) and privml's B/N then agree."""
    frame = load_digits(as_frame=True).frame.iloc[:ROWS]
    features = [c for c in frame.columns if c != "target"]
    X = torch.tensor(frame[features].to_numpy() / 16.0, dtype=torch.float32)
    return frame, features, X, torch.tensor(frame["target"].to_numpy())


def vault_with(frame: Any, features: list[str], folder: Path) -> privml.Vault:
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in features}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    vault = privml.Vault.create(folder, key=privml.generate_key())
    budget = Budget(epsilon=1e6, delta=1e-5)
    vault.add_dataset("digits", frame, schema=Schema(fields), budget=budget)
    vault.add_purpose("bench", description="Benchmark", lawful_basis="none (public data)")
    vault.add_principal("bench", roles=["ml"])
    vault.grant(role="ml", dataset="digits", purpose="bench", mode="dp_training")
    return vault


class Side:
    """One side, set up once (outside the timings): ``take(steps)`` runs its training loop."""

    def __init__(self, model: Any, optimizer: Any, loader: Any, criterion: Any) -> None:
        self.model, self.optimizer, self.loader, self.criterion = (
            model,
            optimizer,
            loader,
            criterion,
        )
        self.batches = iter(loader)

    def _next(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self.batches)  # type: ignore[no-any-return]
        except StopIteration:  # a new epoch
            self.batches = iter(self.loader)
            return next(self.batches)  # type: ignore[no-any-return]

    def take(self, steps: int) -> tuple[float, float]:
        """Seconds for ``steps`` steps: (this thread's CPU time, wall time)."""
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(steps):
            X, y = self._next()
            self.optimizer.zero_grad()
            self.criterion(self.model(X), y).backward()
            self.optimizer.step()
        return time.thread_time() - cpu, time.perf_counter() - wall


def open_side(
    side: str,
    model_name: str,
    data: tuple[Any, list[str], torch.Tensor, torch.Tensor],
    vault: privml.Vault | None,
    steps: int,
    stack: contextlib.ExitStack,
) -> Side:
    """Set ``side`` up on a fresh copy of ``model_name``, for at least ``steps`` steps."""
    _, features, X, y = data
    net = network(model_name)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    criterion = nn.CrossEntropyLoss()
    if side == "non-private":
        return Side(net, optimizer, DataLoader(TensorDataset(X, y), BATCH, shuffle=True), criterion)
    if side.startswith("opacus"):
        from opacus import PrivacyEngine

        mode = side.split()[1]
        parts = PrivacyEngine(accountant="rdp").make_private(
            module=net,
            optimizer=optimizer,
            data_loader=DataLoader(TensorDataset(X, y), batch_size=BATCH),
            noise_multiplier=SIGMA,
            max_grad_norm=CLIP,
            poisson_sampling=True,
            grad_sample_mode=mode,
            criterion=criterion,
        )
        if mode == "ghost":
            model, dp_optimizer, dp_criterion, dp_loader = parts
            return Side(model, dp_optimizer, dp_loader, dp_criterion)
        model, dp_optimizer, dp_loader = parts
        return Side(model, dp_optimizer, dp_loader, criterion)
    assert vault is not None
    run = stack.enter_context(
        vault.session("bench", purpose="bench").dp.private_training(
            "digits",
            features=features,
            target="target",
            module=net,
            optimizer=optimizer,
            batch_size=BATCH,
            epochs=-(-steps // (ROWS // BATCH)),
            max_grad_norm=CLIP,
            noise_multiplier=SIGMA,
            grad_sample_mode=side.split()[1],
            name=f"bench-{model_name}",
        )
    )
    return Side(run.model, run.optimizer, run.data_loader, run.criterion)


def bk_refusal(model_name: str) -> str:
    """What privml says when asked for "bk" on ``model_name`` (before reading any data)."""
    from privml.dp.torch._engine import prepare_module

    net = network(model_name)
    try:
        prepare_module(net, torch.optim.SGD(net.parameters(), lr=0.1), mode="bk", fix_module=False)
    except ConfigurationError as err:
        return str(err).split(" Use ")[0].split(": ", 1)[1]
    return "accepted"


def timings(models: list[str], rounds: int, steps: int) -> None:
    data = digits()
    frame, features, _, _ = data
    with tempfile.TemporaryDirectory() as tmp, vault_with(frame, features, Path(tmp) / "v") as v:
        for model_name in models:
            wall: dict[str, list[float]] = {side: [] for side in SIDES}
            with contextlib.ExitStack() as stack:
                sides = {
                    side: open_side(side, model_name, data, v, (rounds + 1) * steps, stack)
                    for side in SIDES
                }

                def run(
                    side: str, sides: dict[str, Side] = sides, wall: dict[str, list[float]] = wall
                ) -> Callable[[], float]:
                    def take() -> float:
                        c, w = sides[side].take(steps)
                        wall[side].append(w / steps)
                        return c / steps  # the training thread's CPU seconds per step

                    return take

                cpu = interleave({side: run(side) for side in SIDES}, rounds=rounds)
            walls = Timings({side: seconds[1:] for side, seconds in wall.items()})  # no warm-up
            print(f"\n{model_name}: ms per step (training thread's CPU; wall), median of {rounds}")
            for side in SIDES:
                print(f"  {side:<14}{1e3 * cpu.median(side):9.2f}{1e3 * walls.median(side):9.2f}")
            print("  per-round ratios of CPU time per step: median [q1 .. q3] (min, max)")
            for top, bottom in (
                ("privml ghost", "non-private"),
                ("opacus ghost", "non-private"),
                ("opacus hooks", "non-private"),
            ):
                print(f"  {top} / {bottom:<13}{cpu.ratio(top, bottom)}")
            ghost = walls.ratio("privml ghost", "opacus ghost")
            print(f"  (wall time: privml ghost / opacus ghost {ghost})")
            said = bk_refusal(model_name)
            print(f"  privml bk: {'accepted' if said == 'accepted' else f'refused ({said})'}")
            quoted = cpu.ratio("privml ghost", "opacus ghost")
            print(f"  privml ghost / opacus ghost, CPU (quoted; target <= 1.05x): {quoted}")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(model_name: str, side: str, steps: int) -> None:
    data = digits()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        vault = vault_with(data[0], data[1], Path(tmp) / "v") if side.startswith("privml") else None
        running = open_side(side, model_name, data, vault, steps, stack)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        baseline = _status("VmRSS")
        running.take(steps)
        peak = _status("VmHWM")
        stack.close()
        if vault is not None:
            vault.close()
    print(json.dumps({"peak_mib": (peak - baseline) / 1024}))


def memory(models: list[str], steps: int) -> None:
    print(f"\npeak memory of the training loop ({steps} steps, each side in its own process)")
    print(f"  {'model':<12}" + "".join(f"{side:>15}" for side in SIDES))
    for model_name in models:
        figures = []
        for side in SIDES:
            out = subprocess.run(
                [
                    *(sys.executable, __file__, "--probe", f"{model_name}:{side}"),
                    *("--steps", str(steps)),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            figures.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])
        print(f"  {model_name:<12}" + "".join(f"{f:>11.1f} MiB" for f in figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 steps")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 2, 5
    if args.probe:
        model_name, side = args.probe.split(":")
        memory_probe(model_name, side, args.steps)
        return
    models = args.models.split(",")
    print(f"torch {torch.__version__}, 1 thread, batch {BATCH} (expected), σ={SIGMA}, C={CLIP}")
    print(f"load average {load_average()}")
    timings(models, args.rounds, args.steps)
    memory(models, args.steps)


if __name__ == "__main__":
    main()
