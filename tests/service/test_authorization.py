"""Who may call what: every principal and token state against every endpoint of the server.

Each cell of the matrix is either served or refused with the right status and
the same privml exception type as in-process; each refusal leaves exactly one
new audit entry naming the caller, its address (and its token, where valid),
and changes no budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from _server import Server, server

from conftest import AuditWatch, Setup, entry_client
from privml import AccessDenied, AuthenticationError, BudgetExceededError, NotFoundError
from privml.service._client import RemoteSession

DS = "patients"

#: Each endpoint as a call on a remote session.
CALLS: dict[str, Callable[[RemoteSession], Any]] = {
    "info": lambda s: s._json("GET", "/v1/session"),
    "budget": lambda s: s.budget(DS),
    "explain": lambda s: s.explain(DS),
    "read": lambda s: s.read(DS, columns=["note", "name"]),
    "read-glucose": lambda s: s.read(DS, columns=["glucose"]),
    "count": lambda s: s.dp.count(DS, epsilon=0.05),
    "sum": lambda s: s.dp.sum(DS, "glucose", epsilon=0.05),
    "mean": lambda s: s.dp.mean(DS, "glucose", epsilon=0.05),
    "var": lambda s: s.dp.var(DS, "glucose", epsilon=0.05),
    "std": lambda s: s.dp.std(DS, "glucose", epsilon=0.05),
    "histogram": lambda s: s.dp.histogram(DS, "sex", epsilon=0.05),
    "quantile": lambda s: s.dp.quantile(DS, "glucose", 0.5, epsilon=0.05),
    "over-budget": lambda s: s.dp.mean(DS, "glucose", epsilon=50.0),
    "fit": lambda s: s.dp.fit(_estimator(), DS, features=["age"], target="sex"),
    "he-spec": lambda s: s.he.spec("no-such-model"),
    "he-predict": lambda s: s.he.predict("no-such-model", b"batch", public_context=b"ctx"),
    "budgets": lambda s: s.oversight.budgets(),
    "ledger": lambda s: s.oversight.ledger(DS),
    "verify": lambda s: s.oversight.verify_audit(),
}
_DP = ("count", "sum", "mean", "var", "std", "histogram", "quantile", "fit")
_OVERSIGHT = ("budgets", "ledger", "verify")
_HE = ("he-spec", "he-predict")

#: mode -> (token name or None, purpose sent, principal the audit names).
MODES: dict[str, tuple[str | None, str, str]] = {
    "ana": ("ana", "research", "ana"),
    "kim": ("kim", "care", "kim"),
    "dora": ("dora", "oversight", "dora"),
    "eve": ("eve", "research", "eve"),
    "no-token": (None, "research", "unauthenticated"),
    "garbage": ("garbage", "research", "unauthenticated"),
    "revoked": ("revoked", "research", "unauthenticated"),
    "ana-for-care": ("ana", "care", "ana"),  # a valid token, a purpose it was not issued for
}

OK = None
Outcome = type[Exception] | None


def _row(default: Outcome, **cells: Outcome) -> dict[str, Outcome]:
    row = dict.fromkeys(CALLS, default)
    for name, outcome in cells.items():
        row[name.replace("_", "-")] = outcome
    return row


_analyst = {
    **dict.fromkeys(_HE, NotFoundError),
    **dict.fromkeys(_OVERSIGHT, AccessDenied),
    "over-budget": BudgetExceededError,
}
_no_grant = {  # a dataset without any grant is answered as an unknown one
    **dict.fromkeys(
        (*_DP, "budget", "explain", "read", "read-glucose", "over-budget"), NotFoundError
    ),
    **dict.fromkeys(_HE, NotFoundError),
}
EXPECTED: dict[str, dict[str, Outcome]] = {
    "ana": _row(OK, **_analyst, read_glucose=AccessDenied),
    "kim": _row(OK, **_analyst),
    "dora": _row(OK, **_no_grant),
    "eve": _row(OK, **_no_grant, **dict.fromkeys(_OVERSIGHT, AccessDenied)),
    "no-token": _row(AuthenticationError),
    "garbage": _row(AuthenticationError),
    "revoked": _row(AuthenticationError),
    "ana-for-care": _row(AccessDenied),
}
STATUS = {AuthenticationError: 401, AccessDenied: 403, NotFoundError: 404, BudgetExceededError: 409}


def _estimator() -> Any:
    pytest.importorskip("privml.dp._declared_estimators")
    from diffprivlib.models import GaussianNB

    return GaussianNB(epsilon=0.1)


@pytest.fixture(scope="module")
def matrix_server(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that does not slow down the matrix's many failed authentications."""
    log = tmp_path_factory.mktemp("log") / "server.log"
    args = ["--rate", "100000", "--auth-failures", "100000"]
    srv = server(setup.folder, setup.key_file, log, args=args).start()
    yield srv
    srv.stop()


def _session(url: str, secret: str | None, purpose: str, statuses: list[int]) -> RemoteSession:
    """A remote session that skips connect()'s check, so that refused tokens reach each route."""
    headers = {"Privml-Purpose": purpose}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"

    def seen(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    client = httpx.Client(
        base_url=url, headers=headers, timeout=60, event_hooks={"response": [seen]}
    )
    return RemoteSession(client, retries=0)


CELLS = [(mode, call) for mode in MODES for call in CALLS]


@pytest.mark.parametrize(("mode", "call"), CELLS, ids=[f"{m}-{c}" for m, c in CELLS])
def test_matrix(
    mode: str, call: str, matrix_server: Server, setup: Setup, watch: AuditWatch
) -> None:
    name, purpose, principal = MODES[mode]
    secret = None if name is None else setup.tokens.get(name, "pml_garbage")
    token_id = setup.token_ids.get(name or "")
    expected = EXPECTED[mode][call]
    ledger = watch.vault.ledger.events(DS)
    watch.new()
    statuses: list[int] = []
    with _session(matrix_server.url, secret, purpose, statuses) as session:
        if expected is None:
            CALLS[call](session)
            assert statuses[-1] == 200
            for entry in watch.new():  # what a served call records names its route
                assert entry["principal"] == principal and entry_client(entry) == "127.0.0.1"
                assert entry["details"]["via"]["token"] == token_id  # type: ignore[index]
            return
        with pytest.raises(expected) as caught:
            CALLS[call](session)
    assert type(caught.value) is expected
    assert statuses == [STATUS[expected]]
    [entry] = watch.new()
    assert entry["outcome"] in ("denied", "refused", "error")
    assert entry["principal"] == principal
    assert entry_client(entry) == "127.0.0.1"
    details = entry["details"]
    assert isinstance(details, dict)
    if mode == "revoked":
        assert (details["token"], details["reason"]) == (token_id, "revoked")
    elif token_id is not None:
        assert details["via"]["token"] == token_id
    pd.testing.assert_frame_equal(watch.vault.ledger.events(DS), ledger)  # nothing charged
