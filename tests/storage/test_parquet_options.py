"""How dataset files are encoded: no statistics, floats uncompressed, older files still read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privml import Budget, Field, Schema, Vault
from privml.storage import parquet_options
from privml.storage.parquet_options import encode, leaf_paths, mostly_distinct, write_options

SCHEMA = Schema(
    {
        "age": Field.integer(bounds=(0, 120)),
        "income": Field.numeric(bounds=(0, 1e6)),
        "city": Field.text(sensitive=False),
        "score": Field.numeric(bounds=(-10, 10), sensitive=False),
    }
)


def _frame(rows: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "age": rng.integers(0, 121, rows),
            "income": rng.uniform(0, 1e6, rows),
            "city": pd.Series([f"city-{i % 7}" for i in range(rows)], dtype="str"),
            "score": rng.normal(0, 1, rows).clip(-10, 10),
        }
    )


def _metadata(vault: Vault, name: str) -> pq.FileMetaData:
    path = next((vault.path / "data" / name).glob("*.parquet"))
    return pq.ParquetFile(path, decryption_properties=vault._store._crypto.decryption()).metadata


def _chunks(meta: pq.FileMetaData) -> dict[str, Any]:
    group = meta.row_group(0)
    return {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}


def test_vault_files_hold_no_statistics_and_uncompressed_floats(tmp_path: Path, key: bytes) -> None:
    with Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset("d", _frame(), schema=SCHEMA, budget=Budget(epsilon=1))
        chunks = _chunks(_metadata(vault, "d"))
    assert not any(c.is_stats_set for c in chunks.values())
    assert chunks["income"].compression == "UNCOMPRESSED"
    assert chunks["score"].compression == "UNCOMPRESSED"
    assert chunks["age"].compression == "SNAPPY"
    assert chunks["city"].compression == "SNAPPY"


def test_files_written_with_statistics_still_read(
    tmp_path: Path, key: bytes, allow: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = _frame()
    with Vault.create(tmp_path / "v", key=key) as vault:
        # a version written the way earlier releases wrote them: statistics, Snappy everywhere
        monkeypatch.setattr(parquet_options, "write_options", lambda _table: {})
        vault.add_dataset("old", frame, schema=SCHEMA, budget=Budget(epsilon=1))
        monkeypatch.undo()
        chunks = _chunks(_metadata(vault, "old"))
        assert all(c.is_stats_set for c in chunks.values())
        assert chunks["income"].compression == "SNAPPY"
        vault.add_version("old", frame.iloc[:100])
        allow(vault, "old")
        session = vault.session("analyst", purpose="research")
        first = session.read("old", version=1)
        second = session.read("old")
    pd.testing.assert_frame_equal(first, frame, check_dtype=False)
    pd.testing.assert_frame_equal(second, frame.iloc[:100], check_dtype=False)


@pytest.mark.parametrize(
    "kind",
    [
        pa.int64(),
        pa.float32(),
        pa.large_string(),
        pa.dictionary(pa.int8(), pa.large_string()),
        pa.timestamp("us"),
        pa.list_(pa.float32()),
        pa.large_list(pa.int32()),
        pa.list_(pa.float64(), 4),
        pa.list_(pa.list_(pa.float64())),
        pa.struct([("x", pa.float64()), ("y", pa.list_(pa.int16()))]),
    ],
)
def test_leaf_paths_are_the_parquet_columns(kind: pa.DataType) -> None:
    schema = pa.schema([("c", kind), ("f", pa.float64())])
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    written = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    expected = [written.column(i).path for i in range(len(written))]
    leaves = leaf_paths(schema)
    assert leaves is not None
    assert [path for path, _ in leaves] == expected
    floats = [written.column(i).physical_type in ("FLOAT", "DOUBLE") for i in range(len(written))]
    assert [floating for _, floating in leaves] == floats


def test_unknown_nested_types_compress_every_column() -> None:
    schema = pa.schema([("m", pa.map_(pa.string(), pa.float64())), ("f", pa.float64())])
    assert leaf_paths(schema) is None
    table = pa.table({"m": [[("a", 1.0)]], "f": [0.5]}, schema=schema)
    assert write_options(table) == {"write_statistics": False, "compression": "SNAPPY"}


def test_only_floats_that_are_mostly_distinct_skip_the_dictionary(
    tmp_path: Path, key: bytes
) -> None:
    frame = _frame(20_000)
    frame["score"] = np.round(frame["score"], 1)  # a few hundred values, repeated
    with Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1))
        chunks = _chunks(_metadata(vault, "d"))
    assert not chunks["income"].has_dictionary_page  # uniform draws: all distinct
    assert chunks["score"].has_dictionary_page
    assert chunks["age"].has_dictionary_page and chunks["city"].has_dictionary_page


@pytest.mark.parametrize(
    ("values", "distinct"),
    [
        ([0.5, 1.5, 2.5, 3.5], True),
        ([0.5, 0.5, 0.5, 1.5], False),
        ([0.5, None, None, 1.5], True),
        ([None, None], False),
        ([], False),
    ],
)
def test_mostly_distinct_counts_the_values_present(values: list, distinct: bool) -> None:
    assert mostly_distinct(pa.array(values, type=pa.float64())) is distinct


def test_mostly_distinct_looks_at_the_first_values_only() -> None:
    column = pa.chunked_array([[0.0] * 4096, np.arange(10_000, dtype="float64")])
    assert not mostly_distinct(column)
    assert mostly_distinct(column.slice(4096))


def _growing(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_options(table))
    return bytes(sink.getvalue())


def test_encode_gives_the_bytes_a_growing_stream_gives() -> None:
    table = pa.Table.from_pandas(_frame(5000), preserve_index=False)
    assert bytes(encode(table)) == _growing(table)


def test_a_file_larger_than_its_room_is_encoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    table = pa.Table.from_pandas(_frame(5000), preserve_index=False)
    monkeypatch.setattr(parquet_options, "ROOM", 0)
    monkeypatch.setattr(parquet_options, "SLACK", 64)
    assert bytes(encode(table)) == _growing(table)


def test_a_failure_other_than_room_is_raised() -> None:
    table = pa.Table.from_pandas(_frame(10), preserve_index=False)
    with pytest.raises((ValueError, pa.ArrowException)):
        encode(table, compression="no-such-codec")


def test_room_that_cannot_be_had_falls_back_to_a_growing_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = pa.Table.from_pandas(_frame(100), preserve_index=False)
    monkeypatch.setattr(parquet_options, "SLACK", 1 << 62)  # more than any machine has
    assert bytes(encode(table)) == _growing(table)
