"""Book-keeping rule for ``nn.Conv1d`` and ``nn.Conv2d``.

A convolution is a Linear applied at every output position to the unfolded
patch of its input: per group, sample ``i``'s weight gradient is
``G_i A_iᵀ`` with ``A_i`` the ``p × T`` patches (``p`` = input channels of
the group times the kernel size, ``T`` output positions) and ``G_i`` the
``d × T`` output gradients. Its squared norm is ``⟨A_iᵀA_i, G_iᵀG_i⟩``
(the ghost norm, ``T×T``) when ``T² < p·d``, and otherwise ``‖G_i A_iᵀ‖²``
from the per-sample gradients themselves, whose weighted sum is then the
clipped sum (no second pass over the patches): the trade-off of Bu et al.
(2023). Padding other than zeros, and ``padding='same'``, pad the input first,
so the patches are those the layer convolved.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from ._bk_rule import Part, Rule, Tape, register, tap, weighted

__all__ = ["ConvRule"]


def _padded(conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The input padded as the layer pads it, and the zero padding left for the convolution."""
    if conv.padding_mode == "zeros" and not isinstance(conv.padding, str):
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
    """``(rows, groups, p, T)``: each output position's input patch, per group."""
    if isinstance(conv, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel: tuple[int, ...] = (1, conv.kernel_size[0])
        dilation: tuple[int, ...] = (1, conv.dilation[0])
        stride: tuple[int, ...] = (1, conv.stride[0])
        padding: tuple[int, ...] = (0, 0 if isinstance(conv.padding, str) else conv.padding[0])
    else:
        kernel, dilation, stride = conv.kernel_size, conv.dilation, conv.stride
        padding = (0, 0) if isinstance(conv.padding, str) else tuple(conv.padding)
        kernel, dilation, stride = tuple(kernel), tuple(dilation), tuple(stride)
    if conv.padding_mode != "zeros":
        padding = (0, 0)
    cols = functional.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.reshape(x.shape[0], conv.groups, -1, cols.shape[-1])


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
        groups = module.groups
        cols = _patches(module, a.to(g.dtype))  # (rows, G, p, T)
        rows, positions = g.shape[0], cols.shape[-1]
        grads = g.reshape(rows, groups, -1, positions)  # (rows, G, d, T)
        b = rows // views
        if views > 1:  # a sample's views as one sequence of K·T positions, gradients / K
            cols = cols.reshape(b, views, groups, -1, positions).permute(0, 2, 3, 1, 4)
            cols = cols.reshape(b, groups, -1, views * positions)
            grads = grads.reshape(b, views, groups, -1, positions).permute(0, 2, 3, 1, 4)
            grads = grads.reshape(b, groups, -1, views * positions) / views
        steps, p, d = cols.shape[-1], cols.shape[2], grads.shape[2]
        has_bias = bias is not None and bias.requires_grad
        sums = grads.sum(3).reshape(b, -1) if has_bias else None
        squared = (sums * sums).sum(1) if sums is not None else grads.new_zeros(b)
        if steps * steps < p * d:  # ghost norm
            flat_a = cols.reshape(b * groups, p, steps)
            flat_g = grads.reshape(b * groups, d, steps)
            grams = torch.bmm(flat_a.transpose(1, 2), flat_a) * torch.bmm(
                flat_g.transpose(1, 2), flat_g
            )
            squared = squared + grams.reshape(b, -1).sum(1)

            def write_ghost(factors: torch.Tensor) -> None:
                scaled = grads * factors.to(grads.dtype).view(-1, 1, 1, 1)
                # per group: Σ_i,t scaled_i[:, t] cols_i[:, t]ᵀ
                total = torch.einsum("bgdt,bgpt->gdp", scaled, cols)
                weight.grad = total.reshape(weight.shape).to(weight.dtype)
                if sums is not None:
                    assert bias is not None
                    bias.grad = weighted(factors, sums).to(bias.dtype)

            return Part(squared, write_ghost)
        per = torch.matmul(grads, cols.transpose(2, 3))  # (b, G, d, p)
        squared = squared + per.reshape(b, -1).pow(2).sum(1)

        def write_whole(factors: torch.Tensor) -> None:
            weight.grad = weighted(factors, per).reshape(weight.shape).to(weight.dtype)
            if sums is not None:
                assert bias is not None
                bias.grad = weighted(factors, sums).to(bias.dtype)

        return Part(squared, write_whole)
