"""The curator server against in-process sessions: DP mean releases per second and latency.

Each point runs the same release, ``dp.mean`` of a 10,000-row dataset's column
with a pure-ε Laplace mechanism (ε = 1e-6, δ = 0: the budget, ε = 1e6, fits
every release), from 1, 8 and 32 concurrent clients for a fixed time:

* in-process: threads, each with its own ``vault.session(...)`` on one open vault, as an
  embedded vault (decrypting at every release) and with the server's kept frames (its
  same work per release, without HTTP, tokens and stored answers);
* served: ``privml serve`` with 1 and 2 workers on 127.0.0.1, and threads in this
  process, each with its own ``privml.connect`` (its own HTTP connection).

Every point starts from a fresh vault built the same way, on SQLite (WAL,
``synchronous=FULL``) and on a private PostgreSQL (``fsync=on``, ``pg_server.py``;
or the server at ``PRIVML_BENCH_POSTGRES_URL``). Every counted release is
committed durably (its ledger charge and audit entry; served, its stored answer
too) before it is answered; the ledger's committed count is checked against the
count after each point. Clients and servers share this machine's cores, so the
figures are a floor, not a capacity plan.

Targets: p50 overhead (service p50 - in-process p50 with the server's kept frames, one
client, one worker) <= 5 ms; >= 300 durable releases/s with 2 workers.

    .venv/bin/python benchmarks/bench_service.py [--quick] [--seconds 8]
                                                 [--backends sqlite,postgresql]
                                                 [--profile 300]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from bench_backends import new_database, postgres

import privml

ROOT = Path(__file__).resolve().parents[1]
ROWS = 10_000
EPSILON = 1e-6
CLIENTS = (1, 8, 32)
WARM_UP = 3
SCHEMA = privml.Schema(
    {
        "x": privml.Field.numeric(bounds=(0, 100), tags="measure"),
        "y": privml.Field.numeric(bounds=(0, 1), tags="measure"),
    }
)


# --- vaults -------------------------------------------------------------------------------
@dataclass
class Setup:
    folder: Path
    key_file: Path
    url: str | None
    token: str

    def open(self) -> privml.Vault:
        return privml.Vault.open(self.folder, key_file=self.key_file, metadata_url=self.url)


class Vaults:
    """Fresh vaults, all built the same way, on SQLite or on the PostgreSQL server."""

    def __init__(self, root: Path, pg_server: str | None) -> None:
        self.root, self.pg_server = root, pg_server
        self.key_file = root / "vault.key"
        self.key_file.write_bytes(privml.generate_key())
        self.key_file.chmod(0o600)
        rng = np.random.default_rng(0)
        self.frame = pd.DataFrame({"x": rng.uniform(0, 100, ROWS), "y": rng.uniform(0, 1, ROWS)})
        self._made = 0

    def new(self, backend: str) -> Setup:
        self._made += 1
        folder = self.root / f"{backend}-{self._made}"
        url = new_database(self.pg_server) if backend == "postgresql" else None
        assert backend == "sqlite" or self.pg_server is not None
        with privml.Vault.create(folder, key_file=self.key_file, metadata_url=url) as vault:
            budget = privml.Budget(epsilon=1e6, delta=0.0)
            vault.add_dataset("d", self.frame, schema=SCHEMA, budget=budget)
            vault.add_purpose("bench", description="benchmark", lawful_basis="none")
            vault.add_principal("ana", roles=["analyst"])
            vault.grant(role="analyst", dataset="d", purpose="bench", mode="dp_aggregate")
            token = vault.tokens.issue("ana", purposes=["bench"]).secret
        return Setup(folder, self.key_file, url, token)


# --- servers ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(setup: Setup, workers: int, log: Path) -> Iterator[str]:
    """``privml serve`` on the vault (rate limit raised: one principal makes every request)."""
    port = free_port()
    command = [sys.executable, "-m", "privml", "serve", str(setup.folder)]
    command += ["--key-file", str(setup.key_file), "--port", str(port)]
    command += [
        "--workers",
        str(workers),
        "--rate",
        "1000000",
        "--in-flight",
        "100000",
        "--log-level",
        "warning",
    ]
    if setup.url is not None:
        command += ["--metadata-url", setup.url]
    env = {k: v for k, v in os.environ.items() if k != "PRIVML_VAULT_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


# --- measuring ----------------------------------------------------------------------------
@dataclass
class Point:
    releases: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.releases / self.seconds

    def p(self, q: float) -> float:
        xs = sorted(self.latencies)
        return 1e3 * xs[min(len(xs) - 1, int(q * len(xs)))]

    @property
    def p50(self) -> float:
        return 1e3 * statistics.median(self.latencies)


def run_clients(makers: list[Callable[[], Callable[[], Any]]], seconds: float) -> Point:
    """Each thread makes its release function (its own session), warms up, then loops."""
    start = threading.Barrier(len(makers) + 1)
    results: list[list[float]] = [[] for _ in makers]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            release = makers[i]()
            for _ in range(WARM_UP):  # not counted: connections, lazy imports in each worker
                release()
        except BaseException as err:
            errors.append(err)
            start.abort()
            return
        try:
            start.wait()
        except threading.BrokenBarrierError:
            return
        times, stop = results[i], time.perf_counter() + seconds
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                release()
                times.append(time.perf_counter() - t)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(makers))]
    for t in threads:
        t.start()
    with suppress(threading.BrokenBarrierError):
        start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    flat = [x for xs in results for x in xs]
    return Point(len(flat), elapsed, flat)


def in_process(setup: Setup, clients: int, seconds: float, *, kept: bool = False) -> Point:
    """Releases from threads in this process; ``kept``: with the server's kept frames (the
    same work a server does per release, without HTTP, tokens and stored answers)."""
    with setup.open() as vault:
        if kept:
            vault._store.keep_frames(256 * 2**20)

        def make() -> Callable[[], Any]:
            dp = vault.session("ana", purpose="bench").dp
            return lambda: dp.mean("d", "x", epsilon=EPSILON)

        point = run_clients([make] * clients, seconds)
        check(vault, point, clients)
    return point


def served(setup: Setup, url: str, clients: int, seconds: float) -> Point:
    sessions: list[Any] = []
    lock = threading.Lock()

    def make() -> Callable[[], Any]:
        session = privml.connect(url, token=setup.token, purpose="bench", retries=0)
        with lock:
            sessions.append(session)
        return lambda: session.dp.mean("d", "x", epsilon=EPSILON)

    try:
        return run_clients([make] * clients, seconds)
    finally:
        for session in sessions:
            session.close()


def check(vault: privml.Vault, point: Point, clients: int) -> None:
    """Every counted release (and each warm-up) was committed to the ledger."""
    committed = vault.budget("d").committed
    assert committed == point.releases + WARM_UP * clients, (committed, point.releases)


# --- the table ----------------------------------------------------------------------------
def measure(vaults: Vaults, backend: str, seconds: float, log: Path) -> dict[Any, Point]:
    out: dict[Any, Point] = {}
    for clients in CLIENTS:
        point = out["in-process", clients] = in_process(vaults.new(backend), clients, seconds)
        print(f"  {backend} in-process {clients:>2} clients: {point.rate:.0f}/s", flush=True)
        point = out["kept", clients] = in_process(vaults.new(backend), clients, seconds, kept=True)
        print(f"  {backend} in-process, frames kept {clients:>2}: {point.rate:.0f}/s", flush=True)
    for workers in (1, 2):
        for clients in CLIENTS:
            setup = vaults.new(backend)
            with serving(setup, workers, log) as url:
                point = served(setup, url, clients, seconds)
            with setup.open() as vault:
                check(vault, point, clients)
            out[workers, clients] = point
            print(f"  {backend} {workers} worker(s) {clients:>2} clients: {point.rate:.0f}/s",
                  flush=True)  # fmt: skip
    return out


def report(backend: str, points: dict[Any, Point]) -> None:
    print(f"\n{backend}: dp.mean releases/s and latency p50 / p99 (ms)")
    print("  in-process: an embedded vault (decrypts at every release); kept: in-process with")
    print("  the server's kept frames (its same work, without HTTP, tokens, stored answers)")
    modes = ("in-process", "kept", 1, 2)
    names = ("in-process", "kept", "1 worker", "2 workers")
    print(f"  {'clients':>7}  " + "  ".join(f"{n:>22}" for n in names)
          + f"  {'1w/kept':>7}  {'2w/kept':>7}  {'p50 +ms (1w)':>12}")  # fmt: skip
    for clients in CLIENTS:
        cells = [
            f"{points[m, clients].rate:>7.0f} {points[m, clients].p50:>6.1f} / "
            f"{points[m, clients].p(0.99):>6.1f}"
            for m in modes
        ]
        base = points["kept", clients]
        one, two = points[1, clients], points[2, clients]
        print(
            f"  {clients:>7}  " + "  ".join(f"{c:>22}" for c in cells)
            + f"  {one.rate / base.rate:>6.2f}x  {two.rate / base.rate:>6.2f}x"
            f"  {one.p50 - base.p50:>12.1f}"
        )  # fmt: skip
    overhead = points[1, 1].p50 - points["kept", 1].p50
    best = max(points[2, c].rate for c in CLIENTS)
    met = "met" if overhead <= 5.0 else "missed"
    print(f"  target p50 overhead <= 5 ms (1 client, 1 worker, against kept): {overhead:.1f} ms"
          f"  {met}")  # fmt: skip
    met = "met" if best >= 300 else "missed"
    print(f"  target >= 300 durable releases/s with 2 workers: {best:.0f}/s (best of "
          f"{', '.join(map(str, CLIENTS))} clients)  {met}")  # fmt: skip


# --- where a served release's time goes ------------------------------------------------------
def profile(vaults: Vaults, releases: int) -> None:
    """The server's own steps for a release, in one thread under cProfile (no HTTP, no asyncio):
    authenticate the token, admit, look up the stored reply, the release, store the reply."""
    import json

    from privml.service._limits import Limits
    from privml.service._service import Service, _digest
    from privml.service._wire import result_to_json

    setup = vaults.new("sqlite")
    with setup.open() as vault:
        service = Service(vault, Limits(rate=1e9))
        vault._store.keep_frames(256 * 2**20)  # as create_app does
        headers = {"authorization": f"Bearer {setup.token}", "privml-purpose": "bench"}
        request = {"dataset": "d", "statistic": "mean", "column": "x", "epsilon": EPSILON}

        def release() -> None:
            caller = service._authenticate(headers, "127.0.0.1")
            service.admit(caller, "dp.statistic")
            key, tag = uuid.uuid4().hex, f"dp.mean:{_digest(caller.purpose, request)}"
            assert vault._replies.get(caller.principal, key, action=tag) is None
            result = service.session(caller, key).dp.mean("d", "x", epsilon=EPSILON)
            body = json.dumps(result_to_json(result)).encode()
            vault._replies.put(caller.principal, key, action=tag, body=body,
                               media_type="application/json")  # fmt: skip

        release()
        profiler = cProfile.Profile()
        t = time.perf_counter()
        profiler.enable()
        for _ in range(releases):
            release()
        profiler.disable()
        elapsed = time.perf_counter() - t
    print(f"\n--- sqlite: {releases} releases through the server's steps in one thread, "
          f"{1e3 * elapsed / releases:.2f} ms each under the profiler")  # fmt: skip
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per point")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per point")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--profile", type=int, default=0, help="profile this many releases")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    backends = [b for b in args.backends.split(",") if b]
    print(f"{ROWS} rows; dp.mean ε={EPSILON:g}, δ=0; {seconds:g} s per point; "
          f"{os.cpu_count()} CPUs shared by clients and servers")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="privml-bench-service-") as tmp:
        root = Path(tmp)
        with postgres() if "postgresql" in backends else _nothing() as pg:
            vaults = Vaults(root, pg)
            tables = {b: measure(vaults, b, seconds, root / "server.log") for b in backends}
            if args.profile:
                profile(vaults, args.profile)
        for backend, points in tables.items():
            report(backend, points)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
