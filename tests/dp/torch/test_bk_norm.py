"""Book-keeping's normalization rules against Opacus hooks: norms and clipped sums to 1e-5."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from _bk_reference import assert_same, bookkeeping, opacus_hooks, per_sample_loop
from torch import nn

from privml import ConfigurationError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


class Pooled(nn.Module):
    """A Linear into the norm, then the mean over every dimension but the batch, a head."""

    def __init__(self, norm: nn.Module, width: int) -> None:
        super().__init__()
        self.inputs = nn.Linear(width, width)
        self.norm = norm
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.inputs(x))
        if h.dim() > 2:  # (N, ..., width): positions averaged
            h = h.flatten(1, -2).mean(1)
        return self.head(torch.tanh(h))


class Channels(nn.Module):
    """A 1×1 convolution into a channel norm, pooled, then a head."""

    def __init__(self, norm: nn.Module, channels: int, dims: int) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.inputs = conv(channels, channels, 1)
        self.norm = norm
        self.head = nn.Linear(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.norm(self.inputs(x)))
        return self.head(h.flatten(2).mean(2))


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "layer_norm": (lambda: Pooled(nn.LayerNorm(6), 6), (6,)),
    "layer_norm_sequence": (lambda: Pooled(nn.LayerNorm(6), 6), (4, 6)),
    "layer_norm_no_bias": (lambda: Pooled(nn.LayerNorm(6, bias=False), 6), (2, 3, 6)),
    "rms_norm": (lambda: Pooled(nn.RMSNorm(6), 6), (5, 6)),
    "group_norm_2d": (lambda: Channels(nn.GroupNorm(2, 4), 4, 2), (4, 3, 3)),
    "group_norm_1d": (lambda: Channels(nn.GroupNorm(3, 6), 6, 1), (6, 5)),
    "instance_norm_1d": (lambda: Channels(nn.InstanceNorm1d(4, affine=True), 4, 1), (4, 7)),
    "instance_norm_2d": (lambda: Channels(nn.InstanceNorm2d(3, affine=True), 3, 2), (3, 4, 4)),
}

# Opacus 1.6's LayerNorm sampler reads ``layer.bias.requires_grad`` and fails without a
# bias: a loop over the samples is the reference there.
OPACUS_FAILS = {"layer_norm_no_bias"}


def _build(case: str) -> nn.Module:
    torch.manual_seed(0)
    net = CASES[case][0]().double()
    torch.manual_seed(1)
    for p in net.parameters():
        nn.init.normal_(p, std=0.7)  # affine parameters away from (1, 0)
    return net


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("case", list(CASES))
def test_norm_rule_equals_opacus_hooks(case, batch, reduction):
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, *CASES[case][1], generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (batch,), generator=gen)
    got = bookkeeping(_build(case), x, y, reduction)
    if case in OPACUS_FAILS:
        assert_same(got, per_sample_loop(_build(case), x, y))
    else:
        assert_same(got, opacus_hooks(_build(case), x, y, reduction))
    # the norm layer's own share is not nothing: its parameters have gradients
    assert all(v.abs().sum() > 0 for k, v in got[1].items() if k.startswith("norm."))


@pytest.mark.parametrize("case", ["layer_norm_sequence", "group_norm_2d", "instance_norm_1d"])
def test_norm_rule_clips_the_mean_of_each_samples_views(case):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, *CASES[case][1], generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=gen)
    got = bookkeeping(_build(case), x, y, "mean", views=3)
    assert got[0].shape == (2,)
    assert_same(got, per_sample_loop(_build(case), x, y, views=3))


def test_norm_with_only_its_weight_trainable_counts_only_the_weight():
    net = _build("layer_norm_sequence")
    net.norm.bias.requires_grad_(False)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 4, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=gen)
    other = _build("layer_norm_sequence")
    other.norm.bias.requires_grad_(False)
    got = bookkeeping(net, x, y)
    assert "norm.bias" not in got[1]
    assert_same(got, opacus_hooks(other, x, y))


def test_instance_norm_with_running_statistics_is_refused_by_name():
    net = Channels(nn.InstanceNorm1d(4, affine=True, track_running_stats=True), 4, 1)
    with pytest.raises(ConfigurationError, match=r"norm \(track_running_stats=True"):
        bookkeeping(net, torch.randn(2, 4, 3), torch.zeros(2, dtype=torch.long))
