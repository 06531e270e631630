"""Bad input is refused cheaply, and every accounting computation is bounded in memory.

Memory is measured with tracemalloc, which sees NumPy's allocations; no wall-clock
assertions (hypothesis' own deadline is off, the example counts are small).
"""

from __future__ import annotations

import math
import tracemalloc
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import privml
from privml import BudgetExceededError, ConfigurationError
from privml.accounting import PrivacyEvent
from privml.accounting._pld import pld_epsilon, pld_of
from privml.accounting.composition import Tally, epsilon_alone, unit_counts
from privml.accounting.filter import filter_figure

PEAK_BYTES = 200 * 2**20  # far above any bounded computation, far below 2·10⁹ points


def peak_of(fn):
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PrivacyEvent.laplace(epsilon=1e-320), r"epsilon must lie in \[1e-09, 1e\+06\]"),
        (lambda: PrivacyEvent.laplace(epsilon=1e7), r"epsilon must lie in \[1e-09, 1e\+06\]"),
        (lambda: PrivacyEvent.laplace(scale=1e-320), r"scale must lie in"),
        (lambda: PrivacyEvent.generic(epsilon=1e-320), r"epsilon must lie in"),
        (lambda: PrivacyEvent.generic(epsilon=1, delta=1e-320), r"delta must be 0 or lie in"),
        (lambda: PrivacyEvent.gaussian(sigma=1e-320), r"sigma must lie in"),
        (lambda: PrivacyEvent.gaussian(noise_multiplier=1e-6), r"noise_multiplier must lie in"),
        (lambda: PrivacyEvent.gaussian(sigma=1.0, sensitivity=1e9), r"sigma / sensitivity"),
        (
            lambda: PrivacyEvent.dp_sgd(noise_multiplier=1, sample_rate=1e-320, steps=1),
            r"sample_rate must lie in \[1e-09, 1\]",
        ),
        (
            lambda: PrivacyEvent.dp_sgd(noise_multiplier=1, sample_rate=0.1, steps=10**9),
            r"steps must be an integer in \[1, 1e\+08\]",
        ),
        (lambda: privml.Budget(epsilon=1e-320), r"budget epsilon must lie in"),
        (lambda: privml.Budget(epsilon=1.0, delta=1e-320), r"budget delta must be 0 or lie in"),
    ],
)
def test_absurd_parameters_are_refused_with_the_accepted_range(make, message):
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_a_huge_epsilon_is_refused_before_any_costly_accounting(make_vault):
    vault = make_vault(epsilon=1.0, delta=1e-5)
    event = PrivacyEvent.laplace(epsilon=1e6)  # its PLD at 1e-3 would hold 2·10⁹ points

    def refused():
        with pytest.raises(BudgetExceededError):
            vault.ledger.charge("d", event=event, principal="a", purpose="q")

    _, peak = peak_of(refused)
    assert peak < PEAK_BYTES
    refusal = vault.audit.entries(action="ledger.refuse").iloc[-1]
    assert refusal["details"]["requested"] == 1e6
    assert vault.audit.verify().ok


def test_a_huge_epsilon_that_fits_is_charged_and_reported_in_bounded_memory(make_vault):
    vault = make_vault(epsilon=1e6, delta=1e-5)
    event = PrivacyEvent.laplace(epsilon=1e6)
    charge, peak = peak_of(
        lambda: vault.ledger.charge("d", event=event, principal="a", purpose="q")
    )
    assert charge.epsilon_after == 1e6 and peak < PEAK_BYTES
    status, peak = peak_of(lambda: vault.budget("d"))
    assert status.epsilon_spent == 1e6 and peak < PEAK_BYTES


# Extreme but valid parameters, at both ends of every accepted range.
extreme = st.one_of(
    st.builds(
        lambda e: PrivacyEvent.laplace(epsilon=e),
        st.sampled_from([1e-9, 1e-3, 1.0, 50.0, 1e3, 1e6]) | st.floats(1e-9, 1e6),
    ),
    st.builds(
        lambda s: PrivacyEvent.gaussian(noise_multiplier=s),
        st.sampled_from([1e-3, 0.05, 1.0, 1e4, 1e9]) | st.floats(1e-3, 1e9),
    ),
    st.builds(
        lambda s, q, steps: PrivacyEvent.dp_sgd(noise_multiplier=s, sample_rate=q, steps=steps),
        st.sampled_from([1e-3, 0.3, 1.1, 10.0, 1e9]),
        st.sampled_from([1e-9, 1e-4, 0.004, 0.5, 1.0]),
        st.sampled_from([1, 10, 2344, 10**5, 10**8]),
    ),
    st.builds(
        lambda e, d: PrivacyEvent.generic(epsilon=e, delta=d),
        st.sampled_from([1e-9, 0.5, 1e3, 1e6]),
        st.sampled_from([0.0, 1e-30, 1e-6, 0.5]),
    ),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(extreme, min_size=1, max_size=2), st.sampled_from([0.0, 1e-30, 1e-5, 0.1]))
def test_every_accounting_computation_is_bounded_for_extreme_parameters(events, delta):
    def work():
        tally = Tally.of(events)
        figure = filter_figure(tally, delta)
        alone = [epsilon_alone(e, delta) for e in events]
        units: Counter = Counter()
        for e in events:
            unit, count = unit_counts(e)
            units[unit] += count
        pld = pld_of(units, 1e-4)
        fixed = pld_epsilon(pld, delta) if pld is not None and delta > 0 else None
        return figure, alone, fixed

    (figure, alone, fixed), peak = peak_of(work)
    assert peak < PEAK_BYTES
    assert figure.epsilon >= 0 and not math.isnan(figure.epsilon)
    assert all(a >= 0 and not math.isnan(a) for a in alone)
    if fixed is not None:
        assert fixed >= 0


def test_a_session_release_with_an_absurd_epsilon_is_refused_and_audited_cleanly(dp_vault):
    dp = dp_vault.session("ana", purpose="studies").dp
    with pytest.raises(BudgetExceededError, match="remaining"):
        dp.count("patients", epsilon=1e6)
    with pytest.raises(ConfigurationError, match=r"epsilon must lie in \[1e-09, 1e\+06\]"):
        dp.count("patients", epsilon=1e-320)
    with pytest.raises(ConfigurationError, match="must lie in"):
        dp.count("patients", epsilon=1e7)
    assert dp_vault.budget("patients").committed == 0
    assert dp_vault.audit.verify().ok
