"""Checks of event parameters, with messages that say what to fix and the accepted range.

Every number that reaches the accountants, the ledger's JSON and the audit log
passes through here first, so a subnormal, infinite or absurd value is refused
with a :class:`~privml.exceptions.ConfigurationError` naming the accepted range
before any accounting runs (and never surfaces later as a raw ``ValueError``).
"""

from __future__ import annotations

import math
from typing import Any

from ..exceptions import ConfigurationError

__all__ = [
    "COUNT_MAX",
    "DELTA_MIN",
    "EPSILON_RANGE",
    "NOISE_MULTIPLIER_RANGE",
    "SAMPLE_RATE_MIN",
    "SCALE_RANGE",
    "STEPS_MAX",
    "count",
    "delta",
    "in_range",
    "one_of",
    "positive",
    "same_params",
]

EPSILON_RANGE = (1e-9, 1e6)  # ε of one release, and of a budget
NOISE_MULTIPLIER_RANGE = (1e-3, 1e9)  # σ / sensitivity
SCALE_RANGE = (1e-12, 1e12)  # σ, Laplace scale, sensitivity, clip norm
SAMPLE_RATE_MIN = 1e-9  # sample rates lie in [SAMPLE_RATE_MIN, 1]
DELTA_MIN = 1e-30  # δ is 0 or lies in [DELTA_MIN, 1)
STEPS_MAX = 10**8  # DP-SGD steps
COUNT_MAX = 10**12  # batch sizes and record counts


def positive(name: str, value: Any) -> float:
    """A finite number > 0 (no range), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def in_range(name: str, value: Any, bounds: tuple[float, float]) -> float:
    """A finite number in ``[low, high]``; the error names the accepted range."""
    x = positive(name, value)
    low, high = bounds
    if not low <= x <= high:
        raise ConfigurationError(
            f"{name} must lie in [{low:g}, {high:g}], got {value!r}: values outside it are "
            "either meaningless as privacy parameters or not representable by the accountants"
        )
    return x


def delta(name: str, value: Any) -> float:
    """δ: exactly 0 (pure DP), or in ``[DELTA_MIN, 1)``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    if value != 0 and not DELTA_MIN <= value < 1:
        raise ConfigurationError(f"{name} must be 0 or lie in [{DELTA_MIN:g}, 1), got {value!r}")
    return float(value)


def count(name: str, value: Any, high: int = COUNT_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in [1, {high:g}], got {value!r}")
    return int(value)


def same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal keys and values; derived floats may differ in the last bits."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if type(x) is not type(y):
            return False
        if isinstance(x, float) and not math.isclose(x, y, rel_tol=1e-12):
            return False
        if not isinstance(x, float) and x != y:
            return False
    return True


def one_of(a: str, va: Any, b: str, vb: Any) -> None:
    if (va is None) == (vb is None):
        raise ConfigurationError(f"give exactly one of {a}= or {b}=")
