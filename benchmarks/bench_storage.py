"""Vault storage vs plain Parquet, and durable audit appends per second.

Writes and reads 1,000,000 rows x 8 columns (4 sensitive, encrypted with
Parquet modular encryption) through the vault, and the same table with plain
``pyarrow.parquet``, in the same run. Every round times plain Parquet, plain
Parquet with the vault's fsync (context) and the vault once each, in a rotated
order, after one warm-up round; the figure quoted is the median of the per-round
ratio vault / plain Parquet, with its quartiles, extremes and the rounds taken.

    .venv/bin/python benchmarks/bench_storage.py [--rows 1000000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import interleave, pin_threads, verdict

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import privml  # noqa: E402
from privml.storage.engine import transaction  # noqa: E402

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
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--appends", type=int, default=2000)
    args = parser.parse_args()
    frame = make_frame(args.rows)
    key = privml.generate_key()

    def in_folder(run: Callable[[Path], float]) -> Callable[[], float]:
        def call() -> float:
            with tempfile.TemporaryDirectory() as tmp:
                return run(Path(tmp))

        return call

    times = interleave(
        {
            "plain": in_folder(lambda folder: plain_round_trip(frame, folder)),
            "plain + fsync": in_folder(lambda folder: durable_plain_round_trip(frame, folder)),
            "vault": in_folder(lambda folder: vault_round_trip(frame, folder, key)),
        },
        rounds=args.rounds,
    )
    print(f"rows={args.rows:,} columns=8 (4 sensitive), write+read, 1 thread")
    for name in times.seconds:
        print(f"  {name:<14} median {times.median(name):6.3f} s")
    ratio = times.ratio("vault", "plain")
    print(f"  vault / plain Parquet (quoted): {ratio}  {verdict(ratio.median, at_most=1.3)}")
    print(f"  context: vault / (plain + fsync): {times.ratio('vault', 'plain + fsync')}")
    print("  (the vault also validates, hashes and checks the file, and audits both calls)")
    with tempfile.TemporaryDirectory() as tmp:
        rate = audit_appends_per_second(Path(tmp), key, args.appends)
    print(f"audit appends (one durable SQLite transaction each): {rate:,.0f}/s (target >= 400/s)")


if __name__ == "__main__":
    main()
