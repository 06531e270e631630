"""One server process's hold on the vault: who is calling, and how each request is run.

:class:`Service` authenticates a bearer token, opens a session for the caller's
principal and purpose (with the client's address, the token's id and the request
id in every audit entry), runs the vault's work in a worker thread under a
deadline, and keeps each release's answer so that a retry gets the same one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from .._validation import check_name
from ..audit import route
from ..exceptions import AccessDenied, AuthenticationError, ConfigurationError, PrivmlError
from ..storage.engine import transaction
from ..vault._failures import mark_audited
from ..vault._requests import Via
from ..vault._tokens import AUTH_PURPOSE, UNAUTHENTICATED
from ._errors import ServiceError
from ._limits import FailureThrottle, Limits, RateLimiter
from ._problems import MEDIA_TYPE as PROBLEM
from ._problems import to_problem

if TYPE_CHECKING:
    from ..vault import Session, Vault
    from ..vault._replies import StoredReply

__all__ = ["Caller", "Reply", "Service"]

T = TypeVar("T")
log = logging.getLogger("privml.service")

#: The header naming the purpose a request acts for.
PURPOSE_HEADER = "privml-purpose"


@dataclass(frozen=True)
class Caller:
    """An authenticated request's principal, purpose, token and client address."""

    principal: str
    purpose: str
    token: str
    client: str
    dpo: bool

    def via(self, request_key: str | None = None, attempt: str | None = None) -> Via:
        """What the vault records of the route this caller's request took."""
        return Via(self.client, self.token, request_key, attempt)


@dataclass(frozen=True)
class Reply:
    """A release's answer as stored for retries (a stored refusal keeps its status)."""

    body: bytes
    media_type: str
    replayed: bool
    status: int = 200


class Service:
    """The vault, its limits and counters, for one server process."""

    def __init__(self, vault: Vault, limits: Limits) -> None:
        self.vault = vault
        self.limits = limits
        self.rates = RateLimiter(limits.rate, limits.burst)
        self.throttle = FailureThrottle(limits.failures_before_delay, limits.failure_window)
        # releases running in this process, by (principal, request id): a retry waits for
        # the first run instead of computing (and drawing noise) a second time
        self._running: dict[tuple[str, str], threading.Event] = {}
        self._running_lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    # -- who calls ----------------------------------------------------------------------
    async def authenticate(self, headers: Mapping[str, str], client: str) -> Caller:
        """The caller of a request, or :class:`~privml.AuthenticationError` (audited)."""
        delay = self.throttle.delay(client)
        if delay:
            await anyio.sleep(delay)
        try:
            return await self.call(lambda: self._authenticate(headers, client), timeout=None)
        except PrivmlError as err:
            if isinstance(err, AuthenticationError):
                self.throttle.failed(client)
            raise

    def _authenticate(self, headers: Mapping[str, str], client: str) -> Caller:
        scheme, _, secret = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            secret = ""  # refused, and audited as malformed, by authenticate
        info = self.vault.tokens.authenticate(secret.strip(), client=client)
        purpose = headers.get(PURPOSE_HEADER)
        try:
            if purpose is None:
                raise ConfigurationError(
                    "name the purpose this request acts for in the Privml-Purpose header "
                    "(privml.connect(..., purpose=...) sends it)"
                )
            check_name(purpose, "the Privml-Purpose header")
        except ConfigurationError as err:
            who = Caller(info.principal, AUTH_PURPOSE, info.id, client, info.dpo)
            self.record(who, client, "token.use", "error", {"reason": "purpose_header"})
            mark_audited(err)
            raise
        caller = Caller(info.principal, purpose, info.id, client, info.dpo)
        if purpose not in info.purposes:
            self.record(caller, client, "token.use", "denied", {"reason": "purpose"})
            raise AccessDenied(
                f"this token may act for {sorted(info.purposes)}, not {purpose!r}: ask the "
                "vault owner for a token for that purpose",
                principal=info.principal,
                purpose=purpose,
            )
        return caller

    def admit(self, caller: Caller, action: str) -> None:
        """Refuse (429, audited) a caller over its rate."""
        wait = self.rates.take(caller.principal)
        if wait is not None:
            self.record(caller, caller.client, action, "denied", {"reason": "rate_limited"})
            err = ServiceError(
                f"too many requests from {caller.principal!r}: retry in {wait:.2f} s",
                status=429,
                kind="rate_limited",
                retry_after=wait,
            )
            mark_audited(err)
            raise err

    # -- running the vault's work -----------------------------------------------------------
    async def call(
        self,
        work: Callable[[], T],
        *,
        timeout: float | None,
        caller: Caller | None = None,
        key: str | None = None,
    ) -> T:
        """Run ``work`` in a worker thread; past ``timeout`` the client is told to retry.

        For a ``caller``, every audit entry the work causes records the request's route,
        and a principal with ``limits.in_flight`` requests still running (a timed-out
        one runs on) is refused (429, audited) before any work: one principal cannot
        hold every worker thread.
        """
        if caller is not None:
            work = self._counted(caller, _routed(work, caller.via(key)))
        if timeout is None:
            return await anyio.to_thread.run_sync(work)
        try:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except TimeoutError:
            raise ServiceError(
                f"the request took longer than {timeout:g} s; retry it with the same request "
                "id to get its answer once it is ready (a release is charged once)",
                status=503,
                kind="timeout",
                retry_after=1.0,
            ) from None

    def _counted(self, caller: Caller, work: Callable[[], T]) -> Callable[[], T]:
        """``work``, counted among the caller's requests in progress until it ends."""
        principal = caller.principal
        with self._running_lock:
            busy = self._in_flight.get(principal, 0)
            if busy < self.limits.in_flight:
                self._in_flight[principal] = busy + 1
        if busy >= self.limits.in_flight:
            self.record(caller, caller.client, "request", "denied", {"reason": "in_flight"})
            err = ServiceError(
                f"{principal!r} has {busy} requests in progress, the most this server runs "
                "at once for one principal: wait for one to finish",
                status=429,
                kind="rate_limited",
                retry_after=1.0,
            )
            mark_audited(err)
            raise err

        def run() -> T:
            try:
                return work()
            finally:
                with self._running_lock:
                    left = self._in_flight[principal] - 1
                    if left:
                        self._in_flight[principal] = left
                    else:
                        del self._in_flight[principal]

        return run

    def session(
        self, caller: Caller, request_key: str | None = None, attempt: str | None = None
    ) -> Session:
        """A session for the caller; its audit entries name the route, its charges the key."""
        via = caller.via(request_key, attempt)
        return self.vault._served_session(caller.principal, caller.purpose, via)

    async def release(
        self,
        caller: Caller,
        key: str,
        action: str,
        request: Mapping[str, Any],
        compute: Callable[[Session], tuple[bytes, str]],
        *,
        timeout: float,
    ) -> Reply:
        """Serve a release once per request id: a retry gets the stored answer, uncharged.

        The answer is stored (encrypted) before it is sent. A retry after a crash
        that came before the store finds the request's claim, hence its charges
        already in the ledger under the same ids (charged once), and gets an answer
        no one has seen; a retry after the answer was purged is a new, charged release.
        """
        tag = f"{action}:{_digest(caller.purpose, request)}"
        replies = self.vault._replies

        slot = (caller.principal, key)

        def work() -> Reply:
            while True:
                claimed = replies.claim(caller.principal, key, action=tag)
                if not isinstance(claimed, str):
                    self.record(caller, caller.client, action, "replayed", {"request": key})
                    return Reply(claimed.body, claimed.media_type, True, _status(claimed))
                with self._running_lock:
                    first = self._running.get(slot)
                    if first is None:
                        mine = self._running[slot] = threading.Event()
                if first is None:
                    break
                first.wait()  # then its stored answer, or (had it failed) a run of our own
            session = self.session(caller, key, claimed)
            try:
                body, media_type = compute(session)
                self._check_reply_size(body)
                kept = replies.put(
                    caller.principal, key, action=tag, body=body, media_type=media_type
                )
            except Exception as err:
                if session._door._charges_asked:  # noise may have been drawn: answer it once
                    self._keep_failure(caller, key, tag, err)
                raise
            finally:
                with self._running_lock:
                    del self._running[slot]
                mine.set()
            return Reply(kept.body, kept.media_type, kept.body != body)

        return await self.call(work, timeout=timeout, caller=caller, key=key)

    def _check_reply_size(self, body: bytes) -> None:
        limit = self.limits.max_reply_bytes
        if len(body) > limit:
            raise ServiceError(
                f"the answer is larger than this server sends ({limit} bytes); ask for less "
                "(fewer groups, rows or columns) under a new request id",
                status=422,
                kind="reply_too_large",
            )

    def _keep_failure(self, caller: Caller, key: str, tag: str, err: Exception) -> None:
        """Store the refusal of a request that failed after asking for a charge, as its answer.

        Its charge stays in the ledger under the claim's ids, and the failure may depend on
        the noise drawn (a group-by answer over the size limit): a retry with the same
        request id must get this refusal again, never a recomputation with fresh noise
        under the charge already made. Errors outside privml's own are kept as a generic
        failure (their message could describe the server's insides).
        """
        if isinstance(err, PrivmlError):
            status, problem = to_problem(err)
        else:
            status, problem = to_problem(
                ServiceError(
                    "the release failed after its charge; ask again under a new request id",
                    status=500,
                    kind="failed_after_charge",
                )
            )
        problem["status"] = status
        body = json.dumps(problem, sort_keys=True, default=str).encode()
        try:
            self.vault._replies.put(
                caller.principal, key, action=tag, body=body, media_type=PROBLEM
            )
        except Exception:  # the first failure is what the client must see
            log.exception("the refusal of request %s could not be stored", key)

    # -- the audit log ------------------------------------------------------------------
    def record(
        self,
        caller: Caller | None,
        client: str,
        action: str,
        outcome: str,
        details: dict[str, Any],
    ) -> None:
        """Append an audit entry for a request refused before any session was opened."""
        via = caller.via() if caller is not None else Via(client, "-")
        with transaction(self.vault._state.engine) as tx:
            self.vault.audit.append(
                tx,
                principal=caller.principal if caller is not None else UNAUTHENTICATED,
                purpose=caller.purpose if caller is not None else AUTH_PURPOSE,
                action=action,
                outcome=outcome,
                details={**details, "via": via.details()},
            )

    def incident(self, caller: Caller | None, client: str, action: str, err: BaseException) -> str:
        """Record an unexpected failure; return the id the client is given."""
        incident = secrets.token_hex(8)
        log.error("incident %s in %s: %s", incident, action, type(err).__name__, exc_info=err)
        try:
            details = {"incident": incident, "error": type(err).__name__}
            self.record(caller, client, action, "error", details)
        except Exception:  # the log itself failing must not hide the first failure
            log.exception("incident %s could not be audited", incident)
        return incident


def _routed(work: Callable[[], T], via: Via) -> Callable[[], T]:
    def run() -> T:
        with route(via.details()):
            return work()

    return run


def _status(reply: StoredReply) -> int:
    """The HTTP status of a stored answer: 200, or the stored refusal's own."""
    if reply.media_type != PROBLEM:
        return 200
    status = json.loads(reply.body).get("status", 500)
    return status if isinstance(status, int) and 400 <= status < 600 else 500


def _digest(purpose: str, request: Mapping[str, Any]) -> str:
    """A short digest of what a release asked: a reused request id with other values is refused."""
    text = json.dumps([purpose, request], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
