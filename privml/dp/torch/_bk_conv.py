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
convolved. The patches are gathered from the recorded input in one
``index_select`` by offsets computed once per input shape; a trained bias
reads a row of ones appended to them, so its per-sample gradient
``Σ_t G_i[:, t]`` comes out of the same product.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional

from ._bk_rule import Part, Rule, Tape, flat, record, register, root, trainable, whole

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


def _positions(conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``(rows, groups, p, T)``: each output position's input patch, per group.

    Taken as strided views of the (zero-padded) input, not copied; applied to a tensor
    of offsets it gives the offsets of every patch's values.
    """
    if not _pads_itself(conv):
        sizes = cast("tuple[int, ...]", conv.padding)
        if any(sizes):
            pads = [side for size in reversed(sizes) for side in (size, size)]
            x = functional.pad(x, pads, value=_ZERO)
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


# Offsets past a row's own values: the zero the padding reads and the one the bias "reads".
_ZERO, _ONE = -2, -1


def _key(conv: nn.Conv1d | nn.Conv2d, shape: torch.Size, views: int, bias: bool) -> tuple[Any, ...]:
    """What the gather offsets depend on: the layer's geometry and the input's shape."""
    geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups)
    return (*geometry, conv.padding_mode, tuple(shape[1:]), views, bias)


class _Gather:
    """Where each patch value of one sample sits in its record, for one input shape.

    A sample's ``K`` rows are laid out flat, each followed by a 0 and a 1; the
    offsets, ``(groups, p', K·T)`` flat, pick for every group, patch value and
    position (views side by side) its input value, the padding's 0, or, in an
    extra row of each group's patch when the bias is trained, the bias's 1.
    Gathering them (``index_select``) forms the patches in one copy.
    """

    def __init__(
        self, conv: nn.Conv1d | nn.Conv2d, shape: torch.Size, views: int, bias: bool
    ) -> None:
        row = math.prod(shape[1:])
        offsets = torch.arange(row, dtype=torch.int64).reshape(1, *shape[1:])
        per_view = _positions(conv, offsets)[0]  # (G, p, T), _ZERO where padded
        if bias:
            ones = torch.full_like(per_view[:, :1], _ONE)
            per_view = torch.cat([per_view, ones], 1)
        per_view = torch.where(per_view < 0, per_view + row + 2, per_view)
        offsets = torch.cat([per_view + v * (row + 2) for v in range(views)], 2)
        self.key = _key(conv, shape, views, bias)
        self.row = row
        self.groups, self.width, self.steps = offsets.shape
        self._offsets = offsets.reshape(-1)
        self.index = _layout(conv.out_channels // conv.groups, conv.groups, self.width, bias)
        self._on: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def patches(self, a: torch.Tensor, views: int) -> torch.Tensor:
        """``(b·G, p', K·T)``: every sample's patches, its views side by side."""
        found = self._on.get((a.device, a.dtype))
        if found is None:
            ends = torch.tensor([0.0, 1.0], dtype=a.dtype, device=a.device)
            found = self._on[(a.device, a.dtype)] = (self._offsets.to(a.device), ends)
        offsets, ends = found
        rows = a.shape[0]
        laid = torch.cat([a.reshape(rows, self.row), ends.expand(rows, 2)], 1)
        picked = laid.view(rows // views, views * (self.row + 2)).index_select(1, offsets)
        return picked.view(rows // views * self.groups, self.width, self.steps)


def _layout(d: int, groups: int, width: int, bias: bool) -> torch.Tensor:
    """Where each value of a per-sample gradient ``(G, p', d)`` lies in the layer's parameters.

    Positions in the weight ``(G·d, p)`` flattened, followed by the bias ``(G·d,)``
    when it is trained (the last of the ``p'`` rows).
    """
    p = width - 1 if bias else width
    group = torch.arange(groups).view(groups, 1, 1)
    row = torch.arange(width).view(1, width, 1)
    out = torch.arange(d).view(1, 1, d)
    channel = group * d + out
    index = torch.where(row < p, channel * p + row, groups * d * p + channel)
    return index.reshape(-1)


@register(nn.Conv1d, nn.Conv2d)
class ConvRule(Rule):
    """``nn.Conv1d`` / ``nn.Conv2d`` (any stride, padding, dilation, groups, padding mode)."""

    def __init__(self) -> None:
        self._gathers: weakref.WeakKeyDictionary[nn.Module, _Gather] = weakref.WeakKeyDictionary()

    def problem(self, module: nn.Module) -> str | None:
        assert isinstance(module, nn.Conv1d | nn.Conv2d)
        return None if module.weight.requires_grad else "a trainable bias with a frozen weight"

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        conv = module
        assert isinstance(conv, nn.Conv1d | nn.Conv2d)
        params = tuple(trainable(conv))

        def forward_conv(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                out: torch.Tensor = conv._conv_forward(x, conv.weight, conv.bias)
                return out
            padded, padding = _padded(conv, x)
            weight = conv.weight.detach()
            bias = conv.bias.detach() if conv.bias is not None else None
            return record(
                lambda: _convolve(conv, padded, weight, bias, padding), tape, slot, padded, params
            )

        return forward_conv

    def _gather(
        self, conv: nn.Conv1d | nn.Conv2d, a: torch.Tensor, views: int, bias: bool
    ) -> _Gather:
        found = self._gathers.get(conv)
        if found is None or found.key != _key(conv, a.shape, views, bias):
            found = self._gathers[conv] = _Gather(conv, a.shape, views, bias)
        return found

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        assert isinstance(module, nn.Conv1d | nn.Conv2d)
        bias = module.bias
        groups, rows = module.groups, g.shape[0]
        b = rows // views
        d = g.shape[1] // groups
        p = math.prod(module.weight.shape[1:])
        has_bias = bias is not None and bias.requires_grad
        gather = self._gather(module, a, views, has_bias)
        cols = gather.patches(a if a.dtype == g.dtype else a.to(g.dtype), views)  # (b·G, p', K·T)
        grads = _as_sequences(g, groups, views)  # (b·G, d, K·T)
        if whole(b, gather.steps, p, d):
            # (b·G, p', d): the per-sample gradients (bias last), transposed: the faster product
            per = torch.bmm(cols, grads.transpose(1, 2))
            if views > 1:
                per.mul_(1.0 / views)
            if gather.index.device != per.device:
                gather.index = gather.index.to(per.device)
            return Part(held=(flat(per, groups),), index=gather.index)
        # the ghost norm, K·T×K·T Gram matrices; the 1s row adds the bias's part
        grams = torch.bmm(cols.transpose(1, 2), cols)
        grams = grams * torch.bmm(grads.transpose(1, 2), grads)
        squared = flat(grams, groups).sum(1)
        if views > 1:
            squared.mul_(1.0 / (views * views))
        del cols, grads, grams

        def write_ghost(factors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            scale = factors.to(g.dtype)
            if views > 1:
                scale = scale.repeat_interleave(views) / views
            scaled = g * scale.view(-1, *([1] * (g.dim() - 1)))
            summed = _weight_gradient(module, a.to(g.dtype), scaled)
            if not has_bias:
                return (summed,)
            return summed, scaled.transpose(0, 1).flatten(1).sum(1)

        return Part((root(squared),), write=write_ghost)


def _as_sequences(g: torch.Tensor, groups: int, views: int) -> torch.Tensor:
    """Output gradients ``(b·K, G·d, *positions)`` as ``(b·G, d, K·T)``, views side by side."""
    rows, d, positions = g.shape[0], g.shape[1] // groups, math.prod(g.shape[2:])
    if views == 1:
        return g.reshape(rows * groups, d, positions)
    flat_g = g.reshape(rows // views, views, groups, d, positions).permute(0, 2, 3, 1, 4)
    return flat_g.reshape(rows // views * groups, d, views * positions)


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
        conv.weight.detach().to(x.dtype),
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
