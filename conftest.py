"""Fixtures shared by the tests and the doctests (doctests see them via ``getfixture``)."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

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
    tmp_path: Path, key: bytes, patients: pd.DataFrame, patients_schema: privml.Schema
) -> Iterator[privml.Vault]:
    """An open vault holding the ``patients`` table as dataset ``"patients"``.

    Principal ``"analyst"`` may read it raw for purpose ``"research"``.
    """
    vault = privml.Vault.create(tmp_path / "demo.vault", key=key)
    vault.add_dataset(
        "patients", patients, schema=patients_schema, budget=privml.Budget(epsilon=1.0, delta=1e-6)
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


# --- PostgreSQL, for the metadata-backend tests ------------------------------------------------
# PRIVML_TEST_POSTGRES_URL when set; otherwise a private server started from the local
# PostgreSQL binaries (initdb/pg_ctl) on a Unix socket in a temporary folder, stopped at the
# end of the session.


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("PRIVML_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if _pg_server.pg_bin() is None:
        pytest.skip("no PostgreSQL binaries and PRIVML_TEST_POSTGRES_URL is not set")
    with _pg_server.private_postgres() as url:
        yield url


@pytest.fixture
def pg_database_url(postgres_url: str) -> str:
    """A fresh database on the PostgreSQL server: tests stay independent."""
    name = f"privml_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return postgres_url.replace("/postgres?", f"/{name}?")
