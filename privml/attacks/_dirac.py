"""White-box (gradient-space, Dirac) canaries for the one-run measurement of DP-SGD.

Steinke, Nasr & Jagielski 2023 (arXiv 2305.08846), Section 6: besides the
black-box input canaries of :mod:`privml.attacks._canaries`, a run trained with
``canaries=m`` also draws ``m`` **Dirac canaries**. Each is a gradient that is
zero except on one parameter coordinate ``i``, where it is ``+C``
(``C = max_grad_norm``, the clip norm): ``C·e_i``. The ``m`` coordinates are
distinct and uniform over the coordinates the DP optimizer noises (the
trainable parameters in its groups). Each canary is included on an
independent fair coin.

How they enter training
-----------------------
At every released step, each included Dirac canary is Poisson-sampled with
the run's own ``q = batch_size / N`` (``N``: the real rows), and when sampled
its ``C·e_i`` is added to the clipped per-sample gradient SUM, before the
Gaussian noise of standard deviation ``σ·C`` is drawn (privml's guarded Opacus
optimizers override ``add_noise``; every mode, ``hooks``, ``ghost`` and
``bk``, builds ``p.summed_grad`` there). The Dirac canaries are records: they
perturb training, and the model is trained on them.

Why the charged ε stays valid
-----------------------------
A Dirac canary is one record whose clipped gradient is ``C·e_i``, of norm
exactly ``C``, at every step; it is sampled with probability ``q`` at each
step, independently of everything else, as every real row is. Adding or
removing it changes a step's clipped sum by at most ``C`` (exactly ``C·e_i``
when sampled), so the Poisson-sampled Gaussian mechanism of each step, and
the run's ``dp_sgd(σ, steps, q)`` composed over the steps, bounds its privacy
loss exactly as it bounds a real row's. A record's guarantee depends only on
its own sampling rate, the clip norm, σ and the steps, never on how many other
records there are, so the real rows' guarantee, the plan, the reservation and
the settled event are those of the run without canaries.

What the observer sees (the threat model)
-----------------------------------------
The score of canary ``i`` is the sum, over the run's steps, of the NOISY
clipped sum at coordinate ``i`` (``p.grad`` right after the noise, before the
``1/batch_size`` scaling): what an adversary who sees every released noisy
gradient (equivalently, every intermediate model of plain SGD) observes at
that coordinate. DP-SGD's accounting covers exactly that adversary: the
ledger's ε is a bound on the privacy loss of the whole sequence of noisy
sums, and the model is post-processing of it. An included canary adds about
``steps·q·C`` to its coordinate; an excluded one adds nothing. The attacker
guesses "in" on the top ``k`` scores and "out" on the bottom ``k``, ``k`` fixed
before training as for the input canaries; the count gives the paper's
(ε, δ) lower bound. This adversary is stronger than the black-box one (it
sees the whole trajectory, and its canaries are the worst case a clip norm
allows), so its bound is typically tighter. It is still a lower bound: the
real gradient at a coordinate adds to both kinds of canary, which weakens
the guesses, never the validity.

Secrecy and provenance
----------------------
The coordinates, the coins, the per-step sampling generator and the scores
live only in the :class:`DiracCanaries` object of the run, in memory, keyed
from the OS's CSPRNG; privml drops it after scoring (or when the block ends
any other way) and records only counts and the bound.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..exceptions import ConfigurationError
from ._canaries import CanaryTally, tally_guesses

__all__ = ["WHITE_BOX", "DiracCanaries", "check_dirac_count", "coordinates", "trainable"]

#: The threat model of the white-box measurement.
WHITE_BOX = "white-box: every noisy gradient"


def coordinates(params: Sequence[torch.Tensor]) -> int:
    """The number of coordinates of ``params`` (the ones a DP optimizer noises).

    >>> coordinates([torch.zeros(3, 2), torch.zeros(4)])
    10
    """
    return sum(int(p.numel()) for p in params)


def trainable(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters ``optimizer`` updates, in Opacus's order (what its DP optimizer noises)."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def check_dirac_count(m: int, available: int) -> None:
    """Refuse ``m`` Dirac canaries on a module with fewer than ``m`` trainable coordinates.

    >>> check_dirac_count(3, 2)
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: canaries=3 exceeds the 2 trainable parameter ...
    """
    if m > available:
        raise ConfigurationError(
            f"canaries={m} exceeds the {available} trainable parameter coordinates of the "
            "module (each white-box canary needs a coordinate of its own); use fewer canaries"
        )


class _Slot:
    """The canaries that sit in one parameter: their local coordinates and their indices."""

    def __init__(self, param: int, local: np.ndarray, index: np.ndarray) -> None:
        self.param = param
        self.local = local
        self.index = index
        self.on: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self.on:
            self.on[key] = (
                torch.as_tensor(self.local, dtype=torch.long, device=device),
                torch.as_tensor(self.index, dtype=torch.long, device=device),
            )
        return self.on[key]


class DiracCanaries:
    """``m`` Dirac canaries of a DP-SGD run: coordinates, coins and scores, in memory only.

    Parameters
    ----------
    sizes : sequence of int
        The number of coordinates of each noised parameter, in the optimizer's order.
    m : int
        Canaries, at most ``sum(sizes)``.
    rate : float
        The run's Poisson sampling rate q.
    clip : float
        The clip norm C: each canary's gradient is ``C·e_i``.
    rng : numpy.random.Generator, optional
        For the coordinates, the coins and the per-step sampling; by default one
        keyed from the OS's CSPRNG (DP-SGD passes one keyed as its Poisson coins are).

    Examples
    --------
    >>> d = DiracCanaries([6, 4], 5, rate=1.0, clip=2.0, rng=np.random.default_rng(0))
    >>> d.m, int(d.included.sum()) <= 5
    (5, True)
    """

    def __init__(
        self,
        sizes: Sequence[int],
        m: int,
        *,
        rate: float,
        clip: float,
        rng: np.random.Generator | None = None,
    ) -> None:
        total = int(sum(sizes))
        check_dirac_count(m, total)
        if rng is None:
            rng = np.random.default_rng(secrets.randbits(128))
        self._rng = rng
        self._sizes = tuple(int(s) for s in sizes)
        self.rate = float(rate)
        self.clip = float(clip)
        flat = rng.choice(total, size=m, replace=False)  # distinct, uniform
        self.included = rng.random(m) < 0.5
        self._flat = flat  # canary j sits at coordinate _flat[j] of the flattened parameters
        bounds = np.cumsum((0, *self._sizes))
        owner = np.searchsorted(bounds, flat, side="right") - 1
        self._slots = [
            _Slot(int(j), flat[owner == j] - bounds[j], np.flatnonzero(owner == j))
            for j in np.unique(owner)
        ]
        self._scores: dict[str, torch.Tensor] = {}

    @property
    def m(self) -> int:
        return len(self.included)

    def _check(self, params: Sequence[torch.Tensor]) -> None:
        if tuple(int(p.numel()) for p in params) != self._sizes:
            raise ConfigurationError(
                "the optimizer's trainable parameters changed during the run; "
                "the white-box canaries were drawn over the ones it had at the start"
            )

    def add(self, params: Sequence[Any]) -> None:
        """Add ``C·e_i`` of each included canary sampled (rate q) this step to ``p.summed_grad``."""
        self._check(params)
        sampled = self.included & (self._rng.random(self.m) < self.rate)
        for slot in self._slots:
            hit = sampled[slot.index]
            if not hit.any():
                continue
            p = params[slot.param]
            summed = p.summed_grad
            flat = summed.reshape(-1)
            local = torch.as_tensor(slot.local[hit], dtype=torch.long, device=flat.device)
            flat.index_add_(
                0, local, torch.full((len(local),), self.clip, dtype=flat.dtype, device=flat.device)
            )
            if not summed.is_contiguous():  # reshape copied: keep the sum
                p.summed_grad = flat.view(summed.shape)

    def observe(self, params: Sequence[Any]) -> None:
        """Add the noisy sum ``p.grad`` at every canary's coordinate to its score."""
        for slot in self._slots:
            grad = params[slot.param].grad.reshape(-1)
            local, index = slot.tensors(grad.device)
            key = str(grad.device)
            if key not in self._scores:
                dtype = torch.float32 if grad.device.type == "mps" else torch.float64
                self._scores[key] = torch.zeros(self.m, dtype=dtype, device=grad.device)
            scores = self._scores[key]
            scores.index_add_(0, index, grad.detach()[local].to(scores.dtype))

    def scores(self) -> np.ndarray:
        """Each canary's score: the sum over the steps of the noisy sum at its coordinate."""
        total = np.zeros(self.m)
        for scores in self._scores.values():
            total += scores.detach().cpu().numpy().astype(float)
        return total

    def tally(self, *, epsilon: float, delta: float) -> CanaryTally:
        """Guess on the top and bottom ``k`` scores and count the correct guesses."""
        guesses, correct = tally_guesses(self.scores(), self.included)
        return CanaryTally(
            m=self.m,
            guesses=guesses,
            correct=correct,
            threat_model=WHITE_BOX,
            epsilon_claimed=epsilon,
            delta=delta,
        )
