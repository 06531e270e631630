"""Atoms: the finest cut of a feature that the search considers.

A numeric feature with few distinct values gets one atom per value; one with
many is cut at quantiles of its training values and at the split points of a
small decision tree fitted to the model's predictions (the places where the
model's output tends to change), at most ``max_atoms`` atoms. A categorical
feature gets one atom per category, the rarest pooled into one atom when there
are more than ``max_atoms``. Each atom has a representative training value: the
median value of a numeric atom, the most frequent category of a categorical one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from ._data import CLASSIFICATION

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Atoms:
    """One feature's atoms over the training rows.

    Attributes
    ----------
    numeric : bool
    codes : ndarray of int
        Atom of each training row.
    values : ndarray of int
        Index of each training row's distinct value (used while a feature is kept).
    reps : ndarray
        Representative value of each atom.
    exact : bool
        Every atom holds a single distinct value (so atoms lose nothing).
    lows, highs : ndarray
        Smallest and largest training value of each numeric atom.
    categories : ndarray or None
        Distinct categories; ``atom_of_category[i]`` is the atom of ``categories[i]``.
    """

    numeric: bool
    codes: IntArray
    values: IntArray
    reps: Array
    exact: bool
    lows: Array
    highs: Array
    categories: Array | None = None
    atom_of_category: IntArray | None = None

    @property
    def size(self) -> int:
        return int(self.reps.size)

    @property
    def sizes(self) -> FloatArray:
        """Number of categories per atom (1 per atom for numeric features)."""
        if self.atom_of_category is None:
            return np.ones(self.size)
        return np.bincount(self.atom_of_category, minlength=self.size).astype(np.float64)


def numeric_atoms(values: Array, split_points: FloatArray, max_atoms: int) -> Atoms:
    """Atoms of a numeric column; ``split_points`` are extra cut candidates, best first."""
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1).astype(np.intp)
    distinct = uniq.size
    if distinct <= max_atoms:
        starts = np.arange(distinct, dtype=np.intp)
    else:
        cum = np.cumsum(counts)
        extra = np.searchsorted(uniq, split_points, side="right")[: max_atoms // 2]
        n_quantiles = max_atoms - extra.size
        positions = np.linspace(0, cum[-1], n_quantiles + 1)[1:-1]
        quantile = np.searchsorted(cum, positions, side="right")
        starts = np.unique(np.concatenate([[0], quantile, extra]).astype(np.intp))
        starts = starts[starts < distinct]
    ends = np.append(starts[1:], distinct)
    atom_of_value = np.searchsorted(starts, np.arange(distinct), side="right") - 1
    before = np.concatenate([[0], np.cumsum(counts)])
    middle = (before[starts] + before[ends] - 1) // 2
    reps = uniq[np.searchsorted(before[1:], middle, side="right")]
    return Atoms(
        numeric=True,
        codes=atom_of_value[inverse].astype(np.intp),
        values=inverse,
        reps=reps,
        exact=bool(distinct <= max_atoms),
        lows=uniq[starts],
        highs=uniq[ends - 1],
    )


def categorical_atoms(values: Array, max_atoms: int) -> Atoms:
    """Atoms of a categorical column: one per category, rare ones pooled past ``max_atoms``."""
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # categories of mixed, unorderable types
        codes, uniques = pd.factorize(values, sort=False)
    codes = np.asarray(codes, dtype=np.intp)
    categories = np.asarray(uniques, dtype=object)
    counts = np.bincount(codes, minlength=categories.size)
    if categories.size <= max_atoms:
        atom_of_category = np.arange(categories.size, dtype=np.intp)
    else:
        order = np.argsort(-counts, kind="stable")
        atom_of_category = np.full(categories.size, max_atoms - 1, dtype=np.intp)
        atom_of_category[order[: max_atoms - 1]] = np.arange(max_atoms - 1)
    size = int(atom_of_category.max()) + 1
    # Most frequent category of each atom: sort by (atom, -count), take the first of each atom.
    order = np.lexsort((-counts, atom_of_category))
    first = np.searchsorted(atom_of_category[order], np.arange(size))
    reps = categories[order[first]]
    return Atoms(
        numeric=False,
        codes=atom_of_category[codes],
        values=codes,
        reps=reps,
        exact=bool(categories.size <= max_atoms),
        lows=np.zeros(0),
        highs=np.zeros(0),
        categories=categories,
        atom_of_category=atom_of_category,
    )


def tree_split_points(
    matrix: FloatArray, labels: Array, task: str, max_leaves: int, seed: int
) -> list[FloatArray]:
    """Split points of a small tree fitted to the model's predictions, per column, busiest first.

    ``matrix`` holds the numeric features (columns) of the search rows.
    """
    if matrix.shape[1] == 0 or len(matrix) < 2:
        return [np.zeros(0) for _ in range(matrix.shape[1])]
    tree: DecisionTreeClassifier | DecisionTreeRegressor
    if task == CLASSIFICATION:
        tree = DecisionTreeClassifier(max_leaf_nodes=max_leaves, random_state=seed)
        target = labels if labels.dtype != object else labels.astype(str)
    else:
        tree = DecisionTreeRegressor(max_leaf_nodes=max_leaves, random_state=seed)
        target = labels.astype(np.float64)
    tree.fit(matrix, target)
    inner = tree.tree_.feature >= 0
    feature = tree.tree_.feature[inner]
    threshold = tree.tree_.threshold[inner]
    weight = tree.tree_.weighted_n_node_samples[inner]
    order = np.argsort(-weight, kind="stable")
    return [threshold[order][feature[order] == j] for j in range(matrix.shape[1])]
