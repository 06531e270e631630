"""``privml budget`` and ``privml ledger``: what a DPO runs from the shell."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import sqlalchemy as sa

import privml
from privml.accounting import PrivacyEvent
from privml.cli import main
from privml.storage import sealed
from privml.storage.engine import transaction
from privml.storage.tables import datasets


@pytest.fixture
def charged(tmp_path, vaults, monkeypatch):
    key = privml.generate_key()
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    folder = tmp_path / "v"
    with vaults.create(folder, key=key) as vault:
        schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))})
        for name, delta in (("counts", 0.0), ("model", 1e-5)):
            vault.add_dataset(
                name,
                pd.DataFrame({"x": [1.0]}),
                schema=schema,
                budget=privml.Budget(epsilon=2.0, delta=delta),
            )
        vault.ledger.charge(
            "counts", event=PrivacyEvent.laplace(epsilon=0.5), principal="ana", purpose="stats"
        )
        vault.ledger.charge(
            "model",
            event=PrivacyEvent.dp_sgd(noise_multiplier=1.1, sample_rate=0.01, steps=100),
            principal="ml",
            purpose="train",
        )
    if vaults.metadata_url(folder):  # the command line finds it as an operator's shell would
        monkeypatch.setenv("PRIVML_METADATA_URL", vaults.metadata_url(folder))
    return folder, key_file, key


def test_budget_prints_every_dataset(charged, capsys):
    folder, key_file, _ = charged
    assert main(["budget", str(folder), "--key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "counts: spent ε=0.5 of ε=2 at δ=0; remaining ε=1.5" in out
    assert "model: spent ε=" in out and "admission figure: RDP filter" in out
    assert "fixed-sequence figure (PLD" in out and "never used for admission" in out
    assert "principal ana: ε=0.5" in out


def test_budget_json_with_the_key_from_the_environment(charged, capsys, monkeypatch):
    folder, _, key = charged
    monkeypatch.setenv("PRIVML_VAULT_KEY", key.decode())
    assert main(["budget", str(folder), "--dataset", "counts", "--json"]) == 0
    [status] = json.loads(capsys.readouterr().out)
    assert status["dataset"] == "counts"
    assert status["epsilon_spent"] == 0.5 and status["remaining"] == 1.5
    assert status["accounting"]["method"] == "basic"
    assert status["accounting"]["admission"].startswith("basic-composition filter")
    assert status["by_purpose"]["stats"]["epsilon_spent"] == 0.5


def test_ledger_lists_the_charges(charged, capsys):
    folder, key_file, _ = charged
    assert main(["ledger", str(folder), "--key-file", str(key_file), "--dataset", "model"]) == 0
    out = capsys.readouterr().out
    assert "dp_sgd σ/C=1.1 q=0.01 steps=100" in out and "committed" in out
    assert (
        main(["ledger", str(folder), "--key-file", str(key_file), "--dataset", "model", "--json"])
        == 0
    )
    [record] = json.loads(capsys.readouterr().out)
    assert record["kind"] == "dp_sgd" and record["params"]["steps"] == 100


def test_exit_status_1_when_over_budget(charged, capsys, vaults):
    folder, key_file, key = charged
    # A budget lowered by the key holder.
    with vaults.open(folder, key=key) as vault, transaction(vault._state.engine) as tx:
        where = datasets.c.name == "counts"
        sealed.update(tx.conn, datasets, where, {"budget_epsilon": 0.25})
        vault.audit.append(
            tx, principal="admin", purpose="administration", action="test.lower", outcome="ok"
        )
    assert main(["budget", str(folder), "--key-file", str(key_file)]) == 1
    assert "over budget: counts" in capsys.readouterr().err


def test_a_budget_raised_without_the_key_stops_the_cli(charged, capsys, vaults):
    folder, key_file, _ = charged
    engine = vaults.database(folder)  # someone with the database but not the key
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE datasets SET budget_epsilon = 100 WHERE name = 'counts'"))
    engine.dispose()
    assert main(["budget", str(folder), "--key-file", str(key_file)]) == 2
    assert "fails its MAC" in capsys.readouterr().err


def test_usage_errors_exit_2(charged, capsys):
    folder, key_file, _ = charged
    with pytest.raises(SystemExit) as info:
        main(["ledger", str(folder), "--key-file", str(key_file)])  # --dataset is required
    assert info.value.code == 2
    assert main(["ledger", str(folder), "--key-file", str(key_file), "--dataset", "nope"]) == 2
    assert "no dataset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["audit", "log", str(folder), "--since", "yesterday"])
    assert info.value.code == 2


def test_audit_log_since_a_time(charged, capsys):
    folder, key_file, _ = charged
    assert (
        main(["audit", "log", str(folder), "--key-file", str(key_file), "--since", "2000-01-01"])
        == 0
    )
    assert "ledger.charge" in capsys.readouterr().out


def test_python_dash_m(charged):
    folder, key_file, _ = charged
    out = subprocess.run(
        [sys.executable, "-m", "privml", "budget", str(folder), "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "counts: spent ε=0.5" in out.stdout
