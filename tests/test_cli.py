from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import sqlalchemy as sa

import privml
from privml.cli import main


def test_demo_runs_cleanly_from_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "privml", "demo"], capture_output=True, text=True, check=True
    )
    assert out.stdout and out.stderr == ""


@pytest.fixture
def demo_run(tmp_path, monkeypatch):
    """Run the demo in ``tmp_path`` (kept afterwards) and return its folder and vault key."""
    from privml import _demo

    keys: list[bytes] = []

    def kept_folder(prefix: str) -> contextlib.nullcontext[str]:
        return contextlib.nullcontext(str(tmp_path))

    def recorded_key() -> bytes:
        keys.append(privml.generate_key())
        return keys[-1]

    monkeypatch.setattr(_demo.tempfile, "TemporaryDirectory", kept_folder)
    monkeypatch.setattr(_demo, "generate_key", recorded_key)
    _demo.run_demo(lambda line: None)
    [key] = keys
    return tmp_path, key


def test_the_demo_does_what_it_shows(demo_run):
    """What the demo tells is what happened: checked on the vault it leaves, not its sentences."""
    folder, key = demo_run
    vault_folder = folder / "clinic.vault"
    with privml.Vault.open(vault_folder, key=key) as vault:
        entries = vault.audit.entries()
        done = list(zip(entries["action"], entries["principal"], entries["outcome"], strict=True))
        assert ("dataset.add", "demo-admin", "ok") in done
        reads = entries[entries["action"] == "dataset.read"].to_dict("records")
        assert [(r["principal"], r["outcome"]) for r in reads] == [
            ("dr.lee", "ok"),
            ("intern", "denied"),
        ]
        assert reads[0]["details"]["rows"] == 442
        assert (
            reads[1]["details"]["column"] == "bmi" and reads[1]["details"]["mode"] == "dp_aggregate"
        )
        budget = vault.budget("diabetes")
        assert budget.epsilon_spent == pytest.approx(0.5)
        assert budget.remaining == pytest.approx(2.5)
        assert vault.audit.verify().ok
        assert vault.dataset("diabetes").latest.rows == 442
    stored = b"".join(p.read_bytes() for p in vault_folder.rglob("*") if p.is_file())
    assert b"DB-00441" not in stored  # no patient number anywhere in the vault
    with privml.Vault.open(folder / "tampered.vault", key=key) as copy:
        report = copy.audit.verify()
        assert not report.ok and report.first_bad_seq == 3


def _vault_with_key_file(tmp_path, patients, patients_schema, vaults, monkeypatch):
    """A vault on the test's backend; the command line finds its metadata as an operator's
    shell would, in PRIVML_METADATA_URL."""
    key = privml.generate_key()
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    with vaults.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=privml.Budget(epsilon=2, delta=1e-6),
            privacy_unit="row",
        )
        vault.add_purpose("care", description="Treatment", lawful_basis="GDPR 9(2)(h)")
        vault.add_principal("dr.lee", roles=["clinician"])
        vault.grant(role="clinician", dataset="patients", purpose="care", mode="raw")
        vault.session("dr.lee", purpose="care").read("patients")
    if vaults.metadata_url(tmp_path / "v"):
        monkeypatch.setenv("PRIVML_METADATA_URL", vaults.metadata_url(tmp_path / "v"))
    return tmp_path / "v", key_file


def test_verify_log_and_datasets(tmp_path, patients, patients_schema, capsys, vaults, monkeypatch):
    folder, key_file = _vault_with_key_file(
        tmp_path, patients, patients_schema, vaults, monkeypatch
    )
    assert main(["audit", "verify", str(folder), "--key-file", str(key_file)]) == 0
    assert "audit log OK: 6 entries" in capsys.readouterr().out
    assert (
        main(["audit", "log", str(folder), "--key-file", str(key_file), "--principal", "dr.lee"])
        == 0
    )
    out = capsys.readouterr().out
    assert "dataset.read" in out and "vault.create" not in out
    assert main(["datasets", str(folder), "--key-file", str(key_file)]) == 0
    assert "patients: 1 version(s), latest v1 (4 rows), budget ε=2" in capsys.readouterr().out


def test_verify_exit_status_on_tampering(
    tmp_path, patients, patients_schema, capsys, vaults, monkeypatch
):
    folder, key_file = _vault_with_key_file(
        tmp_path, patients, patients_schema, vaults, monkeypatch
    )
    engine = vaults.database(folder)  # edited by someone with the database, not the key
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET purpose = 'marketing' WHERE seq = 6"))
    engine.dispose()
    assert main(["audit", "verify", str(folder), "--key-file", str(key_file)]) == 1
    assert "TAMPERED at seq 6" in capsys.readouterr().out


def test_wrong_key_is_reported_not_raised(
    tmp_path, patients, patients_schema, capsys, vaults, monkeypatch
):
    folder, key_file = _vault_with_key_file(
        tmp_path, patients, patients_schema, vaults, monkeypatch
    )
    key_file.write_bytes(privml.generate_key())
    assert main(["audit", "verify", str(folder), "--key-file", str(key_file)]) == 2
    assert "does not open the vault" in capsys.readouterr().err


@pytest.mark.postgresql_only("the flag names a metadata database outside the folder")
def test_metadata_url_flag_opens_a_postgresql_vault(
    tmp_path, patients, patients_schema, capsys, vaults, monkeypatch
):
    folder, key_file = _vault_with_key_file(
        tmp_path, patients, patients_schema, vaults, monkeypatch
    )
    monkeypatch.delenv("PRIVML_METADATA_URL")
    assert main(["audit", "verify", str(folder), "--key-file", str(key_file)]) == 2
    assert "metadata_url" in capsys.readouterr().err
    url = vaults.metadata_url(folder)
    assert (
        main(["audit", "verify", str(folder), "--key-file", str(key_file), "--metadata-url", url])
        == 0
    )
    assert "audit log OK: 6 entries" in capsys.readouterr().out
