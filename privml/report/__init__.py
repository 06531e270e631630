"""The data-protection officer's report: one self-contained HTML file per vault.

:meth:`privml.Vault.report` (and ``privml report VAULT -o report.html``) collects every
dataset's budget (spent, reserved, remaining, by principal and purpose), the ledger as a
table and an inline SVG plot (the privacy filter's ε beside the naive sum), the audit
log's verification with its checkpoints and anchor, the refusals of a period, models with
their (ε, δ) and recorded empirical audits, and key rotations and erasures. It opens in a
browser without a network. A vault that fails verification still gets its report, with
the failure in a red banner at the top.

What it holds: names (datasets, principals, purposes, models), figures and counts; never
a data value, a key, or an error message from the log. Reading for it is one audit entry.
"""

from __future__ import annotations

from ._model import DatasetSection, LedgerRow, ModelAudit, ModelSection, Refusal, VaultEvent
from ._report import DpoReport

__all__ = [
    "DatasetSection",
    "DpoReport",
    "LedgerRow",
    "ModelAudit",
    "ModelSection",
    "Refusal",
    "VaultEvent",
]
