"""Privacy measurements through the curator server: canaries, held-out rows and reports.

One server on this module's vault. ana (dp_training on age and sex) trains and
fits; kim (raw on every column and row, for care) may ask for privacy reports.
"""

from __future__ import annotations

import json
import math
import typing
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from conftest import ROWS, SLOW_RUN, AuditWatch, Setup, patients
from privml import AccessDenied, ConfigurationError
from privml.attacks import PrivacyReport
from privml.attacks._holdout import MEMBERSHIP, Membership
from privml.exceptions import PrivacyAuditFailure
from privml.service._reports import RemotePrivacyReport

pytestmark = pytest.mark.sqlite_only("one server's routes and audit entries; no locking here")

NET = {
    "layers": [
        {"type": "Linear", "in_features": 1, "out_features": 8},
        {"type": "ReLU"},
        {"type": "Linear", "in_features": 8, "out_features": 2},
    ]
}  # 34 parameter coordinates: room for 16 gradient canaries
RUN: dict[str, Any] = dict(
    module=NET,
    features=["age"],
    target="sex",
    optimizer={"type": "SGD", "lr": 0.5},
    batch_size=64,
    epochs=1,
    max_grad_norm=1.0,
    noise_multiplier=2.0,
    grad_sample_mode="bk",
    seed=3,
)
#: What a canary measurement may say: counts, the claim and the bound (never which canaries).
MEASUREMENT_KEYS = {
    "m",
    "guesses",
    "correct",
    "threat_model",
    "confidence",
    "epsilon_lower_bound",
    "epsilon_claimed",
    "delta",
}
HELD = math.floor(0.3 * ROWS)


def headers(setup: Setup, who: str, key: str | None = None) -> dict[str, str]:
    purpose = {"kim": "care"}.get(who, "research")
    out = {"Authorization": f"Bearer {setup.tokens[who]}", "Privml-Purpose": purpose}
    return out if key is None else {**out, "Idempotency-Key": key}


def post(url: str, body: Any, head: dict[str, str]) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(
        url, content=content, headers={**head, "Content-Type": "application/json"}, timeout=120
    )


def spent(setup: Setup) -> tuple[int, float]:
    with setup.open() as vault:
        return len(vault.ledger.events("patients")), vault.budget("patients").epsilon_spent


@pytest.fixture(scope="module")
def fitted(live, setup: Setup) -> str:
    """A diffprivlib model ana fitted through the server with holdout=0.3."""
    from diffprivlib.models import LogisticRegression

    from privml.service._client import connect

    with connect(live.url, token=setup.tokens["ana"], purpose="research", retries=0) as ana:
        ana.dp.fit(
            LogisticRegression(epsilon=1.0),
            "patients",
            features=["age"],
            target="sex",
            name="logit",
            holdout=0.3,
        )
    return "logit"


def test_the_schema_bounds_are_the_in_process_ones() -> None:
    from privml.attacks._canaries import CANARIES_MAX
    from privml.attacks._report import ATTACKS, MAX_REPORT_REFERENCES
    from privml.service._schemas import MAX_CANARIES, MAX_REFERENCES, ReportRequest

    assert MAX_CANARIES == CANARIES_MAX and MAX_REFERENCES == MAX_REPORT_REFERENCES
    (names,) = typing.get_args(ReportRequest.model_fields["attacks"].annotation)
    assert typing.get_args(names) == ATTACKS


def test_a_remote_run_with_canaries_and_holdout_returns_the_measurement(as_, setup):
    ana = as_("ana", "research")
    _, history = ana.dp.train("patients", name="canaried", canaries=16, holdout=0.3, **RUN)
    measured = history.attrs["canary_measurement"]
    assert set(measured) == {"black_box", "white_box"}
    for kind in measured.values():
        assert set(kind) == MEASUREMENT_KEYS  # counts and bounds: no canary, no coin
        assert kind["m"] == 16 and 0.0 <= kind["epsilon_lower_bound"] <= kind["epsilon_claimed"]
    with setup.open() as vault:
        info = vault.models.info("canaried")
    assert info.metadata["canary_measurement"] == measured
    record = Membership.from_record(info.metadata[MEMBERSHIP])
    assert int(record.held_out.sum()) == HELD and int(record.members.sum()) == ROWS - HELD


def test_a_run_without_canaries_says_so_as_in_process(as_):
    _, history = as_("ana", "research").dp.train("patients", name="plain", **RUN)
    assert history.attrs["canary_measurement"] is None


def test_a_remote_fit_with_holdout_records_membership(fitted, setup):
    with setup.open() as vault:
        record = Membership.from_record(vault.models.info(fitted).metadata[MEMBERSHIP])
    assert int(record.held_out.sum()) == HELD and int(record.members.sum()) == ROWS - HELD


def test_a_raw_principal_gets_the_report_and_it_is_audited_with_its_route(
    fitted, as_, setup, watch: AuditWatch
):
    watch.new()
    report = as_("kim", "care").privacy_report(fitted, attacks=["loss-threshold"], random_state=1)
    assert isinstance(report, RemotePrivacyReport) and isinstance(report, PrivacyReport)
    assert report.epsilon_claimed == 1.0 and report.dataset == "patients"
    assert [r.attack for r in report.results] == ["loss-threshold"]
    assert report.results[0].n_members == ROWS - HELD
    assert report.results[0].n_non_members == HELD
    assert report.verdict.startswith("No attack exceeded the claimed ε = 1 ")
    assert not report.exceeded and "logit" in str(report)
    assert list(report.to_frame()["measurement"]) == ["loss-threshold"]
    with pytest.raises(ConfigurationError, match=r"curator server.*to_frame"):
        report.plot()
    (entry,) = [e for e in watch.new() if e["action"] == "model.privacy_report"]
    assert entry["outcome"] == "ok" and entry["principal"] == "kim"
    details = entry["details"]
    assert details["via"]["token"] == setup.token_ids["kim"]
    assert details["via"]["client"] == "127.0.0.1"
    for key in ("attacks", "best_lower_bound", "verdict", "epsilon_claimed"):
        assert details[key] == report.to_dict()[key]  # the figures sent are the ones logged
    assert report.verdict == details["verdict"]


def test_an_analyst_without_raw_is_refused_and_the_refusal_audited(
    fitted, as_, live, setup, watch: AuditWatch
):
    watch.new()
    with pytest.raises(AccessDenied):
        as_("ana", "research").privacy_report(fitted)
    response = post(f"{live.url}/v1/models/{fitted}/privacy-report", {}, headers(setup, "ana"))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["error"] == "AccessDenied"
    entries = [e for e in watch.new() if e["action"] == "model.privacy_report"]
    assert [(e["outcome"], e["principal"]) for e in entries] == [("denied", "ana")] * 2
    assert all(e["details"]["via"]["token"] == setup.token_ids["ana"] for e in entries)


def _liar(setup: Setup) -> None:
    """A deep tree on half the rows, registered by the owner with a false claim of ε = 0.01."""
    frame = patients()
    held = np.zeros(ROWS, dtype=bool)
    held[np.random.default_rng(0).permutation(ROWS)[: ROWS // 2]] = True
    record = Membership(ROWS, np.ones(ROWS, dtype=bool), held, 0.5).to_record()
    members = frame.loc[~held]
    tree = DecisionTreeClassifier(random_state=0).fit(members[["age", "glucose"]], members["sex"])
    with setup.open() as vault:
        vault.models.register(
            "liar",
            tree,
            trained_on="patients",
            epsilon=0.01,
            delta=1e-5,
            extra={"features": ["age", "glucose"], "target": "sex", MEMBERSHIP: record},
        )


def test_a_false_claim_is_a_problem_and_the_client_raises_the_failure(
    as_, live, setup, watch: AuditWatch
):
    _liar(setup)
    watch.new()
    with pytest.raises(PrivacyAuditFailure, match=r"claims ε = 0\.01") as caught:
        as_("kim", "care").privacy_report("liar", attacks=["loss-threshold"])
    report = caught.value.report
    assert isinstance(report, PrivacyReport) and report.epsilon_claimed == 0.01
    assert report.exceeded and "contradicted" in report.verdict
    assert report.results[0].epsilon_lower_bound > 0.01
    body = {"attacks": ["loss-threshold"]}
    response = post(f"{live.url}/v1/models/liar/privacy-report", body, headers(setup, "kim"))
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == "https://privml.dev/problems/privacy-audit-failure"
    sent = problem["fields"]["report"]
    assert sent["exceeded"] is True and sent["verdict"] == report.verdict
    for figures in sent["attacks"]:
        assert not {"fpr", "tpr", "threshold"} & set(figures)  # figures only, no ROC points
    entries = [e for e in watch.new() if e["action"] == "model.privacy_report"]
    assert [e["outcome"] for e in entries] == ["exceeded", "exceeded"]  # once per request


HOSTILE_RUNS = [
    {"canaries": -1},
    {"canaries": 10**9},
    {"canaries": True},
    {"canaries": "8"},
    {"canaries": 2.0},
    {"holdout": 0.9},
    {"holdout": -0.1},
    {"holdout": "nan"},
    {"holdout": "0.3"},
    {"holdout": True},
]
HOSTILE_REPORTS = [
    {"references": 10**6},
    {"references": 1},
    {"references": "4"},
    {"attacks": ["guess"]},
    {"attacks": []},
    {"attacks": ["loss-threshold"] * 3},
    {"delta": 1.5},
    {"delta": "nan"},
    {"confidence": 1.0},
    {"random_state": -1},
    {"random_state": 2**70},
    {"version": 0},
    {"members": [{"age": 30, "sex": "F"}]},
    {"non_members": []},
    {"target": "sex"},
]


def test_hostile_options_are_refused_before_any_work(fitted, live, setup, watch: AuditWatch):
    before = spent(setup)
    watch.new()
    base = f"{live.url}/v1/datasets/patients/dp"
    sends: list[tuple[str, Any, str]] = []
    for n, extra in enumerate(HOSTILE_RUNS):
        sends.append((f"{base}/train", {"spec": SLOW_RUN, **extra}, f"t{n}"))
        fit = {"estimator": "GaussianNB", "features": ["age"], "target": "sex", "name": "x"}
        sends.append((f"{base}/fit", {**fit, **extra}, f"f{n}"))  # fit takes no canaries
    raw_nan = f'{{"spec": {json.dumps(SLOW_RUN)}, "holdout": NaN}}'
    sends.append((f"{base}/train", raw_nan, "nan"))
    for extra in HOSTILE_REPORTS:
        sends.append((f"{live.url}/v1/models/{fitted}/privacy-report", extra, ""))
    for url, body, key in sends:
        response = post(url, body, headers(setup, "kim", key or None))
        assert response.status_code == 422, (body, response.text[:300])
        assert response.json()["error"] == "ConfigurationError"
    assert spent(setup) == before  # no reservation, no charge
    entries = watch.new()
    assert len(entries) == len(sends) and {e["outcome"] for e in entries} == {"error"}


def test_counts_the_in_process_run_refuses_are_refused_remotely_uncharged(as_, setup):
    ana = as_("ana", "research")
    before = spent(setup)
    with pytest.raises(ConfigurationError, match="canaries"):  # more than one per row
        ana.dp.train("patients", name="many", canaries=5_000, **RUN)
    tiny = {**RUN, "module": {"layers": [{"type": "Linear", "in_features": 1, "out_features": 2}]}}
    with pytest.raises(ConfigurationError, match="canar"):  # more than the 4 coordinates
        ana.dp.train("patients", name="many", canaries=8, **tiny)
    for bad in (-1, 10**9, True):  # refused by the client before anything is sent
        with pytest.raises(ConfigurationError, match="canaries"):
            ana.dp.train("patients", canaries=bad, **RUN)
    from diffprivlib.models import GaussianNB

    with pytest.raises(ConfigurationError, match="name="):  # as in-process: holdout needs a name
        ana.dp.fit(GaussianNB(epsilon=0.5), "patients", features=["age"], target="sex", holdout=0.2)
    assert spent(setup) == before
