"""Erasing a data subject (privml.vault._erasure, ._view_erasure): final for a copy, audited
under a keyed hash, carried into minimized views and their minimizers."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from _shredding import (
    containing,
    copy_of,
    destroyed_slots,
    key_of,
    rows,
    unwrap_anywhere,
    wrapped_now,
)
from sklearn.tree import DecisionTreeClassifier

import privml
from privml import Vault
from privml.exceptions import DecryptionError


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


@pytest.mark.sqlite_only("a copy of the folder holds the metadata only on SQLite")
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


def test_erasure_reaches_minimized_views_and_their_minimizer(
    subjects, key, tmp_path, vaults, backend
):
    vault, frame = subjects
    session = vault.session("analyst", purpose="research")
    session.minimize("people", "risk", target_accuracy=0.8, name="people-min")
    before = vault.models.load("risk.minimizer")
    assert 95555.55 in _numbers(before.to_dict())  # the fitted state holds the subject's value
    folder = Path(vault.path)
    engine = vaults.database(folder)
    with engine.connect() as conn:
        files = conn.execute(sa.text("SELECT file FROM models WHERE version = 1")).scalars()
        [old_minimizer] = [file for file in files if "minimizer" in file]
    engine.dispose()
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
    if backend == "sqlite":  # the folder holds the metadata (on PostgreSQL, see SECURITY.md)
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
