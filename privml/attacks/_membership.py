"""Membership inference on a fitted model: does it tell its training rows from others?

Two attacks, both black-box (they only query the model) and both ending in a
:class:`~privml.attacks.MembershipResult` whose ε lower bound is valid at the
stated confidence (threshold chosen on one half, bound computed on the other):

* :func:`loss_threshold_attack` (Yeom et al. 2018): lower loss means member;
* :func:`lira_offline_attack` (Carlini et al. 2022, "Membership inference
  attacks from first principles", offline variant): reference models trained
  without the examples give each example's loss distribution when it is *out*;
  an example the target model fits unusually well *for that example* is
  guessed a member. Stronger at low false-positive rates, where the loss
  threshold is blind to examples that are simply easy.

Neither reads the vault: the caller hands over members and non-members
(DataFrames of raw features and the target) and, for LiRA, a way to refit the
same kind of model.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import ConfigurationError
from ._bounds import check_confidence, check_delta
from ._result import MembershipResult, summarize
from ._scores import logit_confidence, scores

__all__ = ["lira_offline_attack", "loss_threshold_attack"]

#: The most rows each of members, non-members and population may have.
MAX_ROWS = 1_000_000
#: The most reference models :func:`lira_offline_attack` trains.
MAX_REFERENCES = 64


def _frame(data: object, what: str, target: str) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise ConfigurationError(f"{what} must be a pandas DataFrame, got {type(data).__name__}")
    if target not in data.columns:
        raise ConfigurationError(f"{what} has no target column {target!r}; pass target=")
    if len(data) > MAX_ROWS:
        raise ConfigurationError(f"{what} has {len(data):,} rows; at most {MAX_ROWS:,} are taken")
    return data


def _split(data: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    return data.drop(columns=[target]), data[target]


def _seed(random_state: object) -> np.random.Generator:
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise ConfigurationError(
            f"random_state must be an int (attacks are seeded), got {type(random_state).__name__}"
        )
    return np.random.default_rng(int(random_state))


def loss_threshold_attack(
    model: Any,
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    target: str,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
    random_state: int = 0,
) -> MembershipResult:
    """Guess "member" for examples the model fits with low loss (Yeom et al. 2018).

    The attack score is the negative per-example loss (:func:`~privml.attacks.scores`).
    The ROC and AUC use every example. The ε lower bound uses a random half of
    members and of non-members (seeded by ``random_state``) to choose the loss
    threshold that proves the most, and the other half to compute
    :func:`~privml.attacks.epsilon_lower_bound` at that threshold alone, so
    choosing the threshold does not inflate it.

    Parameters
    ----------
    model : estimator or TorchModel
        Fitted; see :func:`~privml.attacks.scores` for what is supported.
    members, non_members : pandas.DataFrame
        Rows the model was / was not trained on: its features and ``target``.
    target : str
        The target column.
    delta : float, default 1e-5
        The δ of the guarantee the bound tests (pass the ledger's δ to compare).
    confidence : float, default 0.95
        Of the bound, in (0, 1).
    random_state : int, default 0
        Seeds the halves.

    Returns
    -------
    MembershipResult

    Examples
    --------
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> rng = np.random.default_rng(0)
    >>> data = pd.DataFrame({"x": rng.normal(size=400), "y": rng.integers(0, 2, 400)})
    >>> members, non_members = data[:200], data[200:]
    >>> tree = DecisionTreeClassifier(random_state=0).fit(members[["x"]], members["y"])
    >>> result = loss_threshold_attack(tree, members, non_members, "y")
    >>> result.auc > 0.7, result.epsilon_lower_bound > 0
    (True, True)
    """
    members = _frame(members, "members", target)
    non_members = _frame(non_members, "non_members", target)
    delta, confidence = check_delta(delta), check_confidence(confidence)
    rng = _seed(random_state)
    signal_in = -scores(model, *_split(members, target))
    signal_out = -scores(model, *_split(non_members, target))
    return summarize(
        "loss-threshold", signal_in, signal_out, delta=delta, confidence=confidence, rng=rng
    )


def _references(
    fit_reference: Callable[[pd.DataFrame, pd.Series], Any],
    population: pd.DataFrame,
    target: str,
    size: int,
    k: int,
    rng: np.random.Generator,
) -> list[Any]:
    models = []
    for _ in range(k):
        rows = np.sort(rng.choice(len(population), size=size, replace=False))
        X, y = _split(population.iloc[rows], target)
        models.append(fit_reference(X.reset_index(drop=True), y.reset_index(drop=True)))
    return models


def lira_offline_attack(
    model: Any,
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    target: str,
    *,
    fit_reference: Callable[[pd.DataFrame, pd.Series], Any],
    population: pd.DataFrame | None = None,
    k: int = 4,
    delta: float = 1e-5,
    confidence: float = 0.95,
    random_state: int = 0,
) -> MembershipResult:
    """Offline LiRA (Carlini et al. 2022): compare each example's fit with models that never saw it.

    ``k`` reference models are trained by ``fit_reference(X, y)`` on data that
    holds none of the attacked examples: ``population`` if given, else a random
    half of ``non_members`` (which then takes no part in the attack; the result
    counts only the other half). Each reference model sees a random subset of
    that data as large as ``members`` (or all of it, if smaller). For each
    attacked example, its logit-scaled confidence under the reference models
    gives the mean of its "out" distribution; with few references the spread is
    pooled over all examples (the paper's fixed-variance variant). The attack
    score is how many pooled standard deviations the target model's confidence
    lies above that mean: offline LiRA's likelihood ratio is monotone in it.
    The ROC, AUC and ε bound then follow as in :func:`loss_threshold_attack`.

    Parameters
    ----------
    model : estimator or TorchModel
        The fitted target.
    members, non_members : pandas.DataFrame
        Its training rows and rows it did not see (features and ``target``).
    target : str
        The target column.
    fit_reference : callable
        ``fit_reference(X, y)`` returns a fitted model of the same kind as the
        target (same estimator and hyperparameters).
    population : pandas.DataFrame, optional
        Non-member rows for the reference models only (disjoint from both sets).
    k : int, default 4
        Reference models, 2 to 64.
    delta, confidence, random_state
        As in :func:`loss_threshold_attack`; ``random_state`` also draws the
        reference models' rows.

    Returns
    -------
    MembershipResult

    Examples
    --------
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> rng = np.random.default_rng(0)
    >>> data = pd.DataFrame({"x": rng.normal(size=600), "y": rng.integers(0, 2, 600)})
    >>> members, non_members = data[:200], data[200:]
    >>> def fit(X, y):
    ...     return DecisionTreeClassifier(random_state=0).fit(X, y)
    >>> tree = fit(members[["x"]], members["y"])
    >>> result = lira_offline_attack(tree, members, non_members, "y", fit_reference=fit)
    >>> result.attack, result.n_non_members, result.auc > 0.7
    ('lira-offline', 200, True)
    """
    members = _frame(members, "members", target)
    non_members = _frame(non_members, "non_members", target)
    delta, confidence = check_delta(delta), check_confidence(confidence)
    if not callable(fit_reference):
        raise ConfigurationError("fit_reference must be a callable fit_reference(X, y) -> model")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= k <= MAX_REFERENCES:
        raise ConfigurationError(f"k must be a whole number from 2 to {MAX_REFERENCES}, got {k!r}")
    rng = _seed(random_state)
    if population is None:
        order = rng.permutation(len(non_members))
        half = len(non_members) // 2
        population = non_members.iloc[np.sort(order[:half])]
        non_members = non_members.iloc[np.sort(order[half:])]
    else:
        population = _frame(population, "population", target)
    if len(population) < 2 or len(members) < 2 or len(non_members) < 2:
        raise ConfigurationError(
            "LiRA needs at least 2 members, 2 non-members and 2 population rows "
            "(without population=, half of non_members trains the reference models)"
        )
    size = min(len(population), len(members))
    refs = _references(fit_reference, population, target, size, int(k), rng)
    attacked = pd.concat([members, non_members], ignore_index=True)
    X, y = _split(attacked, target)
    observed = logit_confidence(model, X, y)
    out = np.stack([logit_confidence(ref, X, y) for ref in refs])
    spread = max(float(np.sqrt(np.mean(np.var(out, axis=0, ddof=1)))), 1e-6)
    signal = (observed - out.mean(axis=0)) / spread
    return summarize(
        "lira-offline",
        signal[: len(members)],
        signal[len(members) :],
        delta=delta,
        confidence=confidence,
        rng=rng,
    )
