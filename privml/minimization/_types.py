"""Small types shared by the search modules."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

#: Agreements are compared with the target up to this much float rounding.
TOLERANCE = 1e-12


@dataclass(frozen=True)
class Candidate:
    """A generalization (``generalizations_`` form) and how it scored.

    ``accuracy`` is measured on the held-out rows, ``fit_accuracy`` on the search
    rows, ``ncp`` on all rows given to ``fit``. ``plan`` records how the search
    made it (for the per-feature search: its price and the features it kept).
    """

    rules: dict[str, Any]
    accuracy: float
    fit_accuracy: float
    ncp: float
    target: float
    plan: tuple[float, frozenset[int]] = (float("nan"), frozenset())

    @property
    def admissible(self) -> bool:
        return min(self.accuracy, self.fit_accuracy) >= self.target - TOLERANCE

    def with_plan(self, plan: tuple[float, frozenset[int]]) -> Candidate:
        return replace(self, plan=plan)
