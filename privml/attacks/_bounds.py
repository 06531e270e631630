"""Empirical ε lower bounds: the arithmetic that turns an attack's success into a claim.

A DP guarantee bounds how well *any* test can tell a dataset with an example
from one without it. An attack that does better than the bound allows, with
high confidence, shows the guarantee does not hold: its success gives a lower
bound on ε. Two bounds live here, both pure arithmetic (numpy and scipy):

* :func:`epsilon_lower_bound` — the hypothesis-testing bound (Kairouz et al.
  2015; used for auditing by Jagielski et al. 2020 and Nasr et al. 2021) from an
  attack's confusion counts at one threshold, with Clopper–Pearson intervals
  (:func:`clopper_pearson`) on its true- and false-positive rates;
* :func:`one_run_lower_bound` — Steinke, Nasr & Jagielski 2023, "Privacy
  auditing with one (1) training run" (arXiv 2305.08846): m canaries each
  included with probability 1/2, guesses about which were, and the number of
  right guesses.

Both are sound only for a test fixed before the counts were seen: choosing the
best of several thresholds on the same counts inflates the bound. The
membership attacks (:mod:`privml.attacks._membership`) choose the threshold on
one half of the examples and compute the bound on the other half.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import special, stats

from ..exceptions import ConfigurationError

__all__ = ["clopper_pearson", "epsilon_lower_bound", "one_run_lower_bound"]

#: The most canaries :func:`one_run_lower_bound` accepts (its work is linear in them).
MAX_CANARIES = 1_000_000
#: ε beyond which no search goes: ``exp(ε)`` overflows long before any audit shows this much.
_EPS_CEILING = 700.0


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigurationError(f"{what} must be a whole number, got {type(value).__name__}")
    if value < 0:
        raise ConfigurationError(f"{what} must be 0 or more, got {int(value)}")
    return int(value)


def _probability(value: object, what: str, *, closed_low: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    low_ok = number >= 0.0 if closed_low else number > 0.0
    if not (math.isfinite(number) and low_ok and number < 1.0):
        interval = "[0, 1)" if closed_low else "(0, 1)"
        raise ConfigurationError(f"{what} must lie in {interval}, got {number!r}")
    return number


def check_confidence(confidence: object) -> float:
    """``confidence`` as a float in (0, 1), or a ConfigurationError saying so."""
    return _probability(confidence, "confidence", closed_low=False)


def check_delta(delta: object) -> float:
    """``delta`` as a float in [0, 1), or a ConfigurationError saying so."""
    return _probability(delta, "delta", closed_low=True)


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact (Clopper–Pearson) two-sided interval for a binomial proportion.

    Each end is a one-sided bound at level ``(1 - confidence) / 2``: the true
    proportion lies below ``low`` with probability at most that, and above
    ``high`` with probability at most that.

    Parameters
    ----------
    k : int
        Successes, ``0 <= k <= n``.
    n : int
        Trials, at least 1.
    confidence : float
        In (0, 1), e.g. 0.95.

    Returns
    -------
    (float, float)
        ``(low, high)``; ``low`` is 0 when ``k == 0`` and ``high`` is 1 when ``k == n``.

    Examples
    --------
    >>> low, high = clopper_pearson(7, 10, 0.95)
    >>> round(low, 4), round(high, 4)
    (0.3475, 0.9333)
    >>> clopper_pearson(0, 5, 0.95)[0]
    0.0
    """
    k, n = _count(k, "k"), _count(n, "n")
    confidence = check_confidence(confidence)
    if n == 0 or k > n:
        raise ConfigurationError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def epsilon_bounds(
    tp: np.ndarray, fn: np.ndarray, fp: np.ndarray, tn: np.ndarray, delta: float, confidence: float
) -> np.ndarray:
    """:func:`epsilon_lower_bound` at many thresholds at once (arrays of counts, checked)."""
    tail = (1.0 - confidence) / 2.0
    positives, negatives = tp + fn, fp + tn
    tpr_low = np.where(tp > 0, stats.beta.ppf(tail, np.maximum(tp, 1), fn + 1), 0.0)
    fpr_high = np.where(fp < negatives, stats.beta.ppf(1.0 - tail, fp + 1, np.maximum(tn, 1)), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log((tpr_low - delta) / fpr_high)
        second = np.log((1.0 - fpr_high - delta) / (1.0 - tpr_low))
    best = np.fmax(np.nan_to_num(first, nan=0.0, neginf=0.0), np.nan_to_num(second, nan=0.0))
    claims = (positives > 0) & (negatives > 0)
    return np.where(claims, np.maximum(best, 0.0), 0.0)


def epsilon_lower_bound(
    tp: int, fn: int, fp: int, tn: int, *, delta: float, confidence: float = 0.95
) -> float:
    """The ε an attack's confusion counts at one fixed threshold prove, with ``confidence``.

    For an (ε, δ)-DP mechanism every test satisfies ``TPR <= e^ε FPR + δ`` and
    ``1 - FPR <= e^ε (1 - TPR) + δ``. With ``TPR_low`` the lower end of the
    Clopper–Pearson interval on ``tp / (tp + fn)`` and ``FPR_high`` the upper end
    on ``fp / (fp + tn)``, both at ``confidence``, the bound is::

        ε >= max(log((TPR_low - δ) / FPR_high), log((1 - FPR_high - δ) / (1 - TPR_low)))

    clamped at 0 (nothing claimed). Each interval end fails with probability at
    most ``(1 - confidence) / 2``, so both hold together with probability at
    least ``confidence`` (union bound), and then the mechanism is not
    (ε', δ)-DP for any ε' below the bound.

    The counts must come from a test fixed in advance: maximizing this over
    thresholds on the same counts is not covered (choose the threshold on other
    examples, as :func:`~privml.attacks.loss_threshold_attack` does).

    Parameters
    ----------
    tp, fn : int
        Members guessed members / guessed non-members.
    fp, tn : int
        Non-members guessed members / guessed non-members.
    delta : float
        The δ of the guarantee tested, in [0, 1).
    confidence : float, default 0.95
        In (0, 1).

    Returns
    -------
    float
        The lower bound on ε; 0.0 when nothing can be claimed (also when there
        are no members or no non-members).

    Examples
    --------
    >>> round(epsilon_lower_bound(900, 100, 10, 990, delta=1e-5), 3)
    3.872
    >>> epsilon_lower_bound(50, 50, 50, 50, delta=1e-5)
    0.0
    """
    counts = [_count(v, name) for v, name in ((tp, "tp"), (fn, "fn"), (fp, "fp"), (tn, "tn"))]
    delta, confidence = check_delta(delta), check_confidence(confidence)
    tp_, fn_, fp_, tn_ = (np.asarray([c], dtype=float) for c in counts)
    return float(epsilon_bounds(tp_, fn_, fp_, tn_, delta, confidence)[0])


def _sf(v: int, r: int, q: float) -> float:
    """P[Binomial(r, q) >= v]."""
    return float(stats.binom.sf(v - 1, r, q))


def one_run_p_value(m: int, guesses: int, correct: int, eps: float, delta: float) -> float:
    """An upper bound on P[at least ``correct`` of ``guesses`` right] under (ε, δ)-DP.

    Steinke, Nasr & Jagielski 2023: for ε-DP (Theorem 3.1) the number of right
    guesses is stochastically dominated by Binomial(r, q), q = e^ε / (1 + e^ε),
    so the tail is ``P[Binomial(r, q) >= v]``. For (ε, δ)-DP (their Theorem 5.2,
    evaluated as in their Appendix D) the tail gains
    ``2 m δ · max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i``.
    Arguments are checked by the caller.
    """
    q = float(special.expit(eps))
    beta = _sf(correct, guesses, q)
    if delta == 0.0 or correct == 0:
        return min(beta, 1.0)
    below = stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q)  # v-1, v-2, ..., 0
    alpha = float(np.max(np.cumsum(below) / np.arange(1, correct + 1)))
    return min(beta + alpha * delta * 2.0 * m, 1.0)


def one_run_lower_bound(
    m: int, guesses: int, correct: int, *, delta: float, confidence: float = 0.95
) -> float:
    """The ε lower bound of a one-run canary audit (Steinke, Nasr & Jagielski 2023).

    ``m`` canaries were each included in training independently with
    probability 1/2; the auditor guessed in or out for ``guesses`` of them
    (abstaining on the rest) and ``correct`` guesses were right. The result is
    the largest ε such that, were the training (ε, δ)-DP, at least ``correct``
    right guesses would have probability at most ``1 - confidence`` (the
    p-value of ``one_run_p_value``, found by bisection as in the paper's
    Appendix D, to within 1e-9).

    Parameters
    ----------
    m : int
        Canaries, at most 1,000,000 (the work is linear in them: seconds at the limit).
    guesses : int
        Guesses made, ``guesses <= m``.
    correct : int
        Right guesses, ``correct <= guesses``.
    delta : float
        The δ of the guarantee tested, in [0, 1).
    confidence : float, default 0.95
        In (0, 1).

    Returns
    -------
    float
        The lower bound on ε (0.0 when the guesses prove nothing).

    Examples
    --------
    >>> round(one_run_lower_bound(1000, 100, 100, delta=0.0), 3)
    3.493
    >>> round(one_run_lower_bound(1000, 100, 90, delta=1e-5), 4)
    1.6261
    >>> one_run_lower_bound(1000, 100, 50, delta=1e-5)
    0.0
    """
    m = _count(m, "m")
    guesses, correct = _count(guesses, "guesses"), _count(correct, "correct")
    delta, confidence = check_delta(delta), check_confidence(confidence)
    if m > MAX_CANARIES:
        raise ConfigurationError(f"m must be at most {MAX_CANARIES:,} canaries, got {m:,}")
    if guesses > m:
        raise ConfigurationError(f"guesses ({guesses}) cannot exceed the canaries m ({m})")
    if correct > guesses:
        raise ConfigurationError(f"correct ({correct}) cannot exceed guesses ({guesses})")
    alpha = 1.0 - confidence
    if one_run_p_value(m, guesses, correct, 0.0, delta) > alpha:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, guesses, correct, high, delta) <= alpha:
        low, high = high, 2.0 * high
        if high > _EPS_CEILING:
            return low
    while high - low > 1e-9:
        mid = (low + high) / 2.0
        if one_run_p_value(m, guesses, correct, mid, delta) <= alpha:
            low = mid
        else:
            high = mid
    return low
