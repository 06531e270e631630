"""The clipped-and-noised gradients of every mode, against Opacus and against a per-sample loop."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from privml import ConfigurationError
from privml.dp.torch._engine import build, prepare_module
from privml.dp.torch._noise import NoiseSource

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

MODES = ["ghost", "hooks", "bk"]
CLIP = 0.5


def _batch(digits, size=48):
    frame, features = digits
    X = torch.as_tensor(frame[features].to_numpy() / 16.0, dtype=torch.float32)[:size]
    y = torch.tensor(frame["target"].to_numpy()[:size])
    return X, y


def _privml(mode, net, X, y, *, sigma=0.0, seed=None, criterion=None, batch_size=None):
    """One step of privml's engine for ``mode``: the released gradients, times the batch
    size for a mean loss (with σ = 0: the clipped sums)."""
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    net, opt = prepare_module(net, opt, mode=mode, fix_module=False)
    engine = build(
        mode,
        net,
        opt,
        criterion or nn.CrossEntropyLoss(),
        noise_multiplier=sigma,
        max_grad_norm=CLIP,
        batch_size=batch_size or len(X),
        guard=None,
        noise=NoiseSource(seed=seed) if seed is not None else None,
    )
    engine.optimizer.zero_grad()
    engine.criterion(engine.model(X), y).backward()
    engine.optimizer.step()
    sums = [p.grad * _scale(engine.optimizer) for p in engine.plain.parameters()]
    engine.close()
    return sums


def _scale(optimizer):
    """What turns a released gradient back into a sum: the expected batch size for a mean."""
    return optimizer.expected_batch_size if optimizer.loss_reduction == "mean" else 1


def _opacus_hooks(net, X, y, *, sigma=0.0, seed=None, criterion=None, batch_size=None):
    """Opacus called directly: GradSampleModule and DPOptimizer (per-sample gradients)."""
    model = GradSampleModule(net)
    opt = DPOptimizer(
        torch.optim.SGD(net.parameters(), lr=1.0),
        noise_multiplier=sigma,
        max_grad_norm=CLIP,
        expected_batch_size=batch_size or len(X),
        generator=torch.Generator().manual_seed(seed) if seed is not None else None,
    )
    opt.zero_grad()
    (criterion or nn.CrossEntropyLoss())(model(X), y).backward()
    opt.step()
    sums = [p.summed_grad.detach().clone() for p in net.parameters()]
    model._close()
    return sums


def _loop_reference(net, X, y, criterion):
    """Clip each sample's own gradient (plain autograd, one sample at a time) and sum."""
    params = [p for p in net.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(X)):
        grads = torch.autograd.grad(criterion(net(X[i : i + 1]), y[i : i + 1]), params)
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        factor = min(1.0, CLIP / (float(norm) + 1e-6))
        for t, g in zip(total, grads, strict=True):
            t += factor * g
    return total


def _close(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_every_mode_gives_opacus_hooks_clipped_sum(digits, make_mlp):
    X, y = _batch(digits)
    reference = _opacus_hooks(make_mlp(), X, y)
    _close(reference, _loop_reference(make_mlp(), X, y, nn.CrossEntropyLoss()))
    assert max(float(r.abs().max()) for r in reference) > 0.1
    for mode in MODES:
        _close(_privml(mode, make_mlp(), X, y), reference)


def test_the_noised_update_is_identical_across_modes_for_one_seed(digits, make_mlp):
    """Every mode releases Opacus's clipped sum plus one N(0, σ²C²) draw over all parameters
    (laid end to end, in order) from the run's generator, divided by the batch size."""
    X, y = _batch(digits)
    sigma, seed, batch_size = 1.3, 7, 64
    net = make_mlp()
    clipped = _opacus_hooks(net, X, y, batch_size=batch_size)  # no noise
    flat = torch.cat([c.reshape(-1) for c in clipped])
    noise = torch.empty_like(flat).normal_(
        0.0, sigma * CLIP, generator=torch.Generator().manual_seed(seed)
    )
    expected, start = [], 0
    for c in clipped:
        expected.append((flat + noise)[start : start + c.numel()].view_as(c) / batch_size)
        start += c.numel()
    for mode in MODES:
        net = make_mlp()
        before = [p.detach().clone() for p in net.parameters()]
        _privml(mode, net, X, y, sigma=sigma, seed=seed, batch_size=batch_size)
        update = [b - p.detach() for b, p in zip(before, net.parameters(), strict=True)]
        _close(update, expected)  # lr = 1: the update is the noised gradient


class _Tokens(nn.Module):
    """Embedding -> Linear over positions -> mean -> Linear: sequence inputs for book-keeping."""

    def __init__(self, width: int, padding_idx: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Embedding(30, 6, padding_idx=padding_idx)
        self.mix = nn.Linear(6, width)
        self.head = nn.Linear(width, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mix(self.embed(idx))).mean(1))


@pytest.mark.parametrize("length", [3, 12])  # T² below and above d_in·d_out = 6·4
def test_book_keeping_handles_embeddings_and_sequences(length):
    torch.manual_seed(5)
    idx = torch.randint(0, 30, (20, length))
    idx[:, 0] = idx[:, 1]  # repeated tokens within a sample
    y = torch.randint(0, 3, (20,))
    reference = _opacus_hooks(_Tokens(4), idx, y)
    _close(_privml("bk", _Tokens(4), idx, y), reference)
    _close(_privml("ghost", _Tokens(4), idx, y), reference)


def test_book_keeping_respects_padding_like_autograd():
    torch.manual_seed(6)
    idx = torch.randint(0, 30, (16, 5))
    idx[:, -2:] = 0  # padding
    y = torch.randint(0, 3, (16,))
    loss = nn.CrossEntropyLoss()
    reference = _loop_reference(_Tokens(4, padding_idx=0), idx, y, loss)
    assert float(reference[0][0].abs().max()) == 0.0
    _close(_privml("bk", _Tokens(4, padding_idx=0), idx, y), reference)


def test_regression_losses_are_per_sample_in_every_mode(digits):
    X, _ = _batch(digits, 32)
    y = X[:, :1] * 3 - 1  # (N, 1) targets, as private_training hands them out
    torch.manual_seed(2)
    reference = _loop_reference(nn.Linear(64, 1), X, y, nn.MSELoss())
    for mode in MODES:
        torch.manual_seed(2)
        _close(_privml(mode, nn.Linear(64, 1), X, y, criterion=nn.MSELoss()), reference)


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_poisson_batch_is_a_step_of_noise_only(mode, make_mlp):
    X, y = torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)
    net = make_mlp()
    released = _privml(mode, net, X, y, sigma=1.0, seed=1, batch_size=16)
    total = sum(p.numel() for p in net.parameters())
    noise = torch.empty(total).normal_(0.0, CLIP, generator=torch.Generator().manual_seed(1))
    assert float(noise.abs().max()) > 0
    torch.testing.assert_close(torch.cat([r.reshape(-1) for r in released]), noise)


def test_ghost_refuses_a_step_after_a_plain_loss(digits, make_mlp):
    X, y = _batch(digits)
    net = make_mlp()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    engine = build(
        "ghost",
        net,
        opt,
        nn.CrossEntropyLoss(),
        noise_multiplier=1.0,
        max_grad_norm=CLIP,
        batch_size=48,
        guard=None,
    )
    before = [p.detach().clone() for p in net.parameters()]
    engine.optimizer.zero_grad()
    nn.CrossEntropyLoss()(engine.model(X), y).backward()  # unclipped gradients
    with pytest.raises(ConfigurationError, match=r"run\.criterion"):
        engine.optimizer.step()
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    engine.optimizer.zero_grad()
    engine.criterion(engine.model(X), y).backward()  # the clipped pass: accepted
    engine.optimizer.step()
    assert not all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    engine.close()


def test_book_keeping_refuses_what_it_cannot_clip():
    net = nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ConfigurationError, match=r"1 \(PReLU\).*'ghost'"):
        prepare_module(net, opt, mode="bk", fix_module=False)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(torch.relu(self.layer(x)))

    net2 = Twice()
    engine = build(
        "bk",
        net2,
        torch.optim.SGD(net2.parameters(), lr=0.1),
        nn.MSELoss(),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        batch_size=4,
        guard=None,
    )
    with pytest.raises(ConfigurationError, match="once per optimizer step"):
        nn.MSELoss()(engine.model(torch.randn(4, 4)), torch.zeros(4, 4)).backward()
    engine.close()
    assert "forward" not in net2.layer.__dict__


def test_virtual_steps_are_refused(make_mlp):
    net = make_mlp()
    engine = build(
        "hooks",
        net,
        torch.optim.SGD(net.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        batch_size=4,
        guard=None,
    )
    with pytest.raises(ConfigurationError, match="several Poisson batches"):
        engine.optimizer.signal_skip_step(do_skip=True)
    engine.close()


def test_poisson_sampling_keeps_each_row_with_probability_q():
    from privml.dp.torch._loader import poisson_sample

    # 400 batches of n=2000 at q=0.05: 40,000 expected picks, sd 195; the bounds are
    # ±6 sd (false failure < 1e-8), and no caller seed is involved to fix it.
    n, q = 2000, 0.05
    counts = [len(poisson_sample(n, q)) for _ in range(400)]
    assert abs(sum(counts) - 400 * n * q) < 6 * (400 * n * q * (1 - q)) ** 0.5
    picked = poisson_sample(n, 0.5)
    assert picked.dtype.kind == "i" and (picked[1:] > picked[:-1]).all()
    assert len(poisson_sample(n, 1.0)) == n and len(poisson_sample(n, 1e-300)) == 0
