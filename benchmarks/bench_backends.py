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

Every part runs in interleaved rounds (``_rounds.interleave``: one warm-up round, then
each variant once per round in a rotated order). In (a) a round measures SQLite and
PostgreSQL once each at a number of processes (a fresh vault each time, each process's
first charge not counted); in (b) a round makes a batch of each call on each backend. The
figures quoted are medians of the per-round ratio PostgreSQL / SQLite (throughput in (a),
latency in (b)), with quartiles, extremes and rounds; (c) prints its own.

    .venv/bin/python benchmarks/bench_backends.py [--seconds 4] [--rounds 3] [--events 1000]
                                                  [--quick] [--rows 1000000] [--profile 200]
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import interleave, load_average, pin_threads

pin_threads()

import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from pg_server import private_postgres  # noqa: E402

import privml  # noqa: E402
from privml.accounting import PrivacyEvent  # noqa: E402

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


def throughput(bench: Bench, seconds: float, rounds: int) -> None:
    print(f"(a) committed charges/s, {seconds:g} s per point (durable commits on both)")
    for processes in PROCESSES:

        def point(backend: str, processes: int = processes) -> Callable[[], float]:
            return lambda: 1.0 / charges_per_second(bench, backend, processes, seconds)

        times = interleave({b: point(b) for b in BACKENDS}, rounds=rounds)
        lite = times.rate("sqlite", 1, "charges")
        pg = times.rate("postgresql", 1, "charges")
        print(f"    {processes:>2} process(es): SQLite {lite}")
        print(f"                    PostgreSQL {pg}")
        # seconds per charge, so SQLite's over PostgreSQL's is the throughput PG / SQLite
        label = "(quoted) " if processes == PROCESSES[-1] else ""
        print(f"                    PG / SQLite {label}{times.ratio('sqlite', 'postgresql')}")
    print("    target: PostgreSQL >= 2x SQLite at 16 processes")


# --- (b) latency --------------------------------------------------------------------------
def _ms(xs: list[float]) -> tuple[float, float]:
    return 1e3 * statistics.median(xs), 1e3 * sorted(xs)[int(0.95 * len(xs))]


def latency(bench: Bench, events: int, repeat: int, rounds: int) -> None:
    kinds = [PrivacyEvent.laplace(epsilon=0.01), PrivacyEvent.gaussian(sigma=50.0)]
    probe = PrivacyEvent.gaussian(sigma=50.0)
    calls: dict[str, list[float]] = {}
    variants: dict[str, Callable[[], float]] = {}
    vaults = []
    for backend in BACKENDS:
        folder, url = bench.new_vault(backend, epsilon=1e6, delta=1e-5)
        vault = bench.open(folder, url)
        vaults.append(vault)
        for i in range(events):
            vault.ledger.charge("d", event=kinds[i % 2], principal=f"p{i % 7}", purpose="b")
        ledger = vault.ledger
        actions = {
            "what_if": lambda ledger=ledger: ledger.what_if("d", probe, principal="p1",
                                                            purpose="b"),
            "charge": lambda ledger=ledger: ledger.charge("d", event=probe, principal="p1",
                                                          purpose="b"),
        }  # fmt: skip
        for what, action in actions.items():
            name = f"{backend} {what}"
            calls[name] = []

            def batch(action: Callable[[], Any] = action, name: str = name) -> float:
                seconds = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    action()
                    seconds.append(time.perf_counter() - t)
                calls[name].extend(seconds)
                return sum(seconds) / repeat

            variants[name] = batch
    try:
        times = interleave(variants, rounds=rounds)
    finally:
        for vault in vaults:
            vault.close()
    for name in calls:
        del calls[name][:repeat]  # the warm-up round's
    print(f"(b) latency with {events} events recorded, {repeat} calls a round, {rounds} rounds")
    print(f"    median / p95 in ms  {'SQLite':>15}  {'PostgreSQL':>15}")
    for what in ("what_if", "charge"):
        lite, pg = _ms(calls[f"sqlite {what}"]), _ms(calls[f"postgresql {what}"])
        print(f"    {what:<18}  {lite[0]:>6.2f} / {lite[1]:>6.2f}  {pg[0]:>6.2f} / {pg[1]:>6.2f}")
    for what in ("what_if", "charge"):
        ratio = times.ratio(f"postgresql {what}", f"sqlite {what}")
        print(f"    {what} time per call PG / SQLite (quoted): {ratio}")
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
    parser.add_argument("--seconds", type=float, default=4.0, help="per point in (a)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a), (b) and (c)")
    parser.add_argument("--events", type=int, default=1000, help="recorded before (b)")
    parser.add_argument("--repeat", type=int, default=100, help="calls a round in (b)")
    parser.add_argument(
        "--quick", action="store_true", help="2 s per point, 2 rounds, 300 events, 100,000 rows"
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N charges")
    parser.add_argument("--rows", type=int, default=1_000_000, help="read in (c); 0 skips it")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.events, args.repeat = 2.0, 2, 300, 50
        args.rows = min(args.rows, 100_000)
    key = privml.generate_key()
    with postgres() as server, tempfile.TemporaryDirectory(prefix="privml-bench-") as tmp:
        bench = Bench(Path(tmp), server, key)
        print(f"{os.cpu_count()} CPUs, 1 math thread, load average {load_average()}")
        if args.profile:
            profile(bench, args.profile)
            return
        throughput(bench, args.seconds, args.rounds)
        latency(bench, args.events, args.repeat, args.rounds)
    if args.rows:
        from bench_reads import compare  # beside this script, like pg_server

        compare(args.rows, args.rounds)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
