"""Routes of ``session.he``: a model's public spec, and scoring encrypted batches.

The client keeps its secret key: it sends a batch encrypted under its own key
and the public context (which must hold no secret key), and gets back a result
only it can decrypt. No budget is charged (see :mod:`privml.he._session`).
"""

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from ..exceptions import ConfigurationError
from ._deps import caller_of
from ._schemas import PredictRequest
from ._service import Caller, Service

__all__ = ["he_routes"]

Model = Annotated[str, Path(min_length=1, max_length=256)]
_BYTES = "application/octet-stream"


def he_routes(service: Service) -> APIRouter:
    """The routes of :class:`~privml.service.RemoteHE`."""
    api = APIRouter(prefix="/v1/models/{model}/he")
    Who = Annotated[Caller, Depends(caller_of(service))]
    limits = service.limits

    @api.get("/spec", name="he.spec", response_class=Response)
    async def spec(
        caller: Who, model: Model, version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None
    ) -> Response:
        """The public spec a client makes its keys for (no weights)."""

        def work() -> bytes:
            return service.session(caller).he.spec(model, version=version)

        return Response(
            await service.call(work, timeout=limits.timeout, caller=caller), media_type=_BYTES
        )

    @api.post("/predict", name="he.predict", response_class=Response)
    async def predict(caller: Who, model: Model, body: PredictRequest) -> Response:
        """Score an encrypted batch; the encrypted result comes back as bytes."""
        batch = _decode(body.batch, "batch")
        context = _decode(body.public_context, "public_context")

        def work() -> bytes:
            return service.session(caller).he.predict(
                model, batch, public_context=context, version=body.version
            )

        return Response(
            await service.call(work, timeout=limits.timeout, caller=caller), media_type=_BYTES
        )

    return api


def _decode(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{name} must be base64 (standard alphabet, padded)") from None
