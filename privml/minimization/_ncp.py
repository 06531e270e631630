"""Normalized certainty penalty (NCP), Ghinita, Karras, Kalnis and Mamoulis (VLDB 2007).

What it measures: how much a reader of the released data no longer knows
about each value, as a share of what there was to know. A numeric value
released as an interval costs the interval's width over the feature's range; a
category released as a group of ``s`` categories costs ``s / |domain|`` (0 when
the group is the category alone); a value released as is costs 0, a dropped
feature 1. The NCP of a table is the mean over records and minimized features,
so it lies in [0, 1]: 0 is the original data, 1 releases nothing.

Penalties are fixed per group when the generalization is made (widths are the
training extents of each interval, the domain is the training categories), so
fit-time and transform-time NCP are the same function of the same mapping.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def range_penalties(widths: FloatArray, span: float) -> FloatArray:
    """Interval width over the feature's range; 0 for every interval of a constant feature."""
    return widths / span if span > 0 else np.zeros(widths.size)


def group_penalties(sizes: FloatArray, domain: int) -> FloatArray:
    """``size / domain`` for a group of several categories, 0 for a category on its own."""
    return np.where(sizes > 1, sizes / max(domain, 1), 0.0)


def ncp(penalties: FloatArray) -> float:
    """Mean of a (records × minimized features) penalty matrix; 0 when it is empty."""
    return float(penalties.mean()) if penalties.size else 0.0
