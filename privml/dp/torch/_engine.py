"""Wiring one training mode: the module wrapper, the guarded optimizer and the loss.

Modes: ``"ghost"`` (Opacus ghost clipping, the default), ``"hooks"`` (Opacus
per-sample gradients) and ``"bk"`` (privml's book-keeping for Linear,
Embedding, convolution, normalization and attention layers, one backward
pass). All three clip each sample's whole gradient to ``max_grad_norm`` and
add the same Gaussian noise through Opacus's optimizers, so they release the
same mechanism.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer
from opacus.utils.fast_gradient_clipping_utils import (
    DPLossFastGradientClipping,
    DPTensorFastGradientClipping,
)
from opacus.validators import ModuleValidator
from torch import nn

from ...exceptions import ConfigurationError
from .._training_spec import OPTIMIZER_EXPECTED, loss_reduction
from ._bk import BookKeeping, check_bk_module
from ._bk_layout import Probed, check_batch_first, clipped_layers, zero_rows
from ._noise import NoiseSource
from ._opacus import GhostModule, strip
from ._optim import BKOptimizer, GhostOptimizer, HooksOptimizer, StepGuard

__all__ = ["FIRST_LAYER_HOOK", "Engine", "Sample", "build", "prepare_module"]

#: One row of what the module's forward takes: its shape and dtype.
Sample = tuple[tuple[int, ...], torch.dtype]

# torch warns when a hooked layer's inputs need no gradient: true of the first layer on
# every data batch, harmless, and nothing the caller can act on.
FIRST_LAYER_HOOK = "Full backward hook is firing when gradients are computed with respect to"


class _PerSampleLoss:
    """A criterion whose ``reduction='none'`` gives one loss per sample (what ghost clipping needs).

    Losses over several outputs per sample (e.g. MSE on ``(N, k)``) are
    averaged (or summed, for ``reduction='sum'``) within each sample, so the
    batch's reduced loss is unchanged.
    """

    def __init__(self, criterion: Any, reduction: str) -> None:
        self.criterion = criterion
        self.reduction = reduction

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.reduction != "none":
            out: torch.Tensor = self.criterion(*args, **kwargs)
            return out
        saved = self.criterion.reduction
        self.criterion.reduction = "none"
        try:
            losses: torch.Tensor = self.criterion(*args, **kwargs)
        finally:
            self.criterion.reduction = saved
        if losses.dim() <= 1:
            return losses
        flat = losses.reshape(losses.shape[0], -1)
        return flat.mean(1) if saved == "mean" else flat.sum(1)


class _QuietLoss(DPTensorFastGradientClipping):  # type: ignore[misc]
    """Opacus's ghost-clipping loss, without torch's first-layer hook warning."""

    def backward(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=FIRST_LAYER_HOOK, category=UserWarning)
            super().backward()


class _GhostLoss(DPLossFastGradientClipping):  # type: ignore[misc]
    """Opacus's ghost-clipping criterion, returning :class:`_QuietLoss`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        loss = super().__call__(*args, **kwargs)
        return _QuietLoss(loss.module, loss.optimizer, loss.loss_per_sample, loss.loss_reduction)


@dataclass
class Engine:
    """What a run hands the user, and how to take it apart afterwards."""

    model: nn.Module
    optimizer: Any
    criterion: Any
    plain: nn.Module
    close: Callable[[], nn.Module]


def prepare_module(
    module: nn.Module, optimizer: torch.optim.Optimizer, *, mode: str, fix_module: bool
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Check (and with ``fix_module``, fix) the module for DP-SGD in ``mode``; touches no data.

    ``mode`` is one of :data:`~privml.dp._training_spec.MODES`, ``module`` a torch module and
    ``optimizer`` a torch optimizer (a :class:`~privml.dp.torch.TrainingSpec` checked them).
    """
    if isinstance(module, GradSampleModule | GradSampleModuleFastGradientClipping):
        raise ConfigurationError("pass the plain nn.Module; privml wraps it itself")
    if isinstance(optimizer, DPOptimizer):
        raise ConfigurationError(OPTIMIZER_EXPECTED)
    owned = {id(p) for p in module.parameters()}
    for group in optimizer.param_groups:
        if any(id(p) not in owned for p in group["params"]):
            raise ConfigurationError("the optimizer holds parameters that are not the module's")
    module.train()
    for name, sub in module.named_modules():
        # torch's base of every BatchNorm (1d/2d/3d, lazy, sync): it has no public name.
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in sub.parameters(recurse=False)
        ):
            raise ConfigurationError(
                f"{name or 'the module'} is a {type(sub).__name__} without trainable parameters: "
                "it mixes the samples of a batch, so per-sample clipping does not bound one "
                "record's influence. Replace it with nn.GroupNorm or nn.LayerNorm."
            )
    errors = ModuleValidator.validate(module, strict=False)
    if errors:
        if not fix_module:
            found = "; ".join(str(e) for e in errors)
            raise ConfigurationError(
                f"the module cannot be trained with DP-SGD as it is: {found}. Pass "
                "fix_module=True to let Opacus's ModuleValidator.fix replace these layers "
                "(BatchNorm becomes GroupNorm) in a copy: run.model then trains the copy, "
                "not your module."
            )
        fixed = ModuleValidator.fix(module)
        still = ModuleValidator.validate(fixed, strict=False)
        if still:
            raise ConfigurationError(f"ModuleValidator.fix could not fix the module: {still}")
        optimizer = _rebind(optimizer, module, fixed)
        _warn_reordered_heads(module, mode)
        module = fixed
    if mode == "bk":
        check_bk_module(module)
    else:
        _refuse_padded_convolutions(module, mode)
    return module, optimizer


def _refuse_padded_convolutions(module: nn.Module, mode: str) -> None:
    """Refuse convolutions padded other than with zeros in Opacus's modes.

    Opacus (1.6) unfolds every convolution's input with zero padding, so for a
    reflect, replicate or circular padded layer its per-sample gradients are not the
    layer's: a sample's clipped contribution could then exceed ``max_grad_norm``.
    """
    found = [
        f"{name or 'the module'} ({type(sub).__name__}, padding_mode={sub.padding_mode!r})"
        for name, sub in module.named_modules()
        if isinstance(sub, nn.modules.conv._ConvNd)
        and sub.padding_mode != "zeros"
        and any(p.requires_grad for p in sub.parameters(recurse=False))
    ]
    if found:
        raise ConfigurationError(
            f"grad_sample_mode={mode!r} clips with Opacus, whose per-sample gradients of a "
            "convolution assume zero padding, so it would mis-clip these layers: "
            f"{', '.join(found)}. Use grad_sample_mode='bk', which clips them exactly, or "
            "padding_mode='zeros'."
        )


def _warn_reordered_heads(module: nn.Module, mode: str) -> None:
    """Warn where the fix makes a batch-first, multi-head attention compute another function.

    Opacus's DPMultiheadAttention (opacus 1.5 and 1.6) joins the heads of a batch-first
    output in another order than torch, so the fixed copy keeps the weights but not the
    outputs: a model trained from scratch is sound (each sample's output still depends on
    that sample alone), a pretrained one is not what it was. Sequence-first attention keeps
    torch's order, but only book-keeping clips it per sample: Opacus's modes read every
    layer's input as batch first, and :func:`._bk_layout.check_batch_first` refuses it there.
    """
    keep = (
        "With grad_sample_mode='bk', batch_first=False (sequence-first inputs, transposed "
        "in your forward) keeps the same function"
        if mode == "bk"
        else "grad_sample_mode='bk' with batch_first=False (sequence-first inputs, "
        "transposed in your forward) keeps the same function; the Opacus modes refuse "
        "sequence-first attention, whose per-sample gradients they would mis-clip"
    )
    for name, sub in module.named_modules():
        if isinstance(sub, nn.MultiheadAttention) and sub.batch_first and sub.num_heads > 1:
            warnings.warn(
                f"fix_module=True replaces {name or 'the module'} (nn.MultiheadAttention, "
                "batch_first=True, several heads) by Opacus's DPMultiheadAttention, which "
                "combines the heads of batch-first outputs in another order: it keeps the "
                "weights but computes other outputs, so pretrained attention weights do not "
                f"carry over (training from scratch is unaffected). {keep}",
                UserWarning,
                stacklevel=4,
            )


def _rebind(
    optimizer: torch.optim.Optimizer, old: nn.Module, new: nn.Module
) -> torch.optim.Optimizer:
    """The same optimizer (class, groups, settings) over the fixed copy's parameters.

    A parameter keeps its group by name. A layer the fix replaced by one with other
    parameters (nn.MultiheadAttention's ``in_proj_weight`` becomes DPMultiheadAttention's
    ``qlinear.weight``, ...) passes its group to the new ones: silently leaving them out
    would keep them untrained while their gradients still count in every clip norm.
    """
    names = {id(p): n for n, p in old.named_parameters()}
    params = dict(new.named_parameters())
    groups = []
    for group in optimizer.param_groups:
        moved = [params[names[id(p)]] for p in group["params"] if names[id(p)] in params]
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": moved})
    kept = {n for n, p in old.named_parameters()}
    for name, p in params.items():
        if name not in kept and p.requires_grad:
            index = _group_of_replaced(optimizer, old, new, name)
            if index is None:
                p.requires_grad_(False)  # its layer was frozen (not in the optimizer): still so
            else:
                groups[index]["params"].append(p)
    try:
        return type(optimizer)(groups, **optimizer.defaults)
    except TypeError as err:
        raise ConfigurationError(
            f"cannot rebuild {type(optimizer).__name__} for the fixed module ({err}); fix the "
            "module first with opacus.validators.ModuleValidator.fix, then build the optimizer"
        ) from err


def _group_of_replaced(
    optimizer: torch.optim.Optimizer, old: nn.Module, new: nn.Module, name: str
) -> int | None:
    """The optimizer group of the layer the fix replaced to make parameter ``name``.

    ``None`` when none of that layer's parameters were trainable in the optimizer; a
    ConfigurationError when they were split (some in, some out, or in several groups).
    """
    before, after = dict(old.named_modules()), dict(new.named_modules())
    path = name.rpartition(".")[0]
    while path not in before or type(before[path]) is type(after[path]):
        if not path:
            raise ConfigurationError(
                f"ModuleValidator.fix added parameter {name!r} outside any layer it replaced; "
                "fix the module first with opacus.validators.ModuleValidator.fix, then build "
                "the optimizer"
            )
        path = path.rpartition(".")[0]
    layer = before[path]
    owned = {id(p) for p in layer.parameters()}
    where = {
        i: sum(id(p) in owned for p in group["params"])
        for i, group in enumerate(optimizer.param_groups)
    }
    found = {i for i, count in where.items() if count}
    trainable = [p for p in layer.parameters() if p.requires_grad]
    if not found and not trainable:
        return None
    if len(found) == 1 and where[min(found)] == len(trainable) == len(owned):
        return min(found)
    label = path or "the module"
    raise ConfigurationError(
        f"fix_module=True replaces {label} ({type(layer).__name__}) by a "
        f"{type(after[path]).__name__} with other parameters, and the optimizer holds only "
        "some of its parameters (or holds them in several groups), so privml cannot tell "
        "which the new ones join. Fix the module first with "
        "opacus.validators.ModuleValidator.fix, then build the optimizer over its parameters"
    )


def build(
    mode: str,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Any,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    batch_size: int,
    guard: StepGuard | None,
    noise: NoiseSource | None = None,
    views: int = 1,
    sample: Sample | None = None,
) -> Engine:
    """Wrap ``module`` and ``optimizer`` for ``mode``; ``guard`` sits in front of every step.

    The noise comes from ``noise`` (a new OS-seeded :class:`NoiseSource` when not given).
    ``views``: each sample's consecutive rows whose gradients are averaged before
    clipping (``augmentations=``; ``"hooks"`` and ``"bk"`` only).

    ``sample``: the shape and dtype of one row the forward takes. Given, the module is
    probed here on rows of zeros (:func:`._bk_layout.check_batch_first`), so a module
    that does not keep the batch where its layers are clipped is refused before
    anything is wired or read. Without it the probe runs at the first forward, with
    that batch's row shape: a refusal then comes after that batch was drawn, and a
    run's first batch is charged.
    """
    if views > 1 and mode == "ghost":
        raise ConfigurationError("augmentations > 1 needs grad_sample_mode='hooks' or 'bk'")
    layers = clipped_layers(module, mode)
    probe: torch.utils.hooks.RemovableHandle | None = None
    if sample is not None:
        shape, dtype = sample
        check_batch_first(module, layers, zero_rows(shape, dtype, _device(module)), mode=mode)
    else:
        probe = _probe_first_forward(module, layers, mode)
    noise = noise if noise is not None else NoiseSource()
    reduction = loss_reduction(criterion)
    settings = {
        "noise_multiplier": noise_multiplier,
        "max_grad_norm": max_grad_norm,
        "expected_batch_size": batch_size,
        "loss_reduction": reduction,
    }
    if mode == "bk":
        bk = BookKeeping(module, loss_reduction=reduction, views=views)
        dp_optimizer = BKOptimizer(optimizer, **settings)
        dp_optimizer.bookkeeping = bk
        dp_optimizer.privml_guard = guard
        dp_optimizer.privml_noise = noise

        def close_bk() -> nn.Module:
            if probe is not None:
                probe.remove()
            bk.detach()
            strip(module)
            return module

        return Engine(module, dp_optimizer, criterion, module, close_bk)
    wrapped: Any
    if mode == "hooks":
        wrapped = GradSampleModule(module, batch_first=True, loss_reduction=reduction)
        wrapped.forbid_grad_accumulation()
        dp_optimizer = HooksOptimizer(optimizer, **settings)
        dp_optimizer.privml_views = views
        loss = criterion
    else:
        wrapped = GhostModule(
            module,
            batch_first=True,
            loss_reduction=reduction,
            max_grad_norm=max_grad_norm,
            use_ghost_clipping=True,
        )
        dp_optimizer = GhostOptimizer(optimizer, **settings)
        dp_optimizer.ghost_module = wrapped
        loss = _GhostLoss(wrapped, dp_optimizer, _PerSampleLoss(criterion, reduction), reduction)
    dp_optimizer.privml_guard = guard
    dp_optimizer.privml_noise = noise

    def close() -> nn.Module:
        if probe is not None:
            probe.remove()
        plain: nn.Module = wrapped.to_standard_module()  # hooks and per-sample attributes off
        strip(plain)
        return plain

    return Engine(wrapped, dp_optimizer, loss, module, close)


def _device(module: nn.Module) -> Callable[[], torch.device]:
    """Where the module's parameters are when asked (the CPU when it has none)."""

    def where() -> torch.device:
        first = next(module.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    return where


def _probe_first_forward(
    module: nn.Module, layers: list[Probed], mode: str
) -> torch.utils.hooks.RemovableHandle:
    """Probe the layout at the module's first forward, on rows shaped as that batch's.

    The hook stays until a probe passes: a refused module is refused at every forward.
    """
    running = False

    def first(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        nonlocal running
        if running:  # the probe's own forward
            return
        x = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        running = True
        try:
            device = x.device
            zeros = zero_rows(tuple(x.shape[1:]), x.dtype, lambda: device)
            check_batch_first(module, layers, zeros, mode=mode)
        finally:
            running = False
        handle.remove()

    handle = module.register_forward_pre_hook(first, with_kwargs=True)
    return handle
