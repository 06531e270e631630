"""Book-keeping clipping: per-sample clipped gradients of Linear/Embedding stacks, one backward.

Why it is private: every trainable parameter must belong to an ``nn.Linear``
or ``nn.Embedding`` layer that runs once per step (checked; anything else is
refused). During the one backward pass each such layer records its input
``a_i`` and the gradient ``g_i`` of its output for every sample ``i`` (a mean
loss is undone by the batch size, so these belong to each sample's own loss).
A Linear weight's per-sample gradient is ``g_iᵀ a_i`` (summed over positions
for sequences), so its squared norm is ``‖a_i‖²‖g_i‖²``, or
``⟨a_i a_iᵀ, g_i g_iᵀ⟩`` for sequences (the ghost norm); an Embedding's is
``Σ_{t,t'} [x_t = x_t'] g_t·g_t'``. Summed over layers this is the exact norm
of each sample's whole gradient. Each sample is scaled by
``c_i = min(1, C / (‖∇_i‖ + 1e-6))`` (the factor Opacus uses), so its
contribution has norm at most ``C``, and the clipped sum ``Σ_i c_i g_iᵀ a_i``
is one matrix product per layer, with no second backward pass (the
book-keeping technique of Bu et al. 2022). Opacus's optimizer then adds
``N(0, σ²C²)`` and divides by the expected batch size, exactly as for ghost
clipping: each step is the Poisson-sampled Gaussian mechanism the ledger charges.

With ``augmentations=K`` the K consecutive rows of a sample are its views, and
its gradient is their mean ``(1/K) Σ_k g_kᵀ a_k``: one sequence of K·T
positions with output gradients scaled by 1/K, whose norm and clipped sum the
sequence formulas above give exactly, so each sample is clipped once, to C.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from ...exceptions import ConfigurationError

__all__ = ["BookKeeping", "check_bk_module"]

_TWICE = (
    "grad_sample_mode='bk' needs each Linear/Embedding layer to run once per optimizer step "
    "(no shared layers, no gradient accumulation over several batches); call "
    "optimizer.step() after every backward, or use grad_sample_mode='ghost'"
)


class _Tape:
    """What each layer saw in the current step: (input, output gradient)."""

    def __init__(self) -> None:
        self.records: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def put(self, slot: int, inputs: torch.Tensor, grad: torch.Tensor) -> None:
        if slot in self.records:
            raise ConfigurationError(_TWICE)
        self.records[slot] = (inputs.detach(), grad.detach())


class _LinearFn(torch.autograd.Function):
    """``F.linear`` whose backward records (input, output gradient) instead of a weight gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        tape: _Tape,
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
        tape: _Tape,
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


@dataclass(frozen=True)
class _Layer:
    module: nn.Module
    slot: int

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters(recurse=False) if p.requires_grad]


# Library containers that only hold layers and call none of them themselves differently.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _library_layer(sub: nn.Module) -> bool:
    """A layer from torch or Opacus (not the user's own module)."""
    root = type(sub).__module__.partition(".")[0]
    return root in ("torch", "opacus")


def _composite(module: nn.Module) -> dict[str, nn.Module]:
    """Library layers (besides containers) holding trainable layers: name -> layer, outermost.

    Book-keeping records a Linear's input and output gradient as ``(batch, ..., width)``.
    Inside torch's or Opacus's own composite layers (nn.LSTM and DPLSTM, attention,
    nn.TransformerEncoderLayer, ...) Linears run step by step, sequence first or on
    transposed tensors, so the first dimension is not the batch and the per-sample
    norms would be wrong: such layers are refused whole, under their own name.
    """
    found: dict[str, nn.Module] = {}
    for name, sub in module.named_modules():
        if (
            name
            and _library_layer(sub)
            and not isinstance(sub, _CONTAINERS)
            and type(sub) not in (nn.Linear, nn.Embedding)
            and any(p.requires_grad for p in sub.parameters())
            and not any(name.startswith(f"{outer}.") for outer in found)
        ):
            found[name] = sub
    return found


def check_bk_module(module: nn.Module) -> list[nn.Module]:
    """The layers book-keeping will handle; a ConfigurationError naming any it cannot."""
    layers, problems = [], []
    composite = _composite(module)
    problems += [f"{name} ({type(sub).__name__})" for name, sub in composite.items()]
    for name, sub in module.named_modules():
        own = [p for p in sub.parameters(recurse=False) if p.requires_grad]
        inside = any(name == outer or name.startswith(f"{outer}.") for outer in composite)
        if not own or inside:
            continue
        label = name or type(sub).__name__
        if type(sub) is nn.Linear:
            if not sub.weight.requires_grad:
                problems.append(f"{label} (a trainable bias with a frozen weight)")
                continue
        elif type(sub) is nn.Embedding:
            if sub.max_norm is not None or sub.scale_grad_by_freq or sub.sparse:
                problems.append(f"{label} (max_norm, scale_grad_by_freq or sparse)")
                continue
        else:
            problems.append(f"{label} ({type(sub).__name__})")
            continue
        layers.append(sub)
    if problems:
        raise ConfigurationError(
            "grad_sample_mode='bk' handles stacks of nn.Linear and nn.Embedding layers; these "
            f"trainable layers are not supported: {', '.join(problems)}. Use "
            "grad_sample_mode='ghost' (the default; or 'hooks'), which clips convolutions, "
            "norms, recurrent and attention layers per sample, or freeze them "
            "(requires_grad=False)."
        )
    if not layers:
        raise ConfigurationError("the module has no trainable parameters")
    return layers


class BookKeeping:
    """Routes a module's Linear/Embedding layers through recording functions while attached."""

    def __init__(self, module: nn.Module, *, loss_reduction: str, views: int = 1) -> None:
        self.loss_reduction = loss_reduction
        self.views = views
        self.tape = _Tape()
        self.layers = [_Layer(m, i) for i, m in enumerate(check_bk_module(module))]
        for layer in self.layers:
            # An instance attribute shadows the class's forward until detach().
            object.__setattr__(layer.module, "forward", self._forward(layer))

    def detach(self) -> None:
        """Give the layers their own forward back."""
        for layer in self.layers:
            layer.module.__dict__.pop("forward", None)
        self.tape.records.clear()

    def _forward(self, layer: _Layer) -> Any:
        module, tape, slot = layer.module, self.tape, layer.slot
        if isinstance(module, nn.Linear):
            linear = module

            def forward_linear(x: torch.Tensor) -> torch.Tensor:
                if torch.is_grad_enabled():
                    out: torch.Tensor = _LinearFn.apply(  # type: ignore[no-untyped-call]
                        x, linear.weight, linear.bias, tape, slot
                    )
                    return out
                return functional.linear(x, linear.weight, linear.bias)

            return forward_linear
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

    # -- the clipped sum ------------------------------------------------------------------
    def write_clipped_sum(self, max_grad_norm: float) -> torch.Tensor:
        """Set every trainable ``p.grad`` to Σ_i c_i ∇_i; return the per-sample norms."""
        records = self.tape.records
        if not records:
            raise ConfigurationError(
                "optimizer.step() came before loss.backward(): nothing to clip in this step"
            )
        inputs = {}
        for layer in self.layers:
            if layer.slot in records:
                a, g = records[layer.slot]
                if self.loss_reduction == "mean":
                    g = g * g.shape[0]  # the mean's 1/b undone: each sample's own loss
                if isinstance(layer.module, nn.Embedding) and layer.module.padding_idx is not None:
                    keep = (a != layer.module.padding_idx).unsqueeze(-1)
                    g = g * keep.to(g.dtype)
                inputs[layer.slot] = _grouped(layer.module, a, g, self.views)
        size = next(iter(inputs.values()))[1].shape[0]
        if any(g.shape[0] != size for _, g in inputs.values()):
            records.clear()
            raise ConfigurationError(
                "grad_sample_mode='bk' found layers whose inputs do not share their first "
                "dimension, so it is not the batch for all of them (a layer applied to "
                "sequence-first or transposed tensors, or to a tensor without the batch); "
                "their per-sample norms cannot be computed. Apply every Linear and Embedding "
                "to batch-first inputs, or use grad_sample_mode='ghost'. No step was taken."
            )
        squared = torch.zeros(size, dtype=torch.float64 if _any64(inputs) else torch.float32)
        squared = squared.to(next(iter(inputs.values()))[1].device)
        for layer in self.layers:
            if layer.slot in inputs:
                a, g = inputs[layer.slot]
                squared = squared + _squared_norms(layer.module, a, g).to(squared.dtype)
        norms = squared.sqrt()
        factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for layer in self.layers:
            if layer.slot in inputs:
                a, g = inputs[layer.slot]
                scaled = g * factors.to(g.dtype).view(-1, *([1] * (g.dim() - 1)))
                _write_sums(layer.module, a, scaled)
            else:  # not used in this step: a zero contribution
                for p in layer.params:
                    p.grad = torch.zeros_like(p)
        records.clear()
        return norms


def _grouped(
    module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``i·K ... i·K + K - 1`` as one sample whose gradient is their gradients' mean.

    The mean of K per-row gradients ``(1/K) Σ_k g_kᵀ a_k`` has the form of one
    sequence's gradient (K·T positions, output gradients scaled by 1/K), so the
    sequence norms and sums below are exact for it.
    """
    if views == 1:
        return a, g
    rows = g.shape[0]
    if rows % views:
        raise ConfigurationError(
            f"with augmentations={views} a forward pass takes the K views of each sampled row "
            f"as handed out by run.data_loader, once; this backward pass had {rows} rows"
        )
    b = rows // views
    g = g / views
    if isinstance(module, nn.Embedding):
        return a.reshape(b, -1), g.reshape(b, -1, g.shape[-1])
    return a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])


def _any64(inputs: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return any(g.dtype == torch.float64 for _, g in inputs.values())


def _squared_norms(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample squared gradient norm of ``module``'s trainable parameters."""
    b = g.shape[0]
    if isinstance(module, nn.Embedding):
        idx = a.reshape(b, -1)
        g3 = g.reshape(b, idx.shape[1], -1)
        if idx.shape[1] == 1:
            return (g3 * g3).sum((1, 2))
        same = (idx.unsqueeze(2) == idx.unsqueeze(1)).to(g3.dtype)
        return (torch.bmm(g3, g3.transpose(1, 2)) * same).sum((1, 2))
    assert isinstance(module, nn.Linear)
    out = torch.zeros(b, dtype=g.dtype, device=g.device)
    if a.dim() == 2:
        if module.weight.requires_grad:
            out = out + (a * a).sum(1).to(g.dtype) * (g * g).sum(1)
        if module.bias is not None and module.bias.requires_grad:
            out = out + (g * g).sum(1)
        return out
    a3 = a.reshape(b, -1, a.shape[-1]).to(g.dtype)
    g3 = g.reshape(b, -1, g.shape[-1])
    steps, width_in, width_out = a3.shape[1], a3.shape[2], g3.shape[2]
    if module.weight.requires_grad:
        if steps * steps <= width_in * width_out:  # ghost norm: T×T Gram matrices
            grams = torch.bmm(a3, a3.transpose(1, 2)) * torch.bmm(g3, g3.transpose(1, 2))
            out = out + grams.sum((1, 2))
        else:  # the per-sample gradients are smaller than the Gram matrices
            per = torch.bmm(g3.transpose(1, 2), a3)
            out = out + (per * per).sum((1, 2))
    if module.bias is not None and module.bias.requires_grad:
        s = g3.sum(1)
        out = out + (s * s).sum(1)
    return out


def _write_sums(module: nn.Module, a: torch.Tensor, scaled: torch.Tensor) -> None:
    """Set ``p.grad`` to the clipped sum from inputs ``a`` and scaled output gradients."""
    if isinstance(module, nn.Embedding):
        weight = module.weight
        flat = scaled.reshape(-1, weight.shape[1]).to(weight.dtype)
        grad = torch.zeros_like(weight).index_add_(0, a.reshape(-1), flat)
        weight.grad = grad
        return
    assert isinstance(module, nn.Linear)
    width_out = module.weight.shape[0]
    g2 = scaled.reshape(-1, width_out)
    if module.weight.requires_grad:
        a2 = a.reshape(-1, a.shape[-1]).to(g2.dtype)
        module.weight.grad = (g2.t() @ a2).to(module.weight.dtype)
    if module.bias is not None and module.bias.requires_grad:
        module.bias.grad = g2.sum(0).to(module.bias.dtype)
