"""Inside a block only run.optimizer moves the parameters; other updates are fenced or caught."""

from __future__ import annotations

import pytest
import torch
from _torch_helpers import start_training

from privml import ConfigurationError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

MODES = ["ghost", "hooks", "bk"]


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def _same(before, net):
    return all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


def _backward(run):
    X, y = next(iter(run.data_loader))
    run.optimizer.zero_grad()
    run.criterion(run.model(X), y).backward()


@pytest.mark.parametrize("mode", MODES)
def test_the_callers_own_optimizer_and_its_twins_cannot_step(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    mine = torch.optim.SGD(net.parameters(), lr=0.5)
    with start_training(v, digits, net, mode, optimizer=mine) as run:
        _backward(run)
        before = _params(net)
        twins = [
            mine,  # the optimizer passed in
            torch.optim.SGD(mine.param_groups, lr=0.5),  # a second one over its groups
            torch.optim.Adam(net.parameters()),  # a fresh one over the module
            run.optimizer.original_optimizer,  # the one Opacus wraps
        ]
        for other in twins:
            with pytest.raises(ConfigurationError, match=r"outside run\.optimizer"):
                other.step()
        assert _same(before, net)
        run.optimizer.step()  # the run's own step is released
        assert not _same(before, net)
    assert run.steps_taken == 1
    before = _params(net)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    mine.step()  # after the block, the optimizer is the caller's again
    assert not _same(before, net)


@pytest.mark.parametrize("mode", MODES)
def test_an_update_by_hand_stops_the_run_and_registers_nothing(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    with (
        pytest.raises(ConfigurationError, match=r"modified outside run\.optimizer"),
        start_training(v, digits, net, mode) as run,
    ):
        _backward(run)
        run.optimizer.step()
        X, y = next(iter(run.data_loader))
        run.optimizer.zero_grad()
        run.criterion(run.model(X), y).backward()
        with torch.no_grad():  # plain SGD by hand: no clipping, no noise
            for p in net.parameters():
                if p.grad is not None:
                    p.sub_(0.5 * p.grad)
        before = _params(net)
        with pytest.raises(ConfigurationError, match=r"modified outside run\.optimizer"):
            run.optimizer.step()
        assert _same(before, net)
    assert run.steps_taken == 1 and run.charge.event.params["steps"] == 2  # 2 batches drawn
    assert v.models.list().empty
    details = v.audit.entries(action="dp.train.batches").iloc[-1]["details"]
    assert details["parameters_changed_outside"] is True


@pytest.mark.parametrize("mode", MODES)
def test_loading_weights_after_the_last_step_is_caught_at_exit(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    other = make_mlp(seed=9)
    with (
        pytest.raises(ConfigurationError, match="model was not registered"),
        start_training(v, digits, net, mode) as run,
    ):
        _backward(run)
        run.optimizer.step()
        net.load_state_dict(other.state_dict())
    assert run.charge.status == "committed" and v.models.list().empty
