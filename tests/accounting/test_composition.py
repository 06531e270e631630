"""The ledger's figures against independent dp_accounting computations made here in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event as de
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from privml import BudgetExceededError, ConfigurationError
from privml.accounting import PrivacyEvent
from privml.accounting.composition import ORDERS, rdp_curve

DELTA = 1e-5
Q, SIGMA, STEPS = 256 / 60000, 1.1, 2344
SGD_EVENT = de.SelfComposedDpEvent(de.PoissonSampledDpEvent(Q, de.GaussianDpEvent(SIGMA)), STEPS)


def rdp(event, delta=DELTA):
    accountant = RdpAccountant()
    accountant.compose(event)
    return accountant.get_epsilon(delta)


def pld(event, discretization, delta=DELTA):
    accountant = PLDAccountant(value_discretization_interval=discretization)
    accountant.compose(event)
    return accountant.get_epsilon(delta)


def sgd():
    return PrivacyEvent.dp_sgd(noise_multiplier=SIGMA, batch_size=256, n=60000, steps=STEPS)


# The privacy filter, computed here independently of privml: each Rényi order α_j of the
# grid gets δ_j = (1 - 1/10)·δ / 17, dp_accounting converts the order's RDP at δ_j, and
# the filter's figure is the smallest (basic composition joins in for pure ε events).
FILTER_ORDERS = [1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 63, 128, 256]


def filter_epsilon(event, delta=DELTA):
    share = 0.9 * delta / len(FILTER_ORDERS)
    figures = []
    for order in FILTER_ORDERS:
        accountant = RdpAccountant(orders=[order])
        accountant.compose(event)
        figures.append(accountant.get_epsilon(share))
    return min(figures)


def test_dp_sgd_admission_is_the_rdp_filter_not_pld(make_vault):
    # Budget 1.0 lies above the PLD (0.92) figure, which holds only for a sequence fixed in
    # advance, and the single-order RDP one (1.0988); the filter's figure (1.37), proven for
    # adaptively chosen releases, does not fit: the run is refused.
    independent_rdp, independent_pld = rdp(SGD_EVENT), pld(SGD_EVENT, 1e-3)
    sound = filter_epsilon(SGD_EVENT)
    assert independent_rdp == pytest.approx(1.0988, abs=1e-4)
    assert independent_pld == pytest.approx(0.92, abs=5e-3)
    assert sound == pytest.approx(1.366, abs=5e-3)
    vault = make_vault(epsilon=1.0, delta=DELTA)
    with pytest.raises(BudgetExceededError) as info:
        vault.ledger.charge("d", event=sgd(), principal="ml", purpose="train")
    assert info.value.after == pytest.approx(sound, rel=1e-9)
    assert vault.budget("d").committed == 0

    vault = make_vault(epsilon=1.4, delta=DELTA)
    charge = vault.ledger.charge("d", event=sgd(), principal="ml", purpose="train")
    assert charge.accounting.method == "rdp"
    assert charge.epsilon_after == pytest.approx(sound, rel=1e-9)
    assert charge.accounting.accountant.startswith("dp_accounting ")
    status = vault.budget("d")
    assert status.method == "rdp" and status.epsilon_spent == pytest.approx(sound, rel=1e-9)
    # PLD is reported beside it, labelled, at the report discretization.
    assert status.discretization == 1e-4
    assert status.epsilon_fixed_sequence == pytest.approx(pld(SGD_EVENT, 1e-4), rel=1e-9)


def mixed_workload():
    yield sgd()
    for _ in range(20):
        yield PrivacyEvent.laplace(epsilon=0.1)
    for _ in range(5):
        yield PrivacyEvent.gaussian(sigma=10.0, sensitivity=1.0)


MIXED = de.ComposedDpEvent(
    [
        SGD_EVENT,
        de.SelfComposedDpEvent(de.LaplaceDpEvent(10.0), 20),
        de.SelfComposedDpEvent(de.GaussianDpEvent(10.0), 5),
    ]
)


def test_mixed_workload_matches_an_independent_filter_computation(make_vault):
    vault = make_vault(epsilon=3.0, delta=DELTA)
    for i, event in enumerate(mixed_workload()):
        vault.ledger.charge("d", event=event, principal=f"p{i % 2}", purpose="mixed")
    sound, fixed = filter_epsilon(MIXED), pld(MIXED, 1e-4)
    assert rdp(MIXED) == pytest.approx(2.31, abs=5e-3)  # one order chosen after the fact
    assert sound == pytest.approx(2.64, abs=5e-3)  # 17 orders sharing δ: the filter
    assert fixed == pytest.approx(2.15, abs=5e-3)
    status = vault.budget("d")
    assert status.committed == 26
    assert status.method == "rdp"
    assert status.epsilon_spent == pytest.approx(sound, rel=1e-9)
    assert status.accounting.rdp_epsilon == pytest.approx(sound, rel=1e-9)
    assert status.epsilon_fixed_sequence == pytest.approx(fixed, rel=1e-6)
    # Naive: basic composition, δ split evenly over the 6 releases that need one.
    share = DELTA / 6
    naive = (
        min(rdp(SGD_EVENT, share), pld(SGD_EVENT, 1e-4, share))
        + 20 * 0.1
        + 5 * min(rdp(de.GaussianDpEvent(10.0), share), pld(de.GaussianDpEvent(10.0), 1e-4, share))
    )
    assert status.epsilon_naive == pytest.approx(naive, rel=1e-9)
    assert naive == pytest.approx(4.95, abs=0.02)
    assert status.epsilon_spent / status.epsilon_naive == pytest.approx(0.533, abs=0.01)


def test_a_workload_that_fits_only_by_pld_is_cut_short(make_vault):
    # The analyst adapts each request to the answers so far; at budget 2.2 the PLD figure
    # of the whole workload (2.15) would fit, the filter's does not: the last requests are
    # refused, and what was admitted is within the filter's budget.
    vault = make_vault(epsilon=2.2, delta=DELTA)
    refused = 0
    for i, event in enumerate(mixed_workload()):
        try:
            vault.ledger.charge("d", event=event, principal=f"p{i % 2}", purpose="mixed")
        except BudgetExceededError:
            refused += 1
    status = vault.budget("d")
    assert refused > 0 and status.committed == 26 - refused
    assert status.epsilon_spent <= 2.2
    events = vault.ledger.events("d")
    admitted = de.ComposedDpEvent([PrivacyEvent.from_json(e).dp_event for e in _rows(vault)])
    assert len(events) == status.committed
    assert status.epsilon_spent == pytest.approx(filter_epsilon(admitted), rel=1e-9)


def _rows(vault):
    with vault._state.engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT event FROM ledger_events ORDER BY id")]


def test_pure_budget_composes_additively_and_refuses_gaussians(make_vault):
    vault = make_vault(epsilon=1.0, delta=0.0)
    for _ in range(3):
        vault.ledger.charge(
            "d", event=PrivacyEvent.laplace(epsilon=0.25), principal="a", purpose="q"
        )
    vault.ledger.charge("d", event=PrivacyEvent.generic(epsilon=0.2), principal="a", purpose="q")
    status = vault.budget("d")
    assert status.epsilon_spent == pytest.approx(0.95, rel=1e-12)
    assert status.method == "basic"
    with pytest.raises(ConfigurationError, match=r"pure-DP budget \(δ = 0\).*unbounded"):
        vault.ledger.charge(
            "d", event=PrivacyEvent.gaussian(sigma=100.0), principal="a", purpose="q"
        )
    refusals = vault.audit.entries(action="ledger.refuse")
    assert refusals["outcome"].tolist() == ["refused"]
    assert vault.budget("d").epsilon_spent == status.epsilon_spent


def test_generic_pure_event_rdp_is_the_randomized_response_bound():
    eps = 0.7
    curve = rdp_curve(PrivacyEvent.generic(epsilon=eps))
    laplace = rdp_curve(PrivacyEvent.laplace(epsilon=eps))
    assert np.all(curve <= eps + 1e-12)
    assert np.all(curve >= laplace - 1e-12)  # no ε-DP mechanism is worse than RR
    p = math.exp(eps) / (1 + math.exp(eps))
    a = ORDERS[50]
    exact = math.log(p**a * (1 - p) ** (1 - a) + (1 - p) ** a * p ** (1 - a)) / (a - 1)
    assert curve[50] == pytest.approx(exact, rel=1e-12)


def test_generic_approximate_events_share_a_tenth_of_delta(make_vault):
    vault = make_vault(epsilon=5.0, delta=1e-5)
    charge = vault.ledger.charge(
        "d",
        event=PrivacyEvent.generic(epsilon=1.0, delta=1e-6, library="diffprivlib"),
        principal="a",
        purpose="q",
    )
    # Its ε-randomized-response part composes (basic composition is the smaller figure);
    # its δ comes out of the reserve of δ/10 = 1e-6, which it uses up.
    assert charge.accounting.method == "basic" and charge.epsilon_after == 1.0
    assert charge.accounting.generic_delta == 1e-6
    assert charge.accounting.rdp_epsilon > 1.0
    with pytest.raises(BudgetExceededError, match=r"may use up δ=1e-06 together"):
        vault.ledger.charge(
            "d", event=PrivacyEvent.generic(epsilon=0.1, delta=1e-9), principal="a", purpose="q"
        )
    # Pure events still fit.
    vault.ledger.charge("d", event=PrivacyEvent.generic(epsilon=0.1), principal="a", purpose="q")
    assert vault.budget("d").epsilon_spent == pytest.approx(1.1)


def test_a_budget_delta_below_a_generic_events_delta_refuses_it(make_vault):
    vault = make_vault(epsilon=5.0, delta=1e-7)
    with pytest.raises(BudgetExceededError, match="remaining"):
        vault.ledger.charge(
            "d", event=PrivacyEvent.generic(epsilon=0.1, delta=1e-6), principal="a", purpose="q"
        )


def test_pure_events_compose_to_less_at_positive_delta(make_vault):
    vault = make_vault(epsilon=1.0, delta=1e-6)
    for _ in range(100):
        vault.ledger.charge(
            "d", event=PrivacyEvent.laplace(epsilon=0.01), principal="a", purpose="q"
        )
    status = vault.budget("d")
    composed = de.SelfComposedDpEvent(de.LaplaceDpEvent(100.0), 100)
    independent = filter_epsilon(composed, 1e-6)
    assert independent == pytest.approx(0.48, abs=0.01)
    assert status.method == "rdp"
    assert status.epsilon_spent == pytest.approx(independent, rel=1e-9)
    assert status.epsilon_naive == pytest.approx(1.0)
    assert status.epsilon_fixed_sequence == pytest.approx(pld(composed, 1e-4, 1e-6), rel=1e-9)
