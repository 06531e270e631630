"""A private PostgreSQL server for the tests and the benchmarks (not part of privml).

Starts a throw-away cluster from the local PostgreSQL binaries (``initdb`` and
``pg_ctl``, e.g. ``/usr/lib/postgresql/15/bin``) in a temporary folder, listening
on a Unix socket only, with ``fsync=on`` (the durability the vault relies on),
and removes it on exit. As root it runs the server as the ``postgres`` user,
since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["pg_bin", "private_postgres"]


def pg_bin() -> Path | None:
    """The folder of the newest local PostgreSQL binaries, or None if there are none.

    ``PRIVML_TEST_POSTGRES_BIN`` (a glob) says where to look instead of
    ``/usr/lib/postgresql/*/bin``.
    """
    pattern = os.environ.get("PRIVML_TEST_POSTGRES_BIN", "/usr/lib/postgresql/*/bin")
    for candidate in sorted(glob.glob(pattern), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres_user() -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    return []


@contextmanager
def private_postgres(*, port: int = 54329, settings: dict[str, str] | None = None) -> Iterator[str]:
    """Run a private server for the ``with`` block; yield a URL to its ``postgres`` database.

    ``settings`` are extra server settings (``-c name=value``). Raises
    ``FileNotFoundError`` when no PostgreSQL binaries are installed.
    """
    bin_dir = pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL binaries (initdb, pg_ctl) found")
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
    extra = {"listen_addresses": "''", "fsync": "on", **(settings or {})}
    options = f"-p {port} -k {folder} " + " ".join(f"-c {k}={v}" for k, v in extra.items())
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)]
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
