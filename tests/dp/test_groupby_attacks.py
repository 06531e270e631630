"""A group-by as the attacker sees it: neighbours that move the partials, fixed request ids,
inputs that might slip past the charge. Data made here is seeded; no test here depends on
DP noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import privml
from privml import Budget, Field, Schema
from privml.dp import _group_keys, _opendp
from privml.dp._partials import Partials
from privml.exceptions import ConfigurationError
from privml.vault._requests import Via

K = 6
LO, HI = -3.0, 5.0
SCHEMA = Schema(
    {
        "pid": Field.identifier(),
        "city": Field.text(tags="health"),
        "ward": Field.categorical(categories=["A", "B"], tags="health"),
        "x": Field.numeric(bounds=(LO, HI), tags="health"),
    }
)


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 60
    return pd.DataFrame(
        {
            "pid": [f"P-{i % 20:02d}" for i in range(n)],
            "city": rng.choice(["Big", "Mid"], n),
            "ward": pd.Categorical(rng.choice(["A", "B"], n), categories=["A", "B"]),
            "x": rng.uniform(LO, HI, n),
        }
    )


@pytest.fixture
def vault(tmp_path, key):
    with privml.Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset(
            "people",
            _frame(),
            schema=SCHEMA,
            budget=Budget(epsilon=1e6, delta=1e-3),
            privacy_unit="pid",
            max_rows_per_unit=K,
        )
        v.add_purpose("stats", description="Statistics", lawful_basis="consent")
        v.add_principal("ana", roles=[])
        v.grant(
            principal="ana", dataset="people", purpose="stats", mode="dp_aggregate", tags=["health"]
        )
        yield v


def _partials(codes: np.ndarray, values: np.ndarray, groups: int) -> Partials:
    p = Partials(groups, bounds=(LO, HI))
    p.update(codes, values)
    return p


@pytest.mark.parametrize("seed", range(20))
def test_one_person_with_k_rows_moves_each_partial_by_at_most_its_scale(seed):
    """Every neighbour: one person's k rows at any values (also out of the bounds) in any
    groups moves count, Σ(x - c), Σ(x - c)² and the clipped sum by at most k, k·h, k·h² and
    k·max(|lo|, |hi|) in L1 over all groups: the sensitivities the cells' noise is scaled to."""
    rng = np.random.default_rng(seed)
    groups = 5
    base_codes = rng.integers(0, groups, 50)
    base_values = rng.uniform(LO, HI, 50)
    extra_codes = rng.integers(0, groups, K)
    extra_values = rng.choice([LO - 100, HI + 100, LO, HI, (LO + HI) / 2], K)
    a = _partials(base_codes, base_values, groups)
    b = _partials(np.r_[base_codes, extra_codes], np.r_[base_values, extra_values], groups)
    h, c = (HI - LO) / 2, (HI + LO) / 2
    tol = 1e-9
    assert np.abs(b.count - a.count).sum() <= K + tol
    assert np.abs(b.shifted_sum - a.shifted_sum).sum() <= K * h + tol
    assert np.abs(b.shifted_squares - a.shifted_squares).sum() <= K * h * h + tol
    sums = [p.shifted_sum + c * p.count for p in (a, b)]
    assert np.abs(sums[1] - sums[0]).sum() <= K * max(abs(LO), abs(HI)) + tol


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 1.0])
def test_one_row_moves_a_quantile_utility_by_at_most_one(q):
    """The quantile's exponential mechanism is run at sensitivity 1 (then ε/k for k rows)."""
    rng = np.random.default_rng(3)
    p = Partials(1, bounds=(LO, HI), bins=16)
    p.update(np.zeros(40, dtype=np.int64), rng.uniform(LO, HI, 40))

    def utility(part: Partials) -> np.ndarray:
        below = np.r_[0.0, np.cumsum(part.histogram[0])]
        return -np.abs(below - q * part.count[0])

    for value in [LO - 1, LO, 0.0, HI, HI + 1]:
        more = Partials(1, bounds=(LO, HI), bins=16)
        more.merge(p)
        more.update(np.zeros(1, dtype=np.int64), np.array([value]))
        assert np.abs(utility(more) - utility(p)).max() <= 1.0 + 1e-12


@pytest.mark.parametrize("c", [1, 3, K])
def test_a_row_threshold_covers_a_person_whose_k_rows_share_one_key(c):
    """select_on='rows': the worst neighbour puts all k rows on one key (L∞ = k) or spreads
    them over min(g, k) keys (L0): the threshold's map at (min(g, k), k, k) covers both, and
    a key held by one person alone (k rows) passes only above k."""
    t = _opendp.threshold(epsilon=1.0, delta=1e-6, keys_per_unit=c, rows_per_key=K)
    assert t.threshold > K and t.scale == K / 1.0
    for d_in in [(1, K, K), (min(c, K), K, K), (min(c, K), K, max(1, K // c))]:
        eps, dlt = t._measurement.map(d_in)
        assert eps <= 1.0 + 1e-9 and dlt <= 1e-6


@pytest.mark.parametrize("epsilon", [5.0, 20.0, 1e3])
def test_a_large_epsilon_with_rows_gives_a_threshold_above_k_not_an_opendp_error(epsilon):
    """At a large ε the smallest δ-feasible threshold would lie below k, where OpenDP's map is
    undefined (a threshold under the L∞ sensitivity): the search starts above k."""
    t = _opendp.threshold(epsilon=epsilon, delta=1e-6, keys_per_unit=3, rows_per_key=K)
    assert t.threshold >= K + 1
    assert t.delta <= 1e-6  # the map at threshold - 1, the rule the measurement applies


def test_a_person_keeps_at_most_g_groups_whatever_their_rows():
    people = np.repeat(np.arange(4, dtype=np.int64), 10)
    codes = np.tile(np.arange(10, dtype=np.int64), 4)
    ids = np.arange(10, dtype=np.uint64)
    out = _group_keys.bound_groups(people, codes, 3, key=bytes(32), ids=ids)
    for person in range(4):
        kept = out[people == person]
        assert len(set(kept[kept >= 0].tolist())) == 3


def test_a_served_request_id_fixes_no_bounding_across_releases():
    """A client names its request (Idempotency-Key) but not the attempt: the server's claim
    holds a random attempt id, folded into each charge's request id and so into the bounding
    key. The same key with another attempt gives other ids; only a retry of one attempt (the
    same charge, replayed by the ledger, whose answer is stored once) repeats them."""
    first = Via("c", "t", "K-1", "a" * 32)
    again = Via("c", "t", "K-1", "a" * 32)
    other = Via("c", "t", "K-1", "b" * 32)
    action = "dp.groupby.count"
    assert first.charge_id("ana", action, 1) == again.charge_id("ana", action, 1)
    assert first.charge_id("ana", action, 1) != other.charge_id("ana", action, 1)
    assert first.charge_id("ana", action, 1) != first.charge_id("eve", action, 1)
    assert first.charge_id("ana", action, 1) != first.charge_id("ana", action, 2)
    assert Via("c", "t").charge_id("ana", action, 1) is None  # unnamed: a fresh random id


def test_two_equal_releases_are_charged_twice_with_their_own_bounding(vault):
    dp = vault.session("ana", purpose="stats").dp
    a = dp.groupby("people", by="ward").count(epsilon=1.0)
    b = dp.groupby("people", by="ward").count(epsilon=1.0)
    assert a.attrs["request_id"] != b.attrs["request_id"]
    assert len(vault.ledger.events("people")) == 2
    store = vault._store
    keys = {store.bounding_key("people", r.attrs["request_id"]) for r in (a, b)}
    assert len(keys) == 2


def test_a_threshold_out_of_reach_is_refused_before_the_charge(vault):
    """ε at its floor and δ at its floor need a threshold past any searched: a typed refusal
    saying what to change, before anything is charged (formerly an internal ValueError)."""
    dp = vault.session("ana", purpose="stats").dp
    with pytest.raises(ConfigurationError, match="raise epsilon or delta"):
        dp.groupby("people", by="city").count(epsilon=1e-9, delta=1e-30)
    with pytest.raises(ConfigurationError, match="raise epsilon or delta"):
        dp.groupby("people", by="city").count(epsilon=1e-9, delta=1e-30, select_on="rows")
    assert len(vault.ledger.events("people")) == 0
    last = vault.audit.entries().iloc[-1]
    assert last["outcome"] == "error"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda g: g.count(epsilon=1.0, delta=float("nan")), "delta"),
        (lambda g: g.count(epsilon=1.0, delta=1.0), "delta"),
        (lambda g: g.count(epsilon=1.0, delta=1e-6, select_on="cells"), "select_on"),
        (lambda g: g.quantile("x", float("nan"), epsilon=1.0, delta=1e-6), "q must"),
        (lambda g: g.sum("pid", epsilon=1.0, delta=1e-6), "pid"),
    ],
)
def test_bad_input_on_private_keys_is_refused_before_the_charge(vault, build, match):
    dp = vault.session("ana", purpose="stats").dp
    with pytest.raises(privml.exceptions.PrivmlError, match=match):
        build(dp.groupby("people", by="city"))
    assert len(vault.ledger.events("people")) == 0


PEAK = 128 * 2**20  # blocked: about 70 MB here; all draws at once: above 200 MB


@pytest.mark.parametrize("what", ["mean", "var"])
def test_the_intervals_of_many_selected_groups_stay_in_bounded_memory(what):
    """Partition selection may keep millions of keys: the intervals of a ratio are simulated
    in blocks, never as 50 draws of every group at once (≈ 400 MB per array at 1M groups)."""
    import tracemalloc

    from privml.dp import _group_noise

    groups = 100_000
    p = Partials(groups, bounds=(LO, HI))
    p.update(np.arange(groups, dtype=np.int64), np.zeros(groups))
    cells = _group_noise.STATISTICS[what][0]
    tracemalloc.start()
    try:
        out = cells(p, 1.0, K)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(out.value) == groups and np.isfinite(out.lower).all()
    assert (out.lower <= out.upper).all()
    assert peak < PEAK
