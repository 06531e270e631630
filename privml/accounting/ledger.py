"""The privacy-budget ledger: every DP release is charged here, atomically, before it happens.

A charge adds the requested event to everything the dataset has already
spent (committed and reserved events) and, if the privacy filter
(:mod:`privml.accounting.filter`, proven for fully adaptive composition) still
admits it within the budget and every allocation it counts against, records the event and its audit
entry in one transaction before returning. Otherwise it raises
:class:`~privml.exceptions.BudgetExceededError`, records the refusal in the
audit log and charges nothing; a refusal changes no budget, so later smaller
requests still succeed. The check reads what was spent only after the
transaction holds the vault's writer lock (:func:`privml.storage.engine.transaction`:
``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL, at READ COMMITTED, a row lock on
``vault_info`` and then on the dataset's row), so it sees every charge committed
before it, and concurrent processes can never both spend the same remainder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from ..audit import AuditLog
from ..exceptions import BudgetExceededError, ConfigurationError, NotFoundError, RunEndedError
from ..storage.engine import read
from . import _charging, _report, _settle
from ._charging import retry_locked
from ._check import Admission, check, refusal
from ._report import FixedSequenceCache
from ._store import DatasetRow, find_request, lock_dataset
from .events import PrivacyEvent
from .records import Allocation, BudgetStatus, Charge, WhatIf

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Ledger", "Reservation"]


class Reservation:
    """Budget held for a release whose final cost is known only afterwards (DP-SGD).

    Make one with :meth:`~privml.accounting.Ledger.reserve`. It counts against the budget as
    reserved until :meth:`settle` commits the actual event (which may only be
    lower) or :meth:`release` returns it unused.

    Examples
    --------
    >>> from privml.accounting import PrivacyEvent
    >>> vault = getfixture("demo_vault")
    >>> plan = PrivacyEvent.dp_sgd(noise_multiplier=8.0, batch_size=1, n=4, steps=20)
    >>> r = vault.ledger.reserve("patients", event=plan, principal="ml", purpose="train")
    >>> charge = r.settle(plan.with_steps(12))
    >>> charge.status, charge.event.params["steps"]
    ('committed', 12)
    """

    def __init__(self, ledger: Ledger, charge: Charge) -> None:
        self._ledger = ledger
        self.charge = charge

    @property
    def request_id(self) -> str:
        """The request id the reservation is held under (settle and release name it)."""
        return self.charge.request_id

    @property
    def planned(self) -> PrivacyEvent:
        """The reserved (planned) event."""
        return self.charge.event

    def settle(self, event: PrivacyEvent, /) -> Charge:
        """Commit the actual event, which must not cost more than the planned one."""
        return self._ledger.settle(self.request_id, event=event)

    def release(self) -> Charge:
        """Return the reservation unused (nothing was released from the data)."""
        return self._ledger.release(self.request_id)

    def __repr__(self) -> str:
        return f"<privml.Reservation {self.request_id} {self.planned.describe()}>"


class Ledger:
    """Every DP release of a vault, charged before it happens. Reach it as ``vault.ledger``.

    Examples
    --------
    >>> from privml.accounting import PrivacyEvent
    >>> vault = getfixture("demo_vault")  # dataset "patients", budget ε=1, δ=1e-6
    >>> c = vault.ledger.charge(
    ...     "patients", event=PrivacyEvent.laplace(epsilon=0.5), principal="ana", purpose="stats"
    ... )
    >>> round(c.epsilon_after, 6), c.accounting.method
    (0.5, 'basic')
    >>> vault.ledger.charge(
    ...     "patients", event=PrivacyEvent.laplace(epsilon=0.7), principal="ana", purpose="stats"
    ... )
    Traceback (most recent call last):
    ...
    privml.exceptions.BudgetExceededError: privacy budget exceeded for dataset 'patients': \
spent ε=0.5, requested laplace ε=0.7 (ε=0.7 on its own, +0.7 composed) would bring it to \
ε=1.2, over the budget ε=1 at δ=1e-06; remaining ε=0.5. ...
    >>> vault.ledger.events("patients")[["principal", "kind", "status"]]
      principal     kind     status
    0       ana  laplace  committed
    """

    def __init__(self, engine: sa.Engine, audit: AuditLog) -> None:
        self._open_engine: sa.Engine | None = engine
        self._audit = audit
        self._fixed = FixedSequenceCache()

    @property
    def _engine(self) -> sa.Engine:
        if self._open_engine is None:
            raise ConfigurationError("the vault is closed; open it again with Vault.open()")
        return self._open_engine

    def close(self) -> None:
        """Refuse every later call (the vault calls this when it closes)."""
        self._open_engine = None

    # -- charging ---------------------------------------------------------------------
    def charge(
        self,
        dataset: str,
        *,
        event: PrivacyEvent,
        principal: str,
        purpose: str,
        request_id: str | None = None,
        version: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Charge:
        """Check ``event`` against the budget and commit it, with its audit entry, atomically.

        Parameters
        ----------
        dataset : str
            The dataset whose budget pays.
        event : PrivacyEvent
            What the release costs.
        principal, purpose : str
            Who releases, and why (recorded; checked against any allocation).
        request_id : str, optional
            A unique id for this release; retrying with the same id never charges
            twice (the first charge is returned, with ``replayed=True``).
        version : int, optional
            The dataset version the release reads (the latest by default).
        context : mapping, optional
            More JSON-serializable facts for the audit entry (e.g. the policy
            decision behind the release). No personal data.

        Raises
        ------
        BudgetExceededError
            The charge would exceed the dataset's budget or an allocation.
            It states spent, requested and remaining; nothing was charged.
        ConfigurationError
            Bad arguments, a reused request id, or an event that is not pure
            ε-DP on a dataset with a pure-DP budget (δ = 0).
        """
        request = _charging.make_request(
            dataset, event, principal, purpose, request_id, version, "committed", context
        )
        return _charging.submit(self._engine, self._audit, request)

    def reserve(
        self,
        dataset: str,
        *,
        event: PrivacyEvent,
        principal: str,
        purpose: str,
        request_id: str | None = None,
        version: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Like :meth:`charge`, but held as a reservation to settle later.

        See :meth:`~privml.Reservation.settle`.
        """
        request = _charging.make_request(
            dataset, event, principal, purpose, request_id, version, "reserved", context
        )
        charge = _charging.submit(self._engine, self._audit, request)
        return Reservation(self, charge)

    # -- reservations -----------------------------------------------------------------
    def settle(self, request_id: str, *, event: PrivacyEvent) -> Charge:
        """Commit a reservation at its actual cost ``event`` (no more than reserved)."""
        return retry_locked(lambda: _settle.settle(self._engine, self._audit, request_id, event))

    def release(self, request_id: str) -> Charge:
        """Return a reservation unused; its budget becomes available again."""
        return retry_locked(lambda: _settle.release(self._engine, self._audit, request_id))

    def reservation(self, request_id: str) -> Reservation:
        """The open reservation ``request_id`` (taken by another process), to settle or release.

        Raises
        ------
        NotFoundError
            No ledger row has this request id.
        RunEndedError
            The reservation was already settled or released.
        ConfigurationError
            The row is a charge.
        """
        with read(self._engine) as conn:
            row = find_request(conn, request_id)
            if row is None:
                raise NotFoundError(f"no reservation with request id {request_id!r}")
            ds = lock_dataset(conn, row.dataset, lock=False)
            charge = _charging.charge_from_row(row, ds)
        if row.planned is None:
            raise ConfigurationError(f"request {request_id!r} is a charge, not a reservation")
        if row.status != "reserved":
            raise RunEndedError(
                f"reservation {request_id!r} is already {row.status}: its run has ended and "
                "cannot be continued; start a new run"
            )
        return Reservation(self, charge)

    # -- sub-budgets ------------------------------------------------------------------
    def allocate(
        self,
        dataset: str,
        *,
        principal: str | None,
        purpose: str | None,
        epsilon: float,
        actor: str,
    ) -> Allocation:
        """Cap one principal's or one purpose's share of ``dataset``'s budget at ``epsilon``.

        Both the share and the dataset's total are enforced on every charge. A
        purpose's allocation binds the purpose and every purpose below it (as a
        grant does): a charge for ``research/onc`` counts against the
        allocations of ``research/onc`` and of each of its ancestors. A new
        allocation for the same principal (purpose) replaces the old one.
        """
        return _charging.allocate(
            self._engine,
            self._audit,
            dataset,
            principal=principal,
            purpose=purpose,
            epsilon=epsilon,
            actor=actor,
        )

    # -- auditing ---------------------------------------------------------------------
    def what_if(
        self,
        dataset: str,
        event: PrivacyEvent,
        *,
        principal: str = "what-if",
        purpose: str = "what-if",
    ) -> WhatIf:
        """What charging ``event`` would do now, without charging (nothing is written).

        ``allowed`` is exactly what :meth:`charge` would decide now; the figures
        are the privacy filter's (the admission figures, see
        :mod:`privml.accounting.filter`).

        Examples
        --------
        >>> from privml.accounting import PrivacyEvent
        >>> vault = getfixture("demo_vault")
        >>> w = vault.ledger.what_if("patients", PrivacyEvent.laplace(epsilon=0.25))
        >>> w.allowed, round(w.epsilon_after, 4), round(w.remaining_after, 4)
        (True, 0.25, 0.75)
        """
        ds, decision = self._decide(dataset, event, principal=principal, purpose=purpose)
        refused, total = decision.refused, decision.total
        return WhatIf(
            allowed=refused is None,
            epsilon_spent=total.before.epsilon,
            epsilon_after=total.after.epsilon,
            epsilon_total=ds.budget.epsilon,
            remaining_after=ds.budget.epsilon - total.after.epsilon,
            requested=decision.requested,
            refused_by=None if refused is None else (refused.scope or "dataset"),
            accounting=total.after,
        )

    def refusal(
        self, dataset: str, event: PrivacyEvent, *, principal: str, purpose: str
    ) -> BudgetExceededError | None:
        """The error :meth:`charge` would raise now (None if it would charge); writes nothing."""
        ds, decision = self._decide(dataset, event, principal=principal, purpose=purpose)
        refused = decision.refused
        return None if refused is None else refusal(ds, decision, refused)

    def _decide(
        self, dataset: str, event: PrivacyEvent, *, principal: str, purpose: str
    ) -> tuple[DatasetRow, Admission]:
        if not isinstance(event, PrivacyEvent):
            raise ConfigurationError("event must be a privml.accounting.PrivacyEvent")
        with read(self._engine) as conn:
            ds = lock_dataset(conn, dataset, lock=False)
            return ds, check(conn, ds, event, principal=principal, purpose=purpose)

    def status(self, dataset: str) -> BudgetStatus:
        """The dataset's budget: spent (the privacy filter's figure), total, remaining, by whom.

        Beside it, ``accounting.fixed_sequence_epsilon`` is the PLD figure of
        the same events, valid only had they been fixed in advance.
        """
        return _report.status(self._engine, self._fixed, dataset)

    def events(self, dataset: str) -> pd.DataFrame:
        """Every ledger row of ``dataset`` (all statuses), oldest first, as a DataFrame."""
        return _report.events_frame(self._engine, dataset)

    def plot(self, dataset: str, *, ax: Axes | None = None) -> Axes:
        """Plot cumulative ε over time (the filter's figure and the naive sum) and the budget."""
        return _report.plot(self._engine, dataset, ax=ax)
