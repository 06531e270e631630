"""Only the noised parameters leave a run, and a closed vault stops its block at once."""

from __future__ import annotations

import pytest
import torch
from _torch_helpers import start_training
from torch import nn

from privml import ConfigurationError
from privml.exceptions import VaultClosedError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

MODES = ["ghost", "hooks", "bk"]


def _data(x: torch.Tensor, width: int) -> torch.Tensor:
    """Values from the batch, never equal to what they overwrite (pixels are >= 0; +1)."""
    return x[:, 19 : 19 + width].detach().sum(0) + 1.0


class Stash(nn.Module):
    """A plain MLP whose forward copies input rows into a buffer, under no_grad (the attack)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.how = how
        self.register_buffer("mem", torch.zeros(64, 2))
        self.rows: list[list[float]] = []
        self.side = [nn.Linear(2, 2)]  # a module kept outside the registered tree
        object.__setattr__(self, "box", nn.Linear(2, 2))  # another, set around __setattr__
        self.cache = {"first": [torch.zeros(2)]}  # a tensor in plain containers
        self.stash = nn.Parameter(torch.zeros(2), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.how == "buffer":  # in place: the buffer's version moves
                self.mem[: len(x)] = x[:64, :2]
            elif self.how == "attribute":  # a new tensor attribute, pickled with the module
                self.leak = x.detach().clone()
            elif self.how == "list":  # rows in a plain Python list
                self.rows.append(x[0].tolist())
            elif self.how == "replace":  # a new buffer tensor under the same name
                self.mem = x[:2, :2].t().clone().repeat(32, 1)
            elif self.how == "inplace in a kept module":
                self.side[0].weight[0] = _data(x, 2)
            elif self.how == "inplace in a set-around module":
                self.box.bias.copy_(_data(x, 2))
            elif self.how == "inplace in a container":
                self.cache["first"][0].copy_(_data(x, 2))
        # writes that move no version counter
        if self.how == "buffer .data":
            self.mem.data[0] = _data(x, 2)
        elif self.how == "buffer through NumPy":
            self.mem.numpy()[0] = _data(x, 2).numpy()
        elif self.how == "buffer through its storage":
            self.mem.untyped_storage()[:8].copy_(_data(x, 2).untyped_storage())
        elif self.how == "kept module .data":
            self.side[0].weight.data[0] = _data(x, 2)
        elif self.how == "container .data":
            self.cache["first"][0].data.copy_(_data(x, 2))
        elif self.how == "buffer, version counter reset":
            version = self.mem._version
            with torch.no_grad():
                self.mem[0] = _data(x, 2)
            torch._C._autograd._unsafe_set_version_counter((self.mem,), (version,))
        out: torch.Tensor = self.body(x)
        return out


def _step(run):
    X, y = next(iter(run.data_loader))
    run.optimizer.zero_grad()
    run.criterion(run.model(X), y).backward()
    run.optimizer.step()


WRITES = [
    "buffer",
    "attribute",
    "list",
    "replace",
    "inplace in a kept module",
    "inplace in a set-around module",
    "inplace in a container",
    "buffer .data",
    "buffer through NumPy",
    "buffer through its storage",
    "kept module .data",
    "container .data",
    "buffer, version counter reset",
]


@pytest.mark.parametrize("how", WRITES)
@pytest.mark.parametrize("mode", MODES)
def test_rows_written_into_the_module_are_never_registered(make_vault, digits, mode, how):
    v = make_vault("digits")
    net = Stash(how)
    mem = net.mem.clone()
    with (
        pytest.raises(ConfigurationError, match="besides its parameters changed") as caught,
        start_training(v, digits, net, mode) as run,
    ):
        _step(run)  # the write happens in this forward pass
        if how != "list":  # seen by the next step already (versions, identities)
            with pytest.raises(ConfigurationError, match="besides its parameters"):
                _step(run)
    assert "[" not in str(caught.value)  # names only, never values
    assert v.models.list().empty
    assert run.charge.status == "committed"  # what was drawn is charged
    details = v.audit.entries(action="dp.train.batches").iloc[-1]["details"]
    assert details["module_state_changed"] is True
    if how.startswith("buffer"):
        assert not torch.equal(net.mem, mem)  # the write did happen; it just never left


class Overwrite(nn.Module):
    """An MLP whose forward writes an input row into a parameter without moving its version."""

    def __init__(self, how: str) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.stash = nn.Parameter(torch.zeros(10), requires_grad=False)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row = _data(x, 10)
        bias = self.body[2].bias
        if self.how == "frozen parameter .data":
            self.stash.data.copy_(row)
        elif self.how == "trained bias .data":
            bias.data[:] = row
        elif self.how == "trained bias .data replaced":
            bias.data = row.clone()
        elif self.how == "trained bias through NumPy":
            bias.detach().numpy()[:] = row.numpy()
        elif self.how == "trained bias through its storage":
            bias.untyped_storage().copy_(row.clone().untyped_storage())
        elif self.how == "trained bias, version counter reset":
            version = bias._version
            with torch.no_grad():
                bias.copy_(row)
            torch._C._autograd._unsafe_set_version_counter((bias,), (version,))
        out: torch.Tensor = self.body(x)
        return out


@pytest.mark.parametrize(
    "how",
    [
        "frozen parameter .data",
        "trained bias .data",
        "trained bias .data replaced",
        "trained bias through NumPy",
        "trained bias through its storage",
        "trained bias, version counter reset",
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_parameters_written_around_their_version_are_never_registered(
    make_vault, digits, mode, how
):
    """Only the run's steps may change a parameter: compared by value, not by version."""
    v = make_vault("digits")
    net = Overwrite(how)
    with (
        pytest.raises(ConfigurationError, match=r"modified outside run\.optimizer\.step") as caught,
        start_training(v, digits, net, mode) as run,
    ):
        for _ in range(3):
            _step(run)
    assert "[" not in str(caught.value)
    assert v.models.list().empty


@pytest.mark.parametrize("mode", MODES)
def test_a_no_grad_forward_after_the_last_step_is_caught_at_exit(make_vault, digits, mode):
    v = make_vault("digits")
    net = Stash("buffer")
    with (
        pytest.raises(ConfigurationError, match="model was not registered"),
        start_training(v, digits, net, mode) as run,
    ):
        net.how = "none"
        _step(run)
        net.how = "buffer"
        X, _ = next(iter(run.data_loader))
        with torch.no_grad():
            run.model(X)  # an evaluation pass that writes the batch into the buffer
    assert v.models.list().empty


@pytest.mark.parametrize("mode", MODES)
def test_a_module_with_untouched_buffers_and_eval_passes_registers(make_vault, digits, mode):
    v = make_vault("digits")
    net = Stash("none")
    with start_training(v, digits, net, mode) as run:
        _step(run)
        run.model.eval()  # train()/eval() flags carry no data
        with torch.no_grad():
            run.model(torch.zeros(3, 64))
    assert run.model_info is not None
    assert torch.equal(v.models.load(run.name).module.mem, torch.zeros(64, 2))


@pytest.mark.parametrize("mode", MODES)
def test_closing_the_vault_inside_a_block_stops_draws_and_steps(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    handed: list[object] = []
    with pytest.raises(VaultClosedError), start_training(v, digits, net, mode) as run:
        _step(run)
        X, y = next(iter(run.data_loader))
        run.optimizer.zero_grad()
        run.criterion(run.model(X), y).backward()
        before = [p.detach().clone() for p in net.parameters()]
        v.close()
        with pytest.raises(VaultClosedError):
            run.optimizer.step()  # the batch drawn before the close is not stepped
        with pytest.raises(VaultClosedError):
            for batch in run.data_loader:
                handed.append(batch)
                run.optimizer.step()
    assert handed == []
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    assert run.steps_taken == 1 and run.batches_drawn == 2
    assert run.charge is None and run.model_info is None  # nothing settled: stays reserved
