"""The ledger's tables, on the vault's one ``metadata`` (so ``create_tables`` makes them).

Every row is authenticated (``privml.storage.sealed``), one scope per dataset.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..storage.tables import protected_table

__all__ = ["ledger_allocations", "ledger_events", "ledger_state"]

# One row per charge or reservation. ``event`` is the effective event (the
# settled one for a settled reservation); ``planned`` the reserved one.
ledger_events = protected_table(
    "ledger_events",
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False, unique=True),
    sa.Column("dataset", sa.ForeignKey("datasets.name"), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("principal", sa.String(256), nullable=False),
    sa.Column("purpose", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("event", sa.Text, nullable=False),  # canonical JSON (PrivacyEvent.to_json)
    sa.Column("planned", sa.Text, nullable=True),  # canonical JSON of the reserved event
    sa.Column("status", sa.String(16), nullable=False),  # reserved | committed | released
    sa.Column("rdp", sa.LargeBinary, nullable=False),  # the event's RDP curve, float64 LE
    sa.Column("pure_epsilon", sa.Float, nullable=True),  # ε of a pure ε-DP event
    sa.Column("epsilon_before", sa.Float, nullable=False),  # dataset ε before, as checked
    sa.Column("epsilon_after", sa.Float, nullable=False),  # dataset ε after, as checked
    sa.Column("method", sa.String(16), nullable=False),  # basic | rdp | pld
    sa.Column("accountant", sa.String(64), nullable=False),  # e.g. "dp_accounting 0.6.0"
    sa.Column("discretization", sa.Float, nullable=True),  # PLD interval, if PLD decided
    sa.Column("audit_seq", sa.Integer, nullable=False),  # audit entry of the last change
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("updated", sa.String(40), nullable=False),
    scope="dataset",
)

# Running totals per dataset and scope ("" = the dataset, "principal:<name>",
# "purpose:<name>") over reserved and committed events, so a check reads one
# row per scope instead of every event. ``revision`` counts changes.
ledger_state = protected_table(
    "ledger_state",
    sa.Column("dataset", sa.ForeignKey("datasets.name"), primary_key=True),
    sa.Column("scope", sa.String(300), primary_key=True),
    sa.Column("rdp", sa.LargeBinary, nullable=False),
    sa.Column("pure_epsilon", sa.Float, nullable=False),
    sa.Column("impure", sa.Integer, nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    # generic (ε, δ > 0) events: how many, and their summed ε and δ (the filter's δ reserve)
    sa.Column("approx", sa.Integer, nullable=False),
    sa.Column("approx_epsilon", sa.Float, nullable=False),
    sa.Column("approx_delta", sa.Float, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    scope="dataset",
)

# Sub-budgets: the most ε one principal's or purpose's events may spend together.
ledger_allocations = protected_table(
    "ledger_allocations",
    sa.Column("dataset", sa.ForeignKey("datasets.name"), primary_key=True),
    sa.Column("scope", sa.String(300), primary_key=True),
    sa.Column("epsilon", sa.Float, nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    scope="dataset",
)
