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

Rows whose key has a null are in no group. Read in chunks (:mod:`privml.dp._group_fold`),
private keys are gathered in a :class:`KeyBook`, which refuses to hold more than its
limit of distinct candidate keys.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..exceptions import ConfigurationError
from ._bounding import keyed_ranks
from ._random import entropy

__all__ = [
    "MAX_CANDIDATE_KEYS",
    "MAX_GROUPS",
    "KeyBook",
    "MAX_INTEGER_DOMAIN",
    "bound_groups",
    "choice_key",
    "domain",
    "key_ids",
    "pair_ranks",
    "people_per_key",
    "private_codes",
    "public_codes",
    "public_keys",
]

#: The most groups one query answers (public keys: refused before any charge).
MAX_GROUPS = 100_000
#: An integer column with declared bounds spanning at most this many values has a public domain.
MAX_INTEGER_DOMAIN = 1_000
#: The most distinct candidate keys one query with private keys may gather before selection.
MAX_CANDIDATE_KEYS = 4_000_000


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


def bound_groups(
    people: np.ndarray,
    codes: np.ndarray,
    max_groups: int,
    *,
    key: bytes | None = None,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """``codes`` with each person's rows kept in at most ``max_groups`` of their groups.

    Which groups a person keeps is a keyed random choice, independent of everyone
    else's: each (person, group) pair gets a rank and each person keeps the
    ``max_groups`` lowest-ranked. Rows of dropped pairs get code -1. With ``key`` and
    ``ids`` (each group code's :func:`key_ids`), a pair's rank is :func:`pair_ranks` of
    the person's code and the key's id: a function of the pair alone, so a release read
    in chunks (each person whole in one chunk) keeps exactly the pairs it keeps read
    whole. Without them, ranks are AES-CTR ranks under a fresh 256-bit key.
    """
    valid = codes >= 0
    if not valid.any():
        return codes
    pairs = np.stack([people[valid], codes[valid]], axis=1)
    unique, pair_of_row = np.unique(pairs, axis=0, return_inverse=True)
    if key is None or ids is None:
        ranks = keyed_ranks(entropy(32), len(unique))
    else:
        ranks = pair_ranks(key, unique[:, 0], ids[unique[:, 1]])
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


def choice_key(request_id: str) -> bytes:
    """The AES key of a release's group choice (:func:`pair_ranks`), fixed by its request id.

    The id is no secret; the choice stays unpredictable because the person codes it is
    applied to are keyed hashes under the release's secret bounding key.
    """
    return hashlib.sha256(b"privml/groupby/choice/v1\x00" + request_id.encode()).digest()


def pair_ranks(key: bytes, people: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """One pseudorandom 64-bit rank per (person code, key id) pair: AES-256 of the pair's
    16 bytes under ``key`` (a pseudorandom permutation, so distinct pairs rank apart).

    Examples
    --------
    >>> a = pair_ranks(bytes(32), np.array([1, 1, 2]), np.array([7, 8, 7], dtype=np.uint64))
    >>> a.dtype, len(set(a.tolist()))
    (dtype('uint64'), 3)
    """
    blocks = np.empty((len(people), 2), dtype="<u8")
    blocks[:, 0] = np.asarray(people).astype(np.int64).view(np.uint64)
    blocks[:, 1] = np.asarray(ids, dtype=np.uint64)
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # one block per pair
    sealed = encryptor.update(blocks.tobytes()) + encryptor.finalize()
    return np.frombuffer(sealed, dtype="<u8")[::2].copy()


def key_ids(keys: pd.DataFrame) -> np.ndarray:
    """A 64-bit id per key row, a function of the key's values only (not of where or when it
    was read): the rank input of :func:`bound_groups`."""
    if keys.empty:
        return np.zeros(0, dtype=np.uint64)
    as_objects = keys.astype(object)
    hashed: np.ndarray = pd.util.hash_pandas_object(as_objects, index=False).to_numpy()
    return hashed.astype(np.uint64)


class KeyBook:
    """The distinct private keys seen so far, each with a stable code, at most ``limit``.

    Parameters
    ----------
    by : list of str
        The by-columns.
    limit : int
        The most distinct keys held; one more raises :class:`ConfigurationError`.

    Examples
    --------
    >>> book = KeyBook(["c"], limit=10)
    >>> book.codes(pd.DataFrame({"c": ["a", "b", None]})).tolist()
    [0, 1, -1]
    >>> book.codes(pd.DataFrame({"c": ["b", "z"]})).tolist(), len(book)
    ([1, 2], 3)
    """

    def __init__(self, by: list[str], *, limit: int) -> None:
        self._by = by
        self._limit = limit
        self._parts: list[pd.DataFrame] = []
        self._index: pd.Index = pd.Index([], dtype=object)
        self._ids: list[np.ndarray] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def keys(self) -> pd.DataFrame:
        """Every key held, by code."""
        if not self._parts:
            return pd.DataFrame({name: pd.Series([], dtype=object) for name in self._by})
        return pd.concat(self._parts, ignore_index=True)

    @property
    def ids(self) -> np.ndarray:
        """Each code's :func:`key_ids`."""
        return np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.uint64)

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's key code (-1: a null in the key), adding the keys not seen before."""
        local, keys = private_codes(frame, self._by)
        found = np.full(len(keys), -1, dtype=np.int64)
        if self._size and len(keys):
            found = np.asarray(self._index.get_indexer(self._lookup(keys)), dtype=np.int64)
        new = found < 0
        if new.any():
            added = int(new.sum())
            if self._size + added > self._limit:
                raise ConfigurationError(
                    f"grouping by {self._by} found more than {self._limit} distinct keys to "
                    "choose from; a query's candidate keys are held in memory until selection, "
                    "so it stopped and released nothing (the charge stays spent): group by "
                    "fewer or coarser columns, or declare their domains"
                )
            fresh = keys.loc[new].reset_index(drop=True)
            found[new] = np.arange(self._size, self._size + added)
            self._parts = [pd.concat([*self._parts, fresh], ignore_index=True)]
            self._ids = [np.concatenate([*self._ids, key_ids(fresh)])]
            self._size += added
            self._index = self._lookup(self._parts[0])
        return np.where(local >= 0, found[np.maximum(local, 0)] if len(found) else -1, -1)

    def _lookup(self, keys: pd.DataFrame) -> pd.Index:
        as_objects = keys.astype(object)
        if len(self._by) == 1:
            return pd.Index(as_objects[self._by[0]], dtype=object)
        return pd.MultiIndex.from_frame(as_objects)
