"""The source of DP-SGD's Gaussian noise: torch generators seeded from the OS, one per device.

Opacus draws noise from the generator it is given, or from torch's global
generator, which any caller can seed with ``torch.manual_seed`` and so replay
(and subtract) the noise. A run's generators are seeded from ``os.urandom``
(through :func:`privml.dp._random.seed_bits`) when the run starts, so the caller's seed has no
effect on them. The generators themselves are torch's (Mersenne Twister on the
CPU, Philox on CUDA): unpredictable to a caller who does not read the
process's memory, not a cryptographic generator. Opacus's ``secure_mode``
(four draws per coordinate, against floating-point attacks) is not used: it
costs about four times the noise generation per step.
"""

from __future__ import annotations

import torch

from .. import _random

__all__ = ["NoiseSource"]


class NoiseSource:
    """Generators for the devices a run's parameters live on, seeded once from the OS.

    ``seed`` exists for tests that compare modes on the same noise; a run never
    passes one.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        """The run's generator on ``device`` (made, and seeded, the first time it is asked for)."""
        key = str(device)
        found = self._generators.get(key)
        if found is None:
            found = torch.Generator(device=device)
            found.manual_seed(self._seed if self._seed is not None else _random.seed_bits(63))
            self._generators[key] = found
        return found
