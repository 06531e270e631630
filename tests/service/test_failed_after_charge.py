"""A served release that fails after its charge answers every retry with that same refusal.

The attacker is the analyst: a release whose failure comes after the charge (here a
group-by answer over the server's reply limit; any exception after the charge behaves
alike) leaves the charge in the ledger under the request's claim. If a retry with the
same ``Idempotency-Key`` were computed again, it would draw fresh noise under the charge
already made, and whether the first draw failed could depend on its noise. The refusal is
stored as the request's answer instead: every retry gets it (status, body, replay
header), the ledger holds one charge, and a new request id is a new, charged request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from _server import Server, server

from conftest import Setup, build

pytestmark = pytest.mark.sqlite_only("one server; the replies table is shared code")

GROUPBY = "/v1/datasets/patients/dp/groupby/count"
COUNT = "/v1/datasets/patients/dp/count"
SMALL_REPLY_MB = 0.001  # 1,048 bytes: a count fits, a count over 242 groups does not


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("after-charge")
    return build(root / "vault", root / "vault.key")


@pytest.fixture(scope="module")
def srv(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    args = ["--rate", "100000", "--max-reply-mb", str(SMALL_REPLY_MB)]
    started = server(setup.folder, setup.key_file, log, args=args).start()
    yield started
    started.stop()


def _post(
    srv: Server, setup: Setup, path: str, key: str, body: dict[str, object]
) -> httpx.Response:
    head = {
        "Authorization": f"Bearer {setup.tokens['ana']}",
        "Privml-Purpose": "research",
        "Idempotency-Key": key,
    }
    return httpx.post(srv.url + path, json=body, headers=head, timeout=60)


def _charges(setup: Setup) -> int:
    with setup.open() as vault:
        return len(vault.ledger.events("patients"))


def test_a_refusal_after_the_charge_is_the_answer_to_every_retry(setup: Setup, srv: Server) -> None:
    body = {"by": ["sex", "age"], "epsilon": 0.1}
    before = _charges(setup)
    first = _post(srv, setup, GROUPBY, "too-big-1", body)
    assert first.status_code == 422, first.text
    assert first.json()["fields"]["kind"] == "reply_too_large"
    assert _charges(setup) == before + 1  # charged: the noise was drawn before the size was known

    for _ in range(3):
        again = _post(srv, setup, GROUPBY, "too-big-1", body)
        assert again.status_code == 422
        assert again.headers.get("Privml-Replayed") == "true"
        assert again.json()["fields"]["kind"] == "reply_too_large"
    assert _charges(setup) == before + 1  # no retry recomputed (or was charged)

    other = _post(srv, setup, GROUPBY, "too-big-2", body)  # a new request id: a new release
    assert other.status_code == 422 and "Privml-Replayed" not in other.headers
    assert _charges(setup) == before + 2

    with setup.open() as vault:
        log = vault.audit.entries()
    replayed = log[(log["outcome"] == "replayed") & (log["action"] == "dp.groupby.count")]
    assert len(replayed) == 3


def test_a_refusal_before_any_charge_is_not_kept(setup: Setup, srv: Server) -> None:
    # refused by the policy checks before the ledger is asked: nothing is stored, so the
    # same request id may be used again once the request is fixed
    bad = _post(srv, setup, GROUPBY, "fixable", {"by": ["no_such_column"], "epsilon": 0.1})
    assert bad.status_code in (404, 422), bad.text
    fixed = _post(srv, setup, COUNT, "fixable-count", {"epsilon": 0.1})
    assert fixed.status_code == 200, fixed.text
    retry = _post(srv, setup, GROUPBY, "fixable", {"by": ["no_such_column"], "epsilon": 0.1})
    assert "Privml-Replayed" not in retry.headers


def test_a_stored_refusal_is_encrypted_and_bound_to_its_request(setup: Setup, srv: Server) -> None:
    body = {"by": ["sex", "age"], "epsilon": 0.1}
    assert _post(srv, setup, GROUPBY, "bound-1", body).status_code == 422
    # the same id with other values is another request: refused as a reused id
    reused = _post(srv, setup, GROUPBY, "bound-1", {**body, "epsilon": 0.2})
    assert reused.status_code == 422 and "Privml-Replayed" not in reused.headers
    assert reused.json()["fields"].get("kind") != "reply_too_large"
    raw = (setup.folder / "meta.db").read_bytes()
    assert b"reply_too_large" not in raw and b"larger than this server" not in raw
    assert json.loads(_post(srv, setup, GROUPBY, "bound-1", body).content)["status"] == 422
