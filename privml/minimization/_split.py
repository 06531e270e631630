"""Which rows the search learns from and which rows check it (the ``cv`` argument)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

from ..exceptions import ConfigurationError
from ._data import CLASSIFICATION

IntArray = npt.NDArray[np.intp]

DEFAULT_HOLDOUT = 0.25


def make_split(
    cv: Any, n_rows: int, reference: npt.NDArray[Any], task: str, seed: int
) -> tuple[IntArray, IntArray]:
    """(search rows, held-out rows) as ``cv`` asks; see ``Minimizer``'s docstring."""
    if n_rows < 2:
        raise ValueError(
            f"Minimizer needs at least 2 samples to hold some out, got {n_rows} sample(s)"
        )
    strata = reference if task == CLASSIFICATION and reference.ndim == 1 else None
    if cv is None:
        cv = DEFAULT_HOLDOUT
    if isinstance(cv, numbers.Real) and not isinstance(cv, bool):
        if isinstance(cv, numbers.Integral):
            if not 1 <= int(cv) < n_rows:
                raise ConfigurationError(f"cv={cv}: hold out between 1 and {n_rows - 1} rows")
            size = int(cv)
        elif 0.0 < float(cv) < 1.0:
            size = min(max(round(float(cv) * n_rows), 1), n_rows - 1)
        else:
            raise ConfigurationError(f"cv={cv!r}: a held-out fraction must lie in (0, 1)")
        return _shuffled(size, n_rows, strata, seed)
    splits = getattr(cv, "split", None)
    pairs = list(splits(np.zeros((n_rows, 1)), strata)) if splits else _pairs(cv)
    if len(pairs) != 1:
        raise ConfigurationError(
            f"cv gave {len(pairs)} splits: the guarantee is on one held-out split, so give "
            "exactly one (e.g. ShuffleSplit(n_splits=1) or a (search_rows, held_out_rows) pair)"
        )
    return _checked(pairs[0], n_rows)


def _shuffled(
    size: int, n_rows: int, strata: npt.NDArray[Any] | None, seed: int
) -> tuple[IntArray, IntArray]:
    if strata is not None:
        try:  # stratifying fails when a predicted class is too rare; then split plainly
            splitter = StratifiedShuffleSplit(1, test_size=size, random_state=seed)
            return _checked(next(splitter.split(np.zeros((n_rows, 1)), strata)), n_rows)
        except ValueError:
            pass
    plain = ShuffleSplit(1, test_size=size, random_state=seed)
    return _checked(next(plain.split(np.zeros((n_rows, 1)))), n_rows)


def _pairs(cv: Any) -> list[Any]:
    try:
        items = list(cv)
    except TypeError:
        raise ConfigurationError(
            f"cv={cv!r}: give None, a held-out fraction or row count, a scikit-learn splitter "
            "with one split, or a (search_rows, held_out_rows) pair"
        ) from None
    if len(items) == 2 and all(_is_index_array(part) for part in items):
        return [items]
    return items


def _is_index_array(part: Any) -> bool:
    try:
        array = np.asarray(part)
    except ValueError:  # ragged: a list of pairs, not an index array
        return False
    return array.ndim == 1 and (array.size == 0 or np.issubdtype(array.dtype, np.integer))


def _checked(pair: Any, n_rows: int) -> tuple[IntArray, IntArray]:
    try:
        search, held_out = (np.asarray(part, dtype=np.intp).reshape(-1) for part in pair)
    except (TypeError, ValueError):
        raise ConfigurationError("cv: a split must be a pair of row-index arrays") from None
    for part in (search, held_out):
        if part.size == 0 or part.min() < 0 or part.max() >= n_rows:
            raise ConfigurationError(
                f"cv: a split needs non-empty search and held-out rows within 0..{n_rows - 1}"
            )
    if np.intersect1d(search, held_out).size:
        raise ConfigurationError("cv: search rows and held-out rows must not overlap")
    return np.sort(search), np.sort(held_out)
