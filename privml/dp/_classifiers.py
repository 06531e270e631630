"""Training diffprivlib classifiers on the schema's classes, not the classes in the data.

diffprivlib's ``LogisticRegression`` takes its classes from ``np.unique(y)``
(and refuses data with one class, naming it), and its ``GaussianNB`` updates
only the classes present, so an absent class keeps its initial parameters
exactly. Either reveals which classes the training rows hold, at any ε. Here
each declared class is fitted like any other, present or not, with
diffprivlib's own mechanisms and the same budget split:

- logistic regression: one-vs-rest, one noisy objective per declared class
  (one for two classes) with ε divided among them, as diffprivlib does;
- Gaussian naive Bayes: per declared class a noisy count (ε/3, a geometric
  mechanism, clipped to at least 1), then a noisy mean and variance per
  feature (ε/3 each), from diffprivlib's own update (:mod:`._diffprivlib`).
  Each row belongs to one class, so the classes compose in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["OWN_FIT", "fit_gaussian_nb", "fit_logistic_regression"]


def fit_logistic_regression(model: Any, X: np.ndarray, y: np.ndarray, classes: list[Any]) -> None:
    """Fit diffprivlib's ``LogisticRegression`` one-vs-rest on every declared class."""
    from diffprivlib.validation import clip_to_norm
    from sklearn.utils import check_random_state

    from ._diffprivlib import logistic_regression_path

    model.accountant.check(model.epsilon, 0)
    random_state = check_random_state(model.random_state)
    X = clip_to_norm(np.ascontiguousarray(X, dtype=float), model.data_norm)
    labels = np.asarray(y, dtype=object)
    positive = classes[1:] if len(classes) == 2 else classes
    rows = []
    for label in positive:
        coefs, _, _ = logistic_regression_path(
            X,
            labels,
            epsilon=model.epsilon / len(positive),
            data_norm=model.data_norm,
            pos_class=label,
            Cs=[model.C],
            fit_intercept=model.fit_intercept,
            max_iter=model.max_iter,
            tol=model.tol,
            verbose=model.verbose,
            random_state=random_state,
            check_input=False,
        )
        rows.append(coefs[0])
    coef = np.asarray(rows)
    model.classes_ = np.asarray(classes)
    model.n_features_in_ = X.shape[1]
    if model.fit_intercept:
        model.coef_, model.intercept_ = coef[:, :-1], coef[:, -1]
    else:
        model.coef_, model.intercept_ = coef, np.zeros(len(positive))
    model.accountant.spend(model.epsilon, 0)


def fit_gaussian_nb(model: Any, X: np.ndarray, y: np.ndarray, classes: list[Any]) -> None:
    """Fit diffprivlib's ``GaussianNB`` with every declared class noised alike."""
    from diffprivlib.mechanisms import Geometric
    from diffprivlib.validation import check_bounds, clip_to_bounds
    from sklearn.utils import check_random_state

    from ._diffprivlib import update_mean_variance

    model.accountant.check(model.epsilon, 0)
    random_state = check_random_state(model.random_state)
    X = np.asarray(X, dtype=float)
    model.bounds = check_bounds(model.bounds, shape=X.shape[1])
    X = clip_to_bounds(X, model.bounds)
    labels = np.asarray(y, dtype=object)
    counting = Geometric(epsilon=model.epsilon / 3, sensitivity=1, random_state=random_state)
    theta = np.zeros((len(classes), X.shape[1]))
    var = np.zeros((len(classes), X.shape[1]))
    counts = np.zeros(len(classes))
    for i, label in enumerate(classes):
        member = labels == label
        counts[i] = max(int(counting.randomise(int(member.sum()))), 1)
        theta[i], var[i] = update_mean_variance(
            model,
            X[member],
            n_past=0,
            mu=theta[i],
            var=var[i],
            random_state=random_state,
            n_noisy=counts[i],
        )
    model.epsilon_ = model.var_smoothing
    model.classes_ = np.asarray(classes)
    model.n_features_in_ = X.shape[1]
    model.theta_, model.var_ = theta, var + model.epsilon_
    priors = model.priors
    model.class_prior_ = np.asarray(priors) if priors is not None else counts / counts.sum()
    model.accountant.spend(model.epsilon, 0)


#: The classifiers privml fits itself, by diffprivlib class name.
OWN_FIT: dict[str, Callable[[Any, np.ndarray, np.ndarray, list[Any]], None]] = {
    "LogisticRegression": fit_logistic_regression,
    "GaussianNB": fit_gaussian_nb,
}
