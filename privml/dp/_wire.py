"""Checks for declarative requests: JSON-like values refused by path, never by exception leak.

A declarative request (a network described as layers, an estimator described
as a class name and parameters) arrives as decoded JSON from a client privml
does not trust. Each check here takes the value and its path in the request
(``"layers[2].out_features"``) and returns it as the Python type wanted, or
raises :class:`~privml.exceptions.ConfigurationError` naming the path and the
rule. A bool is never a number, a float is never an integer, NaN and infinities
are never accepted, and messages quote key names only (shortened), never values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from difflib import get_close_matches
from typing import Any

from ..exceptions import ConfigurationError

__all__ = [
    "at",
    "boolean",
    "choice",
    "int_or_ints",
    "integer",
    "keys",
    "name_list",
    "number",
    "refuse",
    "shown",
    "sequence",
    "string",
]

#: The longest key name quoted in a message.
_SHOWN = 40


def refuse(path: str, rule: str) -> ConfigurationError:
    """The error for the value at ``path`` breaking ``rule``."""
    return ConfigurationError(f"{path or 'the request'}: {rule}")


def at(path: str, key: str | int) -> str:
    """The path of ``key`` inside the value at ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def shown(key: object) -> str:
    """A key as a message may quote it: printable, shortened."""
    text = ascii(key) if isinstance(key, str) else f"a {type(key).__name__}"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def keys(
    value: Any, path: str, allowed: Iterable[str], *, required: Iterable[str] = ()
) -> dict[str, Any]:
    """``value`` as a dict whose keys are among ``allowed`` and include ``required``."""
    allowed = list(allowed)
    if not isinstance(value, Mapping):
        raise refuse(path, f"must be an object (a JSON mapping), got {type(value).__name__}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or key not in allowed:
            close = get_close_matches(key, allowed, n=1) if isinstance(key, str) else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            takes = ", ".join(allowed) if allowed else "no keys"
            raise refuse(path, f"unknown key {shown(key)}{hint}; it takes {takes}")
        out[key] = item
    missing = [k for k in required if k not in out]
    if missing:
        raise refuse(path, f"missing {', '.join(missing)}")
    return out


def integer(value: Any, path: str, low: int, high: int) -> int:
    """An ``int`` (not a bool, not a float) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise refuse(path, f"must be an integer between {low} and {high}")
    return int(value)


def number(value: Any, path: str, low: float, high: float, *, open_low: bool = False) -> float:
    """A finite int or float (not a bool) in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        try:
            number_ = float(value)
        except OverflowError:  # an int too large for a float
            ok = False
        else:
            ok = math.isfinite(number_) and (low < number_ if open_low else low <= number_)
            ok = ok and number_ <= high
    if not ok:
        left = "(" if open_low else "["
        raise refuse(path, f"must be a finite number in {left}{low:g}, {high:g}]")
    return number_


def boolean(value: Any, path: str) -> bool:
    """``True`` or ``False`` (JSON ``true``/``false``), nothing else."""
    if not isinstance(value, bool):
        raise refuse(path, "must be true or false")
    return value


def choice(value: Any, path: str, options: Sequence[str]) -> str:
    """One of the strings in ``options``."""
    if not isinstance(value, str) or value not in options:
        raise refuse(path, f"must be one of {', '.join(map(repr, options))}")
    return value


def string(value: Any, path: str, *, max_chars: int = 256) -> str:
    """A non-empty string of at most ``max_chars`` characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars:
        raise refuse(path, f"must be a non-empty string of at most {max_chars} characters")
    return value


def sequence(value: Any, path: str, *, min_items: int, max_items: int) -> list[Any]:
    """A JSON array (a list or tuple) of ``min_items`` to ``max_items`` items."""
    if not isinstance(value, list | tuple) or not min_items <= len(value) <= max_items:
        raise refuse(path, f"must be a list of {min_items} to {max_items} items")
    return list(value)


def name_list(value: Any, path: str, *, max_items: int, max_chars: int = 256) -> list[str]:
    """A non-empty list of distinct non-empty strings (column names, say)."""
    items = sequence(value, path, min_items=1, max_items=max_items)
    names = [string(item, at(path, i), max_chars=max_chars) for i, item in enumerate(items)]
    if len(set(names)) != len(names):
        raise refuse(path, "names a column twice")
    return names


def int_or_ints(value: Any, path: str, length: int, low: int, high: int) -> tuple[int, ...]:
    """An integer, or a list of ``length`` integers, in ``[low, high]``: as a ``length``-tuple."""
    if isinstance(value, list | tuple):
        if len(value) != length:
            raise refuse(path, f"must be an integer or a list of {length} integers")
        return tuple(integer(v, at(path, i), low, high) for i, v in enumerate(value))
    return (integer(value, path, low, high),) * length
