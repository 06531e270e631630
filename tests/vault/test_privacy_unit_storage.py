"""A dataset's privacy unit is stored in its authenticated row: immutable, and tamper-evident."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from privml import Budget, Field, Schema
from privml.accounting._unit import PrivacyUnit
from privml.exceptions import IntegrityError, SchemaError
from privml.storage.migrations import _registry

SCHEMA = Schema({"pid": Field.identifier(), "x": Field.numeric(bounds=(0, 10))})
FRAME = pd.DataFrame({"pid": ["a", "a", "b"], "x": [1.0, 2.0, 3.0]})


def _edit(vaults, folder, sql):
    """Run ``sql`` on the metadata as someone with the folder but not the key."""
    engine = vaults.database(folder)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def test_the_unit_survives_reopening_and_new_versions(tmp_path, key, vaults):
    folder = tmp_path / "v"
    with vaults.create(folder, key=key) as vault:
        vault.add_dataset(
            "d", FRAME, schema=SCHEMA, budget=Budget(epsilon=1),
            privacy_unit="pid", max_rows_per_unit=2,
        )  # fmt: skip
        vault.add_version("d", FRAME)
        with pytest.raises(SchemaError):  # the unit column stays valid: never missing
            vault.add_version("d", FRAME.assign(pid=[None, "a", "b"]))
    with vaults.open(folder, key=key) as vault:
        info = vault.dataset("d")
        assert info.privacy_unit == PrivacyUnit("pid", 2) and info.latest.version == 2
        added = vault.audit.entries(action="dataset.add")["details"].iloc[0]
        assert added["privacy_unit"] == {"unit": "pid", "max_rows_per_unit": 2}
        assert vault.audit.verify().ok


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE datasets SET privacy_unit = NULL, max_rows_per_unit = NULL",
        "UPDATE datasets SET privacy_unit = 'row'",
        "UPDATE datasets SET max_rows_per_unit = 1",
    ],
)
def test_the_unit_cannot_be_downgraded_without_the_key(tmp_path, key, vaults, sql):
    folder = tmp_path / "v"
    with vaults.create(folder, key=key) as vault:
        vault.add_dataset(
            "d", FRAME, schema=SCHEMA, budget=Budget(epsilon=1),
            privacy_unit="pid", max_rows_per_unit=2,
        )  # fmt: skip
    _edit(vaults, folder, sql)
    with vaults.open(folder, key=key) as vault:
        with pytest.raises(IntegrityError):
            vault.dataset("d")
        with pytest.raises(IntegrityError):
            vault.budget("d")


def test_a_row_level_dataset_cannot_be_given_a_unit_without_the_key(tmp_path, key, vaults):
    folder = tmp_path / "v"
    with vaults.create(folder, key=key) as vault:
        vault.add_dataset("d", FRAME, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    _edit(vaults, folder, "UPDATE datasets SET privacy_unit = 'pid', max_rows_per_unit = 1000")
    with vaults.open(folder, key=key) as vault, pytest.raises(IntegrityError):
        vault.datasets()


def test_a_vault_from_before_units_reads_as_row_level(tmp_path, key, vaults, monkeypatch):
    """A vault at schema version 3 (no unit columns) is upgraded: its datasets are row-level,
    their MACs still hold, and a person-level dataset can be added after."""
    folder = tmp_path / "v"
    shipped = list(_registry.STEPS)
    monkeypatch.setattr(_registry, "STEPS", shipped[:1])
    with vaults.create(folder, key=key) as vault:
        vault.add_dataset("old", FRAME, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    for column in ("privacy_unit", "max_rows_per_unit"):
        _edit(vaults, folder, f"ALTER TABLE datasets DROP COLUMN {column}")
    for table in ("training_checkpoints", "training_runs"):  # a later step's tables
        _edit(vaults, folder, f"DROP TABLE {table}")
    monkeypatch.setattr(_registry, "STEPS", shipped)
    with vaults.open(folder, key=key) as vault:
        assert vault.dataset("old").privacy_unit == PrivacyUnit()
        assert vault.budget("old").privacy_unit == "row"
        vault.add_dataset(
            "new", FRAME, schema=SCHEMA, budget=Budget(epsilon=1),
            privacy_unit="pid", max_rows_per_unit=3,
        )  # fmt: skip
        assert vault.dataset("new").privacy_unit == PrivacyUnit("pid", 3)
        assert vault.audit.verify().ok
