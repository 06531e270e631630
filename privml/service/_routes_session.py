"""Routes of an analyst's session: who am I, my budget, the policy's answer, reads."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from ..accounting.records import BudgetStatus
from ._deps import caller_of
from ._schemas import ReadRequest
from ._service import Caller, Service
from ._wire import ARROW, frame_to_ipc

__all__ = ["session_routes"]

Dataset = Annotated[str, Path(min_length=1, max_length=256)]


def session_routes(service: Service) -> APIRouter:
    """The routes of :class:`~privml.service.RemoteSession`'s own methods."""
    api = APIRouter(prefix="/v1")
    Who = Annotated[Caller, Depends(caller_of(service))]
    limits = service.limits

    @api.get("/session", name="session.info")
    async def info(caller: Who) -> dict[str, Any]:
        """Who this token acts as, and for which purpose."""
        return {
            "principal": caller.principal,
            "purpose": caller.purpose,
            "token": caller.token,
            "dpo": caller.dpo,
        }

    @api.get("/datasets/{dataset}/budget", name="budget.view")
    async def budget(caller: Who, dataset: Dataset) -> dict[str, Any]:
        """The dataset's budget as this principal may see it (its own share only)."""

        def work() -> BudgetStatus:
            return service.session(caller).budget(dataset)

        return (await service.call(work, timeout=limits.timeout, caller=caller)).to_dict()

    @api.get("/datasets/{dataset}/explain", name="policy.explain")
    async def explain(caller: Who, dataset: Dataset) -> list[dict[str, Any]]:
        """What this principal gets from each column of the dataset, and why."""

        def work() -> list[dict[str, Any]]:
            frame = service.session(caller).explain(dataset)
            return list(frame.to_dict(orient="records"))

        return await service.call(work, timeout=limits.timeout, caller=caller)

    @api.post(
        "/datasets/{dataset}/read",
        name="dataset.read",
        response_class=Response,
        responses={200: {"content": {ARROW: {}}, "description": "an Arrow IPC stream"}},
    )
    async def read(caller: Who, dataset: Dataset, body: ReadRequest) -> Response:
        """The columns this principal may see, each in its decided mode, one page at a time.

        The response is an Arrow IPC stream; ``Privml-Next-Offset`` names the next
        page's offset while rows remain, and ``Privml-Version`` the version read.
        """
        limit = min(body.limit or limits.max_rows, limits.max_rows)

        def work() -> Response:
            frame = service.session(caller).read(
                dataset, columns=body.columns, version=body.version, where=body.where
            )
            page = frame.iloc[body.offset : body.offset + limit].reset_index(drop=True)
            page.attrs = dict(frame.attrs)
            headers = {"Privml-Rows": str(len(frame)), "Privml-Version": _version(frame)}
            if body.offset + limit < len(frame):
                headers["Privml-Next-Offset"] = str(body.offset + limit)
            return Response(frame_to_ipc(page), media_type=ARROW, headers=headers)

        return await service.call(work, timeout=limits.timeout, caller=caller)

    return api


def _version(frame: Any) -> str:
    return str(frame.attrs.get("privml_version", ""))
