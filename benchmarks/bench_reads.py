"""``session.read`` from the vault folder vs an S3-compatible object store, in one run.

Writes the same synthetic dataset (a few numeric and categorical columns, all
sensitive, so every column is encrypted) to a vault whose data files are in its
folder and to one whose data files are on an S3-compatible server (moto's server
mode on 127.0.0.1, started here). Every round reads the whole table once from each
(``session.read``; opening the session is not timed), in a rotated order, after one
warm-up round; the figure quoted is the median of the per-round ratio object store /
local, with its quartiles, extremes and the rounds taken.

    .venv/bin/python benchmarks/bench_reads.py [--rows 1000000] [--rounds 7] [--quick]

Needs ``moto[server]`` (in the ``dev`` extra). The object-store figure includes
the HTTP transfer from a local server: on a real store, add the network.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import Timings, interleave, load_average, pin_threads

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402

import privml  # noqa: E402
from privml import Field, Schema  # noqa: E402

CITIES = ["Lyon", "Porto", "Oslo", "Graz", "Turku", "Gent"]


def synthetic(rows: int) -> tuple[pd.DataFrame, Schema]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "income": rng.normal(40_000, 12_000, rows).clip(0, 200_000),
            "score": rng.random(rows),
            "city": pd.Categorical(rng.choice(CITIES, rows), categories=CITIES),
            "smoker": pd.Categorical(rng.choice(["yes", "no"], rows), categories=["yes", "no"]),
        }
    )
    schema = Schema(
        {
            "age": Field.integer(bounds=(0, 120)),
            "income": Field.numeric(bounds=(0, 200_000)),
            "score": Field.numeric(bounds=(0, 1)),
            "city": Field.categorical(categories=CITIES),
            "smoker": Field.categorical(categories=["yes", "no"]),
        }
    )
    return frame, schema


def start_s3() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL=endpoint,
    )
    pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir("bench")
    return server, endpoint


def reader(vault: privml.Vault) -> Callable[[], float]:
    """One whole-table read; its seconds (opening the session is not the read)."""

    def read() -> float:
        session = vault.session("bench", purpose="bench")
        start = time.perf_counter()
        frame = session.read("data")
        elapsed = time.perf_counter() - start
        assert len(frame) > 0
        return elapsed

    return read


def build(folder: Path, frame: pd.DataFrame, schema: Schema, **storage: str) -> privml.Vault:
    vault = privml.Vault.create(folder, key=privml.generate_key(), **storage)
    vault.add_dataset("data", frame, schema=schema, budget=privml.Budget(epsilon=1.0))
    vault.add_purpose("bench", description="Benchmark", lawful_basis="consent")
    vault.add_principal("bench", roles=[])
    vault.grant(principal="bench", dataset="data", purpose="bench", mode="raw")
    return vault


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds = 100_000, 3
    compare(args.rows, args.rounds)


def compare(rows: int, rounds: int) -> Timings:
    """Read ``rows`` rows from a local folder and from S3 in interleaved rounds; print both."""
    frame, schema = synthetic(rows)
    server, _ = start_s3()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            uri = f"s3://bench/{uuid.uuid4().hex[:8]}"
            with (
                build(Path(tmp) / "local", frame, schema) as local,
                build(Path(tmp) / "s3", frame, schema, storage=uri) as remote,
            ):
                size = sum(p.stat().st_size for p in (Path(tmp) / "local/data").rglob("*"))
                times = interleave({"local": reader(local), "S3": reader(remote)}, rounds=rounds)
    finally:
        server.terminate()
        server.wait()
    print(f"session.read of {rows:,} rows x {frame.shape[1]} encrypted columns, 1 thread")
    print(f"  encrypted Parquet file: {size / 1e6:.1f} MB; load average {load_average()}")
    print(f"  local folder         : {times.median('local') * 1000:8.1f} ms (median)")
    print(f"  S3 (moto, 127.0.0.1) : {times.median('S3') * 1000:8.1f} ms (median)")
    print(f"  S3 / local (quoted)  : {times.ratio('S3', 'local')}")
    return times


if __name__ == "__main__":
    main()
