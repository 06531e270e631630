"""A dataset's privacy budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..exceptions import ConfigurationError

__all__ = ["Budget"]


@dataclass(frozen=True)
class Budget:
    """The total (ε, δ) that all DP releases from one dataset may spend together.

    Parameters
    ----------
    epsilon : float
        Total ε, finite and positive.
    delta : float
        Total δ in ``[0, 1)``; ``0`` means pure DP. Keep it well below
        ``1 / rows`` (a common choice is ``1e-5`` or smaller).

    Examples
    --------
    >>> Budget(epsilon=3.0, delta=1e-5)
    Budget(epsilon=3.0, delta=1e-05)
    >>> Budget(epsilon=-1)
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: budget epsilon must be finite and > 0, got -1
    """

    epsilon: float
    delta: float = 0.0

    def __init__(self, *, epsilon: float, delta: float = 0.0) -> None:
        if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
            raise ConfigurationError(f"budget epsilon must be finite and > 0, got {epsilon!r}")
        if not (isinstance(delta, int | float) and 0 <= delta < 1):
            raise ConfigurationError(f"budget delta must lie in [0, 1), got {delta!r}")
        object.__setattr__(self, "epsilon", float(epsilon))
        object.__setattr__(self, "delta", float(delta))
