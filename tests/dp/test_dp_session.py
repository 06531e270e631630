"""DP releases through a session: access, charge-before-read, one charge and one audit entry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import privml
from privml import AccessDenied, Budget, BudgetExceededError, Field, Schema, Vault

SCHEMA = Schema(
    {
        "age": Field.integer(bounds=(0, 120), tags="demographic"),
        "bmi": Field.numeric(bounds=(10, 60), tags="health"),
        "smoker": Field.categorical(categories=["yes", "no"], tags="health"),
        "note": Field.text(tags="notes"),
    }
)


@pytest.fixture
def vault(tmp_path, key):
    rng = np.random.default_rng(3)
    n = 500
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "bmi": rng.normal(27, 4, n).clip(10, 60),
            "smoker": rng.choice(["yes", "no"], n),
            "note": pd.Series(["n/a"] * n, dtype="str"),
        }
    )
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset("health", frame, schema=SCHEMA, budget=Budget(epsilon=2.0, delta=1e-6))
        v.add_purpose("stats", description="Statistics", lawful_basis="GDPR 9(2)(j)")
        v.add_principal("ana", roles=["analyst"])
        v.add_principal("eve", roles=["visitor"])
        v.grant(
            role="analyst",
            dataset="health",
            purpose="stats",
            mode="dp_aggregate",
            tags=["health", "demographic"],
        )
        yield v, frame


def _charges(v):
    events = v.ledger.events("health")
    return events[events["status"] == "committed"]


def test_statistics_are_released_charged_and_audited_once(vault):
    v, _frame = vault
    dp = v.session("ana", purpose="stats").dp
    before = len(v.audit.entries())
    results = [
        dp.count("health", epsilon=0.1),
        dp.sum("health", "bmi", epsilon=0.1),
        dp.mean("health", "bmi", epsilon=0.1),
        dp.var("health", "age", epsilon=0.1),
        dp.std("health", "age", epsilon=0.1),
        dp.histogram("health", "smoker", epsilon=0.1),
        dp.histogram("health", "age", epsilon=0.1, bins=4),
        dp.quantile("health", "age", 0.5, epsilon=0.1),
        dp.count("health", epsilon=0.1, where=[("smoker", "==", "yes")]),
    ]
    assert len(_charges(v)) == len(results)
    assert len(v.audit.entries()) - before == len(results)
    assert {r.request_id for r in results} == set(_charges(v)["request_id"])
    mean = results[2]
    assert 10 <= mean.value <= 60  # the mean of values clipped to the bounds, always
    # The interval straddles 0 unless the noisy mean is clipped to a bound or the noisy
    # count falls below 1: each needs Laplace noise of over 15 scales (P < e^-15 / 2 < 2e-7).
    assert mean.interval[0] < 0 < mean.interval[1]
    assert list(results[5].value.index) == ["yes", "no"]
    assert len(results[6].value) == 4
    assert results[7].interval is None and 0 <= results[7].value <= 120
    entry = v.audit.entries().iloc[-1]
    assert entry["principal"] == "ana" and entry["details"]["grant_ids"]
    assert entry["details"]["policy_hash"] == v.policy.hash


def test_over_budget_release_is_refused_before_any_read(vault, monkeypatch):
    v, _ = vault
    dp = v.session("ana", purpose="stats").dp
    dp.count("health", epsilon=1.9)
    from privml.vault._door import Door

    def no_reads(*args, **kwargs):
        raise AssertionError("data was read for a refused release")

    monkeypatch.setattr(Door, "_load", no_reads)
    with pytest.raises(BudgetExceededError, match="remaining"):
        dp.mean("health", "bmi", epsilon=0.5)
    assert len(_charges(v)) == 1


def test_dp_aggregate_cannot_read_rows_or_fit(vault):
    v, _ = vault
    session = v.session("ana", purpose="stats")
    with pytest.raises(AccessDenied):
        session.read("health", columns=["bmi"])
    from diffprivlib.models import GaussianNB

    with pytest.raises(AccessDenied, match="dp_training"):
        session.dp.fit(GaussianNB(epsilon=0.5), "health", features=["bmi"], target="smoker")
    assert len(_charges(v)) == 0


def test_denied_principals_get_nothing(vault):
    v, _ = vault
    dp = v.session("eve", purpose="stats").dp
    for call in (
        lambda: dp.count("health", epsilon=0.1),
        lambda: dp.mean("health", "bmi", epsilon=0.1),
    ):
        with pytest.raises(AccessDenied):
            call()
    assert len(_charges(v)) == 0
    assert set(v.audit.entries(principal="eve")["outcome"]) == {"denied"}


def test_columns_without_bounds_are_refused(vault):
    v, _ = vault
    dp = v.session("ana", purpose="stats").dp
    with pytest.raises(privml.ConfigurationError, match="numeric column"):
        dp.mean("health", "smoker", epsilon=0.1)
    assert len(_charges(v)) == 0


@pytest.mark.parametrize(
    "bins",
    [0, -3, True, 10**9, 2.5, "10", [0.0], [0, 50, 50], [50, 0], [0, float("nan")], [[0, 1]]],
    ids=repr,
)
def test_bad_bins_are_refused_before_any_charge_or_allocation(vault, bins):
    """Each bin is a noisy count: a billion bins would allocate gigabytes before any check."""
    v, _frame = vault
    dp = v.session("ana", purpose="stats").dp
    with pytest.raises(privml.ConfigurationError, match="bins="):
        dp.histogram("health", "bmi", epsilon=0.1, bins=bins)
    assert v.budget("health").epsilon_spent == 0
