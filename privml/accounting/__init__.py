"""Privacy budgets and the ledger that charges every DP release before it happens.

Public names:

* :class:`Budget` — a dataset's total (ε, δ).
* :class:`PrivacyEvent` — what one release costs (a ``dp_accounting`` DpEvent
  with its provenance); constructors ``laplace``, ``gaussian``, ``dp_sgd``,
  ``generic``.
* :class:`Ledger` (``vault.ledger``) — ``charge``, ``reserve`` /
  :class:`Reservation`, ``what_if``, ``status``, ``events``, ``plot``.
* Results: :class:`Charge`, :class:`BudgetStatus`, :class:`Share`,
  :class:`Allocation`, :class:`WhatIf`, :class:`Accounting`.
"""

from .budget import Budget
from .events import PrivacyEvent
from .filter import Accounting
from .ledger import Ledger, Reservation
from .records import Allocation, BudgetStatus, Charge, Share, WhatIf

__all__ = [
    "Accounting",
    "Allocation",
    "Budget",
    "BudgetStatus",
    "Charge",
    "Ledger",
    "PrivacyEvent",
    "Reservation",
    "Share",
    "WhatIf",
]
