"""One search's view of the data: atoms, lost-agreement tables, and rules for a price.

The lost-agreement table of a feature is measured, not modelled: for a sample
of the search rows, the feature is set to each atom's representative in turn
(every other feature left as is) and the model predicts; ``errors[a, k]`` is
the share of sampled rows in atom ``a`` whose prediction then differs from the
model's prediction on the original row. All these variants go to the model in
one ``predict`` call per feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ._atoms import Atoms, categorical_atoms, numeric_atoms, tree_split_points
from ._data import Agreement, Table, predict
from ._partition import GroupSolver, IntervalSolver, Partition
from ._release import Release, compile_release
from ._rules import dropped_rule, groups_rule, kept_rule, ranges_rule

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

MAX_ATOMS = 64
SAMPLE_ROWS = 800
TREE_LEAVES = 128


@dataclass(frozen=True)
class Feature:
    """A minimized feature: its name, column position in X, and whether it is numeric."""

    name: str
    position: int
    numeric: bool


class Problem:
    """What stays fixed during one fit: the data, the model and its original predictions."""

    def __init__(
        self,
        table: Table,
        names: list[str],
        estimator: Any,
        agreement: Agreement,
        features: list[Feature],
        columns: dict[int, Array],
        seed: int,
    ) -> None:
        self.table = table
        self.names = names
        self.estimator = estimator
        self.agreement = agreement
        self.features = features
        self.columns = columns  # checked values of each minimized column, by position
        self.seed = seed

    @property
    def n_rows(self) -> int:
        return len(self.table)

    def compile(self, generalizations: dict[str, Any]) -> Release:
        return compile_release(generalizations, self.names, [f.name for f in self.features])


class RowSet:
    """Fixed rows of the problem, ready to be generalized and predicted again."""

    def __init__(self, problem: Problem, rows: IntArray) -> None:
        self.problem = problem
        self.rows = rows
        self.table = problem.table.take(rows)
        self.columns = {pos: col[rows] for pos, col in problem.columns.items()}

    def predict(self, release: Release) -> Array:
        """The model's predictions on these rows once generalized (each distinct row once)."""
        released = self.table.replaced(release.released(self.columns))
        frame = released if self.table.is_frame else pd.DataFrame(released)
        key = np.asarray(pd.util.hash_pandas_object(frame, index=False), dtype=np.uint64)
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        if first.size > 0.8 * len(key):
            return predict(self.problem.estimator, released)
        distinct = Table(released).take(first).data
        return predict(self.problem.estimator, distinct)[inverse.reshape(-1)]

    def score(self, release: Release) -> float:
        return self.problem.agreement.score(self.rows, self.predict(release))


class Context:
    """Atoms and lost-agreement tables learnt from ``search_rows``.

    ``count_rows`` are the rows whose share of each atom weighs the information
    (and, later, whose groups must reach the k-anonymity floor); they hold no
    labels, so they may include held-out rows.
    """

    def __init__(self, problem: Problem, search_rows: IntArray, count_rows: IntArray) -> None:
        self.problem = problem
        self.count_rows = count_rows
        rng = np.random.default_rng(problem.seed)
        numeric = [f for f in problem.features if f.numeric]
        matrix = np.column_stack(
            [problem.columns[f.position][search_rows].astype(np.float64) for f in numeric]
            or [np.zeros(len(search_rows))]
        )[:, : len(numeric)]
        splits = tree_split_points(
            matrix, problem.agreement.reference[search_rows], problem.agreement.task,
            TREE_LEAVES, problem.seed,
        )  # fmt: skip
        split_of = {f.position: s for f, s in zip(numeric, splits, strict=True)}
        self.atoms: list[Atoms] = [
            numeric_atoms(problem.columns[f.position], split_of[f.position], MAX_ATOMS)
            if f.numeric
            else categorical_atoms(problem.columns[f.position], MAX_ATOMS)
            for f in problem.features
        ]
        size = min(len(search_rows), SAMPLE_ROWS)
        sample = np.sort(rng.choice(search_rows, size=size, replace=False))
        self.unit = 1.0 / max(size, 1)  # the lost agreement of one sampled row
        self.sensitivity = np.zeros(len(self.atoms))
        self.solvers = [
            self._solver(i, f, atoms, sample)
            for i, (f, atoms) in enumerate(zip(problem.features, self.atoms, strict=True))
        ]

    def _solver(self, index: int, feature: Feature, atoms: Atoms, sample: IntArray) -> Any:
        errors, self.sensitivity[index] = self._errors(feature, atoms, sample)
        weights = np.bincount(atoms.codes[self.count_rows], minlength=atoms.size) / max(
            len(self.count_rows), 1
        )
        if feature.numeric:
            lows = atoms.lows.astype(np.float64)
            highs = atoms.highs.astype(np.float64)
            return IntervalSolver(weights, lows, highs, float(highs[-1] - lows[0]), errors)
        return GroupSolver(weights, atoms.sizes, errors)

    def _errors(self, feature: Feature, atoms: Atoms, sample: IntArray) -> tuple[FloatArray, float]:
        """The lost-agreement table, and the share of sampled rows the feature can sway."""
        problem = self.problem
        m, n = atoms.size, sample.size
        base = problem.table.take(sample)
        variants = base.tile(np.arange(n), m).replaced({feature.position: np.repeat(atoms.reps, n)})
        predicted = predict(problem.estimator, variants)
        losses = problem.agreement.losses(np.tile(sample, m), predicted) * m
        losses = losses.reshape(m, n)  # losses[k, i]: row i released as atom k
        atom_of_row = atoms.codes[sample]
        errors = np.empty((m, m))
        for k in range(m):
            errors[:, k] = np.bincount(atom_of_row, weights=losses[k], minlength=m)
        return errors, float((losses > 0).any(axis=0).mean()) if n else 0.0

    def errors(self, index: int) -> FloatArray:
        return np.asarray(self.solvers[index].errors, dtype=np.float64)

    def partitions(self, lam: float, kept: frozenset[int] = frozenset()) -> list[Partition | None]:
        """Each feature's best partition at price ``lam`` (``None``: keep the feature as is).

        Features whose index is in ``kept`` are kept whatever the price.
        """
        out: list[Partition | None] = []
        for index, (atoms, solver) in enumerate(zip(self.atoms, self.solvers, strict=True)):
            if index in kept or not np.isfinite(lam):
                out.append(None)
                continue
            part, value = solver.solve(lam)
            keep = part.n_groups == atoms.size if atoms.exact else value <= 0
            out.append(None if keep else part)
        return out

    def rules(self, partitions: list[Partition | None]) -> dict[str, Any]:
        """The ``generalizations_`` form of one partition per feature (no cells)."""
        features = {
            f.name: _rule(atoms, part)
            for f, atoms, part in zip(self.problem.features, self.atoms, partitions, strict=True)
        }
        return {"features": features, "cells": None}


def _rule(atoms: Atoms, part: Partition | None) -> dict[str, Any]:
    if part is None or (atoms.exact and part.n_groups == atoms.size):
        return kept_rule(atoms.numeric)
    reps = atoms.reps[part.reps]
    if part.n_groups == 1:
        if atoms.numeric:
            return dropped_rule(True, reps[0], [atoms.lows[0], atoms.highs[-1]])
        assert atoms.categories is not None
        return dropped_rule(False, reps[0], list(atoms.categories))
    if atoms.numeric:
        first = np.searchsorted(part.groups, np.arange(part.n_groups))
        last = np.append(first[1:], atoms.size) - 1
        extents = list(zip(atoms.lows[first], atoms.highs[last], strict=True))
        return ranges_rule(atoms.lows[first[1:]], extents, reps, atoms.lows[0], atoms.highs[-1])
    assert atoms.categories is not None and atoms.atom_of_category is not None
    group_of_category = part.groups[atoms.atom_of_category]
    groups = [list(atoms.categories[group_of_category == g]) for g in range(part.n_groups)]
    return groups_rule(groups, list(reps))
