"""Book-keeping takes convolution, norm and attention layers, refuses recurrent ones by name."""

from __future__ import annotations

import pytest
import torch
from _layer_nets import NETS, Encoder, make
from _torch_helpers import start_training
from torch import nn

from privml import ConfigurationError
from privml.dp.torch._bk import BookKeeping, check_bk_module
from privml.dp.torch._engine import build, prepare_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

# Each network's refused layers, named by their path and type (a recurrent layer whole,
# not the Linears inside it).
REFUSED = {
    "dplstm": ["rnn (DPLSTM)"],
    "dpgru": ["rnn (DPGRU)"],
    "lstm": ["rnn (DPLSTM)"],  # fix_module=True has made it a DPLSTM
    "gru": ["rnn (DPGRU)"],
}
TAKEN = [name for name in NETS if name not in REFUSED]


@pytest.mark.filterwarnings("ignore:fix_module=True replaces:UserWarning")
@pytest.mark.parametrize("name", TAKEN)
def test_bk_takes_every_trainable_layer_of_the_cnn_and_attention_networks(name):
    net, fix = make(name)
    prepared, _ = prepare_module(
        net, torch.optim.SGD(net.parameters(), lr=0.1), mode="bk", fix_module=fix
    )
    layers = check_bk_module(prepared)
    owned = {id(p) for layer in layers for p in layer.parameters(recurse=False)}
    assert owned == {id(p) for p in prepared.parameters() if p.requires_grad}


@pytest.mark.filterwarnings("ignore:fix_module=True replaces:UserWarning")
@pytest.mark.parametrize("name", list(REFUSED))
def test_bk_refuses_each_layer_it_cannot_clip_by_name_and_type(name):
    net, fix = make(name)
    with pytest.raises(ConfigurationError, match="grad_sample_mode='ghost'") as refused:
        prepare_module(net, torch.optim.SGD(net.parameters(), lr=0.1), mode="bk", fix_module=fix)
    message = str(refused.value)
    for layer in REFUSED[name]:
        assert layer in message
    assert "RNNLinear" not in message and "qlinear" not in message  # the layer, not its parts


def test_bk_refuses_at_private_training_start_before_reserving(make_vault, digits):
    v = make_vault("digits")
    for name in ("dplstm", "dpgru"):
        net, _ = make(name)
        with (
            pytest.raises(ConfigurationError, match=r"not supported: .*\(") as refused,
            start_training(v, digits, net, "bk"),
        ):
            pytest.fail("the block must not run")
        assert "use grad_sample_mode='ghost'" in str(refused.value).lower()
    assert v.ledger.events("data").empty
    entries = v.audit.entries()
    assert not any(e["action"] == "dp.train.batches" for e in entries.to_dict("records"))


def test_bk_still_takes_the_linears_and_embeddings_of_a_users_own_module(digits):
    net = Encoder()
    del net.attention, net.norm1, net.norm2  # a forward without them: Linear/Embedding only

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = x.reshape(-1, 8, 8)
            h = net.inputs(rows) + net.positions(net.steps.repeat(len(x), 1))
            return net.head(torch.relu(net.feed_forward(h)).mean(1))

    plain = Plain()
    prepared, _ = prepare_module(
        plain, torch.optim.SGD(plain.parameters(), lr=0.1), mode="bk", fix_module=False
    )
    assert prepared is plain


def test_bk_refuses_a_linear_that_sees_no_batch_first_input_at_the_forward_and_the_step():
    class SequenceFirst(nn.Module):
        """A user's module that runs its Linear on (T, N, d): the probe and the step catch it."""

        def __init__(self) -> None:
            super().__init__()
            self.mix = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, T, 4)
            return self.head(self.mix(x.transpose(0, 1)).mean(0))

    torch.manual_seed(0)
    net = SequenceFirst()
    before = [p.detach().clone() for p in net.parameters()]
    engine = build(
        "bk",
        net,
        torch.optim.SGD(net.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        batch_size=5,
        guard=None,
    )
    x, y = torch.randn(5, 3, 4), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ConfigurationError, match=r"mix \(on 2 rows its input had shape \(3, 2"):
        engine.model(x)  # the layout probe, at the first forward
    engine.close()
    # Without the probe, book-keeping's own check still refuses the step.
    bk = BookKeeping(net, loss_reduction="mean")
    nn.CrossEntropyLoss()(net(x), y).backward()
    with pytest.raises(ConfigurationError, match="first dimension"):
        bk.write_clipped_sum(1.0)
    bk.detach()
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


def test_bk_takes_every_layer_a_declared_network_may_hold():
    from privml.dp.torch._layers import build_module

    net = build_module(
        {
            "layers": [
                {"type": "Unflatten", "dim": 1, "unflattened_size": [1, 8, 8]},
                {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
                {"type": "GroupNorm", "num_groups": 2, "num_channels": 4},
                {"type": "Flatten", "start_dim": 2},
                {"type": "Conv1d", "in_channels": 4, "out_channels": 4, "kernel_size": 3},
                {"type": "LayerNorm", "normalized_shape": 34},
                {"type": "Flatten"},
                {"type": "Linear", "in_features": 136, "out_features": 10},
            ]
        }
    )
    layers = check_bk_module(net)
    assert {type(layer).__name__ for layer in layers} == {
        "Conv2d",
        "GroupNorm",
        "Conv1d",
        "LayerNorm",
        "Linear",
    }
