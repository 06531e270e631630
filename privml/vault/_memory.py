"""How much memory a streamed read or write of a dataset version may use.

One setting, :attr:`Vault.memory_limit <privml.Vault.memory_limit>` (bytes,
:data:`DEFAULT_MEMORY` by default): it sizes the chunks a version is written and
read in, the spill partitions of person-level bounding, and decides when a DP
statistic streams a version instead of loading it whole. The data's size never
does.

Chunks are sized as ``memory / (COPIES × bytes per row)``: a chunk is held as
Arrow, as pandas and in a copy or two while it is validated, filtered or
bounded, so :data:`COPIES` of it must fit. Rows per chunk stay between
:data:`MIN_ROWS` (tiny chunks cost more in Parquet page headers and per-call
overhead than they save) and :data:`MAX_ROWS` (pyarrow's default row group:
larger groups gain nothing in compression or scan speed).
"""

from __future__ import annotations

from ..exceptions import ConfigurationError

__all__ = ["COPIES", "DEFAULT_MEMORY", "MAX_ROWS", "MIN_MEMORY", "MIN_ROWS", "check", "chunk_rows"]

#: The default bound, in bytes, on what one streamed read or write holds at once.
DEFAULT_MEMORY = 256 * 1024 * 1024
#: The smallest bound accepted: below it, per-chunk overheads dominate.
MIN_MEMORY = 8 * 1024 * 1024
#: Copies of one chunk alive at once while it is converted, checked and filtered.
COPIES = 8
#: Fewest and most rows in one chunk (one Parquet row group when writing).
MIN_ROWS = 1024
MAX_ROWS = 1024 * 1024


def check(memory: object) -> int:
    """``memory`` as a number of bytes, refused unless a whole number ≥ :data:`MIN_MEMORY`."""
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < MIN_MEMORY:
        raise ConfigurationError(
            f"memory_limit takes a whole number of bytes, at least {MIN_MEMORY} (8 MiB), "
            "e.g. 512 * 1024**2"
        )
    return memory


def chunk_rows(memory: int, row_bytes: float) -> int:
    """Rows per chunk so that :data:`COPIES` chunks of ``row_bytes``-byte rows fit ``memory``.

    Examples
    --------
    >>> chunk_rows(256 * 1024**2, 32)
    1048576
    >>> chunk_rows(16 * 1024**2, 1000)
    2097
    """
    rows = int(memory // (COPIES * max(row_bytes, 1.0)))
    return max(MIN_ROWS, min(MAX_ROWS, rows))
