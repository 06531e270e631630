"""The run's data loader: Poisson batches drawn one step at a time, keyed by the OS's CSPRNG.

Why it is private: each row joins a batch independently with probability
``q = batch_size / N`` (Poisson sampling, what the ledger's ``dp_sgd`` event
assumes). The coin flips are 64-bit integers of an AES-256-CTR keystream
under a fresh key from ``os.urandom``, or ``os.urandom``'s own for up to 4,096
rows (:func:`privml.dp._random.keystream`), compared with ``⌊q·2⁶⁴⌋``, so each
row's probability is ``q`` rounded down by less than 2⁻⁶⁴ (never more than
charged) and no caller seed (``torch.manual_seed``, ``numpy.random.seed``) can
replay or steer the sampling. A batch is sampled
and its rows copied out of the sealed table (:mod:`._rows`) only when it is
drawn, and only when the step guard allows it: after the previous batch was
stepped and while the reservation has room. The loader holds no rows; a new
``iter()`` ends every earlier iterator, so two iterators cannot interleave.

Each sampled row goes through the run's :class:`~._views.Views` (its
``transform``, K times with ``augmentations=K``) before the batch is handed
out, one row at a time. With ``max_physical_batch_size=P`` a batch's sampled
rows are split, in order, into chunks of at most P, each copied out of the
sealed table and transformed only when the previous chunk was stepped: the
batch is still one Poisson sample at q, drawn once, and charged once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import numpy as np
import torch

from ...exceptions import ConfigurationError
from .. import _random
from ._guard import StepGuard
from ._rows import take
from ._views import Views

__all__ = ["PoissonLoader", "poisson_sample"]


def poisson_sample(n: int, q: float) -> np.ndarray:
    """Indices of a Poisson sample of ``range(n)``: each kept with probability ``q``."""
    threshold = int(q * 2.0**64)  # exact: scaling a double by a power of two; floor(q·2⁶⁴)
    if threshold >= 2**64:
        return np.arange(n)
    coins = np.frombuffer(_random.keystream(8 * n), dtype=np.uint64)
    return np.flatnonzero(coins < np.uint64(threshold))


class PoissonLoader:
    """Poisson-sampled ``(features, target)`` batches of a run, on the model's device.

    ``len(loader)`` is the steps of one epoch, ``steps`` (``int(1 / q)``, as for
    Opacus's ``DPDataLoader``); every ``iter()`` yields that many batches, each drawn
    when asked for. With ``physical=P`` each batch comes as its chunks of at most P
    sampled rows, so an epoch yields ``len(loader)`` batches in at least as many items.
    Batches come on the device of the model's parameters, so
    ``X.to(device)`` returns the batch itself.

    Attributes
    ----------
    sample_rate : float
        q = batch_size / N.
    batches_drawn, rows_drawn : int
        Batches (and rows in them) handed out so far.
    """

    #: Data-parallel runs only: this rank's share of each logical batch (see ._distributed).
    sampler: Callable[[], np.ndarray] | None = None

    def __init__(
        self,
        *,
        token: str,
        n: int,
        sample_rate: float,
        steps: int,
        guard: StepGuard,
        device_of: Callable[[], torch.device],
        views: Views | None = None,
        physical: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self._n = n
        self._steps = steps
        self._token = token
        self._guard = guard
        self._device_of = device_of
        self._epoch = 0
        self._views = views
        self._physical = physical

    def __len__(self) -> int:
        return self._steps

    @property
    def batches_drawn(self) -> int:
        return self._guard.drawn

    @property
    def rows_drawn(self) -> int:
        return self._guard.rows

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        self._epoch += 1
        return self._batches(self._epoch)

    def _batches(self, epoch: int) -> Iterator[list[torch.Tensor]]:
        for _ in range(self._steps):
            yield from self._draw(epoch)

    def _draw(self, epoch: int) -> Iterator[list[torch.Tensor]]:
        """One Poisson batch: its chunks (one without ``max_physical_batch_size``), in order."""
        self._current(epoch)
        self._guard.before_draw()
        # data-parallel runs draw this rank's share of the logical batch (see ._distributed)
        indices = self.sampler() if self.sampler else poisson_sample(self._n, self.sample_rate)
        size = self._physical or max(len(indices), 1)
        parts = [indices[i : i + size] for i in range(0, len(indices), size)] or [indices]
        self._guard.on_draw(len(indices), len(parts))
        for j, part in enumerate(parts):
            if j:
                self._current(epoch)
                self._guard.before_chunk()
            X, y = take(self._token, part)
            if self._views is not None:
                X, y = self._views(X, y)
            device = self._device_of()
            X, y = X.to(device), y.to(device)
            self._guard.on_chunk(X, y)
            yield [X, y]

    def _current(self, epoch: int) -> None:
        if epoch != self._epoch:
            raise ConfigurationError(
                "this iterator of run.data_loader was replaced by a newer iter(run.data_loader); "
                "draw from one iterator at a time (each epoch's loop starts a new one)"
            )

    def _refuse_copy(self, *args: Any) -> NoReturn:
        raise ConfigurationError("a run's data loader cannot be copied or pickled")

    __copy__ = __deepcopy__ = __reduce__ = __reduce_ex__ = _refuse_copy

    def __repr__(self) -> str:
        return f"<privml PoissonLoader q={self.sample_rate:.4g} steps/epoch={self._steps}>"
