"""What one committed charge sends to the database: each row and head written once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

import privml
from privml import Budget, Field, Schema, Vault
from privml.accounting import PrivacyEvent
from privml.accounting._tables import ledger_allocations, ledger_events
from privml.storage import sealed
from privml.storage.engine import transaction
from privml.storage.tables import audit_log

KEY = privml.generate_key()
SCHEMA = Schema({"x": Field.numeric(bounds=(0, 10))})
DATA = pd.DataFrame({"x": [1.0, 2.0]})


def _vault(folder: Path, url: str | None = None) -> Vault:
    return Vault.open(folder, key=KEY, metadata_url=url, actor="admin")


def _made(folder: Path, url: str | None = None) -> Path:
    with Vault.create(folder, key=KEY, metadata_url=url, actor="admin") as vault:
        for name in ("d", "e"):
            vault.add_dataset(name, DATA, schema=SCHEMA, budget=Budget(epsilon=10.0, delta=0.0))
    return folder


def _charge(vault: Vault, dataset: str = "d") -> Any:
    event = PrivacyEvent.laplace(epsilon=0.01)
    return vault.ledger.charge(dataset, event=event, principal="ana", purpose="research")


@contextmanager
def _statements(engine: sa.Engine) -> Iterator[Counter[str]]:
    """Every statement sent, by its first words and table, counted per parameter set."""
    sent: Counter[str] = Counter()

    def seen(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        words = statement.split()
        table = words[2] if words[0] in ("INSERT", "DELETE") else words[1]
        if words[0] == "SELECT":
            table = words[words.index("FROM") + 1] if "FROM" in words else ""
        sent[f"{words[0]} {table}"] += len(params) if many else 1

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)


def test_a_charge_writes_its_ledger_row_and_each_head_once(tmp_path):
    with _vault(_made(tmp_path / "v")) as vault:
        _charge(vault)
        with _statements(vault._state.engine) as sent:
            _charge(vault)
        assert vault.audit.verify().ok
    assert sent["INSERT ledger_events"] == 1
    assert sent["UPDATE ledger_events"] == 0  # its MAC went in with it
    assert sent["SELECT row_heads"] == 1  # the dataset's heads, and every unlogged one
    assert sent["UPDATE row_heads"] == 2  # ledger_events and ledger_state of "d", once each


def _last_heads(vault: Vault) -> list[list[Any]]:
    """The heads the newest audit entry records."""
    query = sa.select(audit_log.c.heads).order_by(audit_log.c.seq.desc()).limit(1)
    with vault._state.engine.connect() as conn:
        heads = conn.execute(query).scalar_one()
    return list(json.loads(heads or "[]"))


def test_a_head_left_unlogged_elsewhere_is_logged_by_the_next_entry(tmp_path):
    with _vault(_made(tmp_path / "v")) as vault:
        _charge(vault)
        with transaction(vault._state.engine) as tx:  # a change with no audit entry of its own
            values = {"dataset": "e", "scope": "principal:ana", "epsilon": 1.0, "created": "t"}
            sealed.insert(tx.conn, ledger_allocations, values)
        _charge(vault)
        logged = {(table, scope) for table, scope, _, _ in _last_heads(vault)}
        assert ("ledger_allocations", "e") in logged
        assert ("ledger_events", "d") in logged
        _charge(vault)
        assert ("ledger_allocations", "e") not in {(t, s) for t, s, _, _ in _last_heads(vault)}
        assert vault.audit.verify().ok


def _ids(vault: Vault) -> list[int]:
    with vault._state.engine.connect() as conn:
        query = sa.select(ledger_events.c.id).order_by(ledger_events.c.audit_seq)
        return [int(i) for i in conn.execute(query).scalars()]


def _backend_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str | None:
    return _backend_url(request)


def test_ledger_rows_take_growing_keys_across_datasets_and_reopenings(tmp_path, url):
    folder = _made(tmp_path / "v", url)
    for _ in range(2):
        with _vault(folder, url) as vault:
            for dataset in ("d", "e", "d"):
                _charge(vault, dataset)
    with _vault(folder, url) as vault:
        ids = _ids(vault)
        assert len(ids) == 6 and ids == sorted(ids) and len(set(ids)) == 6
        assert vault.audit.verify().ok
        assert len(vault.ledger.events("d")) == 4  # rows read back, each checked
