"""Book-keeping's convolution rule against Opacus hooks: norms and clipped sums to 1e-5."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from _bk_reference import assert_same, bookkeeping, opacus_hooks, per_sample_loop
from torch import nn

from privml.dp.torch import _bk_rule

pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    # torch's own note on an even kernel with padding='same' (the reference sides' layers)
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
]


def _net(conv: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(conv(), nn.Tanh(), nn.Flatten(), nn.LazyLinear(3)).double()

    return build


def _materialize(build: Callable[[], nn.Module], x: torch.Tensor) -> Callable[[], nn.Module]:
    """The same module each time, its lazy head sized by one forward pass."""

    def made() -> nn.Module:
        net = build()
        with torch.no_grad():
            net(x[:1])
        torch.manual_seed(1)
        for p in net.parameters():
            nn.init.normal_(p, std=0.5)
        return net

    return made


CONV2D = {
    # T = 16 positions, p·d = 72·8: the ghost norm where room is short
    "ghost": (lambda: nn.Conv2d(8, 8, 3, padding=1), (8, 4, 4)),
    # T = 49, p·d = 18·4: the per-sample gradients themselves in any case
    "whole": (lambda: nn.Conv2d(2, 4, 3, padding=1), (2, 7, 7)),
    "strided_grouped": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (4, 7, 7)),
    "dilated_no_bias": (lambda: nn.Conv2d(2, 3, (3, 2), dilation=(2, 1), bias=False), (2, 8, 6)),
    "reflect": (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 5, 5)),
    "same": (lambda: nn.Conv2d(2, 3, 4, padding="same"), (2, 6, 6)),
    "circular_ghost": (
        lambda: nn.Conv2d(16, 8, 3, padding=2, padding_mode="circular"),
        (16, 3, 3),
    ),
}
CONV1D = {
    "plain": (lambda: nn.Conv1d(3, 4, 3), (3, 10)),
    "strided_grouped": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2), (4, 11)),
    "ghost": (lambda: nn.Conv1d(16, 16, 5, padding=2), (16, 6)),
    "replicate_same": (
        lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="replicate"),
        (2, 9),
    ),
}
CASES = {f"conv2d-{k}": v for k, v in CONV2D.items()}
CASES |= {f"conv1d-{k}": v for k, v in CONV1D.items()}
# Opacus 1.6 unfolds every input with zero padding, so its per-sample gradients of a
# reflect, replicate or circular padded convolution are not the layer's: a loop over
# the samples is the reference there.
OTHER_PADDING = {"conv2d-reflect", "conv2d-circular_ghost", "conv1d-replicate_same"}


@pytest.fixture(params=["whole", "ghost"])
def path(request, monkeypatch):
    """Per-sample gradients formed whole (the default for these small layers), or, with no
    room allowed for them, the ghost norm wherever the T×T Gram matrices are smaller."""
    if request.param == "ghost":
        monkeypatch.setattr(_bk_rule, "WHOLE_LIMIT", 0)
    return request.param


def test_the_ghost_cases_take_the_ghost_norm_only_when_room_is_short(monkeypatch):
    # Conv2d(8, 8, 3) on 4×4: T = 16, p·d = 72·8 > T²
    assert _bk_rule.whole(5, 16, 72, 8)
    monkeypatch.setattr(_bk_rule, "WHOLE_LIMIT", 0)
    assert not _bk_rule.whole(5, 16, 72, 8)
    assert _bk_rule.whole(5, 49, 18, 4)  # p·d <= T²: whole in any case


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("case", list(CASES))
def test_conv_rule_equals_opacus_hooks(case, batch, reduction, path):
    conv, shape = CASES[case]
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (batch,), generator=gen)
    build = _materialize(_net(conv), x)
    got = bookkeeping(build(), x, y, reduction)
    if case in OTHER_PADDING:
        assert_same(got, per_sample_loop(build(), x, y))
    else:
        assert_same(got, opacus_hooks(build(), x, y, reduction))
    assert got[0].shape == (batch,)
    assert (got[0] > 0).all()


@pytest.mark.parametrize("case", ["conv2d-ghost", "conv2d-whole", "conv1d-strided_grouped"])
def test_conv_rule_clips_the_mean_of_each_samples_views(case, path):
    conv, shape = CASES[case]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=gen)
    build = _materialize(_net(conv), x)
    got = bookkeeping(build(), x, y, "mean", views=2)
    assert got[0].shape == (3,)
    assert_same(got, opacus_hooks(build(), x, y, "mean", views=2))
    assert_same(got, per_sample_loop(build(), x, y, views=2))


def test_conv_rule_some_samples_clipped_some_not():
    """The test can fail: with C = 0.5 some samples are scaled and some are not."""
    conv, shape = CASES["conv2d-whole"]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, *shape, generator=gen, dtype=torch.float64)
    x[:4] *= 1e-3  # small inputs, small gradients: under the clip norm
    y = torch.randint(0, 3, (8,), generator=gen)
    build = _materialize(_net(conv), x)
    norms, _ = bookkeeping(build(), x, y)
    assert (norms < 0.5).any() and (norms > 0.5).any()


def test_in_place_activations_after_every_layer_clip_as_the_per_sample_loop():
    """ReLU(inplace=True) right after each recorded layer, the first included (whose output
    needs a gradient only through the layer's own parameters)."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.GroupNorm(2, 4),
            nn.ReLU(inplace=True),
            nn.Conv2d(4, 4, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.LayerNorm(16),
            nn.ReLU(inplace=True),
            nn.Linear(16, 3),
        ).double()

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 2, 6, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=gen)
    assert_same(bookkeeping(build(), x, y), per_sample_loop(build(), x, y))


@pytest.mark.parametrize(
    ("first", "shape"),
    [
        (lambda: nn.InstanceNorm1d(2, affine=True), (2, 5)),
        (lambda: nn.InstanceNorm2d(2, affine=True), (2, 4, 4)),
        (lambda: nn.InstanceNorm3d(2, affine=True), (2, 3, 3, 3)),
        (lambda: nn.Conv1d(2, 4, 3), (2, 6)),
        (lambda: nn.GroupNorm(1, 2), (2, 4, 4)),
    ],
)
def test_an_in_place_activation_after_a_first_layer_whose_output_may_be_a_view(first, shape):
    """InstanceNorm's output is a view of another tensor: the first layer's node must not
    hand a view out, or ReLU(inplace=True) next is refused by autograd."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(first(), nn.ReLU(inplace=True), nn.Flatten(), nn.LazyLinear(3))

    gen = torch.Generator().manual_seed(6)
    x = torch.randn(6, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=gen)
    made = _materialize(lambda: build().double(), x)
    assert_same(bookkeeping(made(), x, y), per_sample_loop(made(), x, y))


def test_gather_offsets_follow_a_layer_whose_geometry_changed():
    """The offsets are cached per layer: a changed dilation and padding (the same output
    size) must not reuse the old ones."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 2, 5, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=gen)

    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(75, 3)
        ).double()

    net = build()
    assert_same(bookkeeping(net, x, y), per_sample_loop(build(), x, y))
    for model in (net, reference := build()):
        model[0].dilation, model[0].padding = (2, 2), (2, 2)
        model.zero_grad()
    assert_same(bookkeeping(net, x, y), per_sample_loop(reference, x, y))
