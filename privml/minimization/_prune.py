"""Pruning the cell tree: the most information for every amount of lost agreement.

Every node of the grown tree either becomes a cell (its whole subtree released
as its representative) or passes the decision to its two children. For each
node and each error budget ``b`` (lost agreement on the prune rows, counted in
``unit`` steps), ``best[b]`` is the most information its subtree can remove
losing exactly ``b`` units: a leaf has one entry; an inner node combines its
children's tables by max-plus convolution and adds the entry of becoming a
cell itself. One pass up the tree gives, at the root, the best pruning for
every budget up to ``cap`` — node by node, never whole levels. Each table
entry also carries the lost agreement on the prune, search and held-out rows of
the pruning it stands for, so every candidate is scored without predicting
again.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._cells import Tree
from ._types import FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]


class Pruner:
    """Best prunings of ``tree`` for each budget.

    Parameters
    ----------
    tree : Tree
        The grown tree (children numbered after their parent).
    info : array of shape (nodes,)
        Information removed (rows × NCP) if the node is a cell.
    loss : array of shape (nodes, 3)
        Lost agreement if the node is a cell, on prune, search and held-out rows.
    valid : array of bool
        Nodes allowed to be cells (the k-anonymity floor).
    unit, cap : float, int
        Budget step (on prune rows) and the largest budget considered.
    """

    def __init__(
        self,
        tree: Tree,
        info: FloatArray,
        loss: FloatArray,
        valid: BoolArray,
        unit: float,
        cap: int,
    ) -> None:
        self.tree = tree
        cost = np.rint(loss[:, 0] / unit).astype(np.intp)
        self.choice: list[IntArray] = [np.zeros(0, dtype=np.intp)] * tree.size
        tables: dict[int, FloatArray] = {}  # node -> (info, prune, search, held loss) × budget
        for t in range(tree.size - 1, -1, -1):  # children are numbered after their parent
            if tree.column[t] >= 0:
                table, choice = _combine(
                    tables.pop(int(tree.yes[t])), tables.pop(int(tree.no[t])), cap
                )
            else:
                table, choice = np.full((4, 1), -np.inf), np.zeros(1, dtype=np.intp)
            if valid[t] and cost[t] <= cap:
                table, choice = _offer(table, choice, int(cost[t]), info[t], loss[t])
            tables[t] = table
            self.choice[t] = choice
        self.table = tables[0]

    def frontier(self) -> FloatArray:
        """Per budget (columns): information removed, lost agreement on prune, search, held rows."""
        return self.table

    def cells(self, budget: int) -> BoolArray:
        """Nodes that are cells in the best pruning for ``budget``."""
        cell = np.zeros(self.tree.size, dtype=bool)
        stack = [(0, budget)]
        while stack:
            t, b = stack.pop()
            c = int(self.choice[t][b])
            if c < 0:
                cell[t] = True
            else:
                stack += [(int(self.tree.yes[t]), c), (int(self.tree.no[t]), b - c)]
        return cell


def _combine(yes: FloatArray, no: FloatArray, cap: int) -> tuple[FloatArray, IntArray]:
    """Max-plus convolution of two children's tables; ``choice[b]`` is the budget of ``yes``."""
    length = min(yes.shape[1] + no.shape[1] - 1, cap + 1)
    out = np.full((4, length), -np.inf)
    choice = np.full(length, -2, dtype=np.intp)
    for i in np.flatnonzero(np.isfinite(yes[0][:length])).tolist():
        span = min(no.shape[1], length - i)
        gain = yes[0, i] + no[0, :span]
        better = gain > out[0, i : i + span]
        if better.any():
            where = np.flatnonzero(better)
            out[0, i + where] = gain[where]
            out[1:, i + where] = yes[1:, i, None] + no[1:, where]
            choice[i + where] = i
    return out, choice


def _offer(
    table: FloatArray, choice: IntArray, cost: int, info: float, loss: FloatArray
) -> tuple[FloatArray, IntArray]:
    """Add "this node is a cell" (cost, info, losses) to a node's table."""
    if table.shape[1] <= cost:
        grown = np.full((4, cost + 1), -np.inf)
        grown[:, : table.shape[1]] = table
        choice = np.concatenate([choice, np.full(cost + 1 - choice.size, -2, dtype=np.intp)])
        table = grown
    if info > table[0, cost]:
        table[0, cost] = info
        table[1:, cost] = loss
        choice[cost] = -1
    return table, choice
