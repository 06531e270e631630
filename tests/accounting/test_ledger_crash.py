"""A process SIGKILLed while charging leaves every charge with its audit entry, and no orphan."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import sqlalchemy as sa

import privml
from privml import Vault
from privml.accounting import PrivacyEvent

CHILD = textwrap.dedent(
    """
    import functools, importlib, os, sys, time
    import privml
    from privml.accounting import PrivacyEvent

    target, nth = sys.argv[1], int(sys.argv[2])
    if target != "random":
        module_name, attr = target.rsplit(".", 1)
        try:
            owner = importlib.import_module(module_name)
        except ImportError:
            mod, cls = module_name.rsplit(".", 1)
            owner = getattr(importlib.import_module(mod), cls)
        original, calls = getattr(owner, attr), []

        @functools.wraps(original)
        def stall(*args, **kwargs):
            result = original(*args, **kwargs)
            if kwargs.get("action", "ledger.charge") == "ledger.charge":
                calls.append(1)
                if len(calls) == nth:
                    print("READY", flush=True)
                    time.sleep(60)
            return result

        setattr(owner, attr, stall)
    url = os.environ.get("URL") or None
    vault = privml.Vault.open(os.environ["VAULT"], key=os.environ["KEY"], metadata_url=url)
    for i in range(10_000):
        vault.ledger.charge(
            "d", event=PrivacyEvent.laplace(epsilon=0.01), principal=f"p{i % 3}", purpose="q"
        )
        if i == 2 and target == "random":
            print("READY", flush=True)
    """
)

# (what to stall, which call): each stops the child at one moment inside a charge.
KILL_POINTS = {
    "after the audit entry, before the ledger row": ("privml.audit.AuditLog.append", 3),
    "after the row and one running total": ("privml.accounting._charging.write_state", 7),
    "after every write, before commit": ("privml.accounting._charging.write_state", 9),
    **{f"at a random moment (seed {seed})": ("random", seed) for seed in (1, 2, 3)},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request):
    return None if request.param == "sqlite" else request.getfixturevalue("pg_database_url")


def _run_and_kill(folder, key, url, target, nth):
    env = {**os.environ, "VAULT": str(folder), "KEY": key.decode(), "URL": url or ""}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, target, str(nth)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = child.stdout.readline().strip()
    assert line == "READY", f"child did not reach the kill point (printed {line!r})"
    if target == "random":  # nth is the seed: the same moments on every run
        time.sleep(random.Random(nth).uniform(0.0, 0.4))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("point", list(KILL_POINTS), ids=lambda p: p.replace(" ", "-"))
def test_sigkill_mid_charge(tmp_path, key, point, metadata_url):
    folder = tmp_path / "v"
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset(
            "d",
            pd.DataFrame({"x": [1.0]}),
            schema=privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))}),
            budget=privml.Budget(epsilon=1000.0, delta=0.0),
        )
    _run_and_kill(folder, key, metadata_url, *KILL_POINTS[point])

    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        assert vault.audit.verify().ok
        seqs = vault.audit.entries()["seq"].tolist()
        assert seqs == list(range(1, len(seqs) + 1))  # gapless: the killed transaction left no hole
        rows = vault.ledger.events("d")
        audit = vault.audit.entries(action="ledger.charge")
        assert len(rows) >= 2
        # Every committed charge has its audit entry, and every audit entry its charge.
        by_seq = audit.set_index("seq")
        for _, row in rows.iterrows():
            assert by_seq.loc[row["audit_seq"], "details"]["request_id"] == row["request_id"]
        assert sorted(d["request_id"] for d in audit["details"]) == sorted(rows["request_id"])
        # The running totals agree with the rows.
        status = vault.budget("d")
        assert status.committed == len(rows)
        assert status.epsilon_spent == pytest.approx(0.01 * len(rows), rel=1e-9)
        assert sum(s.epsilon_spent for s in status.by_principal.values()) == pytest.approx(
            status.epsilon_spent, rel=1e-9
        )
        # And the ledger goes on.
        vault.ledger.charge(
            "d", event=PrivacyEvent.laplace(epsilon=0.01), principal="p", purpose="q"
        )
        assert vault.budget("d").committed == len(rows) + 1
        assert vault.audit.verify().ok
    engine = sa.create_engine(metadata_url or f"sqlite:///{folder / 'meta.db'}")
    with engine.connect() as conn:
        states = conn.exec_driver_sql("SELECT scope, events FROM ledger_state").all()
    engine.dispose()
    assert dict(states)[""] == len(rows) + 1
