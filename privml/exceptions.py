"""Every error privml raises, in one place.

The tree::

    PrivmlError
    ├── ConfigurationError (ValueError)      bad argument or setting; says which and how to fix it
    │   ├── MissingKeyError                  no vault key given and PRIVML_VAULT_KEY unset
    │   └── VaultClosedError                 the vault (and every service on it) was closed
    ├── InvalidKeyError (ValueError)         the key does not open this vault
    │   └── KeyFormatError (ConfigurationError)  a key is not in an accepted encoding
    ├── SchemaError (ValueError)             data does not match its declared schema
    ├── NotFoundError (LookupError)          unknown dataset, version, column, principal, ...
    ├── VaultExistsError (FileExistsError)   ``Vault.create`` on a folder that already holds a vault
    ├── AccessDenied (PermissionError)       a policy refused the request
    ├── BudgetExceededError (ValueError)     a DP release would overspend a privacy budget
    ├── IntegrityError                       stored data or the audit log was tampered with
    ├── DecryptionError                      a ciphertext failed authentication
    └── OptionalDependencyError (ImportError)  an extra is not installed; says what to install

    InsecureKeyFileWarning (UserWarning)     a key file readable by other users

Each subclasses the built-in exception that callers already catch for the same
kind of problem (as scikit-learn's ``NotFittedError`` does), so ``except
ValueError`` keeps working around privml calls.
"""

from __future__ import annotations

import dataclasses
import typing

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "AccessDenied",
    "BudgetExceededError",
    "ConfigurationError",
    "DecryptionError",
    "IntegrityError",
    "InvalidKeyError",
    "KeyFormatError",
    "MissingKeyError",
    "NotFoundError",
    "OptionalDependencyError",
    "PrivmlError",
    "SchemaError",
    "SchemaViolation",
    "VaultClosedError",
    "VaultExistsError",
    "InsecureKeyFileWarning",
]


class PrivmlError(Exception):
    """Base class of every error raised by privml."""


class ConfigurationError(PrivmlError, ValueError):
    """An argument or setting is invalid; the message says which and how to fix it."""


class MissingKeyError(ConfigurationError):
    """No vault key was given and ``PRIVML_VAULT_KEY`` is not set."""


class VaultClosedError(ConfigurationError):
    """The vault was closed: it and every service reached through it refuse (reopen it)."""


class InvalidKeyError(PrivmlError, ValueError):
    """The key given does not open this vault (its key-check value does not match)."""


class KeyFormatError(InvalidKeyError, ConfigurationError):
    """A key is not in one of the accepted encodings; the message names them, never the key."""


class NotFoundError(PrivmlError, LookupError):
    """A named thing (dataset, version, column, vault) does not exist."""


class VaultExistsError(PrivmlError, FileExistsError):
    """``Vault.create`` was pointed at a folder that already holds a vault."""


class AccessDenied(PrivmlError, PermissionError):
    """A policy refused the request.

    Attributes
    ----------
    principal, purpose, dataset, column : str or None
        What was asked for, by whom, for what.
    mode : str or None
        The mode the policy gives that column (``"deny"`` when nothing matches).
    needed : str or None
        The least revealing mode that would have allowed the request.
    """

    def __init__(
        self,
        message: str,
        *,
        principal: str | None = None,
        purpose: str | None = None,
        dataset: str | None = None,
        column: str | None = None,
        mode: str | None = None,
        needed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.principal = principal
        self.purpose = purpose
        self.dataset = dataset
        self.column = column
        self.mode = mode
        self.needed = needed


class BudgetExceededError(PrivmlError, ValueError):
    """A differentially private release would exceed a privacy budget."""


class IntegrityError(PrivmlError):
    """Stored data, metadata or the audit log does not match what was written."""


class DecryptionError(PrivmlError):
    """A ciphertext failed authentication: wrong key, wrong context, or tampered bytes."""


class OptionalDependencyError(PrivmlError, ImportError):
    """A feature needs an optional dependency that is not installed."""


class InsecureKeyFileWarning(UserWarning):
    """A key file can be read by other users (fix: ``chmod 600 FILE``)."""


@dataclasses.dataclass(frozen=True)
class SchemaViolation:
    """One kind of problem in one column.

    Attributes
    ----------
    column : str
        The column at fault.
    kind : str
        One of ``"missing_column"``, ``"unexpected_column"``, ``"column_name"``
        (not a non-empty valid Unicode string; the column is then named by its
        position, ``"#0"``), ``"duplicate_column"``, ``"dtype"``, ``"null"``,
        ``"bounds"``, ``"category"``, ``"encoding"`` (text that is not valid
        Unicode), ``"too_long"``.
    count : int
        Number of rows with the problem (0 for column-level problems).
    rows : tuple of int
        Positions (0-based) of the first few offending rows.
    detail : str
        What was expected, in words.
    """

    column: str
    kind: str
    count: int
    rows: tuple[int, ...]
    detail: str

    def __str__(self) -> str:
        where = ""
        if self.count:
            shown = ", ".join(str(r) for r in self.rows)
            more = ", ..." if self.count > len(self.rows) else ""
            where = f" in {self.count} row(s) (rows {shown}{more})"
        return f"column {self.column!r}: {self.kind}{where}: {self.detail}"


class SchemaError(PrivmlError, ValueError):
    """Data does not match its schema. Nothing was stored.

    Attributes
    ----------
    violations : tuple of SchemaViolation
        Every problem found, one per (column, kind).
    """

    def __init__(self, violations: Sequence[SchemaViolation], hint: str = "") -> None:
        self.violations = tuple(violations)
        lines = [f"data does not match the schema ({len(self.violations)} problem(s)):"]
        lines += [f"  - {v}" for v in self.violations]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))
