"""Why a principal acting for a purpose gets what it gets from each column of a dataset."""

from __future__ import annotations

import pandas as pd

from ..schema import Schema
from ._model import PolicyModel

__all__ = ["explain"]


def explain(
    model: PolicyModel, principal: str, purpose: str, dataset: str, schema: Schema
) -> pd.DataFrame:
    """One row per column: its schema tags, the decided mode, the deciding grants and filters."""
    tags = {name: f.tags for name, f in schema.items()}
    rows = [
        {
            "column": column,
            "tags": list(tags[column]),
            "mode": decision.mode,
            "grants": list(decision.grant_ids),
            "row_filter": [[p.to_dict() for p in f] for f in decision.row_filters if f],
        }
        for column, decision in model.decide(principal, purpose, dataset, tags).items()
    ]
    return pd.DataFrame(rows, columns=["column", "tags", "mode", "grants", "row_filter"])
