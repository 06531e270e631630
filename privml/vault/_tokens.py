"""``vault.tokens``: bearer tokens that let analysts reach a served vault.

A token is issued to one registered principal for a list of registered purposes,
with an expiry (30 days unless asked otherwise), and optionally the right to use
the read-only oversight endpoints of a data-protection officer (``dpo=True``).
Its secret, ``pml_<id>_<43 random characters>`` (256 random bits), is returned
once by :meth:`TokenService.issue` and never stored.

Why this is safe:

* **Nothing stored checks a guess.** The ``tokens`` row holds HMAC-SHA256 of the
  secret under a key derived (HKDF, label ``privml/tokens/v1``) from the vault's
  audit MAC key, which is itself stored only wrapped by the vault key. A copy of
  the database without the key cannot test guessed secrets offline; rotating the
  vault key re-wraps that key and leaves every token valid.
* **Rows are authenticated** (:mod:`privml.storage.sealed`, one scope per token):
  an expiry extended, a revocation cleared or rolled back, a principal, purpose or
  ``dpo`` flag changed, a digest copied from another row: each is an
  :class:`~privml.exceptions.IntegrityError` at the next :meth:`~TokenService.authenticate`.
* **A refusal says nothing.** A malformed, unknown, revoked or expired token, or a
  wrong secret, is one :class:`~privml.exceptions.AuthenticationError` with one
  message; an unknown id costs the same HMAC and comparison as a wrong secret.
  The audit log records the reason for the vault's owner (``token.use``,
  outcome ``denied``), never the secret.
* **Revocation is immediate.** Nothing is cached: every authentication reads the
  token's row, so a revoke made by another process counts at the next request.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._canonical import canonical_json
from .._validation import check_name
from ..audit import ADMIN_PURPOSE, AuditLog
from ..exceptions import AuthenticationError, ConfigurationError, IntegrityError, NotFoundError
from ..storage import sealed
from ..storage.engine import read, transaction
from ..storage.tables import principals, purposes, row_heads, tokens

if TYPE_CHECKING:
    from ._state import VaultState

__all__ = ["AUTH_PURPOSE", "UNAUTHENTICATED", "IssuedToken", "TokenInfo", "TokenService"]

#: The audit entry of a refused token names this principal (nobody was authenticated) ...
UNAUTHENTICATED = "unauthenticated"
#: ... acting for this purpose.
AUTH_PURPOSE = "authentication"

_HKDF_LABEL = b"privml/tokens/v1"
_SECRET_CHARS = 64  # "pml_" + 16 hex + "_" + 43 URL-safe base64 characters
_SECRET = re.compile(r"pml_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
_ID = re.compile(r"tok_[0-9a-f]{16}")
_MAX_PURPOSES = 64
_MAX_CLIENT_CHARS = 256


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued: its ``secret`` is shown here once and never stored.

    Attributes
    ----------
    id : str
        The public id (``tok_`` and 16 hex digits), for listing and revoking.
    secret : str
        The bearer string the analyst sends; not shown by ``repr``.
    principal : str
    purposes : tuple of str
        The purposes the token may act for.
    dpo : bool
        Whether the token may use the read-only oversight endpoints.
    expires : datetime or None
        When it stops working (aware, UTC); None: never.
    """

    id: str
    secret: str = field(repr=False)
    principal: str
    purposes: tuple[str, ...]
    dpo: bool
    expires: datetime | None


@dataclass(frozen=True)
class TokenInfo:
    """What the vault knows of a token (never its secret)."""

    id: str
    principal: str
    purposes: tuple[str, ...]
    dpo: bool
    created: datetime
    expires: datetime | None
    revoked: datetime | None

    @property
    def active(self) -> bool:
        """True while the token is neither revoked nor expired (checked now)."""
        return self.revoked is None and (self.expires is None or datetime.now(UTC) < self.expires)


class TokenService:
    """Bearer tokens of one vault. Reach it as ``vault.tokens``.

    Examples
    --------
    >>> vault = getfixture("demo_vault")
    >>> issued = vault.tokens.issue("analyst", purposes=["research"])
    >>> issued  # the secret is not shown
    IssuedToken(id='tok_...', principal='analyst', purposes=('research',), dpo=False, expires=...)
    >>> vault.tokens.authenticate(issued.secret, client="203.0.113.7").principal
    'analyst'
    >>> vault.tokens.revoke(issued.id)
    >>> vault.tokens.authenticate(issued.secret, client="203.0.113.7")
    Traceback (most recent call last):
    ...
    privml.exceptions.AuthenticationError: invalid or expired token: ask the vault owner ...
    """

    def __init__(self, state: VaultState, audit: AuditLog, audit_mac_key: bytes) -> None:
        self._state = state
        self._audit = audit
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_LABEL).derive(
            audit_mac_key
        )
        # compared against when the id is unknown, so that costs what a wrong secret costs
        self._dummy = self._digest("pml_" + "0" * 16 + "_" + "A" * 43)

    # -- the key holder's side ----------------------------------------------------------------
    def issue(
        self,
        principal: str,
        *,
        purposes: Sequence[str],
        expires: timedelta | datetime | None = timedelta(days=30),
        dpo: bool = False,
    ) -> IssuedToken:
        """Issue a token for ``principal`` acting for ``purposes``; audited ``token.issue``.

        Parameters
        ----------
        principal : str
            A registered principal.
        purposes : list of str
            The registered purposes the token may act for (at least one).
        expires : timedelta, datetime or None
            How long from now the token works, or until when (an aware datetime);
            None for a token that never expires (write it out: it must be asked for).
        dpo : bool
            Allow the read-only oversight endpoints (budgets, ledger, audit
            verification across the vault).

        Returns
        -------
        IssuedToken
            With the secret, which is shown only here: hand it to the analyst.

        Raises
        ------
        NotFoundError
            The principal or a purpose is not registered.
        """
        check_name(principal, "the principal")
        names = _purposes(purposes)
        if not isinstance(dpo, bool):
            raise ConfigurationError(f"dpo= takes True or False, got {type(dpo).__name__}")
        now = datetime.now(UTC)
        until = _expiry(expires, now)
        token_id = secrets.token_hex(8)
        secret = f"pml_{token_id}_{secrets.token_urlsafe(32)}"
        issued = IssuedToken(
            id=f"tok_{token_id}",
            secret=secret,
            principal=principal,
            purposes=names,
            dpo=dpo,
            expires=until,
        )
        with transaction(self._state.engine) as tx:
            _check_registered(tx.conn, principal, names)
            sealed.insert(
                tx.conn,
                tokens,
                {
                    "id": issued.id,
                    "principal": principal,
                    "purposes": canonical_json(list(names)).decode(),
                    "dpo": dpo,
                    "created": _stamp(now),
                    "expires": None if until is None else _stamp(until),
                    "revoked": None,
                    "digest": self._digest(secret),
                },
            )
            self._audit.append(
                tx,
                principal=self._state.actor,
                purpose=ADMIN_PURPOSE,
                action="token.issue",
                outcome="ok",
                details={
                    "token": issued.id,
                    "principal": principal,
                    "purposes": list(names),
                    "dpo": dpo,
                    "expires": None if until is None else _stamp(until),
                },
            )
        return issued

    def list(
        self, *, principal: str | None = None, include_inactive: bool = False
    ) -> builtins.list[TokenInfo]:
        """The tokens (of ``principal``), oldest first; only active ones unless
        ``include_inactive``.

        Each row is checked against its MAC and its head; without ``principal``, every
        head is checked to have its row, so a token row deleted without the key is an
        :class:`~privml.exceptions.IntegrityError` here too.
        """
        query: sa.Select[Any] | sa.CompoundSelect[Any]
        if principal is not None:
            check_name(principal, "the principal")
            query = sa.select(tokens.c.id).where(tokens.c.principal == principal)
        else:
            heads = sa.select(row_heads.c.scope).where(row_heads.c.table_name == tokens.name)
            query = sa.union(sa.select(tokens.c.id), heads)
        with read(self._state.engine) as conn:
            ids = sorted(str(i) for i in conn.execute(query).scalars())
            rows = [row for i in ids for row in sealed.scope_rows(conn, tokens, i)]
        found = sorted((_info(row) for row in rows), key=lambda t: (t.created, t.id))
        return [t for t in found if include_inactive or t.active]

    def revoke(self, token_id: str) -> None:
        """Revoke a token: it is refused from the next authentication on, in every process.

        Revoking a token already revoked changes nothing (and writes no audit entry);
        an unknown id is a :class:`~privml.exceptions.NotFoundError`. Audited
        ``token.revoke``.
        """
        _check_id(token_id)
        with transaction(self._state.engine) as tx:
            rows = sealed.scope_rows(tx.conn, tokens, token_id)
            if not rows:
                raise NotFoundError(
                    f"no token {token_id!r}; see vault.tokens.list(include_inactive=True)"
                )
            row = rows[0]
            if row.revoked is not None:
                return
            sealed.update_row(tx.conn, tokens, row, {"revoked": _stamp(datetime.now(UTC))})
            self._audit.append(
                tx,
                principal=self._state.actor,
                purpose=ADMIN_PURPOSE,
                action="token.revoke",
                outcome="ok",
                details={"token": token_id, "principal": str(row.principal)},
            )

    # -- the server's side --------------------------------------------------------------------
    def authenticate(self, secret: str, *, client: str) -> TokenInfo:
        """The token whose secret is ``secret``, if it is active.

        ``client`` is the caller's address, for the audit entry of a refusal.
        Success writes nothing (the served request's own entry names the token).

        Raises
        ------
        AuthenticationError
            Malformed, unknown, wrong, revoked or expired (one message for all;
            the reason goes to the audit log).
        IntegrityError
            The token's row was edited without the key.
        """
        where = _client(client)
        token_id = _parse(secret)
        if token_id is None:
            self._deny(where, None, None, "malformed")
        try:
            with read(self._state.engine) as conn:
                rows = sealed.scope_rows(conn, tokens, token_id)
        except IntegrityError:
            self._record(where, token_id, None, "tampered")
            raise
        row = rows[0] if rows else None
        expected = self._dummy if row is None else str(row.digest)
        matches = hmac.compare_digest(self._digest(secret), expected)
        if row is None:
            self._deny(where, token_id, None, "unknown")
        owner = str(row.principal)
        if not matches:
            self._deny(where, token_id, owner, "mismatch")
        info = _info(row)
        if info.revoked is not None:
            self._deny(where, token_id, owner, "revoked")
        if info.expires is not None and datetime.now(UTC) >= info.expires:
            self._deny(where, token_id, owner, "expired")
        return info

    # -- internals ----------------------------------------------------------------------------
    def _digest(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode("ascii"), hashlib.sha256).hexdigest()

    def _deny(self, client: str, token_id: str | None, owner: str | None, reason: str) -> NoReturn:
        self._record(client, token_id, owner, reason)
        raise AuthenticationError()

    def _record(self, client: str, token_id: str | None, owner: str | None, reason: str) -> None:
        details: dict[str, Any] = {"client": client, "reason": reason}
        if token_id is not None:
            details["token"] = token_id
        if owner is not None:
            details["principal"] = owner
        with transaction(self._state.engine) as tx:
            self._audit.append(
                tx,
                principal=UNAUTHENTICATED,
                purpose=AUTH_PURPOSE,
                action="token.use",
                outcome="denied",
                details=details,
            )

    def _forget(self) -> None:
        del self._key


# --- helpers --------------------------------------------------------------------------------
def _parse(secret: object) -> str | None:
    """The token id named by a well-formed secret; None for anything else (nothing looked up)."""
    if not isinstance(secret, str) or len(secret) != _SECRET_CHARS:
        return None
    match = _SECRET.fullmatch(secret)
    return None if match is None else f"tok_{match.group(1)}"


def _check_id(token_id: object) -> None:
    if isinstance(token_id, str) and _ID.fullmatch(token_id):
        return
    hint = ""
    if isinstance(token_id, str) and token_id.startswith("pml_"):
        hint = " (that is a token's secret, not its id: never pass the secret around)"
    raise ConfigurationError(
        "a token id is 'tok_' and 16 hex digits, as vault.tokens.list() shows" + hint
    )


def _client(client: object) -> str:
    """The client's address as it can go into the audit log: printable ASCII, bounded."""
    if not isinstance(client, str):
        raise ConfigurationError(
            "client= takes the caller's address as a string, e.g. '203.0.113.7:51234'"
        )
    text = "".join(c if c.isascii() and c.isprintable() else f"\\x{ord(c):02x}" for c in client)
    return text if len(text) <= _MAX_CLIENT_CHARS else text[: _MAX_CLIENT_CHARS - 3] + "..."


def _purposes(names: object) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigurationError("purposes= takes a list of purpose names, e.g. ['research']")
    if not 1 <= len(names) <= _MAX_PURPOSES:
        raise ConfigurationError(
            f"purposes= must name between 1 and {_MAX_PURPOSES} registered purposes, "
            f"got {len(names)}"
        )
    return tuple(dict.fromkeys(check_name(n, "a purpose in purposes=") for n in names))


def _expiry(expires: object, now: datetime) -> datetime | None:
    """When a token issued ``now`` stops working (UTC); None: never."""
    fix = (
        "expires= takes a duration from now (timedelta(days=30)), an aware datetime in the "
        "future, or None for a token that never expires"
    )
    if expires is None:
        return None
    try:
        if isinstance(expires, timedelta):
            if expires <= timedelta(0):
                raise ConfigurationError(f"{fix}; got a duration that is not positive")
            return now + expires
        if isinstance(expires, datetime):
            if expires.tzinfo is None or expires.utcoffset() is None:
                raise ConfigurationError(
                    f"{fix}; got a naive datetime: give its time zone, e.g. tzinfo=UTC"
                )
            until = expires.astimezone(UTC)
            if until <= now:
                raise ConfigurationError(f"{fix}; got a time in the past")
            return until
    except OverflowError:
        raise ConfigurationError(f"{fix}; got one past the year 9999") from None
    raise ConfigurationError(f"{fix}; got a {type(expires).__name__}")


def _check_registered(conn: Any, principal: str, names: tuple[str, ...]) -> None:
    known = {str(r.name) for r in sealed.scope_rows(conn, principals)}
    if principal not in known:
        raise NotFoundError(
            f"no principal {principal!r}; register it with vault.add_principal() first"
        )
    registered = {str(r.name) for r in sealed.scope_rows(conn, purposes)}
    missing = [n for n in names if n not in registered]
    if missing:
        raise NotFoundError(
            f"purposes {missing} are not registered; register them with vault.add_purpose() "
            f"(registered: {sorted(registered)})"
        )


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _time(text: Any) -> datetime | None:
    return None if text is None else datetime.fromisoformat(str(text))


def _info(row: Any) -> TokenInfo:
    created = _time(row.created)
    if created is None:
        raise ValueError("internal: a token row without its creation time")
    return TokenInfo(
        id=str(row.id),
        principal=str(row.principal),
        purposes=tuple(json.loads(row.purposes)),
        dpo=bool(row.dpo),
        created=created,
        expires=_time(row.expires),
        revoked=_time(row.revoked),
    )
