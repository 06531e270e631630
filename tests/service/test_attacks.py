"""A hostile token holder against the curator server: bodies, names, retries, races.

One server on its own vault (its budget is spent here only), with a short
training deadline so that a DP-SGD run outlives its first request. Every
refusal must be problem+json (never a 5xx), audited, and charge nothing; one
request id must never let two different answers leave.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from _server import Server, server

from conftest import SLOW_RUN, AuditWatch, Setup, build

pytestmark = pytest.mark.sqlite_only("request shapes and one process's retries; no locking here")

DP = "/v1/datasets/{d}/dp/{s}"
SPEC = SLOW_RUN


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("attacks")
    return build(root / "vault", root / "vault.key")


@pytest.fixture(scope="module")
def srv(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    args = ["--rate", "100000", "--training-timeout", "0.3"]
    started = server(setup.folder, setup.key_file, log, args=args).start()
    yield started
    started.stop()


def headers(setup: Setup, who: str = "ana", key: str | None = None) -> dict[str, str]:
    purpose = {"kim": "care", "dora": "oversight"}.get(who, "research")
    out = {"Authorization": f"Bearer {setup.tokens[who]}", "Privml-Purpose": purpose}
    return out if key is None else {**out, "Idempotency-Key": key}


def post(srv: Server, path: str, body: Any, head: dict[str, str]) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    head = {**head, "Content-Type": "application/json"}
    return httpx.post(srv.url + path, content=content, headers=head, timeout=120)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert isinstance(body, dict)
    return body


# -- bodies -------------------------------------------------------------------------------


def test_deep_or_huge_bodies_are_malformed_requests_not_server_errors(
    srv: Server, setup: Setup, watch: AuditWatch
) -> None:
    """JSON nested 900 deep parses, then broke a recursive walk (a 500); 64 'in' lists of
    10⁴ values each cost seconds of work per request. Both are refused as malformed."""
    ledger = watch.vault.ledger.events("patients")
    watch.new()
    deep = "[" * 900 + "]" * 900
    cases = [
        (DP.format(d="patients", s="mean"), f'{{"column": "glucose", "epsilon": 0.1, '
         f'"where": [{deep}]}}'),
        (DP.format(d="patients", s="fit"), '{"estimator": "LinearRegression", "features": '
         '["age"], "target": "glucose", "params": ' + '{"a": ' * 900 + "1" + "}" * 900 + "}"),
        (DP.format(d="patients", s="train"), '{"spec": ' + '{"a": ' * 900 + "1" + "}" * 900 + "}"),
        (DP.format(d="patients", s="count"),
         {"epsilon": 0.1, "where": [["age", "in", list(range(10_000))]] * 64}),
        ("/v1/datasets/patients/read", {"where": [["age", "in", list(range(200_000))]]}),
    ]  # fmt: skip
    for n, (path, body) in enumerate(cases):
        answer = problem(post(srv, path, body, headers(setup, key=f"shape-{n}")), 422)
        assert answer["error"] == "ConfigurationError"
        assert "nests deeper" in answer["detail"] or "more than" in answer["detail"]
    entries = watch.new()
    assert len(entries) == len(cases)
    assert all((e["principal"], e["outcome"]) == ("ana", "error") for e in entries)
    pd.testing.assert_frame_equal(watch.vault.ledger.events("patients"), ledger)


# -- what a principal without a grant learns ----------------------------------------------


def test_a_dataset_without_any_grant_is_answered_as_an_unknown_one(
    srv: Server, setup: Setup, watch: AuditWatch
) -> None:
    """eve holds a valid token but no grant on 'patients': each route answers her exactly
    as for a dataset that does not exist (not its columns, not its budget, not its kinds)."""
    ledger = watch.vault.ledger.events("patients")
    watch.new()

    def ask(dataset: str, n: int) -> list[tuple[int, str]]:
        got = [
            httpx.get(f"{srv.url}/v1/datasets/{dataset}/budget", headers=headers(setup, "eve")),
            httpx.get(f"{srv.url}/v1/datasets/{dataset}/explain", headers=headers(setup, "eve")),
            post(srv, f"/v1/datasets/{dataset}/read", {"columns": ["nosuch"]},
                 headers(setup, "eve")),
            post(srv, DP.format(d=dataset, s="mean"), {"column": "glucose", "epsilon": 0.1},
                 headers(setup, "eve", f"eve-mean-{n}")),
            post(srv, DP.format(d=dataset, s="count"),
                 {"epsilon": 0.1, "where": [["age", ">", "x"]]}, headers(setup, "eve", f"c{n}")),
            post(srv, DP.format(d=dataset, s="train"), {"spec": SPEC},
                 headers(setup, "eve", f"eve-train-{n}")),
        ]  # fmt: skip
        return [(r.status_code, r.text.replace(dataset, "DATASET")) for r in got]

    real, unknown = ask("patients", 0), ask("nosuch-set", 1)
    assert real == unknown
    assert {status for status, _ in real} == {404}
    for word in ("glucose", "integer", "5.0", "dp_aggregate"):
        assert not any(word in text for _, text in real), word
    entries = watch.new()
    assert len(entries) == 2 * len(real)
    assert all((e["principal"], e["outcome"]) == ("eve", "error") for e in entries)
    pd.testing.assert_frame_equal(watch.vault.ledger.events("patients"), ledger)


def test_the_interactive_docs_are_not_served_but_the_schema_is(srv: Server) -> None:
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        problem(httpx.get(srv.url + page), 404)
    assert httpx.get(srv.url + "/openapi.json").json()["info"]["title"] == "privml curator"


# -- one request id, one answer -----------------------------------------------------------


def test_concurrent_copies_of_one_request_id_leave_one_answer_charged_once(
    srv: Server, setup: Setup, watch: AuditWatch
) -> None:
    """Eight copies at once, then eight that differ in their column under one id: one
    charge, and every answer that leaves is the same bytes."""
    before = len(watch.vault.ledger.events("patients"))
    path = DP.format(d="patients", s="mean")

    def send(n: int, key: str, vary: bool) -> httpx.Response:
        column = "age" if vary and n % 2 else "glucose"
        return post(srv, path, {"column": column, "epsilon": 0.1}, headers(setup, key=key))

    for key, vary in (("same-8", False), ("vary-8", True)):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: send(n, key, vary), range(8)))  # noqa: B023
        served = {r.content for r in answers if r.status_code == 200}
        assert len(served) == 1
        assert {r.status_code for r in answers} <= {200, 422}
        for r in answers:
            if r.status_code == 422:
                assert "request id" in problem(r, 422)["detail"]
    assert len(watch.vault.ledger.events("patients")) == before + 2


def test_a_retry_while_its_training_runs_waits_for_that_run(
    srv: Server, setup: Setup, watch: AuditWatch
) -> None:
    """The run outlives its 0.3 s deadline (503). Retries with the same id must not start
    runs of their own on the same reservation (each would train on the data, and all but
    one would fail at settlement): they wait for the first and get its answer."""
    before = len(watch.vault.ledger.events("patients"))
    watch.new()
    path = DP.format(d="patients", s="train")
    first = post(srv, path, {"spec": SPEC}, headers(setup, key="train-retry"))
    assert problem(first, 503)["fields"]["kind"] == "timeout"
    deadline = time.monotonic() + 120
    while True:
        again = post(srv, path, {"spec": SPEC}, headers(setup, key="train-retry"))
        if again.status_code == 200:
            break
        # a retry waits for the run past its own deadline (503); retries piling up meanwhile
        # meet the principal's limit on requests in progress (429): both say "later"
        kind = problem(again, again.status_code)["fields"]["kind"]
        assert (again.status_code, kind) in ((503, "timeout"), (429, "rate_limited"))
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(0.2)
    final = post(srv, path, {"spec": SPEC}, headers(setup, key="train-retry"))
    assert final.content == again.content
    runs = [e for e in watch.new() if e["action"] == "dp.train.batches"]
    assert len(runs) == 1
    rows = watch.vault.ledger.events("patients")[before:]
    assert list(rows["status"]) == ["committed"]
