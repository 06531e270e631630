"""The ordered list of schema steps this privml knows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from . import v003_service, v004_privacy_unit, v005_training_checkpoints

__all__ = ["BASELINE", "STEPS", "Step", "current"]

#: The oldest version that can be upgraded: 2, every security-relevant row authenticated
#: (privml.storage.sealed). Version 1 predates it and cannot be brought up to it.
BASELINE = 2


@dataclass(frozen=True)
class Step:
    """One schema change: ``upgrade`` takes a vault at ``version - 1`` to ``version``."""

    version: int
    name: str
    upgrade: Callable[[sa.Connection], None]


#: Every step after the baseline, in order: ``STEPS[i].version == BASELINE + 1 + i``.
STEPS: list[Step] = [
    Step(3, "service mode: tokens and replies", v003_service.upgrade),
    Step(4, "each dataset's privacy unit", v004_privacy_unit.upgrade),
    Step(5, "DP-SGD checkpoints", v005_training_checkpoints.upgrade),
]


def current() -> int:
    """The schema version this privml writes: the baseline plus every step it knows."""
    return BASELINE + len(STEPS)
