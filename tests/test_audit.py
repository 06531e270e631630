"""The audit log detects every kind of tampering, at the right sequence number.

The tamperer has the metadata database but not the key (a copy of the folder's
meta.db, or the PostgreSQL database) and edits the log with plain SQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import privml
from privml import Vault
from privml.audit import entry_hash
from privml.storage.tables import audit_log

ENTRIES = 30  # create, add, 3 policy changes, 25 reads; checkpoints every 10 and at close
READS = ENTRIES - 5


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, patients, patients_schema, backend, request):
    """A closed vault with a log of ENTRIES entries: its folder, key and metadata URL."""
    folder = tmp_path_factory.mktemp("audit") / "v"
    key = privml.generate_key()
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    url = server.new_database() if server else None
    with Vault.create(folder, key=key, checkpoint_every=10, metadata_url=url) as vault:
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=privml.Budget(epsilon=1),
            privacy_unit="row",
        )
        vault.add_purpose("research", description="Tests", lawful_basis="consent")
        vault.add_principal("analyst")
        vault.grant(principal="analyst", dataset="patients", purpose="research", mode="raw")
        session = vault.session("analyst", purpose="research")
        for _ in range(READS):
            session.read("patients", columns=["age"])
    yield folder, key, url
    if server:
        server.drop(url)


@pytest.fixture(scope="module")
def patients():
    return pd_patients()


@pytest.fixture(scope="module")
def patients_schema():
    return privml.Schema(
        {
            "age": privml.Field.integer(bounds=(0, 120)),
            "sex": privml.Field.categorical(categories=["F", "M"]),
        }
    )


def pd_patients():
    import pandas as pd

    return pd.DataFrame({"age": [34, 71, 52], "sex": ["F", "M", "F"]})


@pytest.fixture
def copy(pristine, dba, tmp_path):
    """A copy of the pristine vault, its metadata included, and the key."""
    folder, key, url = pristine
    return dba.copy(folder, url, tmp_path / "v"), key


@pytest.fixture
def verify(dba):
    """``verify(folder, key)``: the audit report of the vault in ``folder``."""

    def run(folder: Path, key: bytes) -> privml.VerifyReport:
        vault = dba.vaults.open(folder, key=key)
        try:
            return vault.audit.verify()
        finally:
            # Close without signing a new checkpoint over the tampered log.
            vault._state.engine.dispose()

    return run


def _sql(conn: sa.Connection, statement: str, **params: object) -> sa.CursorResult:
    return conn.execute(sa.text(statement), params)


def _rows(conn: sa.Connection) -> list[dict]:
    return [dict(r) for r in _sql(conn, "SELECT * FROM audit_log ORDER BY seq").mappings()]


def _log_id(conn: sa.Connection) -> str:
    return _sql(conn, "SELECT log_id FROM vault_info").scalar_one()


def _rehash(row: dict, log_id: str) -> str:
    entry = {
        k: row[k]
        for k in ("time", "principal", "purpose", "action", "dataset", "version", "outcome")
    }
    entry["details"] = json.loads(row["details"])
    entry["heads"] = None if row["heads"] is None else json.loads(row["heads"])
    return entry_hash(log_id, row["seq"], row["prev_hash"], entry)


def test_untouched_log_verifies(copy, dba, verify):
    report = verify(*copy)
    assert report.ok and bool(report)
    assert report.entries_checked == ENTRIES
    assert report.checkpoints_checked >= 6  # 3 in the table, 3 in the anchor
    report.raise_if_failed()


def test_modified_entry(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        _sql(con, "UPDATE audit_log SET outcome = 'denied' WHERE seq = 7")
    report = verify(*copy)
    assert (report.ok, report.first_bad_seq) == (False, 7)
    assert "modified" in report.reason
    with pytest.raises(privml.IntegrityError, match="seq 7"):
        report.raise_if_failed()


def test_modified_details(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        _sql(con, "UPDATE audit_log SET details = :details WHERE seq = 5", details='{"rows":0}')
    assert verify(*copy).first_bad_seq == 5


def test_deleted_entry_leaves_a_gap(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        _sql(con, "DELETE FROM audit_log WHERE seq = 12")
    report = verify(*copy)
    assert report.first_bad_seq == 12 and "missing" in report.reason


def test_deleted_entry_with_renumbering(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        _sql(con, "DELETE FROM audit_log WHERE seq = 12")
        _sql(con, "UPDATE audit_log SET seq = seq + 1000 WHERE seq > 12")
        _sql(con, "UPDATE audit_log SET seq = seq - 1001 WHERE seq > 1000")
    assert verify(*copy).first_bad_seq == 12


def test_inserted_entry(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        rows = _rows(con)
        _sql(con, "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 8")
        _sql(con, "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1008")
        fake = dict(rows[7], seq=8, principal="nobody")
        con.execute(audit_log.insert().values(fake))
    assert verify(*copy).first_bad_seq == 8


def test_reordered_entries(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        _sql(con, "UPDATE audit_log SET seq = -1 WHERE seq = 14")
        _sql(con, "UPDATE audit_log SET seq = 14 WHERE seq = 15")
        _sql(con, "UPDATE audit_log SET seq = 15 WHERE seq = -1")
    assert verify(*copy).first_bad_seq == 14


def test_rechained_suffix(copy, dba, verify):
    """Edit entry 9 and recompute every later hash with the public algorithm."""
    with dba.edit(copy[0]) as con:
        log_id = _log_id(con)
        rows = _rows(con)
        prev = rows[7]["hash"]
        for row in rows[8:]:
            if row["seq"] == 9:
                row["principal"] = "someone-else"
            row["prev_hash"] = prev
            row["hash"] = prev = _rehash(row, log_id)
            _sql(
                con,
                "UPDATE audit_log SET principal = :principal, prev_hash = :prev_hash, "
                "hash = :hash WHERE seq = :seq",
                **{k: row[k] for k in ("principal", "prev_hash", "hash", "seq")},
            )
    report = verify(*copy)
    assert report.first_bad_seq == 9
    assert "re-chained" in report.reason
    # The signed checkpoints at 10, 20, 30 disagree with the rewritten chain too.
    assert {s for s, r in report.problems if "checkpoint" in r} >= {10, 20, 30}


def test_appended_forgery_after_last_checkpoint(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        log_id = _log_id(con)
        last = _rows(con)[-1]
        fake = dict(last, seq=last["seq"] + 1, prev_hash=last["hash"], action="dataset.delete")
        fake["hash"] = _rehash(fake, log_id)
        con.execute(audit_log.insert().values(fake))
    assert verify(*copy).first_bad_seq == ENTRIES + 1


@pytest.mark.parametrize("keep", [5, 19, 20])
def test_truncation_caught_by_anchor(copy, keep, dba, verify):
    with dba.edit(copy[0]) as con:
        _sql(con, "DELETE FROM audit_log WHERE seq > :keep", keep=keep)
        _sql(con, "DELETE FROM checkpoints WHERE seq > :keep", keep=keep)
    report = verify(*copy)
    assert report.first_bad_seq == keep + 1
    assert "truncated" in report.reason


def test_truncation_to_empty(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        _sql(con, "DELETE FROM audit_log")
        _sql(con, "DELETE FROM checkpoints")
    assert verify(*copy).first_bad_seq == 1


def test_forged_checkpoint(copy, dba, verify):
    with dba.edit(copy[0]) as con:
        _sql(con, "UPDATE checkpoints SET hash = :forged WHERE seq = 20", forged="ab" * 32)
    report = verify(*copy)
    assert report.first_bad_seq == 20 and "signature" in report.reason


def test_missing_anchor_is_reported(copy, dba, verify):
    (copy[0] / "audit.anchor").unlink()
    report = verify(*copy)
    assert not report.ok and "anchor" in report.reason


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Los_Angeles", "UTC"])
def test_entries_since_a_time_in_any_zone(copy, dba, monkeypatch, zone):
    """The log stores UTC; a ``since`` time in another zone (aware or naive) selects alike."""
    with dba.vaults.open(copy[0], key=copy[1]) as vault:
        every = vault.audit.entries()
        middle = every["time"].iloc[len(every) // 2].to_pydatetime()
        expected = list(every["seq"][every["time"] >= middle])
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            local = middle.astimezone()  # aware, in the process's zone
            naive = local.replace(tzinfo=None)  # read as local time
            for since in (middle, local, naive):
                assert list(vault.audit.entries(since=since)["seq"]) == expected
        finally:
            monkeypatch.undo()
            time.tzset()


def test_anchor_elsewhere(tmp_path, key, vaults):
    anchor = tmp_path / "elsewhere" / "privml.anchor"
    anchor.parent.mkdir()
    with vaults.create(tmp_path / "v", key=key, anchor_path=anchor) as vault:
        vault.add_purpose("q", description="Tests", lawful_basis="consent")
    assert anchor.exists() and not (tmp_path / "v" / "audit.anchor").exists()
    with vaults.open(tmp_path / "v", key=key, anchor_path=anchor) as vault:
        assert vault.audit.verify().ok


def test_entries_filters(copy, dba, verify):
    with dba.vaults.open(copy[0], key=copy[1]) as vault:
        reads = vault.audit.entries(action="dataset.read")
        assert len(reads) == READS and set(reads["principal"]) == {"analyst"}
        assert list(vault.audit.entries(since=29)["seq"]) == [29, 30]
        assert len(vault.audit.entries(principal="nobody")) == 0
        first = vault.audit.entries().iloc[0]
        assert first["action"] == "vault.create" and first["prev_hash"] == "0" * 64


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seq=st.integers(min_value=1, max_value=ENTRIES),
    column=st.sampled_from(["time", "principal", "purpose", "action", "outcome", "details"]),
)
def test_any_single_edit_is_found_at_its_seq(pristine, dba, verify, tmp_path_factory, seq, column):
    folder = dba.copy(pristine[0], pristine[2], tmp_path_factory.mktemp("edit") / "v")
    value = '{"edited":true}' if column == "details" else "edited"
    with dba.edit(folder) as con:
        _sql(con, f"UPDATE audit_log SET {column} = :value WHERE seq = :seq", value=value, seq=seq)
    assert verify(folder, pristine[1]).first_bad_seq == seq
