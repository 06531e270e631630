"""A data-protection officer's privacy report: a model's claimed ε beside the ε attacks prove.

:class:`PrivacyReport` holds what ``vault.models.privacy_report`` measured on one
registered model: its provenance, the ledger's (ε, δ) claim, its accuracy on
the rows it trained on and on held-out rows of the same dataset version, each
membership attack's :class:`~privml.attacks.MembershipResult`, and any canary
measurement the model's training recorded. :func:`measure` runs the attacks;
it reads no vault (the caller hands over members, non-members and a way to
refit reference models).
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._optional import require
from ..exceptions import ConfigurationError
from ._membership import MAX_ROWS, lira_offline_attack, loss_threshold_attack
from ._result import MembershipResult
from ._scores import is_classifier

__all__ = ["ATTACKS", "MAX_REPORT_REFERENCES", "PrivacyReport", "check_attacks", "measure"]

#: The attacks a report can run.
ATTACKS = ("loss-threshold", "lira-offline")
#: The most LiRA reference models one report trains.
MAX_REPORT_REFERENCES = 16


@dataclasses.dataclass(frozen=True, eq=False)
class PrivacyReport:
    """One model's claimed ε beside the ε lower bounds attacks prove on it.

    Attributes
    ----------
    model, model_version : str, int
        The registered model attacked (for an HE model, the HE model's own name).
    dataset, dataset_version : str or None, int or None
        What it was trained on.
    epsilon_claimed, delta_claimed : float or None
        The ledger's figures recorded with the model (None: not a DP model).
    delta, confidence : float
        Of every lower bound.
    metric : str
        ``"accuracy"`` (classifiers) or ``"r2"`` (regressors).
    score_members, score_held_out : float
        That metric on the rows the model trained on and on rows it never saw.
    results : tuple of MembershipResult
        One per attack run.
    canaries : dict of str to dict
        Canary measurements the model's training recorded (counts and bounds).
    notes : tuple of str
        What the report did differently from what was asked, and why.
    """

    model: str
    model_version: int
    dataset: str | None
    dataset_version: int | None
    epsilon_claimed: float | None
    delta_claimed: float | None
    delta: float
    confidence: float
    metric: str
    score_members: float
    score_held_out: float
    results: tuple[MembershipResult, ...]
    canaries: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    # -- the figures -----------------------------------------------------------------
    def _bounds(self) -> list[tuple[str, float]]:
        found = [(r.attack, float(r.epsilon_lower_bound)) for r in self.results]
        for name, measurement in self.canaries.items():
            bound = measurement.get("epsilon_lower_bound")
            if isinstance(bound, int | float) and math.isfinite(bound):
                found.append((name, float(bound)))
        return found

    @property
    def best_lower_bound(self) -> float:
        """The largest ε lower bound any measurement proved (0.0: none proved anything)."""
        return max((b for _, b in self._bounds()), default=0.0)

    @property
    def exceeded(self) -> list[tuple[str, float]]:
        """The measurements whose lower bound exceeds the claimed ε (empty if none, or no claim)."""
        if self.epsilon_claimed is None:
            return []
        return [(n, b) for n, b in self._bounds() if b > self.epsilon_claimed]

    @property
    def verdict(self) -> str:
        """One sentence a data-protection officer can act on."""
        best, level = self.best_lower_bound, f"{self.confidence:.0%} confidence"
        if self.epsilon_claimed is None:
            return f"Non-private model: the attacks prove ε ≥ {best:.2f} (at {level})."
        claim = f"{self.epsilon_claimed:g}"
        over = self.exceeded
        if over:
            name, bound = max(over, key=lambda nb: nb[1])
            return (
                f"The claimed ε = {claim} is contradicted: {name} proves ε ≥ {bound:.2f} "
                f"at {level}. The model's privacy claim is wrong; investigate before using it."
            )
        return (
            f"No attack exceeded the claimed ε = {claim} (best lower bound {best:.2f} at {level})."
        )

    # -- views ---------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per measurement: attack, sizes, AUC, TPR at low FPR, ε bound, claim."""
        rows = []
        for r in self.results:
            rows.append(
                {
                    "measurement": r.attack,
                    "kind": "membership inference",
                    "n_members": r.n_members,
                    "n_non_members": r.n_non_members,
                    "auc": r.auc,
                    "tpr_at_0.1%_fpr": r.tpr_at.get(0.001),
                    "tpr_at_1%_fpr": r.tpr_at.get(0.01),
                    "epsilon_lower_bound": r.epsilon_lower_bound,
                    "confidence": r.confidence,
                    "delta": r.delta,
                }
            )
        for name, m in self.canaries.items():
            rows.append(
                {
                    "measurement": name,
                    "kind": f"canaries ({m.get('threat_model', 'black-box')})",
                    "n_members": m.get("m"),
                    "n_non_members": None,
                    "auc": None,
                    "tpr_at_0.1%_fpr": None,
                    "tpr_at_1%_fpr": None,
                    "epsilon_lower_bound": m.get("epsilon_lower_bound"),
                    "confidence": m.get("confidence"),
                    "delta": m.get("delta"),
                }
            )
        frame = pd.DataFrame(rows)
        frame["epsilon_claimed"] = self.epsilon_claimed
        frame["exceeds_claim"] = [
            self.epsilon_claimed is not None
            and isinstance(b, int | float)
            and b > self.epsilon_claimed
            for b in frame["epsilon_lower_bound"]
        ]
        return frame

    def to_dict(self) -> dict[str, Any]:
        """The figures only (no ROC points, no thresholds, no row values): for the audit log."""
        return {
            "model": self.model,
            "model_version": self.model_version,
            "epsilon_claimed": self.epsilon_claimed,
            "delta_claimed": self.delta_claimed,
            "delta": self.delta,
            "confidence": self.confidence,
            "metric": self.metric,
            "score_members": _finite(self.score_members),
            "score_held_out": _finite(self.score_held_out),
            "attacks": [
                {
                    "attack": r.attack,
                    "n_members": r.n_members,
                    "n_non_members": r.n_non_members,
                    "auc": r.auc,
                    "tpr_at": {repr(f): t for f, t in r.tpr_at.items()},
                    "epsilon_lower_bound": r.epsilon_lower_bound,
                }
                for r in self.results
            ],
            "canaries": {
                name: {"epsilon_lower_bound": m.get("epsilon_lower_bound"), "m": m.get("m")}
                for name, m in self.canaries.items()
            },
            "best_lower_bound": self.best_lower_bound,
            "exceeded": bool(self.exceeded),
            "verdict": self.verdict,
            "notes": list(self.notes),
        }

    def plot(self, ax: Any = None) -> Any:
        """ROC curves of the attacks on a matplotlib Axes (a new figure's if ``ax`` is None).

        Needs matplotlib (``pip install privml[notebooks]``). Returns the Axes.
        """
        if ax is None:  # through pyplot, so a notebook shows the figure
            plt = require("matplotlib.pyplot", feature="PrivacyReport.plot")
            _, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        for r in self.results:
            ax.plot(
                r.fpr, r.tpr, label=f"{r.attack} (AUC {r.auc:.3f}, ε ≥ {r.epsilon_lower_bound:.2f})"
            )
        claim = (
            "not DP" if self.epsilon_claimed is None else f"claimed ε = {self.epsilon_claimed:g}"
        )
        ax.set_title(f"{self.model} v{self.model_version}: {claim}")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(loc="lower right")
        return ax

    def __str__(self) -> str:
        source = f"{self.dataset} v{self.dataset_version}" if self.dataset else "no dataset"
        claim = (
            "not DP"
            if self.epsilon_claimed is None
            else f"ε = {self.epsilon_claimed:g}, δ = {self.delta_claimed:g}"
        )
        lines = [
            f"Privacy report: model {self.model} v{self.model_version} (trained on {source})",
            f"  claimed: {claim}",
            f"  {self.metric}: {self.score_members:.3f} on members, "
            f"{self.score_held_out:.3f} on held-out rows",
        ]
        for row in self.to_frame().itertuples(index=False):
            auc = "" if row.auc is None or pd.isna(row.auc) else f"AUC {row.auc:.3f}, "
            lines.append(f"  {row.measurement}: {auc}ε ≥ {row.epsilon_lower_bound:.3f}")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(self.verdict)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        table = self.to_frame().to_html(index=False, float_format=lambda v: f"{v:.4g}")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (
            f"<div><h4>Privacy report: {html.escape(self.model)} v{self.model_version}</h4>"
            f"<p><b>{html.escape(self.verdict)}</b></p>"
            f"<p>{self.metric}: {self.score_members:.3f} on members, "
            f"{self.score_held_out:.3f} on held-out rows</p>{table}"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "</div>"
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def check_attacks(attacks: Any) -> tuple[str, ...]:
    """``attacks`` as a tuple of known attack names (at least one, no repeats)."""
    if isinstance(attacks, str):
        attacks = (attacks,)
    try:
        names = tuple(dict.fromkeys(attacks))
    except TypeError:
        raise ConfigurationError(f"attacks= takes names from {ATTACKS}") from None
    unknown = [a for a in names if a not in ATTACKS]
    if not names or unknown:
        raise ConfigurationError(f"attacks= takes one or more of {ATTACKS}, got {list(attacks)!r}")
    return names


def subsample(
    frame: pd.DataFrame, what: str, rng: np.random.Generator
) -> tuple[pd.DataFrame, str | None]:
    """At most :data:`MAX_ROWS` rows of ``frame`` (a seeded sample), and a note if sampled."""
    if len(frame) <= MAX_ROWS:
        return frame, None
    rows = np.sort(rng.choice(len(frame), size=MAX_ROWS, replace=False))
    note = f"{what}: a random {MAX_ROWS:,} of {len(frame):,} rows were attacked"
    return frame.iloc[rows].reset_index(drop=True), note


def score(model: Any, data: pd.DataFrame, target: str) -> tuple[str, float]:
    """The model's accuracy (classifiers) or R² (regressors) on ``data``."""
    from sklearn.metrics import r2_score

    X, y = data.drop(columns=[target]), np.asarray(data[target].tolist())
    predicted = np.asarray(model.predict(X))
    if is_classifier(model):
        return "accuracy", float(np.mean(predicted.astype(object) == y.astype(object)))
    if len(y) < 2:
        return "r2", math.nan
    return "r2", float(r2_score(y.astype(float), predicted.astype(float)))


def measure(
    model: Any,
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    target: str,
    *,
    attacks: Sequence[str],
    fit_reference: Callable[[pd.DataFrame, pd.Series], Any] | None,
    references: int,
    delta: float,
    confidence: float,
    random_state: int,
) -> list[MembershipResult]:
    """Run each named attack (LiRA only with ``fit_reference``); see the attacks' docs."""
    results = []
    for attack in attacks:
        if attack == "loss-threshold":
            results.append(
                loss_threshold_attack(
                    model,
                    members,
                    non_members,
                    target,
                    delta=delta,
                    confidence=confidence,
                    random_state=random_state,
                )
            )
        elif fit_reference is not None:
            results.append(
                lira_offline_attack(
                    model,
                    members,
                    non_members,
                    target,
                    fit_reference=fit_reference,
                    k=references,
                    delta=delta,
                    confidence=confidence,
                    random_state=random_state,
                )
            )
    return results
