"""DP statistics folded chunk by chunk: exact aggregates equal the whole frame's, memory bounded.

The noise is added once to the final aggregate, so a chunked statistic has the whole-frame
distribution exactly when its pre-noise aggregate is the same: that is what these tests
compare (no noise is involved).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privml.dp import _chunked, _noisy


def _frame(rows: int = 10_000) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    x = rng.integers(-20, 140, rows).astype(float)
    x[rng.random(rows) < 0.05] = np.nan
    return pd.DataFrame({"x": x, "c": rng.choice(["a", "b", "z"], rows)})


def _chunks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)]


@pytest.mark.parametrize("size", [1, 333, 10_000])
def test_chunked_moments_equal_the_whole_frames(size: int) -> None:
    frame, bounds = _frame(), (0.0, 100.0)
    whole = _chunked.Moments("x", bounds)
    whole.update(frame)
    parts = [_chunked.Moments("x", bounds) for _ in _chunks(frame, size)]
    for part, chunk in zip(parts, _chunks(frame, size), strict=True):
        part.update(chunk)
    merged = _chunked.Moments("x", bounds)
    for part in parts:
        merged.merge(part)
    values = _chunked.values(frame, "x")
    clipped = np.clip(values, *bounds)
    # integer-valued data: every partial sum is exact in floating point, so equality is exact
    assert merged.n == whole.n == len(values)
    assert merged.total == whole.total == float(clipped.sum())
    assert merged.shifted == whole.shifted == float((clipped - 50).sum())
    assert merged.squares == whole.squares == float(((clipped - 50) ** 2).sum())


def test_chunked_histograms_and_counts_equal_the_whole_frames() -> None:
    frame = _frame()
    edges = np.linspace(0, 100, 11)
    numeric, labels, count = (
        _chunked.Histogram("x", edges=edges), _chunked.Histogram("c", labels=["a", "b", "y"]),
        _chunked.Count(),
    )  # fmt: skip
    for chunk in _chunks(frame, 777):
        for aggregate in (numeric, labels, count):
            aggregate.update(chunk)
    values = np.clip(_chunked.values(frame, "x"), 0, 100)
    assert numeric.counts.tolist() == np.histogram(values, bins=edges)[0].tolist()
    assert labels.counts.tolist() == [int((frame["c"] == c).sum()) for c in ("a", "b", "y")]
    assert count.n == len(frame)


def test_the_whole_frame_mechanisms_noise_the_same_aggregates() -> None:
    """sum_/mean/var are sum_of/mean_of/var_of of the aggregates Moments folds: their noise
    scales (which depend only on bounds and ε) and intervals agree."""
    frame, bounds = _frame(), (0.0, 100.0)
    m = _chunked.Moments("x", bounds)
    m.update(frame)
    values = _chunked.values(frame, "x")
    whole = _noisy.sum_(values, bounds, 1.0)
    assert whole.noise_scale == _noisy.sum_of(m.total, bounds, 1.0).noise_scale
