"""Many processes charging one budget at once: exactly the affordable number commit."""

from __future__ import annotations

import multiprocessing
import traceback

import pandas as pd
import pytest
import sqlalchemy as sa

import privml
from privml import BudgetExceededError, Vault
from privml.accounting import PrivacyEvent

WORKERS, ATTEMPTS, EPSILON = 8, 40, 0.01


def _worker(folder, key, url, index, start, results):
    committed = refused = 0
    errors = []
    try:
        with Vault.open(folder, key=key, actor=f"w{index}", metadata_url=url) as vault:
            start.wait(timeout=60)
            for _ in range(ATTEMPTS):
                try:
                    vault.ledger.charge(
                        "d",
                        event=PrivacyEvent.laplace(epsilon=EPSILON),
                        principal=f"worker-{index}",
                        purpose="count",
                    )
                    committed += 1
                except BudgetExceededError:
                    refused += 1
                except Exception:
                    errors.append(traceback.format_exc())
    except Exception:
        errors.append(traceback.format_exc())
    results.put((committed, refused, errors))


def _set_default_isolation(url: str, level: str) -> None:
    """Make ``level`` the default isolation of new sessions on ``url``'s database."""
    name = sa.make_url(url).database
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{level}'"
        )
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-repeatable-read-default"])
def metadata_url(request):
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("pg_database_url")
    if request.param.endswith("repeatable-read-default"):
        # A server configured for snapshot isolation: the writer lock must still see the
        # previous writer's commit, so the vault's write transactions set READ COMMITTED.
        _set_default_isolation(url, "repeatable read")
    return url


def test_processes_share_a_pure_budget_exactly(tmp_path, key, metadata_url):
    # Pure ε composes additively at δ = 0, so exactly 1.0 / 0.01 = 100 charges fit.
    folder = tmp_path / "v"
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))})
        vault.add_dataset(
            "d",
            pd.DataFrame({"x": [1.0]}),
            schema=schema,
            budget=privml.Budget(epsilon=1.0, delta=0.0),
        )
        setup = len(vault.audit.entries())
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    procs = [
        context.Process(target=_worker, args=(folder, key, metadata_url, i, start, results))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [e for _, _, errs in outcomes for e in errs]
    assert errors == [], errors[0] if errors else ""  # no "database is locked" reaches callers
    assert sum(c for c, _, _ in outcomes) == 100
    assert sum(r for _, r, _ in outcomes) == WORKERS * ATTEMPTS - 100
    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        status = vault.budget("d")
        assert status.committed == 100
        assert status.epsilon_spent <= 1.0 * (1 + 1e-9)
        entries = vault.audit.entries()
        actions = entries["action"].value_counts()
        assert actions["ledger.charge"] == 100
        assert actions["ledger.refuse"] == WORKERS * ATTEMPTS - 100
        # Gapless: one entry per attempt after the set-up, numbered without a hole.
        assert entries["seq"].tolist() == list(range(1, setup + WORKERS * ATTEMPTS + 1))
        # Every committed charge has its audit entry, naming its request.
        rows = vault.ledger.events("d")
        by_seq = entries.set_index("seq")
        assert len(rows) == 100
        for _, row in rows.iterrows():
            assert by_seq.loc[row["audit_seq"], "action"] == "ledger.charge"
            assert by_seq.loc[row["audit_seq"], "details"]["request_id"] == row["request_id"]
        assert vault.audit.verify().ok
