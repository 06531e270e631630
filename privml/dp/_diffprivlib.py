"""The diffprivlib internals privml relies on, each with the reason it has no public substitute.

privml fits diffprivlib's ``LogisticRegression`` and ``GaussianNB`` on the
schema's classes (:mod:`._classifiers`) with diffprivlib's own mechanisms.
Their public ``fit`` takes the classes from the data, so privml calls the two
pieces ``fit`` is made of directly:

* ``diffprivlib.models.logistic_regression._logistic_regression_path``: one
  class's objective-perturbation fit, what ``LogisticRegression.fit`` runs
  per class;
* ``diffprivlib.models.GaussianNB._update_mean_variance``: one class's noisy
  mean and variance given its noisy count, what ``GaussianNB.fit`` runs per
  class present.

Everything else privml takes from diffprivlib is public (the mechanisms, the
accountant, ``diffprivlib.validation``'s bounds and clipping). The internals'
keyword arguments are listed in :data:`INTERNALS` and checked by
``tests/dp/test_library_symbols.py``; both functions accept ``**kwargs``, so
a renamed argument would otherwise be ignored silently.
``pyproject.toml``'s ``dp`` extra keeps diffprivlib to the tested
:data:`TESTED` range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["INTERNALS", "TESTED", "logistic_regression_path", "update_mean_variance"]

#: diffprivlib versions tested: at least the first, below the second (pyproject: >=0.6.4,<0.7).
TESTED = ((0, 6), (0, 7))

#: Each internal as (import path, the keyword arguments privml passes it).
INTERNALS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "diffprivlib.models.logistic_regression._logistic_regression_path",
        (
            "epsilon",
            "data_norm",
            "pos_class",
            "Cs",
            "fit_intercept",
            "max_iter",
            "tol",
            "verbose",
            "random_state",
            "check_input",
        ),
    ),
    (
        "diffprivlib.models.GaussianNB._update_mean_variance",
        ("n_past", "mu", "var", "X", "random_state", "n_noisy"),
    ),
)


def logistic_regression_path(X: np.ndarray, y: np.ndarray, **settings: Any) -> Any:
    """diffprivlib's one-class logistic regression fit: ``(coefs, Cs, n_iter)``."""
    from diffprivlib.models.logistic_regression import _logistic_regression_path

    return _logistic_regression_path(X, y, **settings)


def update_mean_variance(model: Any, X: np.ndarray, **settings: Any) -> tuple[Any, Any]:
    """diffprivlib's noisy mean and variance of ``X`` for ``model`` (a ``GaussianNB``)."""
    mu, var = model._update_mean_variance(X=X, **settings)
    return mu, var
