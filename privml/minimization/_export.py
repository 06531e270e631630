"""A fitted Minimizer as plain JSON-able data, and back (``to_dict`` / ``from_dict``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigurationError

FORMAT = "privml.minimization/1"
_KEYS = ("n_features_in", "feature_names_in", "features", "generalizations", "task",
         "target_accuracy", "min_group_size", "output", "accuracy", "fit_accuracy", "ncp",
         "feature_ncp", "group_sizes")  # fmt: skip


def state_of(minimizer: Any) -> dict[str, Any]:
    """Everything needed to re-apply and audit a fitted minimizer: no rows, no model."""
    names = getattr(minimizer, "feature_names_in_", None)
    return {
        "format": FORMAT,
        "n_features_in": int(minimizer.n_features_in_),
        "feature_names_in": None if names is None else [str(n) for n in names],
        "features": list(minimizer.features_),
        "generalizations": minimizer.generalizations_,
        "task": minimizer.task_,
        "target_accuracy": float(minimizer.target_accuracy),
        "min_group_size": int(minimizer.min_group_size),
        "output": minimizer.output,
        "accuracy": float(minimizer.accuracy_),
        "fit_accuracy": float(minimizer.fit_accuracy_),
        "ncp": float(minimizer.ncp_),
        "feature_ncp": {name: float(v) for name, v in minimizer.feature_ncp_.items()},
        "group_sizes": [int(g) for g in minimizer.group_sizes_],
    }


def restore(minimizer: Any, state: Any) -> None:
    """Set the parameters and fitted attributes of ``minimizer`` from ``state_of``'s output."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigurationError(f"not a minimizer state: expected format {FORMAT!r}")
    missing = [key for key in _KEYS if key not in state]
    if missing:
        raise ConfigurationError(f"minimizer state lacks {missing}")
    minimizer.set_params(
        target_accuracy=state["target_accuracy"],
        features=list(state["features"]),
        min_group_size=state["min_group_size"],
        output=state["output"],
    )
    minimizer.n_features_in_ = int(state["n_features_in"])
    if state["feature_names_in"] is not None:
        minimizer.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
    minimizer.features_ = list(state["features"])
    minimizer.generalizations_ = dict(state["generalizations"])
    minimizer.task_ = state["task"]
    minimizer.accuracy_ = float(state["accuracy"])
    minimizer.fit_accuracy_ = float(state["fit_accuracy"])
    minimizer.ncp_ = float(state["ncp"])
    minimizer.feature_ncp_ = dict(state["feature_ncp"])
    minimizer.group_sizes_ = np.asarray(state["group_sizes"], dtype=np.intp)
    minimizer.holdout_indices_ = np.zeros(0, dtype=np.intp)  # rows are not part of the state
