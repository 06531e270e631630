"""Key rotation, crypto-shredding and subject erasure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import privml
from privml import Vault


def test_rotate_vault_key(demo_vault, patients, key):
    demo_vault.models.register("m", {"weights": [1, 2]}, trained_on=None, epsilon=None, delta=None)
    before = demo_vault.session("analyst", purpose="research").read("patients")
    new = privml.generate_key()
    demo_vault.rotate_vault_key(new)
    folder = demo_vault.path
    demo_vault.close()
    with pytest.raises(privml.InvalidKeyError):
        Vault.open(folder, key=key)
    with Vault.open(folder, key=new) as vault:
        pd.testing.assert_frame_equal(
            vault.session("analyst", purpose="research").read("patients"), before
        )
        assert vault.models.load("m") == {"weights": [1, 2]}
        assert vault.audit.verify().ok
        assert vault.audit.entries(action="vault.rotate_key")["outcome"].tolist() == ["ok"]


def test_rotate_to_a_passphrase(demo_vault):
    demo_vault.rotate_vault_key(passphrase="a long and memorable phrase")
    folder = demo_vault.path
    demo_vault.close()
    Vault.open(folder, passphrase="a long and memorable phrase").close()


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
    vault = privml.Vault.open(sys.argv[1], key=os.environ["OLD"])
    vault.rotate_vault_key(os.environ["NEW"])
    """
)


def test_crash_mid_rotation_leaves_exactly_the_old_key(demo_vault, key):
    folder = demo_vault.path
    demo_vault.close()
    new = privml.generate_key()
    env = {**os.environ, "OLD": key.decode(), "NEW": new.decode()}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "READY"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    with pytest.raises(privml.InvalidKeyError):
        Vault.open(folder, key=new)
    with Vault.open(folder, key=key) as vault:
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


def test_shredded_version_is_unreadable_even_with_the_keyring(demo_vault):
    """Destroyed keys are gone from meta.db: nothing left to unwrap."""
    demo_vault.rotate_data_keys("patients")
    import sqlite3

    with sqlite3.connect(Path(demo_vault.path) / "meta.db") as con:
        rows = con.execute("SELECT wrapped FROM keys WHERE destroyed IS NOT NULL").fetchall()
    assert rows and all(len(r[0]) == 0 for r in rows)


def test_erase_subject(demo_vault, patients):
    session = demo_vault.session("analyst", purpose="research")
    [token] = demo_vault.pseudonymize("patients", "patient", ["P-1001"])
    assert token in set(session.read("patients")["patient"])
    version = demo_vault.erase_subject("patients", identifier="P-1001")
    after = session.read("patients")
    assert token not in set(after["patient"])
    kept = patients[patients["patient"] != "P-1001"].reset_index(drop=True)
    pd.testing.assert_frame_equal(after.drop(columns="patient"), kept.drop(columns="patient"))
    assert version.rows == 2
    with pytest.raises(privml.DecryptionError):
        session.read("patients", version=1)
    [entry] = demo_vault.audit.entries(action="dataset.erase_subject").to_dict("records")
    assert entry["details"]["pseudonym"] == token and entry["details"]["rows_removed"] == 2
    log = demo_vault.audit.entries().to_string()
    assert "P-1001" not in log
    assert demo_vault.audit.verify().ok
    blobs = b"".join(p.read_bytes() for p in Path(demo_vault.path).rglob("*") if p.is_file())
    assert b"P-1001" not in blobs


def test_erase_unknown_subject(demo_vault):
    with pytest.raises(privml.NotFoundError):
        demo_vault.erase_subject("patients", identifier="nobody")
    assert demo_vault.dataset("patients").latest.version == 1


def test_vault_field_cipher_keys_live_in_the_vault(demo_vault, key):
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
    with Vault.open(folder, key=new_key) as vault:
        again = vault.field_cipher("patients")
        assert again.decrypt(old_token, column="patient", row_key=1) == "P-1001"
        assert again.decrypt(new_token, column="patient", row_key=2) == "P-1002"
        assert again.keyset.primary_id == primary
        assert len(again.keyset.key_ids) == 2
        with pytest.raises(privml.DecryptionError):
            again.decrypt(old_token, column="patient", row_key=2)
        keys = vault.audit.entries(action="crypto.field_key")
        assert len(keys) == 2 and all("key_id" in d for d in keys["details"])


def test_pseudonym_domains_link_datasets_only_when_declared(tmp_path, key, allow):
    frame = pd.DataFrame({"pid": ["A-1", "A-2"], "x": [1.0, 2.0]})

    def schema(domain):
        return privml.Schema(
            {
                "pid": privml.Field.identifier(domain=domain),
                "x": privml.Field.numeric(bounds=(0, 9)),
            }
        )

    with Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset(
            "visits", frame, schema=schema("patient"), budget=privml.Budget(epsilon=1)
        )
        vault.add_dataset("labs", frame, schema=schema("patient"), budget=privml.Budget(epsilon=1))
        vault.add_dataset("other", frame, schema=schema(None), budget=privml.Budget(epsilon=1))
        for name in ("visits", "labs", "other"):
            allow(vault, name)
        session = vault.session("analyst", purpose="research")
        ids = {name: session.read(name)["pid"].tolist() for name in ("visits", "labs", "other")}
        assert ids["visits"] == ids["labs"]  # same domain: joinable
        assert not set(ids["visits"]) & set(ids["other"])  # no domain: unlinkable
        assert vault.pseudonymize("labs", "pid", ["A-2"]) == [ids["visits"][1]]
        vault.erase_subject("labs", identifier="A-1")
        assert session.read("labs")["pid"].tolist() == [ids["visits"][1]]
