"""The one-run bound checked against published values and an independent implementation.

:func:`privml.attacks.one_run_lower_bound` implements Steinke, Nasr & Jagielski
2023, "Privacy auditing with one (1) training run" (arXiv 2305.08846). The
paper's Appendix D states the bound as code: ``p_value_DP_audit(m, r, v, eps,
delta)`` and a bisection ``get_eps_audit``. That code is reproduced verbatim in
public repositories, which is where the reference values below come from (the
stored text of the paper itself gives no (m, r, v) -> ε table to compare with):

* ubc-systopia/panoramia-privacy-measurement, ``O1_Steinke_Code/o1_audit.py``
  (the paper's ``p_value_DP_audit`` / ``get_eps_audit``, δ term as in Appendix D);
* google-deepmind/jax_privacy, ``jax_privacy/auditing.py`` (``_one_run_p_value``:
  the same tail ``P[Binomial(r, q) >= v] + 2 m δ max_i P[v - i <= Binomial(r, q) < v] / i``);
* outputs of that reference code published with trained models
  (huggingface.co/melihcatal/codedp-cpt-models, ``starcoder2-7b/base/audit_results.json``):
  m = 500 canaries, r = 100 guesses, v = 100 right, δ = 1e-5 give
  ε = 3.4791953936219215 at p = 0.05 and ε = 3.023197554051876 at p = 0.01
  (30 bisection steps: resolution 4 / 2^30 < 4e-9).

The independent implementation here is written from the paper's statement
(Theorem 3.1: under ε-DP the right guesses are dominated by Binomial(r, q),
q = e^ε / (1 + e^ε); Theorem 5.2 with Appendix D: under (ε, δ)-DP the tail at v
gains ``2 m δ max_{1<=i<=v} P[v - i <= Binomial(r, q) < v] / i``), with its own
arithmetic: binomial terms summed directly from log-factorials, no scipy, and its
own bisection to 1e-12.
"""

from __future__ import annotations

import itertools
import math

import pytest

from privml.attacks import one_run_lower_bound

TOLERANCE = 1e-7  # privml bisects to 1e-9; the two p-values agree to ~1e-13 relative


def _log_pmf(k: int, r: int, q: float) -> float:
    """log P[Binomial(r, q) = k], from log-factorials."""
    if q == 1.0:
        return 0.0 if k == r else -math.inf
    return (
        math.lgamma(r + 1)
        - math.lgamma(k + 1)
        - math.lgamma(r - k + 1)
        + k * math.log(q)
        + (r - k) * math.log1p(-q)
    )


def paper_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The paper's bound on P[at least v of r guesses right] under (ε, δ)-DP, by direct sums."""
    q = 1.0 / (1.0 + math.exp(-eps))
    pmf = [math.exp(_log_pmf(k, r, q)) for k in range(r + 1)]
    tail = math.fsum(pmf[v:])
    # below[i] = P[v - i <= Binomial(r, q) < v], summed from the top down
    below = list(itertools.accumulate(pmf[v - i] for i in range(1, v + 1)))
    worst = max((mass / i for i, mass in enumerate(below, start=1)), default=0.0)
    return min(tail + 2.0 * m * delta * worst, 1.0)


def paper_epsilon(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """The largest ε whose p-value is at most 1 - confidence (0 when none), by bisection."""
    alpha = 1.0 - confidence
    if paper_p_value(m, r, v, 0.0, delta) > alpha:
        return 0.0
    low, high = 0.0, 64.0
    while high - low > 1e-12:
        mid = (low + high) / 2.0
        low, high = (mid, high) if paper_p_value(m, r, v, mid, delta) <= alpha else (low, mid)
    return low


def test_matches_published_outputs_of_the_papers_code():
    # m=500, r=100, v=100, δ=1e-5 (see the module docstring for where these were printed)
    assert one_run_lower_bound(500, 100, 100, delta=1e-5, confidence=0.95) == pytest.approx(
        3.4791953936219215, abs=1e-8
    )
    assert one_run_lower_bound(500, 100, 100, delta=1e-5, confidence=0.99) == pytest.approx(
        3.023197554051876, abs=1e-8
    )


def test_pure_dp_all_right_has_a_closed_form():
    # δ = 0 and v = r: the p-value is q^r, so ε = logit(alpha^(1/r)) exactly.
    for r, confidence in [(10, 0.95), (100, 0.95), (100, 0.99), (1000, 1 - 1e-7)]:
        q = (1 - confidence) ** (1 / r)
        expected = math.log(q / (1 - q))
        assert one_run_lower_bound(5000, r, r, delta=0.0, confidence=confidence) == pytest.approx(
            expected, abs=TOLERANCE
        )


DELTAS = [0.0, 1e-6, 1e-5, 1e-3]
CONFIDENCES = [0.9, 0.95, 0.99, 1 - 1e-7]
GRID = [
    (m, r, round(r * accuracy), delta, confidence)
    for (m, r), accuracy, delta, confidence in itertools.product(
        [(100, 10), (100, 100), (1000, 50), (1000, 500), (10_000, 200)],
        [0.5, 0.7, 0.9, 1.0],
        DELTAS,
        CONFIDENCES,
    )
]


@pytest.mark.parametrize(
    ("m", "r", "v"), sorted({(m, r, v) for m, r, v, _, _ in GRID}), ids=lambda x: str(x)
)
def test_agrees_with_an_independent_implementation(m, r, v):
    for delta, confidence in itertools.product(DELTAS, CONFIDENCES):
        ours = one_run_lower_bound(m, r, v, delta=delta, confidence=confidence)
        theirs = paper_epsilon(m, r, v, delta, confidence)
        assert ours == pytest.approx(theirs, abs=TOLERANCE), (m, r, v, delta, confidence)


def test_the_delta_term_only_ever_lowers_the_bound():
    for m, r, v, delta, confidence in GRID:
        if delta > 0:
            assert one_run_lower_bound(
                m, r, v, delta=delta, confidence=confidence
            ) <= one_run_lower_bound(m, r, v, delta=0.0, confidence=confidence)


def test_the_p_value_at_the_bound_is_the_significance():
    # At the returned ε the paper's p-value is at most 1 - confidence, and just above it exceeds it.
    for m, r, v, delta, confidence in GRID:
        eps = one_run_lower_bound(m, r, v, delta=delta, confidence=confidence)
        if eps == 0.0:
            assert paper_p_value(m, r, v, 0.0, delta) > (1 - confidence) * (1 - 1e-9)
            continue
        assert paper_p_value(m, r, v, eps, delta) <= (1 - confidence) * (1 + 1e-9)
        assert paper_p_value(m, r, v, eps + 1e-6, delta) > 1 - confidence
