"""Masks: what a ``masked`` column shows instead of its values.

A schema may name a mask per field (``Field.text(mask=Mask.last(4))``);
otherwise each kind has a default that hides the value:

- text: redacted, except the last 4 characters of values at least 8 long;
- numeric and integer: floored to a granularity of about a tenth of the bounds
  (at least 2 for integers);
- datetime: the year only;
- categorical and identifier: redacted;
- tensor and sequence: none. Arrays have no coarsening that hides a value the
  way a bucket does (a rounded image is still the image), so only suppression
  fits them: ``masked`` reads of them are refused unless the schema declares
  ``mask=Mask.redact()``, which shows ``"****"`` for every present value.

Why a mask hides values: a mask is never the identity on its field's declared
domain. Every value of the domain shares its masked form with at least one
other value of the domain, so no shown value singles out the value behind it.
:func:`check_mask` enforces this for every mask a field declares (an integer
field of bounds 0-15 cannot be "floored" to 1; a category group must hold at
least two categories), and the bucket at either end of a rounded range is merged
into its neighbour when it would cover less than half a granularity (with bounds
(0, 120) and granularity 10, an age of 120 shows as 110). Missing values stay missing: a
masked column reveals which values are missing.

Examples
--------
>>> import pandas as pd
>>> Mask.last(4).apply(pd.Series(["4929123456781234", "short"])).tolist()
['****1234', '****']
>>> Mask.round(10).apply(pd.Series([34.0, 71.5])).tolist()
[30.0, 70.0]
>>> Mask.round(10).apply(pd.Series([34, 120]), bounds=(0, 120), integer=True).tolist()
[30, 110]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import ConfigurationError

__all__ = ["MAX_BUCKETS", "Mask", "check_mask", "default_mask"]

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
        """The mask as plain JSON values (what a vault stores with its schema)."""
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
        """The mask that :meth:`to_dict` wrote."""
        groups = data.get("groups")
        return cls(
            data["kind"],
            granularity=data.get("granularity"),
            keep=data.get("keep"),
            groups=tuple((k, v) for k, v in groups) if groups is not None else None,
        )

    def apply(
        self,
        values: pd.Series,
        *,
        bounds: tuple[float, float] | None = None,
        integer: bool = False,
    ) -> pd.Series:
        """Mask a column (vectorized); nulls stay null.

        ``bounds`` (a numeric field's declared domain) lets rounding merge a bucket
        at either end that would hold a single value into its neighbour;
        ``integer`` says the domain holds whole numbers only.
        """
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
            if _exact_on_integers(values, g, bounds):
                return _round_integers(values, int(g), bounds, integer=integer)
            # on the NumPy array (nulls as NaN): the same floats as pandas' operators, without
            # a Series made for each step
            index = np.floor(values.to_numpy(dtype="float64", na_value=np.nan) / g)
            if bounds is not None:
                low, high = _end_buckets(bounds, g, integer=integer)
                index = np.clip(index, low, max(low, high))
            floored = index * g
            if (integer or pd.api.types.is_integer_dtype(values)) and float(g).is_integer():
                return _as_int64(floored, values)
            return pd.Series(floored, index=values.index, name=values.name, copy=False)
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
        granularity = _nice((bounds[1] - bounds[0]) / 10)
        if kind == "integer":
            granularity = max(2.0, float(math.ceil(granularity)))
        try:
            return check_mask(Mask.round(granularity), kind, bounds=bounds)
        except ConfigurationError:  # bounds too narrow for their magnitude to round
            return Mask.redact()
    if kind == "datetime":
        return Mask.year()
    return Mask.redact()


#: Which mask kinds fit which field kinds.
_FITS = {
    "redact": (
        "identifier",
        "numeric",
        "integer",
        "categorical",
        "text",
        "datetime",
        "tensor",
        "sequence",
    ),
    "last": ("identifier", "text"),
    "round": ("numeric", "integer"),
    "year": ("datetime",),
    "month": ("datetime",),
    "group": ("categorical",),
}
#: Rounding may cut a numeric domain into at most this many buckets: finer is no mask.
MAX_BUCKETS = 1_000_000


def check_mask(
    mask: Mask,
    kind: str,
    *,
    bounds: tuple[float, float] | None = None,
    categories: Sequence[Any] | None = None,
) -> Mask:
    """Return ``mask`` if it hides values of a field of this kind and domain; else refuse.

    Raises
    ------
    ConfigurationError
        The mask does not fit the kind, or would show some value of the domain
        unchanged and alone (the identity, or a bucket or group of one value).

    Examples
    --------
    >>> check_mask(Mask.round(1), "integer", bounds=(0, 15))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: Mask.round(1.0) would show every value of ...
    """
    if not isinstance(mask, Mask) or mask.kind not in _FITS:
        raise ConfigurationError("mask= takes a privml Mask, e.g. Mask.redact() or Mask.round(5)")
    if kind not in _FITS[mask.kind]:
        raise ConfigurationError(
            f"a {mask.kind!r} mask does not fit a {kind} field; it fits "
            f"{', '.join(_FITS[mask.kind])} fields (Mask.redact() fits every field)"
        )
    if mask.kind == "round":
        _check_round(mask.granularity or 1.0, kind, bounds)
    if mask.kind == "last" and (mask.keep is None or mask.keep < 1):
        raise ConfigurationError("Mask.last needs keep >= 1")
    if mask.kind == "group":
        _check_groups(dict(mask.groups or ()), list(categories or ()))
    return mask


def _check_round(g: float, kind: str, bounds: tuple[float, float] | None) -> None:
    if not (math.isfinite(g) and g > 0):
        raise ConfigurationError(f"granularity must be finite and > 0, got {g!r}")
    if kind == "integer" and not (float(g).is_integer() and g >= 2):
        raise ConfigurationError(
            f"Mask.round({g!r}) would show every value of an integer field unchanged: whole "
            "numbers need a granularity of at least 2 (e.g. Mask.round(2))"
        )
    if bounds is None:
        return
    low, high = bounds
    if (high - low) / g > MAX_BUCKETS or g < 2.0**-40 * max(abs(low), abs(high)):
        raise ConfigurationError(
            f"Mask.round({g!r}) is too fine for bounds {bounds!r}: it would show the values "
            f"almost unchanged; use a granularity of at least {(high - low) / MAX_BUCKETS:.3g}"
        )


def _check_groups(groups: dict[Any, str], categories: list[Any]) -> None:
    unknown = [c for c in groups if c not in categories]
    if unknown:
        raise ConfigurationError(
            f"Mask.group names {len(unknown)} value(s) that are not categories of the field; "
            "group only declared categories"
        )
    members: dict[str, int] = {}
    for category in categories:
        label = groups.get(category, _REDACTED)
        members[label] = members.get(label, 0) + 1
    alone = sorted(label for label, n in members.items() if n == 1)
    if alone and len(categories) > 1:
        raise ConfigurationError(
            f"Mask.group would show {len(alone)} group(s) holding a single category "
            f"({', '.join(repr(a) for a in alone)}), which reveals that category: put at least "
            "two categories in every group, and leave either none or at least two ungrouped"
        )


def _exact_on_integers(values: pd.Series, g: float, bounds: tuple[float, float] | None) -> bool:
    """Whether rounding ``values`` by ``g`` can run on integers: a signed integer column,
    a whole granularity, and bounds (if any) whose buckets are int64 numbers."""
    if values.dtype.kind != "i" or not float(g).is_integer():
        return False
    return bounds is None or max(abs(bounds[0]), abs(bounds[1])) < 2.0**53


def _round_integers(
    values: pd.Series, g: int, bounds: tuple[float, float] | None, *, integer: bool
) -> pd.Series:
    """Rounding of an integer column by a whole granularity, in integer arithmetic: the
    nullable Int64 column the float formula gives (floor division is exact on integers,
    where the float quotient is exact below 2**53), without its float round trip."""
    null = values.isna().to_numpy()
    ints = values.to_numpy(dtype="int64", na_value=0)
    index = ints // g
    if bounds is not None:
        low, high = _end_buckets(bounds, g, integer=integer)
        np.clip(index, int(low), int(max(low, high)), out=index)
    index *= g
    index[null] = 0
    array = pd.arrays.IntegerArray(index, null)
    return pd.Series(array, index=values.index, name=values.name, copy=False)


def _as_int64(whole: np.ndarray, like: pd.Series) -> pd.Series:
    """Whole-number floats (NaN: null) as a nullable Int64 column indexed and named as
    ``like``; what ``astype("Int64")`` gives, without its per-value checks once the
    values are known to be finite."""
    null = np.isnan(whole)
    if not np.isfinite(whole[~null]).all():  # an infinity: let pandas refuse it
        return pd.Series(whole, index=like.index, name=like.name).astype("Int64")
    ints = np.where(null, 0.0, whole).astype(np.int64)
    return pd.Series(pd.arrays.IntegerArray(ints, null), index=like.index, name=like.name)


def _end_buckets(bounds: tuple[float, float], g: float, *, integer: bool) -> tuple[float, float]:
    """The lowest and highest bucket index (value // g) a value of ``bounds`` shows as.

    A bucket at either end that covers less than half a granularity of the domain
    (for whole numbers: fewer than two values, or fewer than half a granularity's)
    is merged into its neighbour, so no shown bucket narrows a value down further
    than about half a granularity.
    """
    low, high = bounds
    first = math.floor(low / g)
    last = math.floor(high / g)
    if integer:
        least = max(2.0, math.ceil(g / 2))
        if (first + 1) * g - math.ceil(low) < least:  # whole numbers low .. (first + 1) g - 1
            first += 1
        if math.floor(high) - last * g + 1 < least:  # whole numbers last g .. high
            last -= 1
    else:
        if (first + 1) * g - low < g / 2:
            first += 1
        if high - last * g < g / 2:
            last -= 1
    return float(first), float(last)


def _nice(x: float) -> float:
    """Round ``x`` down to 1, 2 or 5 times a power of ten."""
    power = 10.0 ** math.floor(math.log10(x))
    for step in (5, 2, 1):
        if step * power <= x:
            return step * power
    return power
