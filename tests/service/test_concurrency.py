"""Many clients at once spend one budget exactly: never more, never a 5xx, every charge logged.

Sixteen analysts' sessions (threads, each its own ``privml.connect``) ask a
server with two worker processes for pure-ε counts until the budget refuses
them. The δ = 0 budget composes pure ε additively, so exactly ``K`` releases
fit; the ledger must hold ``K`` committed charges, the clients must have been
granted exactly the ε the ledger holds, and every answer must be a 2xx or a
409 ``BudgetExceededError``. On SQLite and on PostgreSQL; and two separate
server processes on one PostgreSQL database serve one vault consistently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from _server import Server, server

import privml
from conftest import SCHEMA, Setup, build, patients
from privml import BudgetExceededError
from privml.service._client import RemoteSession, connect

CLIENTS = 16
TOTAL = 2.0
EACH = 0.05
FIT = 40  # TOTAL / EACH releases fit a δ = 0 budget (pure ε adds up)
DATASET = "tally"


def with_tally(setup: Setup) -> None:
    """Add a dataset with a δ = 0 budget of ``TOTAL`` that ana may count for research."""
    with setup.open() as vault:
        vault.add_dataset(
            DATASET, patients(), schema=SCHEMA, budget=privml.Budget(epsilon=TOTAL, delta=0.0)
        )
        vault.grant(
            role="analyst", dataset=DATASET, purpose="research", mode="dp_aggregate",
            tags=["health"],
        )  # fmt: skip


@dataclass
class Tallies:
    """What the clients saw: every status, the ε they were granted, anything unexpected."""

    statuses: list[int] = field(default_factory=list)
    granted: list[float] = field(default_factory=list)
    refused: int = 0
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def spend(url: str, token: str, tallies: Tallies, start: threading.Barrier) -> None:
    """One client: count until the budget refuses, recording each status and grant."""
    try:
        session = connect(url, token=token, purpose="research", retries=0, timeout=60)
    except Exception as err:  # a failed connect is a finding, recorded
        with tallies.lock:
            tallies.unexpected.append(f"connect: {type(err).__name__}: {err}")
        start.abort()
        return

    def seen(response: object) -> None:
        with tallies.lock:
            tallies.statuses.append(int(getattr(response, "status_code", 0)))

    session._client.event_hooks["response"].append(seen)
    with session:
        start.wait()
        for _ in range(2 * FIT):  # bounded: the budget must refuse long before this
            try:
                result = session.dp.count(DATASET, epsilon=EACH)
            except BudgetExceededError:
                with tallies.lock:
                    tallies.refused += 1
                return
            except Exception as err:  # anything else is a finding, recorded
                with tallies.lock:
                    tallies.unexpected.append(f"{type(err).__name__}: {err}")
                return
            with tallies.lock:
                tallies.granted.append(result.epsilon)


def race(urls: list[str], token: str) -> Tallies:
    """``CLIENTS`` threads spend the tally dataset's budget at once, spread over ``urls``."""
    tallies = Tallies()
    start = threading.Barrier(CLIENTS)
    threads = [
        threading.Thread(target=spend, args=(urls[i % len(urls)], token, tallies, start))
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    return tallies


def ledger_rows(setup: Setup) -> list[sa.Row[tuple[str, float | None]]]:
    """The tally dataset's ledger rows (status, pure ε), as the database holds them."""
    url = setup.metadata_url or f"sqlite:///{setup.folder / 'meta.db'}"
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text("SELECT status, pure_epsilon FROM ledger_events WHERE dataset = :d"),
                    {"d": DATASET},
                )
            )
    finally:
        engine.dispose()


def check_exact(setup: Setup, tallies: Tallies) -> None:
    assert tallies.unexpected == []
    assert set(tallies.statuses) <= {200, 409}, sorted(set(tallies.statuses))
    assert tallies.refused == CLIENTS  # every client went on until refused
    rows = ledger_rows(setup)
    committed = [eps for status, eps in rows if status == "committed"]
    assert len(committed) == len(rows) == FIT
    assert len(tallies.granted) == FIT
    assert sum(tallies.granted) == pytest.approx(sum(e or 0.0 for e in committed), abs=1e-12)
    assert sum(tallies.granted) == pytest.approx(TOTAL)
    with setup.open() as vault:
        assert vault.audit.verify().ok
        status = vault.budget(DATASET)
        assert status.epsilon_spent == pytest.approx(TOTAL)


@pytest.fixture
def served(
    backend: str, vaults: object, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Setup, Callable[..., list[Server]]]]:
    """A fresh vault with the tally dataset on this test's backend, and a server maker."""
    url = request.getfixturevalue("pg_schemas")() if backend == "postgresql" else None
    setup = build(tmp_path / "vault", tmp_path / "vault.key", url)
    with_tally(setup)
    started: list[Server] = []

    def start(*args: list[str]) -> list[Server]:
        """Start a server per argument list, all at once (each start imports privml)."""
        made = [
            server(
                setup.folder,
                setup.key_file,
                tmp_path / f"server-{len(started) + i}.log",
                args=["--rate", "100000", *extra],
                metadata_url=url,
            )
            for i, extra in enumerate(args)
        ]
        started.extend(made)
        with ThreadPoolExecutor(len(made)) as pool:
            return list(pool.map(Server.start, made))

    yield setup, start
    for srv in started:
        srv.stop()


@pytest.mark.sqlite_only("PostgreSQL: the next test, with a second server on the database")
def test_sixteen_clients_spend_the_budget_exactly_on_two_workers(
    served: tuple[Setup, Callable[..., list[Server]]],
) -> None:
    setup, start = served
    (srv,) = start(["--workers", "2"])
    tallies = race([srv.url], setup.tokens["ana"])
    check_exact(setup, tallies)
    assert "Traceback" not in srv.output()


@pytest.mark.postgresql_only("two servers on one database share its ledger")
def test_two_workers_and_a_second_server_on_one_database_spend_it_exactly(
    served: tuple[Setup, Callable[..., list[Server]]],
) -> None:
    """A server with two workers and a second server on the same PostgreSQL database: a
    charge through one is seen by the other, and clients of both spend the budget exactly."""
    setup, start = served
    first, second = start(["--workers", "2"], [])
    ana = setup.tokens["ana"]
    one: RemoteSession = connect(first.url, token=ana, purpose="research", retries=0)
    other: RemoteSession = connect(second.url, token=ana, purpose="research", retries=0)
    with one, other:
        assert other.budget(DATASET).epsilon_spent == 0.0
        granted = one.dp.count(DATASET, epsilon=EACH).epsilon
        assert other.budget(DATASET).epsilon_spent == pytest.approx(EACH)
        assert one.budget(DATASET).epsilon_spent == pytest.approx(EACH)
    tallies = race([first.url, second.url], ana)
    tallies.granted.append(granted)
    check_exact(setup, tallies)
    assert "Traceback" not in first.output() + second.output()
