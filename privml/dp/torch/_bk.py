"""Book-keeping clipping: per-sample clipped gradients with one backward pass.

Why it is private: every trainable parameter must belong to a layer with a
registered rule (Linear, Embedding, Conv1d/2d, LayerNorm, RMSNorm, GroupNorm,
InstanceNorm, and the Linears of multi-head attention and torch's transformer
encoder; :mod:`._bk_rule`) that runs once per step (checked; anything else is
refused by name). During the one backward pass each such layer records what
its parameters multiply and the gradient ``g_i`` of its output for every
sample ``i`` (a mean loss is undone by the batch size, so these belong to
each sample's own loss); from these its rule gives each sample's gradient
norm for the layer (ghost norms where cheaper), or the per-sample gradients
themselves, which are then held whole (the narrow ones side by side in one
matrix, so that one norm and one weighted sum serve them all). Combined over
layers this is the exact norm of each sample's whole gradient. Each sample is scaled
by ``c_i = min(1, C / (‖∇_i‖ + 1e-6))`` (the factor Opacus uses), so its
contribution has norm at most ``C``, and each layer's clipped sum
``Σ_i c_i ∇_i`` comes from the same records, with no second backward pass (the
book-keeping technique of Bu et al. 2023). The optimizer then adds
``N(0, σ²C²)`` and divides by the expected batch size, exactly as for ghost
clipping: each step is the Poisson-sampled Gaussian mechanism the ledger charges.

With ``augmentations=K`` the K consecutive rows of a sample are its views,
and its gradient is the mean of theirs; each rule clips that mean, so each
sample is clipped once, to C.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...exceptions import ConfigurationError
from ._bk_attention import SCOPES
from ._bk_conv import ConvRule
from ._bk_linear import EmbeddingRule, LinearRule
from ._bk_norm import ChannelNormRule, LastDimsNormRule
from ._bk_rule import RULES, Rule, Tape, trainable

__all__ = ["BookKeeping", "bk_layers", "check_bk_module"]

# The rules register themselves on import; these names keep that import explicit.
_FAMILIES = (ConvRule, EmbeddingRule, LinearRule, ChannelNormRule, LastDimsNormRule)

# Library containers that only hold layers and call none of them themselves differently.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class _Layer:
    module: nn.Module
    slot: int
    rule: Rule
    batch_dim: int


def _library_layer(sub: nn.Module) -> bool:
    """A layer from torch or Opacus (not the user's own module)."""
    root = type(sub).__module__.partition(".")[0]
    return root in ("torch", "opacus")


def _walk(
    module: nn.Module,
    name: str,
    batch_dim: int,
    found: list[tuple[nn.Module, Rule, int]],
    problems: list[str],
) -> None:
    """Collect the layers under ``module`` with their rules, and what cannot be clipped.

    Inside torch's or Opacus's own composite layers (nn.LSTM and DPLSTM, ...) Linears run
    step by step, sequence first or on transposed tensors, so the first dimension is not
    the batch and per-sample norms would be wrong: such layers are refused whole, under
    their own name, unless they are a scope whose layout is known (:data:`SCOPES`).
    """
    label = name or type(module).__name__
    kind = type(module)
    rule = RULES.get(kind)
    if rule is not None:
        if any(p.requires_grad for p in module.parameters()):
            problem = rule.problem(module)
            if problem is not None:
                problems.append(f"{label} ({problem})")
            else:
                found.append((module, rule, rule.batch_dim(module, batch_dim)))
        return
    if not any(p.requires_grad for p in module.parameters()):
        return
    scope = SCOPES.get(kind)
    inner = scope(module) if scope is not None else None
    if _library_layer(module) and not isinstance(module, _CONTAINERS) and inner is None:
        problems.append(f"{label} ({kind.__name__})")
        return
    if trainable(module):
        problems.append(f"{label} ({kind.__name__}, parameters of its own)")
    for child_name, child in module.named_children():
        path = f"{name}.{child_name}" if name else child_name
        _walk(child, path, batch_dim if inner is None else inner, found, problems)


def _layers(module: nn.Module) -> list[tuple[nn.Module, Rule, int]]:
    found: list[tuple[nn.Module, Rule, int]] = []
    problems: list[str] = []
    _walk(module, "", 0, found, problems)
    if problems:
        raise ConfigurationError(
            "grad_sample_mode='bk' handles nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, "
            "nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.InstanceNorm1d/2d/3d and Opacus's "
            "DPMultiheadAttention (also inside nn.TransformerEncoder); these trainable layers "
            f"are not supported: {', '.join(problems)}. Use grad_sample_mode='ghost' (the "
            "default; or 'hooks'), which clips recurrent layers and others per sample, or "
            "freeze them (requires_grad=False)."
        )
    if not found:
        raise ConfigurationError("the module has no trainable parameters")
    return found


def check_bk_module(module: nn.Module) -> list[nn.Module]:
    """The layers book-keeping will handle; a ConfigurationError naming any it cannot."""
    return [layer for layer, _, _ in _layers(module)]


def bk_layers(module: nn.Module) -> list[tuple[nn.Module, int]]:
    """The layers book-keeping will handle, each with the dimension its records read as batch."""
    return [(layer, dim) for layer, _, dim in _layers(module)]


#: Per-sample gradients held whole with up to this many values per sample are copied
#: into one matrix (one norm and one weighted sum for all of them); larger ones keep
#: their own, as a copy would cost more than the operations it saves.
SHARED_WIDTH = 4096


class _Held:
    """The per-sample gradients held whole, as few matrices: the narrow ones side by side."""

    def __init__(self, held: list[torch.Tensor]) -> None:
        self.count = len(held)
        narrow = [i for i, t in enumerate(held) if t.shape[1] <= SHARED_WIDTH]
        self.matrices: list[torch.Tensor] = []
        self.layout: list[list[int]] = []  # per matrix: the held tensors in it, in order
        if len(narrow) > 1:
            parts = [held[i] for i in narrow]
            if len({t.dtype for t in parts}) > 1:
                parts = [t.to(torch.float64) for t in parts]
            self.matrices.append(torch.cat(parts, 1))
            self.layout.append(narrow)
        elif narrow:
            self.matrices.append(held[narrow[0]])
            self.layout.append(narrow)
        for i, t in enumerate(held):
            if t.shape[1] > SHARED_WIDTH:
                self.matrices.append(t)
                self.layout.append([i])
        self._widths = [t.shape[1] for t in held]

    def sums(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """Each held tensor's weighted sum over its samples, ``(k,)``, in the order given."""
        out: list[torch.Tensor] = [weights] * self.count
        for matrix, members in zip(self.matrices, self.layout, strict=True):
            summed = torch.mv(matrix.t(), weights.to(matrix.dtype))
            widths = [self._widths[i] for i in members]
            for i, piece in zip(members, torch.split(summed, widths), strict=True):
                out[i] = piece
        return out


class BookKeeping:
    """Routes a module's layers through their recording forwards while attached."""

    def __init__(self, module: nn.Module, *, loss_reduction: str, views: int = 1) -> None:
        self.loss_reduction = loss_reduction
        self.views = views
        self.tape = Tape()
        self.layers = [_Layer(m, i, rule, dim) for i, (m, rule, dim) in enumerate(_layers(module))]
        for layer in self.layers:
            self.tape.batch_dims[layer.slot] = layer.batch_dim
            forward = layer.rule.forward(layer.module, self.tape, layer.slot)
            # An instance attribute shadows the class's forward until detach().
            object.__setattr__(layer.module, "forward", forward)

    def detach(self) -> None:
        """Give the layers their own forward back."""
        for layer in self.layers:
            layer.module.__dict__.pop("forward", None)
        self.tape.records.clear()

    # -- the clipped sum ------------------------------------------------------------------
    def write_clipped_sum(self, max_grad_norm: float) -> torch.Tensor:
        """Set every trainable ``p.grad`` to Σ_i c_i ∇_i; return the per-sample norms."""
        records = self.tape.records
        if not records:
            raise ConfigurationError(
                "optimizer.step() came before loss.backward(): nothing to clip in this step"
            )
        rows = {g.shape[0] for _, g in records.values()}
        if len(rows) != 1:
            records.clear()
            raise ConfigurationError(
                "grad_sample_mode='bk' found layers whose inputs do not share their first "
                "dimension, so it is not the batch for all of them (a layer applied to "
                "sequence-first or transposed tensors, or to a tensor without the batch); "
                "their per-sample norms cannot be computed. Apply every layer to batch-first "
                "inputs, or use grad_sample_mode='ghost'. No step was taken."
            )
        (size,) = rows
        if size % self.views:
            records.clear()
            raise ConfigurationError(
                f"with augmentations={self.views} a forward pass takes the K views of each "
                f"sampled row as handed out by run.data_loader, once; this backward pass had "
                f"{size} rows"
            )
        # A mean loss's gradients are 1/size of each sample's own: the parts are linear in
        # g, so the norms are scaled up by size and the factors by size, not every record.
        scale = float(size) if self.loss_reduction == "mean" else 1.0
        parts = []
        for layer in self.layers:
            if layer.slot in records:
                a, g = records[layer.slot]
                parts.append(layer.rule.part(layer.module, a, g, self.views))
        pieces = [n for part in parts for n in part.norms]
        held = _Held([t for part in parts for t in part.held])
        pieces += [torch.linalg.vector_norm(m, dim=1) for m in held.matrices]
        if len({n.dtype for n in pieces}) > 1:
            wide = any(n.dtype == torch.float64 for n in pieces)
            pieces = [n.to(torch.float64 if wide else torch.float32) for n in pieces]
        norms: torch.Tensor = torch.linalg.vector_norm(torch.stack(pieces), dim=0)
        if scale != 1.0:
            norms.mul_(scale)
        # c_i, times the scale that turns the records' g into each sample's own
        weights = (max_grad_norm / (norms + 1e-6)).clamp_(max=1.0).mul_(scale)
        for part in parts:
            if part.write is not None:
                part.write(weights)
        sums = held.sums(weights)
        for part in parts:
            if part.place is not None:
                taken, sums = sums[: len(part.held)], sums[len(part.held) :]
                part.place(taken)
        for layer in self.layers:
            if layer.slot not in records:  # not used in this step: a zero contribution
                for p in trainable(layer.module):
                    p.grad = torch.zeros_like(p)
        records.clear()
        return norms
