"""A site's one reservation for the whole run: what fits, early ends, and a killed process.

In-process sites over the breast_cancer vaults (no Flower processes: the site's ledger is
the subject here). σ = 1, B = 16 on 142 rows: 8 steps a round; one round costs ε ≈ 4.43
under the ledger's filter, two ≈ 5.32 (see conftest's BUDGETS).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import dp_accounting
import numpy as np
import pandas as pd
import pytest

import privml
from privml import Budget, BudgetExceededError, ConfigurationError, Field, Schema, Vault
from privml.federated import ModelSpec, Site
from privml.vault._checkpoints import LEASE

pytest.importorskip("opacus")

SIGMA, BATCH, DELTA = 1.0, 16, 1e-5
FEATURES = [
    "mean_radius",
    "mean_texture",
    "mean_perimeter",
    "mean_area",
    "mean_smoothness",
    "mean_compactness",
    "mean_concavity",
    "mean_concave_points",
]  # conftest's
SPEC = ModelSpec(inputs=len(FEATURES), outputs=2, hidden=(8,))


def _site(vault: Vault, **kwargs) -> Site:
    return Site(
        vault.session("eng", purpose="ml"),
        "data",
        features=FEATURES,
        target="target",
        model=SPEC,
        batch_size=BATCH,
        max_grad_norm=1.0,
        noise_multiplier=SIGMA,
        grad_sample_mode="bk",
        **kwargs,
    )


def _per_round(rows: int) -> int:
    return int(1 / (BATCH / rows))  # steps per epoch, as Opacus's DPDataLoader


def test_a_site_reserves_the_rounds_that_fit_and_refuses_the_rest(site_vaults):
    path, key = site_vaults[2]  # ε = 5: one round of the three planned
    with Vault.open(path, key_file=key) as vault:
        site = _site(vault, planned_rounds=3)
        weights = site.fit(1, SPEC.initial_weights())
        assert site.reserved_rounds == 1
        with pytest.raises(ConfigurationError, match=r"stopped: its budget covered 1 round"):
            site.fit(2, weights)
        events = vault.ledger.events("data")
        assert list(events["status"]) == ["committed"]  # the last reserved round ended it
        (params,) = events["params"]
        assert int(events["steps"].iloc[0]) == _per_round(int(params["n"]))
        # The three- and two-round reservations were refused before any data, uncharged.
        assert len(vault.audit.entries(action="ledger.refuse")) == 2
        assert vault.ledger.status("data").epsilon_spent <= 5.0
        assert not vault.models.list().empty


def test_a_site_whose_budget_covers_no_round_refuses_the_first(site_vaults):
    path, key = site_vaults[2]
    with Vault.open(path, key_file=key) as vault:
        session = vault.session("eng", purpose="ml")
        session.dp.count("data", epsilon=4.9)  # leaves ε = 0.1: not one DP-SGD round
        site = _site(vault, planned_rounds=2)
        with pytest.raises(BudgetExceededError):
            site.fit(1, SPEC.initial_weights())
        with pytest.raises(ConfigurationError, match="does not cover one round"):
            site.fit(2, SPEC.initial_weights())
        assert list(vault.ledger.events("data")["kind"]) == ["laplace"]


def test_a_run_ended_early_settles_on_the_rounds_taken(site_vaults):
    path, key = site_vaults[0]
    with Vault.open(path, key_file=key) as vault:
        site = _site(vault, planned_rounds=3)
        site.fit(1, SPEC.initial_weights())
        events = vault.ledger.events("data")
        assert list(events["status"]) == ["reserved"]  # all three rounds, before round 2
        site.finish()
        events = vault.ledger.events("data")
        assert list(events["status"]) == ["committed"]
        rows = int(events["params"].iloc[0]["n"])
        assert int(events["steps"].iloc[0]) == _per_round(rows)
        with pytest.raises(ConfigurationError, match="stopped"):
            site.fit(2, SPEC.initial_weights())


def test_weights_of_another_network_are_refused_before_anything_is_reserved(site_vaults):
    path, key = site_vaults[0]
    with Vault.open(path, key_file=key) as vault:
        site = _site(vault, planned_rounds=2)
        other = ModelSpec(inputs=len(FEATURES), outputs=2, hidden=(4,)).initial_weights()
        for bad in (other, [w.astype(np.int64) for w in SPEC.initial_weights()]):
            with pytest.raises(ConfigurationError, match="same ModelSpec"):
                site.fit(1, bad)
        assert vault.ledger.events("data").empty and site.stopped is None
        site.fit(1, SPEC.initial_weights())  # the site still takes the run
        assert list(vault.ledger.events("data")["status"]) == ["reserved"]
        site.finish()


_CHILD = """
import os, signal
from pathlib import Path
from privml import Vault
from privml.federated import ModelSpec, Site

SPEC = ModelSpec(inputs={inputs}, outputs=2, hidden=(8,))
with Vault.open({path!r}, key_file={key!r}) as vault:
    site = Site(
        vault.session("eng", purpose="ml"), "data", features={features!r}, target="target",
        model=SPEC, batch_size={batch}, max_grad_norm=1.0, noise_multiplier={sigma},
        grad_sample_mode="bk", planned_rounds=3, state=Path({state!r}),
    )
    if {in_round} == 1:  # round 1 begins: reserved and checkpointed, no round taken yet
        site._open(3)
        site._checkpoint_from_the_start()
        run = site._run
    else:  # round 1 taken, round 2 begins
        site.fit(1, SPEC.initial_weights())
        run = site._run
        run.load_global(SPEC.initial_weights(), origin="federated round 2")
    # three batches stepped, then the process is killed
    for _, (X, y) in zip(range(3), run.data_loader):
        run.optimizer.zero_grad()
        run.criterion(run.model(X), y).backward()
        run.optimizer.step()
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("in_round", [1, 2])
def test_a_killed_site_settles_on_restart_on_every_batch_it_drew(site_vaults, tmp_path, in_round):
    path, key = site_vaults[1]
    state = tmp_path / "state.json"
    child = _CHILD.format(
        inputs=len(FEATURES),
        features=FEATURES,
        batch=BATCH,
        sigma=SIGMA,
        path=str(path),
        key=str(key),
        state=str(state),
        in_round=in_round,
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(child)],
        capture_output=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-3000:]
    assert state.exists()
    with Vault.open(path, key_file=key) as vault:
        assert list(vault.ledger.events("data")["status"]) == ["reserved"]
        site = _site(vault, planned_rounds=3, state=state)
        request_id = site.recover()
        assert request_id is not None and not state.exists()
        assert site.recover() is None  # nothing left to settle
        events = vault.ledger.events("data")
        assert list(events["status"]) == ["committed"]
        rows = int(events["params"].iloc[0]["n"])
        steps = int(events["steps"].iloc[0])
        drawn = _per_round(rows) * (in_round - 1) + 3
        # Every batch the killed process drew, and at most a lease more (its durable mark).
        assert drawn <= steps <= drawn + LEASE - 1
        # The settled charge against an independent dp_accounting computation (RDP, the
        # ledger's admission accountant: its figure is at least RDP's for these steps).
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(BATCH / rows, dp_accounting.GaussianDpEvent(SIGMA)),
            steps,
        )
        rdp = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(DELTA)
        pld = (
            dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
            .compose(event)
            .get_epsilon(DELTA)
        )
        status = vault.ledger.status("data")
        assert status.epsilon_fixed_sequence == pytest.approx(min(rdp, pld), rel=1e-3)
        assert rdp <= status.epsilon_spent * (1 + 1e-9)
        assert vault.audit.verify().ok


@pytest.mark.postgresql_only
def test_a_site_that_cannot_checkpoint_is_refused_before_its_first_batch(vaults, tmp_path):
    """A vault on PostgreSQL cannot checkpoint: with ``state=`` the site refuses round 1
    before any batch, its reservation released (nothing spent), and stops."""
    rows = pd.DataFrame(
        np.random.default_rng(3).uniform(0.0, 1.0, (64, len(FEATURES))), columns=FEATURES
    )
    rows["target"] = np.arange(64) % 2
    fields = {name: Field.numeric(bounds=(0.0, 1.0)) for name in FEATURES}
    schema = Schema({**fields, "target": Field.categorical(categories=[0, 1], target=True)})
    vault = vaults.create(tmp_path / "pg", key=privml.generate_key())
    with vault:
        vault.add_dataset("data", rows, schema=schema, budget=Budget(epsilon=10.0, delta=DELTA))
        vault.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
        vault.add_principal("eng", roles=["ml"])
        vault.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
        state = tmp_path / "state.json"
        site = _site(vault, planned_rounds=3, state=state)
        with pytest.raises(ConfigurationError, match="SQLite"):
            site.fit(1, SPEC.initial_weights())
        events = vault.ledger.events("data")
        assert list(events["status"]) == ["released"]  # no batch was drawn
        assert vault.budget("data").epsilon_spent == 0.0
        assert site.stopped is not None and not state.exists()
