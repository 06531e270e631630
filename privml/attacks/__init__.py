"""Empirical privacy measurements: attacks whose ε lower bounds sit beside the ledger's claim.

Not the audit log (:mod:`privml.audit`): these attack trained models to
measure how much they reveal. The one-run canary measurement of DP-SGD is
asked for with ``session.dp.train(..., canaries=m)``.
"""

__all__: list[str] = []
