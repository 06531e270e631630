"""DP logistic regression through privml (schema bounds + scaling) vs diffprivlib called naively.

For each ε, the mean held-out accuracy over several seeds: privml's
``session.dp.fit`` (features scaled by declared bounds, data_norm set) vs
``diffprivlib.models.LogisticRegression(epsilon=ε)`` on raw features (bounds and
norm taken from the data, with its PrivacyLeakWarning), plus the fit-time
overhead of going through the vault.

    .venv/bin/python benchmarks/bench_dp_models.py [--reps 5] [--rows 100000]
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
from diffprivlib.models import LogisticRegression
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.model_selection import train_test_split

import privml
from privml import Field, Schema

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


def run(name: str, frame: pd.DataFrame, schema: Schema, reps: int) -> None:
    features = [c for c in frame.columns if c != "target"]
    print(f"{name}: {len(frame):,} rows, {len(features)} features, mean of {reps} seeds")
    print(
        "     ε | privml acc | naive diffprivlib acc | fit: privml, of which fixed cost, naive"
        " | (privml - fixed) / naive"
    )
    for eps in EPSILONS:
        ours, naive, t_ours, t_naive, t_fixed = [], [], [], [], []
        for seed in range(reps):
            train, test = train_test_split(frame, test_size=0.3, random_state=seed)
            with (
                tempfile.TemporaryDirectory() as tmp,
                privml.Vault.create(Path(tmp) / "v", key=privml.generate_key()) as vault,
            ):
                vault.add_dataset(
                    "train",
                    train.reset_index(drop=True),
                    schema=schema,
                    budget=privml.Budget(epsilon=100.0),
                )
                vault.add_purpose("ml", description="benchmark", lawful_basis="none")
                vault.add_principal("eng")
                vault.grant(principal="eng", dataset="train", purpose="ml", mode="dp_training")
                dp = vault.session("eng", purpose="ml").dp
                # The fixed cost of any release (policy, ledger charge, decrypting the data):
                # a DP count pays exactly that, plus a negligible noise draw.
                start = time.perf_counter()
                dp.count("train", epsilon=0.01)
                t_fixed.append(time.perf_counter() - start)
                start = time.perf_counter()
                model = dp.fit(
                    LogisticRegression(epsilon=eps), "train", features=features, target="target"
                )
                t_ours.append(time.perf_counter() - start)
            ours.append((model.predict(test[features]) == test["target"]).mean())
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = LogisticRegression(epsilon=eps).fit(train[features], train["target"])
            t_naive.append(time.perf_counter() - start)
            naive.append((raw.predict(test[features]) == test["target"]).mean())
        ours_t, fixed_t = statistics.median(t_ours), statistics.median(t_fixed)
        naive_t = statistics.median(t_naive)
        print(
            f"  {eps:4.1f} |     {np.mean(ours):.3f}  |         {np.mean(naive):.3f}         "
            f"| {ours_t * 1000:6.0f} ms, {fixed_t * 1000:4.0f} ms, {naive_t * 1000:6.0f} ms "
            f"| {(ours_t - fixed_t) / naive_t:5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    run("breast_cancer", *breast_cancer(), args.reps)
    run("synthetic", *synthetic(args.rows), max(1, args.reps // 2))


if __name__ == "__main__":
    main()
