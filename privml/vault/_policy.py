"""The vault's access-policy methods: principals, purposes, grants, denies, explanations.

Kept beside :class:`~privml.Vault` (which inherits them) so each file stays one concern;
the rules themselves live in :mod:`privml.policy` and their storage in ``vault.policy``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ._datasets import DatasetInfo
    from ._policy_store import PolicyAdmin
    from ._session import Where

__all__ = ["PolicyMethods"]


class PolicyMethods:
    """Who may see which columns of which dataset, for which purpose, in which mode."""

    policy: PolicyAdmin

    @property
    def engine(self) -> sa.Engine:  # provided by Vault
        raise NotImplementedError

    def dataset(self, name: str) -> DatasetInfo:  # provided by Vault
        raise NotImplementedError

    def add_principal(
        self, name: str, *, roles: Sequence[str] = (), attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Register a principal (a person or a service) with its roles; audited."""
        self.engine  # noqa: B018 - raises if closed
        self.policy.add_principal(name, roles=roles, attributes=attributes)

    def add_purpose(
        self, name: str, *, description: str, lawful_basis: str, parent: str | None = None
    ) -> None:
        """Register a purpose of processing; grants for ``parent`` cover it too. Audited."""
        self.engine  # noqa: B018 - raises if closed
        self.policy.add_purpose(
            name, description=description, lawful_basis=lawful_basis, parent=parent
        )

    def grant(
        self,
        *,
        role: str | None = None,
        principal: str | None = None,
        dataset: str,
        purpose: str,
        mode: str,
        columns: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        row_filter: Where | None = None,
        expires: datetime | str | None = None,
    ) -> str:
        """Allow a role or a principal to use a dataset for a purpose in ``mode``.

        Parameters
        ----------
        role, principal : str
            Exactly one: who the grant is for.
        dataset, purpose : str
            What, and why (the grant also covers the purpose's child purposes).
        mode : str
            ``"raw"``, ``"pseudonymized"``, ``"masked"``, ``"dp_training"`` or
            ``"dp_aggregate"`` (most revealing first).
        columns, categories : list of str, optional
            Select columns by name or by the schema's category tag; all by default.
        row_filter : list of (column, op, value), optional
            Only rows meeting every condition are revealed through this grant.
        expires : datetime or ISO string, optional
            The grant stops matching at this time.

        Returns
        -------
        str
            The grant id (for :meth:`revoke` and in audit entries).
        """
        self.engine  # noqa: B018 - raises if closed
        return self.policy.add_grant(
            effect="allow",
            role=role,
            principal=principal,
            dataset=dataset,
            purpose=purpose,
            mode=mode,
            columns=columns,
            categories=categories,
            row_filter=row_filter,
            expires=expires,
        )

    def deny(
        self,
        *,
        role: str | None = None,
        principal: str | None = None,
        dataset: str,
        purpose: str,
        columns: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        row_filter: Where | None = None,
        expires: datetime | str | None = None,
    ) -> str:
        """Forbid what the selectors match; an explicit deny wins over every grant."""
        self.engine  # noqa: B018 - raises if closed
        return self.policy.add_grant(
            effect="deny",
            role=role,
            principal=principal,
            dataset=dataset,
            purpose=purpose,
            mode="deny",
            columns=columns,
            categories=categories,
            row_filter=row_filter,
            expires=expires,
        )

    def revoke(self, grant_id: str) -> None:
        """Revoke a grant or deny by id; audited."""
        self.engine  # noqa: B018 - raises if closed
        self.policy.revoke(grant_id)

    def explain(self, principal: str, *, purpose: str, dataset: str) -> pd.DataFrame:
        """What ``principal`` acting for ``purpose`` gets from each column, and why.

        Returns a DataFrame with one row per column: its category tag, the
        decided mode, the deciding grant ids and their row filters.

        Examples
        --------
        >>> vault = getfixture("demo_vault")
        >>> vault.add_purpose("studies", description="Studies", lawful_basis="GDPR 9(2)(j)")
        >>> vault.add_principal("ana", roles=["statistician"])
        >>> _ = vault.grant(role="statistician", dataset="patients", purpose="studies",
        ...                 mode="dp_aggregate", categories=["health"])
        >>> vault.explain("ana", purpose="studies", dataset="patients")[["column", "mode"]]
            column          mode
        0  patient          deny
        1      age          deny
        2      sex          deny
        3  glucose  dp_aggregate
        4     note  dp_aggregate
        5     seen          deny
        """
        schema = self.dataset(dataset).schema
        model = self.policy.model()
        tags = {name: f.category for name, f in schema.items()}
        rows = []
        for column, decision in model.decide(principal, purpose, dataset, tags).items():
            rows.append(
                {
                    "column": column,
                    "category": tags[column],
                    "mode": decision.mode,
                    "grants": list(decision.grant_ids),
                    "row_filter": [[p.to_dict() for p in f] for f in decision.row_filters if f],
                }
            )
        return pd.DataFrame(rows, columns=["column", "category", "mode", "grants", "row_filter"])
