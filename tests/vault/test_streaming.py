"""Dataset versions past memory: written from a Parquet path in chunks, released in chunks.

The stream must give what the whole-frame path gives (same validation, same rows, same
per-person bounding for the same release), detect a modified file before anything is
released, and keep person-level spill files encrypted and short-lived.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from privml import Budget, Field, Schema, Vault
from privml.accounting.events import PrivacyEvent
from privml.dp._bounding import bound_rows
from privml.exceptions import IntegrityError, SchemaError
from privml.vault import _memory, _stream

MARKER = "MARKER-7f3a"
SCHEMA = Schema(
    {
        "pid": Field.identifier(),
        "site": Field.categorical(categories=["A", "B", MARKER], sensitive=False),
        "x": Field.numeric(bounds=(0, 100), tags="health"),
    }
)
ROWS = 6000
PIDS = [f"P-{i:04d}".encode() for i in range(900)]


def _frame(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pid": [f"P-{i:04d}" for i in rng.integers(0, 900, rows)],
            "site": rng.choice(["A", "B", MARKER], rows),
            "x": np.round(rng.uniform(0, 100, rows), 3),
        }
    )


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 500 rows and at most 5 spill partitions, so small data crosses chunks."""
    monkeypatch.setattr(_memory, "MIN_ROWS", 100)
    monkeypatch.setattr(_memory, "MAX_ROWS", 500)
    monkeypatch.setattr(_stream, "MAX_PARTITIONS", 5)


@pytest.fixture
def vault(tmp_path: Path, key: bytes, vaults, small_chunks) -> Vault:  # type: ignore[no-untyped-def]
    v = vaults.create(tmp_path / "v", key=key)
    path = tmp_path / "people.parquet"
    _frame().to_parquet(path)
    v.add_dataset(
        "people", path, schema=SCHEMA, budget=Budget(epsilon=1e6),
        privacy_unit="pid", max_rows_per_unit=3,
    )  # fmt: skip
    v.add_dataset("rows", _frame(), schema=SCHEMA, budget=Budget(epsilon=1e6), privacy_unit="row")
    v.add_purpose("stats", description="Statistics", lawful_basis="consent")
    v.add_principal("ana", roles=[])
    for name in ("people", "rows"):
        v.grant(
            principal="ana", dataset=name, purpose="stats", mode="dp_aggregate",
            columns=["x", "site"], row_filter=[("site", "!=", "B")],
        )  # fmt: skip
    yield v
    v.close()


def _door(vault: Vault):  # type: ignore[no-untyped-def]
    return vault.session("ana", purpose="stats")._door


def _release(vault: Vault, dataset: str, *, stream: bool, where=None):  # type: ignore[no-untyped-def]
    door = _door(vault)
    version = door.latest_version(dataset)
    auth = door.authorize(
        dataset, columns=["x"], needed="dp_aggregate", action="dp.sum",
        where=where, where_needs="dp_aggregate", version=version,
    )  # fmt: skip
    event = PrivacyEvent.laplace(epsilon=1.0)
    if not stream:
        return door.release(auth, event=event, action="dp.sum", version=version).frame
    vault._store.memory_limit = 1  # every version counts as large: the streamed path
    streamed = door.release_stream(auth, event=event, action="dp.sum", version=version)
    assert streamed.streamed
    chunks = list(streamed.chunks)
    assert len(chunks) > 1
    return pd.concat(chunks, ignore_index=True)


# --- writing from a path -------------------------------------------------------------------------
def test_a_parquet_path_is_stored_chunk_by_chunk_as_the_frame_would_be(vault: Vault) -> None:
    people = vault._store.load("people", list(SCHEMA.names), None)[0]
    rows = vault._store.load("rows", list(SCHEMA.names), None)[0]
    # pseudonyms differ per dataset (per-dataset keys); the people behind them do not
    pd.testing.assert_frame_equal(people.drop(columns="pid"), rows.drop(columns="pid"))
    assert (pd.factorize(people["pid"])[0] == pd.factorize(rows["pid"])[0]).all()
    assert vault.dataset("people").latest.rows == ROWS
    first = vault.audit.entries(action="dataset.add").to_dict("records")[0]
    assert first["details"]["rows"] == ROWS


def test_a_bad_value_in_a_late_chunk_stores_nothing(vault: Vault, tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[4321, "x"] = 250.0
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    before = sorted(p for p in (tmp_path / "v" / "data").rglob("*") if p.is_file())
    with pytest.raises(SchemaError, match=r"rows 4321\b") as caught:
        vault.add_version("people", path)
    assert "250" not in str(caught.value)
    assert vault.dataset("people").latest.version == 1
    assert sorted(p for p in (tmp_path / "v" / "data").rglob("*") if p.is_file()) == before
    last = vault.audit.entries().to_dict("records")[-1]
    assert (last["action"], last["outcome"]) == ("dataset.add_version", "rejected")


def test_clipping_a_streamed_file_counts_every_chunk(vault: Vault, tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[[10, 2500, 5999], "x"] = 250.0
    path = tmp_path / "clip.parquet"
    frame.to_parquet(path)
    vault.add_version("people", path, on_violation="clip")
    entry = vault.audit.entries(action="dataset.add_version").to_dict("records")[-1]
    assert entry["details"]["clipped"] == {"x": 3}


# --- reading -------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", [None, [("x", ">=", 50)]])
def test_a_streamed_row_level_release_holds_the_in_memory_rows(vault: Vault, where) -> None:  # type: ignore[no-untyped-def]
    whole = _release(vault, "rows", stream=False, where=where)
    streamed = _release(vault, "rows", stream=True, where=where)
    assert list(streamed.columns) == ["x"]  # never the unit, never the filter's column
    assert sorted(streamed["x"]) == sorted(whole["x"])


def test_a_streamed_person_level_release_bounds_every_person(vault: Vault) -> None:
    frame = _frame()
    admitted = frame[frame["site"] != "B"]
    streamed = _release(vault, "people", stream=True)
    expected = admitted.groupby("pid").size().clip(upper=3).sum()
    assert len(streamed) == expected
    assert set(streamed["x"]) <= set(admitted["x"])


def test_streamed_bounding_keeps_exactly_the_in_memory_rows() -> None:
    frame = _frame()
    key = bytes(range(32))
    units = frame["pid"]
    whole = set(bound_rows(units, 3, key).tolist())
    framed = frame.assign(row=np.arange(len(frame)))
    chunks = (framed.iloc[i : i + 700].reset_index(drop=True) for i in range(0, len(frame), 700))
    schema = Schema({**SCHEMA.fields, "row": Field.integer(bounds=(0, len(frame)))})
    out = _stream.bounded(
        chunks, unit="pid", columns=["row"], schema=schema, max_rows=3, key=key, partitions=4
    )
    kept = pd.concat(list(out))["row"].tolist()
    assert len(kept) == len(whole)
    assert set(kept) == whole


def _spilling(partitions: int = 4):  # type: ignore[no-untyped-def]
    frame = _frame()
    chunks = (frame.iloc[i : i + 1000].reset_index(drop=True) for i in range(0, len(frame), 1000))
    seen: list[Path] = []

    def inspect(paths: list[Path]) -> None:
        assert paths
        for path in paths:
            data = path.read_bytes()
            assert MARKER.encode() not in data
            # each whole person id (6 bytes): a chance match in random ciphertext has
            # probability about 900 ids x len(data) x 2**-48 (below 1e-6 per run)
            assert not any(pid in data for pid in PIDS)
            assert oct(path.stat().st_mode & 0o777) == "0o600"
        seen.extend(paths)

    out = _stream.bounded(
        chunks, unit="pid", columns=["site", "x"], schema=SCHEMA, max_rows=3,
        key=bytes(32), partitions=partitions, spilled=inspect,
    )  # fmt: skip
    return out, seen


def test_spill_files_are_encrypted_and_removed_after(vault: Vault) -> None:
    out, seen = _spilling()
    chunks = list(out)
    assert sum(map(len, chunks)) > 0 and seen
    assert not any(p.exists() for p in seen) and not seen[0].parent.exists()


def test_spill_files_are_removed_when_the_consumer_stops_or_raises() -> None:
    out, seen = _spilling()
    next(out)
    out.close()
    assert seen and not any(p.exists() for p in seen)

    out, seen = _spilling()
    with pytest.raises(RuntimeError):
        for _ in out:
            raise RuntimeError("the consumer failed")
    del out
    assert seen and not any(p.exists() for p in seen)


def test_a_spill_file_edited_between_passes_is_refused() -> None:
    frame = _frame()

    def edit(paths: list[Path]) -> None:
        data = bytearray(paths[0].read_bytes())
        data[40] ^= 1
        paths[0].write_bytes(bytes(data))

    out = _stream.bounded(
        iter([frame]), unit="pid", columns=["x"], schema=SCHEMA, max_rows=3,
        key=bytes(32), partitions=2, spilled=edit,
    )  # fmt: skip
    with pytest.raises(IntegrityError, match="spill file"):
        list(out)


# --- tampering -----------------------------------------------------------------------------------
def _file(vault: Vault, name: str) -> Path:
    return next((vault.path / "data" / name).glob("*.parquet"))


def _offset(vault: Vault, name: str, column: str, group: int = 0) -> int:
    meta = pq.ParquetFile(
        _file(vault, name), decryption_properties=vault._store._crypto.decryption()
    ).metadata
    index = meta.schema.names.index(column)
    chunk = meta.row_group(group).column(index)
    return int(chunk.data_page_offset) + int(chunk.total_compressed_size) // 2


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(at)
        byte = handle.read(1)
        handle.seek(at)
        handle.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("column", ["site", "x"])  # plaintext, then encrypted
def test_a_flipped_byte_is_detected_before_any_chunk(vault: Vault, column: str) -> None:
    _flip(_file(vault, "people"), _offset(vault, "people", column))
    vault._store.memory_limit = 1
    chunks, _, _ = vault._store.stream("people", ["site", "x"], None)
    with pytest.raises(IntegrityError, match="modified or replaced"):
        next(chunks)


@pytest.mark.parametrize("column", ["site", "x"])
def test_a_byte_flipped_during_the_read_is_detected_before_the_end(
    vault: Vault, column: str
) -> None:
    vault._store.memory_limit = 1
    chunks, _, _ = vault._store.stream("people", ["site", "x"], None)
    next(chunks)
    _flip(_file(vault, "people"), _offset(vault, "people", column, group=5))
    with pytest.raises(IntegrityError):
        for _ in chunks:
            pass


def test_one_storage_round_trip_on_the_backend(vault: Vault) -> None:
    streamed = _release(vault, "rows", stream=True)
    assert len(streamed) == int((_frame()["site"] != "B").sum())
    assert os.listdir(vault.path / "data" / "rows")
