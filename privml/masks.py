"""Masks: what a ``masked`` column shows instead of its values.

A schema may name a mask per field (``Field.text(mask=Mask.last(4))``);
otherwise each kind has a default that hides the value:

- text: redacted, except the last 4 characters of values at least 8 long;
- numeric and integer: floored to a granularity of about a tenth of the bounds;
- datetime: the year only;
- categorical and identifier: redacted.

Examples
--------
>>> import pandas as pd
>>> Mask.last(4).apply(pd.Series(["4929123456781234", "short"])).tolist()
['****1234', '****']
>>> Mask.round(10).apply(pd.Series([34.0, 71.5])).tolist()
[30.0, 70.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import ConfigurationError

__all__ = ["Mask", "default_mask"]

_REDACTED = "****"


@dataclass(frozen=True)
class Mask:
    """A masking function. Build one with a constructor: ``Mask.round(5)``."""

    kind: str
    granularity: float | None = None
    keep: int | None = None
    groups: tuple[tuple[Any, str], ...] | None = None

    @classmethod
    def redact(cls) -> Mask:
        """Replace every value with ``"****"`` (nulls stay null)."""
        return cls("redact")

    @classmethod
    def last(cls, keep: int = 4) -> Mask:
        """Show only the last ``keep`` characters, and only of values at least twice as long."""
        if keep < 1:
            raise ConfigurationError("Mask.last needs keep >= 1")
        return cls("last", keep=keep)

    @classmethod
    def round(cls, granularity: float) -> Mask:
        """Floor numbers to a multiple of ``granularity`` (34 -> 30 with granularity 10)."""
        if not (math.isfinite(granularity) and granularity > 0):
            raise ConfigurationError(f"granularity must be finite and > 0, got {granularity!r}")
        return cls("round", granularity=float(granularity))

    @classmethod
    def year(cls) -> Mask:
        """Keep only the year of a timestamp."""
        return cls("year")

    @classmethod
    def month(cls) -> Mask:
        """Keep only the year and month of a timestamp, as ``"2024-03"``."""
        return cls("month")

    @classmethod
    def group(cls, groups: Mapping[Any, str]) -> Mask:
        """Map categories to coarser groups (``{"flu": "respiratory", ...}``); others redacted."""
        return cls("group", groups=tuple((k, str(v)) for k, v in groups.items()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.granularity is not None:
            out["granularity"] = self.granularity
        if self.keep is not None:
            out["keep"] = self.keep
        if self.groups is not None:
            out["groups"] = [list(pair) for pair in self.groups]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mask:
        groups = data.get("groups")
        return cls(
            data["kind"],
            granularity=data.get("granularity"),
            keep=data.get("keep"),
            groups=tuple((k, v) for k, v in groups) if groups is not None else None,
        )

    def apply(self, values: pd.Series) -> pd.Series:
        """Mask a column (vectorized); nulls stay null."""
        null = values.isna()
        if self.kind == "redact":
            redacted = pd.Series(_REDACTED, index=values.index, dtype="str")
            return redacted.where(~null, None)
        if self.kind == "last":
            keep = self.keep or 4
            text = values.astype("str")
            long_enough = text.str.len() >= 2 * keep
            shown = _REDACTED + text.str.slice(-keep)
            out = shown.where(long_enough, _REDACTED)
            return out.where(~null, None).astype("str")
        if self.kind == "round":
            g = self.granularity or 1.0
            floored = np.floor(values.astype("float64") / g) * g
            if pd.api.types.is_integer_dtype(values) and float(g).is_integer():
                return floored.astype("Int64")
            return floored
        if self.kind == "year":
            return values.dt.year.astype("Int64")
        if self.kind == "month":
            return values.dt.strftime("%Y-%m").astype("str")
        if self.kind == "group":
            mapping = dict(self.groups or ())
            out = values.astype(object).map(lambda v: mapping.get(v, _REDACTED))
            return out.where(~null, None).astype("str")
        raise ConfigurationError(f"unknown mask kind {self.kind!r}")


def default_mask(kind: str, bounds: tuple[float, float] | None) -> Mask:
    """The mask a field of this kind gets when its schema names none."""
    if kind == "text":
        return Mask.last(4)
    if kind in ("numeric", "integer") and bounds is not None:
        return Mask.round(_nice((bounds[1] - bounds[0]) / 10))
    if kind == "datetime":
        return Mask.year()
    return Mask.redact()


def _nice(x: float) -> float:
    """Round ``x`` down to 1, 2 or 5 times a power of ten."""
    power = 10.0 ** math.floor(math.log10(x))
    for step in (5, 2, 1):
        if step * power <= x:
            return step * power
    return power
