"""Every error privml raises, in one place.

The tree::

    PrivmlError
    ├── ConfigurationError (ValueError)      bad argument or setting; says which and how to fix it
    │   ├── MissingKeyError                  no vault key given and PRIVML_VAULT_KEY unset
    │   ├── VaultClosedError                 the vault (and every service on it) was closed
    │   ├── RunEndedError                    a DP-SGD run's reservation was settled or released
    │   └── UnknownColumnError (KeyError)    ``schema[name]`` for a column the schema lacks
    ├── InvalidKeyError (ValueError)         the key does not open this vault
    │   └── KeyFormatError (ConfigurationError)  a key is not in an accepted encoding
    ├── SchemaError (ValueError)             data does not match its declared schema
    ├── NotFoundError (LookupError)          unknown dataset, version, column, principal, ...
    ├── VaultExistsError (FileExistsError)   ``Vault.create`` on a folder that already holds a vault
    ├── AccessDenied (PermissionError)       a policy refused the request
    ├── AuthenticationError (PermissionError)  a bearer token is missing, malformed, unknown,
    │                                        revoked or expired (one message for all five)
    ├── BudgetExceededError (ValueError)     a DP release would overspend a privacy budget
    │   └── StepLimitExceeded                a DP-SGD batch or step past the run's reservation
    ├── IntegrityError                       stored or decrypted data is not what was written
    ├── PrivacyAuditFailure                  an attack proved more ε than a model's claim
    ├── DecryptionError                      a ciphertext failed authentication
    └── OptionalDependencyError (ImportError)  an extra is not installed; says what to install

    InsecureKeyFileWarning (UserWarning)     a key file readable by other users

Each subclasses the built-in exception that callers already catch for the same
kind of problem (as scikit-learn's ``NotFittedError`` does), so ``except
ValueError`` keeps working around privml calls.

Errors that carry context take it through one keyword-only constructor, so
every raise site sets every attribute (see :class:`BudgetExceededError`), and
they survive ``pickle`` and ``copy`` with it.
"""

from __future__ import annotations

import dataclasses
import typing

if typing.TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "AccessDenied",
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigurationError",
    "DecryptionError",
    "IntegrityError",
    "InvalidKeyError",
    "KeyFormatError",
    "MissingKeyError",
    "NotFoundError",
    "OptionalDependencyError",
    "PrivacyAuditFailure",
    "PrivmlError",
    "RunEndedError",
    "SchemaError",
    "SchemaViolation",
    "StepLimitExceeded",
    "UnknownColumnError",
    "VaultClosedError",
    "VaultExistsError",
    "InsecureKeyFileWarning",
]


class PrivmlError(Exception):
    """Base class of every error raised by privml."""


def _rebuild(
    cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]
) -> object:
    """Unpickle an error without calling its keyword-only constructor."""
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


def _reduce(err: BaseException) -> tuple[object, ...]:
    # BaseException pickles as ``cls(*args)``, which a keyword-only constructor refuses.
    return (_rebuild, (type(err), err.args, dict(vars(err))))


class ConfigurationError(PrivmlError, ValueError):
    """An argument or setting is invalid; the message says which and how to fix it."""


class MissingKeyError(ConfigurationError):
    """No vault key was given and ``PRIVML_VAULT_KEY`` is not set."""


class VaultClosedError(ConfigurationError):
    """The vault was closed: it and every service reached through it refuse (reopen it)."""


class RunEndedError(ConfigurationError):
    """A reservation (a DP-SGD run) was already settled or released: it cannot be continued.

    Resuming or joining a run that has ended raises it; start a new run instead.
    """


class UnknownColumnError(ConfigurationError, KeyError):
    """A schema has no column of that name (a ``KeyError`` too, as the Mapping contract asks).

    Attributes
    ----------
    column : object
        The name looked up.
    known : tuple of str
        The schema's columns, in order.

    Examples
    --------
    >>> err = UnknownColumnError(column="agee", known=("age", "sex"))
    >>> str(err)
    "no column 'agee' in the schema; columns are ['age', 'sex']"
    >>> isinstance(err, KeyError) and isinstance(err, ConfigurationError)
    True
    """

    def __init__(self, *, column: object, known: Iterable[str]) -> None:
        self.column = column
        self.known = tuple(known)
        super().__init__(f"no column {column!r} in the schema; columns are {list(self.known)}")

    def __str__(self) -> str:  # KeyError's own __str__ would quote the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return _reduce(self)


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


class AuthenticationError(PrivmlError, PermissionError):
    """A bearer token is missing, malformed, unknown, revoked or expired.

    The message is the same for all five (:attr:`MESSAGE`), so
    someone guessing tokens learns nothing from it; the vault's audit log
    records which it was, for its owner.

    Examples
    --------
    >>> str(AuthenticationError())
    'invalid or expired token: ask the vault owner for a new one'
    """

    MESSAGE = "invalid or expired token: ask the vault owner for a new one"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)

    def __reduce__(self) -> tuple[object, ...]:
        return _reduce(self)


class BudgetExceededError(PrivmlError, ValueError):
    """A differentially private release would exceed a privacy budget.

    Every raise site passes every attribute, so a caller can act on them without
    reading the message (which states the same figures and the fix).

    Attributes
    ----------
    dataset : str or None
        The dataset whose budget refused.
    scope : str
        What refused: ``"dataset"`` (the dataset's whole budget),
        ``"principal:<name>"`` or ``"purpose:<name>"`` (an allocation of it; a
        purpose's binds the purposes below it too), or ``"reservation"`` (the
        steps a DP-SGD run reserved, see :class:`~privml.exceptions.StepLimitExceeded`).
    spent : float
        ε already spent in that scope (committed and reserved), by ``method``.
    requested : float
        ε of the refused release on its own, at ``delta``.
    after : float
        ε of the scope with the release composed (what ``method`` computed;
        composition makes it at most ``spent + requested``). ``inf`` when the
        release can never fit (for instance it would use up the δ reserve).
    remaining : float
        ``max(total - spent, 0)``.
    total : float
        The scope's cap: the budget's ε, the allocation's ε or the
        reservation's planned ε.
    delta : float
        The δ at which every ε above is stated.
    method : str
        What decided: the privacy filter's figure (``"basic"``, ``"rdp"``) for
        the ledger, or ``"reservation"`` for a run's step count.

    Examples
    --------
    >>> err = BudgetExceededError(
    ...     "privacy budget exceeded for dataset 'd'", dataset="d", scope="dataset",
    ...     spent=0.8, requested=0.5, after=1.3, remaining=0.2, total=1.0, delta=0.0,
    ...     method="basic",
    ... )
    >>> err.remaining, err.scope, isinstance(err, ValueError)
    (0.2, 'dataset', True)
    """

    def __init__(
        self,
        message: str,
        *,
        dataset: str | None,
        scope: str,
        spent: float,
        requested: float,
        after: float,
        remaining: float,
        total: float,
        delta: float,
        method: str,
    ) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.scope = scope
        self.spent = float(spent)
        self.requested = float(requested)
        self.after = float(after)
        self.remaining = float(remaining)
        self.total = float(total)
        self.delta = float(delta)
        self.method = method

    def __reduce__(self) -> tuple[object, ...]:
        return _reduce(self)


class StepLimitExceeded(BudgetExceededError):
    """A DP-SGD run asked for a batch or a step beyond the steps its reservation covers.

    Nothing was drawn, stepped or charged for it. ``scope`` is
    ``"reservation"`` and ``method`` ``"reservation"``; ``total`` is the
    reservation's planned ε, ``spent`` the ε of the steps before the refused
    one, ``requested`` the ε of one step on its own, ``after`` the ε the run
    would reach with it.

    Attributes
    ----------
    steps_reserved : int
        The steps the reservation covers.
    steps_attempted : int
        The number of the refused batch or step (``steps_reserved + 1`` or more).
    request_id : str
        The reservation's request id in the ledger.
    """

    def __init__(
        self,
        message: str,
        *,
        dataset: str | None,
        spent: float,
        requested: float,
        after: float,
        remaining: float,
        total: float,
        delta: float,
        steps_reserved: int,
        steps_attempted: int,
        request_id: str,
    ) -> None:
        super().__init__(
            message,
            dataset=dataset,
            scope="reservation",
            spent=spent,
            requested=requested,
            after=after,
            remaining=remaining,
            total=total,
            delta=delta,
            method="reservation",
        )
        self.steps_reserved = steps_reserved
        self.steps_attempted = steps_attempted
        self.request_id = request_id


class IntegrityError(PrivmlError):
    """Stored data, metadata or the audit log does not match what was written.

    Also raised when a ciphertext authenticates but what it holds is not what
    its metadata says (another class, an unknown layout): the key was right and
    the bytes were not modified in transit, yet they cannot be what was stored.
    """


class PrivacyAuditFailure(PrivmlError):
    """An attack proved an ε lower bound above the ε the ledger claims for a model.

    The claim is then wrong (a bug, a mis-set parameter, a model registered with
    the wrong figure): the measurement is sound at its stated confidence. The
    message states the figures; ``report`` holds the whole
    :class:`~privml.attacks.PrivacyReport` (which was written to the audit log).

    Examples
    --------
    >>> err = PrivacyAuditFailure("ε ≥ 1.2 proved; ε = 0.01 claimed", report=None)
    >>> err.report is None, isinstance(err, PrivmlError)
    (True, True)
    """

    def __init__(self, message: str, *, report: typing.Any) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[object, ...]:
        return _reduce(self)


class DecryptionError(PrivmlError):
    """A ciphertext failed authentication: wrong key, wrong context, or tampered bytes.

    Also raised when the key needed is gone (crypto-shredded) or not held.
    """


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
        Unicode), ``"too_long"``; for tensor and sequence fields also ``"shape"``,
        ``"not_finite"`` (NaN or infinity) and ``"vocabulary"`` (a token outside it).
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
