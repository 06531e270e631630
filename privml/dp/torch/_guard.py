"""The step guard: one Poisson batch drawn per step, stepped once, and no step past the reservation.

Why it is sound: a DP-SGD step releases information about the batch only
through the parameter update (clipped sum plus noise), and the ledger charges
each step as one Poisson-sampled Gaussian mechanism on a batch of its own. The
guard makes the code agree with that charge:

* a batch is drawn only when the previous one was stepped (so exactly one new
  batch lies between two steps) and only while the reservation has room;
* with ``max_physical_batch_size`` a batch is handed out in chunks, in order,
  each only after the previous one was stepped: a step after a chunk that is
  not the batch's last only clips and accumulates it (nothing is released),
  and the step after the last chunk releases the batch's whole clipped sum,
  once. A chunk cannot be skipped, replayed or mixed with another batch's,
  and steps and the ledger count logical batches;
* a forward pass with gradients enabled must take the batch drawn for the
  coming step (the tensor the loader handed out, or a view of it), and a
  backward pass may only run through outputs of that batch: gradients of an
  older batch, a reused one or rows from elsewhere cannot reach the step;
* a step needs that backward pass, is admitted at most once per batch, and is
  refused before Opacus clips, draws noise or updates anything;
* the trainable parameters may change only inside the run's own releases: an
  update by another optimizer (refused by the fence), by hand or by
  ``load_state_dict`` is detected by the parameters' version counters, and
  the run then takes no more steps and registers no model;
* nothing else in the module may change at all (buffers, attributes: see
  :mod:`._frozen`): noise covers the parameters only, and all the rest is
  pickled with the registered model. A change stops the run the same way;
* the one other way parameters may change is :meth:`StepGuard.load_public`
  (``run.load_global``): between steps only (no batch drawn and waiting), it
  overwrites every parameter with plain arrays given from outside the run (a
  federated server's aggregate: post-processing of earlier releases), clears
  the gradients (the last batch's per-sample ones included), and takes the new
  parameter versions as the expected ones. The module's other state stays frozen;
* once the vault is closed (``alive`` raises
  :class:`~privml.exceptions.VaultClosedError`) no batch is drawn and no step
  admitted: the ledger and the audit log can no longer record them.

The guard holds counts and the current batch only (never the table).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...accounting.composition import epsilon_alone
from ...accounting.events import PrivacyEvent
from ...exceptions import ConfigurationError, StepLimitExceeded
from ._contents import Contents
from ._frozen import Frozen

__all__ = ["StepGuard"]


@dataclass
class _Drawn:
    """The batch drawn for the coming step, and the chunk of it handed out last."""

    serial: int
    chunks: int = 1
    index: int = -1  # the chunk handed out last (-1: none yet)
    key: int = 0  # that chunk's serial among all chunks of the run
    storages: tuple[int, ...] = ()
    device: torch.device | None = None
    pending: bool = False  # that chunk is handed out and not yet stepped
    backward: bool = False
    spoiled: bool = False

    @property
    def where(self) -> str:
        """The chunk in words: "batch 3" or "chunk 2/4 of batch 3"."""
        if self.chunks == 1:
            return f"batch {self.serial}"
        return f"chunk {self.index + 1}/{self.chunks} of batch {self.serial}"


def _always() -> None:
    """No vault to outlive: nothing to check."""


def _storage(t: torch.Tensor) -> int:
    return int(t.untyped_storage().data_ptr())


class StepGuard:
    """Ties each optimizer step to the one batch drawn for it, and counts both against ``limit``."""

    def __init__(
        self,
        *,
        limit: int,
        dataset: str,
        request_id: str,
        plan: PrivacyEvent,
        delta: float,
        on_refuse: Callable[[int], None] | None = None,
        alive: Callable[[], None] | None = None,
    ) -> None:
        self.limit = limit
        self.dataset = dataset
        self.request_id = request_id
        self.plan = plan
        self.delta = delta
        self.on_refuse = on_refuse
        self.alive = alive if alive is not None else _always
        self.taken = 0
        self.drawn = 0
        self.rows = 0
        self.refused = 0
        self.open = True
        self.releasing = False
        self.tampered: str | None = None
        self.current: _Drawn | None = None
        self._keys = 0
        self._params: list[torch.Tensor] = []
        self._versions: list[int] = []
        self._frozen: Frozen | None = None
        self._contents = Contents([])
        self.state_changed = False

    # -- batches ------------------------------------------------------------------------
    def before_draw(self) -> None:
        """Raise unless one more batch may be drawn now (nothing is sampled before this)."""
        self._check_open()
        if self.current is not None:
            raise ConfigurationError(
                f"{self.current.where} of run.data_loader has not been stepped: each "
                "batch (each of its chunks) must be used by exactly one run.optimizer.step() "
                "before the next is drawn (empty batches included; no skipping, no "
                "accumulating several batches). No new batch was drawn."
            )
        if self.drawn >= self.limit:
            self._past_reservation(self.drawn + 1)

    def on_draw(self, rows: int, chunks: int = 1) -> None:
        """A batch of ``rows`` sampled rows was drawn, to be handed out in ``chunks`` chunks."""
        self.drawn += 1
        self.rows += rows
        self.current = _Drawn(self.drawn, chunks=chunks)

    def before_chunk(self) -> None:
        """Raise unless the current batch's next chunk may be handed out now."""
        self._check_open()
        current = self.current
        if current is None or current.index + 1 >= current.chunks:
            raise ConfigurationError("no batch has a chunk left to hand out")  # loader's own use
        if current.pending:
            raise ConfigurationError(
                f"{current.where} has not been stepped: call run.optimizer.step() after its "
                "backward pass before the next chunk is drawn. No chunk was handed out."
            )

    def on_chunk(self, X: torch.Tensor, y: torch.Tensor) -> None:
        """Note the chunk just handed out as the one the coming step must use."""
        current = self.current
        assert current is not None and not current.pending
        self._keys += 1
        current.index += 1
        current.key = self._keys
        current.storages = (_storage(X), _storage(y))
        current.device = X.device
        current.pending, current.backward, current.spoiled = True, False, False

    def _check_open(self) -> None:
        self.alive()
        if not self.open:
            raise ConfigurationError(
                "this run has ended: its loader draws no more batches; start a new "
                "private_training(...) block"
            )

    def check_input(self, x: object) -> int:
        """The key of the chunk ``x`` is (or views); raise if it is not the current chunk."""
        current = self.current
        if (
            current is None
            or not current.pending
            or not isinstance(x, torch.Tensor)
            or x.device != current.device
            or _storage(x) not in current.storages
        ):
            if current is None:
                when = "no batch is waiting for a step (the last one was stepped)"
            elif not current.pending:
                when = f"{current.where} was stepped and the next chunk not yet drawn"
            else:
                when = f"{current.where} is waiting for its step"
            raise ConfigurationError(
                "a forward pass with gradients enabled must take the batch just drawn from "
                f"run.data_loader (as handed out, or a view of it); {when}. Evaluate other "
                "inputs under torch.no_grad(), and transform batches inside the module "
                "(or with transform=)."
            )
        return current.key

    def check_backward(self, key: int) -> None:
        """Raise unless a backward pass through an output of chunk ``key`` may feed a step."""
        current = self.current
        if current is None or current.key != key or not current.pending:
            if current is not None and current.pending:
                current.spoiled = True  # the pass stopped half-way: gradients incomplete
            raise ConfigurationError(
                "this backward pass runs through the model's output for a batch (or chunk) "
                "that was already stepped; a step uses gradients of the batch drawn for it "
                "only. Compute the loss from a forward pass on the current batch."
            )
        current.backward = True

    # -- steps ----------------------------------------------------------------------------
    def admit(self) -> tuple[int, bool]:
        """Raise unless the coming step has its own chunk, its gradients and room in the plan.

        Returns the chunk's index in its batch and whether it is the batch's last (the
        step releases) or not (the step only clips and accumulates).
        """
        self.alive()
        self.check_params()
        current = self.current
        if current is None or not current.pending:
            after = (
                ""
                if current is None
                else f" ({current.where} was stepped already: draw the next chunk)"
            )
            raise ConfigurationError(
                "every optimizer step needs a fresh batch from run.data_loader (Poisson "
                f"sampling, q = batch_size / N); {self.drawn} batches were drawn and "
                f"{self.taken} steps taken, so this step has no batch of its own{after}. It "
                "was refused (parameters unchanged)."
            )
        if current.spoiled:
            raise ConfigurationError(
                f"a refused backward pass left the gradients of {current.where} "
                "incomplete: call run.optimizer.zero_grad() and run the batch's forward and "
                "backward pass again. The step was refused (parameters unchanged)."
            )
        if not current.backward:
            raise ConfigurationError(
                f"{current.where} has had no backward pass through the model's "
                "output: call run.criterion(run.model(X), y).backward() before "
                "run.optimizer.step(). The step was refused (parameters unchanged)."
            )
        final = current.index == current.chunks - 1
        if final and self.taken >= self.limit:
            self._past_reservation(self.taken + 1)
        return current.index, final

    def accumulated(self) -> None:
        """The admitted step clipped and accumulated a chunk that is not its batch's last."""
        current = self.current
        assert current is not None
        current.pending = current.backward = False
        current.storages = ()

    def zeroed(self) -> None:
        """The gradients were cleared: the current batch needs a new backward pass."""
        if self.current is not None:
            self.current.backward = False
            self.current.spoiled = False

    def record(self) -> None:
        """The admitted step was released: its batch is used up."""
        self.taken += 1
        self.current = None

    def _past_reservation(self, step: int) -> None:
        self.refused += 1
        if self.on_refuse is not None and self.refused == 1:
            self.on_refuse(step)
        raise self._step_limit(step)

    def _epsilon(self, steps: int) -> float:
        return epsilon_alone(self.plan.with_steps(steps), self.delta) if steps > 0 else 0.0

    def _step_limit(self, step: int) -> StepLimitExceeded:
        total, spent = self._epsilon(self.limit), self._epsilon(step - 1)
        return StepLimitExceeded(
            f"step {step} would exceed the {self.limit} DP-SGD steps reserved for this run on "
            f"dataset {self.dataset!r} (reservation {self.request_id}); no batch was drawn "
            "for it, the parameters were not updated and nothing more was charged. The "
            "reservation covers epochs × len(run.data_loader) steps: plan a longer run "
            "(more epochs) in a new private_training(...) block.",
            dataset=self.dataset,
            spent=spent,
            requested=self._epsilon(1),
            after=self._epsilon(step),
            remaining=max(total - spent, 0.0),
            total=total,
            delta=self.delta,
            steps_reserved=self.limit,
            steps_attempted=step,
            request_id=self.request_id,
        )

    # -- parameters -----------------------------------------------------------------------
    def watch(self, params: Iterable[torch.Tensor], frozen: Frozen | None = None) -> None:
        """Record the parameters' versions: from now on only the run's releases may change them.

        ``frozen``: the rest of the module's state, which may not change at all.
        """
        self._params = list(params)
        self._frozen = frozen
        self._contents = Contents(self._params)
        self.note_release()

    def note_release(self) -> None:
        """The run's own update has run: its new parameter versions and values are the expected
        ones (values too: a write through ``.data``, NumPy or the storage moves no version)."""
        self._versions = [p._version for p in self._params]
        self._contents.take()

    def check_params(self) -> None:
        """Raise (and remember) if a parameter, buffer or tensor attribute moved outside a step."""
        if self.tampered is None and self._frozen is not None:
            self._state_changed(self._frozen.moved())
        if self.tampered is None:
            changed = [
                i
                for i, (p, v) in enumerate(zip(self._params, self._versions, strict=True))
                if p._version != v
            ]
            if not changed:
                changed = self._contents.differ()
            if changed:
                self.tampered = (
                    f"{len(changed)} parameter tensor(s) of the module were modified outside "
                    "run.optimizer.step() (another optimizer, an update by hand or through "
                    ".data, NumPy or the storage, load_state_dict): such updates skip clipping "
                    "and noise. Update the "
                    "parameters only through run.optimizer"
                )
        if self.tampered is not None:
            raise ConfigurationError(
                f"{self.tampered}. This run takes no more steps and registers no model."
            )

    def load_public(self, arrays: Sequence[np.ndarray]) -> str:
        """Overwrite the watched parameters with ``arrays`` between steps; their SHA-256.

        Refused (:class:`~privml.exceptions.ConfigurationError`, parameters unchanged)
        while a batch (or chunk) is drawn and not yet stepped, after the run ended or was
        tampered with, and for anything but one finite NumPy array per parameter, in
        parameter order, of its shape. The values are copied (nothing the caller holds
        stays aliased with the module), every parameter's gradient is cleared (per-sample
        gradients included), and the new parameter versions become the expected ones.
        """
        self._check_open()
        self.check_params()
        if self.current is not None:
            raise ConfigurationError(
                f"{self.current.where} of run.data_loader is drawn and not yet stepped: "
                "weights can be loaded only between steps (after run.optimizer.step(), "
                "before the next batch is drawn). Nothing was loaded."
            )
        if not isinstance(arrays, list | tuple) or len(arrays) != len(self._params):
            raise ConfigurationError(
                f"load_global takes a list of {len(self._params)} NumPy arrays, one per "
                "parameter in module.parameters() order. Nothing was loaded."
            )
        digest = hashlib.sha256(b"privml-weights|")
        copies: list[torch.Tensor] = []
        for i, (p, w) in enumerate(zip(self._params, arrays, strict=True)):
            if not isinstance(w, np.ndarray) or w.dtype.kind != "f":
                raise ConfigurationError(
                    f"weight {i} is not a floating-point NumPy array (got "
                    f"{type(w).__name__}): load_global takes plain arrays from outside the "
                    "run (e.g. a federated server's aggregate), never tensors of the run. "
                    "Nothing was loaded."
                )
            if tuple(w.shape) != tuple(p.shape) or not np.isfinite(w).all():
                raise ConfigurationError(
                    f"weight {i} has shape {tuple(w.shape)} or non-finite values where "
                    f"parameter {i} has shape {tuple(p.shape)}: give the same network's "
                    "finite weights. Nothing was loaded."
                )
            values = np.array(w, dtype=np.float32, copy=True, order="C")
            digest.update(values.tobytes())
            copies.append(torch.from_numpy(values))
        with torch.no_grad():
            for p, loaded in zip(self._params, copies, strict=True):
                p.copy_(loaded.to(device=p.device, dtype=p.dtype))
                p.grad = None
                for name in ("grad_sample", "_current_grad_sample", "summed_grad"):
                    if getattr(p, name, None) is not None:
                        setattr(p, name, None)
        self.note_release()
        return digest.hexdigest()

    def check_state(self) -> None:
        """Compare the module's whole non-parameter state with the start (noted in ``tampered``)."""
        if self.tampered is None and self._frozen is not None:
            self._state_changed(self._frozen.changed())

    def _state_changed(self, names: list[str]) -> None:
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            self.state_changed = True
            self.tampered = (
                f"the module's state besides its parameters changed during the run ({shown}): "
                "DP-SGD's noise covers the parameters only, and buffers and attributes are "
                "saved with the model, so a module that writes to them (even under "
                "torch.no_grad()) cannot be trained privately; keep such values out of the module"
            )

    def close(self) -> None:
        """The block is over: no more batches, and no batch waiting."""
        self.open = False
        self.current = None
