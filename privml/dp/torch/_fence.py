"""Hooks that hold a run to its guard while the block is open, and come off when it closes.

* On the module: every forward pass with gradients enabled must take the batch
  drawn for the coming step (checked before the module runs), and its outputs
  carry that batch's serial into the backward pass, which the guard checks.
* On every torch optimizer (a global step pre-hook): a step of any optimizer
  over the run's parameters, or of the optimizer the caller passed in, is
  refused before it updates anything, unless it is the run's own release
  (Opacus's optimizer stepping the wrapped one). Updates that bypass
  ``optimizer.step()`` altogether are caught by the guard's parameter versions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from ...exceptions import ConfigurationError
from ._guard import StepGuard

__all__ = ["Fence"]


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class Fence:
    """The hooks of one run: attach with :meth:`attach`, take off with :meth:`remove`."""

    def __init__(self, handles: list[RemovableHandle]) -> None:
        self._handles = handles

    @classmethod
    def attach(
        cls,
        guard: StepGuard,
        module: nn.Module,
        *,
        inner: torch.optim.Optimizer,
        fenced: Iterable[torch.Tensor],
        original: torch.optim.Optimizer,
    ) -> Fence:
        """Fence ``module``'s passes and every optimizer but ``inner`` (during a release)."""
        serials: list[int] = []

        def before_forward(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not torch.is_grad_enabled():
                return
            first = next(iter(_tensors((args, kwargs))), None)
            serials.append(guard.check_input(first))

        def after_forward(_: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if not serials:
                return
            serial = serials.pop()

            def on_backward(grad: torch.Tensor) -> None:
                guard.check_backward(serial)

            for tensor in _tensors(output):
                if tensor.requires_grad:
                    tensor.register_hook(on_backward)  # type: ignore[no-untyped-call]

        ids = {id(p) for p in fenced}

        def before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if optimizer is inner and guard.releasing:
                return
            params = (p for group in optimizer.param_groups for p in group["params"])
            if optimizer is original or any(id(p) in ids for p in params):
                raise ConfigurationError(
                    f"this {type(optimizer).__name__} steps parameters of a private_training "
                    "run outside run.optimizer, without clipping or noise; it was refused "
                    "(parameters unchanged). Inside the block step run.optimizer only; the "
                    "optimizer you passed in works again after the block."
                )

        handles = [
            module.register_forward_pre_hook(before_forward, with_kwargs=True),
            module.register_forward_hook(after_forward, with_kwargs=True),
            register_optimizer_step_pre_hook(before_step),
        ]
        return cls(handles)

    def remove(self) -> None:
        """Take every hook off (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
