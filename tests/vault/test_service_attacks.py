"""The vault's side of service mode, attacked: a curious analyst whose requests are served,
and someone with the metadata database but not the key.

Served requests run here through :class:`privml.service._service.Service` in-process (no
HTTP server): the same release path, session and audit log a server process uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from privml import AccessDenied, PrivmlError
from privml.service._limits import Limits
from privml.service._service import Caller, Reply, Service
from privml.storage.tables import replies

JSON = "application/json"


def _caller(principal: str = "analyst", purpose: str = "research") -> Caller:
    return Caller(principal, purpose, "tok_00000000000000aa", "203.0.113.7:5000", False)


def _mean(service: Service, caller: Caller, key: str, column: str = "glucose") -> Reply:
    """One served DP mean, as the /dp/mean route runs it."""

    def compute(session: Any) -> tuple[bytes, str]:
        result = session.dp.mean("patients", column, epsilon=0.1)
        return json.dumps({"value": result.value}).encode(), JSON

    request = {"dataset": "patients", "column": column, "epsilon": 0.1}

    async def run() -> Reply:
        return await service.release(caller, key, "dp.mean", request, compute, timeout=60)

    return anyio.run(run)


def _charges(vault: Any) -> int:
    return len(vault.ledger.events("patients"))


# --- stored answers --------------------------------------------------------------------------
def test_a_purged_answer_retried_is_charged_again_never_free(demo_vault):
    """The analyst keeps a request id; after the owner purges stored answers, the same
    request is a new release: a fresh answer is paid for, never released uncharged."""
    service = Service(demo_vault, Limits())
    caller = _caller()
    _mean(service, caller, "req-1")
    assert _charges(demo_vault) == 1
    assert _mean(service, caller, "req-1").replayed  # a retry: the stored answer, uncharged
    assert _charges(demo_vault) == 1
    assert demo_vault._replies.purge(older_than=timedelta(0)) == 1
    again = _mean(service, caller, "req-1")
    assert _charges(demo_vault) == 2, "a second answer was released without a charge"
    assert not again.replayed  # computed afresh (its value may equal the first: clipped)
    # another column under the kept id is a new release too, charged
    demo_vault._replies.purge(older_than=timedelta(0))
    _mean(service, caller, "req-1", column="age")
    assert _charges(demo_vault) == 3


def test_a_stored_answer_deleted_without_the_key_makes_the_retry_pay(demo_vault, dba):
    service = Service(demo_vault, Limits())
    caller = _caller()
    _mean(service, caller, "req-1")
    with dba.edit(demo_vault.path) as conn:
        assert conn.execute(replies.delete()).rowcount == 1
    _mean(service, caller, "req-1")
    assert _charges(demo_vault) == 2


def test_an_answer_turned_into_a_claim_without_the_key_is_refused(demo_vault, dba):
    """Marking a stored answer as an unanswered claim (to have its charges replayed for a
    fresh answer) fails authentication: the claim is encrypted as an answer is."""
    service = Service(demo_vault, Limits())
    caller = _caller()
    _mean(service, caller, "req-1")
    with dba.edit(demo_vault.path) as conn:
        conn.execute(replies.update().values(media_type=""))
    with pytest.raises(PrivmlError, match="fails authentication"):
        _mean(service, caller, "req-1")
    assert _charges(demo_vault) == 1


# --- schema facts ----------------------------------------------------------------------------
@pytest.fixture
def outsider(demo_vault):
    """A session of a principal with no grant at all on ``patients``."""
    demo_vault.add_principal("eve", roles=[])
    return demo_vault.session("eve", purpose="research")


SCHEMA_FACTS = ("'patient'", "glucose", "note", "seen", "health", "demographic", "50.0", "120")
KINDS = ("numeric", "categorical", "integer", "identifier", "text", "datetime")


def _says_nothing_of_the_schema(err: BaseException) -> None:
    text = str(err)
    for fact in (*SCHEMA_FACTS, *KINDS):
        assert fact not in text, fact


def test_explain_without_a_grant_is_refused_and_names_no_column(outsider, demo_vault):
    with pytest.raises(AccessDenied) as refused:
        outsider.explain("patients")
    _says_nothing_of_the_schema(refused.value)
    entry = demo_vault.audit.entries().iloc[-1]
    assert (entry["action"], entry["outcome"]) == ("policy.explain", "denied")


@pytest.mark.parametrize(
    "ask",
    [
        lambda s: s.dp.mean("patients", "nope", epsilon=0.1),
        lambda s: s.dp.histogram("patients", "nope", epsilon=0.1),
        lambda s: s.dp.count("patients", epsilon=0.1, where=[("nope", "==", 1)]),
        lambda s: s.read("patients", columns=["nope"]),
        lambda s: s.dp.mean("patients", "glucose", epsilon=0.1),
        lambda s: s.dp.count("patients", epsilon=0.1, where=[("glucose", "==", "high")]),
        lambda s: s.dp.count("patients", epsilon=0.1, where=[("sex", ">", 3)]),
    ],
    ids=["mean", "histogram", "where", "read", "denied", "where-kind", "where-op"],
)
def test_an_unknown_column_asked_without_a_grant_is_a_refusal_naming_no_column(
    outsider, demo_vault, ask: Callable[[Any], Any]
):
    """Asking for a column that does not exist must not list the columns that do, nor
    answer differently from a column that exists but is denied."""
    with pytest.raises(AccessDenied) as refused:
        ask(outsider)
    _says_nothing_of_the_schema(refused.value)
    assert _charges(demo_vault) == 0


# --- the audit log's route -------------------------------------------------------------------
def test_a_route_stays_with_its_request_not_its_worker_thread(demo_vault):
    """Work run for one request, then work run for none on the same worker threads: the
    second's entries name no route, the first's name its own."""
    service = Service(demo_vault, Limits())
    caller = _caller()

    def read() -> None:
        demo_vault.session("analyst", purpose="research").read("patients")

    async def go() -> None:
        for n in range(3):
            await service.call(read, timeout=60, caller=caller, key=f"req-{n}")
            await service.call(read, timeout=60)

    anyio.run(go)
    reads = demo_vault.audit.entries().query("action == 'dataset.read'")["details"].tolist()
    assert [d.get("via", {}).get("request") for d in reads] == [
        "req-0", None, "req-1", None, "req-2", None,
    ]  # fmt: skip


# --- tokens ----------------------------------------------------------------------------------
def test_a_token_row_copied_into_another_vault_is_refused(tmp_path, vaults, dba, key):
    """The same principal and purpose in both vaults: the copied row (its digest and MAC)
    is not a token of the second vault."""
    from privml import IntegrityError
    from privml.storage.tables import tokens

    made = []
    for name in ("a", "b"):
        vault = vaults.create(tmp_path / name, key=key)
        vault.add_purpose("research", description="Tests", lawful_basis="consent")
        vault.add_principal("analyst", roles=[])
        made.append(vault)
    first, second = made
    issued = first.tokens.issue("analyst", purposes=["research"])
    with dba.edit(first.path) as conn:
        row = conn.execute(sa.select(tokens)).one()._asdict()
    with dba.edit(second.path) as conn:
        conn.execute(tokens.insert().values(**row))
    with pytest.raises(IntegrityError, match="tokens"):
        second.tokens.authenticate(issued.secret, client="203.0.113.7")
    for vault in made:
        vault.close()
