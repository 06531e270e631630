"""The one-run canary measurement of DP-SGD (Steinke, Nasr & Jagielski 2023, arXiv 2305.08846).

A DP-SGD run trained with ``canaries=m`` also measures its own privacy: ``m``
synthetic records (never real ones) each join the training set on an
independent fair coin; after training, a black-box attacker who sees only the
final model guesses, from each canary's loss, whether it was in. Many correct
guesses are impossible under ε-DP, so the count gives an empirical lower bound
on ε (``privml.attacks._bounds.one_run_lower_bound``), reported beside the ε
the ledger charged. One run, no retraining.

Design
------
* **Canaries are synthetic and input-space.** Each is a feature vector drawn
  uniformly within the schema's declared bounds (a uniform category for a
  categorical feature), encoded by the same schema scaler as the real rows,
  with a uniformly random label (class, or a value in the target's bounds).
  Random labels make a canary an outlier the model can only fit by memorizing
  it, which is what the measurement needs. The draws and the inclusion coins
  come from the OS's CSPRNG (nothing a caller can seed); the coins live only in
  the :class:`Canaries` object of the run, in memory, and are never recorded.
* **They join the Poisson sampling exactly as real rows do.** The included
  canaries are appended to the run's sealed table, and every step samples
  every row of it, real or canary, independently with the SAME
  ``q = batch_size / N``, where ``N`` counts the real rows only. The plan, the
  reservation and the settled event are those of a run without canaries:
  ``dp_sgd(σ, steps, q = batch_size / N)``.
* **Why the charged ε stays valid.** The Poisson-subsampled Gaussian
  mechanism's guarantee for one record depends only on that record's own
  sampling rate, the clip norm, σ and the steps, never on how many other
  records there are: adding or removing one record changes the clipped sum of
  a step by at most ``max_grad_norm`` when it is sampled, which happens with
  probability ``q``. Every real record and every included canary is sampled
  with probability ``q`` at each of the run's steps, with the same σ and clip,
  so ``dp_sgd(σ, steps, q)`` bounds the privacy loss of each of them; the
  canaries only make batches larger (expected ``batch_size + q·m_in``), which
  changes the effective learning rate, not the guarantee. The alternative,
  ``q = batch_size / (N + m_in)``, would also be valid but would charge less
  than a run on the real rows alone and tie the ledger's figure to the
  canaries' coins; the chosen ``q`` is never understated for the real rows.
* **Scoring (black-box, final model).** A canary's score is minus its loss
  under the final model. The attacker abstains except on the ``k`` highest
  scores (guessed "in") and the ``k`` lowest ("out"), ``k = ⌈m·GUESS_FRACTION⌉``
  fixed before training (choosing ``k`` after seeing the scores would need a
  correction the bound does not make).
* **Provenance.** The canaries are excluded from everything registered: the
  model's ``trained_on`` version, its ``training_rows`` digest and the
  dataset's versions are those of the real rows; only the counts (m, guesses,
  correct) and the bound are recorded.

The same run also draws as many white-box (gradient-space, Dirac) canaries
(:mod:`privml.attacks._dirac`), scored on every noisy gradient: a stronger
observer, so usually a tighter bound. The black-box measurement is weaker
(its bound is looser), never wrong.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..exceptions import ConfigurationError
from ..schema import Schema

__all__ = [
    "CANARIES_MAX",
    "CANARIES_PER_ROW",
    "CONFIDENCE",
    "GUESS_FRACTION",
    "Canaries",
    "CanaryTally",
    "check_canary_count",
    "epsilon_lower_bound",
]

#: At most this many canaries in one run (memory and time stay bounded).
CANARIES_MAX = 10_000
#: At most this many canaries per real row: canaries must not swamp the training set.
CANARIES_PER_ROW = 1
#: The share of canaries guessed "in" (top scores), and again "out" (bottom scores).
GUESS_FRACTION = 0.1
#: The confidence of the reported lower bound.
CONFIDENCE = 0.95
#: The threat model of the measurement.
BLACK_BOX = "black-box final model"


def check_canary_count(m: int, n: int | None = None) -> None:
    """Refuse a canary count outside ``[0, CANARIES_MAX]`` or above ``CANARIES_PER_ROW · n``."""
    if m > CANARIES_MAX:
        raise ConfigurationError(f"canaries must be at most {CANARIES_MAX}, got {m}")
    if n is not None and m > CANARIES_PER_ROW * n:
        raise ConfigurationError(
            f"canaries={m} exceeds {CANARIES_PER_ROW} per row of the {n} rows available; "
            "use fewer canaries (they measure the run, they must not dominate it)"
        )


@dataclass(frozen=True, eq=False)
class Canaries:
    """``m`` synthetic records and their secret inclusion coins (in memory only).

    Attributes
    ----------
    X, y : torch.Tensor
        All ``m`` canaries, encoded as the run's rows are.
    included : numpy.ndarray of bool
        Which canaries joined the training set (a fair coin each).
    task : str
        ``"classification"`` or ``"regression"``.
    """

    X: torch.Tensor
    y: torch.Tensor
    included: np.ndarray
    task: str

    @classmethod
    def draw(
        cls,
        schema: Schema,
        features: Sequence[str],
        target: str,
        scaler: Any,
        m: int,
        *,
        rng: np.random.Generator | None = None,
    ) -> Canaries:
        """Draw ``m`` canaries within the schema's bounds, each included with probability 1/2.

        ``rng``: the generator for their values and coins; by default one keyed
        from the OS's CSPRNG (DP-SGD passes one keyed as its Poisson coins are).
        """
        if rng is None:
            rng = np.random.default_rng(secrets.randbits(128))
        frame = pd.DataFrame({f: _column(schema, f, m, rng) for f in features})
        X = torch.as_tensor(np.nan_to_num(scaler.transform(frame), nan=0.0), dtype=torch.float32)
        field = schema[target]
        if field.kind == "categorical":
            y = torch.as_tensor(rng.integers(0, len(field.categories or ()), m), dtype=torch.int64)
            task = "classification"
        else:
            y = torch.as_tensor(rng.random(m), dtype=torch.float32).reshape(-1, 1)
            task = "regression"
        included = rng.random(m) < 0.5
        return cls(X, y, included, task)

    @property
    def m(self) -> int:
        return len(self.included)

    def joined(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The included canaries' rows, to append to the run's table."""
        index = torch.as_tensor(np.flatnonzero(self.included), dtype=torch.long)
        return self.X[index], self.y[index]

    def scores(self, module: nn.Module) -> np.ndarray:
        """Minus each canary's loss under ``module`` (higher: more likely trained on)."""
        device = next(module.parameters()).device
        was = {mod: mod.training for mod in module.modules()}
        module.eval()
        try:
            with torch.no_grad():
                out = module(self.X.to(device))
                y = self.y.to(device)
                if self.task == "classification":
                    loss = nn.functional.cross_entropy(out, y, reduction="none")
                else:
                    loss = ((out - y) ** 2).reshape(len(y), -1).mean(dim=1)
        finally:
            for mod, training in was.items():
                mod.training = training
        return -loss.detach().cpu().numpy().astype(float)

    def tally(self, module: nn.Module, *, epsilon: float, delta: float) -> CanaryTally:
        """Score the canaries, guess on the top and bottom ``k``, count the correct guesses."""
        guesses, correct = tally_guesses(self.scores(module), self.included)
        return CanaryTally(
            m=self.m,
            guesses=guesses,
            correct=correct,
            threat_model=BLACK_BOX,
            epsilon_claimed=epsilon,
            delta=delta,
        )


def tally_guesses(scores: np.ndarray, included: np.ndarray) -> tuple[int, int]:
    """Guess "in" on the top ``k`` scores and "out" on the bottom ``k``; count the correct.

    >>> tally_guesses(np.array([3.0, 2.0, 1.0, 0.0] * 5), np.array([1, 1, 0, 0] * 5, bool))
    (4, 4)
    """
    m = len(scores)
    k = min(math.ceil(m * GUESS_FRACTION), m // 2)
    order = np.argsort(scores, kind="stable")
    out, into = order[:k], order[m - k :]
    correct = int(np.sum(included[into])) + int(np.sum(~included[out]))
    return 2 * k, correct


@dataclass(frozen=True)
class CanaryTally:
    """What the measurement found: counts only, never a canary or its coin."""

    m: int
    guesses: int
    correct: int
    threat_model: str
    epsilon_claimed: float
    delta: float

    def as_dict(self) -> dict[str, Any]:
        """The counts, the claim and the lower bound (``None`` until the bound is available)."""
        return {
            "m": self.m,
            "guesses": self.guesses,
            "correct": self.correct,
            "threat_model": self.threat_model,
            "confidence": CONFIDENCE,
            "epsilon_lower_bound": epsilon_lower_bound(self),
            "epsilon_claimed": self.epsilon_claimed,
            "delta": self.delta,
        }


def epsilon_lower_bound(tally: CanaryTally, *, confidence: float = CONFIDENCE) -> float:
    """The ε lower bound for ``tally`` (``privml.attacks._bounds.one_run_lower_bound``)."""
    from ._bounds import one_run_lower_bound

    return float(
        one_run_lower_bound(
            tally.m, tally.guesses, tally.correct, delta=tally.delta, confidence=confidence
        )
    )


def _column(schema: Schema, feature: str, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` values of ``feature`` drawn uniformly within its declared bounds or categories."""
    field = schema[feature]
    if field.kind in ("tensor", "sequence"):  # no synthetic images or sentences: not yet measured
        raise ConfigurationError(
            f"canaries= needs scalar features; {feature!r} is a {field.kind} field: train "
            "without canaries (nothing was charged)"
        )
    if field.kind == "categorical":
        categories = np.array(list(field.categories or ()), dtype=object)
        return categories[rng.integers(0, len(categories), m)]
    if field.bounds is None:  # the scaler refuses such features before any canary is drawn
        raise ConfigurationError(f"feature {feature!r} has no declared bounds")
    lo, hi = field.bounds
    if field.kind == "integer":
        return rng.integers(int(lo), int(hi) + 1, m)
    return rng.uniform(lo, hi, m)
