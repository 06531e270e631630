"""The run's plan: its DP-SGD event, fixed from N when the door reserves it.

The door calls the plan with the number of rows the request sees. That
number fixes q = batch_size / N and the steps per epoch; σ is the one given,
or the smallest that :func:`~privml.dp.torch._calibrate.calibrate` finds for
the target ε and the remaining budget. Nothing reaches the model or the
caller until the door holds the reservation the plan describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...accounting.events import PrivacyEvent
from ...attacks._canaries import check_canary_count
from ...exceptions import ConfigurationError
from .._training_spec import TrainingSpec
from ._calibrate import calibrate
from ._deps import OPACUS_VERSION

if TYPE_CHECKING:
    from ..._gate import Gate

__all__ = ["Plan"]


@dataclass
class Plan:
    """A run's planned event for ``spec`` on ``dataset``; filled in when the door calls it."""

    gate: Gate
    dataset: str
    spec: TrainingSpec
    delta: float
    n: int = 0
    steps_per_epoch: int = 0
    steps_planned: int = 0
    noise_multiplier: float = math.nan
    binding: str | None = None
    note: str | None = field(default=None)

    def event(self, sigma: float, steps: int, reported: float | None = None) -> PrivacyEvent:
        """The DP-SGD event of ``steps`` steps at σ on this run's q and clip norm."""
        return PrivacyEvent.dp_sgd(
            noise_multiplier=sigma,
            steps=steps,
            batch_size=self.spec.batch_size,
            n=self.n,
            max_grad_norm=self.spec.max_grad_norm,
            library="opacus",
            library_version=OPACUS_VERSION,
            reported_epsilon=reported,
        )

    @property
    def planned(self) -> PrivacyEvent:
        """The event the door reserved: every planned step at the chosen σ."""
        return self.event(self.noise_multiplier, self.steps_planned)

    def __call__(self, n: int) -> tuple[PrivacyEvent, dict[str, Any]]:
        """Fix the plan for ``n`` rows; return its event and what the audit entry adds."""
        spec = self.spec
        if spec.batch_size > n:
            raise ConfigurationError(f"batch_size={spec.batch_size} exceeds the {n} rows available")
        check_canary_count(spec.canaries, n)  # n: the real rows, which alone fix q
        self.n = n
        self.steps_per_epoch = steps = int(1 / (spec.batch_size / n))  # as Opacus's DPDataLoader
        self.steps_planned = planned = spec.epochs * steps
        if spec.target_epsilon is not None:
            cal = calibrate(
                self.gate,
                self.dataset,
                lambda sigma: self.event(sigma, planned),
                delta=self.delta,
                target_epsilon=spec.target_epsilon,
            )
            self.noise_multiplier, self.binding, self.note = (
                cal.noise_multiplier,
                cal.binding,
                cal.note,
            )
        else:
            assert spec.noise_multiplier is not None  # the spec holds exactly one of them
            self.noise_multiplier = float(spec.noise_multiplier)
        return self.planned, {"steps_per_epoch": steps, "binding": self.binding}
