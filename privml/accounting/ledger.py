"""The privacy-budget ledger (being built)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..audit import AuditLog

__all__ = ["Ledger"]


class Ledger:
    """Every DP release of a vault, charged before its result is returned."""

    def __init__(self, engine: sa.Engine, audit: AuditLog) -> None:
        self._engine = engine
        self._audit = audit

    def status(self, dataset: str) -> Any:
        raise NotImplementedError

    def allocate(
        self, dataset: str, *, principal: str | None, purpose: str | None, epsilon: float, actor: str
    ) -> Any:
        raise NotImplementedError
