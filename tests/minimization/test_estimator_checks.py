"""scikit-learn's own estimator checks, run on Minimizer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.estimator_checks import parametrize_with_checks

from privml.minimization import Minimizer


class SignOfFirst(ClassifierMixin, BaseEstimator):
    """A ready-made classifier for any number of features: is the first feature above 0.5?"""

    def fit(self, X, y=None):
        return self

    def __sklearn_is_fitted__(self):
        return True

    def predict(self, X):
        return (np.asarray(X, dtype=float)[:, 0] > 0.5).astype(int)


class SumOfAll(RegressorMixin, BaseEstimator):
    """A ready-made regressor for any number of features: the row sum."""

    def fit(self, X, y=None):
        return self

    def __sklearn_is_fitted__(self):
        return True

    def predict(self, X):
        return np.asarray(X, dtype=float).sum(axis=1)


def _as_list(mark: pytest.MarkDecorator) -> pytest.MarkDecorator:
    # parametrize_with_checks hands pytest a generator, which pytest now warns about (and
    # warnings are errors here): give it the same checks as a list.
    names, checks = mark.args
    return pytest.mark.parametrize(names, list(checks), **mark.kwargs)


@_as_list(
    parametrize_with_checks(
        [Minimizer(SignOfFirst(), random_state=0), Minimizer(SumOfAll(), random_state=0)]
    )
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
