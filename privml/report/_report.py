"""The report itself: everything collected from a vault for its data-protection officer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..audit import VerifyReport
from ._model import DatasetSection, ModelSection, Refusal, VaultEvent

__all__ = ["DpoReport"]


@dataclass(frozen=True)
class DpoReport:
    """A vault's state for its data-protection officer: budgets, ledger, log, refusals, models.

    Made by :meth:`privml.Vault.report`, which also writes it as one self-contained HTML
    file. It holds names, figures and counts only, never a data value.

    Attributes
    ----------
    generated : datetime
        When it was collected (UTC).
    vault : str
        Where the vault lives (its folder or storage).
    since, until : datetime or None
        The period of ``refusals`` and ``events`` (budgets and ledgers cover all time).
    verification : VerifyReport or None
        The audit log's and metadata's verification (None: it could not run).
    anchor_path : str
        The external anchor file of the signed checkpoints.
    checkpoints : tuple of (int, str)
        Sequence number and time of every checkpoint in the anchor file.
    datasets : tuple of DatasetSection
    refusals : tuple of Refusal
    events : tuple of VaultEvent
        Key rotations, key destructions and erasures.
    models : tuple of ModelSection
    problems : tuple of str
        Every verification failure and every part of the vault that could not be read.

    Examples
    --------
    >>> vault = getfixture("demo_vault")
    >>> report = vault.report(tmp_path / "report.html")
    >>> report.ok, [d.name for d in report.datasets]
    (True, ['patients'])
    >>> (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    True
    """

    generated: datetime
    vault: str
    since: datetime | None
    until: datetime | None
    verification: VerifyReport | None
    anchor_path: str
    checkpoints: tuple[tuple[int, str], ...]
    datasets: tuple[DatasetSection, ...]
    refusals: tuple[Refusal, ...]
    events: tuple[VaultEvent, ...]
    models: tuple[ModelSection, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the log and metadata verified and every part of the vault was read."""
        return not self.problems

    def html(self) -> str:
        """The report as one self-contained HTML document (no script, no network)."""
        from ._html import render

        return render(self)

    def figures(self) -> dict[str, Any]:
        """Counts and flags only: what the audit entry of the report records."""
        return {
            "verified": self.verification is not None and self.verification.ok,
            "problems": len(self.problems),
            "datasets": len(self.datasets),
            "ledger_rows": sum(len(d.rows) + d.rows_left_out for d in self.datasets),
            "refusals": len(self.refusals),
            "events": len(self.events),
            "models": len(self.models),
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
        }
