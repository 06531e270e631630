"""What a data-protection officer's report holds: names, figures and counts, never data values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ..accounting.records import BudgetStatus

__all__ = [
    "DatasetSection",
    "LedgerRow",
    "ModelAudit",
    "ModelSection",
    "Refusal",
    "VaultEvent",
]


@dataclass(frozen=True)
class LedgerRow:
    """One ledger row: who was charged what, for which purpose, and the dataset's ε after it."""

    id: int
    time: datetime
    principal: str
    purpose: str
    status: str
    description: str
    epsilon_after: float
    method: str


@dataclass(frozen=True)
class DatasetSection:
    """One dataset's budget, its ledger, and its cumulative ε (the filter's and the naive sum).

    Attributes
    ----------
    name : str
    status : BudgetStatus or None
        None when the budget could not be read (``error`` says why).
    rows : tuple of LedgerRow
        The newest ledger rows, oldest first (at most the report's row limit).
    rows_left_out : int
        Older rows not in ``rows``.
    epsilon_committed : float or None
        The privacy filter's ε of the committed events alone; ``status.epsilon_spent``
        less this is what open reservations hold.
    first_charge, last_charge : datetime or None
        When the first and the last active (reserved or committed) ledger row was written.
    reserved_by_principal : mapping of str to int
        Open reservations per principal.
    charges, tight, naive : tuple
        Charge numbers in time order, the privacy filter's ε after each, and the naive sum.
    error : str or None
        What failed while reading this dataset.
    """

    name: str
    status: BudgetStatus | None
    rows: tuple[LedgerRow, ...] = ()
    rows_left_out: int = 0
    epsilon_committed: float | None = None
    first_charge: datetime | None = None
    last_charge: datetime | None = None
    reserved_by_principal: Mapping[str, int] = field(default_factory=dict)
    charges: tuple[int, ...] = ()
    tight: tuple[float, ...] = ()
    naive: tuple[float, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Refusal:
    """One refused or denied request in the report's period (from the audit log)."""

    seq: int
    time: datetime
    principal: str
    purpose: str
    action: str
    dataset: str | None
    outcome: str
    reason: str
    requested_epsilon: float | None


@dataclass(frozen=True)
class VaultEvent:
    """A key rotation, key destruction or erasure in the report's period: its numeric figures."""

    seq: int
    time: datetime
    action: str
    principal: str
    dataset: str | None
    figures: Mapping[str, float | int | bool]


@dataclass(frozen=True)
class ModelAudit:
    """One recorded empirical privacy audit of a model (``vault.models.privacy_report``)."""

    seq: int
    time: datetime
    outcome: str
    epsilon_claimed: float | None
    best_lower_bound: float | None
    confidence: float | None
    exceeded: bool
    attacks: tuple[tuple[str, float | None, float | None], ...]
    verdict: str


@dataclass(frozen=True)
class ModelSection:
    """One registered model version: its claimed (ε, δ), provenance and recorded audits."""

    name: str
    version: int
    dataset: str | None
    dataset_version: int | None
    epsilon: float | None
    delta: float | None
    model_class: str | None
    created: str
    audits: tuple[ModelAudit, ...] = ()
