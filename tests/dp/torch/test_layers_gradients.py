"""CNN, recurrent and attention networks: privml's clipped sums against Opacus per-sample gradients.

The reference takes Opacus's ``GradSampleModule`` per-sample gradients, clips
each sample's whole gradient (all parameters together) to ``C`` here, with
Opacus's factor ``min(1, C / (‖∇_i‖ + 1e-6))``, and sums. privml's engine
runs one step with σ = 0 and no guard; its released gradient times the batch
size (the clipped sum, no noise added) must equal the reference.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _layer_nets import NETS, make
from opacus import GradSampleModule
from torch import nn

from privml import ConfigurationError
from privml.dp.torch._engine import build, prepare_module

pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    pytest.mark.filterwarnings("ignore:fix_module=True replaces:UserWarning"),  # tested below
]


def _batch(digits, size: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    frame, features = digits
    rows = frame.iloc[start : start + size]
    X = torch.tensor(rows[features].to_numpy() / 16.0, dtype=torch.float32)
    return X, torch.tensor(rows["target"].to_numpy())


def _reference(net: nn.Module, X: torch.Tensor, y: torch.Tensor, clip: float | None):
    """Opacus hooks per-sample gradients, clipped to ``clip`` and summed here; and the norms."""
    model = GradSampleModule(copy.deepcopy(net), batch_first=True, loss_reduction="mean")
    nn.CrossEntropyLoss()(model(X), y).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    per_sample = [p.grad_sample for p in params]
    assert all(g.shape[0] == len(X) for g in per_sample)
    norms = torch.cat([g.reshape(len(X), -1) for g in per_sample], 1).norm(dim=1)
    if clip is None:
        return None, norms
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    sums = [torch.einsum("i,i...->...", factor, g) for g in per_sample]
    model._close()
    return sums, norms


def _privml(mode: str, net: nn.Module, X: torch.Tensor, y: torch.Tensor, clip: float):
    """One step of privml's engine in ``mode`` with σ = 0: the clipped sums it noises."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = build(
        mode,
        net,
        optimizer,
        nn.CrossEntropyLoss(),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        batch_size=len(X),
        guard=None,
    )
    engine.optimizer.zero_grad()
    engine.criterion(engine.model(X), y).backward()
    engine.optimizer.step()
    # σ = 0 and a mean loss: the released gradient is the clipped sum over the batch size
    sums = [p.grad * len(X) for p in engine.plain.parameters() if p.requires_grad]
    engine.close()
    return sums


def _prepared(name: str, mode: str) -> nn.Module:
    """The network as privml trains it: with ``fix_module`` where it needs it (a fixed copy)."""
    net, fix = make(name)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    prepared, rebound = prepare_module(net, optimizer, mode=mode, fix_module=fix)
    trainable = {id(p) for p in prepared.parameters() if p.requires_grad}
    assert {id(p) for g in rebound.param_groups for p in g["params"]} == trainable
    return prepared


def _clips(norms: torch.Tensor) -> list[float]:
    """Clip norms with samples both below and above them (for one sample: one each side)."""
    if len(norms) == 1:
        return [float(norms[0]) * 0.5, float(norms[0]) * 2.0]
    ordered = norms.sort().values
    middle = len(norms) // 2
    return [float(ordered[middle - 1] + ordered[middle]) / 2]


@pytest.mark.parametrize("size", [1, 9])
@pytest.mark.parametrize("name", list(NETS))
def test_clipped_sum_equals_opacus_per_sample_reference(digits, name, size):
    X, y = _batch(digits, size, start=7 * size)
    _, norms = _reference(_prepared(name, "hooks"), X, y, None)
    assert float(norms.min()) > 0
    clipped: set[bool] = set()
    for clip in _clips(norms):
        clipped |= set((norms > clip).tolist())
        reference, _ = _reference(_prepared(name, "hooks"), X, y, clip)
        assert max(float(r.abs().max()) for r in reference) > 1e-3  # a test that can fail
        recurrent = name in ("dplstm", "dpgru", "lstm", "gru")  # refused by "bk"
        for mode in ("ghost", "hooks") if recurrent else ("ghost", "hooks", "bk"):
            sums = _privml(mode, _prepared(name, mode), X, y, clip)
            assert len(sums) == len(reference)
            for got, want in zip(sums, reference, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert clipped == {True, False}  # samples below and above the clip norm


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_fix_module_keeps_what_a_recurrent_network_computes(digits, name):
    X, _ = _batch(digits, 16)
    net, _ = make(name)
    fixed = _prepared(name, "ghost")
    assert type(fixed.rnn) is not type(net.rnn)
    with torch.no_grad():
        torch.testing.assert_close(fixed(X), net(X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["attention", "transformer"])
def test_fix_module_warns_that_batch_first_attention_computes_another_function(digits, name):
    X, _ = _batch(digits, 16)
    net, _ = make(name)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="pretrained attention weights do not carry over"):
        fixed, _ = prepare_module(net, optimizer, mode="ghost", fix_module=True)
    with torch.no_grad():  # same weights, other outputs: what the warning says
        assert not torch.allclose(fixed(X), net(X), atol=1e-3)


def test_fix_module_hands_replaced_layers_parameters_to_their_optimizer_group():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Unflatten(1, (2, 4)), nn.MultiheadAttention(4, 1))
    groups = [
        {"params": net[0].parameters(), "lr": 0.1},
        {"params": net[2].parameters(), "lr": 0.01},
    ]
    fixed, optimizer = prepare_module(net, torch.optim.SGD(groups), mode="ghost", fix_module=True)
    names = {id(p): n for n, p in fixed.named_parameters()}
    second = sorted(names[id(p)] for p in optimizer.param_groups[1]["params"])
    assert optimizer.param_groups[1]["lr"] == 0.01
    assert second == sorted(n for n, _ in fixed.named_parameters() if n.startswith("2."))
    assert any("qlinear" in n for n in second)

    torch.manual_seed(0)
    split = nn.Sequential(nn.Linear(4, 8), nn.Unflatten(1, (2, 4)), nn.MultiheadAttention(4, 1))
    some = [split[0].weight, split[2].out_proj.weight]  # half of the attention's parameters
    with pytest.raises(ConfigurationError, match=r"2 \(MultiheadAttention\).*then build"):
        prepare_module(split, torch.optim.SGD(some, lr=0.1), mode="ghost", fix_module=True)

    torch.manual_seed(0)
    frozen = nn.Sequential(nn.Linear(4, 8), nn.Unflatten(1, (2, 4)), nn.MultiheadAttention(4, 1))
    frozen[2].requires_grad_(False)
    fixed, optimizer = prepare_module(
        frozen, torch.optim.SGD(frozen[0].parameters(), lr=0.1), mode="ghost", fix_module=True
    )
    assert not any(p.requires_grad for p in fixed[2].parameters())


@pytest.mark.parametrize("width", [0, 10**9])  # each held gradient apart; all in one matrix
@pytest.mark.parametrize("name", [n for n in NETS if n not in ("dplstm", "dpgru", "lstm", "gru")])
def test_bk_clipped_sum_is_the_same_whichever_held_gradients_share_a_matrix(
    digits, name, width, monkeypatch
):
    from privml.dp.torch import _bk

    monkeypatch.setattr(_bk, "SHARED_WIDTH", width)
    X, y = _batch(digits, 9, start=3)
    _, norms = _reference(_prepared(name, "hooks"), X, y, None)
    (clip,) = _clips(norms)
    reference, _ = _reference(_prepared(name, "hooks"), X, y, clip)
    sums = _privml("bk", _prepared(name, "bk"), X, y, clip)
    for got, want in zip(sums, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
