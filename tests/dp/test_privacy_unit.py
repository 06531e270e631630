"""Person-level privacy units: contribution bounding and noise calibrated to the bound.

The statistical tests cannot be seeded (DP noise comes from the OS CSPRNG, by design): each
states the probability that a correct implementation fails it, always below 1e-6.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import privml
from privml import Budget, Field, Schema, Vault
from privml.accounting._unit import PrivacyUnit
from privml.dp._bounding import bound_rows, keyed_ranks
from privml.exceptions import ConfigurationError

K = 40  # rows of the person with many visits, and the bound of the person-level dataset
SCHEMA = Schema({"pid": Field.identifier(), "x": Field.numeric(bounds=(0, 10), tags="health")})


def _frame() -> pd.DataFrame:
    """One person with K visits, then 60 people with one visit each."""
    pids = ["P-heavy"] * K + [f"P-{i:03d}" for i in range(60)]
    return pd.DataFrame({"pid": pids, "x": np.linspace(0, 10, len(pids))})


@pytest.fixture
def vault(tmp_path, key):
    with Vault.create(tmp_path / "v", key=key) as v:
        frame = _frame()
        v.add_dataset("rows", frame, schema=SCHEMA, budget=Budget(epsilon=1e4), privacy_unit="row")
        v.add_dataset(
            "people",
            frame,
            schema=SCHEMA,
            budget=Budget(epsilon=1e4),
            privacy_unit="pid",
            max_rows_per_unit=K,
        )
        v.add_purpose("stats", description="Statistics", lawful_basis="consent")
        v.add_principal("ana", roles=[])
        for name in ("rows", "people"):  # dp_aggregate on x only: nothing on pid
            v.grant(
                principal="ana", dataset=name, purpose="stats", mode="dp_aggregate", columns=["x"]
            )
        yield v


# --- declaration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("unit", "k", "match"),
    [
        (None, None, "declare the privacy unit"),
        ("nobody", 3, "not a column of the schema"),
        ("x", 3, "must be a .*identifier field"),
        ("pid", None, "needs max_rows_per_unit"),
        ("pid", 0, "needs max_rows_per_unit"),
        ("pid", 10_001, "needs max_rows_per_unit"),
        ("pid", True, "needs max_rows_per_unit"),
        ("pid", 2.0, "needs max_rows_per_unit"),
        ("row", 3, "applies to a person-level unit only"),
        (["pid"], 3, 'takes "row" or the name'),
    ],
)
def test_a_bad_declaration_is_refused_before_anything_is_stored(tmp_path, key, unit, k, match):
    with Vault.create(tmp_path / "v", key=key) as v:
        with pytest.raises(ConfigurationError, match=match):
            v.add_dataset(
                "d", _frame(), schema=SCHEMA, budget=Budget(epsilon=1),
                privacy_unit=unit, max_rows_per_unit=k,
            )  # fmt: skip
        assert v.datasets() == []


def test_without_an_identifier_the_unit_defaults_to_a_row(tmp_path, key):
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset(
            "d", _frame()[["x"]], schema=Schema({"x": SCHEMA["x"]}), budget=Budget(epsilon=1)
        )
        assert v.dataset("d").privacy_unit == PrivacyUnit()


def test_the_unit_is_shown_by_the_dataset_and_the_budget(vault):
    assert vault.dataset("people").privacy_unit == PrivacyUnit("pid", K)
    assert [(d.name, d.privacy_unit.name) for d in vault.datasets()] == [
        ("people", "pid"),
        ("rows", "row"),
    ]
    status = vault.budget("people")
    assert (status.privacy_unit, status.max_rows_per_unit) == ("pid", K)
    assert "one person" in str(status) and status.to_dict()["privacy_unit"] == "pid"
    assert vault.budget("rows").privacy_unit == "row" and "one row" in str(vault.budget("rows"))


# --- calibration -----------------------------------------------------------------------------
def test_a_person_level_release_is_calibrated_to_the_bound_and_charged_its_own_epsilon(vault):
    dp = vault.session("ana", purpose="stats").dp
    row = dp.count("rows", epsilon=0.5)
    person = dp.count("people", epsilon=0.5)
    assert (row.privacy_unit, row.max_rows_per_unit, row.noise_scale) == ("row", 1, 2.0)
    assert (person.privacy_unit, person.max_rows_per_unit) == ("pid", K)
    assert person.noise_scale == pytest.approx(K / 0.5)
    assert person.epsilon == 0.5  # the person-level ε, as charged
    charged = vault.ledger.events("people")
    assert len(charged) == 1
    assert vault.budget("people").epsilon_spent == pytest.approx(0.5)
    assert dp.sum("people", "x", epsilon=1.0).noise_scale == pytest.approx(K * 10 / 1.0)
    hist = dp.histogram("people", "x", epsilon=1.0, bins=4)
    assert hist.noise_scale == pytest.approx(K / 1.0)


def test_the_released_noise_is_laplace_of_the_bound_over_epsilon(vault):
    """300 person-level counts at ε = 1: noise ~ Laplace(K). Every person has at most K rows,
    so the bounded count is exactly 100. A correct mechanism fails the KS test against
    Laplace(K) with probability 1e-7 (its p-value is uniform); the row-level scale Laplace(1)
    is rejected at the same level except with probability far below 1e-12 (KS distance ~0.95
    at n = 300)."""
    dp = vault.session("ana", purpose="stats").dp
    noise = np.array([dp.count("people", epsilon=1.0).value - 100 for _ in range(300)])
    assert stats.kstest(noise, stats.laplace(scale=K).cdf).pvalue > 1e-7
    assert stats.kstest(noise, stats.laplace(scale=1.0).cdf).pvalue < 1e-7


# --- bounding --------------------------------------------------------------------------------
def test_bounding_keeps_at_most_k_rows_per_person_and_every_person():
    units = pd.Series(np.repeat([f"p{i}" for i in range(50)], np.arange(1, 51)))
    kept = bound_rows(units, 7, os.urandom(32))
    counts = units.iloc[kept].value_counts()
    assert counts.max() == 7 and len(counts) == 50
    assert sorted(counts.tolist()) == sorted(np.minimum(np.arange(1, 51), 7).tolist())
    assert (np.diff(kept) > 0).all()  # kept rows keep their order


def test_bounding_is_deterministic_for_one_key_and_not_the_first_rows():
    """A person with 40 rows, k = 5. One key: the same rows every time. Twenty fresh keys:
    each keeps a uniformly random 5-subset, so all twenty keep the first five rows with
    probability (1/C(40, 5))^20, and all keep one same subset with probability below 1e-100."""
    units = pd.Series(["a"] * 40 + ["b"] * 3)
    key = os.urandom(32)
    assert (bound_rows(units, 5, key) == bound_rows(units, 5, key)).all()
    chosen = {tuple(bound_rows(units, 5, os.urandom(32))) for _ in range(20)}
    assert len(chosen) > 1
    assert all(len([p for p in c if p < 40]) == 5 and {40, 41, 42} <= set(c) for c in chosen)
    assert math.comb(40, 5) ** 20 > 1e100


def test_keyed_ranks_are_a_keystream_not_positions():
    a, b = keyed_ranks(bytes(32), 1000), keyed_ranks(b"\x01" * 32, 1000)
    assert (a != b).mean() > 0.99 and len(np.unique(a)) == 1000


def test_a_release_keeps_different_rows_each_time_and_the_same_for_its_request_id(vault):
    """Through the door: two releases of the person-level dataset. The heavy person (40 rows)
    keeps K = 40 rows here, so use a dataset bounded at 3 rows."""
    vault.add_dataset(
        "tight", _frame(), schema=SCHEMA, budget=Budget(epsilon=100),
        privacy_unit="pid", max_rows_per_unit=3,
    )  # fmt: skip
    vault.grant(
        principal="ana", dataset="tight", purpose="stats", mode="dp_aggregate", columns=["x"]
    )
    door = vault.session("ana", purpose="stats")._door
    event = privml.accounting.PrivacyEvent.laplace(epsilon=0.1)
    seen = []
    for _ in range(5):
        auth = door.authorize("tight", columns=["x"], needed="dp_aggregate", action="dp.sum")
        released = door.release(auth, event=event, action="dp.sum", version=1)
        assert len(released.frame) == 3 + 60 and list(released.frame.columns) == ["x"]
        again = door._load(
            auth, 1, unit=door.privacy_unit("tight"), max_rows=3, key=released.request_id
        )
        assert (again.positions == released.positions).all()
        seen.append(tuple(released.positions[:3]))
    # P(five fresh 3-subsets of 40 rows all equal) = C(40, 3)^-4 < 1e-13
    assert len(set(seen)) > 1


# --- the analyst learns no unit value --------------------------------------------------------
def test_unit_values_never_reach_the_analyst_nor_the_audit_log(vault):
    session = vault.session("ana", purpose="stats")
    result = session.dp.mean("people", "x", epsilon=1.0)
    with pytest.raises(privml.exceptions.PrivmlError) as refused:
        session.dp.count("people", epsilon=1.0, where=[("pid", "==", "P-heavy")])
    with pytest.raises(privml.exceptions.AccessDenied):
        session.read("people", columns=["pid"])
    text = " ".join(
        [
            repr(result),
            str(vars(result)),
            str(refused.value),
            vault.audit.entries().to_json(date_format="iso"),
        ]
    )
    # the values the door bounds on, as stored
    pseudonyms = vault.pseudonymize("people", "pid", ["P-heavy", "P-000"])
    for secret in ["P-heavy", "P-000", *pseudonyms]:
        assert secret not in text


# --- diffprivlib models ----------------------------------------------------------------------
def test_a_pure_epsilon_fit_runs_at_epsilon_over_k_and_is_charged_epsilon(tmp_path, key):
    from diffprivlib.models import LogisticRegression

    schema = Schema({**dict(SCHEMA.items()), "y": Field.categorical(categories=[0, 1])})
    frame = _frame().assign(y=[i % 2 for i in range(K + 60)])
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset(
            "people", frame, schema=schema, budget=Budget(epsilon=10),
            privacy_unit="pid", max_rows_per_unit=4,
        )  # fmt: skip
        v.add_purpose("ml", description="Models", lawful_basis="consent")
        v.add_principal("eng", roles=[])
        v.grant(
            principal="eng", dataset="people", purpose="ml", mode="dp_training", columns=["x", "y"]
        )
        fitted = v.session("eng", purpose="ml").dp.fit(
            LogisticRegression(epsilon=2.0), "people", features=["x"], target="y", name="lr"
        )
        assert fitted.named_steps["model"].epsilon == pytest.approx(2.0 / 4)
        assert v.budget("people").epsilon_spent == pytest.approx(2.0)
        assert v.models.info("lr").metadata["privacy_unit"] == {
            "unit": "pid",
            "max_rows_per_unit": 4,
        }


def test_an_epsilon_delta_fit_with_several_rows_per_person_is_refused():
    from privml.dp._fit import _group_size

    with pytest.raises(ConfigurationError, match=r"k·e\^\(\(k-1\)ε\)·δ"):
        _group_size(3, 1e-6, "pid")
    assert _group_size(1, 1e-6, "pid") == 1 and _group_size(5, 0.0, "pid") == 5
