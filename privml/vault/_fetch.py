"""Decrypting an authorized request: its columns, only the rows its grants and conditions admit.

The one place values leave the dataset store on their way to a caller or a
mechanism. Row filters are applied before anything leaves; a read's columns are
then rendered in their decided mode (raw, keyed pseudonyms, masks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..policy import _where
from ..policy._model import ColumnDecision, Grant, Predicate
from ..schema import Field, Schema
from ._datasets import DatasetStore

__all__ = ["Fetched", "admitted", "fetch", "needed_columns", "render", "tokenized"]


@dataclass(frozen=True)
class Fetched:
    """The rows a request sees, with the version read and what was withheld."""

    frame: pd.DataFrame
    version: int
    content_hash: str
    rows_withheld: int
    #: The version's row position of each row of ``frame`` (None: every row, in order).
    positions: np.ndarray | None = None
    #: Each row's privacy unit value, for contribution bounding only (None: not asked for).
    units: pd.Series | None = None


def fetch(
    store: DatasetStore,
    dataset: str,
    schema: Schema,
    decisions: Mapping[str, ColumnDecision],
    columns: Sequence[str],
    conditions: Sequence[Predicate],
    version: int | None,
    *,
    row_columns: Sequence[str],
    unit: str | None = None,
    tokenized: Sequence[str] = (),
) -> Fetched:
    """Decrypt ``columns`` of the rows that every row column's grants and every condition admit.

    ``unit`` names the privacy unit column, read as stored (pseudonyms) beside the
    requested columns whatever the policy decides of it: its values stay with the
    door, which bounds each unit's contribution with them, and never reach a caller.
    ``tokenized`` names columns (see :func:`tokenized`) that are only rendered as
    tokens: those no filter, condition or unit uses come back as categoricals.
    """
    filters = [decisions[c].grants for c in row_columns]
    needed = needed_columns(schema, filters, columns, conditions, unit)
    used_by_rows = set(needed_columns(schema, filters, [], conditions, unit))
    dictionary = [c for c in tokenized if c in columns and c not in used_by_rows]
    frame, used, digest = store.load(dataset, needed, version, dictionary=dictionary)
    keep = admitted(frame, schema, filters, conditions)
    hidden = int((~keep).sum())
    positions = None
    if hidden:
        positions = np.flatnonzero(keep)
        frame = frame.loc[keep].reset_index(drop=True)
    units = None if unit is None else frame[unit]
    return Fetched(frame[list(columns)], used, digest, hidden, positions, units)


def needed_columns(
    schema: Schema,
    filters: Sequence[Sequence[Grant]],
    columns: Sequence[str],
    conditions: Sequence[Predicate],
    unit: str | None,
) -> list[str]:
    """The columns to decrypt: those asked for, then those the filters, conditions and unit use."""
    extra = {p.column for gs in filters for g in gs for p in g.row_filter}
    extra |= {p.column for p in conditions}
    if unit is not None:
        extra.add(unit)
    return list(dict.fromkeys([*columns, *(c for c in schema.names if c in extra)]))


def admitted(
    frame: pd.DataFrame,
    schema: Schema,
    filters: Sequence[Sequence[Grant]],
    conditions: Sequence[Predicate],
) -> np.ndarray:
    """Which rows of ``frame`` every row column's grants and every condition admit."""
    keep = np.ones(len(frame), dtype=bool)
    for grants in filters:
        # A row is visible in this column if any deciding grant admits it.
        visible = np.zeros(len(frame), dtype=bool)
        for grant in grants:
            visible |= grant.admits(frame)
        keep &= visible
    for predicate in conditions:
        try:
            keep &= predicate.mask(frame)
        except (TypeError, ValueError):
            raise _where.compare_error(predicate, schema[predicate.column].kind) from None
    return keep


def tokenized(
    schema: Schema, decisions: Mapping[str, ColumnDecision], columns: Sequence[str]
) -> list[str]:
    """The text and identifier columns of ``columns`` that :func:`render` shows as keyed
    tokens (hashed once per distinct value: read as dictionaries, no value is hashed per row)."""
    return [
        c
        for c in columns
        if decisions[c].mode == "pseudonymized"
        and schema[c].kind in ("text", "identifier")
        and not _stored_as_pseudonyms(schema[c])
    ]


def _stored_as_pseudonyms(field: Field) -> bool:
    return field.kind == "identifier" and field.pseudonymize


def render(
    store: DatasetStore,
    dataset: str,
    schema: Schema,
    decisions: Mapping[str, ColumnDecision],
    frame: pd.DataFrame,
) -> pd.DataFrame:
    """Each column of ``frame`` in its decided mode: raw, keyed pseudonyms, or masked."""
    out = {
        c: _render(store, dataset, c, schema[c], decisions[c].mode, frame[c]) for c in frame.columns
    }
    return pd.DataFrame(out, index=frame.index, copy=False)


def _render(
    store: DatasetStore, dataset: str, column: str, field: Field, mode: str, values: pd.Series
) -> Any:
    if mode == "raw" or (mode == "pseudonymized" and _stored_as_pseudonyms(field)):
        return values
    if mode == "pseudonymized":
        every = field.kind == "categorical"
        return store.tokens(dataset, column, values, every_category=every)
    return field.mask_values(values)
