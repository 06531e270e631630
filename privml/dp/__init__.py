"""Differentially private statistics and models, released through a session.

Reach it as ``session.dp``. Every release is checked against the policy
(``dp_aggregate`` for statistics, ``dp_training`` for models, or more revealing
modes), charged to the dataset's privacy budget **before** any data is read,
and recorded in the audit log with its ledger charge. Bounds always come from
the schema, never from the data.

The neighbouring relation is add/remove one record.
"""

from ._result import DPResult
from ._session import DPSession
from .scaling import SchemaScaler

__all__ = ["DPResult", "DPSession", "SchemaScaler"]
