"""A DP statistic over a dataset larger than the memory the process may take.

The dataset is written first, with no limit, from a Parquet file generated in
chunks. Then a fresh interpreter (``past_memory_child.py``) imports and warms up
everything the release uses, reads its private writable memory ``base`` and sets
``RLIMIT_DATA`` to ``base + HEADROOM``; ``HEADROOM`` is well below what the
release's columns take decrypted (as Arrow, and again as pandas). Under that limit:

* the streamed release (``memory_limit`` below the headroom) gives a sane mean;
* the same release with the whole version loaded (``memory_limit`` above the data)
  fails with ``MemoryError`` or is killed: the limit truly is below what holding
  the data takes, so the first result is not an accident of a generous limit.

Why ``RLIMIT_DATA`` and not ``RLIMIT_AS``: since Linux 4.7 ``RLIMIT_DATA`` counts
private writable mappings (heap, anonymous ``mmap``), what holding data costs.
``RLIMIT_AS`` also counts read-only file mappings (shared libraries; a memory-mapped
encrypted Parquet file, whose size is the data's) and address space reserved but
never touched (allocator arenas), so a limit on it measures the wrong thing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privml import Budget, Field, Schema, Vault

if not sys.platform.startswith("linux"):
    pytest.skip(
        "RLIMIT_DATA counts heap and anonymous memory on Linux only", allow_module_level=True
    )

CHILD = Path(__file__).with_name("past_memory_child.py")
ROWS = {"rows": 4_500_000}
#: Bytes a row's released columns take decrypted as Arrow: x and y (8 each).
ROW_BYTES = {"rows": 16}
HEADROOM_MIB = 32  # the memory the release may add to the warmed-up interpreter
STREAMED_MIB = 8  # memory_limit of the streamed release (the smallest accepted)
WHOLE_MIB = 4096  # memory_limit that loads the version whole
SCHEMA = Schema(
    {
        "pid": Field.identifier(),
        "x": Field.numeric(bounds=(0, 100)),
        "y": Field.numeric(bounds=(0, 1)),
    }
)

# The child's environment, so that its private writable memory is what it holds:
ENV = {
    # Arrow allocates through malloc, not jemalloc/mimalloc, which reserve large regions
    # up front and keep freed pages: its allocations are then counted as they happen.
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    # glibc gives each thread its own heap arena (64 MiB each, committed as used): two
    # arenas keep what is counted close to what is live.
    "MALLOC_ARENA_MAX": "2",
    # one thread for Arrow's and the BLAS pools: each thread's stack is private writable
    # memory, and a pool started after the limit would count against it.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _parquet(path: Path, rows: int, *, people: bool, seed: int) -> Path:
    """A seeded Parquet file written 500,000 rows at a time (never held whole)."""
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, _arrow_schema(people)) as writer:
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            columns = {"x": rng.uniform(0, 100, n), "y": rng.uniform(0, 1, n)}
            if people:
                ids = rng.integers(0, max(rows // 4, 1), n).astype(str)
                columns = {"pid": np.char.add("person-", ids), **columns}
            writer.write_table(pa.table(columns, schema=_arrow_schema(people)))
    return path


def _arrow_schema(people: bool) -> pa.Schema:
    fields = [("x", pa.float64()), ("y", pa.float64())]
    return pa.schema(([("pid", pa.string())] if people else []) + fields)


@pytest.fixture(scope="module")
def vault_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("past-memory")
    key = bytes(range(32))
    vault = Vault.create(folder / "v", key=key)
    budget = Budget(epsilon=1e6)
    rows_schema = Schema({"x": SCHEMA["x"], "y": SCHEMA["y"]})
    sources = {
        "tiny": (_parquet(folder / "tiny.parquet", 5000, people=True, seed=1), SCHEMA, "pid"),
        "rows": (_parquet(folder / "rows.parquet", ROWS["rows"], people=False, seed=2), rows_schema,
                 "row"),
    }  # fmt: skip
    vault.add_purpose("stats", description="Statistics", lawful_basis="consent")
    vault.add_principal("ana", roles=[])
    for name, (path, schema, unit) in sources.items():
        vault.add_dataset(
            name, path, schema=schema, budget=budget, privacy_unit=unit,
            max_rows_per_unit=None if unit == "row" else 3,
        )  # fmt: skip
        path.unlink()
        vault.grant(
            principal="ana", dataset=name, purpose="stats", mode="dp_aggregate",
            columns=["x", "y"],
        )  # fmt: skip
    vault.close()
    return folder / "v", key


def _run(vault_folder: tuple[Path, bytes], dataset: str) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    """The child's exit code and its reports: streamed, then (unless killed) whole."""
    folder, key = vault_folder
    limits = [str(HEADROOM_MIB), str(STREAMED_MIB), str(WHOLE_MIB)]
    done = subprocess.run(
        [sys.executable, str(CHILD), str(folder), dataset, *limits],
        input=key.hex(), capture_output=True, text=True, timeout=120,
        env={**os.environ, **ENV}, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    reports = [json.loads(line) for line in done.stdout.strip().splitlines()]
    return done.returncode, reports or [{"stderr": done.stderr[-2000:]}]


@pytest.mark.parametrize("dataset", ["rows"])
def test_a_dataset_larger_than_the_memory_limit_is_aggregated(vault_folder, dataset: str) -> None:  # type: ignore[no-untyped-def]
    # the limit is well below what the release's columns take decrypted as Arrow alone
    # (and the whole-frame path holds a pandas copy besides)
    assert ROWS[dataset] * ROW_BYTES[dataset] > HEADROOM_MIB * 1024**2 * 2
    assert STREAMED_MIB < HEADROOM_MIB

    code, reports = _run(vault_folder, dataset)
    streamed = reports[0]
    assert "mean" in streamed, reports
    assert 45 < streamed["mean"] < 55  # uniform on [0, 100]: the noise at ε = 1 is tiny here
    # loaded whole, under the same limit: refused, or the process is killed
    assert code != 0 or (len(reports) == 2 and reports[1].get("error") == "MemoryError"), reports
