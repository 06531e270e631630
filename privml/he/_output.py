"""What the client does with decrypted scores: the link function and class labels.

The link (sigmoid, softmax) is applied in plaintext on the client, after
decryption: it is not a polynomial, and computing it on the client costs the
server nothing and keeps the encrypted circuit shallow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..exceptions import ConfigurationError

__all__ = ["LINKS", "Output", "OutputSpec"]

Output = Literal["auto", "scores", "proba", "labels"]
LINKS = ("identity", "sigmoid", "softmax", "softmax_binary", "ovr")


@dataclass(frozen=True)
class OutputSpec:
    """How scores become predictions.

    ``link`` is one of ``"identity"`` (regression, SVM scores), ``"sigmoid"``
    (binary or multi-label), ``"softmax"``, ``"softmax_binary"`` (scikit-learn's
    multinomial model on two classes) or ``"ovr"`` (one-vs-rest logistic,
    normalized). ``classes`` are the labels (None when labels make no sense);
    ``squeeze`` returns one score per sample when there is one output.
    """

    link: str
    classes: tuple[Any, ...] | None
    squeeze: bool

    def __post_init__(self) -> None:
        if self.link not in LINKS:
            raise ConfigurationError(f"link must be one of {LINKS}, got {self.link!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "classes": None if self.classes is None else list(self.classes),
            "squeeze": self.squeeze,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputSpec:
        classes = data["classes"]
        return cls(str(data["link"]), None if classes is None else tuple(classes), data["squeeze"])

    def shape(self, scores: np.ndarray) -> np.ndarray:
        """Scores as the source model reports them (1-D for a single output if squeezed)."""
        return scores[:, 0] if self.squeeze and scores.shape[1] == 1 else scores

    def apply(self, scores: np.ndarray, output: Output) -> np.ndarray:
        """Turn an (n, k) score matrix into what ``output`` asks for."""
        if output == "auto":
            output = "scores" if self.link == "identity" else "proba"
        if output == "scores":
            return self.shape(scores)
        if output == "proba":
            return self._proba(scores)
        if output == "labels":
            return self._labels(scores)
        raise ConfigurationError(
            f"output must be 'auto', 'scores', 'proba' or 'labels', got {output!r}"
        )

    def _proba(self, s: np.ndarray) -> np.ndarray:
        if self.link == "identity":
            raise ConfigurationError(
                "this model has no probabilistic link (it returns scores); decrypt with "
                "output='scores' or output='labels', or compile with link='sigmoid'/'softmax'"
            )
        if self.link == "sigmoid":
            p = _sigmoid(s)
            return np.hstack([1.0 - p, p]) if s.shape[1] == 1 else p
        if self.link == "softmax_binary":
            return _softmax(np.hstack([-s, s]))
        if self.link == "ovr":
            p = _sigmoid(s)
            normalized: np.ndarray = p / p.sum(axis=1, keepdims=True)
            return normalized
        return _softmax(s)

    def _labels(self, s: np.ndarray) -> np.ndarray:
        if self.classes is None:
            raise ConfigurationError(
                "this model predicts values, not classes; decrypt with output='scores'"
            )
        classes = np.asarray(self.classes)
        index = (s[:, 0] > 0).astype(int) if s.shape[1] == 1 else np.argmax(s, axis=1)
        labels: np.ndarray = classes[index]
        return labels


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * s))


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out
