"""Cells: a decision tree that routes each record to a cell released as one representative.

Some features are released per cell rather than per feature: a tree of
yes/no questions ("age >= 31?", "education = 'Bachelors'?") routes each record
to a leaf, and every record in that leaf is released with the leaf's
representative values for those features. A record's cell says only what
its path says about each feature: an interval for a numeric feature, a set of
categories for a categorical one, nothing at all for a feature no question on
the path asks about. That is what the NCP charges, and what ``output="interval"``
prints.

Plain form (inside ``generalizations_["cells"]``)::

    {"features": [names released per cell],
     "domains": {name: [min, max] or [categories]},
     "nodes": [{"feature": name, "at_least": v, "yes": i, "no": j}      # numeric: x >= v ?
               | {"feature": name, "equals": c, "yes": i, "no": j}      # categorical: x == c ?
               | {"cell": c}],                                          # node 0 is the root
     "representatives": [[value per feature] per cell],
     "sizes": [training records per cell]}

A category never seen in training answers "no" to every ``equals`` question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..exceptions import ConfigurationError
from ._ncp import group_penalties, range_penalties
from ._rules import ANY, number_text, plain, plain_list

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Tree:
    """Routing arrays of a cell tree over ``features`` (columns of a numeric matrix).

    Categorical features are given as codes into their domain (``-1``: unseen).
    ``column[i] < 0`` marks a leaf, whose cell is ``cell[i]``.
    """

    column: IntArray
    categorical: BoolArray
    threshold: FloatArray
    yes: IntArray
    no: IntArray
    cell: IntArray

    @property
    def size(self) -> int:
        return int(self.column.size)

    def route(
        self, matrix: FloatArray, stop: BoolArray | None = None
    ) -> tuple[IntArray, IntArray, IntArray]:
        """Every (row, node) pair on each row's path, and the node where each row stops.

        Rows stop at leaves, or at nodes where ``stop`` is set.
        """
        n = matrix.shape[0]
        node = np.zeros(n, dtype=np.intp)
        rows_seen = [np.arange(n, dtype=np.intp)]
        nodes_seen = [node.copy()]
        halt = self.column < 0 if stop is None else (self.column < 0) | stop
        active = np.flatnonzero(~halt[node])
        while active.size:
            at = node[active]
            value = matrix[active, self.column[at]]
            answer = np.where(
                self.categorical[at], value == self.threshold[at], value >= self.threshold[at]
            )
            node[active] = np.where(answer, self.yes[at], self.no[at])
            rows_seen.append(active)
            nodes_seen.append(node[active])
            active = active[~halt[node[active]]]
        return np.concatenate(rows_seen), np.concatenate(nodes_seen), node

    def parents(self) -> IntArray:
        parent = np.full(self.size, -1, dtype=np.intp)
        inner = np.flatnonzero(self.column >= 0)
        parent[self.yes[inner]] = inner
        parent[self.no[inner]] = inner
        return parent


class Boxes:
    """What each node's path says about each feature, and what that costs (NCP penalty).

    ``low``/``high`` bound numeric features (``low <= x < high``); ``allowed[f]`` marks,
    per node, the categories of categorical feature ``f`` still possible.
    """

    def __init__(self, tree: Tree, numeric: list[bool], domains: list[Any]) -> None:
        m, q = tree.size, len(numeric)
        self.low = np.full((m, q), -np.inf)
        self.high = np.full((m, q), np.inf)
        self.allowed = {
            f: np.ones((m, len(domains[f])), dtype=bool) for f in range(q) if not numeric[f]
        }
        order = np.argsort(_depths(tree), kind="stable")
        for i in order[tree.column[order] >= 0].tolist():  # one pass over nodes, top down
            f, yes, no = int(tree.column[i]), int(tree.yes[i]), int(tree.no[i])
            for child in (yes, no):
                self.low[child], self.high[child] = self.low[i], self.high[i]
                for mask in self.allowed.values():
                    mask[child] = mask[i]
            if numeric[f]:
                self.low[yes, f] = max(self.low[i, f], tree.threshold[i])
                self.high[no, f] = min(self.high[i, f], tree.threshold[i])
            else:
                code = int(tree.threshold[i])
                self.allowed[f][no, code] = False
                pinned = np.zeros(len(domains[f]), dtype=bool)
                pinned[code] = True
                self.allowed[f][yes] &= pinned
        self.penalties = np.zeros((m, q))
        for f in range(q):
            if numeric[f]:
                vmin, vmax = float(domains[f][0]), float(domains[f][1])
                width = np.minimum(self.high[:, f], vmax) - np.maximum(self.low[:, f], vmin)
                self.penalties[:, f] = range_penalties(np.clip(width, 0.0, None), vmax - vmin)
            else:
                sizes = self.allowed[f].sum(axis=1).astype(np.float64)
                self.penalties[:, f] = group_penalties(sizes, len(domains[f]))

    def label(self, node: int, f: int, numeric: bool, domain: Any) -> str:
        """The node's condition on feature ``f`` in words (``"*"``: no condition)."""
        if numeric:
            low, high = self.low[node, f], self.high[node, f]
            if np.isinf(low) and np.isinf(high):
                return ANY
            if np.isinf(low):
                return f"< {number_text(high)}"
            if np.isinf(high):
                return f">= {number_text(low)}"
            return f"[{number_text(low)}, {number_text(high)})"
        mask = self.allowed[f][node]
        if mask.all():
            return ANY
        kept = [str(c) for c, ok in zip(domain, mask, strict=True) if ok]
        dropped = [str(c) for c, ok in zip(domain, mask, strict=True) if not ok]
        if len(kept) <= len(dropped) or len(dropped) == 0:
            return "|".join(kept)
        return "not " + "|".join(dropped)


def _depths(tree: Tree) -> IntArray:
    depth = np.zeros(tree.size, dtype=np.intp)
    frontier = np.array([0], dtype=np.intp)
    while frontier.size:
        inner = frontier[tree.column[frontier] >= 0]
        children = np.concatenate([tree.yes[inner], tree.no[inner]])
        depth[children] = depth[np.concatenate([inner, inner])] + 1
        frontier = children
    return depth


@dataclass(frozen=True)
class CompiledCells:
    """The cells of a generalization, ready to route and release data."""

    names: list[str]
    positions: list[int]
    numeric: list[bool]
    domains: list[Any]
    tree: Tree
    boxes: Boxes
    leaf_node: IntArray  # node of each cell
    representatives: list[Array]  # per feature: the value released in each cell

    def matrix(self, columns: dict[int, Array]) -> FloatArray:
        """The cell features of some rows as numbers (categories as domain codes)."""
        out = np.empty((len(next(iter(columns.values()))), len(self.names)))
        for f, (pos, numeric) in enumerate(zip(self.positions, self.numeric, strict=True)):
            values = columns[pos]
            if numeric:
                out[:, f] = values.astype(np.float64)
            else:
                out[:, f] = pd.Index(self.domains[f], dtype=object).get_indexer(values)
        return out

    def cells_of(self, columns: dict[int, Array]) -> IntArray:
        """The cell of each row."""
        _, _, node = self.tree.route(self.matrix(columns))
        return np.asarray(self.tree.cell[node], dtype=np.intp)

    def penalties(self, cells: IntArray) -> FloatArray:
        """NCP penalty of each row (given its cell) on each cell feature, shape (n, features)."""
        return self.boxes.penalties[self.leaf_node[cells]]

    def labels(self, cells: IntArray, f: int) -> Array:
        node = self.leaf_node
        text = [self.boxes.label(int(node[c]), f, self.numeric[f], self.domains[f])
                for c in range(node.size)]  # fmt: skip
        return np.asarray(text, dtype=object)[cells]


def compile_cells(
    spec: dict[str, Any], positions: dict[str, int], numeric: dict[str, bool]
) -> CompiledCells:
    """Check the plain form of a cell tree and turn it into arrays."""
    try:
        names = list(spec["features"])
        index = {name: f for f, name in enumerate(names)}
        domains = [list(spec["domains"][name]) for name in names]
        nodes = spec["nodes"]
        reps = spec["representatives"]
        m = len(nodes)
        column = np.full(m, -1, dtype=np.intp)
        categorical = np.zeros(m, dtype=bool)
        threshold = np.zeros(m)
        yes = np.full(m, -1, dtype=np.intp)
        no = np.full(m, -1, dtype=np.intp)
        cell = np.full(m, -1, dtype=np.intp)
        for i, node in enumerate(nodes):
            if "cell" in node:
                cell[i] = int(node["cell"])
                continue
            f = index[node["feature"]]
            column[i], yes[i], no[i] = f, int(node["yes"]), int(node["no"])
            if "at_least" in node and numeric[names[f]]:
                threshold[i] = float(node["at_least"])
            else:
                categorical[i] = True
                threshold[i] = domains[f].index(node["equals"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"malformed cells in generalizations_: {exc!r}") from None
    n_cells = len(reps)
    leaf_node = np.full(n_cells, -1, dtype=np.intp)
    leaf_node[cell[cell >= 0]] = np.flatnonzero(cell >= 0)
    inner = column >= 0
    reachable = np.concatenate([yes[inner], no[inner]])
    if (
        (leaf_node < 0).any()
        or np.unique(cell[cell >= 0]).size != n_cells
        or (reachable.size and (reachable.min() < 1 or reachable.max() >= m))
        or np.unique(reachable).size != m - 1
        or any(len(r) != len(names) for r in reps)
    ):
        raise ConfigurationError(
            "malformed cells in generalizations_: nodes must form one tree rooted at node 0 "
            "whose leaves are the cells, each with one representative value per feature"
        )
    tree = Tree(column, categorical, threshold, yes, no, cell)
    flags = [bool(numeric[name]) for name in names]
    boxes = Boxes(tree, flags, domains)
    columns = list(zip(*reps, strict=True)) if reps else [() for _ in names]
    representatives = [
        np.asarray(list(values), dtype=None if flags[f] else object)
        for f, values in enumerate(columns)
    ]
    return CompiledCells(names, [positions[n] for n in names], flags, domains, tree, boxes,
                         leaf_node, representatives)  # fmt: skip


def cells_spec(
    names: list[str],
    domains: list[Any],
    tree: Tree,
    reps: list[Array],
    sizes: IntArray,
    numeric: list[bool],
) -> dict[str, Any]:
    """The plain form of a cell tree (see the module docstring)."""
    nodes: list[dict[str, Any]] = []
    for i in range(tree.size):
        if tree.column[i] < 0:
            nodes.append({"cell": int(tree.cell[i])})
            continue
        f = int(tree.column[i])
        test = (
            {"at_least": plain(tree.threshold[i])}
            if numeric[f]
            else {"equals": plain(domains[f][int(tree.threshold[i])])}
        )
        nodes.append({"feature": names[f], **test, "yes": int(tree.yes[i]), "no": int(tree.no[i])})
    return {
        "features": list(names),
        "domains": {name: plain_list(d) for name, d in zip(names, domains, strict=True)},
        "nodes": nodes,
        "representatives": [[plain(r[c]) for r in reps] for c in range(int(sizes.size))],
        "sizes": [int(s) for s in sizes],
    }
