"""A digest of the row conditions that decide which rows a request sees.

A model trained through privml records it, so that a later use of the model
can be refused to a caller whose own row filters admit other rows (see
:mod:`privml.vault._model_access`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ._model import ColumnDecision

__all__ = ["row_digest"]


def row_digest(decisions: Mapping[str, ColumnDecision], columns: Sequence[str]) -> str | None:
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
