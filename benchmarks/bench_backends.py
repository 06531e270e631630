"""Metadata backends: SQLite against PostgreSQL, in the same run, with PostgreSQL/SQLite ratios.

(a) Committed charges per second with 1, 4 and 16 processes: each process
    opens the vault and charges ε=1e-6 Laplace events in a loop for a fixed
    time. Every charge is one serialized write transaction (the filter check,
    the ledger row, three running tallies, the audit entry) committed durably:
    SQLite in WAL mode with ``synchronous=FULL``, PostgreSQL with ``fsync=on``
    and ``synchronous_commit=on``. Target: PostgreSQL >= 2x SQLite at 16.
(b) Check latency with 1,000 events recorded: ``ledger.what_if`` (the
    admission check, nothing written) and a committed charge, median and p95.
    Target: median <= 20 ms on both.
(c) ``session.read`` of 1,000,000 rows from a local folder against an
    S3-compatible server on 127.0.0.1 (``bench_reads.py``; ``--rows 0`` skips it).

PostgreSQL is a private server started from the local binaries for this run
(``pg_server.py``), or the server at ``PRIVML_BENCH_POSTGRES_URL`` (a database
is created there per measurement).

    .venv/bin/python benchmarks/bench_backends.py [--seconds 8] [--events 1000] [--quick]
                                                  [--rows 1000000] [--profile 200]
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from pg_server import private_postgres

import privml
from privml.accounting import PrivacyEvent

SCHEMA = privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))})
PROCESSES = (1, 4, 16)
BACKENDS = ("sqlite", "postgresql")


@contextmanager
def postgres() -> Iterator[str]:
    url = os.environ.get("PRIVML_BENCH_POSTGRES_URL")
    if url:
        yield url
        return
    with private_postgres(port=54339) as started:
        yield started


def new_database(server: str) -> str:
    """A fresh database on ``server``: each measurement starts from an empty ledger."""
    name = f"privml_bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return sa.make_url(server).set(database=name).render_as_string(hide_password=False)


class Bench:
    """Where the vaults go: a temporary folder, and the PostgreSQL server."""

    def __init__(self, root: Path, server: str, key: bytes) -> None:
        self.root, self.server, self.key = root, server, key
        self._made = 0

    def new_vault(
        self, backend: str, *, epsilon: float, delta: float = 0.0
    ) -> tuple[Path, str | None]:
        """Create a vault with dataset ``d`` of budget (``epsilon``, ``delta``); return where."""
        self._made += 1
        folder = self.root / f"{backend}-{self._made}"
        url = new_database(self.server) if backend == "postgresql" else None
        with privml.Vault.create(folder, key=self.key, metadata_url=url, actor="bench") as vault:
            budget = privml.Budget(epsilon=epsilon, delta=delta)
            vault.add_dataset("d", pd.DataFrame({"x": [1.0]}), schema=SCHEMA, budget=budget)
        return folder, url

    def open(self, folder: Path, url: str | None) -> privml.Vault:
        return privml.Vault.open(folder, key=self.key, metadata_url=url, actor="bench")


# --- (a) throughput -----------------------------------------------------------------------
def _charger(
    bench: Bench, folder: Path, url: str | None, index: int, seconds: float, sync: Any
) -> None:
    ready, start, done = sync
    with bench.open(folder, url) as vault:
        event = PrivacyEvent.laplace(epsilon=1e-6)
        # One charge first, not counted: the accountants' lazy imports and the connection.
        vault.ledger.charge("d", event=event, principal=f"w{index}", purpose="bench")
        ready.put(index)
        start.wait()
        charged, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            vault.ledger.charge("d", event=event, principal=f"w{index}", purpose="bench")
            charged += 1
    done.put(charged)


def charges_per_second(bench: Bench, backend: str, processes: int, seconds: float) -> float:
    folder, url = bench.new_vault(backend, epsilon=1e6)
    ctx = multiprocessing.get_context("fork")
    sync = (ctx.Queue(), ctx.Event(), ctx.Queue())
    procs = [
        ctx.Process(target=_charger, args=(bench, folder, url, i, seconds, sync))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every process has opened the vault
        sync[0].get(timeout=300)
    sync[1].set()
    total = sum(sync[2].get(timeout=seconds + 300) for _ in procs)
    for p in procs:
        p.join()
    with bench.open(folder, url) as vault:  # what was counted was committed, and audited
        assert vault.budget("d").committed == total + processes
        assert vault.audit.verify().ok
    return total / seconds


def throughput(bench: Bench, seconds: float) -> None:
    print(f"(a) committed charges/s, {seconds:g} s per point (durable commits on both)")
    print(f"    {'processes':>9}  {'SQLite':>8}  {'PostgreSQL':>10}  {'PG/SQLite':>9}")
    for processes in PROCESSES:
        rates = {b: charges_per_second(bench, b, processes, seconds) for b in BACKENDS}
        ratio = rates["postgresql"] / rates["sqlite"]
        print(
            f"    {processes:>9}  {rates['sqlite']:>8.0f}  {rates['postgresql']:>10.0f}  "
            f"{ratio:>8.2f}x"
        )
    print("    target: PostgreSQL >= 2x SQLite at 16 processes")


# --- (b) latency --------------------------------------------------------------------------
def _timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _ms(xs: list[float]) -> tuple[float, float]:
    return 1e3 * statistics.median(xs), 1e3 * sorted(xs)[int(0.95 * len(xs))]


def latencies(bench: Bench, backend: str, events: int, repeat: int) -> dict[str, list[float]]:
    folder, url = bench.new_vault(backend, epsilon=1e6, delta=1e-5)
    kinds = [PrivacyEvent.laplace(epsilon=0.01), PrivacyEvent.gaussian(sigma=50.0)]
    with bench.open(folder, url) as vault:
        for i in range(events):
            vault.ledger.charge("d", event=kinds[i % 2], principal=f"p{i % 7}", purpose="b")
        probe = PrivacyEvent.gaussian(sigma=50.0)
        ledger = vault.ledger
        checks = _timed(lambda: ledger.what_if("d", probe, principal="p1", purpose="b"), repeat)
        charges = _timed(
            lambda: vault.ledger.charge("d", event=probe, principal="p1", purpose="b"), repeat
        )
    return {"what_if": checks, "charge": charges}


def latency(bench: Bench, events: int, repeat: int) -> None:
    figures = {b: latencies(bench, b, events, repeat) for b in BACKENDS}
    print(f"(b) latency with {events} events recorded, {repeat} calls, median / p95 in ms")
    print(f"    {'':<8}  {'SQLite':>15}  {'PostgreSQL':>15}  {'PG/SQLite':>9}")
    for what in ("what_if", "charge"):
        lite, pg = _ms(figures["sqlite"][what]), _ms(figures["postgresql"][what])
        print(
            f"    {what:<8}  {lite[0]:>6.2f} / {lite[1]:>6.2f}  {pg[0]:>6.2f} / {pg[1]:>6.2f}  "
            f"{pg[0] / lite[0]:>8.2f}x"
        )
    print("    target: what_if median <= 20 ms on both")


# --- where a charge's time goes -----------------------------------------------------------
def profile(bench: Bench, charges: int) -> None:
    for backend in BACKENDS:
        folder, url = bench.new_vault(backend, epsilon=1e6)
        with bench.open(folder, url) as vault:
            event = PrivacyEvent.laplace(epsilon=1e-6)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(charges):
                vault.ledger.charge("d", event=event, principal="w", purpose="bench")
            profiler.disable()
        print(f"--- {backend}: {charges} charges in one process, by own time")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per point in (a)")
    parser.add_argument("--events", type=int, default=1000, help="recorded before (b)")
    parser.add_argument("--repeat", type=int, default=200, help="calls timed in (b)")
    parser.add_argument("--quick", action="store_true", help="3 s per point, 100 calls")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N charges")
    parser.add_argument("--rows", type=int, default=1_000_000, help="read in (c); 0 skips it")
    args = parser.parse_args()
    seconds, repeat = (3.0, 100) if args.quick else (args.seconds, args.repeat)
    key = privml.generate_key()
    with postgres() as server, tempfile.TemporaryDirectory(prefix="privml-bench-") as tmp:
        bench = Bench(Path(tmp), server, key)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{os.cpu_count()} CPUs, load average {load} (other work skews the 16-process row)")
        if args.profile:
            profile(bench, args.profile)
            return
        throughput(bench, seconds)
        latency(bench, args.events, repeat)
    if args.rows:
        from bench_reads import compare  # beside this script, like pg_server

        compare(args.rows, 3 if args.quick else 5)


if __name__ == "__main__":
    main()
