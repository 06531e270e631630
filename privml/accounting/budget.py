"""A dataset's privacy budget."""

from __future__ import annotations

from dataclasses import dataclass

from ._params import EPSILON_RANGE, in_range
from ._params import delta as check_delta

__all__ = ["Budget"]


@dataclass(frozen=True)
class Budget:
    """The total (ε, δ) that all DP releases from one dataset may spend together.

    Parameters
    ----------
    epsilon : float
        Total ε, finite and positive.
    delta : float
        Total δ: ``0`` (pure DP) or in ``[1e-30, 1)``. Keep it well below
        ``1 / rows`` (a common choice is ``1e-5`` or smaller). Generic
        (ε, δ > 0) releases may use up a tenth of it together; the rest is
        shared by the privacy filter's Rényi orders.

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
        eps = in_range("budget epsilon", epsilon, EPSILON_RANGE)
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", check_delta("budget delta", delta))
