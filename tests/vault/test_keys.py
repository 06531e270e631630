"""The vault's keys (privml.vault._keys): rotation, crypto-shredding, field ciphers, pseudonyms.

Shredding is checked against a copy of the folder (see ``_shredding``): what was
destroyed cannot be unwrapped or found there, whichever vault key the copier holds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from _shredding import (
    containing,
    copy_of,
    destroyed_slots,
    key_of,
    key_slots,
    rows,
    unwrap_anywhere,
    wrapped_now,
)

import privml
from privml import Budget, Vault
from privml.exceptions import DecryptionError


def test_rotate_vault_key(demo_vault, patients, key, vaults):
    demo_vault.models.register("m", {"weights": [1, 2]}, trained_on=None, epsilon=None, delta=None)
    before = demo_vault.session("analyst", purpose="research").read("patients")
    new = privml.generate_key()
    demo_vault.rotate_vault_key(new)
    folder = demo_vault.path
    demo_vault.close()
    with pytest.raises(privml.InvalidKeyError):
        vaults.open(folder, key=key)
    with vaults.open(folder, key=new) as vault:
        pd.testing.assert_frame_equal(
            vault.session("analyst", purpose="research").read("patients"), before
        )
        assert vault.models.load("m") == {"weights": [1, 2]}
        assert vault.audit.verify().ok
        assert vault.audit.entries(action="vault.rotate_key")["outcome"].tolist() == ["ok"]


def test_rotate_to_a_passphrase(demo_vault, key, vaults):
    before = demo_vault.session("analyst", purpose="research").read("patients")
    demo_vault.rotate_vault_key(passphrase="a long and memorable phrase")
    folder = demo_vault.path
    demo_vault.close()
    with pytest.raises(privml.InvalidKeyError):
        vaults.open(folder, key=key)
    with pytest.raises(privml.InvalidKeyError):
        vaults.open(folder, passphrase="another phrase, not the one")
    with vaults.open(folder, passphrase="a long and memorable phrase") as vault:
        read = vault.session("analyst", purpose="research").read("patients")
        pd.testing.assert_frame_equal(read, before)
        [entry] = vault.audit.entries(action="vault.rotate_key").to_dict("records")
        assert entry["outcome"] == "ok"


CHILD = textwrap.dedent(
    """
    import os, sys, time
    import privml
    from privml.crypto.keyring import Keyring
    original = Keyring.rewrap
    def stall(self, conn, new_key):
        count = original(self, conn, new_key)
        print("READY", flush=True)
        time.sleep(60)
        return count
    Keyring.rewrap = stall
    url = os.environ.get("URL") or None
    vault = privml.Vault.open(sys.argv[1], key=os.environ["OLD"], metadata_url=url)
    vault.rotate_vault_key(os.environ["NEW"])
    """
)


def test_crash_mid_rotation_leaves_exactly_the_old_key(demo_vault, key, vaults):
    folder = demo_vault.path
    demo_vault.close()
    new = privml.generate_key()
    url = vaults.metadata_url(folder) or ""
    env = {**os.environ, "OLD": key.decode(), "NEW": new.decode(), "URL": url}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "READY"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    with pytest.raises(privml.InvalidKeyError):
        vaults.open(folder, key=new)
    with vaults.open(folder, key=key) as vault:
        assert len(vault.session("analyst", purpose="research").read("patients")) == 4
        assert vault.audit.verify().ok


def test_rotate_data_keys_shreds_old_versions(demo_vault):
    session = demo_vault.session("analyst", purpose="research")
    before = session.read("patients")
    rotated = demo_vault.rotate_data_keys("patients")
    assert rotated.version == 2
    pd.testing.assert_frame_equal(session.read("patients"), before)  # pseudonyms stable
    with pytest.raises(privml.DecryptionError, match="crypto-shredded"):
        session.read("patients", version=1)
    [entry] = demo_vault.audit.entries(action="dataset.rotate_keys").to_dict("records")
    assert entry["details"]["shredded_versions"] == [1]
    assert demo_vault.audit.verify().ok


def test_shredded_version_is_unreadable_even_with_the_keyring(demo_vault, vaults):
    """Destroyed keys are gone from the metadata: nothing left to unwrap."""
    demo_vault.rotate_data_keys("patients")
    engine = vaults.database(demo_vault.path)
    with engine.connect() as conn:
        query = "SELECT wrapped FROM keys WHERE destroyed IS NOT NULL"
        rows = conn.execute(sa.text(query)).all()
    engine.dispose()
    assert rows and all(len(r[0]) == 0 for r in rows)


def test_vault_field_cipher_keys_live_in_the_vault(demo_vault, key, vaults):
    cipher = demo_vault.field_cipher("patients")
    old_token = cipher.encrypt("P-1001", column="patient", row_key=1)
    cipher.rotate()
    new_token = cipher.encrypt("P-1002", column="patient", row_key=2)
    primary = cipher.keyset.primary_id  # a closed vault's cipher refuses, keyset included
    demo_vault.rotate_data_keys("patients")  # leaves field keys alone
    new_key = privml.generate_key()
    demo_vault.rotate_vault_key(new_key)
    folder = demo_vault.path
    demo_vault.close()
    with vaults.open(folder, key=new_key) as vault:
        again = vault.field_cipher("patients")
        assert again.decrypt(old_token, column="patient", row_key=1) == "P-1001"
        assert again.decrypt(new_token, column="patient", row_key=2) == "P-1002"
        assert again.keyset.primary_id == primary
        assert len(again.keyset.key_ids) == 2
        with pytest.raises(privml.DecryptionError):
            again.decrypt(old_token, column="patient", row_key=2)
        keys = vault.audit.entries(action="crypto.field_key")
        assert len(keys) == 2 and all("key_id" in d for d in keys["details"])


def test_pseudonym_domains_link_datasets_only_when_declared(tmp_path, key, allow, vaults):
    frame = pd.DataFrame({"pid": ["A-1", "A-2"], "x": [1.0, 2.0]})

    def schema(domain):
        return privml.Schema(
            {
                "pid": privml.Field.identifier(domain=domain),
                "x": privml.Field.numeric(bounds=(0, 9)),
            }
        )

    with vaults.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset(
            "visits",
            frame,
            schema=schema("patient"),
            budget=privml.Budget(epsilon=1),
            privacy_unit="row",
        )
        vault.add_dataset(
            "labs",
            frame,
            schema=schema("patient"),
            budget=privml.Budget(epsilon=1),
            privacy_unit="row",
        )
        vault.add_dataset(
            "other", frame, schema=schema(None), budget=privml.Budget(epsilon=1), privacy_unit="row"
        )
        for name in ("visits", "labs", "other"):
            allow(vault, name)
        session = vault.session("analyst", purpose="research")
        ids = {name: session.read(name)["pid"].tolist() for name in ("visits", "labs", "other")}
        assert ids["visits"] == ids["labs"]  # same domain: joinable
        assert not set(ids["visits"]) & set(ids["other"])  # no domain: unlinkable
        assert vault.pseudonymize("labs", "pid", ["A-2"]) == [ids["visits"][1]]
        vault.erase_subject("labs", identifier="A-1")
        assert session.read("labs")["pid"].tolist() == [ids["visits"][1]]


@pytest.mark.sqlite_only("a copy of the folder holds the metadata only on SQLite")
def test_rotate_data_keys_leaves_nothing_to_unwrap(demo_vault, key, tmp_path):
    folder = Path(demo_vault.path)
    old = wrapped_now(folder, "purpose IN ('column', 'footer')")
    [old_file] = [r[0] for r in rows(folder, "SELECT file FROM versions")]
    demo_vault.rotate_data_keys("patients")
    for name, copy in (("open", tmp_path / "open"), ("closed", tmp_path / "closed")):
        if name == "closed":
            demo_vault.close()
        copy_of(folder, copy)
        assert containing(copy, old) == []
        assert not (copy / old_file).exists()
        slots = destroyed_slots(copy)
        assert len(slots) == len(old) == 6  # footer + five sensitive columns
        assert unwrap_anywhere(copy, key_of(key), slots) == []
        with Vault.open(copy, key=key) as again, pytest.raises(DecryptionError, match="shredded"):
            again.session("analyst", purpose="research").read("patients", version=1)


@pytest.mark.sqlite_only("a copy of the folder holds the metadata only on SQLite")
def test_rotate_vault_key_leaves_nothing_the_old_key_unwraps(demo_vault, key, tmp_path):
    folder = Path(demo_vault.path)
    demo_vault.models.register("m", {"w": [1]}, trained_on=None, epsilon=None, delta=None)
    cipher = demo_vault.field_cipher("patients")
    cipher.rotate()
    old = wrapped_now(folder)
    new = privml.generate_key()
    demo_vault.rotate_vault_key(new)
    copy = copy_of(folder, tmp_path / "open")
    assert containing(copy, old) == []
    slots = key_slots(copy)
    assert unwrap_anywhere(copy, key_of(key), slots) == []
    # the attack would work: the new key unwraps the current wrappings in the copy
    assert len(unwrap_anywhere(copy, key_of(new), slots)) >= len(old)


@pytest.mark.sqlite_only("a copy of the folder holds the metadata only on SQLite")
def test_vault_field_keys_are_shredded_when_dropped(demo_vault, key, tmp_path):
    folder = Path(demo_vault.path)
    cipher = demo_vault.field_cipher("patients")
    old_id = cipher.keyset.primary_id
    old_token = cipher.encrypt("diabetes", column="note", row_key=1)
    cipher.rotate()
    new_token = cipher.encrypt("asthma", column="note", row_key=2)
    prefix = f"{old_id:08x}"
    old = wrapped_now(folder, f"purpose = 'field' AND key_id LIKE '{prefix}%'")
    assert len(old) == 1
    cipher.drop(old_id)
    with pytest.raises(DecryptionError):
        cipher.decrypt(old_token, column="note", row_key=1)
    [entry] = demo_vault.audit.entries(action="crypto.field_key_drop").to_dict("records")
    assert entry["details"] == {"key_id": prefix}
    copy = copy_of(folder, tmp_path / "open")
    assert containing(copy, old) == []
    assert unwrap_anywhere(copy, key_of(key), destroyed_slots(copy)) == []
    again = demo_vault.field_cipher("patients")  # a fresh cipher from the vault's keys
    assert old_id not in again.keyset
    assert again.decrypt(new_token, column="note", row_key=2) == "asthma"
    with pytest.raises(DecryptionError):
        again.decrypt(old_token, column="note", row_key=1)
    with pytest.raises(privml.ConfigurationError, match="primary"):
        again.drop(again.keyset.primary_id)


@pytest.mark.sqlite_only("WAL scrubbing: PostgreSQL keeps dead rows until VACUUM (SECURITY.md)")
def test_a_reader_holding_the_wal_is_reported_and_scrub_finishes_later(demo_vault):
    folder = Path(demo_vault.path)
    old = wrapped_now(folder, "purpose IN ('column', 'footer')")
    reader = sqlite3.connect(folder / "meta.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM keys").fetchall()  # holds a snapshot of the WAL
    try:
        with pytest.warns(UserWarning, match=r"vault\.scrub\(\)"):
            demo_vault.rotate_data_keys("patients")
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert demo_vault.scrub() is True
    assert (folder / "meta.db-wal").stat().st_size == 0
    assert containing(folder, old) == []


@pytest.mark.postgresql_only("the counterpart of the copy-of-the-folder tests above")
def test_shredding_on_postgresql_metadata(tmp_path, key, patients, patients_schema, allow, vaults):
    """PostgreSQL keeps dead row versions until VACUUM (see SECURITY.md); the operations work
    the same, destroyed rows hold no bytes and shredded files are deleted."""
    folder = tmp_path / "v"
    with vaults.create(folder, key=key) as vault:
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=Budget(epsilon=1),
            privacy_unit="row",
        )
        allow(vault, "patients")
        cipher = vault.field_cipher("patients")
        old_id = cipher.keyset.primary_id
        cipher.rotate()
        cipher.drop(old_id)
        vault.rotate_data_keys("patients")
        vault.erase_subject("patients", identifier="P-1001")
        new = privml.generate_key()
        vault.rotate_vault_key(new)
        assert vault.scrub() is True
        assert sorted(p.name for p in (folder / "data" / "patients").iterdir()) == ["3.parquet"]
        with vault._state.engine.connect() as conn:
            wrapped = conn.exec_driver_sql(
                "SELECT wrapped FROM keys WHERE destroyed IS NOT NULL"
            ).all()
        assert wrapped and all(len(bytes(w[0])) == 0 for w in wrapped)
    with vaults.open(folder, key=new) as vault:
        assert len(vault.session("analyst", purpose="research").read("patients")) == 2
        assert vault.audit.verify().ok


def test_a_vault_open_elsewhere_refuses_to_wrap_under_a_rotated_out_key(
    demo_vault, key, patients, patients_schema, vaults
):
    """Keys wrapped under the old vault key after a rotation would be lost with it."""
    other = vaults.open(demo_vault.path, key=key)
    new = privml.generate_key()
    demo_vault.rotate_vault_key(new)
    budget = privml.Budget(epsilon=1.0, delta=1e-6)
    with pytest.raises(privml.InvalidKeyError, match="rotated"):
        other.add_dataset(
            "later", patients, schema=patients_schema, budget=budget, privacy_unit="row"
        )
    with pytest.raises(privml.InvalidKeyError, match="rotated"):
        other.models.register("m", {"w": 1}, trained_on=None, epsilon=None, delta=None)
    with pytest.raises(privml.InvalidKeyError, match="rotated"):
        other.field_cipher("patients")
    other.close()
    demo_vault.add_dataset(
        "later", patients, schema=patients_schema, budget=budget, privacy_unit="row"
    )
    demo_vault.grant(principal="analyst", dataset="later", purpose="research", mode="raw")
    assert len(demo_vault.session("analyst", purpose="research").read("later")) == 4
