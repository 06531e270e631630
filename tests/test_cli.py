from __future__ import annotations

import sqlite3
import subprocess
import sys

import privml
from privml.cli import main


def test_demo_runs_and_tells_the_story():
    out = subprocess.run(
        [sys.executable, "-m", "privml", "demo"], capture_output=True, text=True, check=True
    )
    text = out.stdout
    assert "registered 'diabetes' v1: 442 rows" in text
    assert "patient numbers: 0 found" in text
    assert "values identical: True" in text
    assert "intern's DP mean of 'bmi' instead" in text and "ε=2.50 of 3 left" in text
    assert "audit log OK" in text
    assert "TAMPERED at seq 3" in text
    assert out.stderr == ""


def _vault_with_key_file(tmp_path, patients, patients_schema):
    key = privml.generate_key()
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    with privml.Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=privml.Budget(epsilon=2, delta=1e-6),
        )
        vault.add_purpose("care", description="Treatment", lawful_basis="GDPR 9(2)(h)")
        vault.add_principal("dr.lee", roles=["clinician"])
        vault.grant(role="clinician", dataset="patients", purpose="care", mode="raw")
        vault.session("dr.lee", purpose="care").read("patients")
    return tmp_path / "v", key_file


def test_verify_log_and_datasets(tmp_path, patients, patients_schema, capsys):
    folder, key_file = _vault_with_key_file(tmp_path, patients, patients_schema)
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


def test_verify_exit_status_on_tampering(tmp_path, patients, patients_schema, capsys):
    folder, key_file = _vault_with_key_file(tmp_path, patients, patients_schema)
    with sqlite3.connect(folder / "meta.db") as con:
        con.execute("UPDATE audit_log SET purpose = 'marketing' WHERE seq = 6")
    assert main(["audit", "verify", str(folder), "--key-file", str(key_file)]) == 1
    assert "TAMPERED at seq 6" in capsys.readouterr().out


def test_wrong_key_is_reported_not_raised(tmp_path, patients, patients_schema, capsys):
    folder, key_file = _vault_with_key_file(tmp_path, patients, patients_schema)
    key_file.write_bytes(privml.generate_key())
    assert main(["audit", "verify", str(folder), "--key-file", str(key_file)]) == 2
    assert "does not open the vault" in capsys.readouterr().err
