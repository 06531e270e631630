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

__all__ = ["NoiseSource", "add_noise", "laid_out", "noised_in_one"]


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


def add_noise(total: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    """Add one draw of i.i.d. ``N(0, std²)`` values to ``total``, in place."""
    total.add_(torch.empty_like(total).normal_(0.0, std, generator=generator))


def laid_out(params: list[torch.Tensor], total: torch.Tensor) -> list[torch.Tensor]:
    """Each parameter's values in ``total`` (laid end to end, in order), as a view of its shape."""
    pieces = torch.split(total, [p.numel() for p in params])
    return [piece.view(p.shape) for p, piece in zip(params, pieces, strict=True)]


def noised_in_one(
    params: list[torch.Tensor], std: float, generator: torch.Generator | None
) -> torch.Tensor | None:
    """Set each ``p.grad`` to ``p.summed_grad`` plus ``N(0, std²)`` noise, as views of one tensor.

    The noise for all parameters is one draw of i.i.d. ``N(0, std²)`` values (the
    parameters' sums laid end to end, in order): the distribution Opacus's
    ``add_noise`` draws parameter by parameter, in one operation instead of several
    per parameter. The tensor is returned so the later scaling is one operation too;
    ``None`` (nothing done) when the sums do not share a dtype and device.
    """
    sums = [p.summed_grad for p in params]  # type: ignore[attr-defined]
    if not sums or len({(s.dtype, s.device) for s in sums}) != 1:
        return None
    total = torch.cat([s.reshape(-1) for s in sums])
    add_noise(total, std, generator)
    for p, grad in zip(params, laid_out(params, total), strict=True):
        p.grad = grad
    return total
