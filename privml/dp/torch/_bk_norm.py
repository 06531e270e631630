"""Book-keeping rules for normalization layers: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

Each computes the normalized input ``x̂`` (no affine part), then
``x̂ · weight + bias`` with the parameters detached, and records ``x̂`` with
the output gradient ``g``. Sample ``i``'s weight gradient is
``Σ_positions g_i ⊙ x̂_i`` and its bias gradient ``Σ_positions g_i``: small
(one value per parameter), so they are formed whole, their squared norms
summed and the clipped sum is their weighted sum. (BatchNorm mixes the
samples of a batch and is refused before book-keeping sees it.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from ...exceptions import ConfigurationError
from ._bk_rule import Part, Rule, Tape, instantiated, register, tap, views_mean

__all__ = ["ChannelNormRule", "LastDimsNormRule"]

_INSTANCE = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _affine(
    module: nn.Module, xhat: torch.Tensor, shape: tuple[int, ...], tape: Tape, slot: int
) -> torch.Tensor:
    """``x̂ · weight + bias`` (parameters detached, viewed as ``shape``), recorded."""
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    out = xhat
    if weight is not None:
        out = out * weight.detach().view(shape)
    if bias is not None:
        out = out + bias.detach().view(shape)
    return tap(out, tape, slot, xhat, module)


def _grads(
    module: nn.Module, xhat: torch.Tensor, g: torch.Tensor, dims: tuple[int, ...], views: int
) -> dict[str, torch.Tensor]:
    """Per-sample gradients of the trainable weight and bias, summed over ``dims``."""
    grads = {}
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if weight is not None and weight.requires_grad:
        per = (g * xhat.to(g.dtype)).sum(dims) if dims else g * xhat.to(g.dtype)
        grads["weight"] = views_mean(per, views).reshape(-1, *weight.shape)
    if bias is not None and bias.requires_grad:
        per = g.sum(dims) if dims else g
        grads["bias"] = views_mean(per, views).reshape(-1, *bias.shape)
    return grads


@register(nn.LayerNorm, nn.RMSNorm)
class LastDimsNormRule(Rule):
    """``nn.LayerNorm`` and ``nn.RMSNorm``: normalized over the last dimensions."""

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        norm = module
        assert isinstance(norm, nn.LayerNorm | nn.RMSNorm)
        shape = tuple(norm.normalized_shape)

        def forward_norm(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                out: torch.Tensor = type(norm).forward(norm, x)  # type: ignore[arg-type]
                return out
            if isinstance(norm, nn.LayerNorm):
                xhat = functional.layer_norm(x, shape, None, None, norm.eps)
            else:
                xhat = functional.rms_norm(x, shape, None, norm.eps)
            return _affine(norm, xhat, shape, tape, slot)

        return forward_norm

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        assert isinstance(module, nn.LayerNorm | nn.RMSNorm)
        width = len(module.normalized_shape)
        dims = tuple(range(1, g.dim() - width))
        return instantiated(module, _grads(module, a, g, dims, views))


@register(nn.GroupNorm, *_INSTANCE)
class ChannelNormRule(Rule):
    """``nn.GroupNorm`` and ``nn.InstanceNorm1d/2d/3d`` (affine): one weight per channel."""

    def problem(self, module: nn.Module) -> str | None:
        if getattr(module, "track_running_stats", False):
            return "track_running_stats=True, whose running statistics mix the samples"
        return None

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        norm = module

        def forward_norm(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                out: torch.Tensor = type(norm).forward(norm, x)
                return out
            if isinstance(norm, _INSTANCE) and x.dim() == norm._get_no_batch_dim():
                raise ConfigurationError(
                    f"grad_sample_mode='bk' clips per sample, so {type(norm).__name__} needs a "
                    "batch: its input has no batch dimension. Pass (batch, channels, ...)"
                )
            if isinstance(norm, nn.GroupNorm):
                xhat = functional.group_norm(x, norm.num_groups, None, None, norm.eps)
            else:
                assert isinstance(norm, _INSTANCE)
                xhat = functional.instance_norm(x, eps=norm.eps)
            shape = (1, x.shape[1], *([1] * (x.dim() - 2)))
            return _affine(norm, xhat, shape, tape, slot)

        return forward_norm

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        dims = tuple(range(2, g.dim()))
        return instantiated(module, _grads(module, a, g, dims, views))
