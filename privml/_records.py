"""The records the vault hands out: dataset versions, datasets and model versions.

Frozen values with no behaviour, below the door (:mod:`privml._gate`) so that
the vault, the door and the mechanisms share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .accounting._unit import ROW, PrivacyUnit
from .accounting.budget import Budget
from .schema import Schema

__all__ = ["DatasetInfo", "DatasetVersion", "ModelInfo"]


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a dataset.

    Attributes
    ----------
    name : str
    version : int
        1 for the first version, then 2, 3, ...
    rows : int
    content_hash : str
        SHA-256 of the stored (encrypted) file; checked on every read and
        recorded in the audit entry of every read.
    created : str
        ISO 8601 UTC time of writing.
    """

    name: str
    version: int
    rows: int
    content_hash: str
    created: str


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: its schema, budget, versions (oldest first) and privacy unit.

    ``privacy_unit`` is what the budget protects: one row, or all rows of one
    person (an identifier column, each person contributing at most
    ``privacy_unit.max_rows`` rows to a release).
    """

    name: str
    schema: Schema
    budget: Budget
    versions: tuple[DatasetVersion, ...]
    privacy_unit: PrivacyUnit = ROW

    @property
    def latest(self) -> DatasetVersion:
        """The newest version."""
        return self.versions[-1]


@dataclass(frozen=True)
class ModelInfo:
    """One registered model version and where it came from.

    Attributes
    ----------
    name, version : str, int
    trained_on : tuple of (str, int) or None
        The dataset and version it was trained on.
    epsilon, delta : float or None
        The privacy cost of training, as charged to the ledger (None: not DP).
    libraries : dict
        Versions of the libraries that produced it.
    metadata : dict
        Kind (class), notes, and extras such as the input view a model needs.
    content_hash : str
        SHA-256 of the stored (encrypted) file.
    """

    name: str
    version: int
    trained_on: tuple[str, int] | None
    epsilon: float | None
    delta: float | None
    libraries: dict[str, str]
    metadata: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    created: str = ""
