"""The noise of DP statistics, checked statistically against the mechanisms' theory."""

from __future__ import annotations

import numpy as np
import pytest

from privml.dp import _stats

REPS = 2000


@pytest.fixture(scope="module")
def values() -> np.ndarray:
    # a fixed dataset: 1,000 values, some outside the bounds [0, 100] (they get clipped)
    return np.random.default_rng(0).normal(60, 30, 1000)


def _check(noise: np.ndarray, variance: float) -> None:
    ratio = noise.var() / variance
    assert 0.8 < ratio < 1.25, f"empirical/theoretical noise variance = {ratio:.3f}"
    assert abs(noise.mean()) < 4 * np.sqrt(variance / len(noise)), "noise is not centred"


def test_count_noise_is_laplace_with_scale_one_over_epsilon():
    noise = np.array([_stats.count(1000, 1.0).value for _ in range(REPS)]) - 1000
    _check(noise, 2.0)  # Var Laplace(b) = 2 b², b = 1/ε
    coverage = np.mean(np.abs(noise) <= np.log(20))
    assert 0.93 < coverage < 0.97  # the 95% interval holds


def test_count_noise_scales_with_epsilon():
    noise = np.array([_stats.count(10, 0.25).value for _ in range(REPS)]) - 10
    _check(noise, 2.0 / 0.25**2)


def test_mean_noise_matches_the_delta_method(values):
    lo, hi, eps = 0.0, 100.0, 1.0
    clipped = np.clip(values, lo, hi)
    truth, n = clipped.mean(), len(clipped)
    mid, half = 50.0, 50.0
    b_sum, b_count = half / (eps / 2), 1 / (eps / 2)
    shifted_mean = truth - mid
    variance = (2 * b_sum**2 + shifted_mean**2 * 2 * b_count**2) / n**2
    noise = np.array([_stats.mean(values, (lo, hi), eps).value for _ in range(REPS)]) - truth
    _check(noise, variance)


def test_sum_noise(values):
    clipped = np.clip(values, 0, 100)
    noise = np.array([_stats.sum_(values, (0, 100), 2.0).value for _ in range(REPS)])
    _check(noise - clipped.sum(), 2 * (100 / 2.0) ** 2)


def test_variance_is_centred_and_interval_reasonable(values):
    clipped = np.clip(values, 0, 100)
    results = [_stats.var(values, (0, 100), 3.0) for _ in range(300)]
    estimates = np.array([r.value for r in results])
    assert abs(estimates.mean() - clipped.var()) < 4 * estimates.std() / np.sqrt(len(results))
    low, high = results[0].interval
    assert low < 0 < high


def test_histogram_noise_per_bin():
    counts = np.array([100, 0, 50])
    draws = np.array([_stats.histogram(counts, 0.5)[0] for _ in range(REPS)]) - counts
    for b in range(3):
        _check(draws[:, b], 2 * (1 / 0.5) ** 2)
