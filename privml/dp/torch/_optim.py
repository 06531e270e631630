"""Opacus's DP optimizers with privml's step guard in front of every release.

Why it is sound: a DP-SGD step releases information about the batch only
through the parameter update (clipped sum plus noise). The guard
(:mod:`._guard`) runs first in ``pre_step``, before Opacus clips, draws noise
or the wrapped optimizer updates anything: a step without a batch of its own
and that batch's backward pass, or past the reservation, raises with the
parameters untouched (and the step's gradients cleared). Skipped ("virtual")
steps, which would fold several batches into one release, are refused. With
``max_physical_batch_size`` the guard says whether a step's chunk is its
batch's last: before it, Opacus's skip queue is set so that the step clips and
accumulates only (no noise, no update, no step counted); the last chunk's
step adds the noise once to the whole batch's clipped sum and updates. The
first chunk's step starts the sum from nothing. The
noise comes from the run's :class:`~._noise.NoiseSource`, never from torch's
global generator, so ``torch.manual_seed`` cannot replay it.

With ``canaries=m`` the run's white-box canaries
(:mod:`privml.attacks._dirac`) enter in ``add_noise``: each included one,
Poisson-sampled at the run's q, adds ``C·e_i`` to the clipped sum before the
noise is drawn, and the noisy sum at every canary's coordinate is recorded.
Every mode builds ``p.summed_grad`` before Opacus's ``add_noise`` reads it.
``bk`` releases a batch stepped in one chunk, without canaries or data-parallel
ranks, in one tensor instead (:meth:`BKOptimizer._release_in_one`): the same
clipped sum, noise draw and scaling, with no ``p.summed_grad`` left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

from ...attacks._dirac import DiracCanaries
from ...exceptions import BudgetExceededError, ConfigurationError
from ._bk import BookKeeping
from ._guard import StepGuard
from ._noise import NoiseSource, add_noise, laid_out, noised_in_one

if TYPE_CHECKING:
    from ._distributed import Release

__all__ = ["BKOptimizer", "GhostOptimizer", "HooksOptimizer", "StepGuard"]


class _Guarded:
    """Mixin for Opacus optimizers: the guard, then a mode's own check, then Opacus's step."""

    privml_guard: StepGuard | None = None
    privml_noise: NoiseSource
    generator: torch.Generator | None
    privml_dirac: DiracCanaries | None = None
    privml_views: int = 1
    _privml_noised: torch.Tensor | None = None  # the noised sums of this step, if in one tensor
    _step_skip_queue: list[bool]
    privml_ddp: Release | None = None  # data-parallel runs only (see ._distributed)

    def _before_release(self) -> None:
        """A mode's last check before clipping and noise (nothing by default)."""

    def _release_in_one(self) -> bool:
        """A whole batch's release done at once, where a mode can; ``False``: not done."""
        return False

    def zero_grad(self, set_to_none: bool = False) -> None:
        super().zero_grad(set_to_none)  # type: ignore[misc]
        if self.privml_guard is not None:
            self.privml_guard.zeroed()

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
        index, final = 0, True
        if guard is not None:
            try:
                index, final = guard.admit()
            except (BudgetExceededError, ConfigurationError):
                self.zero_grad(set_to_none=True)
                raise
        if index == 0 and final and self._release_in_one():
            if guard is not None:
                guard.record()
            return True
        params = self.params  # type: ignore[attr-defined]
        if index == 0:  # a batch's sum starts from nothing, whatever an earlier step left
            for p in params:
                p.summed_grad = None
        if params:
            self.generator = self.privml_noise.generator(params[0].device)
        self._before_release()
        # Opacus's skip queue, set here only: a chunk before the batch's last accumulates,
        # the last releases (a skip queued by anything else is dropped).
        self._step_skip_queue = [] if final else [True]
        done = super().pre_step(closure)  # type: ignore[misc]
        if guard is not None:
            if done:
                guard.record()
            else:
                guard.accumulated()
        return done

    def add_noise(self) -> None:
        """Opacus's noise, with the sampled white-box canaries in the sum it is added to."""
        ddp = self.privml_ddp  # data-parallel: sums added up over ranks, noised once on rank 0
        if ddp is not None and not ddp.noising:
            ddp(self.params, self.add_noise)  # type: ignore[attr-defined]
            return
        dirac = self.privml_dirac
        if dirac is None:
            if not self._add_noise_in_one():
                super().add_noise()  # type: ignore[misc]
            return
        params = self.params  # type: ignore[attr-defined]
        dirac.add(params)
        super().add_noise()  # type: ignore[misc]
        dirac.observe(params)  # the released noisy sums, before the 1/batch_size scaling

    def _std(self) -> float:
        """σ·C, the noise's standard deviation (Opacus's adjusted σ where it set one)."""
        multiplier = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier)  # type: ignore[attr-defined]
        std: float = multiplier * self.max_grad_norm  # type: ignore[attr-defined]
        return std

    def _add_noise_in_one(self) -> bool:
        """Opacus's noise and sums (:func:`._noise.noised_in_one`); ``False``: not done here."""
        if getattr(self, "secure_mode", False):
            return False
        params = self.params  # type: ignore[attr-defined]
        if any(getattr(p.summed_grad, "_processed", False) for p in params):
            raise ValueError(  # as Opacus: these sums were noised already
                "the clipped sums of this step were already noised: run a new forward and "
                "backward pass before the next optimizer.step()"
            )
        total = noised_in_one(params, self._std(), self.generator)
        if total is None:
            return False
        for p in params:
            p.summed_grad._processed = True
        self._privml_noised = total
        return True

    def scale_grad(self) -> None:
        """Opacus's scaling for a mean loss, in one operation where the noise was added in one.

        Where the gradients are no longer views of that tensor (a data-parallel release
        replaced them by their all-reduced sum), each is scaled, as Opacus does.
        """
        total, self._privml_noised = self._privml_noised, None
        params = self.params  # type: ignore[attr-defined]
        if total is None or any(p.grad is None or p.grad._base is not total for p in params):
            super().scale_grad()  # type: ignore[misc]
        elif self.loss_reduction == "mean":  # type: ignore[attr-defined]
            total.div_(self.expected_batch_size * self.accumulated_iterations)  # type: ignore[attr-defined]

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """Opacus's step, with the wrapped optimizer let through the run's fence."""
        guard = self.privml_guard
        if guard is None:
            return super().step(closure)  # type: ignore[misc]
        guard.releasing = True
        try:
            return super().step(closure)  # type: ignore[misc]
        finally:
            guard.releasing = False
            guard.note_release()


class HooksOptimizer(_Guarded, DPOptimizer):  # type: ignore[misc]
    """Opacus's ``DPOptimizer`` (per-sample gradients from hooks), guarded.

    With ``privml_views = K > 1`` each sample's K consecutive rows are views of
    it: their per-row gradients are averaged into one per-sample gradient
    before Opacus clips, so each sample is clipped once, to C.
    """

    def _before_release(self) -> None:
        k = self.privml_views
        if k == 1:
            return
        for p in self.params:
            sample = p.grad_sample
            if sample is None:
                continue
            if not isinstance(sample, torch.Tensor) or sample.shape[0] % k:
                self.zero_grad(set_to_none=True)
                raise ConfigurationError(
                    f"with augmentations={k} a forward pass takes the K views of each sampled "
                    "row as handed out by run.data_loader, once; this backward pass had "
                    f"{_rows_of(sample)} rows. The step was refused (parameters unchanged)."
                )
            p.grad_sample = sample.reshape(sample.shape[0] // k, k, *sample.shape[1:]).mean(1)


def _rows_of(sample: Any) -> str:
    if isinstance(sample, torch.Tensor):
        return str(sample.shape[0])
    return "several passes of"


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
    """Book-keeping: builds the clipped sum from what the one backward recorded, then noises.

    A batch in one chunk, with no canaries and no data-parallel ranks, is released in
    one tensor: book-keeping lays the clipped sums of all parameters end to end, the
    noise is one draw added to it, the mean's scaling one division, and each ``p.grad``
    a view of it (:meth:`_release_in_one`). Otherwise Opacus's steps run, with the
    clipped sum written into ``p.grad`` first.
    """

    bookkeeping: BookKeeping | None = None
    # the gradients of the last release: views of one tensor, written again by the next
    _privml_views: tuple[torch.Tensor, ...] = ()

    def _before_release(self) -> None:
        assert self.bookkeeping is not None
        self.bookkeeping.write_clipped_sum(self.max_grad_norm, self.params)

    def _release_in_one(self) -> bool:
        """Clipped sum, noise and scaling of a whole batch in one tensor; ``False``: not here.

        The same values as Opacus's steps (:func:`._noise.noised_in_one` draws the noise
        for the parameters laid end to end in the same order), in a few operations, into
        the tensor the gradients already view where they do (:meth:`_released`).
        """
        if self.privml_dirac is not None or self.privml_ddp is not None:
            return False
        if getattr(self, "secure_mode", False):
            return False
        params = self.params
        if not params:
            return False
        first = params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in params):
            return False
        assert self.bookkeeping is not None
        total = self._released(params)
        if total is None:
            total, _ = self.bookkeeping.clipped_sum(self.max_grad_norm, params)
            total = total.to(first.dtype)
            views = laid_out(params, total)
            for p, view in zip(params, views, strict=True):
                p.grad = view
            self._privml_views = tuple(views)
        else:
            self.bookkeeping.clipped_sum(self.max_grad_norm, params, out=total)
        add_noise(total, self._std(), self.privml_noise.generator(first.device))
        if self.loss_reduction == "mean":
            total.div_(self.expected_batch_size)
        for p in params:
            p.summed_grad = None
        self._step_skip_queue = []
        if self.step_hook:
            self.step_hook(self)
        self._is_last_step_skipped = False
        return True

    def _released(self, params: list[torch.Tensor]) -> torch.Tensor | None:
        """The last release's tensor, if every ``p.grad`` is still the view of it given then."""
        views = self._privml_views
        if len(views) != len(params):
            return None
        if any(p.grad is not v for p, v in zip(params, views, strict=True)):
            return None
        base: torch.Tensor | None = views[0]._base if views else None
        return base

    def accumulate(self) -> None:
        """Opacus's sum over a batch's chunks, without deep-copying the first chunk's gradients.

        Book-keeping writes a new ``p.grad`` tensor every step; the first chunk's becomes
        the sum itself and leaves ``p.grad`` (so no later ``zero_grad`` can zero the sum).
        """
        for p in self.params:
            if p.summed_grad is not None:
                p.summed_grad.add_(p.grad)
            else:
                p.summed_grad, p.grad = p.grad.detach(), None

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Opacus's ``zero_grad``; a release's gradients, views of one tensor, zeroed at once."""
        if self.bookkeeping is not None:
            self.bookkeeping.tape.records.clear()
        if not set_to_none and not self._is_last_step_skipped:
            released = self._released(self.params)
            if released is not None:
                released.zero_()
                if self.privml_guard is not None:
                    self.privml_guard.zeroed()
                return
        super().zero_grad(set_to_none)
