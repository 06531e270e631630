"""Attacking the privacy report and the holdout: a curious analyst, a database copy, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.datasets import load_breast_cancer
from sklearn.tree import DecisionTreeClassifier

from privml import (
    AccessDenied,
    Budget,
    ConfigurationError,
    Field,
    IntegrityError,
    NotFoundError,
    PrivmlError,
    Schema,
)
from privml.attacks._holdout import MEMBERSHIP, Membership, check_holdout
from privml.storage.tables import models

FEATURES = ["mean texture", "mean smoothness", "mean symmetry", "mean fractal dimension"]
TARGET = "target"
ROWS = 569


def _data() -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame
    out = frame[[*FEATURES, TARGET]].reset_index(drop=True)
    out["site"] = np.where(np.arange(len(out)) % 3 == 0, "north", "south")
    return out


def _schema(frame: pd.DataFrame) -> Schema:
    fields = {
        c: Field.numeric(bounds=(float(frame[c].min()), float(frame[c].max()))) for c in FEATURES
    }
    fields[TARGET] = Field.categorical(categories=[0, 1], target=True)
    fields["site"] = Field.categorical(categories=["north", "south"])
    return Schema(fields)


@pytest.fixture
def vault(vaults, tmp_path, key):
    """ "cancer" and a copy "other"; "eng" trains DP, "dpo" reads cancer raw, "north" raw
    on north rows only, "half" raw on the features but not the target."""
    frame = _data()
    v = vaults.create(tmp_path / "v", key=key)
    for name in ("cancer", "other"):
        v.add_dataset(name, frame, schema=_schema(frame), budget=Budget(epsilon=100, delta=1e-5))
    v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
    v.add_purpose("oversight", description="Privacy oversight", lawful_basis="GDPR 6(1)(c)")
    for who in ("eng", "dpo", "north", "half"):
        v.add_principal(who, roles=[who])
    for dataset in ("cancer", "other"):
        v.grant(role="eng", dataset=dataset, purpose="ml", mode="dp_training")
    v.grant(role="dpo", dataset="cancer", purpose="oversight", mode="raw")
    v.grant(
        role="north",
        dataset="cancer",
        purpose="oversight",
        mode="raw",
        row_filter=[("site", "==", "north")],
    )
    v.grant(role="half", dataset="cancer", purpose="oversight", mode="raw", columns=FEATURES)
    yield v
    v.close()


def _fit(v, name="logit", dataset="cancer", holdout=0.3):
    from diffprivlib.models import LogisticRegression

    return v.session("eng", purpose="ml").dp.fit(
        LogisticRegression(epsilon=1.0),
        dataset,
        features=FEATURES,
        target=TARGET,
        name=name,
        holdout=holdout,
    )


def _bounds(frame: pd.DataFrame) -> tuple[list[float], list[float]]:
    return [float(frame[c].min()) for c in FEATURES], [float(frame[c].max()) for c in FEATURES]


def _register_he(v, fitted, *, source, trained_on="cancer", name="logit-he"):
    import privml.he as he

    compiled = he.compile(fitted, input_range=_bounds(_data()))
    return v.models.register(
        name,
        compiled,
        trained_on=trained_on,
        epsilon=1.0,
        delta=0.0,
        extra={"source_model": source},
    )


# -- the HE twin ----------------------------------------------------------------------------


def test_an_he_model_is_attacked_through_its_plaintext_twin(vault):
    fitted = _fit(vault)
    _register_he(vault, fitted, source={"name": "logit", "version": 1})
    report = vault.models.privacy_report("logit-he", attacks=["loss-threshold"])
    assert report.model == "logit-he" and report.dataset == "cancer"
    assert report.notes[0].startswith("HE-compiled: attacked through its plaintext source")
    held = math.floor(0.3 * ROWS)
    assert report.results[0].n_members == ROWS - held
    assert report.results[0].n_non_members == held
    assert report.epsilon_claimed == 1.0
    # A session may too, deciding raw on the twin's training data.
    by_dpo = vault.session("dpo", purpose="oversight").privacy_report(
        "logit-he", attacks=["loss-threshold"]
    )
    assert by_dpo.results[0].n_members == ROWS - held
    with pytest.raises(AccessDenied):
        vault.session("half", purpose="oversight").privacy_report("logit-he")


def test_an_he_models_source_is_checked_at_registration(vault):
    fitted = _fit(vault)
    _fit(vault, name="elsewhere", dataset="other")
    for bad in (
        {"name": "logit"},  # no version: "the latest" would change under it
        {"name": "logit", "version": True},
        {"name": "logit", "version": 1, "extra": "x"},
        "logit",
    ):
        with pytest.raises(ConfigurationError, match="source_model"):
            _register_he(vault, fitted, source=bad)
    with pytest.raises(NotFoundError):
        _register_he(vault, fitted, source={"name": "logit", "version": 7})
    # A twin trained on another dataset: the raw check would be made on data other than
    # the data the HE model was trained on.
    with pytest.raises(ConfigurationError, match="trained on"):
        _register_he(vault, fitted, source={"name": "elsewhere", "version": 1})
    # Only an HE model names a source; and the source is no HE model itself.
    with pytest.raises(ConfigurationError, match=r"not a privml\.he model"):
        vault.models.register(
            "tree",
            DecisionTreeClassifier().fit([[0.0], [1.0]], [0, 1]),
            trained_on="cancer",
            epsilon=None,
            delta=None,
            extra={"source_model": {"name": "logit", "version": 1}},
        )
    _register_he(vault, fitted, source={"name": "logit", "version": 1})
    with pytest.raises(ConfigurationError, match="itself an HE model"):
        _register_he(vault, fitted, source={"name": "logit-he", "version": 1}, name="he2")
    assert sorted(vault.models.list()["name"]) == ["elsewhere", "logit", "logit-he"]


def test_an_he_model_without_its_plaintext_source_is_refused(vault):
    import privml.he as he

    vault.models.register(
        "bare-he",
        he.compile(_fit(vault), input_range=_bounds(_data())),
        trained_on="cancer",
        epsilon=1.0,
        delta=0.0,
    )
    with pytest.raises(ConfigurationError, match="HE-compiled"):
        vault.models.privacy_report("bare-he")


def test_repointing_an_he_models_source_without_the_key_is_detected(vault, dba):
    fitted = _fit(vault)
    _fit(vault, name="elsewhere", dataset="other")
    _register_he(vault, fitted, source={"name": "logit", "version": 1})
    with dba.edit(vault.path) as conn:
        row = conn.execute(sa.select(models).where(models.c.name == "logit-he")).one()
        metadata = json.loads(row.metadata)
        metadata["source_model"] = {"name": "elsewhere", "version": 1}
        conn.execute(
            models.update().where(models.c.name == "logit-he").values(metadata=json.dumps(metadata))
        )
    with pytest.raises(IntegrityError):
        vault.session("dpo", purpose="oversight").privacy_report("logit-he")


# -- who may run a report ---------------------------------------------------------------------


def test_only_raw_on_every_column_and_every_row_of_the_twins_data_gets_a_report(vault):
    _fit(vault)
    _fit(vault, name="elsewhere", dataset="other")
    for who, name in (("north", "logit"), ("half", "logit"), ("eng", "logit")):
        purpose = "ml" if who == "eng" else "oversight"
        with pytest.raises(AccessDenied):
            vault.session(who, purpose=purpose).privacy_report(name)
        entry = vault.audit.entries(action="model.privacy_report").iloc[-1]
        assert entry["outcome"] == "denied" and entry["principal"] == who
    with pytest.raises(AccessDenied):  # raw on "cancer" says nothing of "other"
        vault.session("dpo", purpose="oversight").privacy_report("elsewhere")


# -- what a dp_training analyst can learn -----------------------------------------------------


def test_a_dp_sgd_run_hands_the_analyst_no_split_and_its_charge_counts_training_rows(vault):
    torch = pytest.importorskip("torch")
    pytest.importorskip("opacus")
    from dp_accounting import dp_event
    from dp_accounting.pld import PLDAccountant
    from dp_accounting.rdp import RdpAccountant

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    training = vault.session("eng", purpose="ml").dp.private_training(
        "cancer",
        features=FEATURES,
        target=TARGET,
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        batch_size=64,
        epochs=1,
        max_grad_norm=1.0,
        noise_multiplier=1.5,
        grad_sample_mode="bk",
        name="mlp",
        holdout=0.25,
    )
    with training as run:
        for X, y in run.data_loader:
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
    n_train = ROWS - math.floor(0.25 * ROWS)
    # The analyst's handle on the registered model names counts, never positions.
    shown = run.model_info.metadata[MEMBERSHIP]
    assert set(shown) == {"rows", "n_members", "n_held_out", "sealed"}
    assert shown["n_members"] == n_train
    for value in vars(run).values():
        assert not isinstance(value, Membership)
        assert not (isinstance(value, dict) and {"members", "held_out"} & set(value))
    # The ledger's event is exactly dp_sgd(σ, steps, B / N_train)...
    event = vault.ledger.events("cancer").iloc[-1]
    assert event["status"] == "committed"
    assert event["params"]["n"] == n_train and event["params"]["batch_size"] == 64
    assert event["params"]["noise_multiplier"] == 1.5
    assert event["steps"] == run.steps_taken == int(n_train / 64)
    # ...and dp_accounting, given those figures directly, agrees on its ε.
    independent = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(64 / n_train, dp_event.GaussianDpEvent(1.5)),
        run.steps_taken,
    )
    expected = PLDAccountant().compose(independent).get_epsilon(run.delta)
    assert run.epsilon == pytest.approx(expected, rel=1e-6)
    status = vault.ledger.status("cancer")
    assert status.epsilon_fixed_sequence == pytest.approx(expected, rel=1e-6)
    rdp = RdpAccountant().compose(independent).get_epsilon(run.delta)
    assert status.epsilon_spent >= rdp * (1 - 1e-6)  # the filter is never looser than RDP
    counted_all = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(64 / ROWS, dp_event.GaussianDpEvent(1.5)),
        run.steps_taken,
    )
    assert PLDAccountant().compose(counted_all).get_epsilon(run.delta) < expected


def test_dp_fit_with_holdout_charges_exactly_one_fit(vault):
    _fit(vault, holdout=0.5)
    event = vault.ledger.events("cancer").iloc[-1]
    assert event["params"] == {"epsilon": 1.0, "delta": 0.0}
    info = vault.models.info("logit")
    assert info.epsilon == 1.0
    assert info.metadata[MEMBERSHIP]["n_held_out"] == math.floor(0.5 * ROWS)


def test_a_membership_record_under_a_row_filter_is_not_readable_on_disk(vault, dba):
    # Under a row filter the positions read are the rows that pass it: a per-row fact.
    vault.add_principal("nurse", roles=["nurse"])
    vault.grant(
        role="nurse",
        dataset="cancer",
        purpose="ml",
        mode="dp_training",
        row_filter=[("site", "==", "north")],
    )
    from diffprivlib.models import GaussianNB

    vault.session("nurse", purpose="ml").dp.fit(
        GaussianNB(epsilon=1.0), "cancer", features=FEATURES, target=TARGET, name="nb", holdout=0.2
    )
    with dba.edit(vault.path) as conn:
        stored = conn.execute(sa.select(models.c.metadata).where(models.c.name == "nb")).scalar()
    record = json.loads(stored)[MEMBERSHIP]
    assert set(record) == {"rows", "n_members", "n_held_out", "sealed"}
    north = int((_data()["site"] == "north").sum())
    assert record["n_members"] + record["n_held_out"] == north
    # The owner still reads it, and it names north rows only.
    back = Membership.from_record(vault.models._membership_record(vault.models.info("nb")))
    read = np.flatnonzero(back.members | back.held_out)
    assert (_data()["site"].to_numpy()[read] == "north").all()


def test_a_sealed_record_moved_to_another_model_fails(vault, dba):
    _fit(vault, name="a")
    _fit(vault, name="b")
    with dba.edit(vault.path) as conn:
        a = conn.execute(sa.select(models.c.metadata).where(models.c.name == "a")).scalar()
        b = json.loads(conn.execute(sa.select(models).where(models.c.name == "b")).one().metadata)
        b[MEMBERSHIP] = json.loads(a)[MEMBERSHIP]
        conn.execute(models.update().where(models.c.name == "b").values(metadata=json.dumps(b)))
    with pytest.raises(IntegrityError):
        vault.models.privacy_report("b")


# -- failures midway are audited ---------------------------------------------------------------


def _tree(v):
    frame = _data()
    tree = DecisionTreeClassifier(random_state=0).fit(frame[FEATURES][:300], frame[TARGET][:300])
    v.models.register(
        "tree",
        tree,
        trained_on="cancer",
        epsilon=0.01,
        delta=1e-5,
        extra={"features": FEATURES, "target": TARGET},
    )
    return frame[:300], frame[300:]


def test_a_report_that_fails_midway_is_audited_as_an_error_quoting_no_value(vault):
    members, non_members = _tree(vault)
    broken = members.copy()
    broken["mean texture"] = broken["mean texture"].map(lambda v: f"secret-{v}")
    with pytest.raises(PrivmlError) as caught:
        vault.models.privacy_report("tree", members=broken, non_members=non_members)
    assert "secret-" not in str(caught.value)
    entry = vault.audit.entries(action="model.privacy_report").iloc[-1]
    assert entry["outcome"] == "error"
    assert entry["details"]["error"] == type(caught.value).__name__
    assert "secret-" not in json.dumps(entry["details"])


def test_unknown_labels_and_missing_values_are_refused_without_quoting_them(vault):
    members, non_members = _tree(vault)
    labelled = members.copy()
    labelled.loc[0, TARGET] = 987654
    with pytest.raises(ConfigurationError, match="not one of the model's classes") as caught:
        vault.models.privacy_report("tree", members=labelled, non_members=non_members)
    assert "987654" not in str(caught.value)
    holed = non_members.copy()
    holed.loc[holed.index[0], "mean symmetry"] = np.nan
    with pytest.raises(ConfigurationError, match=r"missing values.*mean symmetry"):
        vault.models.privacy_report("tree", members=members, non_members=holed)
    assert (vault.audit.entries(action="model.privacy_report")["outcome"] == "error").sum() == 2


def test_a_false_claim_is_audited_before_it_raises(vault):
    from privml.exceptions import PrivacyAuditFailure

    members, non_members = _tree(vault)
    before = len(vault.audit.entries(action="model.privacy_report"))
    with pytest.raises(PrivacyAuditFailure):
        vault.models.privacy_report("tree", members=members, non_members=non_members)
    entries = vault.audit.entries(action="model.privacy_report")
    assert len(entries) == before + 1 and entries.iloc[-1]["outcome"] == "exceeded"


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, -math.inf, True, np.bool_(True), "0.3", 0.5000001, -0.1, None, [0.3]],
)
def test_absurd_holdouts_are_refused_with_a_typed_error(bad):
    with pytest.raises(ConfigurationError, match="holdout must be a fraction"):
        check_holdout(bad)


def test_a_holdout_string_is_not_echoed():
    with pytest.raises(ConfigurationError) as caught:
        check_holdout("patient 4711 has HIV")
    assert "4711" not in str(caught.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"references": 1.5},
        {"references": True},
        {"references": 17},
        {"confidence": 1.5},
        {"confidence": math.nan},
        {"confidence": "high"},
        {"delta": -0.1},
        {"delta": 1.0},
        {"delta": 2.0},
        {"delta": "x"},
        {"random_state": 1.5},
        {"random_state": True},
        {"random_state": "0"},
        {"attacks": "everything"},
        {"attacks": 3},
    ],
)
def test_absurd_report_options_are_refused_before_any_work(vault, bad):
    _tree(vault)
    with pytest.raises(ConfigurationError):
        vault.models.privacy_report("tree", **bad)
    # refused before the model was even looked at: no report was attempted
    assert vault.audit.entries(action="model.privacy_report").empty


def test_frames_of_the_wrong_shape_and_unknown_models_are_refused(vault):
    members, non_members = _tree(vault)
    with pytest.raises(NotFoundError):
        vault.models.privacy_report("no-such-model")
    with pytest.raises(ConfigurationError):
        vault.models.privacy_report("tree", version=True)
    with pytest.raises(ConfigurationError, match="lacks the model's columns"):
        vault.models.privacy_report(
            "tree", members=members.drop(columns=[TARGET]), non_members=non_members
        )
    with pytest.raises(ConfigurationError, match="takes a pandas DataFrame"):
        vault.models.privacy_report("tree", members=members.to_numpy(), non_members=non_members)
    with pytest.raises(ConfigurationError, match="both members= and non_members="):
        vault.models.privacy_report("tree", members=members)
    doubled = pd.concat([members, members[[TARGET]]], axis=1)
    with pytest.raises(ConfigurationError, match="repeated column"):
        vault.models.privacy_report("tree", members=doubled, non_members=non_members)


def test_a_non_model_registered_by_hand_is_refused_clearly(vault):
    members, non_members = _tree(vault)
    vault.models.register(
        "notes",
        {"weights": [1, 2, 3]},
        trained_on="cancer",
        epsilon=None,
        delta=None,
        extra={"features": FEATURES, "target": TARGET},
    )
    with pytest.raises(ConfigurationError, match="no predict"):
        vault.models.privacy_report("notes", members=members, non_members=non_members)


def test_a_network_whose_layers_cannot_be_reset_gets_no_reference_models():
    torch = pytest.importorskip("torch")
    from privml.attacks._references import reference_fitter
    from privml.dp.torch import TorchModel

    class Scale(torch.nn.Module):  # parameters, but no reset_parameters()
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            return x * self.weight

    net = torch.nn.Sequential(torch.nn.Linear(4, 2), Scale())
    model = TorchModel(
        module=net,
        scaler=None,
        features=FEATURES,
        target=TARGET,
        task="classification",
        classes=[0, 1],
        target_bounds=None,
    )
    fit, why = reference_fitter(model, random_state=0)
    assert fit is None and "Scale layer cannot be re-initialized" in why
