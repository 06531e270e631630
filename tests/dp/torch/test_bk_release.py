"""Book-keeping's release in one tensor: the optimizer's order, reused gradients, fallbacks.

A batch in one chunk is clipped, noised and scaled in one tensor that every
``p.grad`` views; the next step writes the same tensor again while the
gradients are still its views. Each test compares the released gradients
with Opacus's per-sample clipped sum (hooks mode) plus the one seeded draw the
run's noise source makes over the parameters laid end to end, in the
optimizer's order.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _bk_reference import CLIP, opacus_hooks
from torch import nn

from privml.dp.torch import _bk_rule
from privml.dp.torch._engine import build
from privml.dp.torch._noise import NoiseSource

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

SIGMA, SEED = 0.7, 11


def _net() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Unflatten(1, (1, 6, 6)),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Flatten(),
        nn.LayerNorm(144),
        nn.Linear(144, 3),
    ).double()


def _batch(seed: int, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 36, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, 3, (n,), generator=gen)


def _engine(net: nn.Module, params: list[nn.Parameter], sigma: float = SIGMA):
    return build(
        "bk",
        net,
        torch.optim.SGD(params, lr=0.0),
        nn.CrossEntropyLoss(reduction="sum"),
        noise_multiplier=sigma,
        max_grad_norm=CLIP,
        batch_size=10,
        guard=None,
        noise=NoiseSource(seed=SEED),
    )


def _expected(net: nn.Module, batches, order_names: list[str], sigma: float = SIGMA):
    """Per step: Opacus's clipped sums plus the seeded draws, by parameter name."""
    gen = torch.Generator().manual_seed(SEED)
    steps = []
    for x, y in batches:
        _, sums = opacus_hooks(copy.deepcopy(net), x, y, reduction="sum")
        flat = torch.cat([sums[name].reshape(-1) for name in order_names])
        flat = flat + torch.empty_like(flat).normal_(0.0, sigma * CLIP, generator=gen)
        out, start = {}, 0
        for name in order_names:
            size = sums[name].numel()
            out[name] = flat[start : start + size].view_as(sums[name])
            start += size
        steps.append(out)
    return steps


def _run(engine, batches, *, set_to_none: bool, names: dict[int, str]):
    released = []
    for x, y in batches:
        engine.optimizer.zero_grad(set_to_none=set_to_none)
        engine.criterion(engine.model(x), y).backward()
        engine.optimizer.step()
        released.append({names[id(p)]: p.grad.clone() for p in engine.optimizer.params})
    return released


@pytest.mark.parametrize("set_to_none", [False, True])
def test_each_step_releases_its_own_sum_plus_noise_in_the_optimizers_order(set_to_none):
    """Parameters given to the optimizer in reverse: the draw follows the optimizer's order."""
    net = _net()
    reference = copy.deepcopy(net)
    names = {id(p): n for n, p in net.named_parameters()}
    order = list(net.parameters())[::-1]
    engine = _engine(net, order)
    batches = [_batch(s) for s in (1, 2, 3)]
    got = _run(engine, batches, set_to_none=set_to_none, names=names)
    engine.close()
    want = _expected(reference, batches, [names[id(p)] for p in order])
    for step_got, step_want in zip(got, want, strict=True):
        assert step_got.keys() == step_want.keys()
        for name in step_want:
            torch.testing.assert_close(step_got[name], step_want[name], rtol=1e-9, atol=1e-9)


def test_zero_grad_zeroes_the_released_gradients_and_the_next_step_writes_them_again():
    net = _net()
    engine = _engine(net, list(net.parameters()))
    x, y = _batch(1)
    engine.optimizer.zero_grad()
    engine.criterion(engine.model(x), y).backward()
    engine.optimizer.step()
    first = [p.grad for p in net.parameters()]
    engine.optimizer.zero_grad()  # Opacus's default: set_to_none=False
    assert all(
        p.grad is g and float(g.abs().max()) == 0.0
        for p, g in zip(net.parameters(), first, strict=True)
    )
    engine.criterion(engine.model(x), y).backward()
    engine.optimizer.step()
    assert all(p.grad is g for p, g in zip(net.parameters(), first, strict=True))
    assert all(float(p.grad.abs().max()) > 0 for p in net.parameters())
    engine.close()


def test_a_gradient_the_caller_replaced_is_never_written_into():
    """A tensor the caller put in ``p.grad`` is left alone; the release gets new views."""
    net = _net()
    engine = _engine(net, list(net.parameters()))
    x, y = _batch(1)
    engine.criterion(engine.model(x), y).backward()
    engine.optimizer.step()
    mine = torch.full_like(net[1].weight, 7.0)
    net[1].weight.grad = mine
    engine.criterion(engine.model(x), y).backward()
    engine.optimizer.step()
    assert torch.equal(mine, torch.full_like(mine, 7.0))
    assert net[1].weight.grad is not mine
    assert all(p.grad._base is net[1].weight.grad._base for p in net.parameters())
    engine.close()


def test_an_optimizer_over_some_layers_updates_those_clipped_by_the_whole_network():
    """Parameters outside the optimizer still count in each sample's norm, and get no gradient."""
    net = _net()
    reference = copy.deepcopy(net)
    names = {id(p): n for n, p in net.named_parameters()}
    head = list(net[-1].parameters())
    engine = _engine(net, head)
    batches = [_batch(4)]
    got = _run(engine, batches, set_to_none=False, names=names)
    engine.close()
    want = _expected(reference, batches, [names[id(p)] for p in head])
    assert got[0].keys() == {"6.weight", "6.bias"}
    for name in got[0]:
        torch.testing.assert_close(got[0][name], want[0][name], rtol=1e-9, atol=1e-9)
    assert all(p.grad is None for p in net[1:3].parameters())


def test_a_layer_that_did_not_run_contributes_zero_and_its_noise():
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.idle = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    torch.manual_seed(0)
    net = Branch().double()
    engine = _engine(net, list(net.parameters()), sigma=0.0)
    x = torch.randn(10, 4, dtype=torch.float64)
    engine.criterion(engine.model(x), torch.zeros(10, dtype=torch.long)).backward()
    engine.optimizer.step()
    assert float(net.used.weight.grad.abs().max()) > 0
    assert float(net.idle.weight.grad.abs().max()) == 0.0
    assert float(net.idle.bias.grad.abs().max()) == 0.0
    engine.close()


def test_parameters_of_two_dtypes_take_opacus_steps_with_the_same_sums():
    """No single tensor holds float32 and float64 gradients: each is noised in its own dtype."""
    net = _net()
    net[6].float()
    original = copy.deepcopy(net)

    class Cast(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float()

    net = nn.Sequential(*net[:6], Cast(), net[6])
    engine = _engine(net, list(net.parameters()), sigma=0.0)
    x, y = _batch(2)
    engine.criterion(engine.model(x), y).backward()
    engine.optimizer.step()
    ref = copy.deepcopy(original).double()  # the same values (the head's rounded to float32)
    _, sums = opacus_hooks(ref, x, y, reduction="sum")
    for (name, p), want in zip(net.named_parameters(), sums.values(), strict=True):
        assert p.grad.dtype == p.dtype, name
        torch.testing.assert_close(p.grad.double(), want, rtol=1e-5, atol=1e-6)
    engine.close()


def test_ghost_norm_layers_release_the_same_sums_step_after_step(monkeypatch):
    """A convolution and a sequence Linear on their Gram-matrix path, two steps in a row."""
    monkeypatch.setattr(_bk_rule, "WHOLE_LIMIT", 0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(9)
            self.conv = nn.Conv2d(4, 8, 3)  # 2x2 outputs: 4² < 36·8, so Gram matrices
            self.seq = nn.Linear(8, 6)  # over the 4 positions: 4² < 8·6
            self.head = nn.Linear(24, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x).flatten(2).transpose(1, 2)  # (b, 4, 8)
            return self.head(torch.tanh(self.seq(h)).flatten(1))

    net = Net().double()
    reference = copy.deepcopy(net)
    names = {id(p): n for n, p in net.named_parameters()}
    engine = _engine(net, list(net.parameters()))
    gen = torch.Generator().manual_seed(3)
    batches = [
        (torch.randn(10, 4, 4, 4, generator=gen, dtype=torch.float64), torch.arange(10) % 3)
        for _ in range(2)
    ]
    got = _run(engine, batches, set_to_none=False, names=names)
    engine.close()
    want = _expected(reference, batches, list(names.values()))
    for step_got, step_want in zip(got, want, strict=True):
        for name in step_want:
            torch.testing.assert_close(step_got[name], step_want[name], rtol=1e-9, atol=1e-9)


def test_a_parameter_replaced_in_the_model_is_not_given_its_successors_sum():
    """The plan follows the layers' parameters: the optimizer's old one gets nothing."""
    net = _net()
    engine = _engine(net, list(net.parameters()), sigma=0.0)
    x, y = _batch(1)
    engine.criterion(engine.model(x), y).backward()
    engine.optimizer.step()
    old = net[6].weight
    net[6].weight = nn.Parameter(old.detach().clone())  # same shape, a new tensor
    engine.criterion(engine.model(x), y).backward()
    engine.optimizer.step()
    assert float(old.grad.abs().max()) == 0.0
    assert float(net[6].bias.grad.abs().max()) > 0
    engine.close()
