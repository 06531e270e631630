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
from ._bk_rule import RULES, Part, Rule, Tape, trainable
from ._noise import laid_out

__all__ = ["BookKeeping", "bk_layers", "check_bk_module", "place"]

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

    def sums(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """Each matrix's weighted sum over its samples: its members' sums side by side."""
        return [
            torch.mv(m.t(), weights if weights.dtype == m.dtype else weights.to(m.dtype))
            for m in self.matrices
        ]


class _Plan:
    """Where each value of a step's sums goes among the optimizer's parameters, end to end.

    The sums come as one vector, ``raw``: the held matrices' weighted sums (their
    columns in order), then each written part's tensors. ``perm`` picks, for every
    parameter value in the optimizer's order, its value in ``raw``, or a 0 appended to
    it for a layer that took no part in this step; ``None`` where ``raw`` is in that
    order already. Built once per layout and kept while the next step has the same.
    """

    def __init__(
        self,
        key: tuple[object, ...],
        order: list[torch.Tensor],
        parts: list[tuple[nn.Module, Part]],
        held: _Held,
    ) -> None:
        self.key = key
        # the key holds their ids: kept alive here, so no other tensor can take one
        self._indices = [part.index for _, part in parts]
        starts: dict[int, int] = {}
        total = 0
        for p in order:
            starts[id(p)] = total
            total += p.numel()
        self.total = total
        local = [_positions(module, starts) for module, _ in parts]
        # per held tensor: its part, and its first column and width in the part's layout
        owners: list[tuple[int, int, int]] = []
        for n, (_, part) in enumerate(parts):
            column = 0
            for t in part.held:
                owners.append((n, column, t.shape[1]))
                column += t.shape[1]
        segments: list[torch.Tensor] = []
        for members in held.layout:
            for h in members:
                n, column, width = owners[h]
                cols = torch.arange(column, column + width)
                index = parts[n][1].index
                segments.append(local[n][cols if index is None else index.cpu()[cols]])
        for n, (_, part) in enumerate(parts):
            if part.write is not None:
                segments.append(local[n])
        targets = torch.cat(segments) if segments else torch.zeros(0, dtype=torch.int64)
        raw = targets.numel()
        if torch.equal(targets, torch.arange(total)):
            self.perm: torch.Tensor | None = None
            self.zero = False
        else:  # values of parameters the optimizer does not hold (at -1) are left out
            kept = targets >= 0
            perm = torch.full((total,), raw, dtype=torch.int64)
            perm[targets[kept]] = torch.arange(raw)[kept]
            self.perm = perm
            self.zero = bool((perm == raw).any())  # a parameter took no part in this step
        self._on: dict[torch.device, torch.Tensor] = {}

    def lay(self, raw: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        """The sums in the optimizer's order: written into ``out`` if given, else a new tensor."""
        if out is not None and any(t.dtype != out.dtype for t in raw):
            return out.copy_(self.lay(raw))
        if self.zero:
            raw = [*raw, raw[0].new_zeros(1) if raw else torch.zeros(1)]
        if self.perm is None:
            if out is None:
                return torch.cat(raw) if len(raw) > 1 else raw[0].clone()
            return torch.cat(raw, out=out) if len(raw) > 1 else out.copy_(raw[0])
        laid = torch.cat(raw) if len(raw) > 1 else raw[0]
        perm = self._on.get(laid.device)
        if perm is None:
            perm = self._on[laid.device] = self.perm.to(laid.device)
        if out is None:
            return laid.index_select(0, perm)
        return torch.index_select(laid, 0, perm, out=out)


def _positions(module: nn.Module, starts: dict[int, int]) -> torch.Tensor:
    """Where the layer's trainable parameters' values lie among the optimizer's, in order.

    -1 for the values of a parameter the optimizer does not hold (it is not updated,
    but its per-sample gradients still count in the norms).
    """
    ranges = []
    for p in trainable(module):
        start = starts.get(id(p))
        if start is None:
            ranges.append(torch.full((p.numel(),), -1, dtype=torch.int64))
        else:
            ranges.append(torch.arange(start, start + p.numel()))
    return torch.cat(ranges) if ranges else torch.zeros(0, dtype=torch.int64)


class BookKeeping:
    """Routes a module's layers through their recording forwards while attached."""

    def __init__(self, module: nn.Module, *, loss_reduction: str, views: int = 1) -> None:
        self.loss_reduction = loss_reduction
        self.views = views
        self.tape = Tape()
        self._last_plan: _Plan | None = None
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
    def params(self) -> list[torch.Tensor]:
        """The trainable parameters of the layers, in order."""
        return [p for layer in self.layers for p in trainable(layer.module)]

    def write_clipped_sum(
        self, max_grad_norm: float, order: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Set every ``p.grad`` of ``order`` (the layers' parameters by default) to Σ_i c_i ∇_i.

        The gradients are views of one tensor (:meth:`clipped_sum`), each in its
        parameter's dtype and on its device. Returns the per-sample norms.
        """
        params = self.params() if order is None else order
        total, found = self.clipped_sum(max_grad_norm, params)
        place(params, total)
        return found

    def clipped_sum(
        self, max_grad_norm: float, order: list[torch.Tensor], out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Σ_i c_i ∇_i`` of the parameters of ``order`` laid end to end, and the norms ‖∇_i‖.

        Written into ``out`` (of the sums' dtype and device) if given. Nothing here is
        differentiated (no graph is built, whatever the caller's grad mode).
        """
        with torch.no_grad():
            return self._clipped_sum(max_grad_norm, order, out)

    def _clipped_sum(
        self, max_grad_norm: float, order: list[torch.Tensor], out: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
        parts: list[tuple[nn.Module, Part]] = []
        for layer in self.layers:
            record = records.get(layer.slot)
            if record is not None:
                a, g = record
                parts.append((layer.module, layer.rule.part(layer.module, a, g, self.views)))
        records.clear()
        pieces = [n for _, part in parts for n in part.norms]
        held = _Held([t for _, part in parts for t in part.held])
        pieces += [torch.linalg.vector_norm(m, dim=1) for m in held.matrices]
        if len({n.dtype for n in pieces}) > 1:
            wide = any(n.dtype == torch.float64 for n in pieces)
            pieces = [n.to(torch.float64 if wide else torch.float32) for n in pieces]
        found: torch.Tensor = torch.linalg.vector_norm(torch.stack(pieces), dim=0)
        if scale != 1.0:
            found.mul_(scale)
        # c_i = min(1, C / (‖∇_i‖ + 1e-6)), times the scale that turns the records' g
        # into each sample's own
        weights = found.add(1e-6).reciprocal_().mul_(max_grad_norm * scale).clamp_(max=scale)
        raw = held.sums(weights)
        for _, part in parts:
            if part.write is not None:
                raw += [t.reshape(-1) for t in part.write(weights)]
        return self._plan(order, parts, held).lay(raw, out), found

    def _plan(
        self, order: list[torch.Tensor], parts: list[tuple[nn.Module, Part]], held: _Held
    ) -> _Plan:
        # Everything the plan depends on: which parameters, of what shapes, in what order;
        # each layer's parameters and the layout of its part; how the held ones are shared.
        key = (
            tuple([(id(p), p.shape) for p in order]),
            tuple(
                [
                    (
                        tuple(map(id, trainable(m))),
                        tuple([t.shape[1] for t in part.held]),
                        id(part.index),
                        part.write is None,
                    )
                    for m, part in parts
                ]
            ),
            tuple(map(tuple, held.layout)),
        )
        plan = self._last_plan
        if plan is None or plan.key != key:
            plan = self._last_plan = _Plan(key, order, parts, held)
        return plan


def place(params: list[torch.Tensor], total: torch.Tensor) -> None:
    """Set each ``p.grad`` to its values in ``total`` (laid end to end, in order)."""
    for p, grad in zip(params, laid_out(params, total), strict=True):
        if grad.dtype != p.dtype or grad.device != p.device:
            grad = grad.to(p.device, p.dtype)
        p.grad = grad
