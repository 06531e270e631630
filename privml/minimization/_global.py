"""Per-feature generalizations: one price of accuracy for all features.

For a price ``lam`` every feature gets its best partition on its own (see
``_partition``); a single price makes the trade between generalization and
agreement the same at the margin for every feature, the condition for the
most information removed per agreement lost when costs add up. Prices are
tried on a log grid from "drop everything" (0) to "lose no agreement" (1e4),
then bisected next to the most general admissible one. Each candidate is judged
by predicting again with the model on the generalized rows, so interactions
between features are measured, not assumed away.

When the prices leave a gap (the most faithful plan more general than the best
admissible one still fails), features are given back (kept as is) one at a
time from that plan, those the model is most sensitive to first (measured on
the search rows), until it holds. With a
k-anonymity floor, the admissible plans are tried again from the most general
down with the floor enforced (see ``_kanon``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._context import Context, Problem
from ._kanon import enforce
from ._partition import Partition
from ._types import Candidate, IntArray

GRID = (0.0, *np.logspace(-2.0, 4.0, 10).tolist())
REFINE_STEPS = 6

Plan = tuple[float, frozenset[int], bool]  # price, features kept whatever the price, floor


class GlobalSearch:
    """Per-feature rules learnt on ``search`` rows, judged by ``judge`` (see ``_search``)."""

    def __init__(
        self,
        problem: Problem,
        search: IntArray,
        judge: Callable[[dict[str, object]], Candidate],
        k: int,
    ) -> None:
        self.problem = problem
        self.context = Context(problem, search, np.arange(problem.n_rows, dtype=np.intp))
        self.judge = judge
        self.k = k
        self._seen: dict[Plan, Candidate] = {}

    @property
    def sensitivity(self) -> np.ndarray:
        """Share of sampled search rows each feature can sway (see ``Context``)."""
        return self.context.sensitivity

    def run(self) -> Candidate | None:
        """The admissible plan with the highest NCP, floor included (None if there is none)."""
        for lam in (*GRID, np.inf):
            self.evaluate(lam)
        self._refine(self._best())
        self._walk_back()
        if self.k <= 1:
            return self._best()
        ordered = sorted(
            (c for key, c in self._seen.items() if c.admissible and not key[2]),
            key=lambda c: -c.ncp,
        )
        for candidate in ordered:
            floored = self.evaluate(candidate.plan[0], candidate.plan[1], floor=True)
            if floored.admissible:
                return floored
        floored = self.evaluate(np.inf, floor=True)
        return floored if floored.admissible else None

    def _best(self) -> Candidate:
        admissible = (c for key, c in self._seen.items() if c.admissible and not key[2])
        return max(admissible, key=lambda c: (c.ncp, c.plan[0]))

    def _refine(self, best: Candidate) -> None:
        """Bisect the price between the best admissible one and the next lower grid price."""
        ties = [c.plan[0] for c in self._seen.values() if c.admissible and c.ncp >= best.ncp]
        lowest = min(ties)
        lower = [lam for lam in GRID if lam < lowest]
        if not lower or not np.isfinite(lowest):
            return
        lo, hi = max(lower[-1], 1e-4), lowest
        for _ in range(REFINE_STEPS):
            mid = float(np.sqrt(lo * hi))
            if self.evaluate(mid).admissible:
                hi = mid
            else:
                lo = mid

    def _walk_back(self) -> None:
        """From the most faithful plan more general than the best, give features back."""
        best = self._best()
        general = [c for c in self._seen.values() if c.ncp > best.ncp and not c.plan[1]]
        if not general:
            return
        start = max(general, key=lambda c: (c.fit_accuracy, c.ncp))
        moved = [
            i for i, f in enumerate(self.problem.features)
            if start.rules["features"][f.name]["kind"] != "kept"
        ]  # fmt: skip
        order = sorted(moved, key=lambda i: -self.sensitivity[i])
        for j in range(1, len(order)):
            if self.evaluate(start.plan[0], frozenset(order[:j])).admissible:
                return

    def evaluate(
        self, lam: float, kept: frozenset[int] = frozenset(), *, floor: bool = False
    ) -> Candidate:
        key = (lam, kept, floor)
        if key not in self._seen:
            partitions = self._partitions(lam, kept, floor)
            candidate = self.judge(self.context.rules(partitions))
            self._seen[key] = candidate.with_plan((lam, kept))
        return self._seen[key]

    def _partitions(self, lam: float, kept: frozenset[int], floor: bool) -> list[Partition | None]:
        context = self.context
        partitions = context.partitions(lam, kept)
        if not floor:
            return partitions
        errors = [context.errors(i) for i in range(len(context.atoms))]
        return enforce(context.atoms, errors, partitions, context.count_rows, self.k, context.unit)
