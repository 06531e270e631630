"""The privacy filter: its figure, its orders sharing δ, the δ reserve, basic composition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml.accounting import PrivacyEvent
from privml.accounting.composition import ORDERS, Tally
from privml.accounting.filter import (
    FILTER_ORDERS,
    GENERIC_DELTA_SHARE,
    admits,
    filter_figure,
    order_epsilons,
)

DELTA = 1e-5


def budget_of_order(alpha, epsilon, delta=DELTA):
    """B_α: the largest RDP at α whose conversion at δ_α = 0.9 δ / 17 is ε (written out)."""
    share = (1 - GENERIC_DELTA_SHARE) * delta / len(FILTER_ORDERS)
    c = (1 - 1 / alpha) ** (alpha - 1) / alpha  # Canonne, Kamath and Steinke 2020, Prop. 12
    return epsilon + math.log(share / c) / (alpha - 1)


def curve_at(values):
    """An RDP curve over ORDERS equal to ``values[α]`` at the filter's orders, ∞ elsewhere."""
    curve = np.full(len(ORDERS), np.inf)
    for alpha, value in values.items():
        curve[ORDERS.index(alpha)] = value
    return curve


def test_an_order_admits_exactly_up_to_its_rdp_budget():
    for alpha in FILTER_ORDERS:
        b = budget_of_order(alpha, 30.0)  # positive for every order of the grid
        at = curve_at({alpha: b})
        figure = filter_figure(Tally(at, impure=1, count=1), DELTA)
        assert figure.epsilon == pytest.approx(30.0, rel=1e-9) and figure.order == alpha
        over = Tally(curve_at({alpha: b * (1 + 1e-6)}), impure=1, count=1)
        assert not admits(filter_figure(over, DELTA), 30.0)


def test_the_figure_is_the_smallest_over_live_orders():
    # Order 4 is within its budget, order 8 is not: the figure comes from order 4.
    values = {4.0: budget_of_order(4.0, 2.0), 8.0: budget_of_order(8.0, 2.0) + 1.0}
    figure = filter_figure(Tally(curve_at(values), impure=1, count=1), DELTA)
    assert figure.order == 4.0 and figure.epsilon == pytest.approx(2.0, rel=1e-9)
    eps = order_epsilons(curve_at(values), DELTA)
    assert eps[FILTER_ORDERS.index(8.0)] == pytest.approx(3.0, rel=1e-9)


def test_a_dead_order_stays_dead():
    # Sums only grow: once an order's sum passes its budget, adding any event keeps it past.
    events = [PrivacyEvent.gaussian(noise_multiplier=3.0), PrivacyEvent.laplace(epsilon=0.2)]
    tally = Tally.empty()
    dead: set[float] = set()
    for event in events * 6:
        tally = tally.plus(event)
        per_order = order_epsilons(tally.rdp, DELTA)
        now_dead = {a for a, e in zip(FILTER_ORDERS, per_order, strict=True) if e > 1.5}
        assert dead <= now_dead
        dead = now_dead


def test_orders_share_delta_so_a_single_order_figure_is_not_enough():
    # Picking the best order after the fact with all of δ is not a filter; the ledger's
    # figure pays log(17 / 0.9) / (α - 1) more at the same order.
    sgd = PrivacyEvent.dp_sgd(noise_multiplier=1.1, sample_rate=0.01, steps=500)
    tally = Tally.of([sgd])
    figure = filter_figure(tally, DELTA)
    i = ORDERS.index(figure.order)
    a, r = figure.order, tally.rdp[i]
    whole_delta = r + math.log1p(-1 / a) - math.log(DELTA * a) / (a - 1)
    assert figure.epsilon - whole_delta == pytest.approx(math.log(17 / 0.9) / (a - 1), rel=1e-9)


def test_basic_composition_joins_only_while_every_event_is_epsilon_dp():
    pure = [PrivacyEvent.laplace(epsilon=1.0)] * 2
    assert filter_figure(Tally.of(pure), DELTA).epsilon == 2.0
    with_gauss = Tally.of([*pure, PrivacyEvent.gaussian(noise_multiplier=100.0)])
    figure = filter_figure(with_gauss, DELTA)
    assert figure.basic_epsilon is None and figure.method == "rdp"
    assert figure.epsilon > 2.0  # basic composition is dead for good


def test_pure_budget_uses_basic_composition_only():
    assert filter_figure(Tally.of([PrivacyEvent.laplace(epsilon=0.3)] * 3), 0.0).epsilon == (
        pytest.approx(0.9)
    )
    assert math.isinf(filter_figure(Tally.of([PrivacyEvent.gaussian(sigma=9.0)]), 0.0).epsilon)


def test_generic_delta_comes_from_a_reserve_of_a_tenth():
    fits = Tally.of([PrivacyEvent.generic(epsilon=0.5, delta=4e-7)] * 2)
    assert filter_figure(fits, DELTA).epsilon == 1.0
    over = fits.plus(PrivacyEvent.generic(epsilon=0.01, delta=3e-7))
    assert math.isinf(filter_figure(over, DELTA).epsilon)
    assert filter_figure(over, DELTA).generic_delta == pytest.approx(1.1e-6)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(lambda e: PrivacyEvent.laplace(epsilon=e), st.floats(0.01, 2.0)),
            st.builds(lambda s: PrivacyEvent.gaussian(noise_multiplier=s), st.floats(0.5, 50.0)),
            st.builds(lambda e: PrivacyEvent.generic(epsilon=e), st.floats(0.01, 2.0)),
        ),
        min_size=1,
        max_size=12,
    ),
    st.floats(0.1, 10.0),
)
def test_admitted_iff_some_order_or_basic_composition_is_within_its_budget(events, epsilon):
    tally = Tally.of(events)
    within_order = any(
        tally.rdp[ORDERS.index(a)] <= budget_of_order(a, epsilon) * (1 + 1e-9) + 1e-12
        for a in FILTER_ORDERS
    )
    within_basic = all(e.is_pure for e in events) and sum(
        e.params["epsilon"] for e in events
    ) <= epsilon * (1 + 1e-9)
    assert admits(filter_figure(tally, DELTA), epsilon) == (within_order or within_basic)
