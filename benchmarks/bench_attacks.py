"""Empirical ε lower bounds beside the ledger's claim: DP-SGD on a real dataset, one run each.

scikit-learn's built-in ``digits`` (1,797 8x8 images, 64 pixel features in
[0, 16], 10 classes; nothing is downloaded) goes into a vault. For each target
ε in {0.5, 1, 2, 4, 8} an MLP 64-H-10 is trained with DP-SGD through the vault
(``session.dp.train(..., holdout=h, canaries=m, target_epsilon=ε)``,
book-keeping mode), and ``vault.models.privacy_report`` attacks it. One table
puts side by side, per ε:

* the claimed ε (the ledger's charge for the run, δ = 1e-5);
* the one-run lower bound of the m black-box input canaries (final model
  only) and of the m white-box Dirac canaries (every noisy gradient), both
  Steinke, Nasr & Jagielski 2023 at 95% confidence, from ONE training run;
* the report's membership-inference bounds (loss threshold, LiRA-offline with
  4 reference models), their AUC and TPR at 0.1% and 1% FPR;
* held-out accuracy and the time spent training and attacking;

and, for each lower bound, its ratio to the claim. The white-box one-run ratio
is the headline: tight white-box audits in the literature approach 1 only with
many canaries, many runs or every update visible; this shows how close one run
of privml gets. With the library's GUESS_FRACTION = 0.1, m canaries allow 2·⌈m/10⌉
guesses, which caps any one-run bound (about 4.1 at m = 900, 4.4 at m = 1250)
whatever the true ε.

The defaults (MLP 64-1024-10, SGD lr 2.0, expected batch 256 of the 1,258
training rows, 20 epochs = 80 steps, clip 1.0, m = 1000) were chosen for the
strongest white-box bound that still runs in minutes. A Dirac canary's score
also sums the real rows' gradients at its coordinate, which differ from one
coordinate to the next and blur the guesses: a wide hidden layer spreads them
thin, a moderate batch keeps them small beside the noise, and more steps at
higher σ bring the subsampled mechanism closer to a Gaussian one, where one
run's guesses are most telling. (Full-batch runs and narrow networks measured
far less; 80 steps more than 40 or 20.) Most of a run's time is accounting
(choosing σ, and the ledger's ε after each epoch), not training; privml
caches it, so rounds after the first train in about a second (the table also
gives the first, cold, round's time).

Then a non-private model: the same architecture, initial weights and
hyperparameters (SGD, learning rate, batch size, epochs), trained in a plain
torch loop on a seeded split with the same held-out share (no canaries),
registered by hand (``vault.models.register``) and reported with
``members=`` / ``non_members=``. privml's attack AUC (LiRA-offline, loss
threshold) is printed beside a loss-threshold attack written here directly
(``roc_auc_score`` on minus the per-example cross-entropy), with their ratio.
LiRA attacks half the non-members (the other half trains its reference
models), so its AUC is over a different (smaller) set than the plain attack's;
its reference models are privml's own fixed recipe (plain Adam, 20 epochs), not
the target's SGD settings.

A second non-private model is made to leak: the same network trained on only
the first 200 members for 300 epochs (``--overfit-members``, ``--overfit-epochs``).
At the DP runs' settings the non-private network generalizes too well on
digits for any membership attack to get far.

Seeds: the weights' initialization, the non-private split and shuffling, and
the attacks' splits and reference models are seeded. The DP-SGD noise, the
Poisson batches, the held-out rows of each DP run and the canaries' values and
coins come from the operating system's CSPRNG (privml refuses a caller's seed
for anything a release depends on), so the figures vary slightly run to run.
Three rounds (one training run per ε in each) by default, in alternating order;
every round's figures are printed, the tables hold the medians. Torch runs
on one thread.

No timing ratio is involved: the figures are ε lower bounds, AUCs, true-positive rates
and accuracy; the seconds printed (training, attacks, where the time went) are context
for planning a run, not a comparison between variants.

    .venv/bin/python benchmarks/bench_attacks.py [--quick] [--rounds 3] [--canaries 1000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from torch import nn

import privml
from privml import Budget, Field, Schema
from privml.dp.scaling import SchemaScaler
from privml.dp.torch import TorchModel
from privml.exceptions import PrivacyAuditFailure

TIMES_NOTHING = "empirical ε lower bounds, membership-inference AUC and TPR, accuracy"
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
DELTA = 1e-5
CLASSES = list(range(10))
FEATURES = [f"px{i}" for i in range(64)]
TARGET = "digit"
SEED = 0
# Opacus's RNG and accountant notes: expected here, not the benchmark's subject.
for message in ("Secure RNG turned off", "Optimal order", "Full backward hook is firing"):
    warnings.filterwarnings("ignore", message=message)


def digits() -> tuple[pd.DataFrame, Schema]:
    """The digits images as a frame (64 pixels in [0, 16], the digit) and their schema."""
    data = load_digits()
    frame = pd.DataFrame(data.data, columns=FEATURES)
    frame[TARGET] = data.target.astype(int)
    fields: dict[str, Field] = {f: Field.numeric(bounds=(0.0, 16.0)) for f in FEATURES}
    fields[TARGET] = Field.categorical(categories=CLASSES, target=True)
    return frame, Schema(fields)


def vault_with(frame: pd.DataFrame, schema: Schema, folder: Path) -> privml.Vault:
    vault = privml.Vault.create(folder, key=privml.generate_key())
    vault.add_dataset("digits", frame, schema=schema, budget=Budget(epsilon=1e3, delta=DELTA))
    vault.add_purpose("bench", description="Benchmark", lawful_basis="none (public data)")
    vault.add_principal("bench", roles=["ml"])
    vault.grant(role="ml", dataset="digits", purpose="bench", mode="dp_training")
    return vault


def mlp(hidden: int) -> nn.Module:
    """The architecture, with the same initial weights every time it is built."""
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _bound(measurement: dict[str, Any] | None, kind: str) -> float:
    if not measurement or kind not in measurement:
        return float("nan")
    return float(measurement[kind]["epsilon_lower_bound"])


def _report(vault: privml.Vault, name: str, **kwargs: Any) -> tuple[Any, bool]:
    """The privacy report, and whether a bound exceeded the claim (the report is kept)."""
    try:
        return vault.models.privacy_report(name, random_state=SEED, **kwargs), False
    except PrivacyAuditFailure as err:
        return err.report, True


def _attack_figures(report: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in report.results:
        key = "lt" if r.attack == "loss-threshold" else "lira"
        out[f"{key}_lb"] = r.epsilon_lower_bound
        out[f"{key}_auc"] = r.auc
        out[f"{key}_tpr01"] = r.tpr_at[0.001]
        out[f"{key}_tpr1"] = r.tpr_at[0.01]
    return out


def private_run(vault: privml.Vault, epsilon: float, args: argparse.Namespace) -> dict[str, Any]:
    """Train at ``epsilon`` through the vault with canaries; report on the registered model."""
    dp = vault.session("bench", purpose="bench").dp
    net = mlp(args.hidden)
    name = f"digits-eps{epsilon:g}".replace(".", "_")
    start = time.perf_counter()
    _, history = dp.train(
        "digits",
        features=FEATURES,
        target=TARGET,
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=args.lr),
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_grad_norm=args.clip,
        target_epsilon=epsilon,
        grad_sample_mode="bk",
        name=name,
        holdout=args.holdout,
        canaries=args.canaries,
    )
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    report, exceeded = _report(vault, name)
    attack_s = time.perf_counter() - start
    measured = history.attrs["canary_measurement"]
    return {
        "claimed": float(history.attrs["epsilon"]),
        "sigma": float(history.attrs["noise_multiplier"]),
        "q": float(history.attrs["sample_rate"]),
        "steps": int(history["steps"].iloc[-1]),
        "bb_lb": _bound(measured, "black_box"),
        "wb_lb": _bound(measured, "white_box"),
        "wb_correct": f"{measured['white_box']['correct']}/{measured['white_box']['guesses']}",
        "bb_correct": f"{measured['black_box']['correct']}/{measured['black_box']['guesses']}",
        **_attack_figures(report),
        "acc": report.score_held_out,
        "acc_members": report.score_members,
        "train_s": train_s,
        "attack_s": attack_s,
        "report_canaries": len(report.canaries),
        "report_best": report.best_lower_bound,
        "exceeded": exceeded,
    }


def _losses(module: nn.Module, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        loss = nn.functional.cross_entropy(module(X), y, reduction="none")
    return np.asarray(loss.numpy(), dtype=float)


def plain_run(
    vault: privml.Vault,
    frame: pd.DataFrame,
    args: argparse.Namespace,
    *,
    name: str = "digits-plain",
    epochs: int | None = None,
    members_cap: int | None = None,
) -> dict[str, Any]:
    """The same network, non-private (plain SGD loop), registered by hand and reported.

    ``epochs`` and ``members_cap`` (train on only the first that many members)
    make the overfit variant; by default the DP runs' settings are used.
    """
    epochs = args.epochs if epochs is None else epochs
    rng = np.random.default_rng(SEED)
    held = np.zeros(len(frame), dtype=bool)
    held[rng.choice(len(frame), size=int(args.holdout * len(frame)), replace=False)] = True
    members = frame.loc[~held].reset_index(drop=True)
    if members_cap is not None:
        members = members.iloc[:members_cap].reset_index(drop=True)
    non_members = frame.loc[held].reset_index(drop=True)
    scaler = SchemaScaler(bounds={f: (0.0, 16.0) for f in FEATURES}, features=FEATURES).fit(None)

    def tensors(part: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        X = torch.as_tensor(scaler.transform(part[FEATURES]), dtype=torch.float32)
        return X, torch.as_tensor(part[TARGET].to_numpy().copy(), dtype=torch.int64)

    X, y = tensors(members)
    start = time.perf_counter()
    net = mlp(args.hidden)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    net.train()
    steps = 0
    for _ in range(epochs):
        for batch in torch.split(torch.randperm(len(X), generator=gen), args.batch_size):
            optimizer.zero_grad()
            criterion(net(X[batch]), y[batch]).backward()
            optimizer.step()
            steps += 1
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    X_out, y_out = tensors(non_members)
    loss_in, loss_out = _losses(net, X, y), _losses(net, X_out, y_out)
    labels = np.concatenate([np.ones(len(loss_in)), np.zeros(len(loss_out))])
    plain_auc = float(roc_auc_score(labels, -np.concatenate([loss_in, loss_out])))
    plain_s = time.perf_counter() - start
    model = TorchModel(
        module=net,
        scaler=scaler,
        features=FEATURES,
        target=TARGET,
        task="classification",
        classes=CLASSES,
    )
    vault.models.register(
        name,
        model,
        trained_on="digits",
        epsilon=None,
        delta=None,
        notes="non-private baseline",
        extra={"features": FEATURES, "target": TARGET},
    )
    start = time.perf_counter()
    report, _ = _report(vault, name, members=members, non_members=non_members)
    attack_s = time.perf_counter() - start
    return {
        **_attack_figures(report),
        "plain_auc": plain_auc,
        "acc": report.score_held_out,
        "acc_members": report.score_members,
        "steps": steps,
        "train_s": train_s,
        "attack_s": attack_s,
        "plain_s": plain_s,
        "n_in": len(members),
        "n_out": len(non_members),
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in runs))


def _ratio(bound: float, claimed: float) -> str:
    return f"{bound / claimed:6.3f}" if np.isfinite(bound) and claimed > 0 else "   n/a"


def print_private(results: dict[float, list[dict[str, Any]]], rounds: int) -> None:
    def med(e: float, key: str) -> float:
        return _median(results[e], key)

    print(f"\nε lower bounds at 95% confidence, δ = {DELTA:g} (median of {rounds} round(s))")
    print(
        f"{'target ε':>8} {'claimed':>8} {'σ':>6} {'steps':>5} | {'black-box':>9} "
        f"{'white-box':>9} {'loss-thr':>8} {'LiRA-off':>8} | ratios lb/claimed: "
        f"{'BB':>6} {'WB':>6} {'LT':>6} {'LiRA':>6}"
    )
    for e in results:
        c = med(e, "claimed")
        bb, wb, lt, lira = (med(e, k) for k in ("bb_lb", "wb_lb", "lt_lb", "lira_lb"))
        print(
            f"{e:>8g} {c:>8.3f} {med(e, 'sigma'):>6.2f} {med(e, 'steps'):>5.0f} | {bb:>9.3f} "
            f"{wb:>9.3f} {lt:>8.3f} {lira:>8.3f} |                    "
            f"{_ratio(bb, c)} {_ratio(wb, c)} {_ratio(lt, c)} {_ratio(lira, c)}"
        )
    print("\nmembership inference (report) and utility")
    print(
        f"{'target ε':>8} | {'AUC LT':>7} {'AUC LiRA':>8} | {'TPR@0.1% LT':>11} {'LiRA':>6} | "
        f"{'TPR@1% LT':>9} {'LiRA':>6} | {'acc held-out':>12} {'members':>7} | "
        f"{'train s':>7} {'(cold)':>6} {'attack s':>8}"
    )
    for e in results:
        print(
            f"{e:>8g} | {med(e, 'lt_auc'):>7.3f} {med(e, 'lira_auc'):>8.3f} | "
            f"{med(e, 'lt_tpr01'):>11.3f} {med(e, 'lira_tpr01'):>6.3f} | "
            f"{med(e, 'lt_tpr1'):>9.3f} {med(e, 'lira_tpr1'):>6.3f} | "
            f"{med(e, 'acc'):>12.3f} {med(e, 'acc_members'):>7.3f} | "
            f"{med(e, 'train_s'):>7.2f} {results[e][0]['train_s']:>6.2f} "
            f"{med(e, 'attack_s'):>8.2f}"
        )
    print(
        "(cold: the first round's training time; later rounds reuse the accounting the "
        "first computed for the same σ and steps)"
    )
    print("\ncanary guesses right, per round (white-box; black-box)")
    for e in results:
        tallies = ", ".join(f"{r['wb_correct']}; {r['bb_correct']}" for r in results[e])
        print(f"  ε = {e:g}: {tallies}")
    listed = {r["report_canaries"] for runs in results.values() for r in runs}
    print(
        f"canary measurements the privacy report itself lists: {sorted(listed)} per model; "
        "its best_lower_bound (median) per ε: "
        + ", ".join(f"{_median(results[e], 'report_best'):.3f}" for e in results)
    )
    over = [e for e in results if any(r["exceeded"] for r in results[e])]
    print(f"claims contradicted by a measurement (PrivacyAuditFailure): {over or 'none'}")


def print_plain(runs: list[dict[str, Any]], rounds: int, title: str) -> None:
    def med(key: str) -> float:
        return _median(runs, key)

    r0 = runs[0]
    print(
        f"\nnon-private baseline ({title}; {r0['steps']} steps; "
        f"{r0['n_in']} members, {r0['n_out']} non-members; median of {rounds} round(s))"
    )
    print(
        f"  held-out accuracy {med('acc'):.3f} (members {med('acc_members'):.3f}); "
        f"train {med('train_s'):.2f} s, report {med('attack_s'):.2f} s, "
        f"plain attack {1e3 * med('plain_s'):.1f} ms"
    )
    plain, lira, lt = med("plain_auc"), med("lira_auc"), med("lt_auc")
    print(f"  AUC: plain loss threshold (here) {plain:.3f}")
    print(f"       privml LiRA-offline (report) {lira:.3f}   ratio {lira / plain:.3f}x")
    print(f"       privml loss threshold        {lt:.3f}   ratio {lt / plain:.3f}x")
    print(
        f"  advantage AUC - 0.5: LiRA / plain = "
        f"{(lira - 0.5) / (plain - 0.5) if plain != 0.5 else float('nan'):.3f}x"
    )
    print(
        f"  TPR@0.1% FPR: LiRA {med('lira_tpr01'):.3f}, loss threshold {med('lt_tpr01'):.3f}; "
        f"TPR@1% FPR: LiRA {med('lira_tpr1'):.3f}, loss threshold {med('lt_tpr1'):.3f}"
    )
    print(
        f"  ε lower bounds (no claim): LiRA {med('lira_lb'):.3f}, loss threshold {med('lt_lb'):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 1 min)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--holdout", type=float, default=0.3)
    parser.add_argument(
        "--overfit-members", type=int, default=200, help="members of the overfit baseline"
    )
    parser.add_argument(
        "--overfit-epochs", type=int, default=300, help="epochs of the overfit baseline"
    )
    args = parser.parse_args()
    epsilons = EPSILONS
    if args.quick:
        args.rounds, args.epochs, args.canaries, args.overfit_epochs = 1, 3, 200, 100
        epsilons = (1.0, 8.0)
    torch.set_num_threads(1)
    phases: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    frame, schema = digits()
    results: dict[float, list[dict[str, Any]]] = {e: [] for e in epsilons}
    plain: list[dict[str, Any]] = []
    overfit: list[dict[str, Any]] = []
    print(
        f"digits: {len(frame)} rows, {len(FEATURES)} features, 10 classes; "
        f"MLP 64-{args.hidden}-10, "
        f"SGD lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs, clip {args.clip}, "
        f"holdout {args.holdout}, canaries m = {args.canaries}; torch {torch.__version__}, "
        f"1 thread; {args.rounds} round(s) of {len(epsilons)} DP runs + 2 non-private runs"
    )
    with tempfile.TemporaryDirectory() as tmp, vault_with(frame, schema, Path(tmp) / "v") as vault:
        phases["vault setup"] += time.perf_counter() - start
        for r in range(args.rounds):
            order = epsilons if r % 2 == 0 else epsilons[::-1]  # interleaved, alternating order
            for e in order:
                out = private_run(vault, e, args)
                results[e].append(out)
                phases["DP-SGD training (incl. canary scoring)"] += out["train_s"]
                phases["privacy reports of DP models"] += out["attack_s"]
                print(
                    f"  round {r + 1}: ε = {e:<4g} claimed {out['claimed']:.3f}  white-box "
                    f"{out['wb_lb']:.3f}  black-box {out['bb_lb']:.3f}  "
                    f"train {out['train_s']:.1f} s  report {out['attack_s']:.1f} s",
                    flush=True,
                )
            out = plain_run(vault, frame, args)
            plain.append(out)
            phases["non-private training"] += out["train_s"]
            phases["privacy report of the non-private model"] += out["attack_s"]
            phases["plain loss-threshold attack"] += out["plain_s"]
            print(
                f"  round {r + 1}: non-private  AUC LiRA {out['lira_auc']:.3f}, "
                f"plain {out['plain_auc']:.3f}",
                flush=True,
            )
            out = plain_run(
                vault,
                frame,
                args,
                name="digits-overfit",
                epochs=args.overfit_epochs,
                members_cap=args.overfit_members,
            )
            overfit.append(out)
            phases["non-private training"] += out["train_s"]
            phases["privacy report of the non-private model"] += out["attack_s"]
            phases["plain loss-threshold attack"] += out["plain_s"]
            print(
                f"  round {r + 1}: overfit      AUC LiRA {out['lira_auc']:.3f}, "
                f"plain {out['plain_auc']:.3f}",
                flush=True,
            )
        spent = vault.budget("digits").epsilon_spent
    total = time.perf_counter() - start
    print_private(results, args.rounds)
    print_plain(plain, args.rounds, "same MLP, SGD, batch, epochs")
    print_plain(
        overfit,
        args.rounds,
        f"overfit: first {args.overfit_members} members, {args.overfit_epochs} epochs",
    )
    print(f"\n(the ledger charged ε = {spent:.3f} at δ = {DELTA:g} for all DP runs together)")
    print(f"\nwhere the time went ({total:.1f} s in all)")
    for phase, seconds in phases.items():
        print(f"  {phase:<42}{seconds:>8.1f} s")
    other = total - sum(phases.values())
    print(f"  {'other (tables, cleanup)':<42}{other:>8.1f} s")


if __name__ == "__main__":
    main()
