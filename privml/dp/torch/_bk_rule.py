"""Book-keeping's parts: the tape of one step, the recording tap and the layer rules' registry.

A layer rule replaces a layer's forward while book-keeping is attached: the
layer computes its output with its parameters detached (so the backward pass
computes only the gradient of its input, never a weight gradient) and :func:`tap`
records, when the gradient of its output arrives, what the layer saw (its
input, or what its parameters multiply) together with that gradient, per
sample; an input changed in place since the layer used it is refused. After
the backward pass the rule turns that record into each sample's gradient norm
and, given the clipping factors, the clipped sum of its parameters' gradients,
or into the per-sample gradients themselves (:class:`Part`).

Rules are registered per layer type (:func:`register`); a layer whose type
has no rule is refused by name. Every record is batch first: a layer applied
to sequence-first tensors inside a known library layer (attention with
``batch_first=False``) is given its batch dimension, and the tape moves it
to the front.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...exceptions import ConfigurationError

__all__ = [
    "RULES",
    "Part",
    "Rule",
    "Tape",
    "flat",
    "norms",
    "record",
    "register",
    "root",
    "tap",
    "trainable",
    "whole",
]

#: Per-sample gradients of one layer up to this many values (all samples) are formed
#: whole even where Gram matrices would be smaller: 4 MiB of float32.
WHOLE_LIMIT = 1 << 20

CHANGED = (
    "grad_sample_mode='bk' records what each layer multiplies, and a layer's input was "
    "changed in place after the layer used it (an in-place operation such as "
    "ReLU(inplace=True) or x.add_() on a tensor a layer had already taken), so its "
    "per-sample gradients cannot be computed. Make that operation out of place, or use "
    "grad_sample_mode='ghost'. No step was taken."
)

TWICE = (
    "grad_sample_mode='bk' needs each trainable layer to run once per optimizer step "
    "(no shared layers, no gradient accumulation over several batches); call "
    "optimizer.step() after every backward, or use grad_sample_mode='ghost'"
)


class Tape:
    """What each layer saw in the current step: slot -> (input, output gradient), batch first."""

    def __init__(self) -> None:
        self.records: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.batch_dims: dict[int, int] = {}

    def put(
        self, slot: int, inputs: torch.Tensor, grad: torch.Tensor, version: int | None = None
    ) -> None:
        """Record one layer's input and output gradient (once per step).

        ``version``: the input's version when the layer used it. An input changed in
        place since (its version moved on) is not what the layer saw, and its per-sample
        norms would be wrong: refused.
        """
        if slot in self.records:
            raise ConfigurationError(TWICE)
        if version is not None and inputs._version != version:
            raise ConfigurationError(CHANGED)
        dim = self.batch_dims.get(slot, 0)
        if inputs.requires_grad:
            inputs = inputs.detach()
        if grad.requires_grad:  # a backward that builds a graph (create_graph=True)
            grad = grad.detach()
        if dim:
            inputs, grad = inputs.movedim(dim, 0), grad.movedim(dim, 0)
        self.records[slot] = (inputs, grad)


class _First(torch.autograd.Function):
    """A first layer's output, computed here, whose backward records (saved input, output gradient).

    For a layer whose output needs no gradient by itself (its input needs none). Its
    parameters are inputs here, so the output does; their gradient is left to the rule.
    The output is made in here, so it is the graph's own tensor, not a copy (unless it is a
    view): an in-place operation on it next (ReLU(inplace=True)) changes nothing the backward
    reads.
    """

    @staticmethod
    def forward(
        ctx: Any,
        compute: Callable[[], torch.Tensor],
        tape: Tape,
        slot: int,
        saved: torch.Tensor,
        version: int,
        *params: Any,
    ) -> torch.Tensor:
        ctx.tape, ctx.slot, ctx.saved, ctx.version = tape, slot, saved, version
        ctx.count = len(params)
        out = compute()
        # a view (InstanceNorm's output is one) returned from here could not be changed in
        # place next (ReLU(inplace=True)): a view of a custom node's output is refused that
        return out.clone() if out._is_view() else out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        ctx.tape.put(ctx.slot, ctx.saved, grad, ctx.version)
        ctx.saved = None
        return (None, None, None, None, None, *([None] * ctx.count))


def tap(
    out: torch.Tensor,
    tape: Tape,
    slot: int,
    saved: torch.Tensor,
    params: tuple[nn.Parameter, ...],
) -> torch.Tensor:
    """``out``, recording ``(saved, ∂loss/∂out)`` for ``slot`` during the backward pass.

    An output that already needs a gradient gets a pre-hook on the node that made it
    (cheaper than one more node in the graph). A node's pre-hooks run after the hooks
    registered on its output tensors, so the run's own checks on the model's output (the
    fence's) still come first. ``params``, the layer's trainable parameters, make the
    output of a first layer need one.
    """
    kept = saved.detach()
    version = kept._version
    node = out.grad_fn
    if node is not None:
        index = out.output_nr

        def record(grads: tuple[torch.Tensor | None, ...]) -> None:
            grad = grads[index]
            if grad is not None:
                tape.put(slot, kept, grad, version)

        node.register_prehook(record)
        return out
    # an output needing no gradient although its input does: a copy, made in the node
    result: torch.Tensor = _First.apply(out.clone, tape, slot, kept, version, *params)  # type: ignore[no-untyped-call]
    return result


def record(
    compute: Callable[[], torch.Tensor],
    tape: Tape,
    slot: int,
    saved: torch.Tensor,
    params: tuple[nn.Parameter, ...],
) -> torch.Tensor:
    """The layer's output ``compute()``, recording ``(saved, ∂loss/∂out)`` for ``slot``.

    ``compute`` takes the layer's parameters detached, so its output needs a gradient
    exactly when ``saved``, what the layer multiplies, does: then :func:`tap` hooks the
    node that made it; otherwise (a first layer) :class:`_First` makes it.
    """
    if saved.requires_grad:
        return tap(compute(), tape, slot, saved, params)
    kept = saved.detach()
    out: torch.Tensor = _First.apply(compute, tape, slot, kept, kept._version, *params)  # type: ignore[no-untyped-call]
    return out


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The layer's own trainable parameters."""
    return [p for p in module._parameters.values() if p is not None and p.requires_grad]


@dataclass(frozen=True)
class Part:
    """One layer's share of a step: its per-sample norms and its clipped sums.

    Either the rule computed the norms itself (``norms``: ``(b,)`` tensors whose squares
    add up to each sample's squared gradient norm for the layer) and returns the clipped
    sums given the clipping factors (``write``: one tensor per trainable parameter, in
    :func:`trainable`'s order, each holding that parameter's values in order); or it
    holds its per-sample gradients whole (``held``: ``(b, k)`` tensors, one row per
    sample) and book-keeping takes their norms and their weighted sums for all layers
    at once. Laid side by side, the held columns are the layer's trainable parameters
    flattened and laid end to end, in :func:`trainable`'s order, or, where ``index`` is
    given, column ``j`` is the value at position ``index[j]`` of that layout (the rule
    keeps the same ``index`` tensor while the layout stays the same).
    """

    norms: tuple[torch.Tensor, ...] = ()
    write: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None
    held: tuple[torch.Tensor, ...] = ()
    index: torch.Tensor | None = None


def whole(samples: int, steps: int, width_in: int, width_out: int) -> bool:
    """Form a layer's per-sample gradients (``p × d`` each) rather than ``T×T`` Gram matrices.

    In time, the per-sample gradients always win once the clipped sum is counted: the
    ghost norm costs ``T²(p + d)`` per sample on top of the ``T·p·d`` of the sum, which
    the per-sample gradients' weighted sum replaces by ``p·d`` (Bu et al. 2023). The
    Gram matrices are chosen only to save memory: when they are smaller and the
    per-sample gradients would hold more than :data:`WHOLE_LIMIT` values.
    """
    size = width_in * width_out
    return size <= steps * steps or samples * size <= WHOLE_LIMIT


def flat(t: torch.Tensor, views: int = 1) -> torch.Tensor:
    """``(rows / views, views · values per row)``: each sample's values in one row (also empty)."""
    if views == 1 and t.dim() == 2:
        return t
    return t.reshape(t.shape[0] // views, views * math.prod(t.shape[1:]))


def norms(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norms over every dimension but the first."""
    result: torch.Tensor = torch.linalg.vector_norm(flat(t), dim=1)
    return result


def root(squared: torch.Tensor) -> torch.Tensor:
    """Norms from squared norms summed as Gram products (rounding may leave them just below 0)."""
    return squared.clamp_(min=0).sqrt_()


def weighted(factors: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:
    """``Σ_i factors_i · per_sample_i`` over the first dimension."""
    rows = flat(per_sample)
    return (factors.to(rows.dtype) @ rows).reshape(per_sample.shape[1:])


def views_mean(per_sample: torch.Tensor, views: int) -> torch.Tensor:
    """Rows ``i·K ... i·K + K - 1`` of per-row gradients as sample ``i``'s mean gradient."""
    if views == 1:
        return per_sample
    rows = per_sample.shape[0]
    return per_sample.reshape(rows // views, views, *per_sample.shape[1:]).mean(1)


def instantiated(module: nn.Module, grads: dict[str, torch.Tensor]) -> Part:
    """A part from per-sample gradients held whole: name -> ``(b, *param.shape)``."""
    names = [n for n, p in module._parameters.items() if p is not None and p.requires_grad]
    return Part(held=tuple(flat(grads[name]) for name in names))


class Rule:
    """How book-keeping handles one family of layers (subclasses override all three)."""

    def problem(self, module: nn.Module) -> str | None:
        """Why this layer's settings cannot be clipped here, or ``None``."""
        return None

    def batch_dim(self, module: nn.Module, around: int) -> int:
        """The batch dimension of the layer's records; ``around``: that of the layer around it."""
        return around

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        """The layer's forward while attached: the same output, recorded for the backward."""
        raise NotImplementedError

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        """Per-sample norms and the clipped-sum writer, from one step's record.

        ``a`` and ``g`` are batch first with ``views * b`` rows, ``g`` each row's own
        loss gradient; sample ``i``'s gradient is the mean over its ``views`` rows.
        """
        raise NotImplementedError


#: layer type -> its rule (exact types: a subclass may compute something else)
RULES: dict[type[nn.Module], Rule] = {}


def register(*types: type[nn.Module]) -> Callable[[type[Rule]], type[Rule]]:
    """Register a rule class for these exact layer types."""

    def add(cls: type[Rule]) -> type[Rule]:
        rule = cls()
        for kind in types:
            RULES[kind] = rule
        return cls

    return add
