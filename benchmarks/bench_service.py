"""The curator server against in-process sessions: DP mean releases per second and latency.

Each point runs the same release, ``dp.mean`` of a 10,000-row dataset's column
with a pure-ε Laplace mechanism (ε = 1e-6, δ = 0: the budget, ε = 1e6, fits
every release), from 1, 8 and 32 concurrent clients for a fixed time:

* in-process: threads, each with its own ``vault.session(...)`` on one open vault, as an
  embedded vault (decrypting at every release) and with the server's kept frames (its
  same work per release, without HTTP, tokens and stored answers);
* served: ``privml serve`` with 1 and 2 workers on 127.0.0.1, and threads in this
  process, each with its own ``privml.connect`` (its own HTTP connection).

Each of the four ways has its own vault, built the same way, on SQLite (WAL,
``synchronous=FULL``) and on a private PostgreSQL (``fsync=on``, ``pg_server.py``;
or the server at ``PRIVML_BENCH_POSTGRES_URL``); the two servers start once per
backend and serve every round. At each number of clients the four ways run in
interleaved rounds (``_rounds.interleave``: one warm-up round, then each way once per
round for ``--seconds``, in a rotated order). Every counted release is committed
durably (its ledger charge and audit entry; served, its stored answer too) before it
is answered; each vault's ledger count is checked against the releases counted.
Clients and servers share this machine's cores, so the figures are a floor, not a
capacity plan. Quoted: the per-round throughput ratios served / kept, the median of the
per-round p50 overhead (1 client, 1 worker), and the 2 workers' rate, each with its
quartiles, extremes and rounds.

Targets: p50 overhead (service p50 - in-process p50 with the server's kept frames, one
client, one worker) <= 5 ms; >= 300 durable releases/s with 2 workers.

    .venv/bin/python benchmarks/bench_service.py [--quick] [--seconds 1.5] [--rounds 3]
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

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import interleave, load_average, pin_threads

pin_threads()

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bench_backends import new_database, postgres  # noqa: E402

import privml  # noqa: E402

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


def in_process(
    setup: Setup, clients: int, seconds: float, *, kept: bool = False, before: int = 0
) -> Point:
    """Releases from threads in this process; ``kept``: with the server's kept frames (the
    same work a server does per release, without HTTP, tokens and stored answers).
    ``before``: the releases the vault's ledger already holds."""
    with setup.open() as vault:
        if kept:
            vault._store.keep_frames(256 * 2**20)

        def make() -> Callable[[], Any]:
            dp = vault.session("ana", purpose="bench").dp
            return lambda: dp.mean("d", "x", epsilon=EPSILON)

        point = run_clients([make] * clients, seconds)
        check(vault, before + point.releases + WARM_UP * clients)
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


def check(vault: privml.Vault, expected: int) -> None:
    """Every counted release (and each warm-up) was committed to the ledger."""
    committed = vault.budget("d").committed
    assert committed == expected, (committed, expected)


# --- the table ----------------------------------------------------------------------------
MODES: tuple[Any, ...] = ("in-process", "kept", 1, 2)
NAMES = {"in-process": "in-process", "kept": "kept", 1: "1 worker", 2: "2 workers"}


@dataclass
class Measured:
    """One backend: per number of clients, the rounds' timings and their points."""

    times: dict[int, Any]  # clients -> Timings of seconds per release, by NAMES
    points: dict[Any, list[Point]]  # (mode, clients) -> counted rounds' points


def measure(
    vaults: Vaults, backend: str, seconds: float, rounds: int, log: Path, clients_: list[int]
) -> Measured:
    setups = {mode: vaults.new(backend) for mode in MODES}
    expected = dict.fromkeys(MODES, 0)
    points: dict[Any, list[Point]] = {}
    times = {}
    with serving(setups[1], 1, log) as one, serving(setups[2], 2, log) as two:
        urls = {1: one, 2: two}
        for clients in clients_:

            def way(mode: Any, clients: int = clients) -> Callable[[], float]:
                def run() -> float:
                    if mode in urls:
                        point = served(setups[mode], urls[mode], clients, seconds)
                    else:
                        point = in_process(setups[mode], clients, seconds,
                                           kept=mode == "kept", before=expected[mode])  # fmt: skip
                    expected[mode] += point.releases + WARM_UP * clients
                    points.setdefault((mode, clients), []).append(point)
                    print(f"  {backend} {NAMES[mode]:>10} {clients:>2} clients: "
                          f"{point.rate:.0f}/s", flush=True)  # fmt: skip
                    return point.seconds / point.releases

                return run

            times[clients] = interleave({NAMES[m]: way(m) for m in MODES}, rounds=rounds)
    for mode in urls:
        with setups[mode].open() as vault:
            check(vault, expected[mode])
    counted = {key: measured[1:] for key, measured in points.items()}  # not the warm-up's
    return Measured(times, counted)


def _pooled(points: list[Point]) -> Point:
    return Point(
        sum(p.releases for p in points),
        sum(p.seconds for p in points),
        [x for p in points for x in p.latencies],
    )


def report(backend: str, measured: Measured) -> None:
    print(f"\n{backend}: dp.mean releases/s (median of rounds), latency p50 / p99 (ms, pooled)")
    print("  in-process: an embedded vault (decrypts at every release); kept: in-process with")
    print("  the server's kept frames (its same work, without HTTP, tokens, stored answers)")
    print(f"  {'clients':>7}  " + "  ".join(f"{NAMES[m]:>22}" for m in MODES))
    for clients in measured.times:
        times = measured.times[clients]
        cells = []
        for m in MODES:
            pooled = _pooled(measured.points[m, clients])
            rate = times.rate(NAMES[m], 1, "releases").median
            cells.append(f"{rate:>7.0f} {pooled.p50:>6.1f} / {pooled.p(0.99):>6.1f}")
        print(f"  {clients:>7}  " + "  ".join(f"{c:>22}" for c in cells))
    for clients in measured.times:
        times = measured.times[clients]  # seconds per release: kept's over served's
        one, two = times.ratio("kept", "1 worker"), times.ratio("kept", "2 workers")
        print(f"  {clients:>2} clients, throughput 1 worker / kept: {one}")
        print(f"              throughput 2 workers / kept: {two}")
    gaps = [
        served.p50 - kept.p50
        for served, kept in zip(measured.points[1, 1], measured.points["kept", 1], strict=True)
    ]
    gap = statistics.median(gaps)
    q1, _, q3 = statistics.quantiles(gaps, n=4, method="inclusive") if gaps[1:] else [gap] * 3
    print(
        f"  p50 overhead, 1 client, 1 worker, against kept (quoted): median {gap:.1f} ms"
        f" [{q1:.1f} .. {q3:.1f}] (min {min(gaps):.1f}, max {max(gaps):.1f}; {len(gaps)} rounds)"
        f"  {'met' if gap <= 5.0 else 'MISSED'} (target <= 5 ms)"
    )
    rates = {c: t.rate("2 workers", 1, "releases") for c, t in measured.times.items()}
    best = max(rates, key=lambda c: rates[c].median)
    rate = rates[best]
    met = "met" if rate.median >= 300 else "MISSED"
    print(f"  2 workers, {best} clients (quoted): {rate}  {met} (target >= 300 durable/s)")


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
    parser.add_argument("--quick", action="store_true", help="1 s a point, 2 rounds, 1, 8 clients")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--profile", type=int, default=0, help="profile this many releases")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.clients = 1.0, 2, "1,8"
    clients = [int(c) for c in args.clients.split(",")]
    if 1 not in clients:
        parser.error("--clients must include 1 (the p50 overhead is taken at one client)")
    backends = [b for b in args.backends.split(",") if b]
    print(f"{ROWS} rows; dp.mean ε={EPSILON:g}, δ=0; {args.seconds:g} s per point, "
          f"{args.rounds} rounds; {os.cpu_count()} CPUs shared by clients and servers; "
          f"load average {load_average()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="privml-bench-service-") as tmp:
        root = Path(tmp)
        with postgres() if "postgresql" in backends else _nothing() as pg:
            vaults = Vaults(root, pg)
            tables = {
                b: measure(vaults, b, args.seconds, args.rounds, root / "server.log", clients)
                for b in backends
            }
            if args.profile:
                profile(vaults, args.profile)
        for backend, measured in tables.items():
            report(backend, measured)
    print(f"load average after: {load_average()}")


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
