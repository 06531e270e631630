"""A group-by's keys: public domains from the schema, group codes, per-person group bounds.

Keys are **public** when every by-column declares its domain: a categorical
column's categories, or an integer column whose declared bounds span at most
:data:`MAX_INTEGER_DOMAIN` values (bounds are public schema facts, so is every
whole number between them; values are clipped to them as every statistic
clips). Several by-columns give the cartesian product of their domains, every
key answered, empty groups included, at most :data:`MAX_GROUPS` of them.
Otherwise keys come from the data through DP partition selection
(:func:`privml.dp._opendp.threshold`) on the number of distinct people holding
each key (:func:`people_per_key`).

Rows whose key has a null are in no group.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import ConfigurationError
from ._bounding import keyed_ranks
from ._random import entropy

__all__ = [
    "MAX_GROUPS",
    "MAX_INTEGER_DOMAIN",
    "bound_groups",
    "domain",
    "people_per_key",
    "private_codes",
    "public_codes",
    "public_keys",
]

#: The most groups one query answers (public keys: refused before any charge).
MAX_GROUPS = 100_000
#: An integer column with declared bounds spanning at most this many values has a public domain.
MAX_INTEGER_DOMAIN = 1_000


def domain(field: Any) -> list[Any] | None:
    """The public domain of a by-column's field, or None (its keys need partition selection)."""
    if field.kind == "categorical" and field.categories:
        return list(field.categories)
    if field.kind == "integer" and field.bounds is not None:
        lo, hi = int(field.bounds[0]), int(field.bounds[1])
        if hi - lo + 1 <= MAX_INTEGER_DOMAIN:
            return list(range(lo, hi + 1))
    return None


def public_keys(by: list[str], domains: list[list[Any]]) -> pd.DataFrame:
    """Every key of the cartesian product of ``domains``, in declared order (bounded first)."""
    size = math.prod(len(d) for d in domains)
    if size > MAX_GROUPS:
        raise ConfigurationError(
            f"grouping by {by} makes {size} groups (the product of the columns' declared "
            f"domains); at most {MAX_GROUPS} are answered: group by fewer columns"
        )
    index = pd.MultiIndex.from_product(domains, names=by)
    return index.to_frame(index=False)


def public_codes(frame: pd.DataFrame, by: list[str], domains: list[list[Any]]) -> np.ndarray:
    """Each row's group in :func:`public_keys` order (-1: a null or undeclared value)."""
    codes = np.zeros(len(frame), dtype=np.int64)
    for column, values in zip(by, domains, strict=True):
        series = frame[column]
        if _is_range(values):  # an integer domain (or integer categories 0, 1, ..., n)
            numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            ok = ~np.isnan(numbers)
            position = np.full(len(frame), -1, dtype=np.int64)
            clipped = np.clip(np.round(numbers[ok]), values[0], values[-1]).astype(np.int64)
            position[ok] = clipped - values[0]
        else:
            keys = pd.Index(values, dtype=object)
            position = np.asarray(keys.get_indexer(series.astype(object)), dtype=np.int64)
        codes = np.where((codes < 0) | (position < 0), -1, codes * len(values) + position)
    return codes


def _is_range(values: list[Any]) -> bool:
    """True for whole numbers ``lo, lo + 1, ..., hi`` (values are placed by subtraction)."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return False
    return values == list(range(values[0], values[0] + len(values)))


def private_codes(frame: pd.DataFrame, by: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Each row's key as a code (-1: a null in the key) and the distinct keys, by code."""
    codes = np.zeros(len(frame), dtype=np.int64)
    for column in by:
        position, _ = pd.factorize(frame[column], use_na_sentinel=True)
        combined, _ = pd.factorize(codes * (int(position.max(initial=0)) + 1) + position)
        codes = np.where((codes < 0) | (position < 0), -1, combined)
    valid = codes >= 0
    codes[valid], _ = pd.factorize(codes[valid])
    first = np.unique(codes[valid], return_index=True)[1]
    keys = frame.loc[valid, by].iloc[first].reset_index(drop=True)
    return codes, keys


def bound_groups(people: np.ndarray, codes: np.ndarray, max_groups: int) -> np.ndarray:
    """``codes`` with each person's rows kept in at most ``max_groups`` of their groups.

    Which groups a person keeps is a keyed random choice (fresh 256-bit key, AES-CTR
    ranks of :mod:`privml.dp._bounding`), independent of everyone else's: each
    (person, group) pair gets a rank and each person keeps the ``max_groups``
    lowest-ranked. Rows of dropped pairs get code -1.
    """
    valid = codes >= 0
    if not valid.any():
        return codes
    pairs = np.stack([people[valid], codes[valid]], axis=1)
    unique, pair_of_row = np.unique(pairs, axis=0, return_inverse=True)
    ranks = keyed_ranks(entropy(32), len(unique))
    order = np.lexsort((ranks, unique[:, 0]))
    owner = unique[order, 0]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    within = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    kept_pair = np.zeros(len(unique), dtype=bool)
    kept_pair[order[within < max_groups]] = True
    out = codes.copy()
    out[np.flatnonzero(valid)[~kept_pair[pair_of_row.ravel()]]] = -1
    return out


def people_per_key(people: np.ndarray, codes: np.ndarray) -> dict[int, int]:
    """The number of distinct people holding each key present (rows with code -1 skipped)."""
    valid = codes >= 0
    pairs = np.unique(np.stack([codes[valid], people[valid]], axis=1), axis=0)
    keys, counts = np.unique(pairs[:, 0], return_counts=True)
    return {int(k): int(c) for k, c in zip(keys, counts, strict=True)}
