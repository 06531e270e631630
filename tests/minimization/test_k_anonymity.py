"""``min_group_size=k``: every released combination is shared by at least k training records."""

from __future__ import annotations

import pytest

from conftest import agreement
from privml.exceptions import ConfigurationError
from privml.minimization import Minimizer


@pytest.mark.parametrize(
    ("name", "k", "target"),
    [("breast_cancer", 5, 0.95), ("breast_cancer", 25, 0.9), ("adult", 10, 0.95)],
)
def test_every_released_combination_covers_k_training_records(cases, fitted, name, k, target):
    case = cases(name)
    minimizer = fitted(name, target, min_group_size=k)
    released = minimizer.transform(case.X)[minimizer.features_]
    counts = released.astype(str).value_counts()
    assert counts.min() >= k
    assert minimizer.group_sizes_[0] == counts.min()
    assert sorted(minimizer.group_sizes_) == sorted(counts.tolist())
    held = case.X.iloc[minimizer.holdout_indices_]
    assert agreement(case, held, minimizer.transform(held)) >= target


def test_the_floor_only_counts_the_minimized_features(cases):
    case = cases("breast_cancer")
    features = list(case.X.columns[:5])
    minimizer = Minimizer(case.model, features=features, min_group_size=8, random_state=0)
    minimizer.fit(case.X)
    assert minimizer.transform(case.X)[features].astype(str).value_counts().min() >= 8
    untouched = [c for c in case.X.columns if c not in features]
    assert minimizer.transform(case.X)[untouched].equals(case.X[untouched])


def test_without_a_floor_groups_are_reported_not_enforced(cases, fitted):
    minimizer = fitted("breast_cancer", 0.99)
    assert minimizer.group_sizes_.sum() == len(cases("breast_cancer").X)
    assert list(minimizer.group_sizes_) == sorted(minimizer.group_sizes_)


def test_a_floor_above_the_number_of_rows_is_refused(cases):
    case = cases("diabetes")
    with pytest.raises(ConfigurationError, match="min_group_size"):
        Minimizer(case.model, min_group_size=len(case.X) + 1, random_state=0).fit(case.X)


def test_a_floor_the_target_cannot_live_with_is_refused_with_the_fix(cases):
    case = cases("breast_cancer")
    with pytest.raises(ConfigurationError, match="Lower min_group_size or target_accuracy"):
        Minimizer(case.model, target_accuracy=0.99, min_group_size=100, random_state=0).fit(case.X)
