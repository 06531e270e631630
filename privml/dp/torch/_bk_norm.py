"""Book-keeping rules for normalization layers: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

Each runs torch's own fused layer with its parameters detached (so the
backward pass computes only the input's gradient) and records its input with
the output gradient ``g``; after the backward pass the normalized input ``x̂``
(no affine part) is computed again from the recorded input, one cheap pass.
Sample ``i``'s weight gradient is
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
from ._bk_rule import Part, Rule, Tape, flat, record, register, trainable, views_mean

__all__ = ["ChannelNormRule", "LastDimsNormRule"]

_INSTANCE = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _detached(module: nn.Module, name: str) -> torch.Tensor | None:
    param = getattr(module, name, None)
    return param.detach() if param is not None else None


def _part(
    module: nn.Module, xhat: torch.Tensor, g: torch.Tensor, dims: tuple[int, ...], views: int
) -> Part:
    """Per-sample gradients of the trainable weight and bias, summed over ``dims``, held whole.

    Each ``(b, values)``, its values per sample in the parameter's order, the parameters
    in :func:`._bk_rule.trainable`'s order.
    """
    held = []
    for name, param in module._parameters.items():
        if param is not None and param.requires_grad:
            if name == "weight":
                per = (g * xhat).sum(dims) if dims else g * xhat
            else:  # the bias (a norm layer has no other parameter)
                per = g.sum(dims) if dims else g
            held.append(flat(views_mean(per, views)))
    return Part(held=tuple(held))


@register(nn.LayerNorm, nn.RMSNorm)
class LastDimsNormRule(Rule):
    """``nn.LayerNorm`` and ``nn.RMSNorm``: normalized over the last dimensions."""

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        norm = module
        assert isinstance(norm, nn.LayerNorm | nn.RMSNorm)
        shape = tuple(norm.normalized_shape)
        params = tuple(trainable(norm))

        def forward_norm(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                out: torch.Tensor = type(norm).forward(norm, x)  # type: ignore[arg-type]
                return out
            weight = _detached(norm, "weight")
            if isinstance(norm, nn.LayerNorm):
                bias = _detached(norm, "bias")
                return record(
                    lambda: functional.layer_norm(x, shape, weight, bias, norm.eps),
                    tape,
                    slot,
                    x,
                    params,
                )
            return record(
                lambda: functional.rms_norm(x, shape, weight, norm.eps), tape, slot, x, params
            )

        return forward_norm

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        assert isinstance(module, nn.LayerNorm | nn.RMSNorm)
        shape = tuple(module.normalized_shape)
        x = a if a.dtype == g.dtype else a.to(g.dtype)
        if isinstance(module, nn.LayerNorm):
            xhat = functional.layer_norm(x, shape, None, None, module.eps)
        else:
            xhat = functional.rms_norm(x, shape, None, module.eps)
        dims = tuple(range(1, g.dim() - len(shape)))
        return _part(module, xhat, g, dims, views)


@register(nn.GroupNorm, *_INSTANCE)
class ChannelNormRule(Rule):
    """``nn.GroupNorm`` and ``nn.InstanceNorm1d/2d/3d`` (affine): one weight per channel."""

    def problem(self, module: nn.Module) -> str | None:
        if getattr(module, "track_running_stats", False):
            return "track_running_stats=True, whose running statistics mix the samples"
        return None

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        norm = module
        params = tuple(trainable(norm))

        def forward_norm(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                out: torch.Tensor = type(norm).forward(norm, x)
                return out
            if isinstance(norm, _INSTANCE) and x.dim() == norm._get_no_batch_dim():
                raise ConfigurationError(
                    f"grad_sample_mode='bk' clips per sample, so {type(norm).__name__} needs a "
                    "batch: its input has no batch dimension. Pass (batch, channels, ...)"
                )
            weight, bias = _detached(norm, "weight"), _detached(norm, "bias")
            return record(lambda: _normalized(norm, x, weight, bias), tape, slot, x, params)

        return forward_norm

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        xhat = _normalized(module, a if a.dtype == g.dtype else a.to(g.dtype), None, None)
        dims = tuple(range(2, g.dim()))
        return _part(module, xhat, g, dims, views)


def _normalized(
    norm: nn.Module, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    """A channel norm of ``x`` with the given affine parameters (``None``: none)."""
    if isinstance(norm, nn.GroupNorm):
        out = functional.group_norm(x, norm.num_groups, weight, bias, norm.eps)
    else:
        assert isinstance(norm, _INSTANCE)
        out = functional.instance_norm(x, weight=weight, bias=bias, eps=norm.eps)
    return out
