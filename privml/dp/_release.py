"""One DP release through the door: authorize, charge, then read.

Every DP statistic and diffprivlib model reads through :func:`release`, so each
sees exactly the rows the deciding grants' row filters admit (see
:class:`privml._gate.Authorization`) and nothing before its event is charged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._gate import Authorization, Gate, Released, Streamed, Where
    from ..accounting.events import PrivacyEvent
    from ..schema import Schema

__all__ = ["release", "release_stream"]


def release(
    gate: Gate,
    dataset: str,
    columns: Sequence[str],
    *,
    needed: str,
    event: PrivacyEvent,
    action: str,
    where: Where | None = None,
    check: Callable[[Schema], None] | None = None,
) -> Released:
    """Authorize ``columns`` at ``needed`` on the latest version, charge ``event``, read.

    ``check`` sees the authorized schema before the charge: a request the schema
    refuses (a column's kind or bounds) is refused only once the policy allowed the
    columns, so a caller without a grant learns nothing of them, and costs nothing.
    """
    auth, version = _authorized(gate, dataset, columns, needed, action, where, check)
    return gate.release(auth, event=event, action=action, version=version)


def release_stream(
    gate: Gate,
    dataset: str,
    columns: Sequence[str],
    *,
    needed: str,
    event: PrivacyEvent,
    action: str,
    where: Where | None = None,
    check: Callable[[Schema], None] | None = None,
) -> Streamed:
    """As :func:`release`, but the values come as chunks in bounded memory
    (:meth:`~privml._gate.Gate.release_stream`)."""
    auth, version = _authorized(gate, dataset, columns, needed, action, where, check)
    return gate.release_stream(auth, event=event, action=action, version=version)


def _authorized(
    gate: Gate,
    dataset: str,
    columns: Sequence[str],
    needed: str,
    action: str,
    where: Where | None,
    check: Callable[[Schema], None] | None,
) -> tuple[Authorization, int]:
    """The request authorized on the latest version and checked against its schema."""
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
    if check is not None:
        with gate.request(action, dataset, where=where, version=version):
            check(auth.schema)
    return auth, version
