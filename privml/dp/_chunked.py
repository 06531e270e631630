"""Exact aggregates folded chunk by chunk: what the DP statistics noise, computed in bounded memory.

Each aggregate here takes the released rows one chunk at a time
(``update(chunk)``), can be combined with another over disjoint rows
(``merge(other)``), and ends with the exact values the mechanisms of
:mod:`privml.dp._noisy` add noise to. Noise is added once, to the final
aggregate, so a statistic computed from chunks has exactly the distribution of
the same statistic computed from the whole frame: the aggregate is a sum over
rows (counts, clipped sums, clipped sums of squares, bin counts), and a sum
does not depend on how the rows are grouped (up to floating-point rounding of
the sums, never of the sensitivity or the noise).

A group-by keeps one aggregate per group and feeds each its group's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Count", "Histogram", "Moments", "values"]


def values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column's non-null values as floats (nulls contribute nothing)."""
    out = np.asarray(frame[column].to_numpy(dtype=float, na_value=np.nan), dtype=float)
    kept: np.ndarray = out[~np.isnan(out)]
    return kept


@dataclass
class Count:
    """The number of rows.

    Examples
    --------
    >>> total = Count()
    >>> total.update(pd.DataFrame({"x": [1, 2]})); total.update(pd.DataFrame({"x": [3]}))
    >>> total.n
    3
    """

    n: int = 0

    def update(self, frame: pd.DataFrame) -> None:
        self.n += len(frame)

    def merge(self, other: Count) -> None:
        self.n += other.n


@dataclass
class Moments:
    """Count, sum, and sums of shifted and squared shifted values of one column clipped
    to ``bounds`` (shifted by the bounds' midpoint, as the mechanisms use them).

    Examples
    --------
    >>> m = Moments("x", (0.0, 10.0))
    >>> m.update(pd.DataFrame({"x": [1.0, 20.0, None]}))
    >>> m.n, m.total, m.shifted, m.squares
    (2, 11.0, 1.0, 41.0)
    """

    column: str
    bounds: tuple[float, float]
    n: int = 0
    total: float = 0.0
    shifted: float = 0.0
    squares: float = 0.0

    def update(self, frame: pd.DataFrame) -> None:
        lo, hi = self.bounds
        clipped = np.clip(values(frame, self.column), lo, hi)
        centred = clipped - (lo + hi) / 2
        self.n += len(clipped)
        self.total += float(clipped.sum())
        self.shifted += float(centred.sum())
        self.squares += float((centred * centred).sum())

    def merge(self, other: Moments) -> None:
        self.n += other.n
        self.total += other.total
        self.shifted += other.shifted
        self.squares += other.squares


@dataclass
class Histogram:
    """Counts per declared category (``labels``) or per bin of ``edges`` (values clipped
    into the outer edges).

    Examples
    --------
    >>> h = Histogram("x", edges=np.array([0.0, 5.0, 10.0]))
    >>> h.update(pd.DataFrame({"x": [1.0, 7.0, 99.0]}))
    >>> h.counts.tolist()
    [1, 2]
    """

    column: str
    labels: list[Any] | None = None
    edges: np.ndarray | None = None
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        size = len(self.edges) - 1 if self.edges is not None else len(self.labels or [])
        self.counts = np.zeros(size, dtype=np.int64)

    def update(self, frame: pd.DataFrame) -> None:
        if self.edges is None:
            found = frame[self.column].value_counts().reindex(self.labels, fill_value=0)
            self.counts += found.to_numpy(dtype=np.int64)
        else:
            clipped = np.clip(values(frame, self.column), self.edges[0], self.edges[-1])
            self.counts += np.histogram(clipped, bins=self.edges)[0]

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
