"""A server's limits as a hostile client meets them: body size, page size, request rate.

One server with small limits: bodies over 10 kB, 150 rows a page, a burst of
10 requests then one every 20 s per principal. Each principal's bucket is its
own, so the tests use different principals and do not interfere.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pandas as pd
import pytest
from _server import Server, server

from conftest import ROWS, AuditWatch, Setup, entry_client
from privml.service._client import connect
from privml.service._errors import ServiceError

LIMIT = int(0.01 * 2**20)
PAGE = 150


@pytest.fixture(scope="module")
def tight(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    args = ["--max-body-mb", "0.01", "--max-rows", str(PAGE), "--rate", "0.05", "--burst", "10"]
    srv = server(setup.folder, setup.key_file, log, args=args).start()
    yield srv
    srv.stop()


def _headers(setup: Setup, name: str, purpose: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {setup.tokens[name]}", "Privml-Purpose": purpose}


def test_a_body_over_the_limit_is_refused_and_audited(
    tight: Server, setup: Setup, watch: AuditWatch
) -> None:
    ledger = watch.vault.ledger.events("patients")
    watch.new()
    s = connect(tight.url, token=setup.tokens["ana"], purpose="research", retries=0)
    with s, pytest.raises(ServiceError) as caught:
        s.read("patients", columns=[f"c{i:05d}" for i in range(2000)])  # ~20 kB of JSON
    assert (caught.value.status, caught.value.kind) == (413, "too_large")
    assert str(LIMIT) in str(caught.value)
    [entry] = watch.new()
    assert (entry["principal"], entry["outcome"]) == ("ana", "error")
    assert entry_client(entry) == "127.0.0.1"
    assert entry["details"]["via"]["token"] == setup.token_ids["ana"]  # type: ignore[index]
    pd.testing.assert_frame_equal(watch.vault.ledger.events("patients"), ledger)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    tight: Server, setup: Setup
) -> None:
    """Headers only, a gigabyte announced: the answer comes without the body being sent."""
    where = urlsplit(tight.url)
    head = (
        "POST /v1/datasets/patients/dp/mean HTTP/1.1\r\n"
        f"Host: {where.netloc}\r\n"
        f"Authorization: Bearer {setup.tokens['ana']}\r\nPrivml-Purpose: research\r\n"
        "Idempotency-Key: big-1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10**9}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = ""
        while "\r\n\r\n" not in answer:  # the status line and headers, nothing more needed
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "application/problem+json" in answer


def test_a_streamed_body_over_the_limit_is_refused(tight: Server, setup: Setup) -> None:
    """No Content-Length (chunked): counted as it arrives, refused past the limit."""

    def chunks() -> Iterator[bytes]:
        yield b'{"epsilon": 0.1, "column": "glucose", "where": ['
        for _ in range(2 * LIMIT // 97):
            yield b'["age", ">", 1],' * 6 + b"\n"
        yield b'["age", ">", 1]]}'

    response = httpx.post(
        f"{tight.url}/v1/datasets/patients/dp/mean",
        content=chunks(),
        headers={**_headers(setup, "dora", "oversight"), "Idempotency-Key": "chunked-1"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["fields"]["kind"] == "too_large"


def test_a_large_read_comes_in_pages_each_audited(
    tight: Server, setup: Setup, watch: AuditWatch
) -> None:
    local = watch.vault.session("kim", purpose="care").read("patients")
    watch.new()
    with connect(tight.url, token=setup.tokens["kim"], purpose="care", retries=0) as s:
        remote = s.read("patients")
    assert len(remote) == ROWS > PAGE
    pd.testing.assert_frame_equal(remote, local)
    assert remote.attrs["privml_modes"] == local.attrs["privml_modes"]
    reads = [e for e in watch.new() if e["action"] == "dataset.read"]
    assert len(reads) == -(-ROWS // PAGE)  # one entry per page
    assert all(e["principal"] == "kim" and entry_client(e) == "127.0.0.1" for e in reads)


def test_a_principal_over_its_rate_gets_429_audited_and_uncharged(
    tight: Server, setup: Setup, watch: AuditWatch
) -> None:
    ledger = watch.vault.ledger.events("patients")
    with connect(tight.url, token=setup.tokens["eve"], purpose="research", retries=0) as s:
        for _ in range(50):  # the burst of 10, then refused (one request per 20 s)
            try:
                s._json("GET", "/v1/session")
            except ServiceError as err:
                first = err
                break
        else:
            pytest.fail("never rate limited")
        watch.new()
        with pytest.raises(ServiceError) as caught:
            s.dp.mean("patients", "glucose", epsilon=0.1)
    for err in (first, caught.value):
        assert (err.status, err.kind) == (429, "rate_limited")
        assert err.retry_after is not None and err.retry_after > 0
    [entry] = watch.new()
    assert (entry["principal"], entry["outcome"], entry["action"]) == (
        "eve",
        "denied",
        "dp.statistic",
    )
    assert entry["details"]["reason"] == "rate_limited"  # type: ignore[index]
    assert entry_client(entry) == "127.0.0.1"
    pd.testing.assert_frame_equal(watch.vault.ledger.events("patients"), ledger)
    # another principal's bucket is its own
    with connect(tight.url, token=setup.tokens["dora"], purpose="oversight", retries=0) as d:
        assert d.principal == "dora"
