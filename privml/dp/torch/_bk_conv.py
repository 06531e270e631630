"""Book-keeping rule for ``nn.Conv1d`` and ``nn.Conv2d``.

A convolution is a Linear applied at every output position to the unfolded
patch of its input: per group, sample ``i``'s weight gradient is
``G_i A_iᵀ`` with ``A_i`` the ``p × T`` patches (``p`` = input channels of
the group times the kernel size, ``T`` output positions) and ``G_i`` the
``d × T`` output gradients. Its squared norm is ``‖G_i A_iᵀ‖²`` from the
per-sample gradients themselves, whose weighted sum is then the clipped sum
(no second pass over the patches), or ``⟨A_iᵀA_i, G_iᵀG_i⟩`` (the ghost
norm, ``T×T``) where that saves memory, the clipped sum then being the
layer's own weight gradient for the scaled output gradients: the trade-off of
Bu et al. (2023), settled by :func:`._bk_rule.whole`. Padding other than zeros, and
``padding='same'``, pad the input first, so the patches are those the layer
convolved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import nn
from torch.nn import functional

from ._bk_rule import Part, Rule, Tape, register, squares, tap, views_mean, weighted, whole

__all__ = ["ConvRule"]


def _pads_itself(conv: nn.Conv1d | nn.Conv2d) -> bool:
    """Whether the input is padded before the convolution (its recorded input is padded)."""
    return conv.padding_mode != "zeros" or isinstance(conv.padding, str)


def _padded(conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The input padded as the layer pads it, and the zero padding left for the convolution."""
    if not isinstance(conv.padding, str) and conv.padding_mode == "zeros":
        return x, tuple(conv.padding)
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    pads = list(conv._reversed_padding_repeated_twice)
    return functional.pad(x, pads, mode=mode), (0,) * (x.dim() - 2)


def _convolve(
    conv: nn.Conv1d | nn.Conv2d,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, ...],
) -> torch.Tensor:
    fn = functional.conv1d if isinstance(conv, nn.Conv1d) else functional.conv2d
    out: torch.Tensor = fn(x, weight, bias, conv.stride, padding, conv.dilation, conv.groups)
    return out


def _patches(conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``(rows, groups, p, T)``: each output position's input patch, per group.

    Taken as strided views of the (zero-padded) input and copied once: faster than
    ``F.unfold`` (im2col loops over the samples) and the same values in the same order.
    """
    if not _pads_itself(conv):
        sizes = cast("tuple[int, ...]", conv.padding)
        if any(sizes):
            x = functional.pad(x, [side for size in reversed(sizes) for side in (size, size)])
    spatial = x.dim() - 2
    for dim in range(spatial):
        size, dilation = conv.kernel_size[dim], conv.dilation[dim]
        x = x.unfold(2 + dim, dilation * (size - 1) + 1, conv.stride[dim])
        if dilation > 1:
            x = x[..., ::dilation]
    # (rows, C, *positions, *kernel) -> (rows, C, *kernel, *positions)
    order = [0, 1, *range(2 + spatial, 2 + 2 * spatial), *range(2, 2 + spatial)]
    x = x.permute(order)
    rows, channels = x.shape[0], x.shape[1]
    positions = math.prod(x.shape[2 + spatial :])
    return x.reshape(
        rows, conv.groups, channels // conv.groups * math.prod(x.shape[2 : 2 + spatial]), positions
    )


@register(nn.Conv1d, nn.Conv2d)
class ConvRule(Rule):
    """``nn.Conv1d`` / ``nn.Conv2d`` (any stride, padding, dilation, groups, padding mode)."""

    def problem(self, module: nn.Module) -> str | None:
        assert isinstance(module, nn.Conv1d | nn.Conv2d)
        return None if module.weight.requires_grad else "a trainable bias with a frozen weight"

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        conv = module
        assert isinstance(conv, nn.Conv1d | nn.Conv2d)

        def forward_conv(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                out: torch.Tensor = conv._conv_forward(x, conv.weight, conv.bias)
                return out
            padded, padding = _padded(conv, x)
            bias = conv.bias.detach() if conv.bias is not None else None
            out = _convolve(conv, padded, conv.weight.detach(), bias, padding)
            return tap(out, tape, slot, padded, conv)

        return forward_conv

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        assert isinstance(module, nn.Conv1d | nn.Conv2d)
        weight, bias = module.weight, module.bias
        groups, rows = module.groups, g.shape[0]
        b = rows // views
        d = g.shape[1] // groups
        p = weight[0].numel()
        positions = math.prod(g.shape[2:])
        steps = views * positions  # a sample's views as one sequence of K·T positions
        has_bias = bias is not None and bias.requires_grad
        sums = views_mean(g.flatten(2).sum(2), views) if has_bias else None
        squared = squares(sums) if sums is not None else g.new_zeros(b)
        cols = _patches(module, a.to(g.dtype))  # (rows, G, p, T)
        grads = g.reshape(rows, groups, d, positions)  # (rows, G, d, T)
        if views > 1:
            cols = _as_sequences(cols, views)
            grads = _as_sequences(grads, views) / views
        if whole(b, steps, p, d):
            # (b, G, p, d): the per-sample gradients transposed (the faster product here)
            per = torch.matmul(cols, grads.transpose(2, 3))
            squared = squared + squares(per)

            def write_whole(factors: torch.Tensor) -> None:
                summed = weighted(factors, per).transpose(1, 2)  # (G, d, p)
                weight.grad = summed.reshape(weight.shape).to(weight.dtype)
                if sums is not None:
                    assert bias is not None
                    bias.grad = weighted(factors, sums).to(bias.dtype)

            return Part(squared, write_whole)
        flat_a = cols.reshape(b * groups, p, steps)  # the ghost norm, T×T Gram matrices
        flat_g = grads.reshape(b * groups, d, steps)
        grams = torch.bmm(flat_a.transpose(1, 2), flat_a)
        grams = grams * torch.bmm(flat_g.transpose(1, 2), flat_g)
        squared = squared + grams.flatten(1).sum(1)
        del cols, grads, flat_a, flat_g, grams

        def write_ghost(factors: torch.Tensor) -> None:
            scale = factors.to(g.dtype)
            if views > 1:
                scale = scale.repeat_interleave(views) / views
            scaled = g * scale.view(-1, *([1] * (g.dim() - 1)))
            weight.grad = _weight_gradient(module, a.to(g.dtype), scaled).to(weight.dtype)
            if sums is not None:
                assert bias is not None
                bias.grad = weighted(factors, sums).to(bias.dtype)

        return Part(squared, write_ghost)


def _as_sequences(t: torch.Tensor, views: int) -> torch.Tensor:
    """``(b·K, G, n, T)`` rows as ``(b, G, n, K·T)``: each sample's views side by side."""
    rows, groups, n, positions = t.shape
    t = t.reshape(rows // views, views, groups, n, positions).permute(0, 2, 3, 1, 4)
    return t.reshape(rows // views, groups, n, views * positions)


def _weight_gradient(
    conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """The weight gradient of the convolution of (padded) ``x`` for output gradient ``grad``."""
    padding = (0,) * (x.dim() - 2) if isinstance(conv.padding, str) else tuple(conv.padding)
    if conv.padding_mode != "zeros":
        padding = (0,) * (x.dim() - 2)
    _, out, _ = torch.ops.aten.convolution_backward(
        grad,
        x,
        conv.weight.to(x.dtype),
        None,
        list(conv.stride),
        list(padding),
        list(conv.dilation),
        False,
        [0] * (x.dim() - 2),
        conv.groups,
        [False, True, False],
    )
    result: torch.Tensor = out
    return result
