"""Every clipped layer must see the batch where its mode reads it: probed on zeros, or refused.

A module that moves the batch away from where a mode takes each sample's
gradient (sequence-first before its Linears, rows ``N*T``, batch-first tensors
in sequence-first attention) would be clipped per position or slice, so one
record could move the model by more than ``max_grad_norm``, silently when the
sizes agree. The probe runs on rows of zeros after the reservation and before
the first batch: a refusal names the layer and charges nothing, and the probe
leaves the module, its gradients and torch's random state as they were.
"""

from __future__ import annotations

import pytest
import torch
from opacus.layers import DPMultiheadAttention
from torch import nn

from privml import ConfigurationError
from privml.dp.torch._bk_layout import check_batch_first, clipped_layers, zero_rows
from privml.dp.torch._engine import build, prepare_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

MODES = ["bk", "ghost", "hooks"]
WIDTH = 8  # digits' 64 features as 8 positions of 8


class Transposing(nn.Module):
    """Rows as 8 positions, transposed to sequence-first ``(T, N, 8)`` before a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.reshape(len(x), -1, WIDTH).transpose(0, 1)
        return self.head(self.mix(seq).transpose(0, 1).reshape(len(x), -1))


class Reshaping(nn.Module):
    """Rows as ``(N*T, 8)`` through a Linear, then back to ``(N, 64)``."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(x.reshape(-1, WIDTH)).reshape(len(x), -1))


class Attending(nn.Module):
    """A Linear to ``steps`` positions of 4 features, Opacus's attention over them, a head.

    ``batch_first`` is the attention's; ``transpose`` whether the forward hands it
    sequence-first tensors (False with ``batch_first=False``: the misuse).
    """

    def __init__(self, *, steps: int, batch_first: bool, transpose: bool) -> None:
        super().__init__()
        self.steps, self.batch_first, self.transpose = steps, batch_first, transpose
        self.inputs = nn.Linear(64, 4 * steps)
        self.attention = DPMultiheadAttention(4, 2, batch_first=batch_first)
        self.head = nn.Linear(4 * steps, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.inputs(x).reshape(len(x), self.steps, 4)
        if self.transpose:
            seq = seq.transpose(0, 1)
        out, _ = self.attention(seq, seq, seq, need_weights=False)
        if self.transpose:
            out = out.transpose(0, 1)
        return self.head(out.reshape(len(x), -1))


class Dropping(nn.Module):
    """A batch-first network with dropout (it draws from torch's generator in training)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


class Stateful(nn.Module):
    """A BatchNorm's running statistics and a buffer the forward counts its calls in."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs = nn.Linear(64, 16)
        self.norm = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, 10)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out: torch.Tensor = self.head(self.drop(self.norm(self.inputs(x))))
        return out


def _seeded(make, **options):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return make(**options)


def _probe(module: nn.Module, mode: str) -> None:
    zeros = zero_rows((64,), torch.float32, lambda: torch.device("cpu"))
    check_batch_first(module, clipped_layers(module, mode), zeros, mode=mode)


# -- refused, by layer name ------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("make", [Transposing, Reshaping], ids=["transposing", "reshaping"])
def test_a_module_moving_the_batch_away_from_a_linear_is_refused_naming_it(make, mode):
    with pytest.raises(ConfigurationError, match=r"mix \(on 2 rows its input had shape"):
        _probe(_seeded(make), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("steps", [2, 3, 8], ids=["T=2", "T=3", "T=8"])
def test_batch_first_tensors_in_sequence_first_attention_are_refused_also_when_t_is_n(steps, mode):
    # T = 2 or 3 is the probe's own batch size once: the other probe still catches it.
    module = _seeded(Attending, steps=steps, batch_first=False, transpose=False)
    with pytest.raises(ConfigurationError, match=r"attention(\.qlinear)? \(on [23] rows"):
        _probe(module, mode)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
@pytest.mark.parametrize("steps", [2, 8], ids=["T=2", "T=8"])
def test_opacus_modes_refuse_sequence_first_attention_they_would_read_as_batch_first(steps, mode):
    module = _seeded(Attending, steps=steps, batch_first=False, transpose=True)
    with pytest.raises(ConfigurationError, match=r"attention\.qlinear .*grad_sample_mode='bk'"):
        _probe(module, mode)


# -- accepted ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("steps", [2, 8], ids=["T=2", "T=8"])
def test_batch_first_attention_is_accepted_in_every_mode(steps, mode):
    _probe(_seeded(Attending, steps=steps, batch_first=True, transpose=False), mode)


@pytest.mark.parametrize("steps", [2, 8], ids=["T=2", "T=8"])
def test_bk_accepts_sequence_first_attention_on_transposed_inputs(steps):
    _probe(_seeded(Attending, steps=steps, batch_first=False, transpose=True), "bk")


@pytest.mark.parametrize("mode", MODES)
def test_a_module_with_dropout_is_accepted(mode):
    _probe(_seeded(Dropping), mode)


def test_a_forward_that_fails_on_zeros_is_refused_with_its_error():
    class Picky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not x.any():
                raise ValueError("no zeros here")
            out: torch.Tensor = self.head(x)
            return out

    with pytest.raises(ConfigurationError, match=r"rows of zeros .*ValueError: no zeros here"):
        _probe(Picky(), "bk")


# -- the probe leaves no trace --------------------------------------------------------------
def test_the_probe_leaves_parameters_grads_buffers_flags_and_rng_as_they_were():
    module = _seeded(Stateful)
    module.train()
    module.norm.eval()  # a mixed state: flags are restored one by one
    for p in module.parameters():
        p.grad = torch.full_like(p, 0.25)
    params = {n: (p.detach().clone(), p._version) for n, p in module.named_parameters()}
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    buffers = {n: (b.clone(), b._version) for n, b in module.named_buffers()}
    flags = {n: m.training for n, m in module.named_modules()}
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    module.norm.train()  # BatchNorm now updates its running statistics in the probe
    flags["norm"] = True

    _probe(module, "hooks")

    assert torch.equal(torch.get_rng_state(), rng)
    assert {n: m.training for n, m in module.named_modules()} == flags
    for n, p in module.named_parameters():
        assert torch.equal(p, params[n][0]) and p._version == params[n][1]
        assert torch.equal(p.grad, grads[n])
    for n, b in module.named_buffers():
        assert torch.equal(b, buffers[n][0]) and b._version == buffers[n][1], n
    assert int(module.calls) == 0


def test_a_forward_writing_its_parameters_is_refused_by_name():
    """Parameters are not copied for the probe; a forward that writes one is refused,
    as the step guard would refuse its first step."""

    class Writing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.head.bias.add_(1.0)  # under the probe's no_grad
            out: torch.Tensor = self.head(x)
            return out

    module = _seeded(Writing)
    with pytest.raises(ConfigurationError, match=r"writes its parameters in place \(head\.bias\)"):
        _probe(module, "bk")


# -- without a declared row shape: at the first forward --------------------------------------
def _engine(module: nn.Module, mode: str):  # type: ignore[no-untyped-def]
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module, opt = prepare_module(module, opt, mode=mode, fix_module=False)
    return build(
        mode,
        module,
        opt,
        nn.CrossEntropyLoss(),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        batch_size=4,
        guard=None,
    )


@pytest.mark.parametrize("mode", MODES)
def test_without_a_row_shape_the_first_forward_is_probed_and_refused_each_time(mode):
    engine = _engine(_seeded(Transposing), mode)
    x = torch.rand(4, 64)
    for _ in range(2):
        with pytest.raises(ConfigurationError, match=r"mix \(on 2 rows"):
            engine.model(x)
    engine.close()


@pytest.mark.parametrize("mode", MODES)
def test_without_a_row_shape_an_accepted_module_trains_after_one_probe(mode):
    engine = _engine(_seeded(Dropping), mode)
    x, y = torch.rand(4, 64), torch.tensor([0, 1, 2, 3])
    engine.optimizer.zero_grad()
    engine.criterion(engine.model(x), y).backward()
    engine.optimizer.step()
    assert not engine.plain._forward_pre_hooks  # the probe's hook is gone
    engine.close()


@pytest.mark.parametrize("mode", MODES)
def test_with_a_row_shape_build_refuses_before_wrapping_anything(mode):
    module = _seeded(Transposing)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module, opt = prepare_module(module, opt, mode=mode, fix_module=False)
    with pytest.raises(ConfigurationError, match=r"mix \(on 2 rows"):
        build(
            mode,
            module,
            opt,
            nn.CrossEntropyLoss(),
            noise_multiplier=0.0,
            max_grad_norm=1.0,
            batch_size=4,
            guard=None,
            sample=((64,), torch.float32),
        )
    assert "forward" not in module.mix.__dict__  # book-keeping never attached
    assert not any(hasattr(m, "_forward_hooks") and m._forward_hooks for m in module.modules())


# -- through the vault: refused after the reservation, nothing charged -----------------------
def _training(v, features, module: nn.Module, mode: str):  # type: ignore[no-untyped-def]
    """A one-epoch private training run on the digits, as every test below starts it."""
    return v.session("eng", purpose="ml").dp.private_training(
        "data",
        features=features,
        target="target",
        module=module,
        optimizer=torch.optim.SGD(module.parameters(), lr=0.1),
        batch_size=64,
        epochs=1,
        max_grad_norm=1.0,
        noise_multiplier=1.0,
        grad_sample_mode=mode,
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_layout_through_the_vault_charges_nothing_and_names_the_layer(
    make_vault, digits, mode
):
    v = make_vault("digits")
    _, features = digits
    module = _seeded(Transposing)
    before = len(v.audit.entries())
    with (
        pytest.raises(ConfigurationError, match=r"mix \(on 2 rows.*Nothing was charged"),
        _training(v, features, module, mode),
    ):
        pytest.fail("the block must not run")
    events = v.ledger.events("data")  # the reservation, released: nothing charged
    assert list(events["status"]) == ["released"] and v.budget("data").reserved == 0
    assert v.budget("data").epsilon_spent == 0.0
    assert v.audit.entries(action="dp.train.load").empty  # no batch was drawn
    entries = v.audit.entries().iloc[before:]
    assert list(entries["action"]) == ["ledger.reserve", "ledger.release", "dp.train"]
    assert entries["outcome"].iloc[-1] == "error"
    assert entries["details"].iloc[-1]["error"] == "ConfigurationError"


@pytest.mark.parametrize("mode", MODES)
def test_an_accepted_module_with_dropout_trains_through_the_vault(
    make_vault, digits, train_loop, mode
):
    v = make_vault("digits")
    _, features = digits
    module = _seeded(Dropping)
    with _training(v, features, module, mode) as run:
        train_loop(run, stop_after=2)
    assert run.charge.status == "committed"
