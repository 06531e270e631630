"""``session.minimize``: a minimized view of a dataset, fitted to what a model needs.

The view is a new dataset holding only the model's features, each generalized
(ranges, category groups, dropped, or per-cell representatives) as coarsely as
the model allows at the target agreement; a grant can then give a purpose the
view instead of the source. The fitted minimizer (whose representatives are
real values, so personal data) is stored encrypted in the model registry, linked
to the model and the view; nothing derived from the records is written in the
clear: the audit entry and the registry's metadata record only the kinds of
generalization and the caller's settings (the scores are on the stored minimizer).

A view carries no privacy budget of its own: DP releases run on its source, so
that one ledger accounts for the people behind both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..exceptions import ConfigurationError
from ..schema import Schema

if TYPE_CHECKING:
    from .._gate import Gate
    from .._records import DatasetVersion

__all__ = ["minimize"]


def minimize(
    gate: Gate,
    dataset: str,
    model_name: str,
    *,
    target_accuracy: float,
    name: str,
    min_group_size: int = 1,
    features: Sequence[str] | None = None,
    model_version: int | None = None,
    random_state: int | None = 0,
) -> DatasetVersion:
    """Fit a :class:`~privml.minimization.Minimizer` for a registered model; store the view."""
    from . import Minimizer

    # The model is used like data: decided by the policy on its source (refusals audited).
    model, use = gate.use_model(model_name, model_version, action="dataset.minimize")
    info = use.info
    gate.check_may_register(f"{model_name}.minimizer", minimizer=True)
    columns = list(features or info.metadata.get("features") or [])
    if not columns:
        raise ConfigurationError(
            f"model {model_name!r} does not record its features; pass features=[...]"
        )
    # Values reach only the minimizer; the creator of the view sees none of them.
    auth = gate.authorize(
        dataset, columns=columns, needed="pseudonymized", action="dataset.minimize"
    )
    loaded = gate.load(auth)
    frame = loaded.frame[columns]
    schema = auth.schema
    categorical = [c for c in columns if schema[c].kind in ("categorical", "text", "identifier")]
    minimizer = Minimizer(
        model,
        target_accuracy=target_accuracy,
        features=columns,
        categorical=categorical,
        min_group_size=min_group_size,
        random_state=random_state,
    ).fit(frame)
    view = minimizer.transform(frame)
    state = minimizer.to_dict()
    kinds = {f: rule.get("kind") for f, rule in state["generalizations"]["features"].items()}
    # In the clear (meta.db, audit log) only what the caller chose and the kinds of
    # generalization; scores, group sizes and the fitted state (observed bounds, real
    # values as representatives) are derived from records and stay in the encrypted model.
    summary = {
        "source": dataset,
        "source_version": loaded.version,
        "model": model_name,
        "model_version": info.version,
        "target_accuracy": target_accuracy,
        "min_group_size": min_group_size,
        "generalizations": kinds,
        "grant_ids": auth.grant_ids,
        "policy_hash": auth.policy_hash,
    }
    written = gate.add_view(
        name,
        view.reset_index(drop=True),
        schema=Schema({c: schema[c] for c in columns}),
        source=dataset,
        summary=summary,
    )
    gate.register_model(
        f"{model_name}.minimizer",
        Minimizer.from_dict(state),
        trained_on=(dataset, loaded.version),
        epsilon=None,
        delta=None,
        notes=f"minimizer behind view {name!r}",
        extra={
            "for_model": [model_name, info.version],
            "view": name,
            # the caller's settings, so that erasing a subject can refit it without them
            "settings": {"categorical": categorical, "random_state": random_state},
        },
        minimizer=True,
    )
    return written
