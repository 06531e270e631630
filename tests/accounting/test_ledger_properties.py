"""Invariants of the ledger over random sequences of charges (hypothesis)."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import privml
from privml import BudgetExceededError, ConfigurationError
from privml.accounting import PrivacyEvent

TOL = 1e-9

events = st.one_of(
    st.builds(lambda e: PrivacyEvent.laplace(epsilon=e), st.floats(0.01, 0.8)),
    st.builds(lambda s: PrivacyEvent.gaussian(sigma=s), st.floats(0.7, 20.0)),
    st.builds(
        lambda nm, q, steps: PrivacyEvent.dp_sgd(noise_multiplier=nm, sample_rate=q, steps=steps),
        st.floats(0.8, 3.0),
        st.sampled_from([0.001, 0.01, 0.05]),
        st.integers(1, 200),
    ),
    st.builds(
        lambda e, d: PrivacyEvent.generic(epsilon=e, delta=d),
        st.floats(0.01, 0.5),
        st.sampled_from([0.0, 1e-8]),
    ),
)
charges = st.lists(st.tuples(events, st.sampled_from(["ana", "bob"])), min_size=1, max_size=8)
budgets = st.tuples(st.floats(0.2, 3.0), st.sampled_from([0.0, 1e-6, 1e-5]))


@pytest.fixture
def shared_vault(tmp_path, vaults):
    """One vault for every example; each example adds its own dataset."""
    folder, key = tmp_path / "v", privml.generate_key()
    with vaults.create(folder, key=key) as vault:
        yield vault, folder, key


def add_dataset(vault, name, *, epsilon, delta):
    schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))})
    budget = privml.Budget(epsilon=epsilon, delta=delta)
    vault.add_dataset(name, pd.DataFrame({"x": [1.0]}), schema=schema, budget=budget)


_names = (f"d{i}" for i in itertools.count())


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(budget=budgets, sequence=charges)
def test_random_charges_keep_every_invariant(shared_vault, budget, sequence, vaults):
    vault, folder, key = shared_vault
    name = next(_names)  # a fresh dataset per example
    epsilon, delta = budget
    add_dataset(vault, name, epsilon=epsilon, delta=delta)
    status = vault.budget(name)
    for event, principal in sequence:
        try:
            vault.ledger.charge(name, event=event, principal=principal, purpose="p")
        except (BudgetExceededError, ConfigurationError):
            # A refusal changes nothing.
            assert vault.budget(name) == status
            continue
        after = vault.budget(name)
        assert after.epsilon_spent <= epsilon * (1 + TOL), "committed spend exceeds the budget"
        assert after.epsilon_spent >= status.epsilon_spent * (1 - TOL), "spent ε went down"
        assert after.committed == status.committed + 1
        status = after
    with vaults.open(folder, key=key) as reopened:
        assert reopened.budget(name) == status


actions = st.lists(
    st.tuples(events, st.sampled_from(["charge", "settle", "release"]), st.sampled_from("ab")),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=actions)
def test_running_tallies_always_equal_their_events(shared_vault, sequence):
    """The check reads only the running tallies: they must equal a recomputation from the events,
    generic (ε, δ) events' count, ε and δ included, after charges, settles and releases."""
    from privml.accounting._spend import spent
    from privml.accounting._store import event_rows
    from privml.accounting.composition import Tally
    from privml.storage.engine import read

    vault, _, _ = shared_vault
    name = next(_names)
    add_dataset(vault, name, epsilon=1e6, delta=1e-3)
    for event, action, who in sequence:
        if action == "charge":
            vault.ledger.charge(name, event=event, principal=who, purpose="p")
            continue
        held = vault.ledger.reserve(name, event=event, principal=who, purpose="p")
        if action == "settle":
            held.settle(event)
        else:
            held.release()
    with read(vault._state.engine) as conn:
        for scope in ("", "principal:a", "principal:b", "purpose:p"):
            tally, _ = spent(conn, name, (scope,))
            expected = Tally.of(
                PrivacyEvent.from_json(r.event) for r in event_rows(conn, name, scope)
            )
            assert tally.rdp == pytest.approx(expected.rdp, rel=1e-12, abs=1e-12)
            assert (tally.count, tally.impure, tally.approx) == (
                expected.count,
                expected.impure,
                expected.approx,
            )
            assert tally.pure_epsilon == pytest.approx(expected.pure_epsilon, rel=1e-12)
            assert tally.approx_epsilon == pytest.approx(expected.approx_epsilon, rel=1e-12)
            assert tally.approx_delta == pytest.approx(expected.approx_delta, rel=1e-12)
