"""DP logistic regression through privml (schema bounds + scaling) vs diffprivlib called naively.

For each ε, the mean held-out accuracy over several seeded train/test splits: privml's
``session.dp.fit`` (features scaled by declared bounds, data_norm set) vs
``diffprivlib.models.LogisticRegression(epsilon=ε)`` on raw features (bounds and
norm taken from the data, with its PrivacyLeakWarning), plus the fit-time
overhead of going through the vault.

Accuracy is not a timing: the splits are seeded, but the DP noise comes from the
operating system's CSPRNG (privml refuses a caller's seed), so it varies slightly from
run to run. Times: one round per split (``_rounds.interleave``, after one warm-up round,
in a rotated order) times privml's fit, the fixed cost of any release through the vault
(a DP count: policy, ledger charge, decrypting the data) and diffprivlib's fit; the
figure quoted is the median of the per-round ratio (privml fit - fixed cost) / naive fit,
with its quartiles, extremes and rounds.

    .venv/bin/python benchmarks/bench_dp_models.py [--reps 5] [--rows 100000] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import Ratio, interleave, load_average, pin_threads

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from diffprivlib.models import LogisticRegression  # noqa: E402
from sklearn.datasets import load_breast_cancer, make_classification  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import privml  # noqa: E402
from privml import Field, Schema  # noqa: E402

EPSILONS = [0.1, 0.5, 1.0, 2.0, 5.0]


def breast_cancer() -> tuple[pd.DataFrame, Schema]:
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame, _schema(frame)


def synthetic(rows: int) -> tuple[pd.DataFrame, Schema]:
    X, y = make_classification(rows, n_features=20, n_informative=8, random_state=0)
    frame = pd.DataFrame(X * 10 + 50, columns=[f"x{i}" for i in range(20)])
    frame["target"] = y
    return frame, _schema(frame)


def _schema(frame: pd.DataFrame) -> Schema:
    # Domain bounds a data owner would declare: a rounded envelope, not the observed extremes.
    fields = {}
    for c in frame.columns:
        if c == "target":
            fields[c] = Field.categorical(categories=[0, 1], target=True)
        else:
            lo, hi = frame[c].min(), frame[c].max()
            width = hi - lo
            fields[c] = Field.numeric(bounds=(float(lo - 0.1 * width), float(hi + 0.1 * width)))
    return Schema(fields)


def run(name: str, frame: pd.DataFrame, schema: Schema, reps: int) -> dict[float, Ratio]:
    """Accuracy and fit times at every ε; the per-round overhead ratio at each ε."""
    features = [c for c in frame.columns if c != "target"]
    splits = [train_test_split(frame, test_size=0.3, random_state=seed) for seed in range(reps)]
    print(f"{name}: {len(frame):,} rows, {len(features)} features, {reps} seeded splits")
    print(
        "     ε | privml acc | naive diffprivlib acc | fit: privml, of which fixed cost, naive"
        " | (privml - fixed) / naive, per round"
    )
    quoted: dict[float, Ratio] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        sessions = []
        for seed, (train, _) in enumerate(splits):
            vault = stack.enter_context(
                privml.Vault.create(Path(tmp) / f"v{seed}", key=privml.generate_key())
            )
            vault.add_dataset(
                "train", train.reset_index(drop=True), schema=schema,
                budget=privml.Budget(epsilon=1e4),
            )  # fmt: skip
            vault.add_purpose("ml", description="benchmark", lawful_basis="none")
            vault.add_principal("eng")
            vault.grant(principal="eng", dataset="train", purpose="ml", mode="dp_training")
            sessions.append(vault.session("eng", purpose="ml").dp)
        for eps in EPSILONS:
            accuracy: dict[str, list[float]] = {"privml": [], "naive": []}

            def side(
                kind: str, eps: float = eps, accuracy: dict[str, list[float]] = accuracy
            ) -> Callable[[], float]:
                calls = iter(range(reps + 1))  # call 0 is the warm-up, on split 0

                def once() -> float:
                    call = next(calls)
                    train, test = splits[max(call - 1, 0)]
                    dp = sessions[max(call - 1, 0)]
                    start = time.perf_counter()
                    if kind == "fixed":
                        # The fixed cost of any release: a DP count pays exactly that, plus a
                        # negligible noise draw.
                        dp.count("train", epsilon=0.01)
                        return time.perf_counter() - start
                    if kind == "privml":
                        model = dp.fit(LogisticRegression(epsilon=eps), "train",
                                       features=features, target="target")  # fmt: skip
                    else:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            model = LogisticRegression(epsilon=eps).fit(
                                train[features], train["target"]
                            )
                    elapsed = time.perf_counter() - start
                    if call:
                        predicted = model.predict(test[features])
                        accuracy[kind].append(float((predicted == test["target"]).mean()))
                    return elapsed

                return once

            times = interleave(
                {"privml": side("privml"), "fixed": side("fixed"), "naive": side("naive")},
                rounds=reps,
            )
            seconds = times.seconds
            overhead = Ratio(
                tuple(
                    (ours - fixed) / naive
                    for ours, fixed, naive in zip(
                        seconds["privml"], seconds["fixed"], seconds["naive"], strict=True
                    )
                ),
                top="privml - fixed",
                bottom="naive",
            )
            quoted[eps] = overhead
            print(
                f"  {eps:4.1f} |     {np.mean(accuracy['privml']):.3f}  |         "
                f"{np.mean(accuracy['naive']):.3f}         "
                f"| {times.median('privml') * 1000:6.0f} ms, {times.median('fixed') * 1000:4.0f}"
                f" ms, {times.median('naive') * 1000:6.0f} ms | {overhead}"
            )
    return quoted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="seeded splits (rounds)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="2 splits, 10,000 synthetic rows")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.rows = 2, 10_000
    print(f"1 thread; load average {load_average()}")
    run("breast_cancer", *breast_cancer(), args.reps)
    ratios = run("synthetic", *synthetic(args.rows), args.reps)
    print(f"synthetic, ε=1: (privml fit - fixed cost) / naive fit (quoted): {ratios[1.0]}")


if __name__ == "__main__":
    main()
