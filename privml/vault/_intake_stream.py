"""A Parquet file entering the vault in chunks: read, validated and handed on one at a time.

The whole-frame path (:mod:`privml.vault._intake`) reads a file into memory; a
file given by path is instead read in chunks of :func:`~privml.vault._memory.chunk_rows`
rows, each validated strictly by the same :meth:`Schema.validate` rules, so a
version larger than memory can be stored. The first chunk with a problem raises
:class:`~privml.exceptions.SchemaError` (rows numbered from the file's start); the
caller writes to a file that is committed only once every chunk passed, so nothing
is stored on error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import ConfigurationError, SchemaError
from ..schema import Schema
from ..storage.stream import READ_BUFFER
from . import _memory

__all__ = ["ChunkedSource", "chunked", "open_parquet"]


@dataclass
class ChunkedSource:
    """A Parquet file's rows, validated chunk by chunk against ``schema`` as they are read."""

    path: Path
    schema: Schema
    on_violation: Literal["reject", "clip"]
    rows_per_chunk: int
    columns: list[str]
    #: Values clipped per column so far (complete once :meth:`chunks` is exhausted).
    clipped: dict[str, int] = field(default_factory=dict)

    def chunks(self) -> Iterator[pd.DataFrame]:
        """Each chunk validated, in canonical dtypes; at least one (empty for an empty file)."""
        offset = 0
        for table in self._tables():
            try:
                frame, clipped = self.schema.validate(
                    table.to_pandas(), on_violation=self.on_violation
                )
            except SchemaError as err:
                raise _shifted(err, offset) from None
            for column, count in clipped.items():
                self.clipped[column] = self.clipped.get(column, 0) + count
            offset += len(frame)
            yield frame

    def _tables(self) -> Iterator[pa.Table]:
        try:
            parquet = pq.ParquetFile(self.path, buffer_size=READ_BUFFER, pre_buffer=False)
            empty = True
            for batch in parquet.iter_batches(batch_size=self.rows_per_chunk, columns=self.columns):
                empty = False
                yield pa.Table.from_batches([batch])
            if empty:
                yield parquet.schema_arrow.empty_table().select(self.columns)
        except (pa.ArrowException, ValueError, OSError) as err:
            raise _unreadable(self.path, err) from None


def open_parquet(
    path: Path, schema: Schema, on_violation: Literal["reject", "clip"], memory: int
) -> ChunkedSource:
    """A :class:`ChunkedSource` over the Parquet file ``path``, its chunks sized to ``memory``.

    Only the footer is read here; an unreadable file raises
    :class:`~privml.exceptions.ConfigurationError` naming the kind of problem, never
    the library's message (which can quote the file).
    """
    try:
        parquet = pq.ParquetFile(path)
        meta, arrow = parquet.metadata, parquet.schema_arrow
    except (pa.ArrowException, ValueError, OSError) as err:
        raise _unreadable(path, err) from None
    stored = (arrow.pandas_metadata or {}).get("index_columns") or []
    index = {n for n in stored if isinstance(n, str)}  # a RangeIndex is a description, no column
    # pandas' stored index columns are read back as the index, never as data
    columns = [n for n in arrow.names if not (isinstance(n, str) and n in index)]
    row_bytes = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)) / max(
        meta.num_rows, 1
    )
    rows = _memory.chunk_rows(memory, max(row_bytes, 8.0 * max(len(columns), 1)))
    return ChunkedSource(path, schema, on_violation, rows, columns)


def _shifted(err: SchemaError, offset: int) -> SchemaError:
    """``err`` with its row positions counted from the file's first row."""
    violations = [replace(v, rows=tuple(r + offset for r in v.rows)) for v in err.violations]
    hint = "\n".join(str(err).split("\n")[1 + len(violations) :])  # the same advice
    return SchemaError(violations, hint)


def _unreadable(path: Path, err: Exception) -> ConfigurationError:
    if isinstance(err, pa.ArrowException | ValueError):
        problem = "it is not a readable Parquet file (corrupt, truncated or encrypted)"
    else:
        problem = f"it could not be read ({type(err).__name__})"
    return ConfigurationError(f"cannot read data file {str(path)!r} as Parquet: {problem}")


def chunked(
    data: object, schema: Schema, on_violation: Literal["reject", "clip"], memory: int
) -> ChunkedSource | None:
    """A :class:`ChunkedSource` when ``data`` is the path of an existing Parquet file, else
    None (a DataFrame or CSV takes the whole-frame path, which also names bad paths)."""
    if not isinstance(data, str | os.PathLike):
        return None
    path = Path(data)
    if path.suffix.lower() not in (".parquet", ".pq") or not path.is_file():
        return None
    if on_violation not in ("reject", "clip"):
        raise ConfigurationError(f"on_violation must be 'reject' or 'clip', got {on_violation!r}")
    return open_parquet(path, schema, on_violation, memory)
