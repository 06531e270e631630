"""What the ledger hands back: charges, budget status, allocations and what-if answers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .events import PrivacyEvent
from .filter import Accounting

__all__ = ["Allocation", "BudgetStatus", "Charge", "Share", "WhatIf"]


def _num(x: float | None) -> str:
    return "—" if x is None else ("∞" if math.isinf(x) else f"{x:.4g}")


@dataclass(frozen=True)
class Charge:
    """One committed charge or open reservation, as recorded in the ledger.

    Attributes
    ----------
    request_id : str
        Unique per charge; charging the same id again returns this charge.
    dataset, version, principal, purpose : str, int, str, str
    event : PrivacyEvent
        The effective event (after a settle, the settled one).
    status : {"reserved", "committed", "released"}
    epsilon_before, epsilon_after : float
        The dataset's ε before and after: the privacy filter's figures.
    accounting : Accounting
        How ``epsilon_after`` was obtained.
    audit_seq : int
        The audit entry that records this charge (or its last change).
    replayed : bool
        True when this call found the request id already charged.
    """

    request_id: str
    dataset: str
    version: int | None
    principal: str
    purpose: str
    event: PrivacyEvent
    status: str
    epsilon_before: float
    epsilon_after: float
    accounting: Accounting
    audit_seq: int
    replayed: bool = False


@dataclass(frozen=True)
class Share:
    """One principal's or purpose's part of a dataset's budget.

    Attributes
    ----------
    epsilon_spent : float
        The filter's ε of this principal's reserved and committed events
        together (for a purpose: its events and those of every purpose below it).
    epsilon_cap : float or None
        Its allocation (:meth:`privml.Vault.allocate`), if any.
    remaining : float or None
        ``epsilon_cap - epsilon_spent`` when capped (the dataset total also applies).
    method : str
        How ``epsilon_spent`` was obtained.
    """

    epsilon_spent: float
    epsilon_cap: float | None
    remaining: float | None
    method: str


@dataclass(frozen=True)
class BudgetStatus:
    """A dataset's privacy budget: spent, total, remaining, and by whom.

    ``epsilon_spent`` is the **admission figure**: the privacy filter's ε for
    every reserved and committed event together at ``delta`` (an RDP filter
    whose orders share δ, or basic composition for pure ε-DP events; proven
    for releases chosen adaptively, see :mod:`privml.accounting.filter`).
    ``epsilon_fixed_sequence`` is the PLD figure of the same events, valid
    only for a sequence fixed in advance: shown for comparison, never used to
    admit. ``epsilon_naive`` is what adding up each release's own ε gives.

    Attributes
    ----------
    dataset : str
    epsilon_spent, epsilon_total, delta, remaining : float
    method : str
        The filter member behind ``epsilon_spent``: ``"none"``, ``"basic"`` or ``"rdp"``.
    accounting : Accounting
        Every figure computed, with the library version and discretization.
    epsilon_naive : float
        Basic composition of the same events (for comparison only).
    committed, reserved, released : int
        Ledger rows by status.
    by_principal, by_purpose : mapping of str to Share
    privacy_unit : str
        What the ε protects, the neighbouring relation of every figure here:
        ``"row"`` (add/remove one row) or the identifier column whose every row of
        one value (one person, at most ``max_rows_per_unit`` rows per release) is
        added or removed.
    max_rows_per_unit : int
        The contribution bound of a person-level unit (1 for ``"row"``).

    Examples
    --------
    >>> from privml.accounting import PrivacyEvent
    >>> vault = getfixture("demo_vault")
    >>> _ = vault.ledger.charge(
    ...     "patients", event=PrivacyEvent.laplace(epsilon=0.1), principal="ana", purpose="stats"
    ... )
    >>> status = vault.budget("patients")
    >>> round(status.epsilon_spent, 4), status.epsilon_total, status.method
    (0.1, 1.0, 'basic')
    >>> round(status.by_principal["ana"].epsilon_spent, 4)
    0.1
    """

    dataset: str
    epsilon_spent: float
    epsilon_total: float
    delta: float
    remaining: float
    method: str
    accounting: Accounting
    epsilon_naive: float
    committed: int
    reserved: int
    released: int
    by_principal: Mapping[str, Share] = field(default_factory=dict)
    by_purpose: Mapping[str, Share] = field(default_factory=dict)
    privacy_unit: str = "row"
    max_rows_per_unit: int = 1

    @property
    def accountant(self) -> str:
        """The accounting library and version behind the figures."""
        return self.accounting.accountant

    @property
    def discretization(self) -> float | None:
        """The PLD discretization of the fixed-sequence figure, if one was computed."""
        return self.accounting.discretization

    @property
    def epsilon_fixed_sequence(self) -> float | None:
        """PLD ε of the same events, valid only for a sequence fixed in advance (not admission)."""
        return self.accounting.fixed_sequence_epsilon

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (∞ as None)."""

        def clean(obj: Any) -> Any:
            if isinstance(obj, float) and not math.isfinite(obj):
                return None
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items()}
            return obj

        out = asdict(self)
        out["accounting"]["admission"] = self.accounting.describe()
        out["epsilon_fixed_sequence"] = self.epsilon_fixed_sequence
        out["by_principal"] = {k: asdict(v) for k, v in self.by_principal.items()}
        out["by_purpose"] = {k: asdict(v) for k, v in self.by_purpose.items()}
        return dict(clean(out))

    def __str__(self) -> str:
        lines = [
            f"{self.dataset}: spent ε={_num(self.epsilon_spent)} of ε={_num(self.epsilon_total)} "
            f"at δ={self.delta:g}; remaining ε={_num(self.remaining)}",
            f"  privacy unit: {self._unit()}",
            f"  admission figure: {self.accounting.describe()}",
            f"  naive sum: ε={_num(self.epsilon_naive)}; "
            f"{self.committed} committed, {self.reserved} reserved, {self.released} released",
        ]
        fixed = self.epsilon_fixed_sequence
        if fixed is not None:
            lines.append(
                f"  fixed-sequence figure (PLD, discretization {self.discretization:g}): "
                f"ε={_num(fixed)}; valid only had these releases been fixed in advance, "
                "never used for admission"
            )
        for title, shares in (("principal", self.by_principal), ("purpose", self.by_purpose)):
            for name, s in shares.items():
                cap = f" of {_num(s.epsilon_cap)}" if s.epsilon_cap is not None else ""
                lines.append(f"  {title} {name}: ε={_num(s.epsilon_spent)}{cap}")
        return "\n".join(lines)

    def _unit(self) -> str:
        if self.privacy_unit == "row":
            return "one row (add/remove one row)"
        return (
            f"one person (add/remove every row of one {self.privacy_unit!r} value, at most "
            f"{self.max_rows_per_unit} rows each per release)"
        )


@dataclass(frozen=True)
class Allocation:
    """A cap on one principal's or one purpose's share of a dataset's budget."""

    dataset: str
    principal: str | None
    purpose: str | None
    epsilon: float
    epsilon_spent: float


@dataclass(frozen=True)
class WhatIf:
    """What charging an event would do, computed without charging.

    Attributes
    ----------
    allowed : bool
        Whether :meth:`~privml.accounting.Ledger.charge` would accept it now.
    epsilon_spent, epsilon_after, epsilon_total : float
        The dataset's ε now and after the charge (the privacy filter's
        admission figures), and its budget.
    remaining_after : float
    requested : float
        The event's own ε at the dataset's δ.
    refused_by : str or None
        ``"dataset"``, ``"principal:<name>"`` or ``"purpose:<name>"`` when not allowed.
    accounting : Accounting
        How ``epsilon_after`` was obtained.
    """

    allowed: bool
    epsilon_spent: float
    epsilon_after: float
    epsilon_total: float
    remaining_after: float
    requested: float
    refused_by: str | None
    accounting: Accounting
