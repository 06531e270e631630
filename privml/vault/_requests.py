"""One session's requests in the audit log: served, refused or failed, each entry once.

An entry names the principal and purpose, the action, the dataset and version,
and details without request values: a refusal records the error's type and a
message that quotes no value of the request (see :mod:`privml.vault._failures`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._validation import check_request
from ..exceptions import AccessDenied, ConfigurationError
from ..storage.engine import transaction
from . import _failures

if TYPE_CHECKING:
    from .._gate import Authorization
    from ..audit import AuditLog
    from ..policy import ColumnDecision
    from ._decide import Asker
    from ._policy_store import PolicyAdmin
    from ._state import VaultState

__all__ = ["RequestLog", "Via", "policy_hash", "release_context"]


@dataclass(frozen=True)
class Via:
    """How a served request reached the vault: recorded in each of its audit entries.

    ``request_key`` is the client's id for the request, and ``attempt`` the id the
    server's claim on it holds (:meth:`privml.vault._replies.ReplyStore.claim`): a
    retry of an unanswered request carries both again, so its ledger charges carry
    the same request ids and are charged once (:meth:`charge_id`). A request whose
    stored answer is gone makes a new claim, hence new charges.
    """

    client: str
    token: str
    request_key: str | None = None
    attempt: str | None = None

    def details(self) -> dict[str, str]:
        """What an audit entry records of the route (no secret: the token's public id)."""
        out = {"client": self.client, "token": self.token}
        if self.request_key is not None:
            out["request"] = self.request_key
        return out

    def charge_id(self, principal: str, action: str, n: int) -> str | None:
        """The ledger request id of the ``n``-th charge a served request makes (None: fresh).

        The same for a retry of the same attempt at the request, distinct across
        principals, requests and attempts.
        """
        if self.request_key is None:
            return None
        parts = (principal, self.request_key, self.attempt or "", action, str(n))
        material = "\0".join(parts).encode()
        return f"{action}-svc-{hashlib.sha256(material).hexdigest()[:32]}"


class RequestLog:
    """Writes the audit entries of one principal acting for one purpose."""

    def __init__(
        self,
        *,
        state: VaultState,
        audit: AuditLog,
        policy: PolicyAdmin,
        asker: Asker,
        via: Via | None = None,
    ) -> None:
        self._state = state
        self._audit = audit
        self._policy = policy
        self._asker = asker
        self._via = via

    @contextmanager
    def request(
        self, action: str, dataset: str, *, where: Any = None, version: int | None = None
    ) -> Iterator[None]:
        """Audit a request that fails anywhere inside, unless its failure is audited already.

        Wrap every public entry point that serves a request, so that a refusal
        raised before or after the policy decision (a bad argument, a missing
        optional dependency, a failed comparison) leaves its audit entry.
        """
        try:
            yield
        except Exception as err:
            if not _failures.is_audited(err):
                self.failure(action, dataset, version, err, {}, {}, where=where)
            raise

    def check_request(self, action: str, dataset: object, columns: object, version: object) -> None:
        """Refuse a malformed request (names, column list, version), audited without its values.

        Its names may be unprintable or personal data, so the entry records only that a
        malformed request of this kind was refused, and the error's type.
        """
        try:
            check_request(dataset, columns, version)
        except ConfigurationError as err:
            details = {"error": type(err).__name__, "message": "malformed request"}
            self.record(action, "error", None, None, details)
            _failures.mark_audited(err)
            raise

    def failure(
        self,
        action: str,
        dataset: str,
        version: int | None,
        err: Exception,
        decisions: Mapping[str, ColumnDecision],
        request: dict[str, Any],
        *,
        where: Any = None,
    ) -> None:
        """Audit a failed request: the error's type and a message that quotes no request value."""
        outcome = "denied" if isinstance(err, AccessDenied) else "error"
        message = _failures.safe_message(err, _failures.request_values(where))
        details: dict[str, Any] = {**request, "error": type(err).__name__, "message": message}
        if isinstance(err, AccessDenied):
            column = err.column
            decision = decisions.get(column) if column else None
            details.update(
                column=column,
                mode=err.mode,
                needed=err.needed,
                grant_ids=list(decision.grant_ids) if decision else [],
            )
        details["policy_hash"] = policy_hash(decisions) or self._policy.hash
        self.record(action, outcome, dataset, version, details)
        _failures.mark_audited(err)

    def record(
        self,
        action: str,
        outcome: str,
        dataset: str | None,
        version: int | None,
        details: dict[str, Any],
    ) -> None:
        """Append one audit entry for this session's principal and purpose."""
        if self._via is not None:
            details = {**details, "via": self._via.details()}
        with transaction(self._state.engine) as tx:
            self._audit.append(
                tx,
                principal=self._asker.principal,
                purpose=self._asker.purpose,
                action=action,
                outcome=outcome,
                dataset=dataset,
                version=version,
                details=details,
            )


def policy_hash(decisions: Mapping[str, ColumnDecision]) -> str | None:
    """The policy version the decisions were made under (None before any decision)."""
    first = next(iter(decisions.values()), None)
    return first.policy_hash if first is not None else None


def release_context(auth: Authorization, action: str) -> dict[str, Any]:
    """What a release's audit entry records besides the charge itself."""
    return {
        "release": action,
        "columns": auth.columns,
        "grant_ids": auth.grant_ids,
        "policy_hash": auth.policy_hash,
        "where": [[p.column, p.op] for p in auth.conditions],
    }
