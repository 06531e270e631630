"""Fixtures shared by the tests and the doctests (doctests see them via ``getfixture``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import settings

import privml

# Property tests run the same examples on every run, so CI never fails by chance, and have
# no per-example deadline: a loaded two-core machine is slow, not wrong.
settings.register_profile("privml", derandomize=True, deadline=None)
settings.load_profile("privml")

# privml.federated's Flower apps and its notebook need flwr (the `federated` extra, part of
# [all]): without it they are not collected.
collect_ignore = (
    []
    if importlib.util.find_spec("flwr")
    else [
        "privml/federated/_apps.py",
        "privml/federated/_client_app.py",
        "notebooks/11_federated.ipynb",
    ]
)


@pytest.fixture(autouse=True)
def _doctest_tmp_path(doctest_namespace: dict[str, object], tmp_path: Path) -> None:
    doctest_namespace["tmp_path"] = tmp_path


@pytest.fixture
def seeded_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make privml's own DP randomness reproducible, for tests that assert utility.

    Replaces :func:`privml.dp._random.entropy` (the one place privml asks the
    operating system for the seeds and coins of its mechanisms) with a seeded
    stream, so an accuracy or loss assertion either always holds or never does.
    Tests of privacy never use it.
    """
    from privml.dp import _random

    stream = np.random.default_rng(20261201)
    monkeypatch.setattr(_random, "entropy", stream.bytes)


@pytest.fixture
def key() -> bytes:
    return privml.generate_key()


@pytest.fixture
def patients() -> pd.DataFrame:
    """A small table with one column of each kind."""
    return pd.DataFrame(
        {
            "patient": ["P-1001", "P-1002", "P-1003", "P-1001"],
            "age": pd.Series([34, 71, 52, 35], dtype="int64"),
            "sex": pd.Categorical(["F", "M", "F", "F"], categories=["F", "M"]),
            "glucose": [5.4, 7.9, 6.1, 5.2],
            "note": pd.Series(["stable", "follow up", "stable", "new"], dtype="str"),
            "seen": pd.to_datetime(["2024-01-02", "2024-02-03", "2024-03-04", "2024-04-05"]).astype(
                "datetime64[us]"
            ),
        }
    )


@pytest.fixture
def patients_schema() -> privml.Schema:
    return privml.Schema(
        {
            "patient": privml.Field.identifier(),
            "age": privml.Field.integer(bounds=(0, 120), tags="demographic"),
            "sex": privml.Field.categorical(categories=["F", "M"], tags="demographic"),
            "glucose": privml.Field.numeric(bounds=(0.0, 50.0), tags="health"),
            "note": privml.Field.text(tags="health"),
            "seen": privml.Field.datetime(sensitive=False),
        }
    )


def allow_raw(
    vault: privml.Vault, dataset: str, *, principal: str = "analyst", purpose: str = "research"
) -> str:
    """Register ``principal`` and ``purpose`` if needed and grant them raw access to ``dataset``."""
    if purpose not in set(vault.policy.purposes()["name"]):
        vault.add_purpose(purpose, description="Tests", lawful_basis="consent")
    if principal not in set(vault.policy.principals()["name"]):
        vault.add_principal(principal, roles=[])
    return vault.grant(principal=principal, dataset=dataset, purpose=purpose, mode="raw")


@pytest.fixture
def allow():
    """``allow(vault, dataset, principal=..., purpose=...)`` grants raw access for a test."""
    return allow_raw


@pytest.fixture
def demo_vault(
    tmp_path: Path,
    key: bytes,
    patients: pd.DataFrame,
    patients_schema: privml.Schema,
    vaults: Vaults,
) -> Iterator[privml.Vault]:
    """An open vault holding the ``patients`` table as dataset ``"patients"``.

    Principal ``"analyst"`` may read it raw for purpose ``"research"``. Its metadata lives
    on the test's ``backend``.
    """
    vault = vaults.create(tmp_path / "demo.vault", key=key)
    vault.add_dataset(
        "patients",
        patients,
        schema=patients_schema,
        budget=privml.Budget(epsilon=1.0, delta=1e-6),
        privacy_unit="row",
    )
    allow_raw(vault, "patients")
    yield vault
    vault.close()


@pytest.fixture
def dp_vault(demo_vault: privml.Vault) -> privml.Vault:
    """``demo_vault`` where ``"ana"`` (role statistician) has ``dp_aggregate`` on the health
    columns and ``dp_training`` on age and sex, for purpose ``"studies"``."""
    demo_vault.add_purpose("studies", description="Studies", lawful_basis="GDPR 9(2)(j)")
    demo_vault.add_principal("ana", roles=["statistician"])
    demo_vault.grant(
        role="statistician",
        dataset="patients",
        purpose="studies",
        mode="dp_aggregate",
        tags=["health"],
    )
    demo_vault.grant(
        role="statistician",
        dataset="patients",
        purpose="studies",
        mode="dp_training",
        tags=["demographic"],
    )
    return demo_vault


# --- Metadata backends ---------------------------------------------------------------------
# A test that asks for ``backend`` (directly, or through ``vaults``, ``demo_vault``, ...)
# runs twice, with ids ``[sqlite]`` and ``[postgresql]``. A test whose guarantee belongs to one
# backend only says so with ``@pytest.mark.sqlite_only(reason)`` or
# ``@pytest.mark.postgresql_only(reason)`` and runs once. Doctests run on SQLite.

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): the guarantee under test belongs to SQLite metadata"
    )
    config.addinivalue_line(
        "markers",
        "postgresql_only(reason): the guarantee under test belongs to PostgreSQL metadata",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    only = {
        name
        for name in BACKENDS
        if metafunc.definition.get_closest_marker(f"{name}_only") is not None
    }
    metafunc.parametrize("backend", sorted(only) or BACKENDS, indirect=True)


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The metadata backend of this test run: ``"sqlite"`` or ``"postgresql"``.

    Module-scoped, so that a module's shared fixtures (a vault built once and copied per
    test) can follow it: a module runs its SQLite tests, then its PostgreSQL ones.
    """
    name = str(getattr(request, "param", "sqlite"))
    if name == "postgresql":
        request.getfixturevalue("postgres_url")  # skipped, or failed in CI, without a server
    return name


class Vaults:
    """Creates and opens vaults whose metadata lives on the test's backend.

    ``create(folder, **kw)`` and ``open(folder, **kw)`` take :meth:`privml.Vault.create`'s
    and :meth:`privml.Vault.open`'s arguments. On PostgreSQL each created vault gets a fresh
    database, remembered by folder, so that ``open`` (and ``metadata_url``) find it again.
    """

    def __init__(self, backend: str, new_database: Callable[[], str] | None) -> None:
        self.backend = backend
        self._new_database = new_database
        self._urls: dict[Path, str | None] = {}

    def register(self, folder: str | os.PathLike[str], metadata_url: str | None) -> None:
        """Say where the metadata of a vault made elsewhere (a copy, a module's vault) lives."""
        self._urls[Path(folder).resolve()] = metadata_url

    def metadata_url(self, folder: str | os.PathLike[str]) -> str | None:
        """The ``metadata_url=`` of the vault created in ``folder`` (None: SQLite)."""
        return self._urls.get(Path(folder).resolve())

    def create(self, folder: str | os.PathLike[str], **kwargs: Any) -> privml.Vault:
        url = self._new_database() if self._new_database is not None else None
        vault = privml.Vault.create(folder, metadata_url=url, **kwargs)
        self._urls[Path(folder).resolve()] = url
        return vault

    def open(self, folder: str | os.PathLike[str], **kwargs: Any) -> privml.Vault:
        return privml.Vault.open(folder, metadata_url=self.metadata_url(folder), **kwargs)

    def database(self, folder: str | os.PathLike[str]) -> sa.Engine:
        """An engine on the metadata of the vault in ``folder``, as its database admin has it:
        no key, plain SQL. Dispose of it when done."""
        url = self.metadata_url(folder) or f"sqlite:///{Path(folder) / 'meta.db'}"
        return sa.create_engine(url, poolclass=sa.NullPool)

    def stored(self, folder: str | os.PathLike[str]) -> bytes:
        """Everything the metadata database of the vault in ``folder`` holds, as bytes: the
        meta.db file on SQLite, every value of every table on PostgreSQL."""
        if self.metadata_url(folder) is None:
            return (Path(folder) / "meta.db").read_bytes()
        engine = self.database(folder)
        try:
            with engine.connect() as conn:
                values = [
                    value
                    for table in sa.inspect(conn).get_table_names()
                    for row in conn.execute(sa.text(f'SELECT * FROM "{table}"'))
                    for value in row
                ]
        finally:
            engine.dispose()
        return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in values)


@pytest.fixture
def vaults(backend: str, request: pytest.FixtureRequest) -> Vaults:
    """Create and open vaults on this test's ``backend`` (see :class:`Vaults`)."""
    if backend == "postgresql":
        return Vaults(backend, request.getfixturevalue("pg_schemas"))
    return Vaults(backend, None)


class Dba:
    """Someone with the metadata database but not the key: edits rows with plain SQL, copies
    a vault, keeps an older copy of its metadata to restore later.

    On PostgreSQL a copy of the metadata is a database of its own (CREATE DATABASE from the
    vault's database, which must be a database, not a schema), dropped when the test ends.
    """

    def __init__(self, vaults: Vaults, server: PostgresServer | None, tmp_path: Path) -> None:
        self.vaults, self.server, self.tmp_path = vaults, server, tmp_path
        self.copies: list[str] = []
        # a row's physical address, for "the first row" and "this row" in an edit
        self.rowid = "rowid" if server is None else "ctid"

    def copy(self, folder: Path, url: str | None, target: Path) -> Path:
        shutil.copytree(folder, target)
        if url is not None and self.server is not None:
            self.copies.append(self.server.new_database(copy_of=url))
        self.vaults.register(target, self.copies[-1] if url else None)
        return target

    def snapshot(self, folder: Path) -> sa.Engine:
        """An older copy of the (closed) vault's metadata, to restore tables from later."""
        url = self.vaults.metadata_url(folder)
        if url is None or self.server is None:
            older = self.tmp_path / f"older-{len(list(self.tmp_path.glob('older-*')))}.db"
            shutil.copy(folder / "meta.db", older)
            return sa.create_engine(f"sqlite:///{older}", poolclass=sa.NullPool)
        self.copies.append(self.server.new_database(copy_of=url))
        return sa.create_engine(self.copies[-1], poolclass=sa.NullPool)

    @contextmanager
    def edit(self, folder: Path) -> Iterator[sa.Connection]:
        """One transaction on the metadata as its database admin has it: no key."""
        engine = self.vaults.database(folder)
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # an admin edits past the foreign keys too, as sqlite3 does by default
                    conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                yield conn
        finally:
            engine.dispose()


@pytest.fixture
def dba(
    vaults: Vaults, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Dba]:
    """Edit, copy and snapshot vault metadata without the key (see :class:`Dba`)."""
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    admin = Dba(vaults, server, tmp_path)
    yield admin
    for url in admin.copies:
        assert server is not None
        server.drop(url)


# --- PostgreSQL --------------------------------------------------------------------------------
# PRIVML_TEST_POSTGRES_URL when set; otherwise a private server started from the local
# PostgreSQL binaries (initdb/pg_ctl, found under PRIVML_TEST_POSTGRES_BIN, a glob defaulting
# to /usr/lib/postgresql/*/bin, or on PATH) on a Unix socket in a temporary folder, stopped
# at the end of the session. Without either, the PostgreSQL tests are skipped and the summary
# says so; in CI (the environment variable CI set) they fail instead: CI must test both.

POSTGRES_MISSING = "PostgreSQL: not found"


def _load_pg_server():
    # benchmarks/pg_server.py starts the server for the benchmarks too; loaded by path, as
    # installed packages named "benchmarks" or "tests" may shadow this checkout's folders.
    path = Path(__file__).parent / "benchmarks" / "pg_server.py"
    spec = importlib.util.spec_from_file_location("privml_pg_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_pg_server = _load_pg_server()


def _postgres_missing() -> NoReturn:
    message = (
        f"{POSTGRES_MISSING} (no initdb under $PRIVML_TEST_POSTGRES_BIN, "
        "/usr/lib/postgresql/*/bin or on PATH, and PRIVML_TEST_POSTGRES_URL is not set)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI runs every test on PostgreSQL too", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("PRIVML_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if _pg_server.pg_bin() is None:
        _postgres_missing()
    # fsync=off: the tests kill clients, never the server or the machine, so flushing the
    # server's files to disk buys them nothing (the benchmarks keep fsync=on).
    with _pg_server.private_postgres(settings={"fsync": "off"}) as url:
        yield url


class PostgresServer:
    """Makes and drops databases on the test PostgreSQL server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)

    def new_database(self, *, copy_of: str | None = None) -> str:
        """A fresh database's URL; ``copy_of`` (a database URL nobody is connected to) makes
        it a copy of that database, as a backup restored elsewhere would be."""
        name = f"privml_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self._name(copy_of)}"' if copy_of else ""
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{template}')
        return self.url.replace("/postgres?", f"/{name}?")

    def drop(self, url: str) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self._name(url)}" WITH (FORCE)')

    @staticmethod
    def _name(url: str) -> str:
        return sa.make_url(url).database or ""


@pytest.fixture(scope="session")
def postgres_server(postgres_url: str) -> PostgresServer:
    return PostgresServer(postgres_url)


@pytest.fixture
def pg_databases(postgres_server: PostgresServer) -> Iterator[Callable[[], str]]:
    """``new()`` makes a fresh database on the PostgreSQL server and returns its URL.

    Every database is dropped when the test ends, so tests stay independent.
    """
    made: list[str] = []

    def new() -> str:
        made.append(postgres_server.new_database())
        return made[-1]

    yield new
    for url in made:
        postgres_server.drop(url)


@pytest.fixture
def pg_database_url(pg_databases: Callable[[], str]) -> str:
    """A fresh database on the PostgreSQL server: tests stay independent."""
    return pg_databases()


@pytest.fixture(scope="session")
def _pg_shared_database(postgres_server: PostgresServer) -> Iterator[str]:
    """One database for the whole run, holding a schema per vault (see ``pg_schemas``)."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop(url)


@pytest.fixture
def pg_schemas(_pg_shared_database: str) -> Callable[[], str]:
    """``new()`` makes a fresh, empty schema and returns a URL whose ``search_path`` is it.

    A vault's tables then live in that schema alone, which isolates vaults as a database of
    their own would at a fraction of the cost (no CREATE DATABASE per vault). No two vaults
    share a schema; all of them go with the shared database at the end of the run (dropping
    each one as its test ends would cost a third of a second per test).
    """
    admin = sa.create_engine(
        _pg_shared_database, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )

    def new() -> str:
        name = f"vault_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        return f"{_pg_shared_database}&options=-csearch_path%3D{name}"

    return new


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say when the PostgreSQL tests did not run because no PostgreSQL was found."""
    missing = [
        report
        for outcome in ("skipped", "error", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if POSTGRES_MISSING in str(getattr(report, "longrepr", ""))
    ]
    if missing:
        verb = "failed" if os.environ.get("CI") else "skipped"
        terminalreporter.write_line(
            f"{POSTGRES_MISSING} — {len(missing)} postgresql tests {verb} "
            "(install PostgreSQL or set PRIVML_TEST_POSTGRES_URL)",
            red=bool(os.environ.get("CI")),
            yellow=not os.environ.get("CI"),
        )
