"""Checkpoint and resume of a DP-SGD run: the same reservation, the same guard, one settle.

``run.checkpoint()`` stores, sealed in the vault (its key hierarchy, its
storage, authenticated rows: :mod:`privml.vault._checkpoints`), the model's
state, the optimizer's state, the steps taken, the batches drawn, the run's
plan (σ, q, C, N, planned steps, mode) and its reservation's request id. There
is no sampler or noise state to store, by design: the Poisson coins come from
the operating system's CSPRNG (:mod:`._loader`) and the noise from generators
seeded from the operating system in each process, so a resumed run draws fresh
coins and noise exactly as an uninterrupted one would.

``private_training(..., resume=checkpoint_id)`` continues that run. Why the
ledger stays right:

* **One reservation.** The resumed run re-attaches the run's reservation
  (:meth:`privml.accounting.Ledger.reservation`); nothing new is reserved. A
  settled or released run cannot be resumed.
* **No gap in the guard.** Its step guard's limit is the original plan's steps,
  and it starts from the checkpoint's steps taken and from the run's durable
  drawn mark (at least the checkpoint's batches drawn). The run settles once,
  when the resumed block exits, on every batch drawn by every process.
* **Crash safety.** From the first checkpoint on, no batch is drawn before the
  run's durable mark covers it (raised :data:`~privml.vault._checkpoints.LEASE`
  batches at a time), so batches a killed process drew after its checkpoint
  are counted by the run that resumes it. A run never resumed keeps its whole
  reservation (the ledger never releases an unsettled reservation by itself).
* **One live process.** A process holds the run (an OS lock) from its first
  checkpoint, or from its resume, to the end of its block: a second resume
  while it lives is refused.

The resumed call must name the same dataset, features, target, module
architecture (parameter and buffer names, shapes and dtypes), optimizer class
and settings and run settings; the first difference is refused, naming it,
before the checkpoint's payload or any data is read. Runs with ``canaries=`` or
``holdout=`` draw their canaries and held-out rows once per process and cannot
be checkpointed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...exceptions import ConfigurationError
from .._training_spec import TrainingSpec
from ._guard import StepGuard

if TYPE_CHECKING:
    from ..._gate import Gate
    from ...vault._checkpoints import CheckpointRecord, RunHold, TrainingCheckpoints
    from ._plan import Plan

__all__ = [
    "Checkpointer",
    "DurableGuard",
    "check_checkpointable",
    "open_resume",
    "pack",
    "plan_record",
    "spec_record",
    "unpack",
]


class DurableGuard(StepGuard):
    """A step guard that, once asked to, has each draw covered by a durable mark first."""

    durable: Callable[[int], None] | None = None

    def before_draw(self) -> None:
        """As :meth:`StepGuard.before_draw`, then make the coming draw durable (if asked to)."""
        super().before_draw()
        if self.durable is not None:
            self.durable(self.drawn + 1)


def check_checkpointable(spec: TrainingSpec) -> None:
    """Refuse a run whose canaries, held-out rows or ranks are tied to the processes running it."""
    if spec.canaries or spec.holdout:
        raise ConfigurationError(
            "a run with canaries= or holdout= cannot be checkpointed or resumed: its canaries "
            "and held-out rows are drawn once, in the process that starts it; run it without "
            "them to checkpoint"
        )
    if spec.distributed:
        raise ConfigurationError(
            "a data-parallel run (distributed=True) cannot be checkpointed or resumed: its "
            "ranks hold one reservation between them and no rank's state alone continues it; "
            "run it without distributed=True to checkpoint"
        )


def spec_record(dataset: str, spec: TrainingSpec) -> dict[str, Any]:
    """What a resume must match: the run's settings, optimizer and module architecture."""
    return {
        "dataset": dataset,
        "features": list(spec.features),
        "target": spec.target,
        "batch_size": spec.batch_size,
        "epochs": spec.epochs,
        "max_grad_norm": float(spec.max_grad_norm),
        "target_epsilon": spec.target_epsilon,
        "noise_multiplier": spec.noise_multiplier,
        "grad_sample_mode": spec.grad_sample_mode,
        "name": spec.model_name(dataset),
        "fix_module": spec.fix_module,
        "transform": None if spec.transform is None else _callable_name(spec.transform),
        "augmentations": spec.augmentations,
        "max_physical_batch_size": spec.max_physical_batch_size,
        "criterion": None if spec.criterion is None else type(spec.criterion).__qualname__,
        "optimizer": type(spec.optimizer).__qualname__,
        "optimizer_settings": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in sorted(spec.optimizer.defaults.items())
            if isinstance(v, int | float | str | bool | tuple)
        },
        "module": type(spec.module).__qualname__,
        "architecture": [
            [name, list(t.shape), str(t.dtype)] for name, t in spec.module.state_dict().items()
        ],
    }


def _callable_name(fn: Callable[..., Any]) -> str:
    """A transform's module and qualified name (its code is the caller's; no value of it)."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def plan_record(plan: Plan, grad_sample_mode: str) -> dict[str, Any]:
    """The run's plan as the ledger reserved it (no sampler state: the coins are the OS's)."""
    return {
        "noise_multiplier": plan.noise_multiplier,
        "sample_rate": plan.spec.batch_size / plan.n,
        "max_grad_norm": float(plan.spec.max_grad_norm),
        "n": plan.n,
        "steps_per_epoch": plan.steps_per_epoch,
        "steps_planned": plan.steps_planned,
        "grad_sample_mode": grad_sample_mode,
        "binding": plan.binding,
        "note": plan.note,
        "sampler": "poisson, coins from the OS CSPRNG (no state)",
        "event": plan.planned.to_dict(),
    }


def pack(module: nn.Module, optimizer: torch.optim.Optimizer) -> bytes:
    """The module's and the optimizer's state as bytes (``torch.save``)."""
    buffer = io.BytesIO()
    torch.save({"module": module.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    return buffer.getvalue()


def unpack(payload: bytes) -> dict[str, Any]:
    """The state :func:`pack` stored; tensors and plain values only (``weights_only``)."""
    state: dict[str, Any] = torch.load(io.BytesIO(payload), weights_only=True)
    return state


def _difference(stored: dict[str, Any], given: dict[str, Any]) -> str | None:
    for key in sorted(set(stored) | set(given)):
        old, new = stored.get(key), given.get(key)
        if old == new:
            continue
        if key == "architecture":
            names = [a[0] for a in old or []], [a[0] for a in new or []]
            where = next(
                (o for o, n in zip(old or [], new or [], strict=False) if o != n),
                None,
            )
            first = f" (first at {where[0]!r})" if where else ""
            return (
                f"the module's parameters and buffers (names, shapes, dtypes) differ{first}: "
                f"{len(names[0])} stored, {len(names[1])} given"
            )
        return f"{key}: the checkpoint's run has {old!r}, this call gives {new!r}"
    return None


def open_resume(
    gate: Gate, dataset: str, spec: TrainingSpec, checkpoint_id: str
) -> tuple[CheckpointRecord, RunHold, TrainingCheckpoints]:
    """The checkpoint, checked against this call and held by this process; nothing read yet.

    Refuses (before any payload or data is read) a checkpoint of another principal or
    purpose (:class:`~privml.exceptions.AccessDenied`), tampered rows
    (:class:`~privml.exceptions.IntegrityError`), any difference from the call that
    made it, a run already settled, and a run another live process holds.
    """
    check_checkpointable(spec)
    store = gate.training_checkpoints()
    record = store.find(checkpoint_id)
    difference = _difference(record.spec, spec_record(dataset, spec))
    if difference is not None:
        raise ConfigurationError(
            f"checkpoint {checkpoint_id!r} cannot be resumed by this call: {difference}. "
            "Resume with the dataset, features, target, module architecture, optimizer and "
            "settings of the run that made it"
        )
    hold = store.hold(record.request_id)
    try:
        record = store.find(checkpoint_id)  # the mark as the last holder left it
    except BaseException:
        hold.release()
        raise
    return record, hold, store


@dataclass
class Checkpointer:
    """What ``run.checkpoint()`` does for one run: seal its state and counts in the vault."""

    gate: Gate
    dataset: str
    version: int
    request_id: str
    spec: dict[str, Any]
    plan: dict[str, Any]
    guard: DurableGuard
    module: nn.Module
    optimizer: torch.optim.Optimizer
    checkpointable: str | None = None  # why not, when it cannot be
    hold: RunHold | None = None
    store: TrainingCheckpoints | None = None
    mark: int = 0
    ids: list[str] = field(default_factory=list)

    def resumed(self, store: TrainingCheckpoints, hold: RunHold, mark: int) -> None:
        """This process continues a checkpointed run: every draw is durable from the start."""
        self.store, self.hold, self.mark = store, hold, mark
        self.guard.durable = self._cover

    def __call__(self) -> str:
        """Store a checkpoint of the run now; its id (audited)."""
        with self.gate.request("dp.train.checkpoint", self.dataset, version=self.version):
            if self.checkpointable is not None:
                raise ConfigurationError(self.checkpointable)
            guard = self.guard
            guard.alive()
            if not guard.open:
                raise ConfigurationError(
                    "this run has ended: checkpoint inside its private_training(...) block"
                )
            guard.check_params()  # never store a state changed outside the run's steps
            if self.store is None:
                self.store = self.gate.training_checkpoints()
            if self.hold is None:
                self.hold = self.store.hold(self.request_id)
            checkpoint_id = self.store.save(
                request_id=self.request_id,
                dataset=self.dataset,
                version=self.version,
                spec=self.spec,
                plan=self.plan,
                taken=guard.taken,
                drawn=guard.drawn,
                rows=guard.rows,
                payload=pack(self.module, self.optimizer),
            )
            self.mark = max(self.mark, guard.drawn)
            guard.durable = self._cover
            self.ids.append(checkpoint_id)
            return checkpoint_id

    def _cover(self, drawn: int) -> None:
        """Raise the durable mark over batch ``drawn`` before it is drawn (a lease at a time)."""
        if drawn > self.mark:
            assert self.store is not None
            lease = max(min(drawn + self.store.lease - 1, self.guard.limit), drawn)
            self.mark = self.store.raise_mark(self.request_id, lease)

    def end(self) -> None:
        """The block is over: let another process hold the run."""
        if self.hold is not None:
            self.hold.release()
            self.hold = None
