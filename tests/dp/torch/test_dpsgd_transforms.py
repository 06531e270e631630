"""Per-row transforms and augmentation multiplicity: what a transform sees, and the clipped sums.

The multiplicity sums are checked against two computations that share no code
with privml: Opacus's per-row gradients (hooks) averaged per sample, clipped
and summed, and a plain autograd loop over the samples.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _torch_helpers import start_training
from opacus import GradSampleModule
from torch import nn

from privml import ConfigurationError
from privml.dp.torch._engine import build, prepare_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

CLIP = 0.5
K = 3


def _views(digits, samples=12, k=K, seed=4):
    """``samples`` digit rows, each as ``k`` consecutive noisy views (seeded), and targets."""
    frame, features = digits
    X = torch.as_tensor(frame[features].to_numpy() / 16.0, dtype=torch.float32)[:samples]
    y = torch.tensor(frame["target"].to_numpy()[:samples])
    gen = torch.Generator().manual_seed(seed)
    views = X.repeat_interleave(k, 0) + 0.3 * torch.randn(samples * k, X.shape[1], generator=gen)
    return views, y.repeat_interleave(k, 0)


def _privml_sum(mode, net, X, y, k):
    """privml's engine, noise off: the clipped sum of one step on ``X`` with ``k`` views."""
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    net, opt = prepare_module(net, opt, mode=mode, fix_module=False)
    engine = build(
        mode,
        net,
        opt,
        nn.CrossEntropyLoss(),
        noise_multiplier=0.0,
        max_grad_norm=CLIP,
        batch_size=len(X) // k,
        guard=None,
        views=k,
    )
    engine.optimizer.zero_grad()
    engine.criterion(engine.model(X), y).backward()
    engine.optimizer.step()
    sums = [p.grad * (len(X) // k) for p in engine.plain.parameters()]  # σ = 0: the clipped sum
    engine.close()
    return sums


def _opacus_averaged(net, X, y, k):
    """Opacus's per-row gradients, averaged over each sample's views, clipped once, summed."""
    model = GradSampleModule(net)
    nn.CrossEntropyLoss()(model(X), y).backward()
    grads = [p.grad_sample.reshape(-1, k, *p.shape).mean(1) for p in net.parameters()]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads], 1).norm(dim=1)
    factors = (CLIP / (norms + 1e-6)).clamp(max=1.0)
    model._close()
    return [torch.einsum("i,i...", factors, g) for g in grads]


def _autograd_loop(net, X, y, k):
    """Each sample's gradient of its views' mean loss (plain autograd), clipped, summed."""
    params = list(net.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(X) // k):
        rows = slice(i * k, (i + 1) * k)
        grads = torch.autograd.grad(nn.CrossEntropyLoss()(net(X[rows]), y[rows]), params)
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        for t, g in zip(total, grads, strict=True):
            t += min(1.0, CLIP / (float(norm) + 1e-6)) * g
    return total


def _close(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["hooks", "bk"])
def test_multiplicity_clips_the_mean_of_each_samples_views(mode, digits, make_mlp):
    X, y = _views(digits)
    reference = _opacus_averaged(make_mlp(), X, y, K)
    _close(reference, _autograd_loop(make_mlp(), X, y, K))
    # the average differs from clipping each view (what a per-view mode would release)
    per_view = _privml_sum(mode, make_mlp(), X, y, 1)
    gap = max(float((a * K - b).abs().max()) for a, b in zip(per_view, reference, strict=True))
    assert gap > 0.1
    _close(_privml_sum(mode, make_mlp(), X, y, K), reference)


def test_book_keeping_multiplicity_on_embedded_sequences():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.embed, self.mix, self.head = nn.Embedding(30, 6), nn.Linear(6, 4), nn.Linear(4, 3)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.mix(self.embed(idx))).mean(1))

    torch.manual_seed(5)
    idx = torch.randint(0, 30, (8 * 2, 5))
    y = torch.randint(0, 3, (8,)).repeat_interleave(2)
    _close(_privml_sum("bk", Tokens(), idx, y, 2), _autograd_loop(Tokens(), idx, y, 2))


def test_ghost_refuses_multiplicity_naming_the_modes_that_take_it(make_vault, digits, make_mlp):
    v = make_vault()
    with pytest.raises(ConfigurationError, match="'hooks' or 'bk'"):
        start_training(v, digits, make_mlp(), "ghost", augmentations=2)
    assert v.budget("data").epsilon_spent == 0.0


@pytest.mark.parametrize(
    ("keyword", "value", "match"),
    [
        ("augmentations", 0, "augmentations must be an integer from 1"),
        ("augmentations", True, "augmentations must be an integer from 1"),
        ("augmentations", 2.0, "augmentations must be an integer from 1"),
        ("augmentations", 5000, "augmentations must be an integer from 1"),
        ("transform", "flip", "transform= takes a function"),
        ("max_physical_batch_size", 0, "max_physical_batch_size must be an integer >= 1"),
    ],
)
def test_bad_keywords_are_refused_before_anything_is_reserved(
    make_vault, digits, make_mlp, keyword, value, match
):
    v = make_vault()
    with pytest.raises(ConfigurationError, match=match):
        start_training(v, digits, make_mlp(), "hooks", **{keyword: value})
    assert v.budget("data").epsilon_spent == 0.0


def test_a_transform_sees_one_row_at_a_time_as_a_copy(make_vault, digits, make_mlp):
    v = make_vault()
    seen: list[tuple[tuple[int, ...], int, bool]] = []

    def transform(row: torch.Tensor) -> torch.Tensor:
        storage = row.untyped_storage().nbytes()
        seen.append((tuple(row.shape), storage, row.requires_grad))
        return 1.0 - row  # a recognisable change

    with start_training(v, digits, make_mlp(), "hooks", transform=transform) as run:
        probe = len(seen)
        X, y = next(iter(run.data_loader))
        assert X.shape == (len(y), 64)
        assert float(X.min()) >= 0.0 and float(X.max()) <= 1.0
        run.optimizer.zero_grad()
        run.criterion(run.model(X), y).backward()
        run.optimizer.step()
        assert run.steps_taken == 1
    assert probe == 1  # one probe on a row of zeros, before any data
    rows = seen[probe:]
    assert len(rows) == run.data_loader.rows_drawn == len(y)
    # each call holds one row of 64 float32 values and nothing else: no other row is reachable
    assert all(shape == (64,) and nbytes == 64 * 4 and not grad for shape, nbytes, grad in rows)


def test_the_handed_out_batch_is_the_transformed_one(make_vault, digits, make_mlp):
    v = make_vault()
    with start_training(v, digits, make_mlp(), "bk", transform=lambda r: r * 0 + 0.25) as run:
        X, y = next(iter(run.data_loader))
        assert bool((X == 0.25).all())
        # the guard ties the step to the transformed batch it handed out
        run.optimizer.zero_grad()
        run.criterion(run.model(X), y).backward()
        run.optimizer.step()
        assert run.steps_taken == 1


def test_a_transform_whose_shape_depends_on_the_row_is_refused_before_a_step(
    make_vault, digits, make_mlp
):
    v = make_vault()

    def crop(row: torch.Tensor) -> torch.Tensor:
        return row if float(row.sum()) == 0.0 else row[:10]  # the probe's zeros keep 64

    with start_training(v, digits, make_mlp(), "hooks", transform=crop) as run:
        with pytest.raises(ConfigurationError, match="must not depend on the row") as err:
            next(iter(run.data_loader))
        assert "0." not in str(err.value)  # no feature value in the message
        with pytest.raises(ConfigurationError):
            run.optimizer.step()  # the batch never reached the loop: nothing to step
        assert run.steps_taken == 0
    assert run.batches_drawn == 1  # the rows reached the transform: the batch is charged


def test_a_transform_that_returns_no_tensor_is_refused_and_nothing_is_charged(
    make_vault, digits, make_mlp
):
    v = make_vault()
    training = start_training(v, digits, make_mlp(), "hooks", transform=lambda r: r.tolist())
    with pytest.raises(ConfigurationError, match="must return a torch Tensor"), training:
        pass
    assert v.budget("data").epsilon_spent == 0.0


@pytest.mark.parametrize("mode", ["bk"])  # the charge does not depend on the mode
def test_multiplicity_hands_out_k_views_and_charges_as_one(make_vault, digits, make_mlp, mode):
    charged = []
    for k in (1, K):
        v = make_vault()
        views: list[int] = []
        with start_training(
            v, digits, make_mlp(), mode, augmentations=k, transform=lambda r: r.flip(0)
        ) as run:
            for X, y in run.data_loader:
                views.append(len(y))
                assert len(X) == len(y)
                run.optimizer.zero_grad()
                run.criterion(run.model(X), y).backward()
                run.optimizer.step()
                if run.steps_taken == 2:
                    break
        assert sum(views) == k * run.data_loader.rows_drawn  # rows count samples, not views
        assert run.steps_taken == run.batches_drawn == 2
        charged.append(
            (run.epsilon, run.noise_multiplier, run.sample_rate, v.budget("data").epsilon_spent)
        )
    assert charged[0] == charged[1]


def test_views_of_a_sample_are_consecutive_and_share_its_target(make_vault, digits, make_mlp):
    v = make_vault()
    net = make_mlp()
    with start_training(v, digits, net, "hooks", augmentations=K) as run:
        X, y = next(iter(run.data_loader))
        # without a transform the K views are copies of the row
        grouped = X.reshape(-1, K, 64)
        assert bool((grouped == grouped[:, :1]).all())
        assert bool((y.reshape(-1, K) == y.reshape(-1, K)[:, :1]).all())
        run.optimizer.zero_grad()
        run.criterion(run.model(X[: K + 1]), y[: K + 1]).backward()  # a split group
        before = [p.detach().clone() for p in run.model.parameters()]
        with pytest.raises(ConfigurationError, match="views of each sampled row"):
            run.optimizer.step()
        assert all(torch.equal(b, p) for b, p in zip(before, run.model.parameters(), strict=True))
        run.optimizer.zero_grad()
        run.criterion(run.model(X), y).backward()
        run.optimizer.step()
        assert run.steps_taken == 1


def test_the_standard_loop_takes_all_three_keywords(make_vault, digits, make_mlp):
    v = make_vault()
    _, features = digits
    net = make_mlp()
    model, history = v.session("eng", purpose="ml").dp.train(
        "data",
        features=features,
        target="target",
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        batch_size=256,
        epochs=1,
        max_grad_norm=1.0,
        noise_multiplier=2.0,
        grad_sample_mode="bk",
        transform=lambda r: (r + 0.01 * torch.randn_like(r)).clamp(0, 1),
        augmentations=2,
        max_physical_batch_size=64,
    )
    assert list(history["steps"]) == [len(range(0, 1797 // 256))] == [7]
    assert history["epsilon"].iloc[-1] == pytest.approx(history.attrs["epsilon"], rel=1e-9)
    assert model.predict(copy.deepcopy(digits[0].iloc[:3])).shape == (3,)


def test_the_guard_still_refuses_a_second_step_on_one_batch_of_views(
    make_vault, digits, make_mlp, train_loop
):
    v = make_vault()
    with start_training(v, digits, make_mlp(), "bk", augmentations=2) as run:
        train_loop(run, stop_after=1)
        with pytest.raises(ConfigurationError, match="fresh batch"):
            run.optimizer.step()
        assert run.steps_taken == 1
