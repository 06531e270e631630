"""The ledger: refusals, idempotency, reservations, allocations, audit, reports, PostgreSQL."""

from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

from privml import BudgetExceededError, ConfigurationError, NotFoundError
from privml.accounting import BudgetStatus, PrivacyEvent, Reservation

matplotlib.use("Agg")

LAP = PrivacyEvent.laplace


def charge(vault, epsilon, *, principal="ana", purpose="stats", **kw):
    return vault.ledger.charge(
        "d", event=LAP(epsilon=epsilon), principal=principal, purpose=purpose, **kw
    )


def test_refusal_states_the_figures_and_charges_nothing(make_vault):
    vault = make_vault(epsilon=1.0, delta=0.0)
    charge(vault, 0.6)
    before = vault.budget("d")
    rows = len(vault.ledger.events("d"))
    with pytest.raises(BudgetExceededError) as info:
        charge(vault, 0.5, principal="bob")
    err = info.value
    message = str(err)
    for text in ("spent ε=0.6", "laplace ε=0.5", "remaining ε=0.4", "budget ε=1", "basic"):
        assert text in message
    assert "vault.budget('d')" in message and "Nothing was charged" in message
    assert (err.spent, err.requested, err.remaining, err.method) == (0.6, 0.5, 0.4, "basic")
    assert isinstance(err, ValueError)
    assert vault.budget("d") == before
    assert len(vault.ledger.events("d")) == rows
    refusal = vault.audit.entries(action="ledger.refuse").iloc[-1]
    assert (refusal["principal"], refusal["outcome"]) == ("bob", "refused")
    assert refusal["details"]["requested"] == 0.5
    # A refusal does not lock the dataset: a charge that fits still succeeds.
    assert charge(vault, 0.4).epsilon_after == pytest.approx(1.0)
    assert vault.audit.verify().ok


def test_refusal_at_positive_delta_names_the_filter(make_vault):
    vault = make_vault(epsilon=1.5, delta=1e-5)
    sgd = PrivacyEvent.dp_sgd(noise_multiplier=1.1, sample_rate=256 / 60000, steps=2344)
    vault.ledger.charge("d", event=sgd, principal="ml", purpose="train")
    with pytest.raises(BudgetExceededError, match=r"Admission by the RDP filter, α=\S+ of 17"):
        vault.ledger.charge("d", event=sgd, principal="ml", purpose="train")


def test_same_request_id_commits_once(make_vault):
    vault = make_vault()
    first = charge(vault, 0.1, request_id="req-1")
    again = charge(vault, 0.1, request_id="req-1")
    assert not first.replayed and again.replayed
    assert again.request_id == first.request_id and again.audit_seq == first.audit_seq
    assert len(vault.ledger.events("d")) == 1
    assert vault.budget("d").committed == 1
    with pytest.raises(ConfigurationError, match="already used for a different request"):
        charge(vault, 0.2, request_id="req-1")
    with pytest.raises(ConfigurationError, match="already used"):
        vault.ledger.reserve(
            "d", event=LAP(epsilon=0.1), principal="ana", purpose="stats", request_id="req-1"
        )


def test_reserve_then_settle_lower(make_vault):
    vault = make_vault(epsilon=3.0, delta=1e-5)
    plan = PrivacyEvent.dp_sgd(noise_multiplier=1.1, batch_size=256, n=60000, steps=2344)
    reservation = vault.ledger.reserve("d", event=plan, principal="ml", purpose="train")
    assert isinstance(reservation, Reservation)
    reserved = vault.budget("d")
    assert (reserved.reserved, reserved.committed) == (1, 0)
    with pytest.raises(ConfigurationError, match="may only lower"):
        reservation.settle(plan.with_steps(3000))
    with pytest.raises(ConfigurationError, match="may only lower"):
        reservation.settle(LAP(epsilon=0.1))
    settled = reservation.settle(plan.with_steps(1000))
    assert settled.status == "committed" and settled.event.params["steps"] == 1000
    assert reservation.settle(plan.with_steps(1000)).audit_seq == settled.audit_seq  # retry
    after = vault.budget("d")
    assert after.epsilon_spent < reserved.epsilon_spent
    row = vault.ledger.events("d").iloc[0]
    assert (row["planned_steps"], row["steps"], row["status"]) == (2344, 1000, "committed")
    with pytest.raises(ConfigurationError, match="never refunded"):
        reservation.release()
    actions = vault.audit.entries()["action"].tolist()
    assert actions[-4:] == ["ledger.reserve", "ledger.settle", "ledger.settle", "ledger.settle"]
    assert vault.audit.entries(action="ledger.settle")["outcome"].tolist() == [
        "refused",
        "refused",
        "ok",
    ]


def test_release_returns_the_reservation(make_vault):
    vault = make_vault(epsilon=1.0, delta=0.0)
    reservation = vault.ledger.reserve("d", event=LAP(epsilon=0.9), principal="ml", purpose="train")
    with pytest.raises(BudgetExceededError):
        charge(vault, 0.2)
    released = reservation.release()
    assert released.status == "released"
    assert reservation.release().status == "released"
    assert vault.budget("d").epsilon_spent == 0
    charge(vault, 0.2)
    with pytest.raises(ConfigurationError, match="already released"):
        reservation.settle(LAP(epsilon=0.5))
    with pytest.raises(NotFoundError):
        vault.ledger.release("no-such-request")


def test_allocations_cap_a_share_and_the_total_still_applies(make_vault):
    vault = make_vault(epsilon=1.0, delta=0.0)
    allocation = vault.allocate("d", principal="ana", epsilon=0.3)
    assert (allocation.epsilon, allocation.epsilon_spent) == (0.3, 0.0)
    vault.allocate("d", purpose="ads", epsilon=0.2)
    charge(vault, 0.3)
    with pytest.raises(BudgetExceededError, match="principal 'ana''s share") as info:
        charge(vault, 0.05)
    assert info.value.scope == "principal:ana"
    with pytest.raises(BudgetExceededError, match="purpose 'ads''s share"):
        charge(vault, 0.25, principal="bob", purpose="ads")
    charge(vault, 0.6, principal="bob")
    with pytest.raises(BudgetExceededError, match="dataset 'd'"):
        charge(vault, 0.2, principal="carl", purpose="other")
    status = vault.budget("d")
    assert status.by_principal["ana"].epsilon_cap == 0.3
    assert status.by_principal["ana"].remaining == pytest.approx(0.0)
    assert status.by_purpose["ads"].epsilon_spent == 0.0
    assert status.by_principal["bob"].epsilon_cap is None
    with pytest.raises(ConfigurationError, match="not both"):
        vault.allocate("d", principal="ana", purpose="ads", epsilon=0.1)
    with pytest.raises(ConfigurationError, match="exceeds dataset 'd'"):
        vault.allocate("d", principal="ana", epsilon=2.0)
    entry = vault.audit.entries(action="ledger.allocate").iloc[0]
    assert (entry["principal"], entry["purpose"]) == ("admin", "administration")


def test_what_if_predicts_without_writing(make_vault):
    vault = make_vault(epsilon=1.0, delta=0.0)
    charge(vault, 0.5)
    entries = len(vault.audit.entries())
    fits = vault.ledger.what_if("d", LAP(epsilon=0.25))
    assert fits.allowed and fits.epsilon_after == 0.75 and fits.remaining_after == 0.25
    too_much = vault.ledger.what_if("d", LAP(epsilon=0.75))
    assert not too_much.allowed and too_much.refused_by == "dataset"
    assert len(vault.audit.entries()) == entries
    assert vault.budget("d").committed == 1


def test_every_charge_has_its_audit_entry(make_vault):
    vault = make_vault()
    charges = [charge(vault, 0.01 * (i + 1), principal=f"p{i}") for i in range(3)]
    entries = vault.audit.entries().set_index("seq")
    for c in charges:
        entry = entries.loc[c.audit_seq]
        assert entry["action"] == "ledger.charge" and entry["principal"] == c.principal
        assert entry["details"]["request_id"] == c.request_id
        assert entry["details"]["event"]["dp_event"]["name"] == "LaplaceDpEvent"
        assert entry["version"] == 1
    assert vault.audit.verify().ok


def test_context_goes_into_the_audit_entry(make_vault):
    vault = make_vault(epsilon=1.0, delta=0.0)
    context = {"release": "dp.count", "grant_ids": ["g1"], "policy_hash": "ab12"}
    c = charge(vault, 0.1, context=context)
    entry = vault.audit.entries().set_index("seq").loc[c.audit_seq]
    assert entry["details"]["grant_ids"] == ["g1"] and entry["details"]["release"] == "dp.count"
    with pytest.raises(BudgetExceededError):
        charge(vault, 5.0, context=context)
    assert vault.audit.entries().iloc[-1]["details"]["policy_hash"] == "ab12"
    with pytest.raises(ConfigurationError, match="ledger's own"):
        charge(vault, 0.1, context={"request_id": "x"})
    with pytest.raises(ConfigurationError, match="JSON-serializable"):
        charge(vault, 0.1, context={"when": object()})


def test_events_frame(make_vault):
    vault = make_vault(epsilon=5.0, delta=1e-5)
    charge(vault, 0.1)
    vault.ledger.charge(
        "d",
        event=PrivacyEvent.generic(
            epsilon=0.5, library="diffprivlib", library_version="0.6.6", reported_epsilon=0.5
        ),
        principal="ml",
        purpose="train",
        version=1,
    )
    frame = vault.ledger.events("d")
    assert frame["kind"].tolist() == ["laplace", "generic"]
    assert frame["library"].tolist() == ["privml", "diffprivlib"]
    assert frame["reported_epsilon"].iloc[1] == 0.5
    assert str(frame["time"].dtype).startswith("datetime64")
    assert frame["version"].tolist() == [1, 1]
    assert frame["dp_event"].iloc[1] == {"name": "EpsilonDeltaDpEvent", "epsilon": 0.5, "delta": 0}
    assert (frame["epsilon_after"] >= frame["epsilon_before"]).all()


def test_unknown_dataset_and_version(make_vault):
    vault = make_vault()
    with pytest.raises(NotFoundError, match="no dataset 'nope'"):
        vault.budget("nope")
    with pytest.raises(NotFoundError, match="no version 7"):
        charge(vault, 0.1, version=7)
    with pytest.raises(ConfigurationError, match="principal="):
        charge(vault, 0.1, principal="")
    with pytest.raises(ConfigurationError, match="PrivacyEvent"):
        vault.ledger.charge("d", event=0.1, principal="a", purpose="b")


def test_a_closed_ledger_refuses_calls(make_vault):
    vault = make_vault()
    vault.ledger.close()
    with pytest.raises(ConfigurationError, match="the vault is closed"):
        charge(vault, 0.1)
    with pytest.raises(ConfigurationError, match="the vault is closed"):
        vault.ledger.events("d")


def test_plot_draws_tight_and_naive_lines(make_vault):
    vault = make_vault(epsilon=3.0, delta=1e-5)
    for _ in range(3):
        charge(vault, 0.1)
    vault.ledger.charge(
        "d", event=PrivacyEvent.gaussian(sigma=5.0), principal="ana", purpose="stats"
    )
    ax = vault.ledger.plot("d")
    labels = [line.get_label() for line in ax.get_lines()]
    assert "naive sum" in labels and any(label.startswith("privml") for label in labels)
    tight = next(line for line in ax.get_lines() if line.get_label().startswith("privml"))
    assert list(tight.get_xdata()) == [1, 2, 3, 4]
    assert list(tight.get_ydata()) == sorted(tight.get_ydata())
    matplotlib.pyplot.close(ax.figure)


def test_status_and_json(make_vault):
    vault = make_vault(epsilon=2.0, delta=1e-5)
    charge(vault, 0.1)
    status = vault.budget("d")
    assert isinstance(status, BudgetStatus)
    text = str(status)
    assert "d: spent ε=" in text and "principal ana" in text
    data = status.to_dict()
    assert data["epsilon_total"] == 2.0 and data["by_principal"]["ana"]["epsilon_cap"] is None


def test_ledger_survives_reopening(make_vault, key, vaults):
    vault = make_vault(epsilon=1.0, delta=0.0)
    folder = vault.path
    charge(vault, 0.6, request_id="r1")
    charge(vault, 0.6, request_id="r1")  # replayed
    with pytest.raises(BudgetExceededError):
        charge(vault, 0.5)
    reservation = vault.ledger.reserve("d", event=LAP(epsilon=0.3), principal="a", purpose="q")
    reservation.settle(LAP(epsilon=0.2))
    vault.close()
    with vaults.open(folder, key=key) as vault:
        assert vault.budget("d").epsilon_spent == pytest.approx(0.8)
        assert vault.audit.verify().ok
    engine = vaults.database(folder)
    with engine.connect() as conn:
        rows = pd.read_sql("SELECT status FROM ledger_events ORDER BY id", conn)
    engine.dispose()
    assert rows["status"].tolist() == ["committed", "committed"]
