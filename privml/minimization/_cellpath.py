"""Learning cells: grow a tree on some search rows, then prune it node by node on the others.

A decision tree is grown on two thirds of the search rows to predict the
model's own predictions from the cell features; every node is a possible cell,
released as one representative training record of that node (one whose
prediction is the node's majority, nearest the node's centre). Because a
record's release depends only on its cell (and on its own values of the other
features), each record is predicted once per node on its path, in one batch of
distinct released records, and the agreement of *any* pruning is then a sum
over its cells. So is its information (NCP).

Pruning decides node by node whether a node becomes a cell (``_prune``): for
every amount of agreement lost on the remaining third of the search rows (the
prune rows, which the tree never saw), the pruning that removes the most
information. The chosen pruning is the most general one whose agreement
reaches the target on the prune rows, on all search rows and on the held-out
rows. With a k-anonymity floor, a node can only become a cell if every
combination it releases covers at least k training records; the tree may then
also be grown with leaves of about k rows.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from ._cells import Boxes, Tree, cells_spec
from ._context import Feature, Problem
from ._data import CLASSIFICATION, predict
from ._prune import Pruner
from ._rules import cells_rule, compile_rule
from ._types import TOLERANCE, FloatArray, IntArray

Array = npt.NDArray[Any]
MAX_LEAVES = 2048
_MIX = np.uint64(0x9E3779B97F4A7C15)


class CellLearner:
    """Cells over ``cell_features`` (indices into ``problem.features``).

    The other minimized features are released by ``other_rules`` (their
    ``generalizations_`` rule dicts); ``min_leaf`` is the tree's smallest leaf.
    """

    def __init__(
        self,
        problem: Problem,
        search: IntArray,
        held: IntArray,
        cell_features: list[int],
        other_rules: dict[str, Any],
        k: int,
        min_leaf: int = 1,
    ) -> None:
        self.problem = problem
        self.features: list[Feature] = [problem.features[i] for i in cell_features]
        self.other_rules = other_rules
        n = problem.n_rows
        rng = np.random.default_rng(problem.seed + 1)
        shuffled = rng.permutation(search)
        split = max(1, (2 * len(search)) // 3)
        grow = np.sort(shuffled[:split])
        prune = np.sort(shuffled[split:]) if len(search) > split else grow
        self.numeric = [f.numeric for f in self.features]
        self.matrix, self.domains = self._encode()
        self.tree = self._grow(grow, min_leaf)
        pairs_row, pairs_node, _ = self.tree.route(self.matrix)
        self.boxes = Boxes(self.tree, self.numeric, self.domains)
        m = self.tree.size
        others, other_penalty, other_codes = self._others()
        q = len(problem.features)
        self.count = np.bincount(pairs_node, minlength=m)
        self.info = (
            self.count * self.boxes.penalties.sum(axis=1)
            + np.bincount(pairs_node, weights=other_penalty[pairs_row], minlength=m)
        ) / q
        self.rep_row = self._representatives(grow, pairs_row, pairs_node)
        predicted = self._predict_pairs(pairs_row, pairs_node, others)
        losses = [
            self._losses(rows, pairs_row, pairs_node, predicted, n)
            for rows in (prune, search, held)
        ]
        self.loss = np.column_stack(losses)  # per node: prune, search, held
        self.valid = self._valid(pairs_row, pairs_node, other_codes, k)
        self.n_prune = len(prune)
        self._cached: tuple[float, Pruner] | None = None

    # -- building blocks -------------------------------------------------------------------

    def _encode(self) -> tuple[FloatArray, list[Any]]:
        problem = self.problem
        matrix = np.empty((problem.n_rows, len(self.features)))
        domains: list[Any] = []
        for f, feature in enumerate(self.features):
            values = problem.columns[feature.position]
            if feature.numeric:
                matrix[:, f] = values.astype(np.float64)
                domains.append([values.min(), values.max()])
            else:
                try:
                    codes, uniques = pd.factorize(values, sort=True)
                except TypeError:
                    codes, uniques = pd.factorize(values, sort=False)
                matrix[:, f] = codes
                domains.append(list(uniques))
        return matrix, domains

    def _grow(self, grow: IntArray, min_leaf: int) -> Tree:
        """Fit a scikit-learn tree, then restate its splits as cut points and categories."""
        blocks, source = [], []
        for f, numeric in enumerate(self.numeric):
            values = self.matrix[grow, f]
            if numeric:
                blocks.append(values[:, None])
                source.append((f, -1))
            else:
                size = len(self.domains[f])
                blocks.append((values[:, None] == np.arange(size)[None, :]).astype(np.float64))
                source.extend((f, code) for code in range(size))
        design = np.hstack(blocks) if blocks else np.zeros((len(grow), 0))
        labels = self.problem.agreement.reference[grow]
        seed = self.problem.seed
        learner: DecisionTreeClassifier | DecisionTreeRegressor
        if self.problem.agreement.task == CLASSIFICATION:
            learner = DecisionTreeClassifier(
                max_leaf_nodes=MAX_LEAVES, min_samples_leaf=min_leaf, random_state=seed
            )
            labels = labels.astype(str) if labels.dtype == object else labels
        else:
            learner = DecisionTreeRegressor(
                max_leaf_nodes=MAX_LEAVES, min_samples_leaf=min_leaf, random_state=seed
            )
            labels = labels.astype(np.float64)
        learner.fit(design, labels)
        raw = learner.tree_
        inner = raw.children_left >= 0
        origin = np.array(source, dtype=np.intp).reshape(-1, 2)
        column = np.where(inner, origin[np.maximum(raw.feature, 0), 0], -1).astype(np.intp)
        code = np.where(inner, origin[np.maximum(raw.feature, 0), 1], -1)
        categorical = inner & (code >= 0)
        threshold = np.where(categorical, code, 0.0).astype(np.float64)
        for f in range(len(self.features)):
            at = np.flatnonzero(inner & (column == f) & ~categorical)
            if at.size:  # numeric: the smallest training value above the tree's threshold
                values = np.unique(self.matrix[:, f])
                index = np.searchsorted(values, raw.threshold[at], side="right")
                above = values[np.minimum(index, values.size - 1)]
                threshold[at] = np.where(index < values.size, above, np.inf)
        yes = np.where(inner, raw.children_right, -1).astype(np.intp)
        no = np.where(inner, raw.children_left, -1).astype(np.intp)
        return Tree(
            column, categorical, threshold, yes, no, np.full(raw.node_count, -1, dtype=np.intp)
        )

    def _others(self) -> tuple[dict[int, Array], FloatArray, list[Array]]:
        """Released values, penalties and combination codes of the features not in cells."""
        problem = self.problem
        released: dict[int, Array] = {}
        penalty = np.zeros(problem.n_rows)
        codes: list[Array] = []
        for feature in problem.features:
            if feature.name not in self.other_rules:
                continue
            rule = compile_rule(feature.name, feature.position, self.other_rules[feature.name])
            values = problem.columns[feature.position]
            if rule.kind == "kept":
                codes.append(np.asarray(pd.factorize(values)[0]))
                continue
            group = rule.codes(values)
            released[feature.position] = rule.representatives[group]
            penalty += rule.penalties[group]
            codes.append(group)
        return released, penalty, codes

    def _representatives(self, grow: IntArray, rows: IntArray, nodes: IntArray) -> IntArray:
        """For every node, the grow row released for it (see the module docstring)."""
        m = self.tree.size
        mask = np.isin(rows, grow)
        r, v = rows[mask], nodes[mask]
        count = np.maximum(np.bincount(v, minlength=m), 1)
        distance = np.zeros(r.size)
        for f, numeric in enumerate(self.numeric):
            x = self.matrix[r, f]
            if numeric:
                centre = np.bincount(v, weights=x, minlength=m) / count
                lo, hi = self.matrix[:, f].min(), self.matrix[:, f].max()
                distance += np.abs(x - centre[v]) / (hi - lo if hi > lo else 1.0)
            else:
                size = len(self.domains[f])
                freq = np.bincount(v * size + x.astype(np.intp), minlength=m * size)
                distance += 1.0 - freq[v * size + x.astype(np.intp)] / count[v]
        reference = self.problem.agreement.reference
        if self.problem.agreement.task == CLASSIFICATION:
            labels = _label_codes(reference)
            k = int(labels.max()) + 1
            votes = np.bincount(v * k + labels[r], minlength=m * k).reshape(m, k)
            score = (labels[r] != votes.argmax(axis=1)[v]) * 1e6 + distance
        else:
            target = reference.reshape(len(reference), -1).astype(np.float64)
            spread = target.std(axis=0) + 1e-12
            gap = np.zeros(r.size)
            for o in range(target.shape[1]):
                centre = np.bincount(v, weights=target[r, o], minlength=m) / count
                gap += np.abs(target[r, o] - centre[v]) / spread[o]
            score = gap + 1e-3 * distance
        order = np.lexsort((score, v))
        first = np.searchsorted(v[order], np.arange(m))
        has = np.bincount(v, minlength=m) > 0
        rep = np.full(m, -1, dtype=np.intp)
        rep[has] = r[order[first[has]]]
        parent = self.tree.parents()
        for i in np.argsort(_depth(parent), kind="stable").tolist():  # empty nodes: the parent's
            if rep[i] < 0:
                rep[i] = rep[parent[i]] if parent[i] >= 0 else int(grow[0])
        return rep

    def _predict_pairs(self, rows: IntArray, nodes: IntArray, others: dict[int, Array]) -> Array:
        """The model's prediction for every (row, node) pair, each distinct record once."""
        problem = self.problem
        passthrough = [
            j for j in range(len(problem.names))
            if j not in {f.position for f in self.features} and j not in others
        ]  # fmt: skip
        key = nodes.astype(np.uint64)
        if passthrough or others:
            parts = {f"p{j}": problem.table.column(j) for j in passthrough}
            parts.update({f"o{j}": np.asarray(v) for j, v in others.items()})
            frame = pd.DataFrame(parts)
            row_key = np.asarray(pd.util.hash_pandas_object(frame, index=False), dtype=np.uint64)
            key = row_key[rows] * _MIX + key
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        u_rows, u_nodes = rows[first], nodes[first]
        swaps = {j: v[u_rows] for j, v in others.items()}
        for feature in self.features:
            swaps[feature.position] = problem.columns[feature.position][self.rep_row[u_nodes]]
        released = problem.table.take(u_rows).replaced(swaps)
        return predict(problem.estimator, released)[inverse.reshape(-1)]

    def _losses(
        self, subset: IntArray, rows: IntArray, nodes: IntArray, predicted: Array, n: int
    ) -> FloatArray:
        """Per node: its share of the lost agreement of ``subset`` if it were a cell."""
        m = self.tree.size
        member = np.zeros(n, dtype=bool)
        member[subset] = True
        pick = member[rows]
        reference = self.problem.agreement.reference
        if self.problem.agreement.task == CLASSIFICATION:
            wrong = predicted[pick] != reference[rows[pick]]
            if wrong.ndim == 2:
                wrong = wrong.any(axis=1)
            return np.bincount(nodes[pick], weights=wrong.astype(np.float64), minlength=m) / max(
                subset.size, 1
            )
        ref = reference.reshape(n, -1).astype(np.float64)
        new = predicted.reshape(len(predicted), -1).astype(np.float64)
        sst = ((ref[subset] - ref[subset].mean(axis=0)) ** 2).sum(axis=0)
        out = np.zeros(m)
        for o in range(ref.shape[1]):
            sse = np.bincount(
                nodes[pick], weights=(new[pick, o] - ref[rows[pick], o]) ** 2, minlength=m
            )
            out += sse / max(float(sst[o]), 1e-12) / ref.shape[1]
        return out

    def _valid(
        self, rows: IntArray, nodes: IntArray, codes: list[Array], k: int
    ) -> npt.NDArray[np.bool_]:
        """Nodes that may be cells: every released combination inside covers k training rows."""
        m = self.tree.size
        if k <= 1:
            return np.ones(m, dtype=bool)
        key = nodes.astype(np.uint64)
        if codes:
            frame = pd.DataFrame({f"c{i}": c for i, c in enumerate(codes)})
            row_key = np.asarray(pd.util.hash_pandas_object(frame, index=False), dtype=np.uint64)
            key = row_key[rows] * _MIX + key
        _, first, counts = np.unique(key, return_index=True, return_counts=True)
        smallest = np.full(m, np.iinfo(np.int64).max)
        np.minimum.at(smallest, nodes[first], counts)
        return np.asarray((self.count == 0) | (smallest >= k), dtype=bool)

    # -- choosing a pruning --------------------------------------------------------------------

    def ranked(self, target: float) -> list[int]:
        """Budgets whose best pruning is admissible, most general first.

        Admissible: the target is reached on the prune rows (not used to grow the tree) and
        on the held-out rows, and on the search rows as a whole.
        """
        info, prune, search, held = self._pruner(target).frontier()
        ok = np.isfinite(info)
        for loss in (prune, search, held):
            ok &= 1.0 - loss >= target - TOLERANCE
        budgets = np.flatnonzero(ok)
        return [int(b) for b in budgets[np.argsort(-info[budgets], kind="stable")]]

    def rules_at(self, target: float, budget: int) -> dict[str, Any]:
        """The ``generalizations_`` dict of the best pruning for ``budget``."""
        return self._rules(self._pruner(target).cells(budget))

    def _pruner(self, target: float) -> Pruner:
        if self._cached is None or self._cached[0] != target:
            unit = max(1.0 / max(self.n_prune, 1), (1.0 - target) / 200.0)
            cap = int(np.ceil(2.0 * (1.0 - target) / unit)) + 2
            self._cached = (target, Pruner(self.tree, self.info, self.loss, self.valid, unit, cap))
        return self._cached[1]

    def _rules(self, cell: npt.NDArray[np.bool_]) -> dict[str, Any]:
        tree = self.tree
        keep = []  # nodes of the pruned tree, root first
        queue = deque([0])
        while queue:
            i = queue.popleft()
            keep.append(i)
            if not cell[i]:
                queue += [int(tree.yes[i]), int(tree.no[i])]
        kept = np.array(keep, dtype=np.intp)
        new_id = np.full(tree.size, -1, dtype=np.intp)
        new_id[kept] = np.arange(kept.size)
        leaf = cell[kept]
        pruned = Tree(
            np.where(leaf, -1, tree.column[kept]).astype(np.intp),
            np.where(leaf, False, tree.categorical[kept]),
            tree.threshold[kept],
            np.where(leaf, -1, new_id[tree.yes[kept]]).astype(np.intp),
            np.where(leaf, -1, new_id[tree.no[kept]]).astype(np.intp),
            np.where(leaf, np.cumsum(leaf) - 1, -1).astype(np.intp),
        )
        leaves = kept[leaf]
        reps = [self.problem.columns[f.position][self.rep_row[leaves]] for f in self.features]
        names = [f.name for f in self.features]
        spec = cells_spec(names, self.domains, pruned, reps, self.count[leaves], self.numeric)
        features = {
            f.name: cells_rule(f.numeric) if f.name in names else self.other_rules[f.name]
            for f in self.problem.features
        }
        return {"features": features, "cells": spec}


def _depth(parent: IntArray) -> IntArray:
    depth = np.zeros(parent.size, dtype=np.intp)
    for i in range(1, parent.size):  # scikit-learn numbers children after their parent
        depth[i] = depth[parent[i]] + 1 if parent[i] >= 0 else 0
    return depth


def _label_codes(reference: Array) -> IntArray:
    if reference.ndim == 1:
        return np.asarray(pd.factorize(reference)[0], dtype=np.intp)
    frame = pd.DataFrame(reference)
    hashed = np.asarray(pd.util.hash_pandas_object(frame, index=False), dtype=np.uint64)
    return np.asarray(pd.factorize(hashed)[0], dtype=np.intp)
