"""Book-keeping rules for ``nn.Linear`` and ``nn.Embedding``.

A Linear weight's per-sample gradient is ``g_iᵀ a_i`` (summed over positions
for sequences), so its squared norm is ``‖a_i‖²‖g_i‖²``, or
``⟨a_i a_iᵀ, g_i g_iᵀ⟩`` for sequences (the ghost norm, when the ``T×T``
Gram matrices save memory: :func:`._bk_rule.whole`); otherwise the per-sample
gradients are formed and the clipped sum is their weighted sum. An
Embedding's squared norm is ``Σ_{t,t'} [x_t = x_t'] g_t·g_t'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from ._bk_rule import (
    Part,
    Rule,
    Tape,
    flat,
    norms,
    register,
    root,
    tap,
    trainable,
    weighted,
    whole,
)

__all__ = ["EmbeddingRule", "LinearRule", "sequences"]


class _LinearFn(torch.autograd.Function):
    """``F.linear`` whose backward records (input, output gradient) instead of a weight gradient.

    For a first layer (its input needs no gradient): one node instead of two.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        tape: Tape,
        slot: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tape, ctx.slot = tape, slot
        return functional.linear(x, weight, bias)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None, None]:
        x, weight = ctx.saved_tensors
        ctx.tape.put(ctx.slot, x, grad)
        grad_x = grad.matmul(weight) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None, None


class _EmbeddingFn(torch.autograd.Function):
    """``F.embedding`` whose backward records (indices, output gradient)."""

    @staticmethod
    def forward(
        ctx: Any,
        idx: torch.Tensor,
        weight: torch.Tensor,
        padding_idx: int | None,
        tape: Tape,
        slot: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.tape, ctx.slot = tape, slot
        return functional.embedding(idx, weight, padding_idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None, None, None]:
        (idx,) = ctx.saved_tensors
        ctx.tape.put(ctx.slot, idx, grad)
        return None, None, None, None, None


def sequences(a: torch.Tensor, g: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b, positions, width)`` views of a record, a sample's K views as one sequence.

    The mean of K per-row gradients ``(1/K) Σ_k g_kᵀ a_k`` has the form of one
    sequence's gradient (K·T positions, output gradients scaled by 1/K).
    """
    b = g.shape[0] // views
    steps = views * math.prod(g.shape[1:-1])
    g3 = g.reshape(b, steps, g.shape[-1])
    return a.reshape(b, steps, a.shape[-1]).to(g.dtype), g3 / views if views > 1 else g3


def _like(factors: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The clipping factors in the dtype of the gradients they scale."""
    return factors if factors.dtype == g.dtype else factors.to(g.dtype)


@register(nn.Linear)
class LinearRule(Rule):
    """``nn.Linear``: ghost norm or per-sample gradients, whichever is smaller."""

    def problem(self, module: nn.Module) -> str | None:
        assert isinstance(module, nn.Linear)
        return None if module.weight.requires_grad else "a trainable bias with a frozen weight"

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        linear = module
        assert isinstance(linear, nn.Linear)
        params = tuple(trainable(linear))

        def forward_linear(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return functional.linear(x, linear.weight, linear.bias)
            if x.requires_grad:  # autograd computes the input's gradient; a hook records
                bias = linear.bias.detach() if linear.bias is not None else None
                out = functional.linear(x, linear.weight.detach(), bias)
                return tap(out, tape, slot, x, params)
            # a first layer: one node whose backward records (no input gradient to compute)
            first: torch.Tensor = _LinearFn.apply(  # type: ignore[no-untyped-call]
                x, linear.weight, linear.bias, tape, slot
            )
            return first

        return forward_linear

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        assert isinstance(module, nn.Linear)
        bias = module.bias
        has_bias = bias is not None and bias.requires_grad
        if a.dim() == 2 and views == 1:  # one position per sample: rank-one gradients
            if a.dtype != g.dtype:
                a = a.to(g.dtype)
            g_norms = norms(g)
            found = (norms(a) * g_norms, g_norms) if has_bias else (norms(a) * g_norms,)

            def write_flat(factors: torch.Tensor) -> tuple[torch.Tensor, ...]:
                scaled = g * _like(factors, g).unsqueeze(1)
                summed = scaled.t() @ a
                return (summed, scaled.sum(0)) if has_bias else (summed,)

            return Part(found, write=write_flat)
        a3, g3 = sequences(a, g, views)
        steps, width_in, width_out = a3.shape[1], a3.shape[2], g3.shape[2]
        sums = g3.sum(1) if has_bias else None
        bias_norms = (norms(sums),) if sums is not None else ()
        if not whole(g3.shape[0], steps, width_in, width_out):  # ghost norm: T×T Gram matrices
            grams = torch.bmm(a3, a3.transpose(1, 2)) * torch.bmm(g3, g3.transpose(1, 2))
            ghost = (root(grams.sum((1, 2))), *bias_norms)

            def write_ghost(factors: torch.Tensor) -> tuple[torch.Tensor, ...]:
                scaled = g3 * _like(factors, g3).view(-1, 1, 1)
                summed = scaled.reshape(-1, width_out).t() @ a3.reshape(-1, width_in)
                return (summed,) if sums is None else (summed, weighted(factors, sums))

            return Part(ghost, write=write_ghost)
        per = torch.bmm(g3.transpose(1, 2), a3)  # the per-sample gradients are smaller
        return Part(held=(flat(per),) if sums is None else (flat(per), sums))


@register(nn.Embedding)
class EmbeddingRule(Rule):
    """``nn.Embedding``: tokens that repeat within a sample add up in its norm."""

    def problem(self, module: nn.Module) -> str | None:
        assert isinstance(module, nn.Embedding)
        if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
            return "max_norm, scale_grad_by_freq or sparse"
        return None

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        embedding = module
        assert isinstance(embedding, nn.Embedding)

        def forward_embedding(idx: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled():
                out: torch.Tensor = _EmbeddingFn.apply(  # type: ignore[no-untyped-call]
                    idx, embedding.weight, embedding.padding_idx, tape, slot
                )
                return out
            return functional.embedding(idx, embedding.weight, embedding.padding_idx)

        return forward_embedding

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        assert isinstance(module, nn.Embedding)
        weight = module.weight
        if module.padding_idx is not None:
            g = g * (a != module.padding_idx).unsqueeze(-1).to(g.dtype)
        b = g.shape[0] // views
        idx = flat(a, views)
        g3 = g.reshape(b, idx.shape[1], g.shape[-1])
        if views > 1:
            g3 = g3 / views
        if idx.shape[1] == 1:
            found = norms(g3)
        else:
            same = (idx.unsqueeze(2) == idx.unsqueeze(1)).to(g3.dtype)
            found = root((torch.bmm(g3, g3.transpose(1, 2)) * same).sum((1, 2)))

        def write(factors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            scaled = g3 * _like(factors, g3).view(-1, 1, 1)
            flat = scaled.reshape(-1, weight.shape[1])
            summed = torch.zeros(weight.shape, dtype=flat.dtype, device=flat.device)
            return (summed.index_add_(0, idx.reshape(-1), flat),)

        return Part((found,), write=write)
