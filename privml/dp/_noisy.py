"""The noisy statistics themselves: pure functions of clipped values and ε.

Why each is private (add/remove one record, values clipped to the schema's
bounds [lo, hi]; for a person with several rows, see the group-privacy note below):

- count: one record changes the count by 1; Laplace noise of scale 1/ε.
- sum: one record changes the sum by at most max(|lo|, |hi|); Laplace(Δ/ε).
- mean: a sum of values shifted by the midpoint c (sensitivity (hi - lo)/2)
  and a count, each with ε/2 (sequential composition); their ratio is
  post-processing.
- var/std: shifted sums of x - c and (x - c)² (sensitivities (hi - lo)/2 and
  ((hi - lo)/2)²) and a count, each with ε/3; var and std are post-processing.
- histogram: one record changes one bin by 1 (L1 sensitivity 1); Laplace(1/ε)
  on every bin, parallel composition over the disjoint bins.

- quantile: the exponential mechanism over the bounds (diffprivlib's
  ``quantile``), utility -|rank - q·n|, sensitivity 1.

Person-level units (group privacy): on a dataset whose unit is a person with
at most k rows (the door keeps a keyed random sample of k rows per person), the
caller runs each function here at ε/k. A mechanism that is ε/k-DP when one
record changes is (k · ε/k) = ε-DP when k records change (apply the one-record
bound k times along a path of k neighbours), so the release is ε-DP for one
person. For pure ε-DP this is exact, with no loss: count's noise becomes
Laplace(k/ε), sum's Laplace(k·Δ/ε), each bin of a histogram Laplace(k/ε) (one
person moves at most k bins by 1 in all), and so on. (For (ε, δ)-DP the same
argument costs k·e^{(k−1)ε}·δ in δ, which is why privml only scales pure-ε
mechanisms this way.)

Noise comes from diffprivlib's Laplace mechanism (Holohan–Braghin secure
sampling) driven by the OS CSPRNG, and the quantile's from a generator keyed
fresh from ``secrets`` (see :mod:`privml.dp._random`): never from NumPy's global
generator, so ``np.random.seed`` cannot replay a release. Intervals are
computed from released values only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._random import fresh_generator, fresh_random_state, system_random

__all__ = [
    "Noisy",
    "count",
    "histogram",
    "mean",
    "mean_of",
    "noise_interval",
    "quantile",
    "sum_",
    "sum_of",
    "var",
    "var_of",
]

Z95 = math.log(20.0)  # P(|Laplace(b)| > b ln 20) = 0.05
_DRAWS = 4000  # simulated noise draws for the intervals of ratios


@dataclass(frozen=True)
class Noisy:
    value: float
    noise_scale: float
    interval: tuple[float, float]


def laplace(epsilon: float, sensitivity: float) -> Callable[[float], float]:
    """A secure Laplace sampler: ``value -> value + Laplace(sensitivity / epsilon)``."""
    from diffprivlib.mechanisms import Laplace

    mechanism = Laplace(epsilon=epsilon, sensitivity=sensitivity, random_state=system_random())
    return lambda value: float(mechanism.randomise(float(value)))


def noise_interval(scale: float) -> tuple[float, float]:
    """The central 95% interval of Laplace(scale) noise."""
    return (-scale * Z95, scale * Z95)


def count(n: int, epsilon: float) -> Noisy:
    scale = 1.0 / epsilon
    return Noisy(laplace(epsilon, 1.0)(n), scale, noise_interval(scale))


def sum_(values: np.ndarray, bounds: tuple[float, float], epsilon: float) -> Noisy:
    lo, hi = bounds
    return sum_of(float(np.clip(values, lo, hi).sum()), bounds, epsilon)


def sum_of(total: float, bounds: tuple[float, float], epsilon: float) -> Noisy:
    """:func:`sum_` from the exact sum of the clipped values."""
    lo, hi = bounds
    sensitivity = max(abs(lo), abs(hi))
    scale = sensitivity / epsilon
    return Noisy(laplace(epsilon, sensitivity)(total), scale, noise_interval(scale))


def mean(values: np.ndarray, bounds: tuple[float, float], epsilon: float) -> Noisy:
    lo, hi = bounds
    shifted = np.clip(values, lo, hi) - (lo + hi) / 2
    return mean_of(float(shifted.sum()), len(values), bounds, epsilon)


def mean_of(shifted: float, n: int, bounds: tuple[float, float], epsilon: float) -> Noisy:
    """:func:`mean` from the exact sum of clipped values shifted by the midpoint, and count."""
    lo, hi = bounds
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    e = epsilon / 2
    s = laplace(e, half)(shifted)
    c = laplace(e, 1.0)(n)
    value = float(_mean(np.array(s), np.array(c), half))
    rng = fresh_generator()
    draws = _mean(s + rng.laplace(0, half / e, _DRAWS), c + rng.laplace(0, 1 / e, _DRAWS), half)
    return Noisy(mid + value, float(np.std(draws)), _percentiles(draws - value))


def var(values: np.ndarray, bounds: tuple[float, float], epsilon: float) -> Noisy:
    lo, hi = bounds
    shifted = np.clip(values, lo, hi) - (lo + hi) / 2
    return var_of(
        float(shifted.sum()), float((shifted * shifted).sum()), len(values), bounds, epsilon
    )


def var_of(
    shifted: float, squares: float, n: int, bounds: tuple[float, float], epsilon: float
) -> Noisy:
    """:func:`var` from the exact sums of shifted clipped values and of their squares, and
    count."""
    lo, hi = bounds
    half = (hi - lo) / 2
    e = epsilon / 3
    s1 = laplace(e, half)(shifted)
    s2 = laplace(e, half * half)(squares)
    c = laplace(e, 1.0)(n)
    value = float(_variance(np.array(s1), np.array(s2), np.array(c), half))
    rng = fresh_generator()
    draws = _variance(
        s1 + rng.laplace(0, half / e, _DRAWS),
        s2 + rng.laplace(0, half * half / e, _DRAWS),
        c + rng.laplace(0, 1 / e, _DRAWS),
        half,
    )
    return Noisy(value, float(np.std(draws)), _percentiles(draws - value))


def histogram(counts: np.ndarray, epsilon: float) -> tuple[np.ndarray, Noisy]:
    sample = laplace(epsilon, 1.0)
    noisy = np.array([sample(c) for c in counts])
    scale = 1.0 / epsilon
    return noisy, Noisy(float("nan"), scale, noise_interval(scale))


def quantile(values: np.ndarray, q: float, bounds: tuple[float, float], epsilon: float) -> float:
    """The ``q``-quantile of ``values`` (clipped to ``bounds``) by the exponential mechanism."""
    from diffprivlib.accountant import BudgetAccountant
    from diffprivlib.tools import quantile as dp_quantile

    value = dp_quantile(
        values,
        q,
        epsilon=epsilon,
        bounds=bounds,
        accountant=BudgetAccountant(),
        random_state=fresh_random_state(),
    )
    return float(value)


def _mean(s: np.ndarray, c: np.ndarray, half: float) -> np.ndarray:
    # A noisy count below 1 carries no information; the shifted mean is then 0 (the midpoint).
    safe = np.where(c >= 1, c, 1.0)
    return np.where(c >= 1, np.clip(s / safe, -half, half), 0.0)


def _variance(s1: np.ndarray, s2: np.ndarray, c: np.ndarray, half: float) -> np.ndarray:
    safe = np.where(c >= 1, c, 1.0)
    m1 = np.clip(s1 / safe, -half, half)
    m2 = np.clip(s2 / safe, 0.0, half * half)
    return np.where(c >= 1, np.maximum(m2 - m1 * m1, 0.0), 0.0)


def _percentiles(draws: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(draws, [2.5, 97.5])
    return (float(low), float(high))
