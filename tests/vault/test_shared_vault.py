"""Two machines on one vault: folder-less handles sharing PostgreSQL and object storage.

Each process opens its own handle with ``Vault.open(metadata_url=..., storage=...,
anchor_path=...)``; what one writes (datasets, grants, charges, audit entries) the
other sees at once, and charging one budget together never overspends it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import privml
from privml import Budget, Field, Schema, Vault
from privml.exceptions import ConfigurationError, NotFoundError, VaultExistsError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from _object_store import S3, credentials, database_bytes, s3_endpoint, s3_env

__all__ = ["s3_endpoint", "s3_env"]  # fixtures, used by name

pytestmark = pytest.mark.postgres

NAMES = ["ZEBRA-ANNA-8371", "QUOKKA-BORIS-9052"]
SCHEMA = Schema({"name": Field.text(), "age": Field.integer(bounds=(0, 120))})


def _frame(rows: int = 50) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": pd.Series([NAMES[i % 2] for i in range(rows)], dtype="str"),
            "age": pd.Series([20 + i % 60 for i in range(rows)], dtype="int64"),
        }
    )


def _handle(pg: str, s3: S3, anchor: Path, key: bytes, **kwargs: object) -> Vault:
    return Vault.open(metadata_url=pg, storage=s3.uri, anchor_path=anchor, key=key, **kwargs)


def _create(pg: str, s3: S3, anchor: Path, key: bytes) -> Vault:
    vault = Vault.create(metadata_url=pg, storage=s3.uri, anchor_path=anchor, key=key)
    vault.add_purpose("care", description="Care", lawful_basis="consent")
    vault.add_purpose("stats", description="Statistics", lawful_basis="consent")
    vault.add_principal("dr", roles=[])
    vault.add_principal("ana", roles=[])
    return vault


# Machine B: a separate process with its own folder-less handle.
MACHINE = textwrap.dedent(
    """
    import json, os, sys
    import pandas as pd
    import privml

    mode = sys.argv[1]
    vault = privml.Vault.open(
        metadata_url=os.environ["PG"], storage=os.environ["S3"],
        anchor_path=os.environ["ANCHOR"], key=os.environ["KEY"], actor=os.environ["ACTOR"],
    )
    out = {}
    if mode == "share":
        out["rows_a"] = len(vault.session("dr", purpose="care").read("from_a"))
        schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))})
        vault.add_dataset("from_b", pd.DataFrame({"x": [1.0, 2.0, 3.0]}), schema=schema,
                          budget=privml.Budget(epsilon=1.0))
        vault.grant(principal="dr", dataset="from_b", purpose="care", mode="raw")
        vault.session("ana", purpose="stats").dp.count("from_a", epsilon=0.25)
    else:
        print("READY", flush=True)
        sys.stdin.readline()  # both handles are open: go together
        dp = vault.session("ana", purpose="stats").dp
        out["ok"] = out["refused"] = 0
        for _ in range(8):
            try:
                dp.count("from_a", epsilon=0.1)
                out["ok"] += 1
            except privml.BudgetExceededError:
                out["refused"] += 1
    vault.close()
    print(json.dumps(out), flush=True)
    """
)


def _machine(mode: str, pg: str, s3: S3, anchor: Path, key: bytes, actor: str) -> subprocess.Popen:
    env = {**os.environ, "PG": pg, "S3": s3.uri, "ANCHOR": str(anchor), "KEY": key.decode()}
    env["ACTOR"] = actor
    return subprocess.Popen(
        [sys.executable, "-c", MACHINE, mode],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _result(child: subprocess.Popen) -> dict[str, int]:
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


def test_two_machines_see_each_others_writes_at_once(pg_database_url, s3_env, tmp_path, key):
    anchor = tmp_path / "anchor"  # a mount both machines append to
    with _create(pg_database_url, s3_env, anchor, key) as a:
        a.add_dataset("from_a", _frame(), schema=SCHEMA, budget=Budget(epsilon=1.0))
        a.grant(principal="dr", dataset="from_a", purpose="care", mode="raw")
        a.grant(principal="ana", dataset="from_a", purpose="stats", mode="dp_aggregate")
        b = _machine("share", pg_database_url, s3_env, anchor, key, actor="machine-b")
        assert _result(b) == {"rows_a": 50}
        # Handle A, open all along, sees B's dataset, grant, charge and audit entries.
        assert [d.name for d in a.datasets()] == ["from_a", "from_b"]
        assert len(a.session("dr", purpose="care").read("from_b")) == 3
        assert a.budget("from_a").epsilon_spent == pytest.approx(0.25)
        actions = a.audit.entries().query("principal == 'machine-b'")["action"].tolist()
        assert actions == ["dataset.add", "policy.allow"]
        assert len(a.audit.entries().query("principal == 'ana'")) == 1  # B's DP release
        assert a.audit.verify().ok
    objects = s3_env.objects(claim=True)
    assert len(objects) == 3
    stored = b"".join(objects.values()) + database_bytes(pg_database_url) + anchor.read_bytes()
    for needle in [n.encode() for n in NAMES] + credentials() + [s3_env.endpoint.encode()]:
        assert needle not in stored


def test_two_machines_charging_one_budget_never_overspend(pg_database_url, s3_env, tmp_path, key):
    anchor = tmp_path / "anchor"
    with _create(pg_database_url, s3_env, anchor, key) as a:
        a.add_dataset("from_a", _frame(), schema=SCHEMA, budget=Budget(epsilon=1.0))
        a.grant(principal="ana", dataset="from_a", purpose="stats", mode="dp_aggregate")
    machines = [
        _machine("charge", pg_database_url, s3_env, anchor, key, actor=f"machine-{n}") for n in "bc"
    ]
    for child in machines:
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
    for child in machines:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = [_result(child) for child in machines]
    assert sum(r["ok"] + r["refused"] for r in results) == 16
    with _handle(pg_database_url, s3_env, anchor, key) as a:
        status = a.budget("from_a")
        committed = a.ledger.events("from_a").query("status == 'committed'")
        assert len(committed) == sum(r["ok"] for r in results) == 10
        assert status.epsilon_spent <= status.epsilon_total + 1e-9
        assert a.audit.verify().ok


def test_a_folderless_vault_is_refused_where_it_is_unknown_or_taken(
    pg_database_url, s3_env, tmp_path, key
):
    anchor = tmp_path / "anchor"
    with pytest.raises(NotFoundError, match="holds no vault"):
        _handle(pg_database_url, s3_env, anchor, key)
    _create(pg_database_url, s3_env, anchor, key).close()
    with pytest.raises(VaultExistsError, match="already holds a vault"):
        Vault.create(metadata_url=pg_database_url, storage=s3_env.uri, anchor_path=anchor, key=key)
    with pytest.raises(ConfigurationError, match="anchor_path"):
        Vault.open(metadata_url=pg_database_url, storage=s3_env.uri, key=key)
    with pytest.raises(privml.InvalidKeyError):
        _handle(pg_database_url, s3_env, anchor, privml.generate_key())
    with _handle(pg_database_url, s3_env, anchor, key) as vault:
        assert repr(vault) == f"<privml.Vault {s3_env.uri!r} (open)>"
        assert vault.path is None
