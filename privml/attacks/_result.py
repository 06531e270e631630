"""What a membership attack found: its ROC, AUC, low-FPR power and the ε it proves."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from ..exceptions import ConfigurationError
from ._bounds import epsilon_bounds, epsilon_lower_bound

__all__ = ["MembershipResult", "summarize"]

#: The false-positive rates at which the true-positive rate is reported.
REPORTED_FPRS = (0.001, 0.01)
#: At most this many candidate thresholds are tried on the selection half.
_MAX_THRESHOLDS = 2048


@dataclasses.dataclass(frozen=True, eq=False)
class MembershipResult:
    """One membership-inference attack's outcome on one model.

    Attributes
    ----------
    attack : str
        Its name, e.g. ``"loss-threshold"`` or ``"lira-offline"``.
    n_members, n_non_members : int
        The examples it was run on.
    auc : float
        Area under the ROC curve (0.5: no better than a coin).
    tpr_at : dict of float to float
        True-positive rate at each false-positive rate (0.001 and 0.01): the
        highest TPR whose empirical FPR does not exceed it.
    fpr, tpr : numpy.ndarray
        The ROC curve, over all examples.
    epsilon_lower_bound : float
        The ε the attack proves at ``delta`` with ``confidence`` (0.0: nothing),
        from a threshold chosen on one half of the examples and counts on the other.
    delta, confidence : float
        Of the bound.
    threshold : float
        The attack score at or above which the bound's test guessed "member".
    """

    attack: str
    n_members: int
    n_non_members: int
    auc: float
    tpr_at: dict[float, float]
    fpr: np.ndarray = dataclasses.field(repr=False)
    tpr: np.ndarray = dataclasses.field(repr=False)
    epsilon_lower_bound: float
    delta: float
    confidence: float
    threshold: float

    def __post_init__(self) -> None:
        self.fpr.setflags(write=False)
        self.tpr.setflags(write=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (arrays as lists, FPR keys as strings)."""
        return {
            "attack": self.attack,
            "n_members": self.n_members,
            "n_non_members": self.n_non_members,
            "auc": self.auc,
            "tpr_at": {repr(f): t for f, t in self.tpr_at.items()},
            "fpr": self.fpr.tolist(),
            "tpr": self.tpr.tolist(),
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "delta": self.delta,
            "confidence": self.confidence,
            "threshold": self.threshold,
        }


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2 :]


def _choose_threshold(
    members: np.ndarray, non_members: np.ndarray, delta: float, confidence: float
) -> float:
    """The threshold whose test proves the most on this (selection) half."""
    pooled = np.unique(np.concatenate([members, non_members]))
    if len(pooled) > _MAX_THRESHOLDS:
        pooled = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, _MAX_THRESHOLDS)))
    members, non_members = np.sort(members), np.sort(non_members)
    tp = len(members) - np.searchsorted(members, pooled, side="left")
    fp = len(non_members) - np.searchsorted(non_members, pooled, side="left")
    fn, tn = len(members) - tp, len(non_members) - fp
    tp_, fn_, fp_, tn_ = (a.astype(float) for a in (tp, fn, fp, tn))
    found = epsilon_bounds(tp_, fn_, fp_, tn_, delta, confidence)
    return float(pooled[int(np.argmax(found))])


def summarize(
    attack: str,
    members: np.ndarray,
    non_members: np.ndarray,
    *,
    delta: float,
    confidence: float,
    rng: np.random.Generator,
) -> MembershipResult:
    """The :class:`MembershipResult` of attack scores (higher means "member").

    The ε bound is honest about the threshold: members and non-members are
    each split at random in two halves; the threshold that proves the most on
    the first half is fixed, and :func:`~privml.attacks.epsilon_lower_bound` is
    computed from its counts on the second half only, so the choice does not
    inflate the bound (the second half's counts are independent of it).
    """
    if len(members) < 2 or len(non_members) < 2:
        raise ConfigurationError("a membership attack needs at least 2 members and 2 non-members")
    if not (np.isfinite(members).all() and np.isfinite(non_members).all()):
        raise ConfigurationError("the model gave a non-finite loss on some example")
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    signal = np.concatenate([members, non_members])
    fpr, tpr, _ = roc_curve(labels, signal)
    tpr_at = {f: float(np.max(tpr[fpr <= f])) for f in REPORTED_FPRS}
    pick_m, test_m = _halves(len(members), rng)
    pick_n, test_n = _halves(len(non_members), rng)
    threshold = _choose_threshold(members[pick_m], non_members[pick_n], delta, confidence)
    tp = int(np.sum(members[test_m] >= threshold))
    fp = int(np.sum(non_members[test_n] >= threshold))
    bound = epsilon_lower_bound(
        tp, len(test_m) - tp, fp, len(test_n) - fp, delta=delta, confidence=confidence
    )
    return MembershipResult(
        attack=attack,
        n_members=len(members),
        n_non_members=len(non_members),
        auc=float(roc_auc_score(labels, signal)),
        tpr_at=tpr_at,
        fpr=np.asarray(fpr, dtype=float),
        tpr=np.asarray(tpr, dtype=float),
        epsilon_lower_bound=bound,
        delta=delta,
        confidence=confidence,
        threshold=threshold,
    )
