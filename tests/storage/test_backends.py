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
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=Budget(epsilon=1),
            privacy_unit="row",
        )
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
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=Budget(epsilon=1),
            privacy_unit="row",
        )
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


MIXED = textwrap.dedent(
    """
    import os, sys
    import pandas as pd
    import privml
    from privml.accounting import PrivacyEvent

    url = os.environ.get("URL") or None
    me, rounds = sys.argv[2], int(sys.argv[3])
    schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))})
    with privml.Vault.open(sys.argv[1], key=os.environ["KEY"], metadata_url=url) as vault:
        session = vault.session(f"worker-{me}", purpose="load")
        for k in range(rounds):
            session.read("patients", columns=["age"])
            vault.ledger.charge(
                "patients", event=PrivacyEvent.laplace(epsilon=0.001),
                principal=f"worker-{me}", purpose="load",
            )
            vault.add_principal(f"p-{me}-{k}", roles=[])
            vault.grant(principal=f"p-{me}-{k}", dataset="patients", purpose="load", mode="masked")
            vault.add_dataset(
                f"d-{me}-{k}", pd.DataFrame({"x": [float(k)]}), schema=schema,
                budget=privml.Budget(epsilon=1),
            )
    """
)


def test_mixed_writers_keep_the_log_gapless(
    tmp_path, key, patients, patients_schema, metadata_url, allow
):
    folder = tmp_path / "v"
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=Budget(epsilon=1),
            privacy_unit="row",
        )
        for i in range(4):
            allow(vault, "patients", principal=f"worker-{i}", purpose="load")
        setup = len(vault.audit.entries())
    env = {**os.environ, "KEY": key.decode(), "URL": metadata_url or ""}
    workers, rounds = 4, 4
    procs = [
        subprocess.Popen([sys.executable, "-c", MIXED, str(folder), str(i), str(rounds)], env=env)
        for i in range(workers)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * workers
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        entries = vault.audit.entries()
        report = vault.audit.verify()
        datasets = {d.name for d in vault.datasets()}
        charges = vault.ledger.events("patients")
    assert report.ok, report
    assert entries["seq"].tolist() == list(range(1, len(entries) + 1))
    done = entries["action"].iloc[setup:].value_counts().to_dict()
    each = workers * rounds
    kinds = ("dataset.read", "ledger.charge", "dataset.add", "policy.add_principal")
    assert {a: done.get(a) for a in kinds} == dict.fromkeys(kinds, each)
    assert len(datasets) == 1 + each
    assert len(charges) == each
    by_seq = entries.set_index("seq")
    for _, row in charges.iterrows():
        assert by_seq.loc[row["audit_seq"], "details"]["request_id"] == row["request_id"]
