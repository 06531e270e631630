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
import pyarrow.compute as pc

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

    ``units`` are the rows' units, or any integer codes of them (one code per unit).

    Examples
    --------
    >>> units = np.array(["a", "a", "a", "b"], dtype=object)
    >>> lowest_ranks(units, np.array([5, 1, 3, 9], dtype="u8"), np.arange(4), 2)
    array([1, 2, 3])
    """
    codes = units if units.dtype.kind in "iu" else pd.factorize(units)[0]
    rows = len(codes)
    if not rows:
        return np.zeros(0, dtype=np.int64)
    # Only the rows of a unit with more than max_rows rows are ranked; the others are all kept.
    heavy = np.bincount(codes)[codes] > max_rows
    if not heavy.any():
        return np.arange(rows, dtype=np.int64)
    among = np.flatnonzero(heavy)
    order = among[np.lexsort((positions[among], ranks[among], codes[among]))]
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]).astype(int))
    chosen = order[np.arange(len(order)) - first < max_rows]
    kept = np.concatenate([np.flatnonzero(~heavy), chosen])
    kept.sort()
    return kept


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
    spill = Spill(partitions)
    try:
        spilled_rows = _spill_chunks(spill, chunks, unit, columns, max_rows, key, partitions)
        if spilled is not None:
            spilled(spill.paths)
        # A partition is pruned once it is read whole, unless it holds far more than its share
        # (the people of one partition are not chosen by anyone, but their rows may be many).
        share = max(_memory.MIN_ROWS, 2 * spilled_rows // partitions)
        for partition in range(partitions):
            out = _bound_partition(spill, partition, max_rows, share)
            if out is not None and out.num_rows:
                if codes is not None:
                    people = out.column(_UNIT).to_numpy(zero_copy_only=False)
                    codes.append(person_codes(people, key))
                yield schema.coerce(out.select(list(columns)).to_pandas())
    finally:
        spill.close()


def _spill_chunks(
    spill: Spill,
    chunks: Iterator[pd.DataFrame],
    unit: str,
    columns: Sequence[str],
    max_rows: int,
    key: bytes,
    partitions: int,
) -> int:
    """Pass 1: rank each chunk's rows, drop those no person can keep, write the rest out.

    Each partition's rows are buffered and written as one sealed record whenever the
    buffered rows reach a chunk's worth (so at most about one more chunk is held).
    Returns the number of rows written.
    """
    from ..dp._bounding import keyed_ranks  # here: privml.dp imports scikit-learn

    hash_key = secrets.token_hex(8)  # which partition a person lands in: unknown outside
    pending: list[list[pa.Table]] = [[] for _ in range(partitions)]
    pending_rows = written = offset = 0
    for chunk in chunks:
        rows = len(chunk)
        people = pa.array(chunk[unit].array)
        if people.null_count:
            raise ValueError("internal: a privacy unit column holds no nulls")
        encoded = pc.dictionary_encode(people)
        codes = encoded.indices.to_numpy()
        ranks = keyed_ranks(key, rows, start=offset)
        positions = np.arange(offset, offset + rows, dtype=np.int64)
        offset += rows
        kept = lowest_ranks(codes, ranks, positions, max_rows)
        # the keyed partition of each person, hashed once per distinct person of the chunk
        distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
        where = (pd.util.hash_array(distinct, hash_key=hash_key, categorize=False) % partitions)[
            codes[kept]
        ].astype(np.int64)
        order = np.argsort(where, kind="stable")  # by partition, each in position order
        table = pa.Table.from_pandas(chunk[list(columns)], preserve_index=False)
        table = (
            table.append_column(_UNIT, people)
            .append_column(_RANK, pa.array(ranks))
            .append_column(_POS, pa.array(positions))
            .take(pa.array(kept[order]))
        )
        bounds = np.searchsorted(where[order], np.arange(partitions + 1))
        for partition in np.flatnonzero(np.diff(bounds)):
            start, stop = int(bounds[partition]), int(bounds[partition + 1])
            pending[partition].append(table.slice(start, stop - start))
        pending_rows += table.num_rows
        if pending_rows >= max(rows, _memory.MIN_ROWS):
            written += _flush(spill, pending)
            pending_rows = 0
    return written + _flush(spill, pending)


def _flush(spill: Spill, pending: list[list[pa.Table]]) -> int:
    """Write each partition's buffered rows as one record; returns the rows written."""
    written = 0
    for partition, tables in enumerate(pending):
        if tables:
            table = pa.concat_tables(tables)
            spill.write(partition, table)
            written += table.num_rows
            tables.clear()
    return written


def _bound_partition(spill: Spill, partition: int, max_rows: int, share: int) -> pa.Table | None:
    """The kept rows of one partition, in position order, read record by record."""
    kept: pa.Table | None = None
    waiting: list[pa.Table] = []
    waiting_rows = 0
    for record in spill.read(partition):
        waiting.append(record)
        waiting_rows += record.num_rows
        if waiting_rows > max(share, kept.num_rows if kept is not None else 0):
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
    codes = pc.dictionary_encode(table.column(_UNIT).combine_chunks()).indices.to_numpy()
    chosen = lowest_ranks(
        codes, table.column(_RANK).to_numpy(), table.column(_POS).to_numpy(), max_rows
    )
    return table if len(chosen) == table.num_rows else table.take(pa.array(chosen))
