"""The door's contract (privml.vault._door): what privml's mechanisms may ask, in its order.

Each test holds one promise of :class:`privml._gate.Gate` against the vault's
implementation: the policy decides before anything is read and a refusal is
audited; a DP event is charged before any value is decrypted, so a refused
charge reads nothing; a reservation's plan learns the row count and nothing
else; and a failure inside a mechanism's request is audited exactly once.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import privml
from privml import PrivacyEvent
from privml._gate import Authorization, Loaded, Released, Reserved


@pytest.fixture
def door(demo_vault):
    """The door of the session ``"analyst"`` (raw on ``patients``) for ``"research"``."""
    return demo_vault.session("analyst", purpose="research")._door


@pytest.fixture
def loads(door, monkeypatch) -> list[tuple[str, float]]:
    """Every decryption the door performs, with the budget spent when it began."""
    seen: list[tuple[str, float]] = []
    real = door._load
    vault_budget = door._ledger.status

    def recording(auth: Authorization, version: int | None, **bounding: Any) -> Loaded:
        seen.append((auth.dataset, vault_budget(auth.dataset).epsilon_spent))
        return real(auth, version, **bounding)

    monkeypatch.setattr(door, "_load", recording)
    return seen


def _entries(vault: privml.Vault, action: str) -> list[dict[str, Any]]:
    return vault.audit.entries(action=action).to_dict("records")


def _authorized(door: Any, **kwargs: Any) -> Authorization:
    return door.authorize(
        "patients", columns=["age"], needed="dp_aggregate", action="test.release", **kwargs
    )


def test_authorize_refuses_an_ungranted_column_and_audits_it(demo_vault, loads):
    demo_vault.add_principal("guest", roles=[])
    guest = demo_vault.session("guest", purpose="research")._door
    with pytest.raises(privml.AccessDenied) as caught:
        guest.authorize("patients", columns=["age"], needed="dp_aggregate", action="test.read")
    # no grant on the dataset: refused alike whether the column exists or not
    assert caught.value.column is None and caught.value.mode == "deny"
    [entry] = _entries(demo_vault, "test.read")
    assert (entry["principal"], entry["outcome"], entry["dataset"]) == (
        "guest",
        "denied",
        "patients",
    )
    assert entry["details"]["columns"] == ["age"] and entry["details"]["needed"] == "dp_aggregate"
    assert loads == []  # deciding reads no data


def test_authorize_names_the_deciding_grants(door, demo_vault):
    auth = _authorized(door)
    [grant] = demo_vault.policy.grants()["id"].tolist()
    assert auth.grant_ids == [grant]
    assert auth.columns == ["age"] and auth.policy_hash == demo_vault.policy.hash
    assert _entries(demo_vault, "test.release") == []  # a decision alone is not a release


def test_release_charges_before_it_loads(door, demo_vault, loads):
    released = door.release(
        _authorized(door),
        event=PrivacyEvent.laplace(epsilon=0.25),
        action="test.release",
        version=1,
    )
    assert isinstance(released, Released)
    assert loads == [("patients", pytest.approx(0.25))]  # the charge had committed
    assert released.frame["age"].tolist() == [34, 71, 52, 35]
    [charge] = demo_vault.ledger.events("patients").to_dict("records")
    assert charge["request_id"] == released.request_id


def test_a_refused_charge_reads_nothing(door, demo_vault, loads):
    auth = _authorized(door)
    event = PrivacyEvent.laplace(epsilon=5.0)
    with pytest.raises(privml.BudgetExceededError), door.request("test.release", "patients"):
        door.release(auth, event=event, action="test.release", version=1)
    assert loads == []
    assert demo_vault.budget("patients").epsilon_spent == 0
    # audited once, by the ledger in its own transaction; the request adds no second entry
    [entry] = _entries(demo_vault, "ledger.refuse")
    assert entry["details"]["release"] == "test.release"
    assert _entries(demo_vault, "test.release") == []


def test_reserve_plans_on_the_row_count_alone(door, demo_vault):
    asked: list[tuple[Any, ...]] = []

    def plan(*args: Any) -> tuple[PrivacyEvent, dict[str, Any]]:
        asked.append(args)
        return PrivacyEvent.laplace(epsilon=0.1), {"rows_planned": args[0]}

    reserved = door.reserve(
        _authorized(door), plan=plan, action="test.train", version=1, context={"run": "r1"}
    )
    assert asked == [(4,)] and type(asked[0][0]) is int
    assert isinstance(reserved, Reserved) and len(reserved.values.frame) == 4
    assert reserved.reservation.planned == PrivacyEvent.laplace(epsilon=0.1)
    [entry] = _entries(demo_vault, "ledger.reserve")
    assert entry["details"]["rows_planned"] == 4 and entry["details"]["run"] == "r1"
    reserved.reservation.release()


def test_a_failure_inside_a_request_is_audited_once(door, demo_vault):
    with pytest.raises(ZeroDivisionError), door.request("test.fit", "patients"):
        1 / 0  # noqa: B018 - a mechanism failing mid-request
    [entry] = _entries(demo_vault, "test.fit")
    assert entry["outcome"] == "error" and entry["details"]["error"] == "ZeroDivisionError"


def test_a_refusal_audited_inside_a_request_is_not_audited_again(demo_vault):
    demo_vault.add_principal("guest", roles=[])
    guest = demo_vault.session("guest", purpose="research")._door
    with pytest.raises(privml.AccessDenied), guest.request("test.fit", "patients"):
        guest.authorize("patients", columns=["age"], needed="dp_aggregate", action="test.fit")
    [entry] = _entries(demo_vault, "test.fit")
    assert entry["outcome"] == "denied"


def test_a_malformed_request_is_audited_without_its_values(door, demo_vault):
    with pytest.raises(privml.ConfigurationError):
        door.authorize("patients", columns="P-1001", needed="raw", action="test.read")
    [entry] = _entries(demo_vault, "test.read")
    assert entry["dataset"] is None and entry["details"]["message"] == "malformed request"
    assert "P-1001" not in demo_vault.audit.entries().to_string()


def test_load_hands_out_values_without_a_charge(door, demo_vault):
    auth = door.authorize("patients", columns=["age"], needed="pseudonymized", action="test.view")
    loaded = door.load(auth)
    assert loaded.frame["age"].tolist() == [34, 71, 52, 35] and loaded.version == 1
    assert demo_vault.budget("patients").epsilon_spent == 0
    pd.testing.assert_index_equal(loaded.frame.columns, pd.Index(["age"]))


@pytest.mark.parametrize(
    "own", ["columns", "grant_ids", "policy_hash", "where", "release", "content_hash"]
)
@pytest.mark.parametrize("by", ["context", "plan"])
def test_a_reservation_cannot_rewrite_the_doors_own_audit_fields(door, demo_vault, own, by):
    forged = {own: "forged"}

    def plan(rows: int) -> tuple[PrivacyEvent, dict[str, Any]]:
        return PrivacyEvent.laplace(epsilon=0.1), forged if by == "plan" else {}

    with pytest.raises(privml.ConfigurationError, match=own):
        door.reserve(
            _authorized(door),
            plan=plan,
            action="test.train",
            version=1,
            context=forged if by == "context" else {},
        )
    assert demo_vault.ledger.events("patients").empty
    assert "forged" not in demo_vault.audit.entries().to_string()


def test_the_door_offers_exactly_the_gate_protocol(door):
    """What serves the door serves no more than the protocol: no store, policy or registry."""
    from privml._gate import Gate
    from privml.vault._door import Door

    def public(names: Any) -> set[str]:
        return {n for n in names if not n.startswith("_")}

    assert public(dir(door)) == public(dir(Door)) == public(vars(Gate))
