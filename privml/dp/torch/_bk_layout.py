"""Where each clipped layer sees the batch: checked on rows of zeros before any data is read.

Why it matters for privacy: every clipping mode takes sample ``i``'s gradient
from row ``i`` of one dimension of each layer's input (dimension 0 for
Opacus's hooks and ghost modes; for book-keeping, dimension 0 or the batch
dimension its rule names, 1 inside sequence-first attention). A module that
transposes to sequence-first ``(T, N, d)`` before its Linears, reshapes the
batch into rows ``(N·T, d)``, or feeds batch-first tensors to
``nn.MultiheadAttention(batch_first=False)`` puts something else there. When
the sizes happen to agree (``T == N``) nothing fails, but each "sample" the
clipping bounds is then a position or a slice of several records, so one
record's contribution can exceed ``max_grad_norm``: the guarantee the ledger
charges for would not hold.

:func:`check_batch_first` runs the module's forward on 2 and then 3 rows of
zeros (under ``torch.no_grad()``), notes every clipped layer's input, and
refuses, naming the layer and the shape it saw, unless that dimension held 2
and then 3 rows. Two sizes, so that no fixed length can pass for the batch
both times. The probe leaves no trace: the training flags, buffers
(values and version counters) and torch's random state are as they were
before it (a module with dropout draws nothing from the run's generator).
Parameters are not copied (that would double their memory for a moment):
a forward that writes a parameter in place is refused by name, as the
run's step guard would refuse its first step. A layer the probe does not
reach (one used only on some inputs) is not checked here; book-keeping still
refuses a step whose layers disagree on the size of their batch dimension.

Rows of zeros say nothing about which rows belong together: a module that
shuffles rows of different samples into one, keeping the sizes, is not
caught (it mixes samples, which no per-sample clipping can bound). Like the
run's other guards in the caller's process, the probe catches mistakes, not a
forward written to tell its rows from data and behave otherwise on them; a
server-side run trains a declared network, sent as data rather than code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from opacus.layers import DPMultiheadAttention
from torch import nn

from ...exceptions import ConfigurationError
from ._bk import bk_layers

__all__ = ["Probed", "check_batch_first", "clipped_layers", "zero_rows"]

#: The two batch sizes the forward is probed with.
SIZES = (2, 3)


@dataclass(frozen=True)
class Probed:
    """One clipped layer: its name in the module, the layer, and the dimension read as the batch."""

    name: str
    module: nn.Module
    batch_dim: int


def zero_rows(
    shape: Sequence[int], dtype: torch.dtype, device: Callable[[], torch.device]
) -> Callable[[int], torch.Tensor]:
    """A maker of ``n`` rows of zeros of one row's ``shape`` and ``dtype``, on ``device()``."""

    def make(n: int) -> torch.Tensor:
        return torch.zeros((n, *shape), dtype=dtype, device=device())

    return make


def clipped_layers(module: nn.Module, mode: str) -> list[Probed]:
    """The layers ``mode`` clips per sample, with the dimension it reads as their batch.

    ``"bk"``: book-keeping's layers and their rules' batch dimensions. Opacus's
    modes: every submodule with trainable parameters of its own, batch first
    (privml wraps the module with ``batch_first=True``). In every mode also each
    attention, whose query must hold the batch where its ``batch_first`` says: fed
    the other layout, it attends across the samples of a batch, which no layer's
    per-sample gradient bounds.
    """
    names = {id(sub): name or type(sub).__name__ for name, sub in module.named_modules()}
    if mode == "bk":
        found = [Probed(names[id(m)], m, dim) for m, dim in bk_layers(module)]
    else:
        found = [
            Probed(names[id(sub)], sub, 0)
            for sub in module.modules()
            if any(p.requires_grad for p in sub.parameters(recurse=False))
        ]
    return found + [
        Probed(names[id(sub)], sub, 0 if sub.batch_first else 1)
        for sub in module.modules()
        if isinstance(sub, DPMultiheadAttention | nn.MultiheadAttention)
    ]


def check_batch_first(
    module: nn.Module, layers: Sequence[Probed], zeros: Callable[[int], Any], *, mode: str
) -> None:
    """Refuse unless every layer in ``layers`` sees the batch in its ``batch_dim``.

    ``zeros(n)`` is what the module's forward takes for ``n`` rows (of zeros).
    Raises :class:`~privml.exceptions.ConfigurationError` naming each layer whose
    input did not hold 2, then 3 rows there; also when the forward itself fails.
    """
    seen: dict[int, list[tuple[int, ...] | None]] = {}
    problems: dict[str, str] = {}
    with _untouched(module), _recording(layers, seen):
        for n in SIZES:
            seen.clear()
            try:
                module(zeros(n))
            except ConfigurationError:
                raise
            except Exception as err:  # the user's forward: any failure, reported
                raise ConfigurationError(
                    f"grad_sample_mode={mode!r} checks where each layer sees the batch by "
                    f"running the module on {n} rows of zeros before any data is read, and "
                    f"that forward failed ({type(err).__name__}: {err}). Make the forward "
                    "accept rows of zeros of the data's shape; nothing was charged"
                ) from err
            for layer in layers:
                for shape in seen.get(id(layer.module), []):
                    found = _wrong(shape, layer.batch_dim, n)
                    if found is not None and layer.name not in problems:
                        problems[layer.name] = found
    if problems:
        listed = "; ".join(f"{name} ({why})" for name, why in problems.items())
        raise ConfigurationError(
            f"grad_sample_mode={mode!r} clips sample i's gradient from row i of one dimension "
            f"of each layer's input, but on rows of zeros these layers did not see the batch "
            f"there: {listed}. A module that transposes to sequence-first (T, N, ...) before "
            "its layers, reshapes the batch into rows (N*T, ...), or passes batch-first "
            "tensors to an attention built with batch_first=False would be clipped per "
            "position or slice instead of per sample, so one record could move the model "
            f"by more than max_grad_norm. {_advice(mode)} Nothing was charged"
        )


def _advice(mode: str) -> str:
    if mode == "bk":
        return (
            "Keep the batch first at every layer (sequence-first tensors only inside an "
            "attention or transformer built with batch_first=False)."
        )
    return (
        "Keep the batch first at every layer, attention included (batch_first=True), or use "
        "grad_sample_mode='bk', which also clips sequence-first attention per sample."
    )


def _wrong(shape: tuple[int, ...] | None, dim: int, n: int) -> str | None:
    """Why an input of ``shape`` does not hold ``n`` rows in ``dim``, or ``None``."""
    if shape is None:
        return "its input is not a tensor"
    if len(shape) <= dim:
        return f"an input of shape {shape} has no dimension {dim}"
    if shape[dim] != n:
        return f"on {n} rows its input had shape {shape}, {shape[dim]} in dimension {dim}"
    return None


@contextmanager
def _recording(
    layers: Sequence[Probed], seen: dict[int, list[tuple[int, ...] | None]]
) -> Iterator[None]:
    """Note the shape of each layer's first tensor input in ``seen`` while inside."""

    def note(sub: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        seen.setdefault(id(sub), []).append(None if first is None else tuple(first.shape))

    handles = [layer.module.register_forward_pre_hook(note, with_kwargs=True) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _untouched(module: nn.Module) -> Iterator[None]:
    """Run the block under ``no_grad``; then put back flags, buffers and RNG, and refuse
    a forward that wrote a parameter (named)."""
    flags = [(sub, sub.training) for sub in module.modules()]
    buffers = [
        (sub, name, b, b.detach().clone(), b._version)
        for sub in module.modules()
        for name, b in sub._buffers.items()
        if b is not None
    ]
    params = [(name, p, p._version) for name, p in module.named_parameters()]
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # type: ignore[no-untyped-call]
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for sub, training in flags:
            sub.training = training
        with torch.no_grad():
            for sub, name, b, saved, version in buffers:
                sub._buffers[name] = b
                _put_back(b, saved, version)
    written = [name for name, p, version in params if p._version != version]
    if written:
        raise ConfigurationError(
            f"the module's forward writes its parameters in place ({', '.join(written)}): "
            "only run.optimizer.step() may change them, or an update would skip clipping "
            "and noise. Keep parameters out of in-place operations in forward; nothing "
            "was charged"
        )


def _put_back(t: torch.Tensor, saved: torch.Tensor, version: int) -> None:
    """``t`` holding ``saved`` again, with its version counter as it was.

    Compared by value too: torch's fused kernels (BatchNorm's running statistics) write
    in place without moving the version counter.
    """
    if t._version == version and torch.equal(t, saved):
        return
    t.copy_(saved)
    torch._C._autograd._unsafe_set_version_counter((t,), (version,))
