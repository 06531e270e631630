"""Erasing a subject from the minimized views derived from a dataset.

A minimized view (``session.minimize``) holds one generalized row per source
row, in the source's order, and no identifier. Its rows are matched to the
source's by recomputing the view: the stored minimizer applied to a version of
the source must give exactly the view's latest version (as stored and read
back). Then the subject's rows in that source version are the subject's rows in
the view.

Removing those rows is not enough: the minimizer was fitted on the subject's
records too, and its representatives are real values (possibly the subject's),
released in every row of the view. So the minimizer is fitted again on the
source without the subject, the view is rewritten from it, and the old view
versions and the old minimizer's files are shredded. A view that matches no
readable source version, or whose minimizer cannot be refitted, is refused
before anything changes.
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

from ..audit import ADMIN_PURPOSE
from ..exceptions import ConfigurationError, DecryptionError, PrivmlError
from ..schema import Schema
from ..storage import sealed
from ..storage.engine import read
from ..storage.tables import datasets, models
from ._datasets import DatasetStore

__all__ = ["ViewRefit", "plan_view_erasures", "subject_mask"]

MaskOf = Callable[[int], "np.ndarray | None"]
Remaining = Callable[[int, np.ndarray], pd.DataFrame]


@dataclass(frozen=True)
class Registered:
    """The newest minimizer registered behind a view, and what it needs to be refitted."""

    model: Any
    name: str
    versions: tuple[int, ...]  # every registered version behind the view
    trained_on: int | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ViewRefit:
    """The new content of ``view`` (derived from ``source``) without an erased subject."""

    view: str
    source: str
    frame: pd.DataFrame
    rows_removed: int
    minimizer: Any
    registered: Registered


def plan_view_erasures(
    store: DatasetStore,
    registry: Any,
    engine: sa.Engine,
    *,
    dataset: str,
    mask_of: MaskOf,
    versions: list[int],
    remaining: Remaining,
) -> list[ViewRefit]:
    """The new content of every view derived (directly or not) from ``dataset``, parents first.

    ``mask_of(version)`` gives the subject's rows in that version of ``dataset``
    (None if it cannot be read); ``versions`` are the candidate versions, newest
    first; ``remaining(version, mask)`` is that version without the subject.
    Raises :class:`ConfigurationError` naming a view it cannot match or refit.
    """
    plans: list[ViewRefit] = []
    for view in _views_of(engine, dataset):
        found = _minimizer_of(registry, engine, view)
        schema = store.schema(view)
        names = list(schema.names)
        frame, version, _ = store.load(view, names, None)
        extra = [found.trained_on] if found is not None and found.trained_on is not None else []
        match = None
        for source_version in dict.fromkeys([*versions, *extra]):
            mask = mask_of(source_version)
            if found is None or mask is None or len(mask) != len(frame):
                continue
            try:
                source, _, _ = store.load(dataset, names, source_version)
            except DecryptionError:  # a shredded version
                continue
            if _same(found.model.transform(source[names]), frame, schema):
                match = (source_version, mask)
                break
        if found is None or match is None:
            raise ConfigurationError(
                f"cannot erase the subject from {dataset!r}: the minimized view {view!r} "
                "derived from it does not match any readable version of it, so its rows "
                f"cannot be matched to the subject. Nothing was changed. Make {view!r} "
                f"again from the current version of {dataset!r} (session.minimize) and "
                "erase again"
            )
        base = remaining(*match)[names].reset_index(drop=True)
        refit = _refit(registry, found, schema, base, view)
        new = refit.transform(base).reset_index(drop=True)
        plans.append(ViewRefit(view, dataset, new, int(match[1].sum()), refit, found))
        plans += plan_view_erasures(
            store,
            registry,
            engine,
            dataset=view,
            mask_of=functools.partial(_only, version=version, mask=match[1]),
            versions=[version],
            remaining=functools.partial(_fixed, frame=new),
        )
    return plans


def subject_mask(frame: pd.DataFrame, column: str, match: str) -> np.ndarray:
    """Which rows of ``frame`` hold ``match`` in ``column``."""
    return np.asarray((frame[column].astype(object) == match).to_numpy(), dtype=bool)


def _same(computed: pd.DataFrame, stored: pd.DataFrame, schema: Schema) -> bool:
    """Whether ``computed`` is what the store gives back for ``stored`` (a Parquet round trip)."""
    table = pa.Table.from_pandas(computed.reset_index(drop=True), preserve_index=False)
    return bool(schema.coerce(table.to_pandas()).equals(stored))


def _refit(registry: Any, found: Registered, schema: Schema, base: pd.DataFrame, view: str) -> Any:
    from ..minimization import Minimizer

    old = found.model
    settings = found.metadata.get("settings") or {}
    categorical = settings.get(
        "categorical",
        [c for c in schema.names if schema[c].kind in ("categorical", "text", "identifier")],
    )
    try:
        name, version = found.metadata["for_model"]
        model = registry._load(
            name, version, principal="privml", purpose=ADMIN_PURPOSE, audit=False
        )
        return Minimizer(
            model,
            target_accuracy=old.target_accuracy,
            features=list(old.features),
            categorical=categorical,
            min_group_size=old.min_group_size,
            random_state=settings.get("random_state", 0),
            output=old.output,
        ).fit(base)
    except (PrivmlError, ValueError, KeyError, TypeError) as err:
        raise ConfigurationError(
            f"cannot erase the subject: the minimizer behind view {view!r} cannot be fitted "
            f"again without the subject ({type(err).__name__}). Nothing was changed"
        ) from None


def _only(candidate: int, *, version: int, mask: np.ndarray) -> np.ndarray | None:
    return mask if candidate == version else None


def _fixed(_version: int, _mask: np.ndarray, *, frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _views_of(engine: sa.Engine, dataset: str) -> list[str]:
    with read(engine) as conn:
        rows = sealed.scope_rows(conn, datasets)  # checked: an unlinked view would escape
        return sorted(r.name for r in rows if r.derived_from == dataset)


def _minimizer_of(registry: Any, engine: sa.Engine, view: str) -> Registered | None:
    """The newest registered minimizer behind ``view``, or None."""
    with read(engine) as conn:
        rows = sealed.scope_rows(conn, models)
    mine = [(r, json.loads(r.metadata)) for r in rows]
    mine = [(r, meta) for r, meta in mine if meta.get("view") == view]
    if not mine:
        return None
    row, meta = max(mine, key=lambda item: item[0].version)
    model = registry._load(
        row.name, row.version, principal="privml", purpose=ADMIN_PURPOSE, audit=False
    )
    versions = tuple(sorted(r.version for r, _ in mine if r.name == row.name))
    return Registered(model, row.name, versions, row.dataset_version, meta)
