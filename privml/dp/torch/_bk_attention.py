"""Book-keeping inside multi-head attention and torch's transformer encoder.

Opacus's ``DPMultiheadAttention`` (what ``fix_module=True`` makes of
``nn.MultiheadAttention``) is built of ``nn.Linear`` layers, applied to the
query, key, value and attention output: batch first when the attention is,
sequence first ``(T, N, E)`` otherwise. ``nn.TransformerEncoderLayer`` and
``nn.TransformerEncoder`` (their attention fixed so) apply their Linears and
LayerNorms to the same layout as their attention. These layers are therefore
handled as scopes: their parts are clipped by their own rules, the records
of a sequence-first scope taken with the batch in dimension 1. Opacus's
``SequenceBias`` (``add_bias_kv=True``) appends its bias as one more key or
value position: sample ``i``'s gradient is the output gradient there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from opacus.layers import DPMultiheadAttention
from opacus.layers.dp_multihead_attention import SequenceBias
from torch import nn

from ._bk_rule import Part, Rule, Tape, instantiated, record, register, trainable, views_mean

__all__ = ["SCOPES", "SequenceBiasRule"]


def _attention(module: nn.Module) -> int | None:
    """The batch dimension of an attention's Linears (``None``: not DPMultiheadAttention)."""
    if type(module) is not DPMultiheadAttention:
        return None
    return 0 if module.batch_first else 1


def _encoder_layer(module: nn.Module) -> int | None:
    assert isinstance(module, nn.TransformerEncoderLayer)
    return _attention(module.self_attn)


def _encoder(module: nn.Module) -> int | None:
    assert isinstance(module, nn.TransformerEncoder)
    dims = {_encoder_layer(layer) for layer in module.layers}
    return dims.pop() if len(dims) == 1 else None


#: library layer type -> the batch dimension of the layers directly inside it, or None
#: when this instance cannot be handled (it is then refused whole)
SCOPES: dict[type[nn.Module], Callable[[nn.Module], int | None]] = {
    DPMultiheadAttention: _attention,
    nn.TransformerEncoderLayer: _encoder_layer,
    nn.TransformerEncoder: _encoder,
}


@register(SequenceBias)
class SequenceBiasRule(Rule):
    """Opacus's ``SequenceBias``: a bias appended as the last position."""

    def batch_dim(self, module: nn.Module, around: int) -> int:
        assert isinstance(module, SequenceBias)
        return 0 if module.batch_first else 1

    def forward(self, module: nn.Module, tape: Tape, slot: int) -> Callable[..., torch.Tensor]:
        layer = module
        assert isinstance(layer, SequenceBias)
        params = tuple(trainable(layer))

        def forward_bias(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                out: torch.Tensor = SequenceBias.forward(layer, x)
                return out
            bias = layer.bias.detach()
            if layer.batch_first:
                ends = bias.expand(x.shape[0], 1, -1)
                return record(lambda: torch.cat([x, ends], 1), tape, slot, x, params)
            ends = bias.expand(1, x.shape[1], -1)
            return record(lambda: torch.cat([x, ends]), tape, slot, x, params)

        return forward_bias

    def part(self, module: nn.Module, a: torch.Tensor, g: torch.Tensor, views: int) -> Part:
        return instantiated(module, {"bias": views_mean(g[:, -1], views)})
