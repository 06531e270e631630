"""A release read in bounded memory: filtered chunks, bounded per person through encrypted spill.

:meth:`Door.release_stream <privml.vault._door.Door.release_stream>` hands a
mechanism a version's authorized columns as an iterator of pandas chunks, each
at most :attr:`~privml.Vault.memory_limit`-sized, never the whole version:

1. the version is read batch by batch (:meth:`DatasetStore.stream`, hashed before
   the first batch and after the last), and each batch gets the same row
   filters and conditions as :func:`~privml.vault._fetch.fetch`
   (:func:`~privml.vault._fetch.admitted`);
2. on a row-level dataset the filtered chunks go out as they are;
3. on a person-level dataset, keeping at most ``k`` rows per person needs
   per-person state, which grows with the number of people. It is bounded by
   **external partitioning**: pass 1 ranks every admitted row exactly as the
   in-memory path does (:func:`~privml.dp._bounding.keyed_ranks` of its position
   among the admitted rows, under the release's bounding key), drops rows that are
   not among their person's ``k`` lowest-ranked in their chunk (they cannot be
   among the ``k`` lowest overall), and writes the rest with their person,
   rank and position into ``P`` encrypted spill files chosen by a keyed hash of
   the person (:mod:`privml.vault._spill`), so all of one person's rows land in
   one partition; pass 2 reads one partition at a time, keeps each person's
   ``k`` lowest ranks (ties by position, as :func:`~privml.dp._bounding.bound_rows`),
   and yields the kept rows. The rows kept are exactly the in-memory path's;
   only their order differs (partition by partition). ``P`` is chosen so one
   partition fits the memory setting; the spill files are deleted when the
   iterator ends, fails or is closed.

The person's values never leave this module: the chunks hold the requested
columns only. A mechanism that bounds or counts people (a group-by) may ask for
each row's person as an opaque code (:func:`person_codes`: a keyed hash, never a
unit value); pass 2 yields **one chunk per partition**, so all kept rows of one
person are in one chunk and per-person work can be done chunk by chunk.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..policy._model import Grant, Predicate
from ..schema import Schema
from . import _memory
from ._fetch import admitted
from ._spill import Spill

__all__ = [
    "MAX_PARTITIONS",
    "bounded",
    "filtered",
    "lowest_ranks",
    "partitions_for",
    "person_codes",
]

#: The most spill partitions of one release (files written; each holds whole persons).
MAX_PARTITIONS = 4096

_UNIT, _RANK, _POS = "__privml_unit", "__privml_rank", "__privml_position"


def filtered(
    chunks: Iterator[pd.DataFrame],
    schema: Schema,
    filters: Sequence[Sequence[Grant]],
    conditions: Sequence[Predicate],
) -> Iterator[pd.DataFrame]:
    """Each chunk's rows that the grants' row filters and the conditions admit."""
    for chunk in chunks:
        keep = admitted(chunk, schema, filters, conditions)
        yield chunk if keep.all() else chunk.loc[keep].reset_index(drop=True)


def person_codes(units: np.ndarray, key: bytes) -> np.ndarray:
    """Each row's person as an opaque 64-bit code: SipHash of the unit value under a hash key
    derived from the release's bounding ``key``, so the same person has the same code in every
    chunk of one release and unrelated codes in another release. No unit value is recoverable
    without the key; two people sharing a code (probability about n²/2⁶⁵) are bounded as one,
    which only lowers what they contribute.

    Examples
    --------
    >>> a = person_codes(np.array(["p", "q", "p"], dtype=object), bytes(32))
    >>> a.dtype, bool(a[0] == a[2]), bool(a[0] == a[1])
    (dtype('int64'), True, False)
    """
    digest = hashlib.sha256(b"privml/person-codes/v1\x00" + key).digest()
    hash_key = base64.b64encode(digest[:12]).decode("ascii")  # 16 characters, 96 bits
    values = np.asarray(units, dtype=object)
    hashed: np.ndarray = pd.util.hash_array(values, hash_key=hash_key, categorize=False)
    return hashed.view(np.int64)


def lowest_ranks(
    units: np.ndarray, ranks: np.ndarray, positions: np.ndarray, max_rows: int
) -> np.ndarray:
    """Indices of the rows among each unit's ``max_rows`` lowest (rank, position), in order.

    Examples
    --------
    >>> units = np.array(["a", "a", "a", "b"], dtype=object)
    >>> lowest_ranks(units, np.array([5, 1, 3, 9], dtype="u8"), np.arange(4), 2)
    array([1, 2, 3])
    """
    codes, _ = pd.factorize(units)
    order = np.lexsort((positions, ranks, codes))
    sorted_codes = codes[order]
    rows = len(codes)
    if not rows:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, rows]).astype(int))
    within = np.arange(rows) - first
    return np.sort(order[within < max_rows])


def partitions_for(rows: int, row_bytes: float, memory: int) -> int:
    """How many spill partitions so that one, decrypted and bounded, fits ``memory``.

    Examples
    --------
    >>> partitions_for(10_000_000, 40, 256 * 1024**2)
    20
    """
    per_partition = memory / _memory.COPIES
    return max(1, min(MAX_PARTITIONS, math.ceil(rows * (row_bytes + 24) / per_partition)))


def bounded(
    chunks: Iterator[pd.DataFrame],
    *,
    unit: str,
    columns: Sequence[str],
    schema: Schema,
    max_rows: int,
    key: bytes,
    partitions: int,
    spilled: Callable[[list[Path]], None] | None = None,
    codes: list[np.ndarray] | None = None,
) -> Iterator[pd.DataFrame]:
    """At most ``max_rows`` rows per ``unit`` of the admitted ``chunks``, keyed by ``key``.

    The same rows as :func:`~privml.dp._bounding.bound_rows` over the whole admitted
    frame with the same key (see the module docstring); ``spilled`` (tests) sees the
    spill files between the two passes. One chunk per partition: every kept row of a
    person is in the same chunk. With ``codes``, each chunk's :func:`person_codes` are
    appended to it just before the chunk is yielded.
    """
    from ..dp._bounding import keyed_ranks  # here: privml.dp imports scikit-learn

    spill = Spill(partitions)
    hash_key = secrets.token_hex(8)  # which partition a person lands in: unknown outside
    try:
        offset = 0
        for chunk in chunks:
            rows = len(chunk)
            units = chunk[unit].to_numpy(dtype=object)
            ranks = keyed_ranks(key, rows, start=offset)
            positions = np.arange(offset, offset + rows, dtype=np.int64)
            offset += rows
            kept = lowest_ranks(units, ranks, positions, max_rows)
            table = pa.Table.from_pandas(
                chunk.iloc[kept][list(columns)], preserve_index=False
            ).append_column(_UNIT, pa.array(units[kept], type=pa.string()))
            table = table.append_column(_RANK, pa.array(ranks[kept])).append_column(
                _POS, pa.array(positions[kept])
            )
            where = pd.util.hash_array(units[kept], hash_key=hash_key) % np.uint64(partitions)
            for partition in np.unique(where):
                spill.write(int(partition), table.filter(pa.array(where == partition)))
        if spilled is not None:
            spilled(spill.paths)
        for partition in range(partitions):
            out = _bound_partition(spill, partition, max_rows)
            if out is not None and out.num_rows:
                if codes is not None:
                    people = out.column(_UNIT).to_numpy(zero_copy_only=False)
                    codes.append(person_codes(people, key))
                yield schema.coerce(out.select(list(columns)).to_pandas())
    finally:
        spill.close()


def _bound_partition(spill: Spill, partition: int, max_rows: int) -> pa.Table | None:
    """The kept rows of one partition, in position order, read record by record."""
    kept: pa.Table | None = None
    waiting: list[pa.Table] = []
    waiting_rows = 0
    for record in spill.read(partition):
        waiting.append(record)
        waiting_rows += record.num_rows
        if waiting_rows > max(_memory.MIN_ROWS, kept.num_rows if kept is not None else 0):
            kept = _prune(kept, waiting, max_rows)
            waiting, waiting_rows = [], 0
    if waiting or kept is not None:
        kept = _prune(kept, waiting, max_rows)
    if kept is None:
        return None
    order = np.argsort(kept.column(_POS).to_numpy(), kind="stable")
    return kept.take(pa.array(order))


def _prune(kept: pa.Table | None, more: list[pa.Table], max_rows: int) -> pa.Table:
    table = pa.concat_tables(([kept] if kept is not None else []) + more)
    chosen = lowest_ranks(
        table.column(_UNIT).to_numpy(zero_copy_only=False),
        table.column(_RANK).to_numpy(),
        table.column(_POS).to_numpy(),
        max_rows,
    )
    return table.take(pa.array(chosen))
