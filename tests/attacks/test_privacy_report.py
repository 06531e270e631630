"""vault.models.privacy_report: power, validity on DP models, refusals, provenance, audit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.datasets import load_breast_cancer
from sklearn.tree import DecisionTreeClassifier

from privml import AccessDenied, Budget, ConfigurationError, Field, IntegrityError, Schema
from privml.attacks import PrivacyReport
from privml.attacks._holdout import MEMBERSHIP, Membership
from privml.exceptions import PrivacyAuditFailure
from privml.storage.tables import models

FEATURES = ["mean texture", "mean smoothness", "mean symmetry", "mean fractal dimension"]
TARGET = "target"


def _data() -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame
    return frame[[*FEATURES, TARGET]].reset_index(drop=True)


def _schema(frame: pd.DataFrame) -> Schema:
    fields = {
        c: Field.numeric(bounds=(float(frame[c].min()), float(frame[c].max()))) for c in FEATURES
    }
    fields[TARGET] = Field.categorical(categories=[0, 1], target=True)
    return Schema(fields)


@pytest.fixture
def vault(vaults, tmp_path, key):
    """Breast-cancer rows as "cancer"; "eng" may train DP for "ml", "dpo" may read raw."""
    frame = _data()
    v = vaults.create(tmp_path / "v", key=key)
    v.add_dataset("cancer", frame, schema=_schema(frame), budget=Budget(epsilon=100, delta=1e-5))
    v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
    v.add_purpose("oversight", description="Privacy oversight", lawful_basis="GDPR 6(1)(c)")
    v.add_principal("eng", roles=["ml"])
    v.add_principal("dpo", roles=["dpo"])
    v.grant(role="ml", dataset="cancer", purpose="ml", mode="dp_training")
    v.grant(role="dpo", dataset="cancer", purpose="oversight", mode="raw")
    yield v
    v.close()


def _overfit(v, *, epsilon=None, delta=None, name="tree"):
    """A deep tree on half the rows, registered by hand; returns the two halves."""
    frame = _data()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(frame))
    members = frame.iloc[np.sort(order[:280])]
    non_members = frame.iloc[np.sort(order[280:])]
    tree = DecisionTreeClassifier(random_state=0).fit(members[FEATURES], members[TARGET])
    v.models.register(
        name,
        tree,
        trained_on="cancer",
        epsilon=epsilon,
        delta=delta,
        extra={"features": FEATURES, "target": TARGET},
    )
    return members, non_members


def test_an_overfit_model_is_caught_with_a_positive_lower_bound(vault):
    members, non_members = _overfit(vault)
    report = vault.models.privacy_report(
        "tree", members=members, non_members=non_members, references=4
    )
    assert isinstance(report, PrivacyReport)
    assert [r.attack for r in report.results] == ["loss-threshold", "lira-offline"]
    assert report.results[0].auc > 0.6 and report.best_lower_bound > 0
    assert report.score_members == 1.0 and report.score_held_out < 1.0
    assert report.verdict.startswith("Non-private model: the attacks prove ε ≥ ")
    frame = report.to_frame()
    assert list(frame["measurement"]) == ["loss-threshold", "lira-offline"]
    assert not frame["exceeds_claim"].any()
    plt = pytest.importorskip("matplotlib.pyplot")
    ax = report.plot()
    assert len(ax.get_lines()) == 3  # chance and two ROC curves
    plt.close(ax.figure)
    assert "tree" in str(report) and report.verdict in report._repr_html_()


def test_a_false_claim_raises_and_is_audited_with_figures_only(vault):
    members, non_members = _overfit(vault, epsilon=0.01, delta=1e-5, name="liar")
    with pytest.raises(PrivacyAuditFailure, match=r"claims ε = 0\.01") as caught:
        vault.models.privacy_report("liar", members=members, non_members=non_members)
    report = caught.value.report
    assert report.exceeded and "contradicted" in report.verdict
    entry = vault.audit.entries(action="model.privacy_report").iloc[-1]
    assert entry["outcome"] == "exceeded"
    details = entry["details"]
    assert details["epsilon_claimed"] == 0.01 and details["exceeded"] is True
    assert {a["attack"] for a in details["attacks"]} == {"loss-threshold", "lira-offline"}
    assert max(a["epsilon_lower_bound"] for a in details["attacks"]) > 0.01
    text = json.dumps(details)
    for value in members[FEATURES].to_numpy().ravel()[:200]:
        assert repr(float(value)) not in text  # no row value reaches the log
    for figures in details["attacks"]:
        assert not {"fpr", "tpr", "threshold"} & set(figures)  # no ROC points, no loss values


def test_dp_fit_with_holdout_records_membership_and_stays_below_its_claim(vault):
    from diffprivlib.models import LogisticRegression

    session = vault.session("eng", purpose="ml")
    session.dp.fit(
        LogisticRegression(epsilon=1.0),
        "cancer",
        features=FEATURES,
        target=TARGET,
        name="logit",
        holdout=0.3,
    )
    info = vault.models.info("logit")
    record = Membership.from_record(vault.models._membership_record(info))
    assert set(info.metadata[MEMBERSHIP]) == {"rows", "n_members", "n_held_out", "sealed"}
    held = int(np.floor(0.3 * 569))
    assert int(record.held_out.sum()) == held and int(record.members.sum()) == 569 - held
    report = vault.models.privacy_report("logit", random_state=1)
    assert report.epsilon_claimed == 1.0
    assert all(r.epsilon_lower_bound <= 1.0 for r in report.results)
    assert report.verdict.startswith("No attack exceeded the claimed ε = 1 ")
    assert report.results[0].n_members == 569 - held
    assert report.results[0].n_non_members == held


def test_holdout_needs_a_name_and_a_fraction_up_to_one_half(vault):
    from diffprivlib.models import LogisticRegression

    session = vault.session("eng", purpose="ml")
    for bad in (0.6, -0.1, True, float("nan")):
        with pytest.raises(ConfigurationError, match="holdout"):
            session.dp.fit(
                LogisticRegression(epsilon=1.0),
                "cancer",
                features=FEATURES,
                target=TARGET,
                name="m",
                holdout=bad,
            )
    with pytest.raises(ConfigurationError, match="name="):
        session.dp.fit(
            LogisticRegression(epsilon=1.0), "cancer", features=FEATURES, target=TARGET, holdout=0.2
        )


def test_dp_sgd_with_holdout_trains_on_members_only_and_stays_below_its_claim(vault):
    torch = pytest.importorskip("torch")
    pytest.importorskip("opacus")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    training = vault.session("eng", purpose="ml").dp.private_training(
        "cancer",
        features=FEATURES,
        target=TARGET,
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        batch_size=64,
        epochs=2,
        max_grad_norm=1.0,
        target_epsilon=1.0,
        grad_sample_mode="bk",
        name="mlp",
        holdout=0.3,
    )
    with training as run:
        for _ in range(run.epochs):
            for X, y in run.data_loader:
                run.optimizer.zero_grad()
                run.criterion(run.model(X), y).backward()
                run.optimizer.step()
        # the sealed table holds the training rows only: every batch index is below N
        sealed_rows = run.data_loader._n
    held = int(np.floor(0.3 * 569))
    assert run.n == sealed_rows == 569 - held  # N (and q) count the training rows only
    assert run.sample_rate == pytest.approx(64 / (569 - held))
    record = Membership.from_record(vault.models._membership_record(vault.models.info("mlp")))
    assert int(record.members.sum()) == run.n
    report = vault.models.privacy_report("mlp", references=2)
    assert report.epsilon_claimed is not None and report.epsilon_claimed <= 1.0 + 1e-9
    assert [r.attack for r in report.results] == ["loss-threshold", "lira-offline"]
    assert all(r.epsilon_lower_bound <= report.epsilon_claimed for r in report.results)
    assert report.verdict.startswith("No attack exceeded")
    assert 0.0 <= report.score_held_out <= 1.0


def test_a_dp_sgd_runs_canary_measurements_are_in_its_report(vault):
    torch = pytest.importorskip("torch")
    pytest.importorskip("opacus")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    vault.session("eng", purpose="ml").dp.train(
        "cancer",
        features=FEATURES,
        target=TARGET,
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        batch_size=64,
        epochs=2,
        max_grad_norm=1.0,
        target_epsilon=1.0,
        grad_sample_mode="bk",
        name="mlp",
        holdout=0.3,
        canaries=100,
    )
    report = vault.models.privacy_report("mlp", references=2)
    assert sorted(report.canaries) == [
        "canary_measurement.black_box",
        "canary_measurement.white_box",
    ]
    assert all(m["epsilon_lower_bound"] <= report.epsilon_claimed for m in report.canaries.values())
    kinds = set(report.to_frame()["kind"])
    assert any("white-box" in k for k in kinds) and any("black-box" in k for k in kinds)
    entry = vault.audit.entries(action="model.privacy_report").iloc[-1]
    assert "canary_measurement.white_box" in json.dumps(entry["details"])


def test_a_canary_bound_above_the_claim_fails_the_report(vault):
    """A recorded canary measurement that proves more than the claim is a failure too."""
    members, non_members = _overfit(vault, name="tree", epsilon=50.0)
    info = vault.models.info("tree")
    model = vault.models.load("tree")
    measured = {"m": 1000, "guesses": 200, "correct": 200, "threat_model": "white-box",
                "confidence": 0.95, "epsilon_lower_bound": 4.0, "epsilon_claimed": 1.0,
                "delta": 1e-5}  # fmt: skip
    vault.models.register(
        "tree",
        model,
        trained_on=info.trained_on,
        epsilon=1.0,
        delta=1e-5,
        extra={
            "features": FEATURES,
            "target": TARGET,
            "canary_measurement": {"white_box": measured},
        },
    )
    with pytest.raises(PrivacyAuditFailure) as caught:
        vault.models.privacy_report(
            "tree", members=members, non_members=non_members, attacks=["loss-threshold"]
        )
    assert "canary_measurement.white_box" in str(caught.value)


def test_an_analyst_without_raw_is_refused_and_the_refusal_audited(vault):
    _overfit(vault, name="tree")
    with pytest.raises(AccessDenied):
        vault.session("eng", purpose="ml").privacy_report("tree")
    entry = vault.audit.entries(action="model.privacy_report").iloc[-1]
    assert entry["outcome"] == "denied" and entry["principal"] == "eng"


def test_a_session_with_raw_on_every_row_gets_the_report_and_it_is_audited(vault):
    from diffprivlib.models import GaussianNB

    vault.session("eng", purpose="ml").dp.fit(
        GaussianNB(epsilon=1.0), "cancer", features=FEATURES, target=TARGET, name="nb", holdout=0.2
    )
    report = vault.session("dpo", purpose="oversight").privacy_report(
        "nb", attacks=["loss-threshold"]
    )
    assert [r.attack for r in report.results] == ["loss-threshold"]
    entry = vault.audit.entries(action="model.privacy_report").iloc[-1]
    assert entry["outcome"] == "ok" and entry["principal"] == "dpo"
    assert entry["details"]["grant_ids"]


def test_a_model_without_membership_gets_a_clear_error(vault):
    _overfit(vault, name="tree")
    with pytest.raises(ConfigurationError, match=r"holdout=0\.3.*members= and non_members="):
        vault.models.privacy_report("tree")


def test_absurd_requests_are_refused_before_any_work(vault):
    members, non_members = _overfit(vault)
    for bad in ({"references": 1000}, {"references": 1}, {"attacks": ["guess"]}, {"attacks": []}):
        with pytest.raises(ConfigurationError):
            vault.models.privacy_report("tree", members=members, non_members=non_members, **bad)


def test_editing_the_membership_record_without_the_key_is_detected(vault, dba):
    from diffprivlib.models import GaussianNB

    vault.session("eng", purpose="ml").dp.fit(
        GaussianNB(epsilon=1.0), "cancer", features=FEATURES, target=TARGET, name="nb", holdout=0.3
    )
    with dba.edit(vault.path) as conn:
        row = conn.execute(sa.select(models).where(models.c.name == "nb")).one()
        metadata = json.loads(row.metadata)
        # Swap the counts and the sealed record's halves: the attacks would read other sets.
        record = metadata[MEMBERSHIP]
        record["n_members"], record["n_held_out"] = record["n_held_out"], record["n_members"]
        half = len(record["sealed"]) // 2
        record["sealed"] = record["sealed"][half:] + record["sealed"][:half]
        conn.execute(
            models.update().where(models.c.name == "nb").values(metadata=json.dumps(metadata))
        )
    with pytest.raises(IntegrityError):
        vault.models.privacy_report("nb")


def test_an_extra_cannot_forge_the_recorded_class(vault):
    # The class decides how a model is loaded and whether it is attacked through a twin.
    tree = DecisionTreeClassifier().fit([[0.0], [1.0]], [0, 1])
    info = vault.models.register(
        "tree-he",
        tree,
        trained_on="cancer",
        epsilon=None,
        delta=None,
        extra={"class": "privml.he.HEModel"},
    )
    assert info.metadata["class"] == "sklearn.tree._classes.DecisionTreeClassifier"
    assert vault.models.info("tree-he").metadata["class"] == info.metadata["class"]


def test_a_membership_record_under_row_filters_names_only_rows_read():
    record = Membership.draw(rows=10, positions=np.array([1, 3, 5, 7, 9]), fraction=0.4)
    assert int(record.held_out.sum()) == 2 and int(record.members.sum()) == 3
    assert not (record.members | record.held_out)[::2].any()  # rows never read: neither
    back = Membership.from_record(record.to_record())
    assert (back.members == record.members).all() and (back.held_out == record.held_out).all()
    assert record.training_rows(np.array([1, 3, 5, 7, 9])).sum() == 3
