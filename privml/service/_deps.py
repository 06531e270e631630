"""Request dependencies shared by the routes: the caller, and a release's request id."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ._service import Caller, Service

__all__ = ["RequestKey", "caller_of", "client_of"]

#: The header carrying a release's request id (chosen by the client, the same on a retry).
RequestKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The client's id for this release; a retry with the same id gets the "
        "same answer and is charged once.",
    ),
]

_bearer = HTTPBearer(auto_error=False, description="A token from `privml token issue`.")


def client_of(request: Request) -> str:
    """The client's address as the server sees it."""
    return request.client.host if request.client is not None else "unknown"


def caller_of(service: Service, *, dpo: bool = False) -> Callable[..., Awaitable[Caller]]:
    """A dependency that authenticates the request (and checks the DPO role if asked)."""

    async def caller(
        request: Request,
        # declared for the schema, checked (and a refusal audited) after the token
        purpose: Annotated[
            str | None,
            Header(
                alias="Privml-Purpose",
                description="The purpose this request acts for (one of the token's purposes).",
            ),
        ] = None,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    ) -> Caller:
        who = await service.authenticate(request.headers, client_of(request))
        request.state.caller = who
        route = request.scope.get("route")
        action = str(getattr(route, "name", "request"))
        service.admit(who, action)
        if dpo and not who.dpo:
            service.record(who, who.client, action, "denied", {"reason": "not_dpo"})
            from ..exceptions import AccessDenied
            from ..vault._failures import mark_audited

            err = AccessDenied(
                "oversight endpoints need a token issued with dpo=True "
                "(privml token issue ... --dpo)",
                principal=who.principal,
                purpose=who.purpose,
            )
            mark_audited(err)  # recorded above, once
            raise err
        return who

    return caller
