"""privml: privacy-preserving machine learning on sensitive data.

Everything sensitive goes through one audited vault::

    import privml
    vault = privml.Vault.create("clinic.vault", key=privml.generate_key())
    vault.add_dataset("visits", df, schema=schema, budget=privml.Budget(epsilon=3, delta=1e-6))
    df = vault.session("dr.lee", purpose="care").read("visits")
    vault.audit.verify()
"""

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
    PrivmlError,
    SchemaError,
    SchemaViolation,
    VaultExistsError,
)
from .schema import Field, Schema
from .vault import DatasetInfo, DatasetVersion, Session, Vault

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
    "Field",
    "InsecureKeyFileWarning",
    "IntegrityError",
    "InvalidKeyError",
    "MissingKeyError",
    "NotFoundError",
    "OptionalDependencyError",
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
    "generate_key",
]
