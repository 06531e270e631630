"""A server killed in the middle of a release: the retry with the same request id is charged once.

The moment of the kill is read from the vault's database, not guessed from a
clock: (a) after the answer is stored and before the client read it, and (b)
after a DP-SGD run's reservation committed and before its answer exists. The
server is killed with SIGKILL (no clean-up runs), started again, and the client
sends the same request with the same ``Idempotency-Key``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from _server import Server, server

from conftest import SLOW_RUN, Setup, build
from privml.service._schemas import StatisticRequest
from privml.service._service import _digest

pytestmark = pytest.mark.sqlite_only("a kill and a restart; the ledger's locks are tested apart")

COUNT = "/v1/datasets/patients/dp/count"
TRAIN = "/v1/datasets/patients/dp/train"
SPEC = SLOW_RUN


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("crash")
    return build(root / "vault", root / "vault.key")


@pytest.fixture(scope="module")
def srv(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    started = server(setup.folder, setup.key_file, log, args=["--rate", "100000"]).start()
    yield started
    started.stop()


def headers(setup: Setup, key: str, who: str = "ana", purpose: str = "research") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {setup.tokens[who]}",
        "Privml-Purpose": purpose,
        "Idempotency-Key": key,
    }


def query(setup: Setup, sql: str, **params: Any) -> list[Any]:
    """Rows of the vault's metadata, read as its database admin would (no key)."""
    engine = sa.create_engine(f"sqlite:///{setup.folder / 'meta.db'}", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def until(what: str, check: Any, *, wait: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something true (the database, not a clock, decides)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"never saw {what} within {wait} s")


def send_unread(url: str, path: str, head: dict[str, str], body: dict[str, Any]) -> socket.socket:
    """Send a request on a raw socket and read nothing back (the reply waits unread)."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    lines += ["Content-Type: application/json", f"Content-Length: {len(data)}", "", ""]
    sock = socket.create_connection((host, int(port)))
    sock.sendall("\r\n".join(lines).encode() + data)
    return sock


def stored_reply(setup: Setup, key: str, action: str, request: dict[str, Any]) -> bytes:
    """The answer the server stored for ana's request ``key``, decrypted with the vault key."""
    with setup.open() as vault:
        stored = vault._replies.get("ana", key, action=f"{action}:{_digest('research', request)}")
    assert stored is not None
    return stored.body


def test_killed_after_the_answer_was_stored_the_retry_gets_it_uncharged(
    setup: Setup, srv: Server
) -> None:
    key = "crash-after-store"
    body = {"epsilon": 0.1}
    before = query(setup, "SELECT count(*) FROM ledger_events")[0][0]
    sock = send_unread(srv.url, COUNT, headers(setup, key), body)
    stored = "SELECT 1 FROM replies WHERE key = :k AND media_type <> ''"  # not a claim
    until("the stored reply", lambda: query(setup, stored, k=key))
    charged = query(setup, "SELECT request_id, status FROM ledger_events ORDER BY id")[before:]
    assert [status for _, status in charged] == ["committed"]
    srv.kill()
    sock.close()  # the client never read the reply
    srv.start()

    request = {"dataset": "patients", "statistic": "count", **StatisticRequest(**body).model_dump()}
    first = stored_reply(setup, key, "dp.count", request)
    for _ in range(2):
        again = httpx.post(srv.url + COUNT, json=body, headers=headers(setup, key), timeout=60)
        assert again.status_code == 200, again.text
        assert again.headers["Privml-Replayed"] == "true"
        assert again.content == first
    assert json.loads(first)["request_id"] == charged[0][0]
    rows = query(setup, "SELECT request_id, status FROM ledger_events ORDER BY id")[before:]
    assert rows == charged  # charged once, by the first request


def test_killed_during_training_the_retry_is_charged_once_and_answered(
    setup: Setup, srv: Server
) -> None:
    key = "crash-while-reserved"
    body = {"spec": SPEC}
    before = query(setup, "SELECT count(*) FROM ledger_events")[0][0]
    sock = send_unread(srv.url, TRAIN, headers(setup, key), body)
    (reserved,) = until(
        "the reservation",
        lambda: query(setup, "SELECT request_id FROM ledger_events WHERE status = 'reserved'"),
    )
    srv.kill()
    sock.close()
    # Killed between the reservation and the answer: nothing settled, only the claim stored.
    assert query(setup, "SELECT status FROM ledger_events ORDER BY id")[before:] == [("reserved",)]
    assert query(setup, "SELECT media_type FROM replies WHERE key = :k", k=key) == [("",)]
    srv.start()

    answer = httpx.post(srv.url + TRAIN, json=body, headers=headers(setup, key), timeout=300)
    assert answer.status_code == 200, answer.text
    assert "Privml-Replayed" not in answer.headers  # no one had seen an answer: a fresh one
    rows = query(setup, "SELECT request_id, status, pure_epsilon FROM ledger_events ORDER BY id")[
        before:
    ]
    assert [(r[0], r[1]) for r in rows] == [(reserved[0], "committed")]
    again = httpx.post(srv.url + TRAIN, json=body, headers=headers(setup, key), timeout=300)
    assert again.status_code == 200
    assert again.headers["Privml-Replayed"] == "true"
    assert again.content == answer.content
    assert query(setup, "SELECT count(*) FROM ledger_events")[0][0] == before + 1
    with setup.open() as vault:
        assert vault.audit.verify().ok


def test_a_request_id_reused_with_other_parameters_is_refused(setup: Setup, srv: Server) -> None:
    key = "reused-id"
    first = httpx.post(srv.url + COUNT, json={"epsilon": 0.1}, headers=headers(setup, key))
    assert first.status_code == 200
    value = json.loads(first.content)["value"]
    before = query(setup, "SELECT count(*) FROM ledger_events")[0][0]
    for path, body in [
        (COUNT, {"epsilon": 0.2}),
        (COUNT, {"epsilon": 0.1, "where": [["age", ">", 30]]}),
        ("/v1/datasets/patients/dp/mean", {"column": "glucose", "epsilon": 0.1}),
    ]:
        other = httpx.post(srv.url + path, json=body, headers=headers(setup, key))
        assert other.status_code == 422, other.text
        assert other.headers["content-type"].startswith("application/problem+json")
        problem = other.json()
        assert problem["type"].endswith("/configuration-error")
        assert "request id" in problem["detail"]
        assert str(value) not in other.text
    assert query(setup, "SELECT count(*) FROM ledger_events")[0][0] == before


def test_the_same_request_id_from_another_principal_is_its_own(setup: Setup, srv: Server) -> None:
    key = "shared-id"
    ana = httpx.post(srv.url + COUNT, json={"epsilon": 0.1}, headers=headers(setup, key))
    kim = httpx.post(
        srv.url + COUNT, json={"epsilon": 0.1}, headers=headers(setup, key, "kim", "care")
    )
    assert ana.status_code == kim.status_code == 200, kim.text
    assert "Privml-Replayed" not in kim.headers
    assert json.loads(ana.content)["request_id"] != json.loads(kim.content)["request_id"]
    owners = query(setup, "SELECT principal FROM replies WHERE key = :k ORDER BY principal", k=key)
    assert owners == [("ana",), ("kim",)]
