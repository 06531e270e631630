"""The ledger's figures against independent dp_accounting computations made here in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event as de
from dp_accounting.pld import PLDAccountant, common, privacy_loss_distribution
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


def test_dp_sgd_matches_dp_accounting(make_vault):
    # Budget 1.0 lies between the PLD figure (0.92) and the RDP one (1.0988): RDP alone
    # would refuse, so the check must compute the PLD at 1e-3 and admit the run.
    vault = make_vault(epsilon=1.0, delta=DELTA)
    charge = vault.ledger.charge("d", event=sgd(), principal="ml", purpose="train")
    independent_rdp, independent_pld = rdp(SGD_EVENT), pld(SGD_EVENT, 1e-3)
    assert independent_rdp == pytest.approx(1.0988, abs=1e-4)
    assert independent_pld == pytest.approx(0.92, abs=5e-3)
    assert charge.accounting.method == "pld"
    assert charge.accounting.discretization == 1e-3
    assert charge.accounting.rdp_epsilon == pytest.approx(independent_rdp, rel=1e-9)
    assert charge.epsilon_after == pytest.approx(independent_pld, rel=1e-9)
    assert charge.accounting.accountant.startswith("dp_accounting ")
    status = vault.budget("d")  # reports use the finer discretization
    assert status.method == "pld" and status.discretization == 1e-4
    assert status.epsilon_spent == pytest.approx(pld(SGD_EVENT, 1e-4), rel=1e-9)
    assert status.accounting.rdp_epsilon == pytest.approx(independent_rdp, rel=1e-9)


def mixed_workload():
    yield sgd()
    for _ in range(20):
        yield PrivacyEvent.laplace(epsilon=0.1)
    for _ in range(5):
        yield PrivacyEvent.gaussian(sigma=10.0, sensitivity=1.0)


def test_mixed_workload_matches_dp_accounting(make_vault):
    vault = make_vault(epsilon=2.2, delta=DELTA)  # RDP (2.31) alone would refuse the last ones
    for i, event in enumerate(mixed_workload()):
        vault.ledger.charge("d", event=event, principal=f"p{i % 2}", purpose="mixed")
    composed = de.ComposedDpEvent(
        [
            SGD_EVENT,
            de.SelfComposedDpEvent(de.LaplaceDpEvent(10.0), 20),
            de.SelfComposedDpEvent(de.GaussianDpEvent(10.0), 5),
        ]
    )
    independent_rdp, independent_pld = rdp(composed), pld(composed, 1e-4)
    assert independent_rdp == pytest.approx(2.31, abs=5e-3)
    assert independent_pld == pytest.approx(2.15, abs=5e-3)
    status = vault.budget("d")
    assert status.committed == 26
    assert status.accounting.rdp_epsilon == pytest.approx(independent_rdp, rel=1e-9)
    assert status.epsilon_spent == pytest.approx(independent_pld, rel=1e-6)
    assert status.method == "pld"
    # Naive: basic composition, δ split evenly over the 6 releases that need one.
    share = DELTA / 6
    naive = (
        min(rdp(SGD_EVENT, share), pld(SGD_EVENT, 1e-4, share))
        + 20 * 0.1
        + 5 * min(rdp(de.GaussianDpEvent(10.0), share), pld(de.GaussianDpEvent(10.0), 1e-4, share))
    )
    assert status.epsilon_naive == pytest.approx(naive, rel=1e-9)
    assert naive == pytest.approx(4.95, abs=0.02)
    assert status.epsilon_spent / status.epsilon_naive == pytest.approx(0.43, abs=0.01)


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


def test_generic_approximate_event_is_accounted_by_its_dominating_pair(make_vault):
    vault = make_vault(epsilon=5.0, delta=1e-5)
    charge = vault.ledger.charge(
        "d",
        event=PrivacyEvent.generic(epsilon=1.0, delta=1e-6, library="diffprivlib"),
        principal="a",
        purpose="q",
    )
    assert charge.accounting.method == "pld"  # RDP cannot represent δ > 0
    assert math.isinf(charge.accounting.rdp_epsilon)
    expected = privacy_loss_distribution.from_privacy_parameters(
        common.DifferentialPrivacyParameters(1.0, 1e-6), value_discretization_interval=1e-3
    ).get_epsilon_for_delta(1e-5)
    assert charge.epsilon_after == pytest.approx(expected, rel=1e-9)
    assert charge.epsilon_after <= 1.0 + 1e-3


def test_a_budget_delta_below_a_generic_events_delta_refuses_it(make_vault):
    vault = make_vault(epsilon=5.0, delta=1e-7)
    with pytest.raises(BudgetExceededError, match="remaining"):
        vault.ledger.charge(
            "d", event=PrivacyEvent.generic(epsilon=0.1, delta=1e-6), principal="a", purpose="q"
        )


def test_pure_events_compose_to_far_less_at_positive_delta(make_vault):
    vault = make_vault(epsilon=1.0, delta=1e-6)
    for _ in range(100):
        vault.ledger.charge(
            "d", event=PrivacyEvent.laplace(epsilon=0.01), principal="a", purpose="q"
        )
    status = vault.budget("d")
    independent = pld(de.SelfComposedDpEvent(de.LaplaceDpEvent(100.0), 100), 1e-4, 1e-6)
    assert independent == pytest.approx(0.39, abs=5e-3)
    assert status.epsilon_spent == pytest.approx(independent, rel=1e-9)
    assert status.epsilon_naive == pytest.approx(1.0)
