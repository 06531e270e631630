"""The arithmetic from attack counts to ε lower bounds (privml/attacks/_bounds.py).

The one-run bound (Steinke, Nasr & Jagielski 2023, arXiv 2305.08846) is checked
three ways: against a closed form that follows from the paper's Theorem 3.1,
against an independent brute-force evaluation of the theorem's tail bound
written here with exact integer binomials and a grid search, and for its
properties (monotone in the counts, δ only weakens it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from privml.attacks import clopper_pearson, epsilon_lower_bound, one_run_lower_bound
from privml.exceptions import ConfigurationError

# --- Clopper–Pearson ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 50, 1000])
@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.999])
def test_clopper_pearson_is_scipys_exact_interval(n, confidence):
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        if not 0 <= k <= n:
            continue
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
        low, high = clopper_pearson(k, n, confidence)
        assert low == pytest.approx(ci.low, abs=1e-12)
        assert high == pytest.approx(ci.high, abs=1e-12)


def test_clopper_pearson_covers_at_its_confidence():
    # Exact coverage: sum the binomial probabilities of the k whose interval misses p.
    n, confidence = 40, 0.9
    intervals = [clopper_pearson(k, n, confidence) for k in range(n + 1)]
    for p in (0.01, 0.2, 0.5, 0.77, 0.99):
        missed = [k for k, (lo, hi) in enumerate(intervals) if not lo <= p <= hi]
        assert sum(stats.binom.pmf(k, n, p) for k in missed) <= 1 - confidence


# --- the hypothesis-testing bound --------------------------------------------------------------


def _reference_bound(tp, fn, fp, tn, delta, confidence):
    """The same bound from scipy's binomtest intervals, written out term by term."""
    tpr_low = stats.binomtest(tp, tp + fn).proportion_ci(confidence, method="exact").low
    fpr_high = stats.binomtest(fp, fp + tn).proportion_ci(confidence, method="exact").high
    best = 0.0
    if tpr_low - delta > 0:
        best = max(best, math.log((tpr_low - delta) / fpr_high))
    if 1 - fpr_high - delta > 0:
        best = max(best, math.log((1 - fpr_high - delta) / (1 - tpr_low)))
    return best


@pytest.mark.parametrize(
    "counts", [(900, 100, 10, 990), (100, 0, 0, 100), (30, 70, 1, 99), (5, 5, 5, 5), (0, 10, 0, 10)]
)
@pytest.mark.parametrize("delta", [0.0, 1e-5, 0.1])
def test_epsilon_lower_bound_matches_its_formula(counts, delta):
    assert epsilon_lower_bound(*counts, delta=delta) == pytest.approx(
        _reference_bound(*counts, delta, 0.95), abs=1e-9
    )


def test_a_perfect_attack_on_many_examples_proves_a_large_epsilon():
    # 1000 members all caught, 1000 non-members never: TPR_low ≈ 0.9963, FPR_high ≈ 0.0037.
    assert epsilon_lower_bound(1000, 0, 0, 1000, delta=0.0) == pytest.approx(5.6, abs=0.05)
    assert epsilon_lower_bound(10, 0, 0, 10, delta=0.0) < epsilon_lower_bound(
        100, 0, 0, 100, delta=0.0
    )


def test_a_coin_proves_nothing():
    assert epsilon_lower_bound(500, 500, 500, 500, delta=1e-5) == 0.0
    assert epsilon_lower_bound(0, 0, 5, 5, delta=1e-5) == 0.0  # no members: no claim
    assert epsilon_lower_bound(5, 5, 0, 0, delta=1e-5) == 0.0


@given(
    tp=st.integers(0, 300),
    fn=st.integers(0, 300),
    fp=st.integers(0, 300),
    tn=st.integers(0, 300),
    delta=st.sampled_from([0.0, 1e-5, 0.05]),
)
def test_epsilon_lower_bound_is_monotone_in_the_counts(tp, fn, fp, tn, delta):
    """One more caught member or one more cleared non-member never lowers the bound; one more
    missed member or falsely accused non-member never raises it; more confidence never raises it."""
    base = epsilon_lower_bound(tp, fn, fp, tn, delta=delta)
    assert base >= 0.0
    eps = 1e-9
    assert epsilon_lower_bound(tp + 1, fn, fp, tn, delta=delta) >= base - eps  # one more caught
    if fn > 0:  # a miss turned into a catch
        assert epsilon_lower_bound(tp + 1, fn - 1, fp, tn, delta=delta) >= base - eps
    if fp > 0:  # a false accusation turned into a clearance
        assert epsilon_lower_bound(tp, fn, fp - 1, tn + 1, delta=delta) >= base - eps
    assert epsilon_lower_bound(tp, fn, fp, tn, delta=min(delta * 2 + 1e-3, 0.5)) <= base + eps
    assert epsilon_lower_bound(tp, fn, fp, tn, delta=delta, confidence=0.99) <= base + eps


# --- the one-run bound -------------------------------------------------------------------------


def _pvalue_brute(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Theorem 5.2 of Steinke, Nasr & Jagielski 2023, evaluated term by term from the binomial
    probabilities written out with integer coefficients (no scipy)."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(r + 1)]
    tail = sum(pmf[v:])
    if delta == 0:
        return min(tail, 1.0)
    worst = max(sum(pmf[v - i : v]) / i for i in range(1, v + 1)) if v else 0.0
    return min(tail + 2 * m * delta * worst, 1.0)


def _bound_brute(m: int, r: int, v: int, delta: float, confidence: float, step: float) -> float:
    """The largest ε on a grid of ``step`` whose p-value is at most 1 - confidence: a scan
    (coarse, then fine within the last coarse cell), no bisection."""
    best = 0.0
    for width in (100 * step, step):
        eps = best
        while eps < 20 and _pvalue_brute(m, r, v, eps + width, delta) <= 1 - confidence:
            eps += width
        best = eps
    return best


@pytest.mark.parametrize(
    ("m", "r", "v", "delta"),
    [
        (100, 10, 10, 0.0),
        (100, 20, 18, 0.0),
        (200, 40, 33, 1e-5),
        (1000, 60, 55, 1e-5),
        (1000, 60, 58, 1e-4),
        (50, 50, 40, 1e-4),
    ],
)
def test_one_run_bound_matches_a_brute_force_evaluation_of_the_theorem(m, r, v, delta):
    step = 1e-3
    brute = _bound_brute(m, r, v, delta, 0.95, step)
    assert brute > 0
    assert one_run_lower_bound(m, r, v, delta=delta) == pytest.approx(brute, abs=step)


@pytest.mark.parametrize("r", [1, 10, 100, 1000, 10_000])
def test_one_run_bound_for_perfect_guesses_has_the_closed_form_of_theorem_3_1(r):
    """With δ = 0 and every guess right, Theorem 3.1's tail is q^r, q = e^ε / (1 + e^ε); the
    bound is the ε with q^r = 1 - confidence: ε = logit((1 - confidence)^(1/r)), or 0 where
    that is negative (a single guess cannot reach 95%)."""
    q = 0.05 ** (1 / r)
    expected = max(math.log(q / (1 - q)), 0.0)
    assert one_run_lower_bound(r, r, r, delta=0.0) == pytest.approx(expected, abs=1e-7)
    assert one_run_lower_bound(10 * r, r, r, delta=0.0) == pytest.approx(expected, abs=1e-7)


def test_one_run_bound_grows_with_evidence_and_shrinks_with_delta():
    assert one_run_lower_bound(1000, 100, 50, delta=1e-5) == 0.0  # a coin
    values = [one_run_lower_bound(1000, 100, v, delta=1e-5) for v in (60, 70, 80, 90, 100)]
    assert values == sorted(values) and values[0] > 0
    by_delta = [one_run_lower_bound(10_000, 1000, 900, delta=d) for d in (0.0, 1e-6, 1e-5, 1e-4)]
    assert by_delta == sorted(by_delta, reverse=True)
    # The δ term is 2mδ times a tail: with m large enough it swamps any evidence.
    assert one_run_lower_bound(1_000_000, 1000, 1000, delta=0.01) == 0.0


def test_one_run_bound_never_exceeds_what_a_perfect_audit_could_show():
    """Nothing beats all guesses right (Theorem 3.1's tail is smallest for v = r)."""
    for v in range(0, 201, 25):
        assert one_run_lower_bound(1000, 200, v, delta=1e-5) <= one_run_lower_bound(
            1000, 200, 200, delta=1e-5
        )


def test_one_run_bound_on_many_canaries_is_quick_and_finite():
    eps = one_run_lower_bound(1_000_000, 100_000, 60_000, delta=1e-5)
    assert 0.0 < eps < 1.0


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: clopper_pearson(-1, 5, 0.95), "k must be 0 or more"),
        (lambda: clopper_pearson(6, 5, 0.95), "0 <= k <= n"),
        (lambda: clopper_pearson(0, 0, 0.95), "n >= 1"),
        (lambda: clopper_pearson(1, 5, 1.0), "confidence must lie in (0, 1)"),
        (lambda: clopper_pearson(1.5, 5, 0.9), "k must be a whole number"),
        (lambda: epsilon_lower_bound(-1, 1, 1, 1, delta=1e-5), "tp must be 0 or more"),
        (lambda: epsilon_lower_bound(1, 1, 1, True, delta=1e-5), "tn must be a whole number"),
        (lambda: epsilon_lower_bound(1, 1, 1, 1, delta=1.0), "delta must lie in [0, 1)"),
        (lambda: epsilon_lower_bound(1, 1, 1, 1, delta=-1e-9), "delta must lie in [0, 1)"),
        (lambda: epsilon_lower_bound(1, 1, 1, 1, delta=float("nan")), "delta must lie"),
        (lambda: epsilon_lower_bound(1, 1, 1, 1, delta=0, confidence=0), "confidence must lie"),
        (lambda: one_run_lower_bound(10, 11, 5, delta=1e-5), "cannot exceed the canaries"),
        (lambda: one_run_lower_bound(10, 5, 6, delta=1e-5), "cannot exceed guesses"),
        (lambda: one_run_lower_bound(-3, 0, 0, delta=1e-5), "m must be 0 or more"),
        (lambda: one_run_lower_bound(10, 5, 5, delta=1e-5, confidence=1.5), "confidence"),
        (lambda: one_run_lower_bound(10, 5, 5, delta="0"), "delta must be a number"),
        (lambda: one_run_lower_bound(10**7, 5, 5, delta=1e-5), "at most 1,000,000"),
    ],
)
def test_bad_input_is_refused_with_a_configuration_error(call, words):
    with pytest.raises(ConfigurationError) as err:
        call()
    assert words in str(err.value)


def test_counts_may_be_numpy_integers():
    assert epsilon_lower_bound(*np.array([90, 10, 1, 99]), delta=1e-5) > 1.0
    assert one_run_lower_bound(np.int64(100), np.int64(20), np.int64(20), delta=0.0) > 0
