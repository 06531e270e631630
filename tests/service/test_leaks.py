"""Nothing secret reaches an analyst, and nothing secret rests in clear in the vault's files.

Every raw response (status line's headers and body bytes) the analyst "ana" gets
over a session of typical calls and refusals is scanned for the vault key, the
data keys, every token's secret, values of columns she may not read in clear,
and the server's file paths. The vault folder (metadata database, its WAL, data
files) is scanned for token secrets and for the plaintext of stored replies.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _server import Server

from conftest import Setup, patients
from privml import PrivmlError
from privml.service._client import RemoteSession
from privml.storage.engine import read


def _forms(secret: bytes) -> list[bytes]:
    """The ways a key could be written out: raw, base64 (both alphabets, unpadded), hex."""
    return [
        secret,
        base64.b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        secret.hex().encode(),
        secret.hex().upper().encode(),
    ]


@pytest.fixture(scope="module")
def received(live: Server, setup: Setup) -> Iterator[list[bytes]]:
    """Every response ana's session got: headers and body, as bytes."""
    captured: list[bytes] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        captured.append(f"{response.status_code}\n{head}\n\n".encode() + response.content)

    client = httpx.Client(
        base_url=live.url,
        headers={"Authorization": f"Bearer {setup.tokens['ana']}", "Privml-Purpose": "research"},
        timeout=60,
        event_hooks={"response": [keep]},
    )
    with RemoteSession(client, retries=0) as session:
        session._info = session._json("GET", "/v1/session")
        session.read("patients")
        session.read("patients", columns=["name", "note"])
        session.dp.mean("patients", "glucose", epsilon=0.1)
        session.dp.count("patients", epsilon=0.1, where=[("sex", "==", "F")])
        session.dp.histogram("patients", "sex", epsilon=0.1)
        session.dp.quantile("patients", "glucose", 0.5, epsilon=0.1)
        session.budget("patients")
        session.explain("patients")
        refusals = [
            lambda: session.read("patients", columns=["glucose"]),
            lambda: session.read("patients", where=[("name", "==", "Patient 0001")]),
            lambda: session.dp.mean("patients", "glucose", epsilon=100.0),
            lambda: session.dp.mean("patients", "nope", epsilon=0.1),
            lambda: session.he.spec("no-such-model"),
            lambda: session.oversight.ledger("patients"),
        ]
        for refused in refusals:
            with pytest.raises(PrivmlError):
                refused()
        session._client.post("/v1/datasets/patients/dp/mean", json={"epsilon": "x"})
        session._client.get("/v1/no/such/route")
        try:
            from diffprivlib.models import GaussianNB

            pytest.importorskip("privml.dp._declared_estimators")
            session.dp.fit(GaussianNB(epsilon=0.1), "patients", features=["age"], target="sex")
        except pytest.skip.Exception:
            pass
    yield captured


def _secrets(setup: Setup) -> dict[str, list[bytes]]:
    """What must never reach an analyst, by what it is."""
    vault = setup.open()
    try:
        with read(vault._state.engine) as conn:
            ids = vault._store._keyring.active(conn, dataset="patients").values()
        data_keys = [vault._store._keyring.get(i) for i in ids]
    finally:
        vault.close()
    key = setup.key_file.read_bytes()
    frame = patients()
    found: dict[str, list[bytes]] = {
        "the vault key": [*_forms(key), key.strip()],
        "a data key": [form for k in data_keys for form in _forms(k)],
        "a token secret": [s.encode() for s in setup.tokens.values()]
        + [
            s.split("_", 2)[2].encode() for s in setup.tokens.values()
        ],  # the 43 random characters (they may hold "_")
        "a name": [n.encode() for n in frame["name"]],
        "a note": [n.encode() for n in frame["note"]],
        "a server path": [str(setup.folder).encode(), str(setup.key_file).encode()],
    }
    assert data_keys and all(len(k) >= 16 for k in data_keys)
    return found


def _scan(blobs: list[bytes], secrets: dict[str, list[bytes]]) -> list[str]:
    return [
        f"{what} in blob {i}"
        for i, blob in enumerate(blobs)
        for what, forms in secrets.items()
        if any(form in blob for form in forms)
    ]


def test_the_session_was_typical(received: list[bytes]) -> None:
    statuses = sorted({int(b.split(b"\n", 1)[0]) for b in received})
    assert statuses == [200, 403, 404, 409, 422]
    assert len(received) >= 17


def test_nothing_secret_reaches_the_analyst(received: list[bytes], setup: Setup) -> None:
    assert setup.token_ids["ana"].encode() in b"".join(received)  # the scan sees the bodies
    assert _scan(received, _secrets(setup)) == []
    masked = b"".join(received)
    assert b"Patient" not in masked and b"seen for review" not in masked


def test_no_traceback_or_library_internals_reach_the_analyst(received: list[bytes]) -> None:
    for blob in received:
        assert b"Traceback" not in blob and b'File "' not in blob
        assert b"sqlalchemy" not in blob.lower() and b"site-packages" not in blob


def _stored(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()]


def test_the_vault_folder_holds_no_token_secret_and_no_reply_in_clear(
    received: list[bytes], setup: Setup
) -> None:
    files = _stored(setup.folder)
    assert len(files) >= 2  # meta.db and the data file at least
    tokens = [s.encode() for s in setup.tokens.values()]
    tokens += [s.split("_", 2)[2].encode() for s in setup.tokens.values()]
    assert _scan(files, {"a token secret": tokens}) == []
    # the DP answers ana received are stored for retries, encrypted
    answers = [b.split(b"\n\n", 1)[1] for b in received if b.startswith(b"200\n")]
    answers = [a for a in answers if a.startswith(b'{"value"')]
    assert len(answers) == 4
    assert _scan(files, {"a stored reply": answers}) == []
    assert _scan(files, {"a reply's fields": [b'"mechanism"', b'"noise_scale"']}) == []
    vault = setup.open()
    try:
        from privml.storage.tables import replies

        with read(vault._state.engine) as conn:
            bodies = [bytes(r.body) for r in conn.execute(replies.select())]
    finally:
        vault.close()
    assert len(bodies) >= 4
    # a ciphertext may begin with "{" by chance (1 in 256); the answers' field names may not
    # appear (a 9-byte run by chance: below 1e-15 per body)
    for body in bodies:
        assert b'"epsilon"' not in body and b'"mechanism"' not in body


def test_the_audit_log_and_the_server_log_hold_no_secret(
    received: list[bytes], setup: Setup, live: Server
) -> None:
    secrets = _secrets(setup)
    del secrets["a server path"]  # the operator's own log may name its files
    vault = setup.open()
    try:
        entries = vault.audit.entries()
    finally:
        vault.close()
    assert len(entries) > 20
    logged = [str(e).encode() for e in entries.to_dict(orient="records")]
    assert _scan(logged, secrets) == []
    assert _scan([live.log.read_bytes()], secrets) == []
