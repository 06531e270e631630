"""Routes of ``session.dp``: DP statistics, diffprivlib models and DP-SGD runs on the server.

Each is a release: it carries the client's request id (``Idempotency-Key``); the
answer is stored before it is sent, so a retry gets the same answer and the
ledger charges it once. Models come as data (an allowlisted class and its
parameters, or a declared network), never as code or pickles.
"""

import base64
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from ..exceptions import ConfigurationError
from ._deps import RequestKey, caller_of
from ._schemas import FitRequest, GroupByRequest, StatisticRequest, TrainRequest
from ._service import Caller, Reply, Service
from ._wire import plain_json, result_to_json

__all__ = ["dp_routes"]

Dataset = Annotated[str, Path(min_length=1, max_length=256)]
Statistic = Literal["count", "sum", "mean", "var", "std", "histogram", "quantile"]
GroupStatistic = Literal["count", "sum", "mean", "var", "std", "quantile"]
_JSON = "application/json"


def dp_routes(service: Service) -> APIRouter:
    """The routes of :class:`~privml.service.RemoteDP` (``/fit`` and ``/train`` before
    ``/{statistic}``, which would match them)."""
    api = APIRouter(prefix="/v1/datasets/{dataset}/dp")
    Who = Annotated[Caller, Depends(caller_of(service))]
    limits = service.limits

    @api.post("/fit", name="dp.fit", response_class=Response)
    async def fit(caller: Who, dataset: Dataset, body: FitRequest, key: RequestKey) -> Response:
        """Fit an allowlisted diffprivlib estimator; the fitted DP model comes back as data."""
        from ..dp._declared_estimators import build_estimator, fitted_to_wire

        estimator = build_estimator(body.estimator, body.params)  # refused before any work

        def compute(session: Any) -> tuple[bytes, str]:
            model = session.dp.fit(
                estimator,
                dataset,
                features=body.features,
                target=body.target,
                name=body.name,
                holdout=body.holdout,
            )
            return json.dumps({"model": fitted_to_wire(model)}).encode(), _JSON

        request = {"dataset": dataset, **body.model_dump()}
        reply = await service.release(
            caller, key, "dp.fit", request, compute, timeout=limits.timeout
        )
        return _send(reply)

    @api.post("/train", name="dp.train", response_class=Response)
    async def train(caller: Who, dataset: Dataset, body: TrainRequest, key: RequestKey) -> Response:
        """Train a declared network with DP-SGD on the server: the DP weights and the curve
        of ε by epoch come back, never a batch or a loss computed on one. Reserved,
        guarded and settled as in-process training."""
        from ..dp.torch._declared import TrainingRequest, train_declared

        spec = TrainingRequest.parse(body.spec)  # refused before any work

        def compute(session: Any) -> tuple[bytes, str]:
            done = train_declared(
                session.dp, dataset, spec, canaries=body.canaries, holdout=body.holdout
            )
            out = {
                "weights": base64.b64encode(done.weights).decode(),
                # the loss is computed on private batches and is not DP: it stays here
                "history": [{k: v for k, v in row.items() if k != "loss"} for row in done.history],
                "epsilon": done.epsilon,
                "delta": done.delta,
                "model": done.model_name,
                "version": done.model_version,
                "classes": done.classes,
                "target_bounds": done.target_bounds,
                "scaler": done.scaler,
                "features": list(spec.features),
                "target": spec.target,
                # counts and ε lower bounds only: which canaries were trained on stays here
                "canary_measurement": plain_json(done.canary_measurement),
            }
            return json.dumps(out).encode(), _JSON

        request = {"dataset": dataset, **body.model_dump()}
        reply = await service.release(
            caller, key, "dp.train", request, compute, timeout=limits.training_timeout
        )
        return _send(reply)

    @api.post("/groupby/{statistic}", name="dp.groupby", response_class=Response)
    async def groupby(
        caller: Who,
        dataset: Dataset,
        statistic: GroupStatistic,
        body: GroupByRequest,
        key: RequestKey,
    ) -> Response:
        """A DP statistic per group, one charge for all groups (see ``session.dp.groupby``)."""

        def compute(session: Any) -> tuple[bytes, str]:
            groups = session.dp.groupby(
                dataset,
                by=body.by,
                where=body.where,
                keys=body.keys,
                max_groups_per_unit=body.max_groups_per_unit,
            )
            extra: dict[str, Any] = {"epsilon": body.epsilon, "delta": body.delta}
            if statistic == "count":
                _no(body.column, "column", statistic)
                frame = groups.count(**extra, select_on=body.select_on or "people")
            elif statistic == "quantile":
                _no(body.select_on, "select_on", statistic)
                if body.q is None:
                    raise ConfigurationError("a quantile needs q (between 0 and 1)")
                frame = groups.quantile(_column(body), body.q, **extra)
            else:
                _no(body.select_on, "select_on", statistic)
                frame = getattr(groups, statistic)(_column(body), **extra)
            return json.dumps(frame_to_json(frame)).encode(), _JSON

        request = {"dataset": dataset, "statistic": statistic, **body.model_dump()}
        reply = await service.release(
            caller, key, f"dp.groupby.{statistic}", request, compute, timeout=limits.timeout
        )
        return _send(reply)

    @api.post("/{statistic}", name="dp.statistic", response_class=Response)
    async def statistic(
        caller: Who, dataset: Dataset, statistic: Statistic, body: StatisticRequest, key: RequestKey
    ) -> Response:
        """A DP statistic of the dataset, charged to its budget before any value is read."""

        def compute(session: Any) -> tuple[bytes, str]:
            dp = session.dp
            where = body.where
            if statistic == "count":
                _no(body.column, "column", statistic)
                result = dp.count(dataset, epsilon=body.epsilon, where=where)
            elif statistic == "quantile":
                if body.q is None:
                    raise ConfigurationError("a quantile needs q (between 0 and 1)")
                result = dp.quantile(dataset, _column(body), body.q, epsilon=body.epsilon)
            elif statistic == "histogram":
                result = dp.histogram(
                    dataset, _column(body), epsilon=body.epsilon, bins=body.bins, where=where
                )
            else:
                result = getattr(dp, statistic)(
                    dataset, _column(body), epsilon=body.epsilon, where=where
                )
            return json.dumps(result_to_json(result)).encode(), _JSON

        request = {"dataset": dataset, "statistic": statistic, **body.model_dump()}
        reply = await service.release(
            caller, key, f"dp.{statistic}", request, compute, timeout=limits.timeout
        )
        return _send(reply)

    return api


def frame_to_json(frame: Any) -> dict[str, Any]:
    """A group-by's result as JSON: its columns, rows (NaN as null) and attrs."""
    split = json.loads(frame.to_json(orient="split", index=False))
    return {"columns": split["columns"], "rows": split["data"], "attrs": plain_json(frame.attrs)}


def _column(body: StatisticRequest | GroupByRequest) -> str:
    if body.column is None:
        raise ConfigurationError("this statistic needs a column")
    return body.column


def _no(value: object, name: str, statistic: str) -> None:
    if value is not None:
        raise ConfigurationError(f"a {statistic} takes no {name}")


def _send(reply: Reply) -> Response:
    headers = {"Privml-Replayed": "true"} if reply.replayed else {}
    return Response(
        reply.body, status_code=reply.status, media_type=reply.media_type, headers=headers
    )
