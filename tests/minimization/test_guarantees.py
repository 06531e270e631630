"""What Minimizer promises, on breast_cancer, diabetes (regression) and Adult (categorical).

- On its own held-out rows (``holdout_indices_``, rows the rules were not learnt
  from), the model's agreement with its original predictions is at least the
  target, recomputed here from ``transform`` and the model, not read back.
- On fresh rows that neither the model nor the minimizer saw, agreement is
  about the target: within three standard errors of a held-out estimate of
  that size (the guarantee is on the held-out rows; this checks it is honest).
- ``transform`` does exactly what ``generalizations_`` says, for every row.
- The NCP lies in [0, 1], is the same at fit and at transform time, and matches
  an independent per-record computation from ``generalizations_``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from minimize_reference import penalties, released_record

from conftest import CASES, TARGETS, agreement


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict(orient="records")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(CASES))
def test_agreement_on_held_out_rows_meets_the_target(cases, fitted, name, target):
    case, minimizer = cases(name), fitted(name, target)
    held = case.X.iloc[minimizer.holdout_indices_]
    measured = agreement(case, held, minimizer.transform(held))
    assert measured >= target
    assert measured == pytest.approx(minimizer.accuracy_, abs=1e-9)
    assert minimizer.fit_accuracy_ >= target


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(CASES))
def test_agreement_on_fresh_rows_is_about_the_target(cases, fitted, name, target):
    case, minimizer = cases(name), fitted(name, target)
    fresh = agreement(case, case.fresh, minimizer.transform(case.fresh))
    error = math.sqrt(target * (1 - target) / len(minimizer.holdout_indices_))
    assert fresh >= target - 3 * error


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(CASES))
def test_transform_is_exactly_what_generalizations_say(cases, fitted, name, target):
    case, minimizer = cases(name), fitted(name, target)
    rules = minimizer.generalizations_
    for frame in (case.X, case.fresh.iloc[:300]):
        released = _records(minimizer.transform(frame))
        expected = [released_record(rules, record) for record in _records(frame)]
        assert released == expected


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(CASES))
def test_ncp_is_normalized_and_computed_the_same_way(cases, fitted, name, target):
    case, minimizer = cases(name), fitted(name, target)
    assert 0.0 <= minimizer.ncp_ <= 1.0
    assert minimizer.ncp(case.X) == minimizer.ncp_  # fit time and transform time, same data
    independent = np.mean([penalties(minimizer.generalizations_, r) for r in _records(case.X)])
    assert minimizer.ncp_ == pytest.approx(independent, abs=1e-9)
    assert 0.0 <= minimizer.ncp(case.fresh) <= 1.0
    kept = minimizer.report()["information kept"]
    assert kept.between(0.0, 1.0).all()
    assert 1.0 - kept.mean() == pytest.approx(minimizer.ncp_, abs=1e-9)


@pytest.mark.parametrize("name", list(CASES))
def test_a_higher_target_never_generalizes_more(fitted, name):
    losses = [fitted(name, target).ncp_ for target in TARGETS]
    assert losses[0] >= losses[2]
