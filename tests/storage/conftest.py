"""A throwaway PostgreSQL server for the metadata-backend tests.

Uses ``PRIVML_TEST_POSTGRES_URL`` when set; otherwise starts a private server
from the local PostgreSQL binaries (``initdb``/``pg_ctl``) on a Unix socket in a
temporary folder, and stops it at the end of the session.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    return []


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("PRIVML_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries and PRIVML_TEST_POSTGRES_URL is not set")
    folder = Path(tempfile.mkdtemp(prefix="privml-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres")
    prefix = _as_postgres_user()
    data = folder / "data"
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "privml"],
        check=True,
        capture_output=True,
    )
    options = f"-p 54329 -k {folder} -c listen_addresses='' -c fsync=on"
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(folder / "log"),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://privml@/postgres?host={folder}&port=54329"
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
