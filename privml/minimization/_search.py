"""The search: per-feature rules, then cells, whichever removes the most information.

Two families of generalization are tried on the same search rows and judged
the same way, by predicting again with the model on all rows given to ``fit``
(the released rows of exactly the candidate rules):

1. per-feature rules (``_global``): each feature cut into ranges or category
   groups, kept or dropped, the same for every record;
2. cells (``_cellpath``): the features the model is least sensitive to are
   released per cell of a pruned decision tree, the others by the rules of (1).
   Zero, one, two … of the most sensitive features are left to (1), until giving
   one more stops helping.

A candidate is admissible when its agreement with the model's original
predictions reaches ``target`` on the search rows and on the held-out rows; of
the admissible ones, the highest NCP wins. The held-out rows choose among
candidates learnt without them: the model's predictions on them never shape a
rule (their feature values are counted, without labels, for the NCP, the
k-anonymity floor and the range of each feature).
"""

from __future__ import annotations

import json

import numpy as np

from ..exceptions import ConfigurationError
from ._cellpath import CellLearner
from ._context import Problem, RowSet
from ._global import GlobalSearch
from ._ncp import ncp
from ._types import Candidate, IntArray

PATIENCE = 2  # stop adding per-feature features to the cells after this many without gain
SECOND_CHOICES = 3  # prunings tried if the most general one fails its final check


def search(
    problem: Problem, search_rows: IntArray, held: IntArray, target: float, k: int
) -> Candidate:
    """The admissible generalization with the highest NCP (see the module docstring)."""
    everyone = RowSet(problem, np.concatenate([search_rows, held]))
    agreement = problem.agreement
    seen: dict[str, Candidate] = {}

    def judge(rules: dict[str, object]) -> Candidate:
        key = json.dumps(rules, sort_keys=True, default=str)
        if key not in seen:
            seen[key] = _judge(rules)
        return seen[key]

    def _judge(rules: dict[str, object]) -> Candidate:
        release = problem.compile(rules)
        predicted = everyone.predict(release)
        fit_accuracy = agreement.score(search_rows, predicted[: search_rows.size])
        accuracy = agreement.score(held, predicted[search_rows.size :])
        loss = ncp(release.penalties(problem.columns, problem.n_rows))
        return Candidate(rules, accuracy, fit_accuracy, loss, target)

    per_feature = GlobalSearch(problem, search_rows, judge, k)
    found = per_feature.run()
    best = found
    order = np.argsort(-per_feature.sensitivity, kind="stable").tolist()
    # With a floor, cells may also grow from leaves already near k rows (k scaled to the grow rows).
    leaf_sizes = sorted({1, max(1, (k * 2 * search_rows.size) // (3 * problem.n_rows))})
    stale = 0
    for j in range(len(problem.features)):
        if j and found is None:
            break
        others = {problem.features[i].name: found.rules["features"][problem.features[i].name]
                  for i in order[:j]} if found is not None else {}  # fmt: skip
        candidate = None
        for min_leaf in leaf_sizes:
            learner = CellLearner(
                problem, search_rows, held, sorted(order[j:]), others, k, min_leaf=min_leaf
            )
            for budget in learner.ranked(target)[:SECOND_CHOICES]:
                judged = judge(learner.rules_at(target, budget))
                if judged.admissible:
                    if candidate is None or judged.ncp > candidate.ncp:
                        candidate = judged
                    break
        if candidate is not None and (best is None or candidate.ncp > best.ncp + 1e-9):
            best, stale = candidate, 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    if best is None:
        raise ConfigurationError(
            f"min_group_size={k} and target_accuracy={target} cannot both be met on this data. "
            "Lower min_group_size or target_accuracy, or minimize fewer features."
        )
    return best
