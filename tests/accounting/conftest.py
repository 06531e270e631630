"""Fixtures for the ledger tests: small vaults with a chosen budget, and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

import privml

SCHEMA = privml.Schema({"x": privml.Field.numeric(bounds=(0, 100))})


def add_small_dataset(vault: privml.Vault, name: str, *, epsilon: float, delta: float) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    vault.add_dataset(
        name, frame, schema=SCHEMA, budget=privml.Budget(epsilon=epsilon, delta=delta)
    )


@pytest.fixture
def make_vault(tmp_path: Path, key: bytes) -> Iterator[Callable[..., privml.Vault]]:
    """``make_vault(epsilon=, delta=)``: an open vault with dataset ``"d"`` of that budget."""
    opened: list[privml.Vault] = []

    def make(
        *, epsilon: float = 1.0, delta: float = 1e-5, metadata_url: str | None = None
    ) -> privml.Vault:
        folder = tmp_path / f"v{len(opened)}"
        vault = privml.Vault.create(folder, key=key, metadata_url=metadata_url, actor="admin")
        add_small_dataset(vault, "d", epsilon=epsilon, delta=delta)
        opened.append(vault)
        return vault

    yield make
    for vault in opened:
        vault.close()


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="session")
def ledger_postgres_url() -> Iterator[str]:
    """A PostgreSQL server: ``PRIVML_TEST_POSTGRES_URL`` or a private one on a Unix socket."""
    url = os.environ.get("PRIVML_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries and PRIVML_TEST_POSTGRES_URL is not set")
    folder = Path(tempfile.mkdtemp(prefix="privml-ledger-pg-"))
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if prefix:
        shutil.chown(folder, user="postgres")
    data, port = folder / "data", 54341
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "privml"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=''"
    subprocess.run(
        [*pg_ctl, "-o", options, "-w", "-l", str(folder / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://privml@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(ledger_postgres_url: str) -> str:
    """A fresh database on the PostgreSQL server."""
    name = f"privml_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(ledger_postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return ledger_postgres_url.replace("/postgres?", f"/{name}?")
