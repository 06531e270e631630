"""Vault storage vs plain Parquet, and durable audit appends per second.

Writes and reads 1,000,000 rows x 8 columns (4 sensitive, encrypted with
Parquet modular encryption) through the vault, and the same table with plain
``pyarrow.parquet``, in the same run. Prints both times and the ratio.

    .venv/bin/python benchmarks/bench_storage.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import privml
from privml.storage.engine import transaction

CATEGORIES = [f"ICD-{i:02d}" for i in range(20)]
CITIES = [f"city-{i}" for i in range(500)]


def make_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 95, rows),
            "income": rng.gamma(2.0, 20_000.0, rows).clip(0, 1e6),
            "diagnosis": pd.Categorical.from_codes(rng.integers(0, 20, rows), CATEGORIES),
            "city": pd.Series(np.array(CITIES)[rng.integers(0, 500, rows)], dtype="str"),
            "visits": rng.integers(0, 50, rows),
            "score": rng.normal(0, 1, rows).clip(-10, 10),
            "weight": rng.normal(75, 12, rows).clip(20, 250),
            "height": rng.normal(170, 10, rows).clip(100, 230),
        }
    )


SCHEMA = privml.Schema(
    {
        "age": privml.Field.integer(bounds=(0, 120)),
        "income": privml.Field.numeric(bounds=(0, 1e6)),
        "diagnosis": privml.Field.categorical(categories=CATEGORIES),
        "city": privml.Field.text(),
        "visits": privml.Field.integer(bounds=(0, 1000), sensitive=False),
        "score": privml.Field.numeric(bounds=(-10, 10), sensitive=False),
        "weight": privml.Field.numeric(bounds=(20, 250), sensitive=False),
        "height": privml.Field.numeric(bounds=(100, 230), sensitive=False),
    }
)


def plain_round_trip(frame: pd.DataFrame, folder: Path) -> float:
    start = time.perf_counter()
    path = folder / "plain.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    back = pq.read_table(path).to_pandas()
    elapsed = time.perf_counter() - start
    assert len(back) == len(frame)
    return elapsed


def durable_plain_round_trip(frame: pd.DataFrame, folder: Path) -> float:
    """Plain Parquet plus the fsync that the vault does (for context, not the anchor)."""
    start = time.perf_counter()
    path = folder / "plain.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
    back = pq.read_table(path).to_pandas()
    elapsed = time.perf_counter() - start
    assert len(back) == len(frame)
    return elapsed


def vault_round_trip(frame: pd.DataFrame, folder: Path, key: bytes) -> float:
    with privml.Vault.create(folder / "v", key=key) as vault:
        vault.add_purpose("benchmark", description="Benchmark", lawful_basis="none: synthetic")
        vault.add_principal("bench")
        start = time.perf_counter()
        vault.add_dataset("bench", frame, schema=SCHEMA, budget=privml.Budget(epsilon=1))
        written = time.perf_counter() - start
        # The grant is policy set-up, not storage: outside the timed write and read.
        vault.grant(principal="bench", dataset="bench", purpose="benchmark", mode="raw")
        start = time.perf_counter()
        back = vault.session("bench", purpose="benchmark").read("bench")
        elapsed = written + time.perf_counter() - start
    assert len(back) == len(frame)
    return elapsed


def audit_appends_per_second(folder: Path, key: bytes, count: int) -> float:
    with privml.Vault.create(folder / "a", key=key) as vault:
        start = time.perf_counter()
        for i in range(count):
            with transaction(vault._state.engine) as tx:
                vault.audit.append(
                    tx,
                    principal="bench",
                    purpose="benchmark",
                    action="bench.append",
                    outcome="ok",
                    details={"i": i},
                )
        elapsed = time.perf_counter() - start
        assert vault.audit.verify().ok
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--appends", type=int, default=2000)
    args = parser.parse_args()
    frame = make_frame(args.rows)
    key = privml.generate_key()
    plain, durable, vault = [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            plain.append(plain_round_trip(frame, Path(tmp)))
        with tempfile.TemporaryDirectory() as tmp:
            durable.append(durable_plain_round_trip(frame, Path(tmp)))
        with tempfile.TemporaryDirectory() as tmp:
            vault.append(vault_round_trip(frame, Path(tmp), key))
    print(f"rows={args.rows:,} columns=8 (4 sensitive), write+read, {args.repeat} runs each")
    for label, pick in (("best", min), ("median", statistics.median)):
        p, v = pick(plain), pick(vault)
        print(
            f"  {label:>6}: plain pyarrow.parquet {p:6.3f} s | privml vault {v:6.3f} s "
            f"| ratio {v / p:5.2f}x (target <= 1.3x)"
        )
    d, v = statistics.median(durable), statistics.median(vault)
    print(f"  context: plain + fsync {d:6.3f} s (median) -> vault/that {v / d:5.2f}x")
    print("  (the vault also validates, hashes and checks the file, and audits both calls)")
    with tempfile.TemporaryDirectory() as tmp:
        rate = audit_appends_per_second(Path(tmp), key, args.appends)
    print(f"audit appends (one durable SQLite transaction each): {rate:,.0f}/s (target >= 400/s)")


if __name__ == "__main__":
    main()
