"""The server against requests generated from its own OpenAPI schema (schemathesis).

Valid and invalid requests (bodies, paths, headers) for every operation, sent
with ana's token: no 5xx; every response is problem+json or the operation's
declared type; a refused request (4xx) changes no budget and leaves an audit
entry. Without a token every request is refused (401) and audited as a denied
``token.use``. Deterministic: hypothesis draws the same examples on every run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from _server import Server, server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from conftest import Setup

pytestmark = pytest.mark.sqlite_only("requests against one server; the ledger is tested apart")

EXAMPLES = 20  # per operation and generation mode: the file stays well under a minute
PROBLEM = "application/problem+json"
#: The type each operation declares for its answers, beyond JSON.
DECLARED = {
    "/v1/datasets/{dataset}/read": "application/vnd.apache.arrow.stream",
    "/v1/models/{model}/he/spec": "application/octet-stream",
    "/v1/models/{model}/he/predict": "application/octet-stream",
}
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


#: ``privml serve`` with its failed-authentication throttle raised: a fuzz without a token
#: fails authentication hundreds of times from one address, which would otherwise be slowed
#: down to one attempt in 5 s (the throttle's own tests live elsewhere).
SERVE = """
import sys
import privml
from privml.service import Limits
privml.serve(sys.argv[1], key_file=sys.argv[2], port=int(sys.argv[3]), log_level="warning",
             limits=Limits(rate=100_000, failures_before_delay=100_000))
"""


@pytest.fixture(scope="module")
def live(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    made = server(setup.folder, setup.key_file, log)
    port = made.url.rsplit(":", 1)[1]
    command = [sys.executable, "-c", SERVE, str(setup.folder), str(setup.key_file), port]
    srv = Server(command, made.env, log, made.url).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def schema(live: Server) -> Any:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json", timeout=30)


@pytest.fixture(scope="module")
def db(setup: Setup) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{setup.folder / 'meta.db'}", poolclass=sa.NullPool)
    yield engine
    engine.dispose()


def figures(db: sa.Engine) -> tuple[int, int, int]:
    """Ledger rows, audit entries that record a refusal or failure, denied token uses."""
    with db.connect() as conn:
        ledger = conn.execute(sa.text("SELECT count(*) FROM ledger_events")).scalar_one()
        refusals = conn.execute(
            sa.text("SELECT count(*) FROM audit_log WHERE outcome != 'ok'")
        ).scalar_one()
        tokens = conn.execute(
            sa.text(
                "SELECT count(*) FROM audit_log WHERE action = 'token.use' AND outcome = 'denied'"
            )
        ).scalar_one()
    return int(ledger), int(refusals), int(tokens)


@dataclass
class Findings:
    """What went wrong, per case (reported together at the end)."""

    problems: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def saw(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def describe(case: Any, response: Any) -> str:
    return (
        f"{case.method} {case.formatted_path} headers={case.headers} query={case.query} "
        f"body={str(case.body)[:300]} -> {response.status_code} {response.text[:300]}"
    )


def test_fuzzed_requests_with_a_token_are_answered_or_refused_cleanly(
    schema: Any, live: Server, setup: Setup, db: sa.Engine
) -> None:
    token = {"Authorization": f"Bearer {setup.tokens['ana']}"}
    findings = Findings()
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for operation in operations(schema):
            fuzz_with_token(operation, client, token, db, findings)
    assert findings.problems == [], "\n".join(findings.problems[:20])
    assert any(status < 300 for status in findings.statuses)  # the fuzz got past the door too


def fuzz_with_token(
    operation: Any, client: httpx.Client, token: dict[str, str], db: sa.Engine, findings: Findings
) -> None:
    declared = DECLARED.get(operation.path, "application/json")
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @FUZZ
    @given(case=cases, purpose=st.sampled_from(["research", "generated"]))
    def run(case: Any, purpose: str) -> None:
        if purpose == "research" and case.headers is not None:
            case.headers["Privml-Purpose"] = "research"  # mostly past the purpose check
        before = figures(db)
        response = send(client, case, token)
        after = figures(db)
        findings.saw(response.status_code)
        media = response.headers.get("content-type", "").split(";")[0]
        if response.status_code >= 500:
            findings.problems.append(f"5xx: {describe(case, response)}")
        elif response.status_code >= 400:
            if media != PROBLEM:
                findings.problems.append(f"not a problem: {describe(case, response)}")
            if after[0] != before[0]:
                findings.problems.append(f"charged: {describe(case, response)}")
            if after[1] <= before[1]:
                findings.problems.append(f"not audited: {describe(case, response)}")
        elif media not in (declared, "application/json"):
            findings.problems.append(f"type {media}: {describe(case, response)}")

    run()


def test_fuzzed_requests_without_a_token_are_refused_and_audited(
    schema: Any, live: Server, setup: Setup, db: sa.Engine
) -> None:
    findings = Findings()
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for operation in operations(schema):
            if operation.path != "/v1/health":  # says only that the server is up
                fuzz_without_token(operation, client, db, findings)
    assert findings.problems == [], "\n".join(findings.problems[:20])


def fuzz_without_token(
    operation: Any, client: httpx.Client, db: sa.Engine, findings: Findings
) -> None:
    @FUZZ
    @given(case=operation.as_strategy(GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        before = figures(db)
        response = send(client, case, {})
        after = figures(db)
        findings.saw(response.status_code)
        if response.status_code != 401:
            findings.problems.append(f"not 401: {describe(case, response)}")
        elif response.headers.get("content-type", "").split(";")[0] != PROBLEM:
            findings.problems.append(f"not a problem: {describe(case, response)}")
        if after[0] != before[0]:
            findings.problems.append(f"charged: {describe(case, response)}")
        if after[2] <= before[2]:
            findings.problems.append(f"not audited: {describe(case, response)}")

    run()


def send(client: httpx.Client, case: Any, auth: dict[str, str]) -> httpx.Response:
    """Send a generated case with ``auth`` in place of any Authorization it carries."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
    kwargs.pop("url", None)
    body: dict[str, Any] = {}
    for name in ("json", "data", "content", "files"):
        if name in kwargs:
            body[name] = kwargs[name]
    if isinstance(body.get("data"), bytes | str):
        body["content"] = body.pop("data")  # raw bytes go as content
    return client.request(
        case.method,
        case.formatted_path,
        headers={**headers, **auth},
        params=case.query or None,
        **body,
    )
