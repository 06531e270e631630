"""The network every site and the server build alike: a small MLP, seeded the same everywhere."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSpec"]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """An MLP all parties build the same way: ``inputs → hidden… → outputs`` with ReLUs.

    The server builds it with ``seed`` for the first global model; each site builds it
    each round and loads the global weights into it. Only its public shape travels.

    Examples
    --------
    >>> spec = ModelSpec(inputs=4, hidden=(8,), outputs=2)
    >>> [a.shape for a in spec.initial_weights()]
    [(8, 4), (8,), (2, 8), (2,)]
    """

    inputs: int
    outputs: int
    hidden: tuple[int, ...] = (32,)
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in (
            ("inputs", self.inputs),
            ("outputs", self.outputs),
            *(("hidden", h) for h in self.hidden),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
                raise ConfigurationError(f"{name} must be an integer in [1, 4096], got {value!r}")

    def build(self, weights: Sequence[np.ndarray] | None = None) -> nn.Module:
        """The network, initialized from ``seed`` (the same on every party), or with
        ``weights`` (e.g. a federated run's global model) loaded into it."""
        module = self._build()
        if weights is not None:
            load_into(module, weights)
        return module

    def _build(self) -> nn.Module:
        import torch
        from torch import nn

        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        try:
            widths = [self.inputs, *self.hidden]
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(widths):
                layers += [nn.Linear(a, b), nn.ReLU()]
            layers.append(nn.Linear(widths[-1], self.outputs))
            return nn.Sequential(*layers)
        finally:
            torch.random.set_rng_state(generator_state)

    def initial_weights(self) -> list[np.ndarray]:
        """The first global model's parameters, as float32 arrays in parameter order."""
        return weights_of(self.build())

    def to_config(self) -> dict[str, Any]:
        """The spec as flat values (Flower's run config takes scalars and strings)."""
        return {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "hidden": ",".join(str(h) for h in self.hidden),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelSpec:
        """The spec of :meth:`to_config`."""
        hidden = tuple(int(h) for h in str(config["hidden"]).split(",") if h)
        return cls(
            inputs=int(config["inputs"]),
            outputs=int(config["outputs"]),
            hidden=hidden,
            seed=int(config["seed"]),
        )


def weights_of(module: nn.Module) -> list[np.ndarray]:
    """The module's parameters as float32 arrays, in parameter order."""
    return [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in module.parameters()]


def load_into(module: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Set the module's parameters from ``weights`` (shapes checked) before any data is read."""
    import torch

    params = list(module.parameters())
    if len(params) != len(weights) or any(
        tuple(p.shape) != tuple(w.shape) for p, w in zip(params, weights, strict=False)
    ):
        raise ConfigurationError(
            "the global weights do not fit this site's network; give the site and the "
            "server the same ModelSpec"
        )
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
