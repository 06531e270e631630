"""The stored reply of each client request, so that a retry gets the same answer.

A client names each request with an id of its choosing. The curator server
stores the reply it sends under (principal, request id) with :meth:`ReplyStore.put`
and, when the same request comes again (a retry after a lost connection), sends
the stored reply (:meth:`ReplyStore.get`) instead of computing a new one: a DP
answer is released once, never again with fresh noise.

Why this is safe:

* **Encrypted at rest.** Each body is AES-256-GCM encrypted under a key derived
  (HKDF, label ``privml/replies/v1``) from the vault's audit MAC key, which is
  stored only wrapped by the vault key. The associated data binds the vault's log
  id, the principal, the request id, the action, the media type and the time, so
  a row edited, or moved to another principal or request id, fails to decrypt
  (:class:`~privml.exceptions.IntegrityError`).
* **A lost answer is paid for again.** Before it computes, a request claims
  its id (:meth:`ReplyStore.claim`): a row holding a random attempt id,
  encrypted as a body is, which the server folds into the ledger request ids of
  the request's charges (:meth:`~privml.vault._requests.Via.charge_id`). A retry
  after a crash finds the claim and repeats those ids, so the ledger charges it
  once and its answer, which nobody has seen, is sent. A retry after the answer
  was purged, or its row deleted without the key, finds no claim: it makes a new
  one, and its charges are new charges, as a first request's would be. A
  purged answer is never released again with fresh noise for free.
* **Not a protected table, on purpose.** A row is a claim, then its answer;
  deleting one makes the retry a new, charged request, and the AEAD binding
  covers every other edit, without an integrity head to update on every request.
  Restoring a claim row from an older copy of the database, after its answer was
  stored, is a rollback: not detected (as for every row changed since the last
  audit entry, see SECURITY.md).
* **Once per request id.** :meth:`~ReplyStore.put` inserts under the vault's
  writer lock; when another thread, process or machine stored a reply for the
  same request id first, it returns that one, which the caller sends instead of
  its own.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._canonical import utcnow
from .._validation import check_name
from ..exceptions import ConfigurationError, IntegrityError
from ..storage.engine import read, transaction
from ..storage.tables import replies

if TYPE_CHECKING:
    from ._state import VaultState

__all__ = ["MAX_BODY_BYTES", "ReplyStore", "StoredReply"]

#: The largest reply body stored, in bytes (64 MiB).
MAX_BODY_BYTES = 64 * 1024 * 1024

_HKDF_LABEL = b"privml/replies/v1"
_AD_TAG = b"privml/reply/v1\x00"
_NONCE = 12
_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ACTION = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
_MEDIA_TYPE = re.compile(r"[!-~][ -~]{0,127}")  # printable ASCII, at most 128 characters
_CLAIMED = ""  # the media type of a claim: no answer yet (never a valid media type)


@dataclass(frozen=True)
class StoredReply:
    """A reply as stored for one request id: what the server sends again on a retry."""

    action: str
    body: bytes = field(repr=False)
    media_type: str
    created: datetime


class ReplyStore:
    """The stored replies of one vault (``vault._replies``; used by the curator server).

    Examples
    --------
    >>> vault = getfixture("demo_vault")
    >>> first = vault._replies.put("analyst", "req-1", action="dp.count",
    ...                            body=b'{"count": 4.2}', media_type="application/json")
    >>> vault._replies.get("analyst", "req-1", action="dp.count").body
    b'{"count": 4.2}'
    >>> vault._replies.get("analyst", "req-2", action="dp.count") is None
    True
    """

    def __init__(self, state: VaultState, audit_mac_key: bytes, log_id: str) -> None:
        self._state = state
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_LABEL).derive(
            audit_mac_key
        )
        self._aead: AESGCM | None = AESGCM(key)
        self._vault = bytes.fromhex(log_id)

    def get(self, principal: str, key: str, *, action: str) -> StoredReply | None:
        """The reply stored for ``principal``'s request ``key`` (None if there is none).

        Raises
        ------
        ConfigurationError
            The request id was used for another action: the client must use a new one.
        IntegrityError
            The stored row was edited or moved without the key.
        """
        _check(principal, key, action)
        with read(self._state.engine) as conn:
            row = conn.execute(_lookup(principal, key)).first()
        if row is None:
            return None
        found = self._open_any(row, principal, key, action)
        return found if isinstance(found, StoredReply) else None

    def claim(self, principal: str, key: str, *, action: str) -> StoredReply | str:
        """The stored reply to ``principal``'s request ``key``, or the id of its attempt.

        A request not yet answered is claimed: the first caller stores a random attempt
        id (encrypted), every later one gets the same id until the answer is stored
        (:meth:`put`). A request whose row is gone (purged, or deleted without the
        key) gets a new attempt id, so its charges are new ones.

        Raises
        ------
        ConfigurationError
            The request id was used for another action: the client must use a new one.
        IntegrityError
            The stored row was edited or moved without the key.
        """
        _check(principal, key, action)
        attempt = secrets.token_hex(16)
        created = utcnow()
        nonce = secrets.token_bytes(_NONCE)
        sealed_id = nonce + self._cipher().encrypt(
            nonce, attempt.encode(), self._ad(principal, key, action, _CLAIMED, created)
        )
        with transaction(self._state.engine) as tx:
            row = tx.conn.execute(_lookup(principal, key)).first()
            if row is None:
                tx.conn.execute(
                    replies.insert().values(
                        principal=principal,
                        key=key,
                        action=action,
                        media_type=_CLAIMED,
                        created=created,
                        body=sealed_id,
                    )
                )
                return attempt
        return self._open_any(row, principal, key, action)

    def put(
        self,
        principal: str,
        key: str,
        *,
        action: str,
        body: bytes,
        media_type: str,
    ) -> StoredReply:
        """Store the reply to ``principal``'s request ``key``, unless one is stored already.

        Returns the reply stored: this one, or the one another caller stored first
        for the same request id, which the caller must send instead of its own.
        """
        _check(principal, key, action)
        if not isinstance(body, bytes):
            raise ConfigurationError(f"body= takes bytes, got {type(body).__name__}")
        if len(body) > MAX_BODY_BYTES:
            raise ConfigurationError(
                f"a stored reply holds at most {MAX_BODY_BYTES} bytes, got {len(body)}: "
                "return less per request (fewer rows or columns)"
            )
        if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
            raise ConfigurationError(
                "media_type= takes a media type of printable ASCII, at most 128 characters, "
                "e.g. 'application/json'"
            )
        created = utcnow()
        nonce = secrets.token_bytes(_NONCE)
        sealed_body = nonce + self._cipher().encrypt(
            nonce, body, self._ad(principal, key, action, media_type, created)
        )
        values = {"action": action, "media_type": media_type, "created": created}
        with transaction(self._state.engine) as tx:
            row = tx.conn.execute(_lookup(principal, key)).first()
            if row is not None and str(row.media_type) == _CLAIMED:
                self._open_any(row, principal, key, action)  # an authentic claim of this action
                tx.conn.execute(
                    replies.update()
                    .where(
                        replies.c.principal == principal,
                        replies.c.key == key,
                        replies.c.media_type == _CLAIMED,
                    )
                    .values(**values, body=sealed_body)
                )
                row = None
            elif row is None:
                tx.conn.execute(
                    replies.insert().values(
                        principal=principal, key=key, **values, body=sealed_body
                    )
                )
            if row is None:
                return StoredReply(action, body, media_type, datetime.fromisoformat(created))
        return self._open(row, principal, key, action)

    def purge(self, *, older_than: timedelta) -> int:
        """Delete the replies stored more than ``older_than`` ago; return how many.

        A retry of a purged request is computed (and charged) again. Purge
        regularly: a stored reply keeps what it released, even after the data
        it came from is erased.
        """
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ConfigurationError("older_than= takes a duration, e.g. timedelta(days=1)")
        cutoff = (datetime.now(UTC) - older_than).isoformat(timespec="microseconds")
        with transaction(self._state.engine) as tx:
            result = tx.conn.execute(replies.delete().where(replies.c.created < cutoff))
        return int(result.rowcount)

    # -- internals ----------------------------------------------------------------------------
    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise ConfigurationError("internal: the reply store's key was dropped")
        return self._aead

    def _ad(self, principal: str, key: str, action: str, media_type: str, created: str) -> bytes:
        parts = (principal, key, action, media_type, created)
        return _AD_TAG + self._vault + b"".join(_text(p) for p in parts)

    def _open(self, row: Any, principal: str, key: str, action: str) -> StoredReply:
        """Decrypt a stored answer (checked against the identity it was asked under)."""
        found = self._open_any(row, principal, key, action)
        if not isinstance(found, StoredReply):
            raise ConfigurationError("internal: a claimed request has no answer yet")
        return found

    def _open_any(self, row: Any, principal: str, key: str, action: str) -> StoredReply | str:
        """Decrypt a stored row: an answer, or a claim's attempt id."""
        try:
            stored = bytes(row.body)
            ad = self._ad(principal, key, str(row.action), str(row.media_type), str(row.created))
            body = self._cipher().decrypt(stored[:_NONCE], stored[_NONCE:], ad)
            created = datetime.fromisoformat(str(row.created))
        except (InvalidTag, ValueError, TypeError):
            raise IntegrityError(
                f"the stored reply to request id {key!r} of {principal!r} fails authentication: "
                "the vault's metadata was edited or moved without the key; send the request "
                "again with a new request id"
            ) from None
        if str(row.action) != action:
            raise ConfigurationError(
                f"request id {key!r} already used for a different request; use a new one"
            )
        if str(row.media_type) == _CLAIMED:
            return body.decode("ascii")
        return StoredReply(str(row.action), body, str(row.media_type), created)

    def _forget(self) -> None:
        self._aead = None


def _check(principal: object, key: object, action: object) -> None:
    check_name(principal, "the principal")
    if len(str(principal)) > 256:
        raise ConfigurationError("a principal name has at most 256 characters")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ConfigurationError(
            "a request id is 1 to 128 characters of letters, digits and '.', '_', ':', '-' "
            "(a UUID will do)"
        )
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise ConfigurationError(
            "internal: an action is 1 to 64 characters of letters, digits and '._:/-'"
        )


def _lookup(principal: str, key: str) -> Any:
    return sa.select(replies).where(replies.c.principal == principal, replies.c.key == key)


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return len(data).to_bytes(4, "big") + data
