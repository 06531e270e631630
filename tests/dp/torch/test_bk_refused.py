"""Book-keeping refuses, by path and type, every trainable layer it has no rule for.

Nothing is slowed down or clipped differently in its place: the refusal comes
when the module is checked, before any data is read or any step is taken.
"""

from __future__ import annotations

import pytest
import torch
from opacus.layers import DPLSTM, DPMultiheadAttention
from torch import nn

from privml import ConfigurationError
from privml.dp.torch._bk import BookKeeping, check_bk_module


class OwnLinear(nn.Linear):
    """A user's subclass: its forward may compute anything, so no rule applies to it."""


class Scaled(nn.Module):
    """A user's module with a parameter of its own, used directly in its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x * self.scale)


def _encoder_layer(attention: nn.Module | None = None) -> nn.Module:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    if attention is not None:
        layer.self_attn = attention
    return layer


# (module, the label the refusal must carry)
REFUSED = {
    "conv3d": (nn.Sequential(nn.Conv3d(1, 2, 2), nn.Flatten()), "0 (Conv3d)"),
    "conv_transpose": (nn.Sequential(nn.ConvTranspose2d(1, 2, 2)), "0 (ConvTranspose2d)"),
    "batch_norm": (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), "1 (BatchNorm1d)"),
    "prelu": (nn.Sequential(nn.Linear(4, 4), nn.PReLU()), "1 (PReLU)"),
    "embedding_bag": (nn.Sequential(nn.EmbeddingBag(10, 4)), "0 (EmbeddingBag)"),
    "torch_attention": (
        nn.ModuleDict({"attention": nn.MultiheadAttention(8, 2, batch_first=True)}),
        "attention (MultiheadAttention)",
    ),
    "encoder_with_torch_attention": (
        nn.Sequential(_encoder_layer()),
        "0 (TransformerEncoderLayer)",
    ),
    "lstm": (nn.ModuleDict({"rnn": DPLSTM(4, 4, batch_first=True)}), "rnn (DPLSTM)"),
    "decoder": (
        nn.Sequential(nn.TransformerDecoderLayer(8, 2, 16, batch_first=True)),
        "0 (TransformerDecoderLayer)",
    ),
    "subclass": (nn.Sequential(OwnLinear(4, 4)), "0 (OwnLinear, parameters of its own)"),
    "own_parameter": (Scaled(), "Scaled (Scaled, parameters of its own)"),
    "frozen_weight": (
        nn.Sequential(nn.Conv2d(1, 2, 3).requires_grad_(False), nn.Linear(2, 2)),
        "0 (a trainable bias with a frozen weight)",
    ),
    "embedding_max_norm": (
        nn.Sequential(nn.Embedding(10, 4, max_norm=1.0)),
        "0 (max_norm, scale_grad_by_freq or sparse)",
    ),
}
REFUSED["frozen_weight"][0][0].bias.requires_grad_(True)


@pytest.mark.parametrize("case", list(REFUSED))
def test_bk_refuses_a_layer_without_a_rule_by_path_and_type(case):
    module, label = REFUSED[case]
    before = {name: type(sub) for name, sub in module.named_modules()}
    with pytest.raises(ConfigurationError, match="not supported") as refused:
        BookKeeping(module, loss_reduction="sum")
    assert label in str(refused.value)
    assert "grad_sample_mode='ghost'" in str(refused.value)
    assert {name: type(sub) for name, sub in module.named_modules()} == before
    assert all("forward" not in sub.__dict__ for sub in module.modules())  # nothing attached


def test_bk_names_every_refused_layer_at_once_and_each_once():
    module = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.PReLU(), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    )
    with pytest.raises(ConfigurationError) as refused:
        check_bk_module(module)
    message = str(refused.value)
    assert "1 (PReLU)" in message and "2.1 (BatchNorm1d)" in message
    assert "Conv2d" not in message.split("not supported:")[1]
    assert message.count("PReLU") == 1


def test_bk_ignores_frozen_layers_of_any_kind():
    module = nn.Sequential(nn.Conv3d(1, 2, 2), nn.Flatten(), nn.LazyLinear(2))
    module[0].requires_grad_(False)
    module(torch.randn(1, 1, 3, 3, 3))  # the lazy head takes its size
    assert check_bk_module(module) == [module[2]]


def test_bk_refuses_attention_whose_parts_it_cannot_clip():
    attention = DPMultiheadAttention(8, 2, batch_first=True)
    attention.out_proj = nn.Bilinear(8, 8, 8)  # no rule: the whole path is named
    with pytest.raises(ConfigurationError, match=r"out_proj \(Bilinear\)"):
        check_bk_module(nn.ModuleDict({"attention": attention}))


def test_bk_refuses_a_module_with_nothing_to_train():
    with pytest.raises(ConfigurationError, match="no trainable parameters"):
        check_bk_module(nn.Sequential(nn.Linear(2, 2).requires_grad_(False)))


def test_bk_refuses_a_layer_run_twice_in_one_step():
    conv = nn.Conv1d(2, 2, 1)
    module = nn.Sequential(conv, conv)
    bk = BookKeeping(module, loss_reduction="sum")
    with pytest.raises(ConfigurationError, match="once per optimizer step"):
        module(torch.randn(3, 2, 4)).sum().backward()
    bk.detach()
    single = nn.Sequential(nn.GroupNorm(1, 2))
    bk = BookKeeping(single, loss_reduction="sum")
    single(torch.randn(3, 2, 4)).pow(2).sum().backward()
    with pytest.raises(ConfigurationError, match="once per optimizer step"):
        single(torch.randn(3, 2, 4)).pow(2).sum().backward()  # two batches, one step
    bk.detach()


class ChangesInPlace(nn.Module):
    """Changes a layer's input in place after the layer took it (its records would be stale)."""

    def __init__(self, layer: nn.Module, width: int) -> None:
        super().__init__()
        self.first = nn.Linear(width, width)
        self.layer = layer
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        out = self.layer(h.unsqueeze(1)).flatten(1)
        h.mul_(3.0)  # the layer saw h, its record would hold 3h
        return self.head(out + h)


@pytest.mark.parametrize(
    "layer",
    [nn.Conv1d(1, 1, 1), nn.GroupNorm(1, 1), nn.LayerNorm(6)],
    ids=["conv", "group_norm", "layer_norm"],
)
def test_bk_refuses_a_layer_input_changed_in_place_after_use(layer):
    """Not silently mis-clipped: the record's version is checked when the gradient arrives."""
    module = ChangesInPlace(layer, 6)
    bk = BookKeeping(module, loss_reduction="sum")
    # autograd's own version check refuses this as well for layers that saved the input
    # for their backward (a RuntimeError); book-keeping's own check names the cause
    with pytest.raises((ConfigurationError, RuntimeError), match=r"in place|inplace"):
        module(torch.randn(3, 6)).sum().backward()
    bk.detach()


def test_bk_version_check_names_the_cause_for_a_convolution():
    module = ChangesInPlace(nn.Conv1d(1, 1, 1), 6)
    bk = BookKeeping(module, loss_reduction="sum")
    with pytest.raises(ConfigurationError, match="changed in place after the layer used it"):
        module(torch.randn(3, 6)).sum().backward()
    bk.detach()


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_opacus_modes_refuse_convolutions_padded_other_than_with_zeros(mode):
    """Opacus unfolds with zero padding: its norms of a reflect-padded layer are wrong."""
    from privml.dp.torch._engine import prepare_module

    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(8, 2)
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ConfigurationError, match=r"0 \(Conv2d, padding_mode='reflect'\)"):
        prepare_module(net, opt, mode=mode, fix_module=False)
    prepared, _ = prepare_module(net, opt, mode="bk", fix_module=False)
    assert prepared is net
    net[0].requires_grad_(False)  # frozen: no per-sample gradient to get wrong
    prepare_module(net, opt, mode=mode, fix_module=False)
