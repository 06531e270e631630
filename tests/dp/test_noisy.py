"""The noise of DP statistics, checked against the mechanisms' theory with bounded error.

The noise cannot be seeded (it comes from the OS), so every check compares the
empirical distribution of R releases with the distribution the theory says, by
the Dvoretzky–Kiefer–Wolfowitz inequality (Massart's constant):
P(sup_x |F_R(x) - F(x)| > t) <= 2 exp(-2 R t²). With R = 10,000 and
t = 0.03, that is 2 e^-18 < 3e-8 per check. Where the theory's distribution has
no closed form (ratios of noisy sums) it is simulated from the formula with a
seeded reference sample of M = 200,000 (deviation > 0.007 with probability
< 2 e^-19.6), and the sample is allowed t + 0.007. A scale wrong by 25% moves
a Laplace CDF by more than 0.04, which these checks catch.
"""

from __future__ import annotations

import numpy as np
import pytest

from privml.dp import _noisy

R = 10_000
T = 0.03  # DKW: P(failure) < 2 exp(-2 R T²) < 3e-8
M = 200_000
T_REF = 0.007  # DKW for the seeded reference sample of M draws


@pytest.fixture(scope="module")
def values() -> np.ndarray:
    # a fixed dataset: 1,000 values, some outside the bounds [0, 100] (they get clipped)
    return np.random.default_rng(0).normal(60, 30, 1000)


def _sup_gap(sample: np.ndarray, cdf) -> float:
    x = np.sort(sample)
    f = cdf(x)
    above = np.arange(1, len(x) + 1) / len(x) - f
    below = f - np.arange(len(x)) / len(x)
    return float(max(above.max(), below.max()))


def _laplace_cdf(scale: float):
    return lambda x: np.where(x < 0, 0.5 * np.exp(x / scale), 1 - 0.5 * np.exp(-x / scale))


def _check_laplace(noise: np.ndarray, scale: float) -> None:
    gap = _sup_gap(noise, _laplace_cdf(scale))
    assert gap <= T, f"sup |F_R - F| = {gap:.4f} for Laplace({scale})"


def _check_same(sample: np.ndarray, reference: np.ndarray) -> None:
    ref = np.sort(reference)
    gap = _sup_gap(sample, lambda x: np.searchsorted(ref, x, side="right") / len(ref))
    assert gap <= T + T_REF, f"sup |F_R - G_M| = {gap:.4f}"


def test_count_noise_is_laplace_with_scale_one_over_epsilon():
    _check_laplace(np.array([_noisy.count(1000, 1.0).value for _ in range(R)]) - 1000, 1.0)


def test_count_noise_scales_with_epsilon():
    _check_laplace(np.array([_noisy.count(10, 0.25).value for _ in range(R)]) - 10, 4.0)


def test_count_interval_is_the_central_95_percent():
    low, high = _noisy.count(10, 0.5).interval
    cdf = _laplace_cdf(2.0)
    assert np.isclose(cdf(np.array(high)) - cdf(np.array(low)), 0.95)


def test_sum_noise(values):
    clipped = np.clip(values, 0, 100)
    noise = np.array([_noisy.sum_(values, (0, 100), 2.0).value for _ in range(R)])
    _check_laplace(noise - clipped.sum(), 100 / 2.0)


def test_mean_is_a_noisy_shifted_sum_over_a_noisy_count(values):
    lo, hi, eps = 0.0, 100.0, 1.0
    mid, half = 50.0, 50.0
    shifted = np.clip(values, lo, hi) - mid
    rng = np.random.default_rng(1)
    s = shifted.sum() + rng.laplace(0, half / (eps / 2), M)
    c = len(values) + rng.laplace(0, 1 / (eps / 2), M)
    reference = mid + np.where(c >= 1, np.clip(s / np.maximum(c, 1), -half, half), 0.0)
    sample = np.array([_noisy.mean(values, (lo, hi), eps).value for _ in range(R)])
    _check_same(sample, reference)


def test_variance_is_post_processing_of_three_noisy_sums(values):
    lo, hi, eps = 0.0, 100.0, 3.0
    half = 50.0
    shifted = np.clip(values, lo, hi) - 50.0
    rng = np.random.default_rng(2)
    e = eps / 3
    s1 = shifted.sum() + rng.laplace(0, half / e, M)
    s2 = (shifted**2).sum() + rng.laplace(0, half * half / e, M)
    c = len(values) + rng.laplace(0, 1 / e, M)
    safe = np.maximum(c, 1)
    m1, m2 = np.clip(s1 / safe, -half, half), np.clip(s2 / safe, 0, half * half)
    reference = np.where(c >= 1, np.maximum(m2 - m1 * m1, 0.0), 0.0)
    results = [_noisy.var(values, (lo, hi), eps) for _ in range(R)]
    _check_same(np.array([r.value for r in results]), reference)
    low, high = results[0].interval  # percentiles of simulated draws around the release
    assert low <= 0 <= high


def test_histogram_noise_per_bin():
    counts = np.array([100, 0, 50])
    draws = np.array([_noisy.histogram(counts, 0.5)[0] for _ in range(R)]) - counts
    for b in range(3):  # three checks: P(any fails) < 1e-7
        _check_laplace(draws[:, b], 1 / 0.5)
