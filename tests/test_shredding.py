"""Crypto-shredding cannot be undone from a copy of the vault folder.

The attacker copies the folder (meta.db, its -wal and -shm, data/, the anchor)
right after a rotation, an erasure or a field-key drop, while the vault is still
open, and again after it is closed. Holding the vault key (the current one, or
the old one after a vault-key rotation), they try to unwrap every 60-byte window
of every metadata file under every slot a destroyed key had, and look for the
old wrapped bytes, the old data files and the erased values.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

import privml
from privml import Budget, Field, Schema, Vault
from privml.crypto.keyring import Keyring
from privml.crypto.keys import VaultKey
from privml.exceptions import DecryptionError

WRAPPED = 12 + 32 + 16  # nonce, key, tag


def copy_of(vault_folder: Path, into: Path) -> Path:
    """Copy every file of the vault folder as it is on disk now (the vault may be open)."""
    shutil.copytree(vault_folder, into)
    return into


def rows(folder: Path, query: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{folder / 'meta.db'}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def key_slots(folder: Path) -> list[str]:
    """Every slot a key of this vault was wrapped for (from the copy's own metadata)."""
    slots = [
        Keyring._slot(k, d, c, p)
        for k, d, c, p in rows(folder, 'SELECT key_id, dataset, "column", purpose FROM keys')
    ]
    slots += [f"model|{n}|{v}" for n, v in rows(folder, "SELECT name, version FROM models")]
    return [*slots, "audit-signing", "audit-mac"]


def destroyed_slots(folder: Path) -> list[str]:
    query = 'SELECT key_id, dataset, "column", purpose FROM keys WHERE destroyed IS NOT NULL'
    return [Keyring._slot(*row) for row in rows(folder, query)]


def unwrap_anywhere(folder: Path, vault_key: VaultKey, slots: list[str]) -> list[str]:
    """Try every WRAPPED-byte window of every metadata file under every slot; what unwraps."""
    found = []
    for path in sorted(folder.glob("meta.db*")):
        blob = path.read_bytes()
        for start in range(max(0, len(blob) - WRAPPED + 1)):
            window = blob[start : start + WRAPPED]
            # A wrapped key is random bytes: it holds four zero bytes in a row with
            # probability below 60 * 2**-32 < 1e-7, so such windows are skipped.
            if b"\0\0\0\0" in window:
                continue
            for slot in slots:
                try:
                    vault_key.unwrap(window, purpose=slot)
                except DecryptionError:
                    continue
                found.append(f"{path.name}@{start}: {slot}")
    return found


def all_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def containing(folder: Path, needles: list[bytes]) -> list[str]:
    return [name for name, blob in all_bytes(folder).items() for n in needles if n in blob]


def wrapped_now(folder: Path, where: str | None = None) -> list[bytes]:
    """The wrapped data keys matching ``where``; with no ``where``, every wrapped key."""
    found = [r[0] for r in rows(folder, f"SELECT wrapped FROM keys WHERE {where or '1=1'}")]
    if where is None:
        found += [r[0] for r in rows(folder, "SELECT wrapped_key FROM models")]
        found += [b for r in rows(folder, "SELECT signing_key, mac_key FROM vault_info") for b in r]
    return [b for b in found if b]


def key_of(key: bytes) -> VaultKey:
    return VaultKey.resolve(key=key, key_file=None, passphrase=None, salt=None)


@pytest.fixture
def subjects(tmp_path, key, allow):
    """A vault with 300 rows of 100 subjects (raw identifiers) and a minimized view of them."""
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "sid": [f"SUBJ-{i % 100:04d}-QX" for i in range(n)],
            "age": rng.integers(18, 90, n).astype("int64"),
            "income": np.round(rng.uniform(10_000, 90_000, n), 2),
            "risk": pd.Categorical(rng.choice(["low", "high"], n), categories=["low", "high"]),
        }
    )
    # the subject has the largest income: the minimizer's observed range ends at it
    frame.loc[frame["sid"] == "SUBJ-0042-QX", "income"] = 95555.55
    schema = Schema(
        {
            "sid": Field.identifier(pseudonymize=False),
            "age": Field.integer(bounds=(0, 120)),
            "income": Field.numeric(bounds=(0, 1e6)),
            "risk": Field.categorical(categories=["low", "high"], target=True),
        }
    )
    vault = Vault.create(tmp_path / "v", key=key)
    vault.add_dataset("people", frame, schema=schema, budget=Budget(epsilon=5, delta=1e-6))
    allow(vault, "people")
    tree = DecisionTreeClassifier(max_depth=3, random_state=0)
    tree.fit(frame[["age", "income"]], frame["risk"].astype(str))
    features = {"features": ["age", "income"]}
    vault.models.register(
        "risk", tree, trained_on="people", epsilon=None, delta=None, extra=features
    )
    yield vault, frame
    vault.close()


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


def test_erase_subject_is_final_for_a_copy(subjects, key, tmp_path):
    vault, frame = subjects
    folder = Path(vault.path)
    doomed = wrapped_now(folder, "purpose IN ('column', 'footer')")
    old_files = [r[0] for r in rows(folder, "SELECT file FROM versions")]
    vault.erase_subject("people", identifier="SUBJ-0042-QX")
    erased = [b"SUBJ-0042-QX", b"95555.55", struct.pack("<d", 95555.55)]
    for name, copy in (("open", tmp_path / "open"), ("closed", tmp_path / "closed")):
        if name == "closed":
            vault.close()
        copy_of(folder, copy)
        assert containing(copy, doomed) == []
        assert containing(copy, erased) == []
        assert [f for f in old_files if (copy / f).exists()] == []
        assert unwrap_anywhere(copy, key_of(key), destroyed_slots(copy)) == []
    with Vault.open(copy, key=key) as again:
        read = again.session("analyst", purpose="research").read("people")
        assert "SUBJ-0042-QX" not in set(read["sid"]) and len(read) == len(frame) - 3


def test_erasure_audits_a_keyed_hash_never_the_raw_identifier(subjects):
    vault, _ = subjects
    vault.erase_subject("people", identifier="SUBJ-0042-QX")
    [token] = vault.pseudonymize("people", "sid", ["SUBJ-0042-QX"])
    entries = vault.audit.entries(action="dataset.erase_subject").to_dict("records")
    assert [e["details"]["pseudonym"] for e in entries] == [token]
    assert "SUBJ-0042-QX" not in vault.audit.entries().to_string()
    folder = Path(vault.path)
    assert containing(folder, [b"SUBJ-0042-QX"]) == []
    vault.close()
    assert containing(folder, [b"SUBJ-0042-QX"]) == []


def _numbers(obj) -> set[float]:
    if isinstance(obj, dict):
        return {x for value in obj.values() for x in _numbers(value)}
    if isinstance(obj, list | tuple):
        return {x for value in obj for x in _numbers(value)}
    if isinstance(obj, int | float) and not isinstance(obj, bool):
        return {float(obj)}
    return set()


def test_erasure_reaches_minimized_views_and_their_minimizer(subjects, key, tmp_path):
    vault, frame = subjects
    session = vault.session("analyst", purpose="research")
    session.minimize("people", "risk", target_accuracy=0.8, name="people-min")
    before = vault.models.load("risk.minimizer")
    assert 95555.55 in _numbers(before.to_dict())  # the fitted state holds the subject's value
    folder = Path(vault.path)
    [old_minimizer] = [
        r[0]
        for r in rows(folder, "SELECT file FROM models WHERE version = 1")
        if "minimizer" in r[0]
    ]
    vault.erase_subject("people", identifier="SUBJ-0042-QX")
    view = vault.dataset("people-min")
    assert view.latest.rows == len(frame) - 3
    # the view is what a minimizer fitted without the subject releases for everyone else
    minimizer = vault.models.load("risk.minimizer")
    assert 95555.55 not in _numbers(minimizer.to_dict())
    assert vault.models.info("risk.minimizer").version == 2
    vault.grant(principal="analyst", dataset="people-min", purpose="research", mode="raw")
    kept = frame[frame["sid"] != "SUBJ-0042-QX"].reset_index(drop=True)
    expected = minimizer.transform(kept[["age", "income"]])
    got = session.read("people-min")
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    assert 95555.55 not in set(got["income"])
    for version in range(1, view.latest.version):
        with pytest.raises(DecryptionError, match="crypto-shredded"):
            session.read("people-min", version=version)
        assert not (folder / f"data/people-min/{version}.parquet").exists()
    assert not (folder / old_minimizer).exists()
    [entry] = [
        e
        for e in vault.audit.entries(action="dataset.erase_subject").to_dict("records")
        if e["dataset"] == "people-min"
    ]
    assert entry["details"]["source"] == "people" and entry["details"]["rows_removed"] == 3
    copy = copy_of(folder, tmp_path / "open")
    assert containing(copy, [b"95555.55", struct.pack("<d", 95555.55)]) == []
    assert unwrap_anywhere(copy, key_of(key), destroyed_slots(copy)) == []
    # a second subject: the view still matches the source, so erasure goes on working
    vault.erase_subject("people", identifier="SUBJ-0007-QX")
    assert vault.dataset("people-min").latest.rows == len(frame) - 6


def test_erasure_refuses_when_a_view_cannot_be_matched(subjects):
    vault, frame = subjects
    session = vault.session("analyst", purpose="research")
    session.minimize("people", "risk", target_accuracy=0.8, name="people-min")
    vault.add_version("people", frame.iloc[:-1])  # a row fewer: the view no longer matches
    vault.rotate_data_keys("people")  # the version the view was made from is shredded
    versions = {d.name: d.latest.version for d in vault.datasets()}
    with pytest.raises(privml.ConfigurationError, match=r"'people-min'.*Nothing was changed"):
        vault.erase_subject("people", identifier="SUBJ-0042-QX")
    assert {d.name: d.latest.version for d in vault.datasets()} == versions
    assert "SUBJ-0042-QX" in set(session.read("people")["sid"])


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


def test_shredding_on_postgresql_metadata(tmp_path, key, patients, patients_schema, allow, request):
    """PostgreSQL keeps dead row versions until VACUUM (see SECURITY.md); the operations work
    the same, destroyed rows hold no bytes and shredded files are deleted."""
    url = request.getfixturevalue("pg_database_url")
    folder = tmp_path / "v"
    with Vault.create(folder, key=key, metadata_url=url) as vault:
        vault.add_dataset("patients", patients, schema=patients_schema, budget=Budget(epsilon=1))
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
    with Vault.open(folder, key=new, metadata_url=url) as vault:
        assert len(vault.session("analyst", purpose="research").read("patients")) == 2
        assert vault.audit.verify().ok


def test_erasure_reaches_a_view_of_a_view(subjects):
    vault, frame = subjects
    session = vault.session("analyst", purpose="research")
    session.minimize("people", "risk", target_accuracy=0.8, name="people-min")
    vault.grant(principal="analyst", dataset="people-min", purpose="research", mode="raw")
    view = session.read("people-min")
    tree = DecisionTreeClassifier(max_depth=2, random_state=0)
    tree.fit(view[["age"]], frame["risk"].astype(str))
    features = {"features": ["age"]}
    vault.models.register(
        "risk2", tree, trained_on="people-min", epsilon=None, delta=None, extra=features
    )
    session.minimize("people-min", "risk2", target_accuracy=0.8, name="people-min2")
    vault.erase_subject("people", identifier="SUBJ-0042-QX")
    assert vault.dataset("people-min").latest.rows == len(frame) - 3
    assert vault.dataset("people-min2").latest.rows == len(frame) - 3
    vault.grant(principal="analyst", dataset="people-min2", purpose="research", mode="raw")
    parent = session.read("people-min")
    child = session.read("people-min2")
    expected = vault.models.load("risk2.minimizer").transform(parent[["age"]])
    np.testing.assert_array_equal(child.to_numpy(), expected.to_numpy())
    for version in range(1, vault.dataset("people-min2").latest.version):
        with pytest.raises(DecryptionError, match="crypto-shredded"):
            session.read("people-min2", version=version)
