"""What a curator server refuses before a request reaches the vault: :class:`ServiceError`."""

from __future__ import annotations

from ..exceptions import PrivmlError

__all__ = ["ServiceError"]


class ServiceError(PrivmlError):
    """The server refused or failed a request for a reason of its own, not the vault's.

    Attributes
    ----------
    status : int
        The HTTP status: 413 (body too large), 429 (rate limited), 503 (timed out,
        or the vault is closed), 500 (the server failed; say ``incident`` to its
        operator), 502/504 (no answer came back).
    kind : str
        ``"too_large"``, ``"rate_limited"``, ``"timeout"``, ``"unavailable"``,
        ``"internal"``, ``"protocol"``.
    retry_after : float or None
        Seconds to wait before retrying, where the server said.
    incident : str or None
        An id the server's operator finds in the audit log (for ``"internal"``).

    Examples
    --------
    >>> err = ServiceError("slow down", status=429, kind="rate_limited", retry_after=1.0)
    >>> err.status, err.kind, err.retry_after
    (429, 'rate_limited', 1.0)
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        kind: str,
        retry_after: float | None = None,
        incident: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.retry_after = retry_after
        self.incident = incident
