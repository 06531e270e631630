"""A door hands out values only for the authorizations it decided itself."""

from __future__ import annotations

import dataclasses

import pytest

import privml
import privml._gate
from privml.accounting import PrivacyEvent


@pytest.fixture
def doors(demo_vault):
    demo_vault.add_purpose("care", description="Care", lawful_basis="GDPR 9(2)(h)")
    demo_vault.add_principal("nurse", roles=["nurse"])
    demo_vault.add_principal("clerk", roles=["clerk"])
    demo_vault.grant(role="nurse", dataset="patients", purpose="care", mode="raw")
    demo_vault.grant(
        role="clerk", dataset="patients", purpose="care", mode="dp_aggregate", columns=["age"]
    )
    nurse = demo_vault.session("nurse", purpose="care")._door
    clerk = demo_vault.session("clerk", purpose="care")._door
    return demo_vault, nurse, clerk


def test_another_sessions_authorization_is_refused(doors):
    _, nurse, clerk = doors
    allowed = nurse.authorize("patients", columns=["age", "note"], needed="raw", action="x")
    assert len(nurse.load(allowed).frame) == 4  # its own door serves it
    with pytest.raises(privml.ConfigurationError, match="not decided by this session's door"):
        clerk.load(allowed)  # the clerk may not see raw notes: the nurse's decision is not hers


def test_a_hand_built_or_edited_authorization_is_refused_before_any_charge(doors):
    vault, _, clerk = doors
    real = clerk.authorize("patients", columns=["age"], needed="dp_aggregate", action="x")
    copied = dataclasses.replace(real, columns=["age", "note"])
    built = privml._gate.Authorization(**vars(real))
    before = len(vault.ledger.events("patients"))
    event = PrivacyEvent.laplace(epsilon=0.1)
    for forged in (copied, built):
        with pytest.raises(privml.ConfigurationError, match="not decided"):
            clerk.release(forged, event=event, action="dp.count", version=1)
        with pytest.raises(privml.ConfigurationError, match="not decided"):
            clerk.reserve(
                forged, plan=lambda n: (event, {}), action="dp.train", version=1, context={}
            )
    real.columns.append("note")  # edited in place
    with pytest.raises(privml.ConfigurationError, match="not decided"):
        clerk.release(real, event=event, action="dp.count", version=1)
    real.columns.remove("note")
    assert len(vault.ledger.events("patients")) == before  # nothing was charged
    released = clerk.release(real, event=event, action="dp.count", version=1)
    assert list(released.frame.columns) == ["age"]


def test_load_refuses_an_authorization_decided_for_a_dp_release(doors):
    vault, _, clerk = doors
    # The clerk may use age only in DP aggregates: her authorization must buy nothing uncharged.
    auth = clerk.authorize("patients", columns=["age"], needed="dp_aggregate", action="x")
    count = clerk.authorize("patients", columns=[], needed="dp_aggregate", action="x")
    for dp_only in (auth, count):
        with pytest.raises(privml.ConfigurationError, match="carries a charge"):
            clerk.load(dp_only)
    assert vault.budget("patients").epsilon_spent == 0


def test_load_refuses_a_model_uses_dp_authorization(doors):
    vault, nurse, clerk = doors
    vault.grant(role="clerk", dataset="patients", purpose="care", mode="raw", columns=["sex"])
    model = privml.Vault  # any picklable object stands in for a model
    nurse.register_model(
        "m", model, trained_on=("patients", 1), epsilon=1.0, delta=1e-6, notes=None,
        extra={"features": ["age"]},
    )  # fmt: skip
    _, use = clerk.use_model("m", None, action="x")
    assert use.authorization is not None
    with pytest.raises(privml.ConfigurationError, match="carries a charge"):
        clerk.load(use.authorization)


def test_an_authorization_decided_before_a_policy_change_is_refused(doors):
    vault, nurse, _ = doors
    auth = nurse.authorize("patients", columns=["age", "note"], needed="raw", action="x")
    [grant_id] = vault.policy.grants().query("role == 'nurse'")["id"].tolist()
    vault.revoke(grant_id)
    event = PrivacyEvent.laplace(epsilon=0.1)
    with pytest.raises(privml.ConfigurationError, match="policy changed"):
        nurse.load(auth)
    with pytest.raises(privml.ConfigurationError, match="policy changed"):
        nurse.release(auth, event=event, action="dp.count", version=1)
    with pytest.raises(privml.ConfigurationError, match="policy changed"):
        nurse.reserve(auth, plan=lambda n: (event, {}), action="dp.train", version=1, context={})
    assert vault.ledger.events("patients").empty  # nothing was charged
