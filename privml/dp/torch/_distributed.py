"""Data-parallel DP-SGD over ``torch.distributed``: one reservation, one noisy sum per batch.

A run with ``distributed=True`` spans every process of the initialised default
process group; privml talks over a group of its own made from it (same backend,
same timeout), so a collective of the caller's can never be matched with one of
the run's. Process (rank) 0 authorises and reserves the run; every other rank
authorises its own read on its own session, receives rank 0's plan (N, q, σ,
steps), checks it against its own spec, and joins the reservation
(:meth:`privml._gate.Gate.join`: same rows, nothing charged, the read audited).

Why it is the same mechanism as one process (add/remove one record):

* **Sampling.** Rank ``r`` owns the contiguous block of rows
  ``[⌊rN/W⌋, ⌊(r+1)N/W⌋)`` and keeps only those in its sealed table. For each
  logical batch, rank 0 flips one coin per row for all N rows
  (:func:`~._loader.poisson_sample`, keyed by the OS CSPRNG, rate q) and scatters to
  each rank the coins of its block only. The union of the ranks' shares is
  exactly that Poisson sample of all N rows at rate q; no row is in two shares.
* **Clipping.** Each rank clips each of its samples' gradients to C and sums
  them (Opacus, as in one process): the ranks' sums add up to the sum over the
  whole logical batch of clipped gradients, whose sensitivity to one record is
  C, as in one process.
* **Noise.** Rank 0 alone draws the step's Gaussian noise, standard deviation
  σ·C per coordinate, from its own :class:`~._noise.NoiseSource`, and adds it to
  its own clipped sum; one ``all_reduce`` then adds up the ranks' sums, so every
  rank receives the same bytes: Σ clipped + noise, drawn once. Addition
  commutes, so this is the one-process release (clipped sum, then noise) and
  each step is exactly one Poisson-sampled Gaussian mechanism; the run is
  ``steps`` of them, the ``dp_sgd`` event reserved. Noise drawn on every rank
  would be W times the variance charged for (more privacy, less accuracy);
  the ranks other than 0 never draw any. What crosses between ranks within a
  step (partial sums of clipped gradients, in transit) is inside the run, as a
  process's own memory is: the guarantee is for what leaves it, the noisy sums
  and the model.
* **Steps.** Every rank runs the step guard on its share: one draw, one
  backward, one step per logical batch, no step past the reservation. Rank 0
  draws every batch's coins and releases every noisy sum, so its own counts
  bound what left the data; it settles on them (batches drawn, never fewer
  than the steps released).

When a rank dies, the others' next collective fails (at once where the
connection drops, else after the group's timeout) and their blocks end with
that error; rank 0 settles on its counts. A rank that leaves its block with an
error takes the run's group down, so the others fail at their next collective
rather than wait. If rank 0 dies, its reservation stays ``reserved``: the whole
planned cost keeps counting against the budget (conservative), as for any
process that dies holding a reservation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ...exceptions import ConfigurationError
from .._training_spec import TrainingSpec
from ._loader import poisson_sample

__all__ = ["Ranks", "Release", "Sampler", "digest", "fingerprint"]


def _timeout() -> Any:
    """The default group's timeout (None: the backend's default)."""
    try:
        backend = dist.group.WORLD._get_backend(torch.device("cpu"))  # type: ignore[union-attr]
        return backend.options._timeout
    except (AttributeError, RuntimeError):
        return None


@dataclass
class Ranks:
    """The processes of one run: this one's rank, their number, and the run's own group."""

    rank: int
    world: int
    group: Any
    device: torch.device
    open: bool = True

    @classmethod
    def join_group(cls, spec: TrainingSpec) -> Ranks:
        """The run's group over every process of the default one (a collective call)."""
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigurationError(
                "distributed=True needs an initialised torch.distributed process group: call "
                "torch.distributed.init_process_group(...) in every process first (or drop "
                "distributed=True for a one-process run)"
            )
        if spec.canaries or spec.holdout:
            raise ConfigurationError(
                "canaries= and holdout= are not available with distributed=True; run them "
                "in one process"
            )
        backend = dist.get_backend()
        group = dist.new_group(backend=backend, timeout=_timeout())
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if backend == "nccl"
            else torch.device("cpu")
        )
        return cls(dist.get_rank(), dist.get_world_size(), group, device)

    def block(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """The rows ``[start, stop)`` of ``n`` that ``rank`` (this one by default) owns."""
        r = self.rank if rank is None else rank
        return n * r // self.world, n * (r + 1) // self.world

    def agree(self, error: BaseException | None, payload: Any = None) -> list[Any]:
        """Every rank's ``payload``; raise on every rank if any rank brought an error."""
        sent = (None if error is None else f"{type(error).__name__}: {error}", payload)
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, sent, group=self.group)
        if error is not None:
            raise error
        for rank, (message, _) in enumerate(gathered):
            if message is not None:
                raise ConfigurationError(
                    f"rank {rank} of the data-parallel run refused to start ({message}); "
                    "nothing was reserved or read on this rank"
                )
        return [p for _, p in gathered]

    def share(self, payload: Any) -> Any:
        """Rank 0's ``payload`` on every rank (rank 0 passes it, the others anything)."""
        box = [payload]
        dist.broadcast_object_list(box, src=0, group=self.group, device=self.device)
        return box[0]

    def close(self) -> None:
        """Take the run's group down (peers still in a collective with it then fail)."""
        if self.open:
            self.open = False
            dist.destroy_process_group(self.group)
            self.group = None  # the last reference: its connections close with it


def fingerprint(spec: TrainingSpec, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What every rank's spec must share with rank 0's, and its module's initial weights."""
    return {
        "features": list(spec.features),
        "target": spec.target,
        "batch_size": spec.batch_size,
        "epochs": spec.epochs,
        "max_grad_norm": spec.max_grad_norm,
        "target_epsilon": spec.target_epsilon,
        "noise_multiplier": spec.noise_multiplier,
        "grad_sample_mode": spec.grad_sample_mode,
        "loss_reduction": getattr(spec.criterion, "reduction", "mean"),
        "optimizer": type(optimizer).__name__,
        "optimizer_settings": repr(sorted(optimizer.defaults.items())),
        "parameters": digest(p for g in optimizer.param_groups for p in g["params"]),
    }


def check_same(mine: dict[str, Any], first: dict[str, Any]) -> None:
    """Raise naming the settings where this rank differs from rank 0."""
    differ = [k for k in first if mine.get(k) != first[k]]
    if differ:
        hint = (
            " (build the module identically on every rank, e.g. torch.manual_seed before "
            "creating it, or load rank 0's state_dict)"
            if "parameters" in differ
            else ""
        )
        raise ConfigurationError(
            f"this rank's private_training(...) differs from rank 0's in: {', '.join(differ)}"
            f"{hint}; every rank must pass the same settings and the same initial module"
        )


def digest(params: Any) -> str:
    """SHA-256 of the tensors' values, in order (to check ranks hold the same weights)."""
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_plan(plan: dict[str, Any], spec: TrainingSpec, delta: float, rows: int) -> None:
    """Raise unless rank 0's broadcast plan follows from this rank's own spec and rows."""
    steps = int(1 / (spec.batch_size / plan["n"]))
    problems = [
        what
        for what, ok in (
            ("N", plan["n"] == rows),
            ("δ", plan["delta"] == delta),
            ("steps per epoch", plan["steps_per_epoch"] == steps),
            ("steps planned", plan["steps_planned"] == spec.epochs * steps),
            (
                "σ",
                math.isfinite(plan["noise_multiplier"])
                and plan["noise_multiplier"] > 0
                and spec.noise_multiplier in (None, plan["noise_multiplier"]),
            ),
        )
        if not ok
    ]
    if problems:
        raise ConfigurationError(
            f"rank 0's plan disagrees with this rank's settings or rows ({', '.join(problems)}); "
            "every rank must open the same vault with the same private_training(...) settings"
        )


@dataclass
class Sampler:
    """This rank's share of each logical Poisson batch: local indices into its own block."""

    ranks: Ranks
    n: int
    sample_rate: float
    _sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sizes = [
            b - a for a, b in (self.ranks.block(self.n, r) for r in range(self.ranks.world))
        ]

    def __call__(self) -> np.ndarray:
        ranks, width = self.ranks, max(self._sizes)
        out = torch.zeros(width, dtype=torch.uint8, device=ranks.device)
        chunks: list[torch.Tensor] | None = None
        if ranks.rank == 0:  # one coin per row for all N rows, each rank sent its block's
            coins = np.zeros(self.n, dtype=np.uint8)
            coins[poisson_sample(self.n, self.sample_rate)] = 1
            chunks = []
            for r, size in enumerate(self._sizes):
                start, stop = ranks.block(self.n, r)
                padded = np.zeros(width, dtype=np.uint8)
                padded[:size] = coins[start:stop]
                chunks.append(torch.from_numpy(padded).to(ranks.device))
        dist.scatter(out, chunks, src=0, group=ranks.group)
        mine = out[: self._sizes[ranks.rank]].cpu().numpy()
        return np.flatnonzero(mine)


@dataclass
class Release:
    """One all-reduce per step: every rank's clipped sum, plus rank 0's noise, summed on all."""

    ranks: Ranks
    noising: bool = False

    def __call__(self, params: Sequence[torch.Tensor], add_noise: Callable[[], None]) -> None:
        """Replace each ``p.grad`` by the noisy sum over ranks (``add_noise``: rank 0 only)."""
        if self.ranks.rank == 0:  # rank 0's clipped sum plus the step's one noise draw
            self.noising = True
            try:
                add_noise()
            finally:
                self.noising = False
        else:  # the others' clipped sums, unnoised: they reach no one but the sum
            for p in params:
                p.grad = p.summed_grad.view_as(p)  # type: ignore[attr-defined]
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # type: ignore[union-attr]
        dist.all_reduce(flat, group=self.ranks.group)  # the same bytes on every rank
        for p, part in zip(params, _split(flat, grads), strict=True):  # type: ignore[arg-type]
            p.grad = part


def _split(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, start = [], 0
    for t in like:
        out.append(flat[start : start + t.numel()].view_as(t).clone())
        start += t.numel()
    return out
