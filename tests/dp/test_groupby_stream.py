"""The DP group-by past memory: chunks with opaque person codes, exact partials, bounded keys.

Settings are made tiny (chunks of at most 500 rows, at most 5 spill partitions, every version
counted as larger than memory) so small data crosses chunks and partitions. Data is seeded;
noise comes from the OS CSPRNG and is made negligible with a huge ε (each bound stated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import privml
from privml import Budget, Field, Schema
from privml.accounting.events import PrivacyEvent
from privml.dp import _group_keys, _groupby
from privml.dp._bounding import bound_rows
from privml.dp._group_fold import GroupFold
from privml.dp._release import release_stream
from privml.exceptions import ConfigurationError
from privml.vault import _memory, _stream

K = 4  # the person-level bound: nobody has more rows, so bounding drops none
PEOPLE = 600
SCHEMA = Schema(
    {
        "pid": Field.identifier(),
        "ward": Field.categorical(categories=["A", "B", "C", "D"], tags="health"),
        "city": Field.text(tags="health"),
        "who": Field.integer(bounds=(0, PEOPLE), tags="health"),
        "x": Field.numeric(bounds=(0.0, 10.0), tags="health"),
    }
)


def _frame(seed: int = 11) -> pd.DataFrame:
    """PEOPLE people with 1..K rows each, shuffled; ``who`` repeats the person (a test handle)."""
    rng = np.random.default_rng(seed)
    who = np.repeat(np.arange(PEOPLE), rng.integers(1, K + 1, PEOPLE))
    who = rng.permutation(who)
    return pd.DataFrame(
        {
            "pid": [f"P-{i:04d}" for i in who],
            "ward": pd.Categorical(rng.choice(["A", "B", "C"], len(who)), ["A", "B", "C", "D"]),
            "city": rng.choice(["Big", "Mid", "Small"], len(who), p=[0.6, 0.3, 0.1]),
            "who": who,
            "x": np.round(rng.uniform(0, 10, len(who)), 3),
        }
    )


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_memory, "MIN_ROWS", 100)
    monkeypatch.setattr(_memory, "MAX_ROWS", 500)
    monkeypatch.setattr(_stream, "MAX_PARTITIONS", 5)


@pytest.fixture
def vault(tmp_path: Path, key: bytes, small_chunks: None):  # type: ignore[no-untyped-def]
    with privml.Vault.create(tmp_path / "v", key=key) as v:
        path = tmp_path / "people.parquet"
        _frame().to_parquet(path)
        budget = Budget(epsilon=1e6, delta=1e-3)
        v.add_dataset(
            "people", path, schema=SCHEMA, budget=budget, privacy_unit="pid", max_rows_per_unit=K
        )
        v.add_dataset("rows", _frame(), schema=SCHEMA, budget=budget, privacy_unit="row")
        v.add_purpose("stats", description="Statistics", lawful_basis="consent")
        v.add_principal("ana", roles=[])
        for name in ("people", "rows"):
            v.grant(
                principal="ana", dataset=name, purpose="stats", mode="dp_aggregate", tags=["health"]
            )
        v._store.memory_limit = 1  # every version counts as larger than memory: streamed
        yield v


def _coded(vault: privml.Vault, dataset: str) -> list[tuple[pd.DataFrame, np.ndarray]]:
    gate = vault.session("ana", purpose="stats").dp._gate
    streamed = release_stream(
        gate, dataset, ["who", "x"], needed="dp_aggregate",
        event=PrivacyEvent.laplace(epsilon=1.0), action="t", units=True,
    )  # fmt: skip
    assert streamed.streamed and streamed.coded is not None
    return list(streamed.coded)


# --- the streamed release's person codes ---------------------------------------------------
def test_every_person_is_whole_in_one_chunk_with_one_code(vault):
    chunks = _coded(vault, "people")
    assert len(chunks) > 1
    seen: dict[int, int] = {}
    for number, (frame, people) in enumerate(chunks):
        assert people.dtype == np.int64 and len(people) == len(frame)
        pairs = frame.assign(code=people)[["who", "code"]].drop_duplicates()
        # within a chunk one code per person and one person per code
        assert pairs["who"].is_unique and pairs["code"].is_unique
        for who in pairs["who"]:
            assert seen.setdefault(int(who), number) == number  # never in a second chunk
    assert len(seen) == PEOPLE


def test_a_row_level_stream_gives_each_row_its_own_code(vault):
    chunks = _coded(vault, "rows")
    assert len(chunks) > 1
    codes = np.concatenate([people for _, people in chunks])
    assert len(codes) == len(_frame()) and len(np.unique(codes)) == len(codes)


def test_codes_only_never_a_unit_value(vault):
    chunks = _coded(vault, "people")
    pseudonyms = set(vault.pseudonymize("people", "pid", [f"P-{i:04d}" for i in range(PEOPLE)]))
    for frame, people in chunks:
        assert list(frame.columns) == ["who", "x"]  # never the unit column
        assert people.dtype.kind == "i"
        assert not pseudonyms & {str(c) for c in people.tolist()}
    # codes are keyed per release: the same person gets another code in the next release
    first = {int(w): int(c) for f, p in chunks for w, c in zip(f["who"], p, strict=True)}
    later = _coded(vault, "people")
    again = {int(w): int(c) for f, p in later for w, c in zip(f["who"], p, strict=True)}
    assert sum(first[w] == again[w] for w in first) == 0


def test_chunks_of_one_partition_each_hold_their_people_whole():
    """_stream.bounded yields one chunk per partition and the codes of exactly that chunk."""
    frame = _frame()
    chunks = (frame.iloc[i : i + 300].reset_index(drop=True) for i in range(0, len(frame), 300))
    codes: list[np.ndarray] = []
    out = list(
        _stream.bounded(
            chunks, unit="pid", columns=["who"], schema=SCHEMA, max_rows=K,
            key=bytes(32), partitions=4, codes=codes,
        )
    )  # fmt: skip
    assert 1 < len(out) <= 4 and len(codes) == len(out)  # one code array per chunk, its own
    assert [len(c) for c in codes] == [len(chunk) for chunk in out]


# --- exactly the whole frame's partials ----------------------------------------------------
def _fold(frame_chunks, *, private: bool, max_groups: int | None, request_id: str) -> GroupFold:  # type: ignore[no-untyped-def]
    fold = GroupFold(
        ["ward", "city"] if private else ["ward"],
        domains=None if private else [["A", "B", "C", "D"]],
        value="x", bounds=(0.0, 10.0), bins=16, max_groups=max_groups,
        people=private, key=_group_keys.choice_key(request_id),
    )  # fmt: skip
    for chunk, people in frame_chunks:
        fold.update(chunk, people)
    return fold


def _by_key(fold: GroupFold, by: list[str]) -> pd.DataFrame:
    keys = fold._book.keys if fold._book is not None else fold._public
    p = fold.partials
    out = keys.astype(object).assign(
        n=p.count, s=p.shifted_sum, q=p.shifted_squares, h=[tuple(r) for r in p.histogram]
    )
    if fold.people_per_key is not None:
        out["people"] = fold.people_per_key
    return out.sort_values(by, ignore_index=True)


@pytest.mark.parametrize("private", [False, True])
@pytest.mark.parametrize("max_groups", [None, 1, 2])
def test_streamed_partials_equal_the_whole_frames_person_level(private, max_groups):
    frame, key, k = _frame(), bytes(range(32)), 2  # k = 2 < K: bounding drops rows
    by = ["ward", "city"] if private else ["ward"]
    kept = bound_rows(frame["pid"], k, key)
    whole = frame.iloc[kept].reset_index(drop=True)
    people = _stream.person_codes(frame["pid"].to_numpy(dtype=object)[kept], key)
    a = _fold([(whole, people)], private=private, max_groups=max_groups, request_id="r-1")

    chunks = (frame.iloc[i : i + 400].reset_index(drop=True) for i in range(0, len(frame), 400))
    codes: list[np.ndarray] = []
    out = _stream.bounded(
        chunks, unit="pid", columns=["ward", "city", "x"], schema=SCHEMA, max_rows=k,
        key=key, partitions=5, codes=codes,
    )  # fmt: skip
    pairs = [(chunk, codes.pop()) for chunk in out]
    assert len(pairs) > 1
    b = _fold(pairs, private=private, max_groups=max_groups, request_id="r-1")
    left, right = _by_key(a, by), _by_key(b, by)
    pd.testing.assert_frame_equal(left.drop(columns=["s", "q"]), right.drop(columns=["s", "q"]))
    np.testing.assert_allclose(left[["s", "q"]], right[["s", "q"]], rtol=1e-12, atol=1e-9)
    if max_groups == 1:  # the group bound bit: fewer rows than the person bound alone
        assert left["n"].sum() < len(whole)


def test_streamed_partials_equal_the_whole_frames_row_level():
    frame = _frame()
    whole = [(frame, np.arange(len(frame)))]
    chunks = [
        (frame.iloc[i : i + 333].reset_index(drop=True), np.arange(i, min(i + 333, len(frame))))
        for i in range(0, len(frame), 333)
    ]
    for private in (False, True):
        by = ["ward", "city"] if private else ["ward"]
        a = _fold(whole, private=private, max_groups=None, request_id="r")
        b = _fold(chunks, private=private, max_groups=None, request_id="r")
        left, right = _by_key(a, by), _by_key(b, by)
        pd.testing.assert_frame_equal(left.drop(columns=["s", "q"]), right.drop(columns=["s", "q"]))
        np.testing.assert_allclose(left[["s", "q"]], right[["s", "q"]], rtol=1e-12, atol=1e-9)


# --- the query, streamed -------------------------------------------------------------------
def _exact(column: str) -> pd.DataFrame:
    frame = _frame()
    return frame.groupby(column, observed=False)["x"].agg(["size", "mean"])


@pytest.mark.parametrize("dataset", ["people", "rows"])
def test_streamed_count_and_mean_with_public_keys(vault, dataset):
    """ε = 1e5: count noise scale K/1e5, so rounding gives the exact counts (P < 1e-100)."""
    gb = vault.session("ana", purpose="stats").dp.groupby(dataset, by="ward")
    counts = gb.count(epsilon=1e5)
    means = gb.mean("x", epsilon=1e5)
    exact = _exact("ward")
    assert counts["ward"].tolist() == ["A", "B", "C", "D"]
    assert counts["value"].round().astype(int).tolist() == exact["size"].tolist()
    assert means["value"].iloc[:3].to_numpy() == pytest.approx(exact["mean"].iloc[:3], abs=1e-3)


def test_streamed_partition_selection_on_person_level_data(vault):
    """Keys from the data: each person holds ≤ K cities, ε = 1e5 makes the threshold about
    K + K·ln(K/2δ)/5e4 ≈ K + 0.002; every city (held by 50+ people) passes, counts are exact."""
    gb = vault.session("ana", purpose="stats").dp.groupby("people", by="city")
    counts = gb.count(epsilon=1e5, delta=1e-9)
    exact = _exact("city")
    assert counts["city"].tolist() == ["Big", "Mid", "Small"]
    assert counts["value"].round().astype(int).tolist() == exact["size"].tolist()
    means = gb.mean("x", epsilon=1e5, delta=1e-9)
    assert means["value"].to_numpy() == pytest.approx(exact["mean"].to_numpy(), abs=1e-2)


def test_too_many_candidate_keys_stop_the_query_after_its_charge(vault, monkeypatch):
    """``who`` has 600 distinct keys: past a limit of 50 the query stops, charged, with no value
    in the error; a quantile holds a histogram per key and has its own, smaller limit."""
    monkeypatch.setattr(_group_keys, "MAX_CANDIDATE_KEYS", 50)
    session = vault.session("ana", purpose="stats")
    with pytest.raises(ConfigurationError, match="charge stays spent") as refused:
        session.dp.groupby("people", by="who", keys="private").count(epsilon=1.0, delta=1e-6)
    assert "P-0" not in str(refused.value) and "more than 50 distinct keys" in str(refused.value)
    charged = vault.ledger.events("people")
    assert len(charged) == 1 and charged["params"].iloc[0]["epsilon"] == 1.0
    monkeypatch.setattr(_group_keys, "MAX_CANDIDATE_KEYS", 4_000_000)
    assert _groupby._candidate_limit("quantile") < _groupby._candidate_limit("count")
