from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import privml
from privml import Budget, Field, Schema, Vault

BUDGET = Budget(epsilon=1.0, delta=1e-6)


def _non_identifier(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["patient"])


def test_round_trip_after_reopen(tmp_path, key, patients, patients_schema, allow, vaults):
    with vaults.create(tmp_path / "v", key=key) as vault:
        added = vault.add_dataset(
            "patients", patients, schema=patients_schema, budget=BUDGET, privacy_unit="row"
        )
        allow(vault, "patients")
    assert (added.name, added.version, added.rows) == ("patients", 1, 4)
    with vaults.open(tmp_path / "v", key=key) as vault:
        back = vault.session("analyst", purpose="research").read("patients")
    pd.testing.assert_frame_equal(_non_identifier(back), _non_identifier(patients))
    assert back["patient"].dtype == "str"


def test_identifiers_come_back_as_stable_pseudonyms(demo_vault, patients):
    back = demo_vault.session("analyst", purpose="research").read("patients")
    ids = back["patient"].tolist()
    assert "P-1001" not in ids
    assert ids[0] == ids[3] and len({ids[0], ids[1], ids[2]}) == 3
    assert all(len(p) == 32 for p in ids)


def test_identifier_can_be_kept_in_clear(tmp_path, key, allow, vaults):
    schema = Schema({"id": Field.identifier(pseudonymize=False), "x": Field.numeric(bounds=(0, 1))})
    frame = pd.DataFrame({"id": ["a", "b"], "x": [0.1, 0.2]})
    with vaults.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset("d", frame, schema=schema, budget=BUDGET, privacy_unit="row")
        allow(vault, "d")
        back = vault.session("analyst", purpose="research").read("d")
    assert back["id"].tolist() == ["a", "b"]


def test_read_columns_and_versions(demo_vault, patients):
    newer = patients.assign(age=patients["age"] + 1)
    v2 = demo_vault.add_version("patients", newer)
    assert v2.version == 2
    session = demo_vault.session("analyst", purpose="research")
    assert session.read("patients", columns=["age"])["age"].tolist() == [35, 72, 53, 36]
    assert session.read("patients", columns=["age"], version=1)["age"].tolist() == [34, 71, 52, 35]
    [info] = demo_vault.datasets()
    assert [v.version for v in info.versions] == [1, 2]
    assert info.budget == BUDGET
    assert info.schema["glucose"].bounds == (0.0, 50.0)


def test_reads_are_audited_with_version_and_hash(demo_vault):
    demo_vault.session("analyst", purpose="research").read("patients", columns=["age"])
    entries = demo_vault.audit.entries(action="dataset.read")
    [entry] = entries.to_dict("records")
    assert (entry["principal"], entry["purpose"], entry["outcome"]) == (
        "analyst",
        "research",
        "ok",
    )
    assert entry["version"] == 1
    assert entry["details"]["content_hash"] == demo_vault.dataset("patients").latest.content_hash
    assert entry["details"]["columns"] == {"age": "raw"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"dataset": "nope"}, privml.NotFoundError),
        ({"dataset": "patients", "version": 7}, privml.NotFoundError),
        ({"dataset": "patients", "columns": ["salary"]}, privml.ConfigurationError),
    ],
)
def test_failed_reads_are_audited(demo_vault, kwargs, error, allow):
    allow(demo_vault, "patients", principal="eve", purpose="curiosity")
    with pytest.raises(error):
        demo_vault.session("eve", purpose="curiosity").read(**kwargs)
    [entry] = demo_vault.audit.entries(principal="eve", action="dataset.read").to_dict("records")
    assert entry["outcome"] == "error"
    assert entry["details"]["error"] == error.__name__


def test_wrong_key_fails_at_open(tmp_path, key, vaults):
    vaults.create(tmp_path / "v", key=key).close()
    with pytest.raises(privml.InvalidKeyError, match="does not open the vault"):
        vaults.open(tmp_path / "v", key=privml.generate_key())


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PRIVML_VAULT_KEY", raising=False)
    with pytest.raises(privml.MissingKeyError, match="PRIVML_VAULT_KEY"):
        Vault.create(tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_key_from_environment_and_file(tmp_path, key, monkeypatch, vaults):
    monkeypatch.setenv("PRIVML_VAULT_KEY", key.decode())
    with vaults.create(tmp_path / "v") as vault:
        [created] = vault.audit.entries(action="vault.create").to_dict("records")
        assert created["details"]["key_source"] == "env"
        vault.add_purpose("care", description="Care", lawful_basis="consent")
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(key + b"\n")  # the environment's key, from a file
    key_file.chmod(0o600)
    monkeypatch.setenv("PRIVML_VAULT_KEY", privml.generate_key().decode())
    with pytest.raises(privml.InvalidKeyError):
        vaults.open(tmp_path / "v")  # another key in the environment does not open it
    monkeypatch.delenv("PRIVML_VAULT_KEY")
    for source in ({"key_file": key_file}, {"key": key.decode()}):
        with vaults.open(tmp_path / "v", **source) as vault:
            assert list(vault.policy.purposes()["name"]) == ["care"]
            assert vault.audit.verify().ok


def test_passphrase(tmp_path, vaults):
    vaults.create(tmp_path / "v", passphrase="correct horse battery staple").close()
    vaults.open(tmp_path / "v", passphrase="correct horse battery staple").close()
    with pytest.raises(privml.InvalidKeyError):
        vaults.open(tmp_path / "v", passphrase="incorrect horse battery staple")


@pytest.mark.parametrize(
    "bad",
    [{"key": b"short"}, {"passphrase": "short"}, {"key_file": "/no/such/file"}],
)
def test_bad_key_arguments(tmp_path, bad):
    with pytest.raises(privml.ConfigurationError):
        Vault.create(tmp_path / "v", **bad)


def test_two_key_sources_refused(tmp_path, key):
    with pytest.raises(privml.ConfigurationError, match="exactly one"):
        Vault.create(tmp_path / "v", key=key, passphrase="correct horse battery staple")


def test_create_refuses_existing_vault(tmp_path, key, vaults):
    vaults.create(tmp_path / "v", key=key).close()
    with pytest.raises(privml.VaultExistsError):
        vaults.create(tmp_path / "v", key=key)


def test_open_missing_vault(tmp_path, key):
    with pytest.raises(privml.NotFoundError, match="no vault"):
        Vault.open(tmp_path / "nothing", key=key)


def test_closed_vault_refuses_work(tmp_path, key, patients, patients_schema, allow, vaults):
    vault = vaults.create(tmp_path / "v", key=key)
    vault.add_dataset("p", patients, schema=patients_schema, budget=BUDGET, privacy_unit="row")
    allow(vault, "p")
    session = vault.session("analyst", purpose="research")
    vault.close()
    vault.close()  # idempotent
    with pytest.raises(privml.ConfigurationError, match="closed"):
        vault.add_dataset("d", patients, schema=patients_schema, budget=BUDGET, privacy_unit="row")
    with pytest.raises(privml.ConfigurationError, match="closed"):
        session.read("p")


def test_dataset_names_and_duplicates(tmp_path, key, patients, patients_schema, vaults):
    with vaults.create(tmp_path / "v", key=key) as vault:
        for bad in ["../escape", "", ".hidden", "a/b"]:
            with pytest.raises(privml.ConfigurationError, match=r"not allowed|non-empty"):
                vault.add_dataset(
                    bad, patients, schema=patients_schema, budget=BUDGET, privacy_unit="row"
                )
        vault.add_dataset("p", patients, schema=patients_schema, budget=BUDGET, privacy_unit="row")
        with pytest.raises(privml.ConfigurationError, match="add_version"):
            vault.add_dataset(
                "p", patients, schema=patients_schema, budget=BUDGET, privacy_unit="row"
            )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_add_from_file(tmp_path, key, suffix, allow, vaults):
    frame = pd.DataFrame({"age": [30, 40], "income": [1000.5, 2000.25]})
    path = tmp_path / f"input{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    schema = Schema(
        {"age": Field.integer(bounds=(0, 120)), "income": Field.numeric(bounds=(0, 1e6))}
    )
    with vaults.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset("d", path, schema=schema, budget=BUDGET)
        allow(vault, "d")
        back = vault.session("analyst", purpose="research").read("d")
    pd.testing.assert_frame_equal(back, frame)


def test_tampered_dataset_file_is_detected(demo_vault):
    path = Path(demo_vault.path) / "data" / "patients" / "1.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(privml.IntegrityError, match="modified or replaced"):
        demo_vault.session("analyst", purpose="research").read("patients")


def test_vault_files_are_private(demo_vault, backend):
    demo_vault.close()  # writes the final checkpoint to the anchor file
    names = ["audit.anchor", "data/patients/1.parquet"]
    names += ["meta.db"] if backend == "sqlite" else []
    for name in names:
        mode = os.stat(Path(demo_vault.path) / name).st_mode & 0o777
        assert mode & 0o077 == 0, f"{name} is readable by others ({oct(mode)})"


def test_key_file_readable_by_others_warns(tmp_path, key, vaults):
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(key)
    key_file.chmod(0o644)
    with pytest.warns(privml.InsecureKeyFileWarning, match="chmod 600"):
        vaults.create(tmp_path / "v", key_file=key_file).close()


def test_no_key_material_in_reprs(demo_vault, key):
    import base64

    raw = base64.urlsafe_b64decode(key)
    shown = " ".join(
        [
            repr(demo_vault),
            str(demo_vault),
            repr(demo_vault._state.key),
            repr(demo_vault._keys._keyring),
            repr(demo_vault.models),
            repr(demo_vault.session("analyst", purpose="research")),
        ]
    )
    assert key.decode() not in shown and raw.hex() not in shown
