"""One DP release through the door: authorize, charge, then read.

Every DP statistic and diffprivlib model reads through :func:`release`, so each
sees exactly the rows the deciding grants' row filters admit (see
:class:`privml._gate.Authorization`) and nothing before its event is charged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..accounting.events import PrivacyEvent

if TYPE_CHECKING:
    from .._gate import Authorization, Gate, Released, Streamed, Where
    from ..schema import Schema

__all__ = ["release", "release_stream"]


def release(
    gate: Gate,
    dataset: str,
    columns: Sequence[str],
    *,
    needed: str,
    event: PrivacyEvent | Callable[[Schema], PrivacyEvent],
    action: str,
    where: Where | None = None,
    check: Callable[[Schema], None] | None = None,
    units: bool = False,
) -> Released:
    """Authorize ``columns`` at ``needed`` on the latest version, charge ``event``, read.

    ``check`` sees the authorized schema before the charge: a request the schema
    refuses (a column's kind or bounds) is refused only once the policy allowed the
    columns, so a caller without a grant learns nothing of them, and costs nothing.
    ``event`` may itself be made from the authorized schema (a group-by's cost depends on
    whether its keys are declared), after ``check``. ``units=True`` hands the mechanism
    each row's person as an opaque code (:attr:`privml._gate.Released.units`).
    """
    auth, version, charged = _authorized(
        gate, dataset, columns, needed, action, where, check, event
    )
    return gate.release(auth, event=charged, action=action, version=version, units=units)


def release_stream(
    gate: Gate,
    dataset: str,
    columns: Sequence[str],
    *,
    needed: str,
    event: PrivacyEvent | Callable[[Schema], PrivacyEvent],
    action: str,
    where: Where | None = None,
    check: Callable[[Schema], None] | None = None,
    units: bool = False,
) -> Streamed:
    """As :func:`release`, but the values come as chunks in bounded memory
    (:meth:`~privml._gate.Gate.release_stream`); ``units=True`` pairs each chunk with its
    rows' people as opaque codes, all rows of a person in one chunk
    (:attr:`privml._gate.Streamed.coded`)."""
    auth, version, charged = _authorized(
        gate, dataset, columns, needed, action, where, check, event
    )
    return gate.release_stream(auth, event=charged, action=action, version=version, units=units)


def _authorized(
    gate: Gate,
    dataset: str,
    columns: Sequence[str],
    needed: str,
    action: str,
    where: Where | None,
    check: Callable[[Schema], None] | None,
    event: PrivacyEvent | Callable[[Schema], PrivacyEvent],
) -> tuple[Authorization, int, PrivacyEvent]:
    """The request authorized on the latest version, checked against its schema, and its
    event (made from the authorized schema when ``event`` is a callable)."""
    version = gate.latest_version(dataset)
    auth = gate.authorize(
        dataset,
        columns=columns,
        needed=needed,
        action=action,
        where=where,
        where_needs="dp_aggregate",
        version=version,
    )
    with gate.request(action, dataset, where=where, version=version):
        if check is not None:
            check(auth.schema)
        charged = event if isinstance(event, PrivacyEvent) else event(auth.schema)
    return auth, version, charged
