"""Edits of the metadata made without the vault key are caught at use and by ``verify()``.

The attacker here has the metadata database but not the key: a copy of the vault
folder whose ``dba.db`` they edit (SQLite), or the PostgreSQL database they
administer; they edit rows with plain SQL after the vault closed, then the key
holder opens the vault again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import sqlalchemy as sa

import privml
from privml import Budget, Field, Schema, Vault
from privml.accounting import PrivacyEvent
from privml.exceptions import IntegrityError
from privml.storage.tables import PROTECTED, metadata
from privml.vault._checkpoints import TrainingCheckpoints

if TYPE_CHECKING:
    from conftest import Dba

KEY = privml.generate_key()
SECRETS: dict[str, str] = {}  # token id -> secret, of the tokens issued in ``built``
CHECKPOINTS: list[str] = []  # the DP-SGD checkpoints stored in ``built``
SCHEMA = Schema(
    {"age": Field.integer(bounds=(0, 120)), "bp": Field.numeric(bounds=(50, 250), sensitive=True)}
)
FIRST = pd.DataFrame({"age": [34, 71, 50], "bp": [120.0, 145.5, 130.0]})
SECOND = pd.DataFrame({"age": [35, 72], "bp": [121.0, 146.5]})


def _charge(vault: Vault, epsilon: float = 0.1, principal: str = "ana") -> Any:
    event = PrivacyEvent.laplace(epsilon=epsilon)
    return vault.ledger.charge("d", event=event, principal=principal, purpose="research")


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, str | None]]:
    """A closed vault with at least two rows in every protected table, and its metadata URL."""
    folder = tmp_path_factory.mktemp("integrity") / "v"
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    url = server.new_database() if server else None
    with Vault.create(folder, key=KEY, actor="admin", metadata_url=url) as vault:
        vault.add_dataset("d", FIRST, schema=SCHEMA, budget=Budget(epsilon=1.0, delta=1e-5))
        vault.add_version("d", SECOND)
        vault.add_dataset("e", FIRST, schema=SCHEMA, budget=Budget(epsilon=1.0, delta=1e-5))
        vault.add_purpose("care", description="Treatment", lawful_basis="GDPR 9(2)(h)")
        vault.add_purpose("research", description="Studies", lawful_basis="GDPR 9(2)(j)")
        vault.add_principal("ana", roles=["analyst"])
        vault.add_principal("bob", roles=["clinician"])
        vault.grant(role="clinician", dataset="d", purpose="care", mode="raw")
        vault.grant(role="clinician", dataset="e", purpose="care", mode="raw")
        vault.grant(role="analyst", dataset="d", purpose="research", mode="dp_aggregate")
        revoked = vault.grant(principal="ana", dataset="d", purpose="care", mode="raw")
        vault.revoke(revoked)
        vault.allocate("d", principal="ana", epsilon=0.5)
        vault.allocate("d", purpose="research", epsilon=0.6)
        _charge(vault, 0.2)
        _charge(vault, 0.1, principal="bob")
        vault.models.register("m", {"w": 1}, trained_on="d", epsilon=0.3, delta=None)
        vault.models.register("m", {"w": 2}, trained_on="d", epsilon=0.3, delta=None)
        for principal, purpose in (("ana", "research"), ("bob", "care")):
            issued = vault.tokens.issue(principal, purposes=[purpose])
            SECRETS[issued.id] = issued.secret
        CHECKPOINTS.clear()  # this backend's (the module's vaults are built one at a time)
        for run in ("dp.train-1", "dp.train-2"):
            saved = _checkpoints(vault).save(
                request_id=run,
                dataset="d",
                version=2,
                spec={"features": ["age"]},
                plan={"n": 5},
                taken=3,
                drawn=4,
                rows=9,
                payload=b"state",
            )
            CHECKPOINTS.append(saved)
    yield folder, url
    if server and url:
        server.drop(url)


@pytest.fixture
def copy(built: tuple[Path, str | None], dba: Dba, tmp_path: Path) -> Path:
    return dba.copy(*built, tmp_path / "v")


def _sql(conn: sa.Connection, statement: str, **params: Any) -> sa.CursorResult[Any]:
    return conn.execute(sa.text(statement), params)


# --- what reading each table is for --------------------------------------------------------
def _use_datasets(vault: Vault) -> None:
    vault.datasets()
    _charge(vault, 0.01)


def _use_data(vault: Vault) -> None:
    vault.session("bob", purpose="care").read("d", version=2)
    vault.session("bob", purpose="care").read("d", version=1)
    vault.session("bob", purpose="care").read("e")


def _use_policy(vault: Vault) -> None:
    vault.session("bob", purpose="care").read("d")


def _use_ledger(vault: Vault) -> None:
    vault.budget("d")
    _charge(vault, 0.01)


def _use_models(vault: Vault) -> None:
    vault.models.load("m", 1)
    vault.models.load("m", 2)


def _use_tokens(vault: Vault) -> None:
    for token in vault.tokens.list(include_inactive=True):
        vault.tokens.authenticate(SECRETS[token.id], client="test")


def _checkpoints(vault: Vault) -> TrainingCheckpoints:
    return TrainingCheckpoints(
        state=vault._state,
        storage=vault._storage,
        audit=vault.audit,
        principal="ana",
        purpose="research",
    )


def _use_checkpoints(vault: Vault) -> None:
    store = _checkpoints(vault)
    for checkpoint in CHECKPOINTS:
        assert store.payload(store.find(checkpoint)) == b"state"


USES: dict[str, Callable[[Vault], None]] = {
    "datasets": _use_datasets,
    "keys": _use_data,
    "versions": _use_data,
    "principals": _use_policy,
    "purposes": _use_policy,
    "grants": _use_policy,
    "policy_state": _use_policy,
    "models": _use_models,
    "ledger_events": _use_ledger,
    "ledger_state": _use_ledger,
    "ledger_allocations": _use_ledger,
    "tokens": _use_tokens,
    "training_runs": _use_checkpoints,
    "training_checkpoints": _use_checkpoints,
}


def _open(dba: Dba, folder: Path, key: bytes = KEY) -> Vault:
    return dba.vaults.open(folder, key=key)


def _caught(dba: Dba, folder: Path, table: str) -> None:
    """The use of ``table`` raises IntegrityError, and verify() reports the edit."""
    with _open(dba, folder) as vault, pytest.raises(IntegrityError):
        USES[table](vault)
    with _open(dba, folder) as vault:
        report = vault.audit.verify()
        assert not report.ok and report.row_problems, f"verify() missed an edit of {table}"
        with pytest.raises(IntegrityError):
            report.raise_if_failed()


def test_every_protected_table_has_a_use_and_a_mac():
    assert set(PROTECTED) == set(USES)
    for name in PROTECTED:
        assert "mac" in metadata.tables[name].c


def test_untouched_vault_works_and_verifies(dba, copy):
    with _open(dba, copy) as vault:
        for use in USES.values():
            use(vault)
        assert vault.audit.verify().ok


def _columns(table: str) -> list[str]:
    return [c.name for c in metadata.tables[table].columns]


def _other(table: str, column: str, value: Any) -> Any:
    """A different value of the column's kind, as an editor of the file would write."""
    kind = metadata.tables[table].c[column].type.python_type
    if value is None:
        return {float: 0.5, int: 7, bytes: b"\x01"}.get(kind, "2020-01-01T00:00:00+00:00")
    if isinstance(value, bool):
        return not value
    if isinstance(value, bytes):
        return value + b"\x00" if value else b"\x01"
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, int):
        return value + 1000  # past every key in use, so no unique constraint stops the edit
    # the same length: a column's declared width holds it on PostgreSQL too
    return value[:-1] + ("y" if value.endswith("x") else "x") if value else "x"


CASES = [(table, column) for table in sorted(PROTECTED) for column in _columns(table)]


@pytest.mark.parametrize(("table", "column"), CASES)
def test_modifying_any_column_is_caught(dba, copy, table, column):
    with dba.edit(copy) as conn:
        row, value = _sql(
            conn, f'SELECT {dba.rowid}, "{column}" FROM {table} ORDER BY {dba.rowid} LIMIT 1'
        ).one()
        _sql(
            conn,
            f'UPDATE {table} SET "{column}" = :value WHERE {dba.rowid} = :row',
            value=_other(table, column, value),
            row=row,
        )
    _caught(dba, copy, table)


TYPED = [
    (table, column)
    for table, column in CASES
    if metadata.tables[table].c[column].type.python_type in (float, int)
    and not metadata.tables[table].c[column].primary_key
]


@pytest.mark.sqlite_only("SQLite keeps any type in any column; PostgreSQL refuses such an edit")
@pytest.mark.parametrize(("table", "column"), TYPED)
def test_a_value_of_the_wrong_type_is_caught(dba, copy, table, column):
    """Text in a number column fails while it is read, before its MAC is checked, and must
    still be an IntegrityError, not a raw ValueError."""
    with dba.edit(copy) as conn:
        _sql(
            conn,
            f'UPDATE {table} SET "{column}" = :text WHERE rowid = (SELECT min(rowid) FROM {table})',
            text="not a number",
        )
    _caught(dba, copy, table)


@pytest.mark.sqlite_only("SQLite keeps any type in any column; PostgreSQL refuses such an edit")
@pytest.mark.parametrize("column", ["checkpoint_every", "format"])
def test_a_value_of_the_wrong_type_in_the_vaults_own_row_is_refused(dba, copy, column):
    with dba.edit(copy) as conn:
        _sql(conn, f'UPDATE vault_info SET "{column}" = :text', text="not a number")
    with pytest.raises((IntegrityError, privml.ConfigurationError)):
        _open(dba, copy)


@pytest.mark.parametrize("table", sorted(PROTECTED))
def test_deleting_a_row_is_caught(dba, copy, table):
    with dba.edit(copy) as conn:
        # The last row: for the policy this is a whole scope's row (e.g. the policy state).
        last = f"(SELECT max({dba.rowid}) FROM {table})"
        _sql(conn, f"DELETE FROM {table} WHERE {dba.rowid} = {last}")
    _caught(dba, copy, table)


@pytest.mark.parametrize("table", sorted(PROTECTED))
def test_inserting_a_copied_row_under_a_new_key_is_caught(dba, copy, table):
    keys = [c.name for c in metadata.tables[table].primary_key.columns]
    with dba.edit(copy) as conn:
        names = _columns(table)
        first = _sql(conn, f"SELECT * FROM {table} ORDER BY {dba.rowid} LIMIT 1").one()
        row = dict(zip(names, first, strict=True))
        if table == "ledger_events":
            del row["id"]  # a fresh autoincrement id
            row["request_id"] = row["request_id"] + "-copy"
        else:
            row[keys[-1]] = _other(table, keys[-1], row[keys[-1]])
        conn.execute(metadata.tables[table].insert().values(row))
    _caught(dba, copy, table)


@pytest.mark.parametrize("table", sorted(t for t in PROTECTED if t != "policy_state"))
def test_swapping_two_rows_macs_is_caught(dba, copy, table):
    with dba.edit(copy) as conn:
        (a, mac_a), (b, mac_b) = _sql(
            conn, f"SELECT {dba.rowid}, mac FROM {table} ORDER BY {dba.rowid} LIMIT 2"
        ).all()
        swap = f"UPDATE {table} SET mac = :mac WHERE {dba.rowid} = :row"
        _sql(conn, swap, mac=mac_b, row=a)
        _sql(conn, swap, mac=mac_a, row=b)
    _caught(dba, copy, table)


# --- the attacks, one by one ---------------------------------------------------------------
def test_deleting_the_ledger_does_not_restore_the_budget(dba, copy):
    with dba.edit(copy) as conn:
        _sql(conn, "DELETE FROM ledger_events WHERE dataset = 'd'")
        _sql(conn, "DELETE FROM ledger_state WHERE dataset = 'd'")
    _caught(dba, copy, "ledger_state")


def test_deleting_the_ledger_with_its_heads_is_caught(dba, copy):
    with dba.edit(copy) as conn:
        _sql(conn, "DELETE FROM ledger_events WHERE dataset = 'd'")
        _sql(conn, "DELETE FROM ledger_state WHERE dataset = 'd'")
        _sql(conn, "DELETE FROM row_heads WHERE scope = 'd' AND table_name LIKE 'ledger_%'")
    _caught(dba, copy, "ledger_state")


def test_an_inserted_raw_grant_gives_no_raw_read(dba, copy):
    with dba.edit(copy) as conn:
        _sql(
            conn,
            "INSERT INTO grants (grant_id, effect, principal, dataset, purpose, mode, created, mac)"
            " VALUES ('g-evil', 'allow', 'ana', 'd', 'research', 'raw', '2024-01-01', '00')",
        )
    with _open(dba, copy) as vault, pytest.raises(IntegrityError):
        vault.session("ana", purpose="research").read("d")
    _caught(dba, copy, "grants")


def test_unrevoking_a_grant_is_caught(dba, copy):
    with dba.edit(copy) as conn:
        _sql(conn, "UPDATE grants SET revoked = NULL")
    _caught(dba, copy, "grants")


def test_pointing_version_2_at_version_1_is_caught(dba, copy):
    with dba.edit(copy) as conn:
        file, digest = _sql(
            conn, "SELECT file, content_hash FROM versions WHERE dataset = 'd' AND version = 1"
        ).one()
        _sql(
            conn,
            "UPDATE versions SET file = :file, content_hash = :digest "
            "WHERE dataset = 'd' AND version = 2",
            file=file,
            digest=digest,
        )
    with _open(dba, copy) as vault, pytest.raises(IntegrityError):
        vault.session("bob", purpose="care").read("d")
    _caught(dba, copy, "versions")


def test_a_raised_budget_is_caught(dba, copy):
    with dba.edit(copy) as conn:
        _sql(conn, "UPDATE datasets SET budget_epsilon = 1000 WHERE name = 'd'")
    _caught(dba, copy, "datasets")


@pytest.mark.parametrize(
    ("table", "sql"),
    [
        ("principals", "INSERT INTO principals VALUES ('eve', '[\"clinician\"]', '{}', 'x', 'y')"),
        ("purposes", "INSERT INTO purposes VALUES ('spy', 'd', 'none', NULL, 'x', 'y')"),
        ("ledger_allocations", "UPDATE ledger_allocations SET epsilon = 0.99"),
        ("models", "UPDATE models SET epsilon = 0.0"),
        ("models", "UPDATE models SET file = 'models/m/1.bin', content_hash = "
         "(SELECT content_hash FROM models WHERE version = 1)"),
    ],
)  # fmt: skip
def test_added_principal_purpose_and_edited_allocation_or_model_are_caught(dba, copy, table, sql):
    with dba.edit(copy) as conn:
        _sql(conn, sql)
    _caught(dba, copy, table)


def test_undestroying_a_key_is_caught(dba, copy):
    with _open(dba, copy) as vault:
        vault.rotate_data_keys("d")
    with dba.edit(copy) as conn:
        _sql(conn, "UPDATE keys SET destroyed = NULL WHERE destroyed IS NOT NULL")
    _caught(dba, copy, "keys")


def test_a_forged_head_is_caught(dba, copy):
    with dba.edit(copy) as conn:
        _sql(conn, "DELETE FROM ledger_state WHERE dataset = 'd' AND scope = 'principal:ana'")
        _sql(
            conn,
            "UPDATE row_heads SET rows = rows - 1 "
            "WHERE table_name = 'ledger_state' AND scope = 'd'",
        )
    _caught(dba, copy, "ledger_state")


def _restore(dba: Dba, folder: Path, older: sa.Engine, tables: tuple[str, ...]) -> None:
    """Put back ``tables`` as they were in an older copy of the metadata."""
    with older.connect() as conn:
        saved = {t: conn.execute(sa.select(metadata.tables[t])).mappings().all() for t in tables}
    older.dispose()
    with dba.edit(folder) as conn:
        for table, rows in saved.items():
            conn.execute(metadata.tables[table].delete())
            if rows:
                conn.execute(metadata.tables[table].insert(), [dict(r) for r in rows])


LEDGER = ("ledger_events", "ledger_state", "row_heads")


def test_restoring_an_older_copy_of_the_ledger_is_reported(dba, copy):
    older = dba.snapshot(copy)
    with _open(dba, copy) as vault:
        _charge(vault, 0.3)
        vault.datasets()  # any later audited action logs the ledger's new state
        vault.session("bob", purpose="care").read("d")
    _restore(dba, copy, older, LEDGER)
    with _open(dba, copy) as vault:
        report = vault.audit.verify()
    assert not report.ok
    assert any("older copy" in p or "rolled back" in p for p in report.row_problems)


@pytest.mark.parametrize("change", ["charge", "settle", "release"])
def test_rolling_back_only_the_newest_ledger_change_is_reported(dba, copy, change):
    """No audited action follows the change: its own audit entry must record the new heads."""
    with _open(dba, copy) as vault:
        if change != "charge":
            request_id = vault.ledger.reserve(
                "d", event=PrivacyEvent.laplace(epsilon=0.3), principal="ana", purpose="research"
            ).request_id
    older = dba.snapshot(copy)
    with _open(dba, copy) as vault:
        if change == "charge":
            _charge(vault, 0.3)
        elif change == "settle":
            vault.ledger.settle(request_id, event=PrivacyEvent.laplace(epsilon=0.1))
        else:
            vault.ledger.release(request_id)
    _restore(dba, copy, older, LEDGER)
    with _open(dba, copy) as vault:
        report = vault.audit.verify()
    assert not report.ok
    assert any("older copy" in p or "rolled back" in p for p in report.row_problems)


def test_writes_that_bypass_the_row_seal_are_refused(dba, copy):
    from privml.storage.engine import transaction
    from privml.storage.tables import grants

    with (
        _open(dba, copy) as vault,
        pytest.raises(IntegrityError, match=r"privml\.storage\.sealed"),
        transaction(vault._state.engine) as tx,
    ):
        tx.conn.execute(grants.update().values(revoked=None))


def test_an_older_vault_format_is_refused_with_the_fix(dba, copy):
    with dba.edit(copy) as conn:
        _sql(conn, "UPDATE vault_info SET format = 1")
    with pytest.raises(privml.ConfigurationError, match="format 1"):
        _open(dba, copy)


# --- rollbacks the owner's next change must not hide; the vault's own row ------------------
@pytest.mark.parametrize(
    "tables, change, later",
    [
        (LEDGER, lambda v: _charge(v, 0.3), _charge),
        (
            ("grants", "policy_state", "row_heads"),
            lambda v: v.revoke(v.grant(principal="ana", dataset="e", purpose="care", mode="raw")),
            lambda v: v.grant(
                principal="bob", dataset="e", purpose="research", mode="dp_aggregate"
            ),
        ),
    ],
    ids=["ledger", "grants"],
)
def test_a_rollback_stays_reported_after_the_owners_next_change(dba, copy, tables, change, later):
    older = dba.snapshot(copy)
    with _open(dba, copy) as vault:
        change(vault)
        vault.datasets()  # an audited action logs the new heads
    _restore(dba, copy, older, tables)
    with _open(dba, copy) as vault:
        later(vault)  # not detected at use (the documented window) ...
        vault.session("bob", purpose="care").read("d")
        report = vault.audit.verify()  # ... but the log keeps the evidence
    assert not report.ok
    assert "rolled back" in report.reason


def test_a_model_deleted_with_its_head_is_caught(dba, copy):
    with dba.edit(copy) as conn:
        _sql(conn, "DELETE FROM models WHERE name = 'm'")
        _sql(conn, "DELETE FROM row_heads WHERE table_name = 'models'")
    with _open(dba, copy) as vault:
        with pytest.raises(IntegrityError):
            vault.models.load("m")
        with pytest.raises(IntegrityError):  # the name is not free for someone else
            vault.models.register("m", {"w": 3}, trained_on="d", epsilon=0.3, delta=None)
        assert not vault.audit.verify().ok


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("checkpoint_every", 1_000_000_000),
        ("checkpoint_every", 0),
        ("verify_key", bytes(32)),
        ("log_id", "0" * 32),
        ("created", "2020-01-01T00:00:00+00:00"),
        ("mac", "0" * 64),
    ],
)
def test_the_vaults_own_row_is_authenticated(dba, copy, column, value):
    with dba.edit(copy) as conn:
        _sql(conn, f'UPDATE vault_info SET "{column}" = :value', value=value)
    with pytest.raises(IntegrityError, match="vault_info"):
        _open(dba, copy)


def test_key_operations_refuse_a_vault_that_fails_verification(dba, copy):
    """A destroyed key row put back alone must not be re-wrapped under a new vault key."""
    older = dba.snapshot(copy)
    with _open(dba, copy) as vault:
        vault.rotate_data_keys("e")
    _restore(dba, copy, older, ("keys",))
    new = privml.generate_key()
    with _open(dba, copy) as vault:
        for operation in (
            lambda: vault.rotate_vault_key(new),
            lambda: vault.rotate_data_keys("d"),
            lambda: vault.erase_subject("d", identifier="x", column="age"),
        ):
            with pytest.raises(IntegrityError, match="refused"):
                operation()
    with pytest.raises(privml.InvalidKeyError):
        _open(dba, copy, key=new)  # nothing was re-wrapped
