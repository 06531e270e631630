"""Opacus's DP optimizers with privml's step guard in front of every release.

Why the guard is sound: a DP-SGD step releases information about the batch
only through the parameter update (clipped sum plus noise). The guard runs
first in ``pre_step``, before Opacus clips, draws noise or the wrapped
optimizer updates anything; a step past the reservation raises
:class:`~privml.BudgetExceededError` with the parameters untouched (and the
step's gradients cleared), so the ledger's reservation bounds the steps that
can ever be released. A step also needs a batch of its own from the run's
Poisson loader (a reused or differently drawn batch is refused the same way),
and skipped ("virtual") steps, which would fold several batches into one
release, are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

from ...exceptions import BudgetExceededError, ConfigurationError
from ._bk import BookKeeping

__all__ = ["BKOptimizer", "GhostOptimizer", "HooksOptimizer", "StepGuard"]


class StepGuard:
    """Counts the steps released and refuses the first one past ``limit``.

    It holds plain numbers only, so each worker of a later distributed run can
    keep its own (they step in lockstep).
    """

    def __init__(
        self,
        *,
        limit: int,
        dataset: str,
        request_id: str,
        drawn: Callable[[], int] | None = None,
        on_refuse: Callable[[int], None] | None = None,
    ) -> None:
        self.limit = limit
        self.drawn = drawn
        self.taken = 0
        self.dataset = dataset
        self.request_id = request_id
        self.on_refuse = on_refuse
        self.refused = 0

    def admit(self) -> None:
        """Raise if one more step would pass the reservation, or has no batch of its own."""
        if self.drawn is not None and self.taken >= self.drawn():
            raise ConfigurationError(
                "every optimizer step needs a fresh batch from run.data_loader (Poisson "
                f"sampling, q = batch_size / N); {self.drawn()} batches were drawn from it and "
                f"{self.taken} steps taken. This step was refused (parameters unchanged): "
                "batches drawn another way, or reused, are not what the ledger charges."
            )
        if self.taken < self.limit:
            return
        self.refused += 1
        if self.on_refuse is not None and self.refused == 1:
            self.on_refuse(self.taken + 1)
        err = BudgetExceededError(
            f"step {self.taken + 1} would exceed the {self.limit} DP-SGD steps reserved for this "
            f"run on dataset {self.dataset!r} (reservation {self.request_id}); the parameters "
            "were not updated and nothing more was charged. The reservation covers epochs × "
            "len(run.data_loader) steps: plan a longer run (more epochs) in a new "
            "private_training(...) block."
        )
        vars(err).update(dataset=self.dataset, steps_reserved=self.limit, steps_taken=self.taken)
        raise err

    def record(self) -> None:
        self.taken += 1


class _Guarded:
    """Mixin for Opacus optimizers: the guard, then a mode's own check, then Opacus's step."""

    privml_guard: StepGuard | None = None

    def _before_release(self) -> None:
        """A mode's last check before clipping and noise (nothing by default)."""

    def signal_skip_step(self, do_skip: bool = True) -> None:
        """Refused: a skipped ("virtual") step folds several Poisson batches into one release."""
        if do_skip:
            raise ConfigurationError(
                "skipping optimizer steps (virtual steps, gradient accumulation over several "
                "batches) is not supported: one release would then cover several Poisson "
                "batches, more than each reserved step allows. Lower batch_size instead."
            )

    def pre_step(self, closure: Callable[[], float] | None = None) -> Any:
        guard = self.privml_guard
        if guard is not None:
            try:
                guard.admit()
            except (BudgetExceededError, ConfigurationError):
                self.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
                raise
        self._before_release()
        done = super().pre_step(closure)  # type: ignore[misc]
        if done and guard is not None:
            guard.record()
        return done


class HooksOptimizer(_Guarded, DPOptimizer):  # type: ignore[misc]
    """Opacus's ``DPOptimizer`` (per-sample gradients from hooks), guarded."""


class GhostOptimizer(_Guarded, DPOptimizerFastGradientClipping):  # type: ignore[misc]
    """Opacus's ghost-clipping optimizer, guarded, and refusing gradients that skipped clipping.

    With ghost clipping, ``p.grad`` holds the clipped sum only if the loss came
    from ``run.criterion`` (whose ``backward`` runs the second, clipped pass). A
    plain ``loss.backward()`` leaves the unclipped gradient there, which Opacus
    would noise and apply without complaint; here it is refused.
    """

    ghost_module: Any = None

    def _before_release(self) -> None:
        module = self.ghost_module
        if module is not None and not module.privml_clipped:
            self.zero_grad(set_to_none=True)
            raise ConfigurationError(
                "with grad_sample_mode='ghost' the loss must come from run.criterion(...): "
                "its backward() runs the clipping pass. A plain criterion's loss.backward() "
                "leaves unclipped gradients, so this step was refused (parameters unchanged)."
            )
        if module is not None:
            module.privml_clipped = False


class BKOptimizer(_Guarded, DPOptimizerFastGradientClipping):  # type: ignore[misc]
    """Book-keeping: builds the clipped sum from what the one backward recorded, then noises."""

    bookkeeping: BookKeeping | None = None

    def _before_release(self) -> None:
        assert self.bookkeeping is not None
        self.bookkeeping.write_clipped_sum(self.max_grad_norm)

    def zero_grad(self, set_to_none: bool = False) -> None:
        if self.bookkeeping is not None:
            self.bookkeeping.tape.records.clear()
        super().zero_grad(set_to_none)
