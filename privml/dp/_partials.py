"""Mergeable per-group sufficient statistics: built chunk by chunk, noised once at the end.

A group-by statistic needs, per group, only a few numbers computed from the
group's clipped values: the count, the sum of ``x - c`` and of ``(x - c)²``
(``c`` the midpoint of the declared bounds, as :mod:`privml.dp._noisy` shifts
them, so the sums' sensitivities are ``(hi - lo)/2`` and ``((hi - lo)/2)²``),
and for quantiles a histogram of fixed resolution over the declared bounds.
:class:`Partials` holds them for a fixed list of groups. :meth:`Partials.update`
adds one chunk of rows (a pandas frame's group codes and values), and
:meth:`Partials.merge` adds another instance built over the same groups, so a
version read as a sequence of bounded chunks gives exactly the same partials as
the whole frame read at once. Nothing here is noisy or private by itself:
mechanisms noise the finished partials (:mod:`privml.dp._groupby`).

Memory is ``groups × (3 + bins)`` numbers whatever the number of rows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Partials"]


class Partials:
    """Per-group count, shifted sums and (optionally) a histogram, over a fixed list of groups.

    Parameters
    ----------
    groups : int
        The number of groups; a row's group is a code ``0 <= code < groups``
        (a negative code: the row belongs to no released group and is skipped).
    bounds : tuple of float, optional
        The declared bounds of the value column (none for a count): values are clipped.
    bins : int
        The histogram's resolution over ``bounds`` (0: no histogram).

    Examples
    --------
    >>> p = Partials(2, bounds=(0.0, 10.0))
    >>> p.update(np.array([0, 1, 1]), np.array([2.0, 4.0, 20.0]))
    >>> q = Partials(2, bounds=(0.0, 10.0))
    >>> q.update(np.array([0]), np.array([8.0]))
    >>> p.merge(q).count.tolist(), p.shifted_sum.tolist()
    ([2.0, 2.0], [0.0, 4.0])
    """

    def __init__(
        self, groups: int, *, bounds: tuple[float, float] | None = None, bins: int = 0
    ) -> None:
        if groups < 0 or bins < 0 or (bins and bounds is None):
            raise ValueError("internal: a partial needs groups >= 0, and bounds for bins")
        self.groups = groups
        self.bounds = bounds
        self.bins = bins
        self.count = np.zeros(groups)
        self.shifted_sum = np.zeros(groups)
        self.shifted_squares = np.zeros(groups)
        self.histogram = np.zeros((groups, bins))

    @property
    def midpoint(self) -> float:
        """The centre ``c`` of the bounds the sums are shifted by (0 without bounds)."""
        return 0.0 if self.bounds is None else (self.bounds[0] + self.bounds[1]) / 2

    def update(self, codes: np.ndarray, values: np.ndarray | None = None) -> None:
        """Add one chunk: each row's group code and (with bounds) its value; nulls are skipped."""
        codes = np.asarray(codes, dtype=np.int64)
        keep = codes >= 0
        if values is not None:
            values = np.asarray(values, dtype=float)
            keep &= ~np.isnan(values)
        codes = codes[keep]
        if len(codes) and codes.max() >= self.groups:
            raise ValueError("internal: a group code past the partials' groups")
        self.count += np.bincount(codes, minlength=self.groups)
        if self.bounds is None or values is None:
            return
        lo, hi = self.bounds
        clipped = np.clip(values[keep], lo, hi)
        shifted = clipped - self.midpoint
        self.shifted_sum += np.bincount(codes, weights=shifted, minlength=self.groups)
        self.shifted_squares += np.bincount(codes, weights=shifted**2, minlength=self.groups)
        if self.bins:
            width = (hi - lo) / self.bins if hi > lo else 1.0
            cell = np.minimum(((clipped - lo) / width).astype(np.int64), self.bins - 1)
            flat = np.bincount(codes * self.bins + cell, minlength=self.groups * self.bins)
            self.histogram += flat.reshape(self.groups, self.bins)

    def grow(self, groups: int) -> None:
        """Add empty groups up to ``groups`` (keys found as the data is read)."""
        more = groups - self.groups
        if more < 0:
            raise ValueError("internal: partials never shrink")
        if more:
            self.count = np.r_[self.count, np.zeros(more)]
            self.shifted_sum = np.r_[self.shifted_sum, np.zeros(more)]
            self.shifted_squares = np.r_[self.shifted_squares, np.zeros(more)]
            self.histogram = np.concatenate([self.histogram, np.zeros((more, self.bins))])
            self.groups = groups

    def take(self, groups: np.ndarray) -> Partials:
        """A new partial holding only ``groups`` (codes), in that order: the selected keys."""
        groups = np.asarray(groups, dtype=np.int64)
        out = Partials(len(groups), bounds=self.bounds, bins=self.bins)
        out.count = self.count[groups]
        out.shifted_sum = self.shifted_sum[groups]
        out.shifted_squares = self.shifted_squares[groups]
        out.histogram = self.histogram[groups]
        return out

    def merge(self, other: Partials) -> Partials:
        """Add ``other`` (built over the same groups, bounds and bins) into this one; return it."""
        if (other.groups, other.bounds, other.bins) != (self.groups, self.bounds, self.bins):
            raise ValueError("internal: merging partials of different shapes")
        self.count += other.count
        self.shifted_sum += other.shifted_sum
        self.shifted_squares += other.shifted_squares
        self.histogram += other.histogram
        return self
