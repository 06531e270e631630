"""The exact optimizers inside the search agree with brute force on small problems."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from privml.minimization._cells import Tree
from privml.minimization._partition import IntervalSolver
from privml.minimization._prune import Pruner


def _interval_objective(solver: IntervalSolver, cuts: tuple[int, ...], lam: float) -> float:
    bounds = [0, *cuts, solver.size]
    return sum(
        solver.info[a, b - 1] - lam * solver.cost[a, b - 1] for a, b in itertools.pairwise(bounds)
    )


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    lam=st.floats(0.0, 50.0),
)
def test_interval_solver_finds_the_best_cut(m, seed, lam):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(m))
    lows = np.sort(rng.uniform(0, 10, m))
    highs = lows + rng.uniform(0, 0.5, m)
    errors = rng.uniform(0, 0.05, (m, m)) * (rng.random((m, m)) < 0.5)
    np.fill_diagonal(errors, 0.0)
    solver = IntervalSolver(weights, lows, highs, float(highs[-1] - lows[0]), errors)
    _, value = solver.solve(lam)
    best = max(
        _interval_objective(solver, cuts, lam)
        for r in range(m)
        for cuts in itertools.combinations(range(1, m), r)
    )
    assert value == np.float64(best) or abs(value - best) < 1e-9


def _random_tree(rng: np.random.Generator, inner: int) -> Tree:
    column, yes, no = [0], [-1], [-1]
    leaves = [0]
    for _ in range(inner):
        node = leaves.pop(int(rng.integers(len(leaves))))
        yes[node], no[node] = len(column), len(column) + 1
        column[node] = 0
        for _child in range(2):
            column.append(-1)
            yes.append(-1)
            no.append(-1)
            leaves.append(len(column) - 1)
    for leaf in leaves:
        column[leaf] = -1
    size = len(column)
    return Tree(np.array(column), np.zeros(size, bool), np.zeros(size), np.array(yes),
                np.array(no), np.full(size, -1))  # fmt: skip


def _prunings(tree: Tree, node: int = 0):
    yield [node]
    if tree.column[node] >= 0:
        for left in _prunings(tree, int(tree.yes[node])):
            for right in _prunings(tree, int(tree.no[node])):
                yield left + right


@settings(max_examples=60, deadline=None)
@given(inner=st.integers(0, 5), seed=st.integers(0, 10_000), k_floor=st.booleans())
def test_pruner_finds_the_most_information_for_every_budget(inner, seed, k_floor):
    rng = np.random.default_rng(seed)
    tree = _random_tree(rng, inner)
    m = tree.size
    info = rng.uniform(0, 1, m)
    loss = np.column_stack([rng.integers(0, 4, m) / 10.0, rng.uniform(0, 0.1, (m, 2))])
    valid = rng.random(m) < 0.8 if k_floor else np.ones(m, bool)
    valid[0] = True
    pruner = Pruner(tree, info, loss, valid, unit=0.1, cap=12)
    table = pruner.frontier()
    best: dict[int, float] = {}
    for cells in _prunings(tree):
        if not valid[cells].all():
            continue
        budget = round(loss[cells, 0].sum() / 0.1)
        if budget <= 12:
            best[budget] = max(best.get(budget, -np.inf), info[cells].sum())
    for budget in range(table.shape[1]):
        assert np.isclose(table[0, budget], best.get(budget, -np.inf)) or (
            table[0, budget] == -np.inf and budget not in best
        )
        if np.isfinite(table[0, budget]):
            cells = np.flatnonzero(pruner.cells(budget))
            assert np.isclose(info[cells].sum(), table[0, budget])
            assert np.allclose(loss[cells].sum(axis=0), table[1:, budget])
