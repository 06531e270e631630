"""Checks of event parameters, with messages that say what to fix."""

from __future__ import annotations

import math
from typing import Any

from ..exceptions import ConfigurationError

__all__ = ["count", "one_of", "positive", "same_params"]


def positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
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
