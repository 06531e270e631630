"""An S3-compatible server on 127.0.0.1 for the storage tests (moto's server mode).

Imported by name (tests/storage is on sys.path for its tests; tests/vault/test_shared_vault.py
puts it there); a test module imports the fixtures ``s3_endpoint`` and ``s3_env`` too.

``s3`` (session scope) starts ``python -m moto.server`` on a free port and stops
it at the end; ``s3_env`` (per test) points the standard AWS variables at it and
gives the test its own bucket prefix: ``s3_env.uri`` is ``s3://bucket/<random>``.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs
import pytest
import sqlalchemy as sa

BUCKET = "privml-tests"
# Distinctive so that a scan can look for them; moto accepts any credentials.
ACCESS_KEY = "AKIAPRIVMLTEST4821"
SECRET_KEY = "privml-secret-7f3a9c2e51d04b86"


@dataclass(frozen=True)
class S3:
    endpoint: str
    uri: str
    prefix: str

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region="us-east-1",
        )

    def objects(self, *, claim: bool = False) -> dict[str, bytes]:
        """The data files under this test's prefix (and the vault's claim if ``claim``)."""
        fs = self.filesystem()
        base = f"{BUCKET}/{self.prefix}"
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        out = {}
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                with fs.open_input_file(info.path) as handle:
                    out[info.path[len(base) + 1 :]] = handle.read_buffer().to_pybytes()
        return {k: v for k, v in out.items() if claim or k != "privml-vault.id"}

    def put(self, relative: str, data: bytes) -> None:
        with self.filesystem().open_output_stream(f"{BUCKET}/{self.prefix}/{relative}") as out:
            out.write(data)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], int]:
    """Start moto's S3 server on a free port and wait until it listens.

    The port is free when chosen but another process may take it before moto binds
    it; then moto exits and a new port is tried, so a start never fails by chance.
    """
    for _ in range(5):
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(600):  # up to a minute on a loaded machine
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return server, port
            except OSError:
                if server.poll() is not None:
                    break  # exited (the port was taken): try another
                time.sleep(0.1)
        server.terminate()
        server.wait(timeout=30)
    pytest.fail("moto's S3 server did not start on any of 5 ports")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    if importlib.util.find_spec("moto") is None:
        pytest.skip('needs moto\'s S3 server: pip install "moto[server]" (in the dev extra)')
    server, port = _start_moto()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        fs = pafs.S3FileSystem(
            endpoint_override=endpoint,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir(BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The standard AWS variables set for the server, and a fresh prefix for this test."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    return S3(s3_endpoint, f"s3://{BUCKET}/{prefix}", prefix)


def database_bytes(url: str) -> bytes:
    """Every value of every table of the database at ``url``, as text (for plaintext scans)."""
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        parts = []
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(sa.select(table)):
                    for value in row:
                        parts.append(value if isinstance(value, bytes) else str(value).encode())
        return b"\n".join(parts)
    finally:
        engine.dispose()


def credentials() -> list[bytes]:
    return [ACCESS_KEY.encode(), SECRET_KEY.encode()]


__all__ = ["S3", "credentials", "database_bytes", "s3_endpoint", "s3_env"]
