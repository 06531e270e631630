"""Models through a session: every use of a registered model is a policy decision.

A model carries what it learned from its training data, so obtaining one
(or anything derived from it: an encrypted-inference spec, predictions, a
minimizer fitted to it) is decided like a read of that data: by the policy for
the session's principal and purpose on the model's source dataset, column by
column, deny winning. The mode a model needs follows from how it was trained:

- a DP model (registered with ``epsilon``) is a differentially private release
  of its training data, so it needs ``dp_aggregate`` (or more revealing) on the
  columns it was trained on;
- a model that is not DP can reveal its training rows, so it needs ``raw``.

The columns are the model's recorded features and target, or every column of
the dataset when the model records none. A model trained on a minimized view is
decided on the view's source, whose people it was learned from. A model
registered without training data (``trained_on=None``) is not tied to any
dataset; it is served to any registered principal and purpose, and audited.
Refusals are audited by the session as the requested action.

Row filters decide too. A model trained through privml records the row
conditions that decided which rows it saw (:data:`TRAINING_ROWS`: a digest of
the deciding grants' row filters on its columns; absent for a model trained on
every row, or registered by the key holder with no such record). Using it needs
the caller's own row conditions on those columns to be none (the caller sees
every row) or exactly the recorded ones: a model learned from rows the
caller's grants never admit is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._gate import TRAINING_ROWS, ModelUse
from ..policy._digest import row_digest

if TYPE_CHECKING:
    from .._gate import Authorization
    from ..schema import Schema
    from ._door import Door
    from ._models import ModelInfo

__all__ = [
    "TRAINING_ROWS",
    "ModelUse",
    "authorize_model",
    "load_model",
    "needed_mode",
    "serve_model",
]


def needed_mode(info: ModelInfo) -> str:
    """The least revealing mode that allows using ``info``'s model (see the module doc)."""
    return "dp_aggregate" if info.epsilon is not None else "raw"


def authorize_model(door: Door, name: str, version: int | None, *, action: str) -> ModelUse:
    """Decide whether ``session`` may use model ``name``; a refusal is audited as ``action``."""
    info = door._models.info(name, version)
    if info.trained_on is None:
        return ModelUse(info, None)
    dataset, trained_version = info.trained_on
    source = door._store.derived_from(dataset) or dataset
    schema = door.schema(source)
    columns = _columns(info, schema)
    version = trained_version if source == dataset else None
    auth = door.authorize(
        source, columns=columns, needed=needed_mode(info), action=action, version=version
    )
    _check_rows(door, info, auth, columns, action=action, version=version)
    return ModelUse(info, auth)


def _check_rows(
    door: Door,
    info: ModelInfo,
    auth: Authorization,
    columns: Sequence[str],
    *,
    action: str,
    version: int | None,
) -> None:
    """Refuse (audited) a caller whose row filters do not admit the model's training rows."""
    own = row_digest(auth.decisions, columns)
    if own is None or own == info.metadata.get(TRAINING_ROWS):
        return
    err = door._asker.denied(
        f"model {info.name!r} was trained on rows that the row filters of your grants on "
        f"{auth.dataset!r} do not admit: use a model trained under the same row filters",
        dataset=auth.dataset,
    )
    request = {"model": info.name, "model_version": info.version, "reason": "row filters"}
    door._log.failure(action, auth.dataset, version, err, auth.decisions, request)
    raise err


def load_model(door: Door, name: str, version: int | None, *, action: str) -> tuple[Any, ModelUse]:
    """Authorize (see :func:`authorize_model`), then decrypt the model; the caller audits."""
    use = authorize_model(door, name, version, action=action)
    model = door._models._load(
        name, use.info.version, principal=door.principal, purpose=door.purpose, audit=False
    )
    return model, use


def _columns(info: ModelInfo, schema: Schema) -> list[str]:
    recorded = list(info.metadata.get("features") or [])
    target = info.metadata.get("target")
    if target:
        recorded.append(target)
    known = [c for c in dict.fromkeys(recorded) if isinstance(c, str) and c in schema]
    if not recorded or len(known) != len(set(recorded)):
        return list(schema.names)  # unknown or unrecognised columns: decide on all of them
    return known


def serve_model(door: Door, name: str, version: int | None) -> Any:
    """Hand a registered model to the session's caller: decided, then audited as ``model.load``."""
    model, use = load_model(door, name, version, action="model.load")
    dataset, trained_version = use.info.trained_on or (None, None)
    door.record("model.load", "ok", dataset, trained_version, use.details)
    return model
