"""Allocations bind a purpose's whole subtree, as grants do, even after the tree changes."""

from __future__ import annotations

import pytest
import yaml

from privml import BudgetExceededError
from privml.accounting import PrivacyEvent

LAP = PrivacyEvent.laplace


def purposes(vault, tree):
    for name, parent in tree.items():
        vault.add_purpose(name, description=name, lawful_basis="consent", parent=parent)


def charge(vault, epsilon, purpose, principal="ana"):
    return vault.ledger.charge(
        "d", event=LAP(epsilon=epsilon), principal=principal, purpose=purpose
    )


def test_a_child_purpose_cannot_spend_past_its_parents_allocation(make_vault):
    vault = make_vault(epsilon=2.0, delta=0.0)
    purposes(vault, {"research": None, "research/onc": "research", "research/onc/lung": None})
    purposes(vault, {"research/onc/deep": "research/onc"})
    vault.allocate("d", purpose="research", epsilon=0.5)
    charge(vault, 0.3, "research/onc")
    with pytest.raises(BudgetExceededError, match="purpose 'research''s share and the") as info:
        charge(vault, 0.3, "research/onc", principal="bob")  # another principal, same subtree
    assert info.value.scope == "purpose:research"
    with pytest.raises(BudgetExceededError):
        charge(vault, 0.25, "research/onc/deep")  # a grandchild
    with pytest.raises(BudgetExceededError):
        charge(vault, 0.25, "research")
    charge(vault, 0.2, "research/onc/deep")
    charge(vault, 1.0, "research/onc/lung")  # registered without a parent: not below it
    status = vault.budget("d")
    assert status.by_purpose["research"].epsilon_spent == pytest.approx(0.5)
    assert status.by_purpose["research"].remaining == pytest.approx(0.0)
    assert status.by_purpose["research/onc"].epsilon_spent == pytest.approx(0.5)


def test_every_ancestors_allocation_applies(make_vault):
    vault = make_vault(epsilon=2.0, delta=0.0)
    purposes(vault, {"research": None, "research/onc": "research"})
    vault.allocate("d", purpose="research", epsilon=1.0)
    vault.allocate("d", purpose="research/onc", epsilon=0.4)
    charge(vault, 0.4, "research/onc")
    with pytest.raises(BudgetExceededError, match="purpose 'research/onc'"):
        charge(vault, 0.1, "research/onc")
    charge(vault, 0.6, "research")
    with pytest.raises(BudgetExceededError, match="purpose 'research'"):
        charge(vault, 0.1, "research")
    allocation = vault.allocate("d", purpose="research", epsilon=1.5)
    assert allocation.epsilon_spent == pytest.approx(1.0)  # the subtree's spend


def test_a_purpose_moved_under_an_allocated_one_counts_against_it(make_vault):
    vault = make_vault(epsilon=2.0, delta=0.0)
    purposes(vault, {"research": None, "misc": None})
    vault.allocate("d", purpose="research", epsilon=0.5)
    charge(vault, 0.4, "misc")
    charge(vault, 0.1, "research")
    doc = yaml.safe_load(vault.policy.to_yaml())
    doc["purposes"]["misc"]["parent"] = "research"
    vault.policy.load_yaml(yaml.safe_dump(doc))
    with pytest.raises(BudgetExceededError, match="purpose 'research'"):
        charge(vault, 0.1, "misc")
    with pytest.raises(BudgetExceededError, match="purpose 'research'"):
        charge(vault, 0.1, "research")
    assert vault.budget("d").by_purpose["research"].epsilon_spent == pytest.approx(0.5)


def test_a_what_if_sees_the_same_allocations(make_vault):
    vault = make_vault(epsilon=2.0, delta=1e-5)
    purposes(vault, {"research": None, "research/onc": "research"})
    vault.allocate("d", purpose="research", epsilon=0.3)
    answer = vault.ledger.what_if("d", LAP(epsilon=0.5), principal="ana", purpose="research/onc")
    assert not answer.allowed and answer.refused_by == "purpose:research"
