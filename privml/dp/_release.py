"""One DP release through the door: authorize, charge, then read.

Every DP statistic and diffprivlib model reads through :func:`release`, so each
sees exactly the rows the deciding grants' row filters admit (see
:class:`privml._gate.Authorization`) and nothing before its event is charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._gate import Gate, Released, Where
    from ..accounting.events import PrivacyEvent

__all__ = ["release"]


def release(
    gate: Gate,
    dataset: str,
    columns: Sequence[str],
    *,
    needed: str,
    event: PrivacyEvent,
    action: str,
    where: Where | None = None,
) -> Released:
    """Authorize ``columns`` at ``needed`` on the latest version, charge ``event``, read."""
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
    return gate.release(auth, event=event, action=action, version=version)
