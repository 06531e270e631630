"""A group-by folded chunk by chunk: keys, per-person group bounds, people per key, partials.

:class:`GroupFold` takes the chunks of a streamed release
(:attr:`privml._gate.Streamed.coded`: each chunk with its rows' people as opaque
codes, every row of one person in one chunk) and keeps, in memory bounded by the
number of keys and never by the number of rows:

* each key's code: public keys by their declared position, private keys in a
  :class:`~privml.dp._group_keys.KeyBook` that refuses more than its limit;
* each person's rows in at most ``max_groups`` groups
  (:func:`~privml.dp._group_keys.bound_groups`): a person is whole in one chunk, and a
  (person, key) pair's rank depends on that pair alone, so the pairs kept are those the
  whole frame would keep;
* with partition selection, the number of distinct people per key: summed over chunks,
  exact because no person spans two chunks;
* the per-key :class:`~privml.dp._partials.Partials`.

:meth:`GroupFold.finish` selects the keys (when private) and returns them with their
partials, ready for noise: the same numbers whatever the chunking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import _group_keys
from ._opendp import Threshold
from ._partials import Partials

__all__ = ["GroupFold"]


class GroupFold:
    """The exact (noiseless) state of one group-by query, built chunk by chunk.

    Parameters
    ----------
    by : list of str
        The by-columns.
    domains : list of list, optional
        Each by-column's public domain (None: keys are private, gathered from the data).
    value : str, optional
        The statistic's column (None: a count).
    bounds, bins
        As :class:`~privml.dp._partials.Partials`.
    max_groups : int, optional
        The most groups a person's rows stay in (None: no group bound).
    people : bool
        Count distinct people per key (for partition selection).
    key : bytes
        The group choice's key (:func:`~privml.dp._group_keys.choice_key`).
    limit : int
        The most distinct private keys held.
    """

    def __init__(
        self,
        by: list[str],
        *,
        domains: list[list[Any]] | None,
        value: str | None,
        bounds: tuple[float, float] | None,
        bins: int,
        max_groups: int | None,
        people: bool,
        key: bytes,
        limit: int = _group_keys.MAX_CANDIDATE_KEYS,
    ) -> None:
        self._by = by
        self._domains = domains
        self._value = value
        self._max_groups = max_groups
        self._key = key
        self._book = None if domains is not None else _group_keys.KeyBook(by, limit=limit)
        self._public = None if domains is None else _group_keys.public_keys(by, domains)
        size = 0 if self._public is None else len(self._public)
        self._partials = Partials(size, bounds=bounds, bins=bins)
        self._people = np.zeros(size, dtype=np.int64) if people else None

    def update(self, frame: pd.DataFrame, people: np.ndarray) -> None:
        """Add one chunk: its rows and each row's person code (a person whole in this chunk)."""
        people = np.asarray(people, dtype=np.int64)
        if self._book is not None:
            codes = self._book.codes(frame)
            ids = self._book.ids
            self._grow(len(self._book))
        else:
            assert self._domains is not None
            codes = _group_keys.public_codes(frame, self._by, self._domains)
            ids = np.arange(self._partials.groups, dtype=np.uint64)
        if self._max_groups is not None:
            codes = _group_keys.bound_groups(
                people, codes, self._max_groups, key=self._key, ids=ids
            )
        if self._people is not None:
            valid = codes >= 0
            pairs = np.unique(np.stack([codes[valid], people[valid]], axis=1), axis=0)
            self._people += np.bincount(pairs[:, 0], minlength=len(self._people))
        values = None
        if self._value is not None:
            values = frame[self._value].to_numpy(dtype=float, na_value=np.nan)
        self._partials.update(codes, values)

    def finish(self, threshold: Threshold | None) -> tuple[pd.DataFrame, Partials]:
        """The keys released and their partials: every public key, or the keys ``threshold``
        selects (DP, on the distinct people per key) in their order of selection."""
        keys = self._public if self._book is None else self._book.keys
        assert keys is not None
        if threshold is None:
            return keys, self._partials
        assert self._people is not None
        held = np.flatnonzero(self._people)
        chosen = threshold.select({int(k): int(self._people[k]) for k in held})
        picked = np.asarray(chosen, dtype=np.int64)
        return keys.iloc[picked].reset_index(drop=True), self._partials.take(picked)

    @property
    def partials(self) -> Partials:
        """The partials of every key gathered so far (before any selection)."""
        return self._partials

    @property
    def people_per_key(self) -> np.ndarray | None:
        """The distinct people per key so far (None: not counted)."""
        return self._people

    def _grow(self, size: int) -> None:
        self._partials.grow(size)
        if self._people is not None and len(self._people) < size:
            self._people = np.r_[self._people, np.zeros(size - len(self._people), np.int64)]
