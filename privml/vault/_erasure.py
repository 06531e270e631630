"""Erasing one data subject (GDPR art. 17) from a dataset and every view made from it.

The new versions are written under fresh keys and the old ones crypto-shredded
by the vault's key service (:mod:`privml.vault._keys`); views are rewritten by
a minimizer fitted again without the subject (:mod:`privml.vault._view_erasure`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..audit import ADMIN_PURPOSE
from ..crypto.pseudonyms import pseudonymize
from ..exceptions import DecryptionError, NotFoundError
from ..storage import sealed
from ..storage.engine import read
from ..storage.tables import models
from ._view_erasure import ViewRefit, plan_view_erasures, subject_mask

if TYPE_CHECKING:
    from ._datasets import DatasetVersion
    from ._keys import VaultKeys

__all__ = ["erase_subject"]


def erase_subject(
    self: VaultKeys, dataset: str, *, identifier: Any, column: str | None = None
) -> DatasetVersion:
    """Erase one data subject from ``dataset`` and its views.."""
    self._require_intact("erase_subject")
    key, column = self._pseudonym_key(dataset, column)
    schema = self._store.schema(dataset)
    # The audit gets the keyed pseudonym even when the column stores identifiers raw.
    token = str(pseudonymize([str(identifier)], key)[0])
    match = token if schema[column].pseudonymize else str(identifier)

    def mask_of(version: int) -> np.ndarray | None:
        try:
            frame, _, _ = self._store.load(dataset, [column], version)
        except DecryptionError:  # shredded
            return None
        return subject_mask(frame, column, match)

    def remaining(version: int, mask: np.ndarray) -> pd.DataFrame:
        frame, _, _ = self._store.load(dataset, list(schema.names), version)
        return frame.loc[~mask].reset_index(drop=True)

    latest = self._store.latest_version(dataset)
    found = mask_of(latest)
    if found is None or not found.any():
        raise NotFoundError(f"no rows of {dataset!r} belong to that identifier")
    # Every derived view is matched and refitted before anything changes.
    plans = plan_view_erasures(
        self._store,
        self._models,
        self._state.engine,
        dataset=dataset,
        mask_of=mask_of,
        versions=[latest],
        remaining=remaining,
    )
    written = [
        self._store.rotate(
            dataset,
            actor=self._state.actor,
            action="dataset.erase_subject",
            keep=lambda frame: ~subject_mask(frame, column, match),
            details={"pseudonym": token},
        )
    ]
    for plan in plans:
        written.append(_rewrite_view(self, plan, token, written))
    self._shred_files(written)
    return written[0]


def _rewrite_view(
    self: VaultKeys, plan: ViewRefit, token: str, written: list[DatasetVersion]
) -> DatasetVersion:
    """Store a view's new content under fresh keys, shredding its old versions and its
    old minimizer; register the refitted minimizer."""
    schema = self._store.schema(plan.view)
    self._store.append(plan.view, plan.frame, schema=schema, clipped={}, actor=self._state.actor)
    done = self._store.rotate(
        plan.view,
        actor=self._state.actor,
        action="dataset.erase_subject",
        details={"pseudonym": token, "source": plan.source, "rows_removed": plan.rows_removed},
    )
    source = next(w for w in reversed(written) if w.name == plan.source)
    old = plan.registered
    self._models._register(
        old.name,
        plan.minimizer,
        trained_on=(source.name, source.version),
        epsilon=None,
        delta=None,
        notes=f"minimizer behind view {plan.view!r}, fitted again without an erased subject",
        extra={
            key: old.metadata[key]
            for key in ("for_model", "view", "settings")
            if key in old.metadata
        },
        principal=self._state.actor,
        purpose=ADMIN_PURPOSE,
        admin=True,  # erasure is the key holder's act, on the name minimize registered
        minimizer=True,
    )
    with read(self._state.engine) as conn:
        files = [
            row
            for row in sealed.scope_rows(conn, models)
            if row.name == old.name and row.version in old.versions
        ]
        self._storage.remove([row.file for row in files])
    return done
