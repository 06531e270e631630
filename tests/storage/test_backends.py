"""The same vault code path on SQLite (embedded) and PostgreSQL metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import privml
from privml import Budget, Vault


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request):
    return None if request.param == "sqlite" else request.getfixturevalue("pg_database_url")


def test_round_trip_and_verify(tmp_path, key, patients, patients_schema, metadata_url, allow):
    folder = tmp_path / "v"
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset("patients", patients, schema=patients_schema, budget=Budget(epsilon=1))
        allow(vault, "patients")
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        back = vault.session("analyst", purpose="research").read("patients")
        assert vault.audit.verify().ok
    pd.testing.assert_frame_equal(back.drop(columns="patient"), patients.drop(columns="patient"))
    assert (folder / "meta.db").exists() == (metadata_url is None)


def test_external_metadata_needs_its_url_at_open(tmp_path, key, pg_database_url):
    folder = tmp_path / "v"
    Vault.create(folder, key=key, metadata_url=pg_database_url).close()
    with pytest.raises(privml.ConfigurationError, match="metadata_url"):
        Vault.open(folder, key=key)


WRITER = textwrap.dedent(
    """
    import os, sys, privml
    url = os.environ.get("URL") or None
    with privml.Vault.open(sys.argv[1], key=os.environ["KEY"], metadata_url=url) as vault:
        session = vault.session(f"worker-{sys.argv[2]}", purpose="load")
        for _ in range(int(sys.argv[3])):
            session.read("patients", columns=["age"])
    """
)


def test_concurrent_processes_keep_the_log_gapless(
    tmp_path, key, patients, patients_schema, metadata_url, allow
):
    folder = tmp_path / "v"
    with Vault.create(folder, key=key, metadata_url=metadata_url, checkpoint_every=7) as vault:
        vault.add_dataset("patients", patients, schema=patients_schema, budget=Budget(epsilon=1))
        for i in range(4):
            allow(vault, "patients", principal=f"worker-{i}", purpose="load")
        setup = len(vault.audit.entries())
    env = {**os.environ, "KEY": key.decode(), "URL": metadata_url or ""}
    workers, reads = 4, 15
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(i), str(reads)], env=env)
        for i in range(workers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        entries = vault.audit.entries()
        report = vault.audit.verify()
    assert report.ok, report
    assert entries["seq"].tolist() == list(range(1, setup + workers * reads + 1))
    assert (entries["action"] == "dataset.read").sum() == workers * reads
