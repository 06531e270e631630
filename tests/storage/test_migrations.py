"""The versioned metadata schema: upgrades in one transaction, refusals, and row MACs."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

import privml
from privml import Budget, Vault
from privml.storage import migrations, sealed
from privml.storage.engine import make_engine
from privml.storage.migrations import BASELINE, Step, _registry, add_column
from privml.storage.tables import (
    metadata,
    purposes,
    replies,
    tokens,
    training_checkpoints,
    training_runs,
)

SHIPPED = list(_registry.STEPS)
NEXT = BASELINE + len(SHIPPED) + 1  # the version a test's first step produces


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request):
    return None if request.param == "sqlite" else request.getfixturevalue("pg_database_url")


@pytest.fixture
def use_steps(monkeypatch):
    """``use_steps(f, g, ...)``: this privml also knows steps ``f``, ``g``... after its own."""

    def use(*upgrades):
        extra = [Step(NEXT + i, f.__name__, f) for i, f in enumerate(upgrades)]
        monkeypatch.setattr(_registry, "STEPS", [*SHIPPED, *extra])

    return use


@pytest.fixture
def vault_at_current(tmp_path, key, patients, patients_schema, metadata_url, allow):
    """A closed vault, written at this privml's own version, holding data and a grant."""
    folder = tmp_path / "v"
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=Budget(epsilon=1),
            privacy_unit="row",
        )
        allow(vault, "patients")
    return folder


def _engine(folder, url):
    return make_engine(sqlite_path=folder / "meta.db", url=url)


def _snapshot(folder, url):
    """Every table's columns and rows, as stored (read without the key)."""
    engine = _engine(folder, url)
    try:
        out = {}
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            for name in sorted(inspector.get_table_names()):
                table = sa.Table(name, sa.MetaData(), autoload_with=conn)
                rows = [tuple(_plain(v) for v in row) for row in conn.execute(sa.select(table))]
                out[name] = ([c.name for c in table.columns], sorted(rows, key=repr))
        return out
    finally:
        engine.dispose()


def _plain(value):
    return bytes(value) if isinstance(value, memoryview) else value


def _execute(folder, url, sql):
    """Run ``sql`` on the metadata as someone with the folder but not the key."""
    engine = _engine(folder, url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _version(folder, url):
    return _snapshot(folder, url)["vault_info"][1][0][1]  # vault_info.format of its one row


def _marker(folder):
    return json.loads((folder / "vault.json").read_text())["format"]


# --- the steps of the tests ------------------------------------------------------------------
calls: list[str] = []


def add_purpose_note(conn):
    """A real kind of step: a nullable column on a protected table, and a new table."""
    calls.append("add_purpose_note")
    add_column(conn, "purposes", sa.Column("note", sa.Text, nullable=True))
    sa.Table("probe", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True)).create(conn)


def reword_purposes(conn):
    """A step that changes stored values: through privml.storage.sealed, each row checked."""
    calls.append("reword_purposes")
    for row in sealed.scope_rows(conn, purposes):
        sealed.update_row(conn, purposes, row, {"description": row.description.upper()})


def fail_midway(conn):
    calls.append("fail_midway")
    add_column(conn, "grants", sa.Column("reason", sa.Text, nullable=True))
    raise RuntimeError("injected failure")


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()


# --- tests ---------------------------------------------------------------------------------
def test_a_current_vault_opens_unchanged(vault_at_current, key, metadata_url):
    before = _snapshot(vault_at_current, metadata_url)
    with Vault.open(vault_at_current, key=key, metadata_url=metadata_url) as vault:
        assert _snapshot(vault_at_current, metadata_url) == before
        assert vault.audit.verify().ok
    assert _version(vault_at_current, metadata_url) == _marker(vault_at_current) == NEXT - 1


def test_an_older_vault_is_upgraded_once(vault_at_current, key, metadata_url, use_steps):
    use_steps(add_purpose_note, reword_purposes)
    folder = vault_at_current
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        assert vault.audit.verify().ok  # every row and head still checks, re-MAC'd ones too
        upgrades = vault.audit.entries(action="vault.upgrade")
        assert upgrades["details"].tolist() == [{"from": NEXT - 1, "to": NEXT + 1}]
        assert set(vault.policy.purposes()["description"]) == {"TESTS"}
        vault.add_purpose("audit", description="Checks", lawful_basis="law")
        assert len(vault.session("analyst", purpose="research").read("patients")) == 4
    after = _snapshot(folder, metadata_url)
    assert "note" in after["purposes"][0] and "probe" in after
    assert _version(folder, metadata_url) == _marker(folder) == NEXT + 1
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        assert vault.audit.verify().ok
        assert len(vault.audit.entries(action="vault.upgrade")) == 1
    assert calls == ["add_purpose_note", "reword_purposes"]  # not run again


def test_a_step_that_fails_leaves_the_vault_as_it_was(
    vault_at_current, key, metadata_url, use_steps
):
    folder = vault_at_current
    before = _snapshot(folder, metadata_url)
    use_steps(add_purpose_note, reword_purposes, fail_midway)
    with pytest.raises(RuntimeError, match="injected") as raised:
        Vault.open(folder, key=key, metadata_url=metadata_url)
    assert f"still at version {NEXT - 1}" in raised.value.__notes__[0]
    assert calls == ["add_purpose_note", "reword_purposes", "fail_midway"]
    assert _snapshot(folder, metadata_url) == before  # no column, table, value or version
    assert _marker(folder) == NEXT - 1
    use_steps()  # the code that wrote it opens it as before
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        assert vault.audit.verify().ok


def test_a_row_edited_without_the_key_is_not_re_macd_by_a_step(
    vault_at_current, key, metadata_url, use_steps
):
    folder = vault_at_current
    _execute(folder, metadata_url, "UPDATE purposes SET description = 'edited'")
    before = _snapshot(folder, metadata_url)
    use_steps(reword_purposes)
    with pytest.raises(privml.IntegrityError, match="purposes"):
        Vault.open(folder, key=key, metadata_url=metadata_url)
    assert _snapshot(folder, metadata_url) == before


def test_a_newer_vault_is_refused(tmp_path, key, metadata_url, use_steps):
    folder = tmp_path / "v"
    use_steps(add_purpose_note)
    Vault.create(folder, key=key, metadata_url=metadata_url).close()
    before = _snapshot(folder, metadata_url)
    use_steps()
    with pytest.raises(privml.ConfigurationError) as raised:
        Vault.open(folder, key=key, metadata_url=metadata_url)
    message = str(raised.value)
    assert f"format {NEXT}" in message and f"up to {NEXT - 1}" in message
    assert "pip install --upgrade privml" in message
    assert _snapshot(folder, metadata_url) == before


def test_a_version_lowered_without_the_key_is_refused_not_rerun(
    tmp_path, key, metadata_url, use_steps
):
    folder = tmp_path / "v"
    use_steps(add_purpose_note)
    Vault.create(folder, key=key, metadata_url=metadata_url).close()
    _execute(folder, metadata_url, f"UPDATE vault_info SET format = {NEXT - 1}")
    before = _snapshot(folder, metadata_url)
    with pytest.raises(privml.IntegrityError, match="schema version"):
        Vault.open(folder, key=key, metadata_url=metadata_url)
    assert calls == []
    assert _snapshot(folder, metadata_url) == before


def test_a_version_from_before_authenticated_rows_is_refused(vault_at_current, key, metadata_url):
    _execute(vault_at_current, metadata_url, "UPDATE vault_info SET format = 1")
    with pytest.raises(privml.ConfigurationError, match=f"format 1 .* format {BASELINE} and later"):
        Vault.open(vault_at_current, key=key, metadata_url=metadata_url)


def test_a_garbled_version_is_refused(tmp_path, key):
    Vault.create(tmp_path / "v", key=key).close()
    _execute(tmp_path / "v", None, "UPDATE vault_info SET format = '2x'")  # SQLite takes it
    with pytest.raises(privml.IntegrityError, match="schema version"):
        Vault.open(tmp_path / "v", key=key)


def test_an_added_column_counts_in_a_mac_only_when_it_holds_a_value():
    sealer = sealed.RowSealer(bytes(32), "ab" * 16)
    before = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    after = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note", sa.Text, nullable=True, info={"added": NEXT}),
    )
    old = sealer.row_mac(before, {"id": 1})
    assert sealer.row_mac(after, {"id": 1, "note": None}) == old
    assert sealer.row_mac(after, {"id": 1}) == old
    assert sealer.row_mac(after, {"id": 1, "note": ""}) != old


def test_the_registry_is_in_order_and_added_columns_are_nullable():
    assert [s.version for s in SHIPPED] == list(range(BASELINE + 1, migrations.current() + 1))
    for table in metadata.tables.values():
        for column in table.columns:
            added = column.info.get("added")
            if added is not None:
                assert column.nullable and BASELINE < added <= migrations.current()


def test_add_column_refuses_a_column_rows_would_need_a_value_for(vault_at_current, metadata_url):
    engine = _engine(vault_at_current, metadata_url)
    try:
        with engine.connect() as conn, pytest.raises(ValueError, match="nullable"):
            add_column(conn, "purposes", sa.Column("x", sa.Text, nullable=False))
    finally:
        engine.dispose()


# --- the shipped steps -----------------------------------------------------------------------
def test_step_3_gives_a_version_2_vault_the_tables_of_service_mode(
    tmp_path, key, patients, patients_schema, metadata_url, allow, monkeypatch
):
    """A vault as privml wrote it at version 2 (without ``tokens`` and ``replies``)."""
    folder = tmp_path / "v"
    monkeypatch.setattr(_registry, "STEPS", [])
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=Budget(epsilon=1),
            privacy_unit="row",
        )
        allow(vault, "patients")
    _execute(folder, metadata_url, "DROP TABLE tokens")
    _execute(folder, metadata_url, "DROP TABLE replies")
    for table in ("training_checkpoints", "training_runs"):  # step 5's tables
        _execute(folder, metadata_url, f"DROP TABLE {table}")
    for column in ("privacy_unit", "max_rows_per_unit"):  # step 4's columns
        _execute(folder, metadata_url, f"ALTER TABLE datasets DROP COLUMN {column}")
    assert _version(folder, metadata_url) == BASELINE == 2
    assert {"tokens", "replies"}.isdisjoint(_snapshot(folder, metadata_url))
    monkeypatch.setattr(_registry, "STEPS", SHIPPED)
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        upgrades = vault.audit.entries(action="vault.upgrade")
        assert upgrades["details"].tolist() == [{"from": 2, "to": migrations.current()}]
        issued = vault.tokens.issue("analyst", purposes=["research"])
        assert vault.tokens.authenticate(issued.secret, client="test").principal == "analyst"
        vault._replies.put("analyst", "r", action="a", body=b"x", media_type="text/plain")
        assert vault.audit.verify().ok
    after = _snapshot(folder, metadata_url)
    assert after["tokens"][0] == [c.name for c in tokens.columns]
    assert after["replies"][0] == [c.name for c in replies.columns]
    assert _version(folder, metadata_url) == _marker(folder) == migrations.current() >= 3
    engine = _engine(folder, metadata_url)
    try:
        indexes = sa.inspect(engine).get_indexes("tokens")
    finally:
        engine.dispose()
    assert [i["column_names"] for i in indexes] == [["principal"]]


def test_step_5_gives_a_version_4_vault_the_tables_of_dp_sgd_checkpoints(
    tmp_path, key, patients, patients_schema, metadata_url, allow, monkeypatch
):
    """A vault as privml wrote it at version 4 (without the checkpoint tables)."""
    folder = tmp_path / "v"
    monkeypatch.setattr(_registry, "STEPS", SHIPPED[:2])
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset(
            "patients",
            patients,
            schema=patients_schema,
            budget=Budget(epsilon=1),
            privacy_unit="row",
        )
        allow(vault, "patients")
    for table in ("training_checkpoints", "training_runs"):
        _execute(folder, metadata_url, f"DROP TABLE {table}")
    assert _version(folder, metadata_url) == 4
    monkeypatch.setattr(_registry, "STEPS", SHIPPED)
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        upgrades = vault.audit.entries(action="vault.upgrade")
        assert upgrades["details"].tolist() == [{"from": 4, "to": migrations.current()}]
        assert vault.audit.verify().ok
    after = _snapshot(folder, metadata_url)
    assert after["training_runs"] == ([c.name for c in training_runs.columns], [])
    assert after["training_checkpoints"][0] == [c.name for c in training_checkpoints.columns]
    assert _version(folder, metadata_url) == migrations.current() >= 5
