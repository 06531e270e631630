"""TLS end to end, refused tokens, where a server may listen, and slowing down guessers.

The certificate authority and the server's certificate (for 127.0.0.1) are made
here with ``cryptography``; the client trusts that CA only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _server import ROOT, Server, free_port, server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import AuditWatch, Setup, entry_client
from privml import AuthenticationError
from privml.service._client import connect
from privml.service._errors import ServiceError
from privml.service._limits import FailureThrottle


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA (ca.pem) and a certificate for 127.0.0.1 it signed (cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("privml test CA"))
        .issuer_name(_name("privml test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure(
    setup: Setup, tls: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    ca, cert, key = tls
    log = tmp_path_factory.mktemp("log") / "server.log"
    srv = server(setup.folder, setup.key_file, log, tls=(cert, key), ca=ca).start()
    yield srv
    srv.stop()


def test_a_dp_mean_over_tls_with_the_servers_ca(
    secure: Server, setup: Setup, tls: tuple[Path, Path, Path]
) -> None:
    assert secure.url.startswith("https://127.0.0.1:")
    with connect(secure.url, token=setup.tokens["ana"], purpose="research", verify=tls[0]) as s:
        result = s.dp.mean("patients", "glucose", epsilon=0.1)
    assert result.mechanism and result.epsilon == pytest.approx(0.1)
    assert 2.0 <= float(result.value) <= 12.0


def test_the_system_cas_do_not_trust_it(secure: Server, setup: Setup) -> None:
    with pytest.raises(ServiceError, match="certificate") as caught:
        connect(secure.url, token=setup.tokens["ana"], purpose="research", retries=0)
    assert "verify=" in str(caught.value)  # says how to fix it


def test_plain_http_to_the_tls_port_gets_nothing(secure: Server, setup: Setup) -> None:
    plain = secure.url.replace("https://", "http://")
    with pytest.raises(ServiceError) as caught:
        connect(plain, token=setup.tokens["ana"], purpose="research", retries=0)
    assert caught.value.status >= 500  # no answer, never a served session
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/v1/health", timeout=5).raise_for_status()


@pytest.mark.parametrize(("name", "reason"), [("revoked", "revoked"), ("short", "expired")])
def test_revoked_and_expired_tokens_are_refused_and_audited(
    name: str,
    reason: str,
    secure: Server,
    setup: Setup,
    tls: tuple[Path, Path, Path],
    watch: AuditWatch,
) -> None:
    if name == "short":  # wait until the short-lived token is past its expiry
        [info] = [
            t
            for t in watch.vault.tokens.list(include_inactive=True)
            if t.id == setup.token_ids["short"]
        ]
        assert info.expires is not None
        wait = (info.expires - dt.datetime.now(dt.UTC)).total_seconds()
        time.sleep(max(0.0, wait) + 0.2)
    watch.new()
    with pytest.raises(AuthenticationError):
        connect(secure.url, token=setup.tokens[name], purpose="research", verify=tls[0])
    [entry] = watch.new()
    assert (entry["action"], entry["outcome"]) == ("token.use", "denied")
    assert entry_client(entry) == "127.0.0.1"
    details = entry["details"]
    assert isinstance(details, dict)
    assert (details["token"], details["reason"], details["principal"]) == (
        setup.token_ids[name],
        reason,
        "ana",
    )
    assert setup.tokens[name] not in str(entry)  # the secret is never logged


def test_repeated_failures_still_get_401_and_a_valid_token_still_works(
    secure: Server, setup: Setup, tls: tuple[Path, Path, Path], watch: AuditWatch
) -> None:
    watch.new()
    guesses = ["pml_" + "0" * 16 + "_" + "A" * 43, "garbage", setup.tokens["ana"][:-1] + "x"]
    for n in range(6):
        response = httpx.get(
            f"{secure.url}/v1/session",
            headers={"Authorization": f"Bearer {guesses[n % 3]}", "Privml-Purpose": "research"},
            verify=ssl.create_default_context(cafile=tls[0]),
            timeout=30,
        )
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    entries = watch.new()
    assert [(e["action"], e["outcome"]) for e in entries] == [("token.use", "denied")] * 6
    with connect(secure.url, token=setup.tokens["kim"], purpose="care", verify=tls[0]) as s:
        assert s.principal == "kim"


def test_the_throttle_delays_an_address_after_repeated_failures() -> None:
    throttle = FailureThrottle(3, 60.0)
    delays = []
    for _ in range(12):
        delays.append(throttle.delay("203.0.113.7"))
        throttle.failed("203.0.113.7")
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3:9] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert delays[9:] == [5.0, 5.0, 5.0]  # doubling, capped
    assert throttle.delay("198.51.100.1") == 0.0  # per address
    throttle.failed("198.51.100.1")
    assert throttle.delay("198.51.100.1") == 0.0


def _serve(args: list[str], setup: Setup, log: Path) -> Server:
    return server(setup.folder, setup.key_file, log, args=args)


def test_a_public_address_without_tls_is_refused(setup: Setup) -> None:
    command = [sys.executable, "-m", "privml", "serve", str(setup.folder)]
    command += ["--key-file", str(setup.key_file), "--host", "0.0.0.0", "--port", str(free_port())]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**_env(), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "without TLS" in done.stderr and "--tls-cert" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_public_address_with_insecure_starts(
    setup: Setup, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = tmp_path_factory.mktemp("log") / "insecure.log"
    srv = _serve(["--host", "0.0.0.0", "--insecure"], setup, log).start()
    try:
        assert httpx.get(f"{srv.url}/v1/health", timeout=5).json() == {"status": "ok"}
    finally:
        srv.stop()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PRIVML_VAULT_KEY"}
