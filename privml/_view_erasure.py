"""Which rows of the minimized views derived from a dataset belong to an erased subject.

A minimized view (``session.minimize``) holds one generalized row per source
row, in the source's order, and no identifier. Its rows are matched to the
source's by recomputing the view: the stored minimizer applied to a version of
the source must give exactly the view's latest version (as stored and read
back). Then the subject's rows in that source version are the subject's rows in
the view. A view that matches no readable source version cannot be erased from,
and the erasure is refused before anything changes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from ._datasets import DatasetStore
from .exceptions import ConfigurationError, DecryptionError
from .storage.engine import read
from .storage.tables import datasets, models

__all__ = ["ViewErasure", "plan_view_erasures"]

MaskOf = Callable[[int], "np.ndarray | None"]


@dataclass(frozen=True)
class ViewErasure:
    """Remove the rows ``rows`` (a boolean mask) from the latest version of ``view``."""

    view: str
    version: int
    rows: np.ndarray


def plan_view_erasures(
    store: DatasetStore,
    registry: Any,
    engine: sa.Engine,
    *,
    dataset: str,
    mask_of: MaskOf,
    versions: list[int],
) -> list[ViewErasure]:
    """The erasures to apply to every view derived (directly or not) from ``dataset``.

    ``mask_of(version)`` gives the subject's rows in that version of ``dataset``
    (None if it cannot be read); ``versions`` are the candidate versions, newest
    first. Raises :class:`ConfigurationError` naming a view it cannot match.
    """
    plans: list[ViewErasure] = []
    for view in _views_of(engine, dataset):
        minimizer, trained_on = _minimizer_of(registry, engine, view)
        schema = store.schema(view)
        names = list(schema.names)
        frame, version, _ = store.load(view, names, None)
        found = None
        candidates = [*versions, *([trained_on] if trained_on is not None else [])]
        for source_version in dict.fromkeys(candidates):
            mask = mask_of(source_version)
            if mask is None or minimizer is None or len(mask) != len(frame):
                continue
            try:
                source, _, _ = store.load(dataset, names, source_version)
            except DecryptionError:  # a shredded version
                continue
            expected = minimizer.transform(source[names]).reset_index(drop=True)
            stored = pa.Table.from_pandas(expected, preserve_index=False).to_pandas()
            if schema.coerce(stored).equals(frame):
                found = mask
                break
        if found is None:
            raise ConfigurationError(
                f"cannot erase the subject from {dataset!r}: the minimized view {view!r} "
                "derived from it does not match any readable version of it, so its rows "
                f"cannot be matched to the subject. Nothing was changed. Make {view!r} "
                f"again from the current version of {dataset!r} (session.minimize) and "
                "erase again"
            )
        plans.append(ViewErasure(view, version, found))
        plans += plan_view_erasures(
            store,
            registry,
            engine,
            dataset=view,
            mask_of=functools.partial(_only, version=version, mask=found),
            versions=[version],
        )
    return plans


def _only(candidate: int, *, version: int, mask: np.ndarray) -> np.ndarray | None:
    return mask if candidate == version else None


def _views_of(engine: sa.Engine, dataset: str) -> list[str]:
    with read(engine) as conn:
        rows = conn.execute(
            sa.select(datasets.c.name)
            .where(datasets.c.derived_from == dataset)
            .order_by(datasets.c.name)
        )
        return [r.name for r in rows]


def _minimizer_of(registry: Any, engine: sa.Engine, view: str) -> tuple[Any, int | None]:
    """The newest registered minimizer behind ``view`` and the source version it was fit on."""
    with read(engine) as conn:
        rows = conn.execute(
            sa.select(
                models.c.name, models.c.version, models.c.metadata, models.c.dataset_version
            ).order_by(models.c.created.desc(), models.c.version.desc())
        ).all()
    for row in rows:
        if json.loads(row.metadata).get("view") == view:
            model = registry._load(
                row.name, row.version, principal="privml", purpose="administration", audit=False
            )
            return model, row.dataset_version
    return None, None


def subject_mask(frame: pd.DataFrame, column: str, match: str) -> np.ndarray:
    """Which rows of ``frame`` hold ``match`` in ``column``."""
    return np.asarray((frame[column].astype(object) == match).to_numpy(), dtype=bool)
