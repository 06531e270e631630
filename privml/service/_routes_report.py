"""The route of ``session.privacy_report``: attack a registered model, get its figures.

Not a release: a report charges no budget, because it goes only to a caller whose
policy grants ``raw`` on every column the model uses, on every row (see
:mod:`privml.vault._privacy_report`). So it carries no request id and no answer
is stored: a retry runs the report again, with the same seed, and is audited again.
It refits LiRA's reference models, so it runs under the training deadline.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from ..exceptions import PrivacyAuditFailure
from ..vault._failures import mark_audited
from ._deps import caller_of
from ._reports import report_to_json
from ._schemas import ReportRequest
from ._service import Caller, Service

__all__ = ["report_routes"]

Model = Annotated[str, Path(min_length=1, max_length=256)]


def report_routes(service: Service) -> APIRouter:
    """The route of :meth:`~privml.service.RemoteSession.privacy_report`."""
    api = APIRouter(prefix="/v1/models/{model}")
    Who = Annotated[Caller, Depends(caller_of(service))]
    limits = service.limits

    @api.post("/privacy-report", name="model.privacy_report")
    async def privacy_report(caller: Who, model: Model, body: ReportRequest) -> dict[str, Any]:
        """Attack the model on the rows its training recorded; its figures and verdict.

        Needs ``raw`` on every column the model uses, on every row. A lower bound
        above the model's claimed ε is refused as a ``privacy-audit-failure``
        problem (409) carrying the same figures.
        """

        def work() -> dict[str, Any]:
            try:
                report = service.session(caller).privacy_report(
                    model,
                    version=body.version,
                    attacks=tuple(body.attacks),
                    delta=body.delta,
                    confidence=body.confidence,
                    random_state=body.random_state,
                    references=body.references,
                )
            except PrivacyAuditFailure as err:
                mark_audited(err)  # the vault wrote the report, outcome "exceeded"
                raise
            return report_to_json(report)

        return await service.call(work, timeout=limits.training_timeout, caller=caller)

    return api
