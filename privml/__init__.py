"""privml: privacy-preserving machine learning on sensitive data.

Everything sensitive goes through one audited vault::

    import privml
    vault = privml.Vault.create("clinic.vault", key=privml.generate_key())
    vault.add_dataset("visits", df, schema=schema, budget=privml.Budget(epsilon=3, delta=1e-6))
    df = vault.session("dr.lee", purpose="care").read("visits")
    vault.audit.verify()

Or, for analysts who must never hold the key, served by a curator server::

    privml.serve("clinic.vault", key_file="clinic.key")            # the key holder's machine
    session = privml.connect(url, token=token, purpose="research")  # the analyst's
"""

from __future__ import annotations

import typing as _typing

from .accounting import BudgetStatus, Charge, PrivacyEvent, Reservation
from .accounting.budget import Budget
from .audit import VerifyReport
from .crypto.keys import generate_key
from .exceptions import (
    AccessDenied,
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    DecryptionError,
    InsecureKeyFileWarning,
    IntegrityError,
    InvalidKeyError,
    MissingKeyError,
    NotFoundError,
    OptionalDependencyError,
    PrivacyAuditFailure,
    PrivmlError,
    SchemaError,
    SchemaViolation,
    VaultExistsError,
)
from .report import DpoReport
from .schema import Field, Schema
from .vault import DatasetInfo, DatasetVersion, Session, Vault

if _typing.TYPE_CHECKING:
    import os
    from typing import Any

    from .service._client import RemoteSession

#: The installed privml release, as a version string (``"0.1.0"``).
__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AuthenticationError",
    "Budget",
    "BudgetExceededError",
    "BudgetStatus",
    "Charge",
    "ConfigurationError",
    "DatasetInfo",
    "DatasetVersion",
    "DecryptionError",
    "DpoReport",
    "Field",
    "InsecureKeyFileWarning",
    "IntegrityError",
    "InvalidKeyError",
    "MissingKeyError",
    "NotFoundError",
    "OptionalDependencyError",
    "PrivacyAuditFailure",
    "PrivacyEvent",
    "PrivmlError",
    "Reservation",
    "Schema",
    "SchemaError",
    "SchemaViolation",
    "Session",
    "Vault",
    "VaultExistsError",
    "VerifyReport",
    "__version__",
    "connect",
    "generate_key",
    "serve",
]


def connect(url: str, *, token: str | None = None, purpose: str, **options: Any) -> RemoteSession:
    """Connect to a curator server: a session with :class:`Session`'s methods and no key.

    See :func:`privml.service.connect` (``verify=``, ``timeout=``, ``retries=``).
    """
    from .service._client import connect as _connect

    return _connect(url, token=token, purpose=purpose, **options)


def serve(vault: str | os.PathLike[str] | None = None, **options: Any) -> None:
    """Serve ``vault`` to token holders until interrupted; see :func:`privml.service.serve`."""
    from .service._serve import serve as _serve

    _serve(vault, **options)
