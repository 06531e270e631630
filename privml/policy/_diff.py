"""Loading a policy document over the stored policy: which grants stay, which come, which go.

A grant of the document that carries the ``id`` of an active grant and says the
same thing keeps that id; every other grant of the document is new; active
grants the document does not keep are revoked. Pure: the store reads the
active grants and the schemas, and writes what :func:`plan` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..exceptions import ConfigurationError
from ..schema import Schema
from ._grants import RECORD_FIELDS, check, shape
from ._yaml import PolicyDocument

__all__ = ["GrantChanges", "plan", "present", "same"]


@dataclass(frozen=True)
class GrantChanges:
    """What loading a document does to the grants."""

    keep: frozenset[str]  # ids of active grants the document repeats unchanged
    add: tuple[dict[str, Any], ...]  # records of grants to store under new ids
    revoke: frozenset[str]  # ids of active grants the document drops or changes


def plan(
    doc: PolicyDocument,
    active: Mapping[str, Mapping[str, Any]],
    *,
    schemas: Mapping[str, Schema],
    now: datetime,
) -> GrantChanges:
    """Check the document's grants against its own principals and purposes and diff them.

    ``active`` maps each active grant's id to its record. Errors name the
    grant's line in the document.
    """
    keep: set[str] = set()
    add: list[dict[str, Any]] = []
    for i, raw in enumerate(doc.grants):
        try:
            record = check(
                shape(raw),
                purposes=doc.purposes,
                principals=doc.principals,
                schemas=schemas,
                now=now,
            )
        except ConfigurationError as err:
            line = doc.lines.get(f"grants[{i}]", 0)
            raise ConfigurationError(f"policy YAML line {line}, grants[{i}]: {err}") from None
        old = active.get(str(raw.get("id", "")))
        if old is not None and same(old, record):
            keep.add(str(raw["id"]))
        else:
            add.append(record)
    return GrantChanges(frozenset(keep), tuple(add), frozenset(active) - keep)


def same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether two grant records say the same thing (ids and times aside)."""
    return all(old.get(k) == new.get(k) for k in RECORD_FIELDS)


def present(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record without its empty fields: how YAML and the audit log write a grant."""
    return {k: v for k, v in record.items() if v is not None}
