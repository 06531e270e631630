"""The door: everything privml's mechanisms may ask of a session, and nothing more.

``privml.dp``, ``privml.he`` and ``privml.minimization`` never see a
:class:`~privml.Session`'s insides, the storage or the keys: they are handed a
:class:`Gate` (the vault's implementation is :class:`privml.vault._door.Door`)
and work through it. What it offers, in the order a release uses it:

1. :meth:`Gate.authorize` decides a request by the policy, column by column,
   reading no data (a refusal is audited);
2. :meth:`Gate.release` charges a DP event to the ledger, then decrypts the
   authorized values, in that order and in one place, so every value a
   mechanism sees is paid for; :meth:`Gate.reserve` does the same for a run
   whose final cost is settled later (DP-SGD), and :meth:`Gate.load` hands out
   values that carry no budget (a minimized view needs ``pseudonymized``, so the
   values reach only the minimizer);
3. :meth:`Gate.register_model` and :meth:`Gate.add_view` store what a mechanism
   made, owned by the session's principal;
4. :meth:`Gate.record` and :meth:`Gate.request` write the audit log.

The door is the seam the curator server serves over the network: an analyst's
mechanism call becomes the same sequence of door calls inside the key holder's
process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from ._records import DatasetVersion, ModelInfo
    from .accounting._unit import PrivacyUnit
    from .accounting.budget import Budget
    from .accounting.events import PrivacyEvent
    from .accounting.ledger import Reservation
    from .accounting.records import WhatIf
    from .exceptions import BudgetExceededError
    from .policy import ColumnDecision, Predicate
    from .schema import Schema
    from .vault._checkpoints import TrainingCheckpoints

__all__ = [
    "TRAINING_ROWS",
    "Authorization",
    "Gate",
    "Loaded",
    "ModelUse",
    "Released",
    "Reserved",
    "Streamed",
    "Where",
]

#: The registry metadata key recording which rows a model was trained on (see
#: :mod:`privml.vault._model_access`).
TRAINING_ROWS = "training_rows"

#: Row conditions as a caller writes them: ``(column, op, value)`` triples, mappings or
#: :class:`~privml.policy.Predicate` objects.
Where = Sequence["Predicate | Sequence[Any] | Mapping[str, Any]"]


@dataclass(frozen=True)
class Authorization:
    """A request that passed the policy: what may be used, and the deciding grants.

    ``row_columns`` are the columns whose deciding grants' row filters decide
    which rows the request sees: the columns used, the columns of its
    conditions, and for a request that names no column (a row count) every
    column usable at the mode needed. A row is seen only if, for each of them,
    some deciding grant admits it.

    A door hands out values only for the authorizations it decided itself, as
    they were decided: never for one built by hand, copied with changes, edited
    in place, or decided for another session.
    """

    dataset: str
    columns: list[str]
    schema: Schema
    decisions: dict[str, ColumnDecision]
    conditions: list[Predicate]
    grant_ids: list[str]
    policy_hash: str
    row_columns: tuple[str, ...] = ()

    @property
    def rows_digest(self) -> str | None:
        """The row conditions under which the columns were decided (None: every row)."""
        from .policy._digest import row_digest

        return row_digest(self.decisions, self.columns)


@dataclass(frozen=True)
class Loaded:
    """Decrypted values of an authorized request, for privml's own mechanisms."""

    frame: pd.DataFrame
    version: int
    content_hash: str
    rows_withheld: int
    #: The version's row position of each row of ``frame`` (None: every row, in order).
    positions: Any = None


@dataclass(frozen=True)
class Released:
    """Values handed out after their DP event was charged; ``request_id`` names the charge."""

    frame: pd.DataFrame
    version: int
    request_id: str
    #: The version's row position of each row of ``frame`` (None: every row, in order).
    positions: Any = None
    #: Asked for by a mechanism that bounds or counts people (``release(units=True)``): each
    #: row's person as an opaque integer code (rows of one person share it), never the unit
    #: column's values; on a row-level dataset every row is its own code. None: not asked for.
    units: Any = None


@dataclass(frozen=True)
class Streamed:
    """Values handed out chunk by chunk after their DP event was charged.

    ``chunks`` yields pandas frames of the authorized columns (never the privacy
    unit's values), each bounded by the vault's memory setting; drawn to the end,
    they are the released rows (bounded per person), in no promised order. A
    version that fits the setting comes as one chunk. Any chunk may raise
    :class:`~privml.exceptions.IntegrityError` (the file changed): fold the chunks
    into mergeable partial results (``update(chunk)``) and release nothing until
    the iterator is exhausted.
    """

    chunks: Iterator[pd.DataFrame]
    version: int
    request_id: str
    #: False when the version fit the memory setting and was read whole (one chunk).
    streamed: bool
    #: Asked for by a mechanism that bounds or counts people (``release_stream(units=True)``):
    #: the same chunks, each paired with its rows' people as opaque integer codes (a keyed
    #: hash per release, never the unit column's values). All rows of one person are in ONE
    #: chunk, so per-person bounds and distinct-people counts can be made chunk by chunk; on a
    #: row-level dataset every row is its own person (codes unique across the release). Draw
    #: either ``chunks`` or ``coded``: they are one stream. None: not asked for.
    coded: Iterator[tuple[pd.DataFrame, Any]] | None = None


@dataclass(frozen=True)
class Reserved:
    """Values handed out after a reservation was taken; settle or release ``reservation``."""

    values: Loaded
    reservation: Reservation
    request_id: str


@dataclass(frozen=True)
class ModelUse:
    """A model use that passed the policy: the model's provenance and the deciding grants."""

    info: ModelInfo
    authorization: Authorization | None

    @property
    def details(self) -> dict[str, Any]:
        """What the audit entry of the use records: model, version, grants, policy hash."""
        out: dict[str, Any] = {"model": self.info.name, "model_version": self.info.version}
        if self.authorization is not None:
            out["needed"] = "dp_aggregate" if self.info.epsilon is not None else "raw"
            out["grant_ids"] = self.authorization.grant_ids
            out["policy_hash"] = self.authorization.policy_hash
        return out


class Gate(Protocol):
    """What a mechanism may ask of the session it acts for (see the module docstring)."""

    @property
    def principal(self) -> str:
        """Who acts."""
        ...

    @property
    def purpose(self) -> str:
        """For which purpose."""
        ...

    def check_open(self) -> None:
        """Raise :class:`~privml.exceptions.VaultClosedError` once the vault is closed."""
        ...

    def schema(self, dataset: str) -> Schema:
        """The declared schema of ``dataset`` (no data is read)."""
        ...

    def budget(self, dataset: str) -> Budget:
        """The declared total budget of ``dataset``."""
        ...

    def privacy_unit(self, dataset: str) -> PrivacyUnit:
        """What ``dataset``'s budget protects: one row, or one person with at most
        ``max_rows`` rows per release. :meth:`release` hands out values bounded to it;
        a mechanism calibrates its noise (and its event) to ``max_rows`` rows."""
        ...

    def latest_version(self, dataset: str) -> int:
        """The newest version number of ``dataset``."""
        ...

    def authorize(
        self,
        dataset: str,
        *,
        columns: Sequence[str],
        needed: str,
        action: str,
        where: Where | None = None,
        where_needs: str = "raw",
        version: int | None = None,
    ) -> Authorization:
        """Decide the request by the policy; reads no data; a refusal is audited as ``action``."""
        ...

    def release(
        self,
        auth: Authorization,
        *,
        event: PrivacyEvent,
        action: str,
        version: int,
        units: bool = False,
    ) -> Released:
        """Charge ``event`` (with its audit entry), then decrypt the authorized values, at most
        the unit's ``max_rows`` rows per person (a keyed random sample fixed per release);
        ``units=True`` adds each row's person as an opaque code (:attr:`Released.units`)."""
        ...

    def release_stream(
        self,
        auth: Authorization,
        *,
        event: PrivacyEvent,
        action: str,
        version: int,
        units: bool = False,
    ) -> Streamed:
        """As :meth:`release` (charged and audited the same, nothing read before the charge
        commits), but the values come as chunks in memory bounded by the vault's setting;
        ``units=True`` pairs each chunk with its people's codes (:attr:`Streamed.coded`)."""
        ...

    def reserve(
        self,
        auth: Authorization,
        *,
        plan: Callable[[int], tuple[PrivacyEvent, Mapping[str, Any]]],
        action: str,
        version: int,
        context: Mapping[str, Any],
    ) -> Reserved:
        """Reserve the event ``plan(rows)`` makes for the rows the request sees, then hand out
        their values; the plan's own context joins ``context`` in the reservation's audit entry
        (neither may name the door's own fields: columns, grants, policy hash, content hash).
        With a person-level unit the values keep one row per person, so ``rows`` counts people."""
        ...

    def resume(
        self,
        auth: Authorization,
        *,
        request_id: str,
        action: str,
        version: int,
        context: Mapping[str, Any],
    ) -> Reserved:
        """Hand out the values :meth:`reserve` handed out for the open reservation
        ``request_id`` of this principal and purpose (the same rows), under that reservation:
        nothing new is reserved or charged; a settled or released one is refused. The read
        is audited as ``action`` with ``context`` (which may not name the door's fields)."""
        ...

    def training_checkpoints(self) -> TrainingCheckpoints:
        """The DP-SGD checkpoints this session's principal and purpose may write and resume."""

    def join(self, auth: Authorization, *, request_id: str, action: str, version: int) -> Loaded:
        """The rows of the open reservation ``request_id`` (this principal's and purpose's),
        for another process of the same data-parallel run; nothing charged, the read audited."""
        ...

    def load(self, auth: Authorization) -> Loaded:
        """Decrypt values that carry no budget (modes that reveal them to privml only); an
        authorization decided for a DP mode is refused: its values leave only through a charge."""
        ...

    def what_if(self, dataset: str, event: PrivacyEvent) -> WhatIf:
        """Whether ``event`` would be admitted now for this principal and purpose."""
        ...

    def refusal(self, dataset: str, event: PrivacyEvent) -> BudgetExceededError | None:
        """The error a charge of ``event`` would raise now (None: it would be admitted)."""
        ...

    def rows_digest(self, dataset: str, columns: Sequence[str]) -> str | None:
        """The row conditions under which this session reads ``columns`` (None: every row)."""
        ...

    def use_model(self, name: str, version: int | None, *, action: str) -> tuple[Any, ModelUse]:
        """A registered model, if the policy allows this session's use of it (refusal audited)."""
        ...

    def check_may_register(self, name: str, *, minimizer: bool = False) -> None:
        """Refuse (audited) before any work a model name this principal may not register."""
        ...

    def register_model(
        self,
        name: str,
        model: Any,
        *,
        trained_on: tuple[str, int],
        epsilon: float | None,
        delta: float | None,
        notes: str | None,
        extra: dict[str, Any],
        minimizer: bool = False,
    ) -> ModelInfo:
        """Store ``model`` in the registry, owned by this session's principal."""
        ...

    def add_view(
        self,
        name: str,
        frame: pd.DataFrame,
        *,
        schema: Schema,
        source: str,
        summary: dict[str, Any],
    ) -> DatasetVersion:
        """Store a minimized view of ``source`` as dataset ``name`` (its budget is the source's)."""
        ...

    def request(
        self, action: str, dataset: str, *, where: Any = None, version: int | None = None
    ) -> AbstractContextManager[None]:
        """Audit a failure anywhere inside the block (once), as ``action`` on ``dataset``."""
        ...

    def record(
        self,
        action: str,
        outcome: str,
        dataset: str | None,
        version: int | None,
        details: dict[str, Any],
    ) -> None:
        """Append one audit entry for this session's principal and purpose."""
        ...
