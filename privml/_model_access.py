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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import ModelInfo
    from .schema import Schema
    from .session import Authorization, Session

__all__ = ["ModelUse", "authorize_model", "load_model", "needed_mode", "serve_model"]


@dataclass(frozen=True)
class ModelUse:
    """A model use that passed the policy: the model's provenance and the deciding grants."""

    info: ModelInfo
    authorization: Authorization | None

    @property
    def details(self) -> dict[str, Any]:
        """What the audit entry of the use records: model, version, grants, policy hash."""
        out: dict[str, Any] = {"model": self.info.name, "model_version": self.info.version}
        if self.authorization is not None:
            out["needed"] = needed_mode(self.info)
            out["grant_ids"] = self.authorization.grant_ids
            out["policy_hash"] = self.authorization.policy_hash
        return out


def needed_mode(info: ModelInfo) -> str:
    """The least revealing mode that allows using ``info``'s model (see the module doc)."""
    return "dp_aggregate" if info.epsilon is not None else "raw"


def authorize_model(session: Session, name: str, version: int | None, *, action: str) -> ModelUse:
    """Decide whether ``session`` may use model ``name``; a refusal is audited as ``action``."""
    info = session._models.info(name, version)
    if info.trained_on is None:
        return ModelUse(info, None)
    dataset, trained_version = info.trained_on
    source = session._store.derived_from(dataset) or dataset
    schema = session._store.schema(source)
    auth = session._authorize(
        source,
        columns=_columns(info, schema),
        needed=needed_mode(info),
        action=action,
        version=trained_version if source == dataset else None,
    )
    return ModelUse(info, auth)


def load_model(
    session: Session, name: str, version: int | None, *, action: str
) -> tuple[Any, ModelUse]:
    """Authorize (see :func:`authorize_model`), then decrypt the model; the caller audits."""
    use = authorize_model(session, name, version, action=action)
    model = session._models._load(
        name,
        use.info.version,
        principal=session.principal,
        purpose=session.purpose,
        audit=False,
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


def serve_model(session: Session, name: str, version: int | None) -> Any:
    """Hand a registered model to the session's caller: decided, then audited as ``model.load``."""
    from .storage.engine import transaction

    model, use = load_model(session, name, version, action="model.load")
    dataset, trained_version = use.info.trained_on or (None, None)
    with transaction(session._engine) as tx:
        session._audit.append(
            tx,
            principal=session.principal,
            purpose=session.purpose,
            action="model.load",
            outcome="ok",
            dataset=dataset,
            version=trained_version,
            details=use.details,
        )
    return model
