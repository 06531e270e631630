"""The curator server's application: routes, limits, and every refusal as problem+json.

:func:`create_app` builds the FastAPI application for an open vault. Every
refusal leaves as an RFC 9457 problem document and, once the caller is known,
an audit entry; an unexpected failure leaves a generic problem with an incident
id, never a traceback or a stored value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..exceptions import ConfigurationError, PrivmlError
from ..vault import _failures
from ._deps import client_of
from ._errors import ServiceError
from ._limits import Limits
from ._problems import MEDIA_TYPE, to_problem
from ._routes_dp import dp_routes
from ._routes_he import he_routes
from ._routes_oversight import oversight_routes
from ._routes_report import report_routes
from ._routes_session import session_routes
from ._service import Service

if TYPE_CHECKING:
    from ..vault import Vault

__all__ = ["create_app"]


def create_app(vault: Vault, *, limits: Limits | None = None) -> FastAPI:
    """The curator server's ASGI application for ``vault`` (which it keeps open).

    Parameters
    ----------
    vault : privml.Vault
        An open vault; the application serves it until the process ends.
    limits : Limits, optional
        Sizes, rates and times (:class:`~privml.service.Limits`).

    Examples
    --------
    >>> app = create_app(getfixture("dp_vault"))
    >>> sorted(p for p in app.openapi()["paths"] if "oversight" in p)[:1]
    ['/v1/oversight/audit/verify']
    """
    service = Service(vault, limits or Limits())
    vault._store.keep_frames(service.limits.frame_cache_bytes)
    app = FastAPI(
        title="privml curator",
        version=__version__,
        description="A privml vault served to analysts who never hold its key.",
        # the schema is served (clients and fuzzers read it); the interactive pages are
        # not: they load scripts from a CDN into the page where an analyst types a token
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    for routes in (session_routes, dp_routes, he_routes, report_routes, oversight_routes):
        app.include_router(routes(service))

    @app.get("/v1/health", name="health")
    async def health() -> dict[str, str]:
        """Whether the server is up (no token needed; says nothing about the vault)."""
        return {"status": "ok"}

    @app.exception_handler(PrivmlError)
    async def refused(request: Request, err: PrivmlError) -> JSONResponse:
        return await _problem(service, request, err)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, err: RequestValidationError) -> JSONResponse:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in err.errors()[:10]
        )
        problem = ConfigurationError(f"malformed request ({where})")
        return await _problem(service, request, problem)

    @app.exception_handler(HTTPException)
    async def http(request: Request, err: HTTPException) -> JSONResponse:
        kind = "not_found" if err.status_code == 404 else "protocol"
        problem = ServiceError(str(err.detail), status=err.status_code, kind=kind)
        return await _problem(service, request, problem)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return await _problem(service, request, err)

    app.add_middleware(BodyLimit, service=service)
    return app


async def _problem(service: Service, request: Request, err: BaseException) -> JSONResponse:
    """The problem response for ``err``, audited unless the vault audited it already."""
    status, body, headers = await service.call(
        lambda: _refusal(service, request, err), timeout=None
    )
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _refusal(
    service: Service, request: Request, err: BaseException
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Audit a refusal or failure (in a worker thread); return status, problem and headers."""
    caller = getattr(request.state, "caller", None)
    route = request.scope.get("route")
    action = str(getattr(route, "name", None) or "request")
    client = client_of(request)
    incident = None
    if not isinstance(err, PrivmlError):
        incident = service.incident(caller, client, action, err)
    elif caller is not None and not _failures.is_audited(err):
        outcome = "denied" if getattr(err, "status", 0) in (403, 429) else "error"
        details: dict[str, Any] = {"error": type(err).__name__}
        try:
            service.record(caller, client, action, outcome, details)
        except Exception as failure:  # the vault failing to log must not turn into a 5xx loop
            incident = service.incident(caller, client, action, failure)
    status, body = to_problem(err, incident=incident)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="privml"'
    retry = getattr(err, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
        body["fields"]["retry_after"] = retry
    return status, body, headers


class BodyLimit:
    """Refuse a request body over ``limits.max_body_bytes`` before reading it (413)."""

    def __init__(self, app: ASGIApp, *, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.service.limits.max_body_bytes
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        request = Request(scope, receive)
        err = ServiceError(
            f"the request body is over the server's limit of {limit} bytes; send less "
            "(an encrypted batch in smaller parts, fewer columns)",
            status=413,
            kind="too_large",
        )
        try:
            caller = await self.service.authenticate(request.headers, client_of(request))
        except PrivmlError:
            caller = None  # the failed authentication is audited by itself
        request.state.caller = caller
        response = await _problem(self.service, request, err)
        await response(scope, receive, send)


class _TooLarge(BaseException):
    """A streamed body went over the limit.

    A BaseException, so that FastAPI's body parsing (which turns any Exception
    into a 422 "malformed request") lets it through to :class:`BodyLimit`.
    """
