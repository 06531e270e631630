"""``Minimizer``: the scikit-learn transformer at the front of ``privml.minimization``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._context import Feature, Problem
from ._data import Agreement, Table, predict
from ._export import restore, state_of
from ._inputs import (
    auto_categorical,
    check_model,
    check_settings,
    column_names,
    feature_values,
    positions,
    task_of,
)
from ._kanon import group_sizes
from ._ncp import ncp
from ._release import Release, compile_release
from ._report import feature_table
from ._search import search
from ._split import make_split

Array = npt.NDArray[Any]
OUTPUTS = ("representative", "interval")


class Minimizer(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Generalize a model's input features as far as its predictions allow (data minimization).

    ``fit`` finds the coarsest release of the minimized features that the model
    can live with. The model's own predictions on the original rows are the
    labels, so a differentially private model from the vault works the same way.
    Two kinds of generalization are searched, and the one that removes the most
    information (highest NCP) while meeting the target wins:

    - per feature, the same for every record: numeric values become ranges,
      categories become groups of categories, features the model does not need
      are dropped (one value for everyone), the rest are kept;
    - per cell: a pruned decision tree of yes/no questions ("age >= 31?")
      sorts records into cells, and every record of a cell is released as the
      cell's representative record for the features the model is least
      sensitive to, while the others follow per-feature rules. A record's
      cell says of each feature only what its questions say (an interval, a set
      of categories, or nothing).

    How (details in ``_search.py``, ``_global.py``, ``_cellpath.py``): per-feature
    rules come from one price of lost agreement shared by all features (exact
    dynamic programming over cut points, greedy merging of categories); cells
    come from a tree grown on part of the search rows and pruned node by node
    (never whole levels) on the rest, with an exact table of the most
    information removed for every amount of agreement lost. Every candidate is
    judged by asking the model again on generalized rows.

    What is guaranteed, and on what data: the rows passed to ``fit`` are split
    into search rows and held-out rows (``holdout_indices_``). Rules are learnt
    from the search rows alone; the held-out rows only pick, among candidates,
    the most general one that still holds, and ``accuracy_`` is the agreement
    of exactly the released rules on them: always ``>= target_accuracy``, as is
    the agreement on the search rows (``fit_accuracy_``). On new data from the
    same source expect about the target, not more: the held-out estimate has
    sampling noise (one standard error is ``sqrt(t(1-t)/n_held_out)``), and a
    model that memorized its training rows behaves differently on new ones.

    Parameters
    ----------
    estimator : fitted estimator
        Any fitted model with ``predict(X)`` taking ``X`` as given to ``fit``
        (e.g. a ``Pipeline`` with its encoders). It is never refitted. Wrap it in
        ``sklearn.frozen.FrozenEstimator`` to keep it fitted through ``clone``.
        Estimators without scikit-learn tags count as regressors when they
        predict floats, classifiers otherwise.
    target_accuracy : float, default 0.95
        Share of rows whose prediction must stay the same (all outputs alike,
        for multi-output models); for regressors, the R² of the new predictions
        against the original ones (averaged over outputs).
    features : list of str or int, optional
        The features to minimize (quasi-identifiers). Default: all. Others pass
        through unchanged and count neither in the NCP nor in the groups.
    categorical : list of str or int, optional
        Features to treat as categories. Default: a DataFrame's non-numeric
        columns (strings, categoricals, booleans); none for arrays.
    min_group_size : int, default 1
        k-anonymity floor: every combination of released values of the
        minimized features is shared by at least this many rows passed to
        ``fit``. 1 sets no floor. If the floor and the target cannot both be
        met, ``fit`` raises ``ConfigurationError``.
    cv : None, float, int, splitter or (search_rows, held_out_rows)
        The held-out rows: None holds out 25% (stratified by prediction where
        it can); a float holds out that share, an int that many rows; a
        scikit-learn splitter with exactly one split, or a pair of index
        arrays, gives them. Several folds are refused: the guarantee is on one
        fixed set of held-out rows.
    random_state : int, RandomState or None
        Seeds the split and the samples the search draws.
    output : {"representative", "interval"}, default "representative"
        What ``transform`` releases: a representative training value (the
        model can read it), or a label of what is known (``"[31, 46)"``,
        ``"Divorced|Separated"``, ``"not Private"``, ``"*"`` for nothing).

    Attributes
    ----------
    generalizations_ : dict
        Plain JSON-able rules, ``{"features": {name: rule}, "cells": cells}``.
        A rule's ``kind`` is ``"kept"``, ``"ranges"`` (``cuts``, ``extents``,
        ``representatives``, ``range``), ``"groups"`` (``groups``,
        ``representatives``), ``"dropped"`` (``representative``) or ``"cells"``
        (released per cell); ``cells`` is None or the tree (``nodes``) with each
        cell's representative values and size. ``transform`` applies exactly these.
        Representatives are values of real training records (a cell's is one
        person's record): treat ``generalizations_`` and ``to_dict()`` as personal
        data, stored like the data itself, never written to logs.
    ncp_ : float
        Normalized certainty penalty (Ghinita et al. 2007) of the rows passed to
        ``fit``, in [0, 1]; ``ncp(X)`` computes it for any rows the same way.
    feature_ncp_ : dict
        The same, per minimized feature.
    accuracy_ : float
        Agreement with the original predictions on the held-out rows.
    fit_accuracy_ : float
        The same on the search rows.
    group_sizes_ : ndarray of int
        Size of each released combination among the rows passed to ``fit``,
        ascending: ``group_sizes_[0]`` is the k actually reached.
    holdout_indices_ : ndarray of int
        Positions in ``X`` of the held-out rows (empty after ``from_dict``).
    features_ : list of str
        Names of the minimized features (``x0, x1, …`` for arrays).
    task_ : str
        ``"classification"`` or ``"regression"``.
    n_features_in_, feature_names_in_
        As in scikit-learn.

    See Also
    --------
    Minimizer.to_dict, Minimizer.from_dict : the fitted state as plain data.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from privml.minimization import Minimizer
    >>> X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    >>> model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y)
    >>> minimizer = Minimizer(model, target_accuracy=0.95, random_state=0).fit(X)
    >>> bool(minimizer.accuracy_ >= 0.95), bool(0.0 <= minimizer.ncp_ <= 1.0)
    (True, True)
    >>> minimizer.generalizations_["features"]["mean radius"]["kind"]
    'dropped'
    >>> held = X.iloc[minimizer.holdout_indices_]
    >>> float((model.predict(minimizer.transform(held)) == model.predict(held)).mean()) >= 0.95
    True
    """

    def __init__(
        self,
        estimator: Any,
        *,
        target_accuracy: float = 0.95,
        features: Any = None,
        categorical: Any = None,
        min_group_size: int = 1,
        cv: Any = None,
        random_state: Any = None,
        output: str = "representative",
    ) -> None:
        self.estimator = estimator
        self.target_accuracy = target_accuracy
        self.features = features
        self.categorical = categorical
        self.min_group_size = min_group_size
        self.cv = cv
        self.random_state = random_state
        self.output = output

    def fit(self, X: Any, y: Any = None) -> Minimizer:
        """Learn the generalizations from ``X`` and the model's predictions on it.

        Parameters
        ----------
        X : DataFrame or array of shape (n_samples, n_features)
            Rows as the model takes them.
        y : ignored
            The labels are ``estimator.predict(X)``.

        Returns
        -------
        Minimizer
            ``self``, fitted.
        """
        target, k = check_settings(self.target_accuracy, self.min_group_size, self.output, OUTPUTS)
        table = self._table(X, reset=True)
        check_model(self.estimator)
        names = column_names(table)
        chosen = positions(self.features, names, "features") if self.features is not None else (
            list(range(len(names))))  # fmt: skip
        categorical = (
            set(positions(self.categorical, names, "categorical"))
            if self.categorical is not None
            else auto_categorical(table)
        )
        features = [Feature(names[j], j, j not in categorical) for j in chosen]
        columns = {
            f.position: feature_values(table, f.position, f.name, f.numeric) for f in features
        }
        reference = predict(self.estimator, table.data)
        task = task_of(self.estimator, reference)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        agreement = Agreement(task, reference)
        problem = Problem(table, names, self.estimator, agreement, features, columns, seed)
        search_rows, held = make_split(self.cv, len(table), reference, task, seed)
        best = search(problem, search_rows, held, target, k)

        self.features_ = [f.name for f in features]
        self.task_ = task
        self.generalizations_ = best.rules
        self.accuracy_ = best.accuracy
        self.fit_accuracy_ = best.fit_accuracy
        self.holdout_indices_ = held
        self._set_loss_and_groups(table)
        return self

    def transform(self, X: Any) -> Any:
        """Release ``X`` generalized: each minimized value replaced as ``generalizations_`` says.

        Parameters
        ----------
        X : DataFrame or array of shape (n_samples, n_features)
            Rows with the columns seen in ``fit``.

        Returns
        -------
        DataFrame or ndarray
            Same type, shape and columns as ``X``. With ``output="representative"``
            columns keep their dtypes; with ``"interval"`` minimized columns hold labels.

        Raises
        ------
        privml.SchemaError
            A categorical feature holds a category not seen in ``fit`` (unless the
            feature is dropped, in which case every value is released the same way).
        """
        check_is_fitted(self)
        table = self._table(X, reset=False)
        release = self._compiled()
        labels = self.output == "interval"
        swaps = release.released(self._columns(table, release), labels=labels)
        return table.replaced(swaps, keep_dtypes=not labels)

    def ncp(self, X: Any) -> float:
        """Normalized certainty penalty of ``X`` once generalized, computed as for ``ncp_``.

        Parameters
        ----------
        X : DataFrame or array of shape (n_samples, n_features)
            Original (not yet generalized) rows with the columns seen in ``fit``.

        Returns
        -------
        float
            Mean penalty over the rows of ``X`` and the minimized features, in [0, 1].
        """
        check_is_fitted(self)
        table = self._table(X, reset=False)
        release = self._compiled()
        return ncp(release.penalties(self._columns(table, release), len(table)))

    def report(self) -> pd.DataFrame:
        """One row per minimized feature: how it is released and the information it keeps.

        Returns
        -------
        pandas.DataFrame
            Columns ``feature``, ``kind`` (``kept``, ``ranges``, ``groups``,
            ``dropped`` or ``cells``), ``generalization`` (in words) and
            ``information kept`` (1 − the feature's NCP on the rows given to ``fit``).
        """
        check_is_fitted(self)
        return feature_table(self.generalizations_, self.feature_ncp_, self._compiled().cells)

    def get_feature_names_out(self, input_features: Any = None) -> Array:
        """The output columns: the same as the input columns."""
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = np.array([f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        if input_features is not None and len(input_features) != self.n_features_in_:
            raise ValueError(f"input_features should have length {self.n_features_in_}")
        return np.asarray(input_features if input_features is not None else names, dtype=object)

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as plain JSON-able data (no rows, no model); see ``from_dict``.

        Category values must themselves be JSON-able (str, int, float, bool).

        Returns
        -------
        dict
            ``generalizations_`` and the facts needed to re-apply and audit it.
        """
        check_is_fitted(self)
        return state_of(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any], *, estimator: Any = None) -> Minimizer:
        """A fitted ``Minimizer`` from ``to_dict``'s output: it transforms as the original did.

        Parameters
        ----------
        state : dict
            What ``to_dict`` returned (e.g. after a JSON round trip). It is checked
            before use: a malformed state raises ``ConfigurationError``.
        estimator : fitted estimator, optional
            The model, if the minimizer may be refitted later.

        Returns
        -------
        Minimizer

        Examples
        --------
        >>> import json
        >>> from sklearn.datasets import load_diabetes
        >>> from sklearn.linear_model import LinearRegression
        >>> X, y = load_diabetes(return_X_y=True, as_frame=True)
        >>> model = LinearRegression().fit(X, y)
        >>> minimizer = Minimizer(model, target_accuracy=0.9, random_state=0).fit(X)
        >>> text = json.dumps(minimizer.to_dict())
        >>> again = Minimizer.from_dict(json.loads(text))
        >>> again.transform(X).equals(minimizer.transform(X))
        True
        """
        out = cls(estimator)
        restore(out, state)
        out._compiled()  # refuse a malformed state now rather than at transform time
        return out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.categorical = True
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- internals ------------------------------------------------------------------------

    def _table(self, X: Any, *, reset: bool) -> Table:
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[0] == 0 or X.shape[1] == 0:
                raise ValueError(f"Found array with {X.shape[0]} sample(s) and {X.shape[1]} "
                                 "feature(s) while at least 1 of each is required.")  # fmt: skip
            return Table(X)
        try:  # arrays of numbers are checked as numbers; object arrays may hold categories
            kind = np.asarray(X).dtype.kind
        except (TypeError, ValueError):
            kind = "O"
        dtype = None if kind in "OUS" else "numeric"
        return Table(validate_data(self, X, reset=reset, dtype=dtype, ensure_all_finite=False))

    def _names(self) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{i}" for i in range(self.n_features_in_)]

    def _compiled(self) -> Release:
        return compile_release(self.generalizations_, self._names(), self.features_)

    @staticmethod
    def _columns(table: Table, release: Release) -> dict[int, Array]:
        return {
            r.position: feature_values(table, r.position, r.name, r.numeric) for r in release.rules
        }

    def _set_loss_and_groups(self, table: Table) -> None:
        release = self._compiled()
        columns = self._columns(table, release)
        penalties = release.penalties(columns, len(table))
        self.feature_ncp_ = {name: ncp(penalties[:, [j]]) for j, name in enumerate(self.features_)}
        self.ncp_ = ncp(penalties)
        self.group_sizes_ = group_sizes(release.group_codes(columns), len(table))
