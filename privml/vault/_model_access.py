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

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import AccessDenied

if TYPE_CHECKING:
    from ..policy._model import Decision
    from ..schema import Schema
    from ._models import ModelInfo
    from ._session import Authorization, Session

__all__ = [
    "TRAINING_ROWS",
    "ModelUse",
    "authorize_model",
    "load_model",
    "needed_mode",
    "row_digest",
    "serve_model",
    "training_rows",
]

#: The registry metadata key recording which rows a model was trained on.
TRAINING_ROWS = "training_rows"


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
    columns = _columns(info, schema)
    version = trained_version if source == dataset else None
    auth = session._authorize(
        source, columns=columns, needed=needed_mode(info), action=action, version=version
    )
    _check_rows(session, info, auth, columns, action=action, version=version)
    return ModelUse(info, auth)


def row_digest(decisions: Mapping[str, Decision], columns: Sequence[str]) -> str | None:
    """A digest of the row conditions the deciding grants put on ``columns``; None: every row.

    A row is seen if, for each column, one of its deciding grants admits it, so the
    conditions are a set of clauses (one per column that some filter restricts),
    each a set of alternatives (a grant's filter), each a set of predicates.
    """
    clauses = set()
    for column in columns:
        filters = decisions[column].row_filters
        if not filters or any(not f for f in filters):
            continue  # some deciding grant admits every row of this column
        clauses.add(tuple(sorted({tuple(sorted(_predicate(p) for p in f)) for f in filters})))
    if not clauses:
        return None
    encoded = json.dumps(sorted(clauses), separators=(",", ":")).encode("utf-8")
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def _predicate(predicate: Any) -> str:
    return json.dumps(predicate.to_dict(), sort_keys=True, default=repr, separators=(",", ":"))


def training_rows(session: Session, dataset: str, columns: Sequence[str]) -> str | None:
    """The row conditions (see :func:`row_digest`) under which ``session`` reads ``columns``."""
    decisions = session._decide(dataset, session._store.schema(dataset))
    return row_digest(decisions, columns)


def _check_rows(
    session: Session,
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
    err = AccessDenied(
        f"model {info.name!r} was trained on rows that the row filters of your grants on "
        f"{auth.dataset!r} do not admit: use a model trained under the same row filters",
        principal=session.principal,
        purpose=session.purpose,
        dataset=auth.dataset,
    )
    request = {"model": info.name, "model_version": info.version, "reason": "row filters"}
    session._log(action, auth.dataset, version, err, auth.decisions, request)
    raise err


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
    from ..storage.engine import transaction

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
