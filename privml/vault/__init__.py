"""The vault: one folder of encrypted datasets, their keys, policy, ledger and audit log.

The front door of privml. :class:`Vault` creates, opens and closes a vault and
composes its services, which share one :class:`~privml.vault._state.VaultState`;
:class:`Session` (a principal acting for a purpose) is the only way to data, and
its door (:mod:`privml.vault._door`) is what privml's mechanisms (``privml.dp``,
``privml.he``, ``privml.minimization``) are handed, through the protocol of
:mod:`privml._gate`.
"""

from ._datasets import DatasetInfo, DatasetVersion
from ._session import Session
from ._tokens import IssuedToken, TokenInfo
from ._vault import Vault

__all__ = ["DatasetInfo", "DatasetVersion", "IssuedToken", "Session", "TokenInfo", "Vault"]
