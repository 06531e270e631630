"""The noisy statistics of a group-by: finished :class:`~privml.dp._partials.Partials` to cells.

Each function takes the partials of the released groups, the ε of the
statistic and ``k``, the most rows one person contributes (1 for a row-level
unit), and returns one value, noise scale and 95% interval per group.

Why each is private (one person changes at most ``k`` rows, spread over
disjoint groups; values clipped to the declared bounds [lo, hi], c the
midpoint, h = (hi - lo)/2):

- count: the vector of group counts has L1 sensitivity k; Laplace(k/ε) on
  every cell is ε-DP for the whole vector (parallel composition: the charge
  does not grow with the number of groups).
- sum: the vector of clipped sums has L1 sensitivity k·max(|lo|, |hi|); Laplace
  of that over ε on every cell.
- mean: shifted sums (L1 sensitivity k·h) and counts (k), each with ε/2; the
  ratio is post-processing, clamped to the bounds (a near-empty group's mean
  is the midpoint).
- var/std: shifted sums of x - c (k·h) and (x - c)² (k·h²) and counts (k), ε/3
  each; var and std are post-processing.
- quantile: in each group the exponential mechanism (diffprivlib's
  ``Exponential``, OS CSPRNG) over the edges of a fixed histogram of the
  bounds, utility -|rank(edge) - q·n|, sensitivity 1, at ε/k. One person
  changes k_j rows of group j with Σ k_j ≤ k, so the loss is Σ k_j·ε/k ≤ ε
  (group privacy within a group, parallel composition across groups).

Laplace noise comes from OpenDP's proven vector Laplace (:mod:`privml.dp._opendp`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _noisy
from ._opendp import laplace_epsilon, laplace_vector
from ._partials import Partials
from ._random import fresh_generator, system_random

__all__ = ["Cells", "STATISTICS", "count", "mean", "quantile", "std", "sum_", "var"]

#: Simulated noise draws (all groups together) for the intervals of ratios.
_DRAW_CELLS = 1_000_000


@dataclass(frozen=True)
class Cells:
    """One noisy value per group, its noise scale (or estimated std) and a 95% interval."""

    value: np.ndarray
    noise_scale: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def _laplace_cells(values: np.ndarray, scale: float) -> Cells:
    noisy = laplace_vector(values, scale)
    half = scale * _noisy.Z95
    n = len(values)
    return Cells(noisy, np.full(n, scale), noisy - half, noisy + half)


def count(p: Partials, epsilon: float, k: int, q: float = 0.5) -> Cells:
    return _laplace_cells(p.count, k / epsilon)


def sum_(p: Partials, epsilon: float, k: int, q: float = 0.5) -> Cells:
    lo, hi = _bounds(p)
    total = p.shifted_sum + p.midpoint * p.count
    return _laplace_cells(total, k * max(abs(lo), abs(hi)) / epsilon)


def mean(p: Partials, epsilon: float, k: int, q: float = 0.5) -> Cells:
    half = _half(p)
    e = epsilon / 2
    s = laplace_vector(p.shifted_sum, k * half / e)
    c = laplace_vector(p.count, k / e)
    value = _noisy._mean(s, c, half)
    bc, bs = k / e, k * half / e

    def draw(cols: slice, d: int, rng: np.random.Generator) -> np.ndarray:
        n = cols.stop - cols.start
        noisy_s = s[cols] + rng.laplace(0, bs, (d, n))
        return p.midpoint + _noisy._mean(noisy_s, c[cols] + rng.laplace(0, bc, (d, n)), half)

    return _simulated(p.midpoint + value, draw)


def var(p: Partials, epsilon: float, k: int, q: float = 0.5) -> Cells:
    half = _half(p)
    e = epsilon / 3
    s1 = laplace_vector(p.shifted_sum, k * half / e)
    s2 = laplace_vector(p.shifted_squares, k * half * half / e)
    c = laplace_vector(p.count, k / e)
    value = _noisy._variance(s1, s2, c, half)

    def draw(cols: slice, d: int, rng: np.random.Generator) -> np.ndarray:
        n = cols.stop - cols.start
        return _noisy._variance(
            s1[cols] + rng.laplace(0, k * half / e, (d, n)),
            s2[cols] + rng.laplace(0, k * half * half / e, (d, n)),
            c[cols] + rng.laplace(0, k / e, (d, n)),
            half,
        )

    return _simulated(value, draw)


def std(p: Partials, epsilon: float, k: int, q: float = 0.5) -> Cells:
    cells = var(p, epsilon, k)
    root = np.sqrt(cells.value)
    return Cells(
        root,
        cells.noise_scale / np.maximum(2 * root, 1e-12),
        np.sqrt(np.maximum(cells.lower, 0.0)),
        np.sqrt(np.maximum(cells.upper, 0.0)),
    )


def quantile(p: Partials, epsilon: float, k: int, q: float = 0.5) -> Cells:
    from diffprivlib.mechanisms import Exponential

    lo, hi = _bounds(p)
    edges = np.linspace(lo, hi, p.bins + 1)
    below = np.concatenate([np.zeros((p.groups, 1)), np.cumsum(p.histogram, axis=1)], axis=1)
    out = np.empty(p.groups)
    for g in range(p.groups):
        utility = (-np.abs(below[g] - q * p.count[g])).tolist()
        chosen = Exponential(
            epsilon=epsilon / k, sensitivity=1.0, utility=utility, random_state=system_random()
        ).randomise()
        out[g] = edges[int(chosen)]
    nan = np.full(p.groups, np.nan)
    return Cells(out, nan, nan.copy(), nan.copy())


#: Each statistic: its cells and the description of its mechanism.
STATISTICS: dict[str, tuple[Callable[..., Cells], str]] = {
    "count": (count, "laplace (OpenDP)"),
    "sum": (sum_, "laplace (OpenDP)"),
    "mean": (mean, "laplace (OpenDP; sum and count, ε/2 each)"),
    "var": (var, "laplace (OpenDP; sums of x, x² and count, ε/3 each)"),
    "std": (std, "laplace (OpenDP; sums of x, x² and count, ε/3 each)"),
    "quantile": (quantile, "exponential (diffprivlib) over histogram edges"),
}


def reported_epsilon(
    what: str, p_bounds: tuple[float, float] | None, epsilon: float, k: int
) -> float:
    """The ε OpenDP's maps give for the Laplace parts of ``what`` (the quantile: ε itself)."""
    if what == "quantile":
        return epsilon
    lo, hi = p_bounds or (0.0, 0.0)
    half = (hi - lo) / 2
    parts: dict[str, list[tuple[float, float]]] = {
        "count": [(k / epsilon, k)],
        "sum": [(k * max(abs(lo), abs(hi)) / epsilon, k * max(abs(lo), abs(hi)))],
        "mean": [(2 * k * half / epsilon, k * half), (2 * k / epsilon, k)],
    }
    e3 = epsilon / 3
    parts["var"] = parts["std"] = [
        (k * half / e3, k * half),
        (k * half**2 / e3, k * half**2),
        (k / e3, k),
    ]
    return float(sum(laplace_epsilon(s, d) for s, d in parts[what] if d > 0))


def _bounds(p: Partials) -> tuple[float, float]:
    if p.bounds is None:
        raise ValueError("internal: this statistic needs bounds")
    return p.bounds


def _half(p: Partials) -> float:
    lo, hi = _bounds(p)
    return (hi - lo) / 2


def _draws(groups: int) -> int:
    return max(50, min(4000, _DRAW_CELLS // max(groups, 1)))


def _simulated(
    value: np.ndarray, draw: Callable[[slice, int, np.random.Generator], np.ndarray]
) -> Cells:
    """Each group's value with the spread and 95% interval of simulated noise around it.

    ``draw(cols, d, rng)`` gives ``d`` simulated noisy values of the groups ``cols``. The
    groups are simulated in blocks of at most :data:`_DRAW_CELLS` draws in all, so memory
    stays bounded however many groups partition selection keeps.
    """
    n = len(value)
    if n == 0:
        empty = np.zeros(0)
        return Cells(empty, empty, empty, empty)
    rng, d = fresh_generator(), _draws(n)
    block = max(1, _DRAW_CELLS // d)
    low, high, spread = np.empty(n), np.empty(n), np.empty(n)
    for start in range(0, n, block):
        cols = slice(start, min(n, start + block))
        draws = draw(cols, d, rng)
        low[cols], high[cols] = np.percentile(draws - value[cols], [2.5, 97.5], axis=0)
        spread[cols] = np.std(draws, axis=0)
    return Cells(value, spread, value + low, value + high)
