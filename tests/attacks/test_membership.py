"""Membership inference (privml/attacks/_membership.py, _scores.py, _result.py).

Power: a deliberately overfit tree on few rows of a real dataset is caught.
Soundness: a model whose output does not depend on membership proves nothing.
Every stochastic step is seeded, so each assertion either always holds or never.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from privml.attacks import MembershipResult, lira_offline_attack, loss_threshold_attack, scores
from privml.exceptions import ConfigurationError

TARGET = "target"


def _shuffled(loader) -> pd.DataFrame:
    X, y = loader(return_X_y=True, as_frame=True)
    return X.assign(**{TARGET: y}).sample(frac=1.0, random_state=0).reset_index(drop=True)


def _fit_tree(X: pd.DataFrame, y: pd.Series) -> DecisionTreeClassifier:
    return DecisionTreeClassifier(random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    return _shuffled(load_digits)


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return _shuffled(load_breast_cancer)


def _xy(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    return frame.drop(columns=[TARGET]), frame[TARGET]


# --- power -------------------------------------------------------------------------------------


def test_an_overfit_tree_is_caught_by_the_loss_threshold(digits):
    """An unpruned tree on 200 rows of digits: members have loss 0, about a third of
    non-members are misclassified."""
    members, non_members = digits[:200], digits[200:600]
    tree = _fit_tree(*_xy(members))
    result = loss_threshold_attack(tree, members, non_members, TARGET)
    assert result.attack == "loss-threshold"
    assert (result.n_members, result.n_non_members) == (200, 400)
    assert result.auc > 0.6
    assert result.epsilon_lower_bound > 1.0
    assert set(result.tpr_at) == {0.001, 0.01}


def test_an_overfit_tree_is_caught_by_offline_lira(digits):
    members, non_members = digits[:200], digits[200:600]
    tree = _fit_tree(*_xy(members))
    result = lira_offline_attack(tree, members, non_members, TARGET, fit_reference=_fit_tree)
    assert result.attack == "lira-offline"
    assert (result.n_members, result.n_non_members) == (200, 200)  # half trained the references
    assert result.auc > 0.6
    assert result.epsilon_lower_bound > 0.5


def test_lira_takes_a_separate_population(digits):
    members, non_members, population = digits[:200], digits[200:500], digits[500:1100]
    tree = _fit_tree(*_xy(members))
    result = lira_offline_attack(
        tree, members, non_members, TARGET, fit_reference=_fit_tree, population=population, k=8
    )
    assert result.n_non_members == 300
    assert result.auc > 0.6


# --- soundness ---------------------------------------------------------------------------------
#
# A model independent of membership makes the attack's guesses independent of membership, so
# its bound is positive with probability at most 1 - confidence: at confidence 1 - 1e-6 a false
# failure has probability below 1e-6 (and the seeds fix the outcome). The AUC of such scores is
# a Mann–Whitney statistic with standard deviation at most sqrt((n1 + n2 + 1) / (12 n1 n2)):
# 0.029 for 200 against 200, so |AUC - 0.5| > 0.15 is over 5 standard deviations (p < 1e-6).

SURE = 1 - 1e-6


def _independent_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return frame[:200], frame[200:400], frame[400:]


def test_a_constant_model_proves_nothing(cancer):
    members, non_members, _ = _independent_split(cancer)
    constant = DummyClassifier(strategy="prior").fit(*_xy(members))
    for result in (
        loss_threshold_attack(constant, members, non_members, TARGET, confidence=SURE),
        lira_offline_attack(
            constant,
            members,
            non_members,
            TARGET,
            fit_reference=lambda X, y: DummyClassifier(strategy="prior").fit(X, y),
            confidence=SURE,
        ),
    ):
        assert abs(result.auc - 0.5) < 0.15
        assert result.epsilon_lower_bound == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_a_model_that_never_saw_either_set_proves_nothing(cancer, seed):
    """Trained on a third, disjoint set: 'members' are members of nothing."""
    members, non_members, other = _independent_split(cancer)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(*_xy(other))
    result = loss_threshold_attack(
        model, members, non_members, TARGET, confidence=SURE, random_state=seed
    )
    assert abs(result.auc - 0.5) < 0.15
    assert result.epsilon_lower_bound == 0.0


# --- the result --------------------------------------------------------------------------------


def test_the_result_is_deterministic_frozen_and_serializable(digits):
    members, non_members = digits[:100], digits[100:300]
    tree = _fit_tree(*_xy(members))
    first = lira_offline_attack(
        tree, members, non_members, TARGET, fit_reference=_fit_tree, random_state=7
    )
    again = lira_offline_attack(
        tree, members, non_members, TARGET, fit_reference=_fit_tree, random_state=7
    )
    assert first.to_dict() == again.to_dict()
    payload = json.loads(json.dumps(first.to_dict()))
    assert payload["attack"] == "lira-offline" and set(payload["tpr_at"]) == {"0.001", "0.01"}
    assert len(payload["fpr"]) == len(payload["tpr"]) >= 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.auc = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        first.fpr[0] = 0.5
    assert isinstance(first, MembershipResult)


def test_the_roc_runs_from_zero_to_one_and_rises(digits):
    members, non_members = digits[:200], digits[200:600]
    result = loss_threshold_attack(_fit_tree(*_xy(members)), members, non_members, TARGET)
    assert result.fpr[0] == 0.0 and result.tpr[-1] == 1.0 and result.fpr[-1] == 1.0
    assert np.all(np.diff(result.fpr) >= 0) and np.all(np.diff(result.tpr) >= 0)
    assert 0.0 <= result.tpr_at[0.001] <= result.tpr_at[0.01] <= 1.0


def test_the_reference_models_never_see_an_attacked_row(digits):
    members, non_members = digits[:60], digits[60:160]
    seen: list[pd.DataFrame] = []

    def fit(X: pd.DataFrame, y: pd.Series) -> DecisionTreeClassifier:
        seen.append(X)
        return _fit_tree(X, y)

    tree = _fit_tree(*_xy(members))
    lira_offline_attack(tree, members, non_members, TARGET, fit_reference=fit, k=3)
    assert len(seen) == 3
    rows = {tuple(r) for r in pd.concat(seen).to_numpy()}
    member_rows = {tuple(r) for r in _xy(members)[0].to_numpy()}
    non_member_rows = {tuple(r) for r in _xy(non_members)[0].to_numpy()}
    assert not rows & member_rows
    assert rows <= non_member_rows and len(rows) <= len(non_member_rows) // 2


# --- scores ------------------------------------------------------------------------------------


def test_scores_is_the_cross_entropy_of_the_true_label(cancer):
    X, y = _xy(cancer[:100])
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    proba = model.predict_proba(X)
    expected = -np.log(proba[np.arange(len(y)), y.to_numpy()])
    np.testing.assert_allclose(scores(model, X, y), expected)


def test_a_label_the_model_never_saw_costs_the_most():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
    model = DummyClassifier().fit(X, pd.Series(["a", "b", "a"]))
    losses = scores(model, X, pd.Series(["a", "b", "zebra"]))
    assert losses[2] == pytest.approx(-math.log(1e-12))
    assert losses[0] < losses[1] < losses[2]


def test_scores_of_a_regressor_is_its_squared_error():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    y = pd.Series([0.0, 1.0, 2.0, 10.0])
    model = LinearRegression().fit(X, y)
    np.testing.assert_allclose(scores(model, X, y), (model.predict(X) - y.to_numpy()) ** 2)


def test_scores_of_a_margin_classifier_is_its_logistic_loss(cancer):
    X, y = _xy(cancer[:100])
    model = make_pipeline(StandardScaler(), LinearSVC(random_state=0)).fit(X, y)
    margin = model.decision_function(X)
    sign = np.where(y.to_numpy() == 1, 1.0, -1.0)
    np.testing.assert_allclose(scores(model, X, y), np.log1p(np.exp(-sign * margin)))


def test_scores_of_a_torch_model():
    torch = pytest.importorskip("torch")
    from privml.dp.scaling import SchemaScaler
    from privml.dp.torch import TorchModel

    torch.manual_seed(0)
    scaler = SchemaScaler(bounds={"age": (0, 100)}, features=["age"]).fit(None)
    X = pd.DataFrame({"age": [20, 40, 60, 80]})
    net = torch.nn.Linear(1, 2)
    model = TorchModel(
        module=net, scaler=scaler, features=["age"], target="sex", task="classification",
        classes=["F", "M"],
    )  # fmt: skip
    y = pd.Series(["F", "M", "M", "F"])
    proba = model.predict_proba(X)
    expected = -np.log(proba[np.arange(4), [0, 1, 1, 0]])
    np.testing.assert_allclose(scores(model, X, y), expected, rtol=1e-6)
    regressor = TorchModel(
        module=torch.nn.Linear(1, 1), scaler=scaler, features=["age"], target="bp",
        task="regression", classes=None, target_bounds=(50.0, 200.0),
    )  # fmt: skip
    truth = pd.Series([120.0, 130.0, 140.0, 150.0])
    np.testing.assert_allclose(
        scores(regressor, X, truth), (regressor.predict(X) - truth.to_numpy()) ** 2, rtol=1e-6
    )


# --- refusals ----------------------------------------------------------------------------------


def _refuses(call, words: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        call()
    assert words in str(err.value)


def test_bad_input_is_refused_before_any_reference_model_is_trained(digits):
    members, non_members = digits[:50], digits[50:150]
    tree = _fit_tree(*_xy(members))
    trained: list[int] = []

    def fit(X: pd.DataFrame, y: pd.Series) -> DecisionTreeClassifier:
        trained.append(1)
        return _fit_tree(X, y)

    def lira(**kw: object) -> object:
        args = {"fit_reference": fit, **kw}
        return lira_offline_attack(tree, members, non_members, TARGET, **args)

    _refuses(lambda: lira(k=1), "k must be a whole number from 2 to 64")
    _refuses(lambda: lira(k=65), "k must be")
    _refuses(lambda: lira(delta=1.0), "delta must lie in [0, 1)")
    _refuses(lambda: lira(confidence=0.0), "confidence must lie in (0, 1)")
    _refuses(lambda: lira(random_state=None), "random_state must be an int")
    _refuses(lambda: lira(fit_reference="tree"), "fit_reference must be a callable")
    _refuses(lambda: lira(population=digits[:1]), "at least 2")
    _refuses(
        lambda: lira_offline_attack(
            tree, members, non_members.drop(columns=[TARGET]), TARGET, fit_reference=fit
        ),
        "non_members has no target column 'target'",
    )
    assert trained == []


def test_loss_threshold_refusals(digits):
    members, non_members = digits[:50], digits[50:150]
    tree = _fit_tree(*_xy(members))
    _refuses(
        lambda: loss_threshold_attack(tree, members.to_numpy(), non_members, TARGET),
        "members must be a pandas DataFrame",
    )
    _refuses(
        lambda: loss_threshold_attack(tree, members, non_members, "label"),
        "members has no target column 'label'",
    )
    _refuses(
        lambda: loss_threshold_attack(tree, members[:1], non_members, TARGET), "at least 2 members"
    )
    _refuses(lambda: loss_threshold_attack(tree, members, non_members, TARGET, delta=-0.1), "delta")
    _refuses(lambda: scores(object(), *_xy(members)), "has no predict")
    _refuses(lambda: scores(tree, _xy(members)[0], [0, 1]), "one value per row")  # fmt: skip


def test_a_non_numeric_regression_target_is_refused_without_its_values():
    X = pd.DataFrame({"x": [0.0, 1.0]})
    model = LinearRegression().fit(X, [0.0, 1.0])
    with pytest.raises(ConfigurationError) as err:
        scores(model, X, pd.Series(["secret-value-1", "secret-value-2"]))
    assert "secret-value" not in str(err.value)
