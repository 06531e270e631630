"""Every audit entry a served request causes names its route, and the route cannot be forged."""

from __future__ import annotations

import httpx

from conftest import entry_client

NET = {"layers": [{"type": "Linear", "in_features": 1, "out_features": 2}]}


def test_every_entry_of_a_served_run_names_its_route(as_, setup, watch):
    watch.new()
    ana = as_("ana", "research")
    ana.dp.train(
        "patients", module=NET, features=["age"], target="sex", name="routed",
        optimizer={"type": "SGD", "lr": 0.5}, batch_size=64, epochs=1, max_grad_norm=1.0,
        noise_multiplier=2.0, grad_sample_mode="bk",
    )  # fmt: skip
    entries = watch.new()
    actions = {e["action"] for e in entries}
    assert {"ledger.reserve", "ledger.settle", "model.register"} <= actions, actions
    for entry in entries:  # the reservation, each batch, the settlement, the registration
        via = entry["details"].get("via")
        assert via is not None, entry["action"]
        assert via["client"] == "127.0.0.1" and via["token"] == setup.token_ids["ana"]
        assert via["request"]


def test_a_client_cannot_choose_the_address_recorded(live, setup, watch):
    watch.new()
    for forged in ("198.51.100.7", "10.0.0.1, 203.0.113.9"):
        response = httpx.get(
            f"{live.url}/v1/session",
            headers={"Authorization": "Bearer pml_nope", "X-Forwarded-For": forged,
                     "Forwarded": f"for={forged.split(',')[0]}", "Privml-Purpose": "research"},
        )  # fmt: skip
        assert response.status_code == 401
    entries = watch.new()
    assert len(entries) == 2
    assert {entry_client(e) for e in entries} == {"127.0.0.1"}


def test_a_missing_or_bad_purpose_header_is_refused_and_audited(live, setup, watch):
    watch.new()
    token = {"Authorization": f"Bearer {setup.tokens['ana']}"}
    cases = (({}, 422), ({"Privml-Purpose": ""}, 422), ({"Privml-Purpose": "x" * 5000}, 403))
    for extra, status in cases:
        response = httpx.get(f"{live.url}/v1/session", headers={**token, **extra})
        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/problem+json")
    entries = watch.new()
    assert [e["outcome"] for e in entries] == ["error", "error", "denied"]
    assert {e["principal"] for e in entries} == {"ana"}
