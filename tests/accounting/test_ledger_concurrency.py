"""Many processes charging one budget at once: exactly the affordable number commit."""

from __future__ import annotations

import multiprocessing
import traceback

import pandas as pd

import privml
from privml import BudgetExceededError, Vault
from privml.accounting import PrivacyEvent

WORKERS, ATTEMPTS, EPSILON = 8, 40, 0.01


def _worker(folder, key, index, start, results):
    committed = refused = 0
    errors = []
    try:
        with Vault.open(folder, key=key, actor=f"w{index}") as vault:
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


def test_processes_share_a_pure_budget_exactly(tmp_path, key):
    # Pure ε composes additively at δ = 0, so exactly 1.0 / 0.01 = 100 charges fit.
    folder = tmp_path / "v"
    with Vault.create(folder, key=key) as vault:
        schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))})
        vault.add_dataset(
            "d",
            pd.DataFrame({"x": [1.0]}),
            schema=schema,
            budget=privml.Budget(epsilon=1.0, delta=0.0),
        )
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    procs = [
        context.Process(target=_worker, args=(folder, key, i, start, results))
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
    with Vault.open(folder, key=key) as vault:
        status = vault.budget("d")
        assert status.committed == 100
        assert status.epsilon_spent <= 1.0 * (1 + 1e-9)
        actions = vault.audit.entries()["action"].value_counts()
        assert actions["ledger.charge"] == 100
        assert actions["ledger.refuse"] == WORKERS * ATTEMPTS - 100
        assert vault.audit.verify().ok
