"""A vault folder's Parquet writes: encoded straight to disk, hashed on the way, durable."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privml.exceptions import IntegrityError
from privml.storage import stream
from privml.storage.files import FolderStorage
from privml.storage.objects import _HASHER


def _table(rows: int) -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table({"x": rng.normal(size=rows), "s": [f"v{i % 97}" for i in range(rows)]})


def test_the_returned_hash_is_the_hash_of_the_stored_bytes(tmp_path):
    store = FolderStorage(tmp_path, unique=False)
    table = _table(300_000)  # several pieces pass through the hashing thread
    digest = store.write_parquet("data/d/1.parquet", table)
    stored = (tmp_path / "data/d/1.parquet").read_bytes()
    assert digest == hashlib.sha256(stored).hexdigest()
    assert pq.read_table(tmp_path / "data/d/1.parquet").equals(table)
    assert not list((tmp_path / "data/d").glob(".*.tmp"))


def test_row_groups_are_those_of_pyarrow_write_table(tmp_path):
    store = FolderStorage(tmp_path, unique=False)
    table = _table(2_500)
    store.write_parquet("a.parquet", table, row_group_size=1_000)
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=1_000)
    ours, theirs = pq.ParquetFile(tmp_path / "a.parquet"), pq.ParquetFile(tmp_path / "b.parquet")
    assert ours.metadata.num_row_groups == theirs.metadata.num_row_groups == 3


def test_a_changed_byte_after_writing_is_caught_on_read(tmp_path):
    store = FolderStorage(tmp_path, unique=False)
    digest = store.write_parquet("f.parquet", _table(1_000))
    path = tmp_path / "f.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match"):
        store.read_parquet("f.parquet", expected_hash=digest, convert=lambda t: t)


def test_a_failing_write_leaves_no_file(tmp_path):
    store = FolderStorage(tmp_path, unique=False)
    with pytest.raises(pa.ArrowException):
        store.write_parquet("d/f.parquet", _table(10), compression="no-such-codec")
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("threaded", [False, True])
def test_the_hashing_sink_hashes_every_piece_in_order(threaded):
    class Collect:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, piece: bytes) -> None:
            self.data += piece

    inner = Collect()
    sink = stream.HashingSink(inner, hasher=_HASHER if threaded else None)
    buffer = bytearray(1000)
    for i in range(200):  # the caller reuses its buffer: each piece must be copied first
        buffer[:] = bytes([i % 256]) * 1000
        sink.write(buffer)
    assert sink.hexdigest() == hashlib.sha256(bytes(inner.data)).hexdigest()
    assert sink.tell() == len(inner.data) == 200_000
