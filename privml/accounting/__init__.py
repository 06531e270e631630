"""Privacy budgets and (in later versions) the ledger that charges every DP release."""

from .budget import Budget

__all__ = ["Budget"]
