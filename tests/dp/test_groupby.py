"""``session.dp.groupby``: keys, per-cell noise, one charge per query, partition selection.

DP noise comes from the OS CSPRNG by design and cannot be seeded: each statistical test
states the probability that a correct implementation fails it, always below 1e-6. Data
made here is seeded.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import privml
from privml import Budget, Field, Schema
from privml.dp import _group_keys, _group_noise, _opendp
from privml.dp._partials import Partials
from privml.exceptions import AccessDenied, ConfigurationError, PrivmlError

K = 40  # rows of the heavy person, and the person-level bound
SCHEMA = Schema(
    {
        "pid": Field.identifier(),
        "ward": Field.categorical(categories=["A", "B", "C", "D"], tags="health"),
        "day": Field.integer(bounds=(0, 39), tags="health"),
        "city": Field.text(tags="health"),
        "x": Field.numeric(bounds=(0.0, 10.0), tags="health"),
        "secret": Field.categorical(categories=["s", "t"], tags="hr"),
    }
)


def _frame() -> pd.DataFrame:
    """P-heavy: K rows, one on each day 0..K-1, in ward A, city Solo (held by nobody else).
    Then 200 people with one row each, wards A-C (D stays empty), city Big."""
    rng = np.random.default_rng(7)
    heavy = pd.DataFrame(
        {
            "pid": ["P-heavy"] * K,
            "ward": ["A"] * K,
            "day": np.arange(K),
            "city": ["Solo"] * K,
            "x": np.full(K, 9.0),
        }
    )
    others = pd.DataFrame(
        {
            "pid": [f"P-{i:03d}" for i in range(200)],
            "ward": rng.choice(["A", "B", "C"], 200),
            "day": rng.integers(0, 40, 200),
            "city": ["Big"] * 200,
            "x": rng.uniform(0, 10, 200),
        }
    )
    frame = pd.concat([heavy, others], ignore_index=True)
    frame["ward"] = pd.Categorical(frame["ward"], categories=["A", "B", "C", "D"])
    frame["secret"] = pd.Categorical(["s"] * len(frame), categories=["s", "t"])
    return frame


def _add(v: privml.Vault) -> None:
    budget = Budget(epsilon=1e6, delta=1e-3)
    v.add_dataset("rows", _frame(), schema=SCHEMA, budget=budget, privacy_unit="row")
    v.add_dataset(
        "people", _frame(), schema=SCHEMA, budget=budget, privacy_unit="pid", max_rows_per_unit=K
    )
    v.add_purpose("stats", description="Statistics", lawful_basis="consent")
    v.add_principal("ana", roles=[])
    for name in ("rows", "people"):
        v.grant(
            principal="ana", dataset=name, purpose="stats", mode="dp_aggregate", tags=["health"]
        )


@pytest.fixture
def vault(tmp_path, key):
    with privml.Vault.create(tmp_path / "v", key=key) as v:
        _add(v)
        yield v


def _charges(v: privml.Vault, dataset: str) -> pd.DataFrame:
    return v.ledger.events(dataset)


# --- API, keys ---------------------------------------------------------------------------
def test_public_keys_answer_every_category_with_empty_groups(vault):
    dp = vault.session("ana", purpose="stats").dp
    out = dp.groupby("rows", by="ward").count(epsilon=1e4)
    assert out["ward"].tolist() == ["A", "B", "C", "D"]
    assert out.columns.tolist() == ["ward", "value", "noise_scale", "lower", "upper"]
    truth = _frame()["ward"].value_counts().reindex(["A", "B", "C", "D"]).to_numpy()
    assert np.abs(out["value"].to_numpy() - truth).max() < 0.1  # P(|Lap(1e-4)| > 0.1) ~ 0
    assert (out["lower"] < out["value"]).all() and (out["value"] < out["upper"]).all()
    assert out.attrs["keys"] == "public (declared in the schema)"
    assert out.attrs["delta"] == 0.0 and out.attrs["privacy_unit"] == "row"


def test_several_by_columns_answer_the_cartesian_product(vault):
    dp = vault.session("ana", purpose="stats").dp
    out = dp.groupby("rows", by=["ward", "day"]).sum("x", epsilon=1.0)
    assert len(out) == 4 * 40
    assert out[["ward", "day"]].drop_duplicates().shape[0] == 160
    assert out["noise_scale"].unique().tolist() == [10.0]  # max(|lo|, |hi|) / ε


def test_mean_var_std_quantile_per_group_stay_in_the_bounds(vault):
    gb = vault.session("ana", purpose="stats").dp.groupby("rows", by="ward")
    mean = gb.mean("x", epsilon=1e4)
    assert mean["value"].between(0, 10).all()
    assert mean.set_index("ward").loc["D", "value"] == pytest.approx(5.0)  # empty: the midpoint
    truth = _frame().groupby("ward", observed=True)["x"].mean()
    assert mean.set_index("ward")["value"][["A", "B", "C"]].to_numpy() == pytest.approx(
        truth[["A", "B", "C"]].to_numpy(), abs=1e-2
    )
    var, std = gb.var("x", epsilon=1e4), gb.std("x", epsilon=1e4)
    assert np.sqrt(var["value"]).to_numpy() == pytest.approx(std["value"].to_numpy(), abs=0.05)
    median = gb.quantile("x", 0.5, epsilon=1e4)
    assert median["value"].between(0, 10).all() and median["noise_scale"].isna().all()
    true_median = _frame().groupby("ward", observed=True)["x"].median()
    assert abs(median.set_index("ward").loc["B", "value"] - true_median["B"]) < 1.0


def test_where_selects_the_rows_counted(vault):
    dp = vault.session("ana", purpose="stats").dp
    out = dp.groupby("rows", by="ward", where=[("x", ">=", 5.0)]).count(epsilon=1e4)
    frame = _frame()
    truth = frame[frame["x"] >= 5.0]["ward"].value_counts().reindex(["A", "B", "C", "D"])
    assert out["value"].round().astype(int).tolist() == truth.tolist()


# --- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda dp: dp.groupby("rows", by="nope").count(epsilon=1), "AccessDenied|no column"),
        (lambda dp: dp.groupby("rows", by=[]).count(epsilon=1), "non-empty list"),
        (lambda dp: dp.groupby("rows", by=["ward", "ward"]).count(epsilon=1), "distinct"),
        (lambda dp: dp.groupby("rows", by=3).count(epsilon=1), "column name"),
        (lambda dp: dp.groupby("rows", by="ward").count(epsilon=-1), "epsilon"),
        (lambda dp: dp.groupby("rows", by="ward").count(epsilon=float("nan")), "epsilon"),
        (lambda dp: dp.groupby("rows", by="ward").count(epsilon=True), "epsilon"),
        (lambda dp: dp.groupby("rows", by="ward", keys="open").count(epsilon=1), "keys="),
        (lambda dp: dp.groupby("rows", by="city", keys="public").count(epsilon=1), "private"),
        (lambda dp: dp.groupby("rows", by="city").count(epsilon=1), "needs delta="),
        (lambda dp: dp.groupby("rows", by="ward").count(epsilon=1, delta=1e-6), "leave delta"),
        (lambda dp: dp.groupby("rows", by="ward").sum("ward", epsilon=1), "by-column"),
        (lambda dp: dp.groupby("rows", by="ward").sum("city", epsilon=1), "declared bounds"),
        (lambda dp: dp.groupby("rows", by="ward").quantile("x", 2, epsilon=1), "q must"),
        (
            lambda dp: dp.groupby("rows", by="ward", max_groups_per_unit=2).count(epsilon=1),
            "person-level",
        ),
        (lambda dp: dp.groupby("people", by="ward", max_groups_per_unit=0), "at least 1"),
        (lambda dp: dp.groupby("people", by="pid").count(epsilon=1, delta=1e-6), "privacy unit"),
    ],
)
def test_bad_requests_are_refused_before_any_charge(vault, build, match):
    vault.grant(principal="ana", dataset="people", purpose="stats", mode="dp_aggregate",
                columns=["pid"])  # fmt: skip
    dp = vault.session("ana", purpose="stats").dp
    with pytest.raises(PrivmlError, match=match):
        build(dp)
    assert len(_charges(vault, "rows")) == 0 and len(_charges(vault, "people")) == 0


def test_too_many_groups_are_refused_before_any_charge(tmp_path, key):
    schema = Schema({f"c{i}": Field.integer(bounds=(0, 99), tags="t") for i in range(3)})
    frame = pd.DataFrame({f"c{i}": [1, 2] for i in range(3)})
    with privml.Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset("d", frame, schema=schema, budget=Budget(epsilon=10), privacy_unit="row")
        v.add_purpose("stats", description="Statistics", lawful_basis="consent")
        v.add_principal("ana", roles=[])
        v.grant(principal="ana", dataset="d", purpose="stats", mode="dp_aggregate", tags=["t"])
        with pytest.raises(ConfigurationError, match="1000000 groups"):
            v.session("ana", purpose="stats").dp.groupby("d", by=["c0", "c1", "c2"]).count(
                epsilon=1
            )
        assert len(v.ledger.events("d")) == 0


def test_a_by_column_without_a_grant_is_denied_and_audited(vault):
    dp = vault.session("ana", purpose="stats").dp
    with pytest.raises(AccessDenied):
        dp.groupby("rows", by="secret").count(epsilon=1)
    with pytest.raises(AccessDenied):
        dp.groupby("rows", by="ward").mean("secret", epsilon=1)
    assert len(_charges(vault, "rows")) == 0
    denied = vault.audit.entries(principal="ana")
    assert (denied["outcome"] == "denied").sum() >= 2


# --- the ledger ----------------------------------------------------------------------------
def test_one_ledger_entry_per_query_whatever_the_number_of_groups(tmp_path, key, vaults):
    v = vaults.create(tmp_path / "v", key=key)
    try:
        _add(v)
        gb = v.session("ana", purpose="stats").dp.groupby
        gb("rows", by="ward").count(epsilon=0.5)
        gb("rows", by=["ward", "day"]).mean("x", epsilon=0.5)  # 160 groups, same charge
        charged = _charges(v, "rows")
        assert len(charged) == 2
        assert charged["kind"].tolist() == ["laplace", "laplace"]
        assert [p["epsilon"] for p in charged["params"]] == [0.5, 0.5]
        assert charged["library"].tolist() == ["opendp", "opendp"]
        assert charged["reported_epsilon"].tolist() == pytest.approx([0.5, 0.5])
        out = gb("rows", by="city").count(epsilon=1.0, delta=1e-7)
        last = _charges(v, "rows").iloc[-1]
        assert (last["kind"], last["params"]["epsilon"], last["params"]["delta"]) == (
            "generic",
            1.0,
            1e-7,
        )
        assert out.attrs["delta"] == 1e-7 and "partition selection" in out.attrs["keys"]
    finally:
        v.close()


# --- per-cell noise ------------------------------------------------------------------------
@pytest.mark.parametrize(("what", "k", "epsilon"), [("count", 1, 0.5), ("sum", 3, 2.0)])
def test_noise_per_cell_is_laplace_of_the_theoretical_scale(what, k, epsilon):
    """20,000 cells of zero data: each cell's noise ~ Laplace(k·Δ/ε). A correct mechanism fails
    the KS test with probability 1e-7 (its p-value is uniform). The empirical std's relative sd
    is sqrt(5/n)/2 = 0.8% for Laplace (4th moment 24b⁴): 5% is 6 sd, which a correct
    mechanism misses with probability ~1e-9 (normal approximation at n = 20,000)."""
    partials = Partials(20_000, bounds=(-2.0, 4.0))
    cells = _group_noise.STATISTICS[what][0](partials, epsilon, k)
    scale = k * (1.0 if what == "count" else 4.0) / epsilon
    assert cells.noise_scale == pytest.approx(np.full(20_000, scale))
    assert stats.kstest(cells.value, stats.laplace(scale=scale).cdf).pvalue > 1e-7
    assert np.std(cells.value) == pytest.approx(math.sqrt(2) * scale, rel=0.05)


def test_released_cells_carry_the_person_level_scale(vault):
    """Person-level: count noise Laplace(K/ε) per cell, the interval ±scale·ln 20."""
    out = vault.session("ana", purpose="stats").dp.groupby("people", by="ward").count(epsilon=2.0)
    assert out["noise_scale"].tolist() == [K / 2.0] * 4
    assert (out["upper"] - out["value"]).to_numpy() == pytest.approx(K / 2.0 * math.log(20))
    assert out.attrs["max_rows_per_unit"] == K


# --- person-level bounds ------------------------------------------------------------------
def test_a_person_contributes_to_at_most_max_groups_per_unit_groups(vault):
    """P-heavy has K rows on K different days; the 200 others are on days too. With ε huge the
    counts are exact after rounding; restricted to P-heavy's rows (ward A, city Solo... here
    `where` on x == 9 isolates them: nobody else has x exactly 9.0)."""
    gb = vault.session("ana", purpose="stats").dp.groupby(
        "people", by="day", where=[("x", "==", 9.0)], max_groups_per_unit=3
    )
    for _ in range(3):
        out = gb.count(epsilon=1e5)
        counts = out["value"].round().astype(int)
        assert (counts > 0).sum() <= 3 and counts.sum() <= 3
        assert out.attrs["max_groups_per_unit"] == 3
        assert out["noise_scale"].iloc[0] == pytest.approx(K / 1e5)


def test_group_bounding_keeps_at_most_g_groups_per_person():
    people = np.repeat(np.arange(5), 10)
    codes = np.tile(np.arange(10), 5)
    kept = _group_keys.bound_groups(people, codes, 2)
    for person in range(5):
        assert len(set(kept[(people == person) & (kept >= 0)])) == 2


# --- partition selection -------------------------------------------------------------------
def test_a_key_held_by_one_person_is_never_released(vault):
    """P-heavy alone holds city Solo (K rows); 200 people hold Big. Each release shows Solo with
    probability at most δ = 1e-9: 30 releases fail with probability below 3e-8. With one key per
    person the threshold is about 1 + ln(1/2δ) ≈ 21 at noise scale 1: Big (200 people) passes
    unless the noise falls 170+ scales low (probability below 1e-70)."""
    gb = vault.session("ana", purpose="stats").dp.groupby(
        "people", by="city", max_groups_per_unit=1
    )
    for _ in range(30):
        out = gb.count(epsilon=2.0, delta=1e-9)
        assert out["city"].tolist() == ["Big"]
        assert "Solo" not in repr(out) and "Solo" not in str(out.attrs)
    audit = vault.audit.entries().to_json(date_format="iso")
    assert "Solo" not in audit and "Big" not in audit


def test_the_threshold_itself_releases_a_lone_key_with_probability_at_most_delta():
    """101,000 draws on a count of 1 with δ = 1e-12: 100,000 lone keys in one map (OpenDP
    noises each key on its own) and 1,000 maps of one key. Each draw releases with
    probability of order δ, so by the union bound a false failure has probability about
    101,000 · 1.4e-12 < 1e-6."""
    th = _opendp.threshold(epsilon=1.0, delta=1e-12, keys_per_unit=1)
    assert th.delta <= 1e-12 and th.epsilon <= 1.0 + 1e-12
    alpha = math.exp(-1 / th.scale)  # a lone key reaches τ with P[Z ≥ τ-1], Z discrete Laplace
    assert alpha ** (th.threshold - 1) / (1 + alpha) <= th.delta
    assert th.select(dict.fromkeys(range(100_000), 1)) == []
    assert all(not th.select({0: 1}) for _ in range(1_000))
    assert th.select({0: th.threshold + 200}) == [0]


@pytest.mark.parametrize("below", [1, 2])
def test_a_key_is_kept_when_its_noisy_count_reaches_the_threshold(below):
    """The rule the δ above rests on, checked on the mechanism itself.

    100,000 keys at ``τ - below`` pass with probability ``α^below/(1+α)`` ("reaches",
    0.269 / 0.099 at scale 1), not ``α^(below+1)/(1+α)`` ("exceeds", 0.099 / 0.036). The
    standard deviation of the rate is under 0.0015: the tolerance of 0.01 is 6.7 of them,
    so a false failure has probability under 1e-10.
    """
    th = _opendp.threshold(epsilon=1.0, delta=1e-12, keys_per_unit=1)
    alpha = math.exp(-1 / th.scale)
    kept = len(th.select(dict.fromkeys(range(100_000), th.threshold - below))) / 100_000
    assert abs(kept - alpha**below / (1 + alpha)) < 0.01


def test_keys_chosen_privately_count_distinct_people_not_rows():
    people = np.array([0] * 40 + list(range(1, 6)))
    codes = np.array([0] * 40 + [1] * 5)
    assert _group_keys.people_per_key(people, codes) == {0: 1, 1: 5}


# --- the attacker --------------------------------------------------------------------------
def test_no_unit_value_reaches_results_errors_or_the_audit_log(vault):
    session = vault.session("ana", purpose="stats")
    results = [
        session.dp.groupby("people", by="ward").mean("x", epsilon=1.0),
        session.dp.groupby("people", by=["ward", "city"]).count(epsilon=1.0, delta=1e-8),
    ]
    with pytest.raises(PrivmlError) as refused:
        session.dp.groupby("people", by="pid").count(epsilon=1.0, delta=1e-6)
    text = " ".join(
        [*(r.to_json() + str(r.attrs) for r in results), str(refused.value),
         vault.audit.entries().to_json(date_format="iso")]
    )  # fmt: skip
    pseudonyms = vault.pseudonymize("people", "pid", ["P-heavy", "P-000"])
    for secret in ["P-heavy", "P-000", *pseudonyms]:
        assert secret not in text


def test_the_door_hands_people_as_opaque_codes_only_when_asked(vault):
    from privml.dp._release import release

    gate = vault.session("ana", purpose="stats").dp._gate
    event = privml.accounting.PrivacyEvent.laplace(epsilon=1.0)
    plain = release(gate, "people", ["x"], needed="dp_aggregate", event=event, action="t")
    coded = release(gate, "people", ["x"], needed="dp_aggregate", event=event, action="t",
                    units=True)  # fmt: skip
    assert plain.units is None
    assert coded.units.dtype.kind == "i" and len(coded.units) == len(coded.frame)
    assert len(set(coded.units.tolist())) == 201  # one code per person, no unit value


# --- partials ------------------------------------------------------------------------------
def test_partials_built_chunk_by_chunk_equal_the_whole():
    rng = np.random.default_rng(3)
    codes, values = rng.integers(-1, 7, 1000), rng.normal(5, 4, 1000)
    values[::17] = np.nan
    whole = Partials(7, bounds=(0.0, 10.0), bins=16)
    whole.update(codes, values)
    merged = Partials(7, bounds=(0.0, 10.0), bins=16)
    for start in range(0, 1000, 128):
        part = Partials(7, bounds=(0.0, 10.0), bins=16)
        part.update(codes[start : start + 128], values[start : start + 128])
        merged.merge(part)
    for name in ("count", "shifted_sum", "shifted_squares", "histogram"):
        assert getattr(merged, name) == pytest.approx(getattr(whole, name))
    assert whole.histogram.sum() == whole.count.sum()


def test_with_k_groups_per_person_the_threshold_grows_with_k(vault):
    """Default max_groups_per_unit = K: one person may hold K keys, so the threshold is about
    K·ln(K/2δ) at scale K (here above 900): 200 people do not pass it (P < 1e-9)."""
    gb = vault.session("ana", purpose="stats").dp.groupby("people", by="city")
    out = gb.count(epsilon=2.0, delta=1e-9)
    assert out.empty and out.attrs["max_groups_per_unit"] == K
    assert int(out.attrs["keys"].split("threshold ")[1].split(",")[0]) > 900


def test_public_codes_place_each_value_in_its_declared_key():
    frame = pd.DataFrame({"c": [0, 5, None, 7], "i": [3, 99, 4, -2]})
    codes = _group_keys.public_codes(frame, ["c"], [[0, 5]])
    assert codes.tolist() == [0, 1, -1, -1]  # a value outside the categories is in no group
    # an integer domain 3..5 clips as every statistic clips to declared bounds
    assert _group_keys.public_codes(frame, ["i"], [[3, 4, 5]]).tolist() == [0, 2, 1, 0]
    both = _group_keys.public_codes(frame, ["c", "i"], [[0, 5], [3, 4, 5]])
    assert both.tolist() == [0, 5, -1, -1]


def test_nothing_to_group_gives_empty_cells():
    assert _group_keys.people_per_key(np.zeros(0, np.int64), np.zeros(0, np.int64)) == {}
    frame = pd.DataFrame({"city": pd.Series([], dtype=object)})
    codes, keys = _group_keys.private_codes(frame, ["city"])
    assert len(codes) == 0 and keys.empty


def test_statistics_on_privately_selected_keys(vault):
    """ε = 1e4, one key per person: threshold ≈ 1 + ln(1/2δ)/5000, Big (200 people) passes."""
    gb = vault.session("ana", purpose="stats").dp.groupby(
        "people", by="city", max_groups_per_unit=1
    )
    median = gb.quantile("x", 0.5, epsilon=1e4, delta=1e-9)
    mean = gb.mean("x", epsilon=1e4, delta=1e-9)
    others = _frame().query("city == 'Big'")["x"]
    assert median["city"].tolist() == mean["city"].tolist() == ["Big"]
    assert abs(median["value"].iloc[0] - others.median()) < 0.5
    assert mean["value"].iloc[0] == pytest.approx(others.mean(), abs=0.05)


def test_a_count_selected_on_rows_spends_epsilon_once_and_keeps_lone_keys_out(vault):
    """``select_on="rows"``: one threshold on the rows per key (L0 1, L1 = L∞ = K), whose
    passing noisy counts are the answer. Solo (one person, K rows) passes with probability
    at most δ = 1e-9 per release (30 releases: below 3e-8); the ledger gains one (ε, δ) event."""
    session = vault.session("ana", purpose="stats")
    before = len(vault.ledger.events("people"))
    gb = session.dp.groupby("people", by="city", max_groups_per_unit=1)
    for _ in range(30):
        out = gb.count(epsilon=2.0, delta=1e-9, select_on="rows")
        assert "Solo" not in out["city"].tolist()
        assert (out["noise_scale"] == K / 2.0).all()
        assert out.attrs["mechanism"].startswith("laplace threshold on the rows")
    events = vault.ledger.events("people")
    assert len(events) == before + 30
    with pytest.raises(ConfigurationError):
        gb.count(epsilon=1.0, delta=1e-9, select_on="keys")
