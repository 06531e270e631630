"""Read-only routes for a data-protection officer: budgets, ledgers and the audit log's check.

They need a token issued with ``dpo=True``. Nothing here changes the vault:
datasets, policy, keys and tokens stay with the key holder on the server machine.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from ._deps import caller_of
from ._service import Caller, Service

__all__ = ["oversight_routes"]

Dataset = Annotated[str, Path(min_length=1, max_length=256)]


def oversight_routes(service: Service) -> APIRouter:
    """The routes of :class:`~privml.service.RemoteOversight`."""
    api = APIRouter(prefix="/v1/oversight")
    Who = Annotated[Caller, Depends(caller_of(service, dpo=True))]
    vault = service.vault
    limits = service.limits

    def audited(caller: Caller, action: str, dataset: str | None = None) -> None:
        service.record(caller, caller.client, action, "ok", {"dataset": dataset} if dataset else {})

    @api.get("/budgets", name="oversight.budgets")
    async def budgets(caller: Who) -> list[dict[str, Any]]:
        """Every dataset's budget: spent, total, remaining, by principal and purpose."""

        def work() -> list[dict[str, Any]]:
            out = [vault.budget(info.name).to_dict() for info in vault.datasets()]
            audited(caller, "oversight.budgets")
            return out

        return await service.call(work, timeout=limits.timeout, caller=caller)

    @api.get("/datasets/{dataset}/ledger", name="oversight.ledger", response_class=Response)
    async def ledger(caller: Who, dataset: Dataset) -> Response:
        """Every ledger row of the dataset, oldest first (JSON records)."""

        def work() -> str:
            text = vault.ledger.events(dataset).to_json(orient="records", date_format="iso")
            audited(caller, "oversight.ledger", dataset)
            return str(text)

        return Response(
            await service.call(work, timeout=limits.timeout, caller=caller),
            media_type="application/json",
        )

    @api.get("/audit/verify", name="oversight.audit_verify")
    async def verify(caller: Who) -> dict[str, Any]:
        """Verify the whole audit log (hash chain, MACs, signatures, row heads)."""

        def work() -> dict[str, Any]:
            report = vault.audit.verify()
            audited(caller, "oversight.audit_verify")
            return {
                "ok": report.ok,
                "summary": str(report),
                "problems": [[seq, reason] for seq, reason in report.problems],
            }

        return await service.call(work, timeout=limits.timeout, caller=caller)

    return api
