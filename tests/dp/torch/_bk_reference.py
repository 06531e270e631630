"""Per-sample clipped sums three ways: privml's book-keeping, Opacus hooks, a loop over samples.

All in float64. Each function takes a freshly built module (the callers build
the same seeded module for each side), a batch and a loss reduction, and
returns ``(norms, {parameter name: clipped sum})``: the per-sample gradient
norms and ``Σ_i c_i ∇_i`` with ``c_i = min(1, C / (‖∇_i‖ + 1e-6))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from opacus import GradSampleModule
from torch import nn

from privml.dp.torch._bk import BookKeeping

CLIP = 0.5

Result = tuple[torch.Tensor, dict[str, torch.Tensor]]


def _loss(reduction: str) -> nn.CrossEntropyLoss:
    return nn.CrossEntropyLoss(reduction=reduction)


def _clipped(names: list[str], per: list[torch.Tensor], views: int) -> Result:
    per = [p.reshape(-1, views, *p.shape[1:]).mean(1) for p in per]
    squared = sum(p.reshape(p.shape[0], -1).pow(2).sum(1) for p in per)
    assert isinstance(squared, torch.Tensor)
    norms = squared.sqrt()
    factors = (CLIP / (norms + 1e-6)).clamp(max=1.0)
    return norms, {
        n: torch.einsum("b,b...->...", factors, p) for n, p in zip(names, per, strict=True)
    }


def bookkeeping(
    net: nn.Module, x: Any, y: torch.Tensor, reduction: str = "sum", views: int = 1
) -> Result:
    """privml's book-keeping: one backward, then the clipped sum written into ``p.grad``."""
    bk = BookKeeping(net, loss_reduction=reduction, views=views)
    try:
        _loss(reduction)(net(x), y).backward()
        norms = bk.write_clipped_sum(CLIP)
    finally:
        bk.detach()
    return norms, {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}


def opacus_hooks(
    net: nn.Module, x: Any, y: torch.Tensor, reduction: str = "sum", views: int = 1
) -> Result:
    """Opacus's per-sample gradients (``GradSampleModule``, hooks mode), clipped here."""
    model = GradSampleModule(net, batch_first=True, loss_reduction=reduction)
    _loss(reduction)(model(x), y).backward()
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    result = _clipped([n for n, _ in named], [p.grad_sample for _, p in named], views)
    model._close()
    return result


def per_sample_loop(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    reduction: str = "sum",
    views: int = 1,
    rows: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> Result:
    """Each row's gradient by its own backward pass (rows taken by ``rows(x, i)``)."""
    take = rows or (lambda t, i: t[i : i + 1])
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    per: list[list[torch.Tensor]] = [[] for _ in named]
    for i in range(len(y)):
        net.zero_grad()
        _loss("sum")(net(take(x, i)), y[i : i + 1]).backward()
        for k, (_, p) in enumerate(named):
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            per[k].append(grad.clone())
    return _clipped([n for n, _ in named], [torch.stack(p) for p in per], views)


def assert_same(got: Result, want: Result) -> None:
    """Norms and clipped sums equal to 1e-5 (relative; float64 on both sides)."""
    torch.testing.assert_close(got[0], want[0].to(got[0].dtype), rtol=1e-5, atol=1e-9)
    assert got[1].keys() == want[1].keys()
    for name, value in want[1].items():
        torch.testing.assert_close(got[1][name], value, rtol=1e-5, atol=1e-9, msg=name)
