"""One Poisson batch per step, stepped once: every way of stepping other gradients is refused.

Each test is written as the caller who tries it inside a ``private_training``
block; every refusal must come before the parameters move, and the ledger
must charge the batches that were actually drawn.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from _torch_helpers import start_training

from privml import BudgetExceededError, ConfigurationError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

MODES = ["ghost", "hooks", "bk"]


def _pass(run, X, y):
    run.optimizer.zero_grad()
    run.criterion(run.model(X), y).backward()


def _step(run, X, y):
    _pass(run, X, y)
    run.optimizer.step()


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def _same(before, net):
    return all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("mode", MODES)
def test_twenty_steps_on_one_batch_are_refused_and_one_is_charged(
    make_vault, digits, make_mlp, mode
):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, mode) as run:
        it = iter(run.data_loader)
        X, y = next(it)
        _step(run, X, y)
        after_one = _params(net)
        for _ in range(19):  # the same batch again: its forward pass is refused
            with pytest.raises(ConfigurationError, match="batch just drawn"):
                _step(run, X, y)
        with pytest.raises(ConfigurationError, match="no batch of its own"):
            run.optimizer.step()  # and a bare step, with the gradients still there
        assert _same(after_one, net)
    assert run.steps_taken == run.batches_drawn == 1
    assert run.charge.event.params["steps"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_drawing_batches_ahead_is_refused(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    before = _params(net)
    with start_training(v, digits, net, mode) as run:
        it = iter(run.data_loader)
        next(it)
        with pytest.raises(ConfigurationError, match="has not been stepped"):
            next(it)  # a stock of batches to step on later (or to pick from)
        with pytest.raises(ConfigurationError, match="has not been stepped"):
            next(iter(run.data_loader))
        assert run.batches_drawn == 1 and _same(before, net)
    assert run.charge.status == "committed" and run.charge.event.params["steps"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_accumulating_gradients_over_two_batches_is_refused(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    before = _params(net)
    with start_training(v, digits, net, mode) as run:
        it = iter(run.data_loader)
        X, y = next(it)
        _pass(run, X, y)
        with pytest.raises(ConfigurationError, match="has not been stepped"):
            next(it)
        with pytest.raises(ConfigurationError, match="batch just drawn"):
            run.criterion(run.model(torch.cat([X, X])), torch.cat([y, y])).backward()
        assert _same(before, net)


@pytest.mark.parametrize("mode", MODES)
def test_a_step_on_an_older_batch_is_refused(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, mode) as run:
        it = iter(run.data_loader)
        X1, y1 = next(it)
        _step(run, X1, y1)
        X2, y2 = next(it)  # one new batch since the step ...
        before = _params(net)
        with pytest.raises(ConfigurationError, match="batch just drawn"):
            _step(run, X1, y1)  # ... but the gradients are the old batch's
        with pytest.raises(ConfigurationError, match="no backward pass"):
            run.optimizer.step()
        assert _same(before, net)
        _step(run, X2, y2)  # the batch drawn for it: accepted
    assert run.steps_taken == run.batches_drawn == 2


@pytest.mark.parametrize("mode", MODES)
def test_a_backward_through_an_older_batchs_output_is_refused(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, mode) as run:
        it = iter(run.data_loader)
        X1, y1 = next(it)
        run.optimizer.zero_grad()
        kept = run.model(X1)  # an output of batch 1, kept for later
        run.criterion(kept, y1).backward()
        run.optimizer.step()
        X2, y2 = next(it)
        before = _params(net)
        run.optimizer.zero_grad()
        with pytest.raises(ConfigurationError, match="already stepped"):
            run.criterion(kept, y1).backward()  # batch 1's gradients, once more
        if mode != "ghost":  # a plain loss: batch 2's term plus batch 1's again
            run.optimizer.zero_grad()
            loss = run.criterion(run.model(X2), y2) + run.criterion(kept, y1)
            with pytest.raises(ConfigurationError, match="already stepped"):
                loss.backward()
        with pytest.raises(ConfigurationError, match="incomplete"):
            run.optimizer.step()
        assert _same(before, net)


@pytest.mark.parametrize("mode", MODES)
def test_rows_from_elsewhere_and_steps_before_any_batch_are_refused(
    make_vault, digits, make_mlp, mode
):
    frame, features = digits
    v = make_vault("digits")
    net = make_mlp()
    before = _params(net)
    X = torch.as_tensor(frame[features].to_numpy()[:64] / 16.0, dtype=torch.float32)
    y = torch.tensor(frame["target"].to_numpy()[:64])
    with start_training(v, digits, net, mode) as run:
        with pytest.raises(ConfigurationError, match="no batch is waiting"):
            _step(run, X, y)  # no batch drawn yet
        with pytest.raises(ConfigurationError, match="no batch of its own"):
            run.optimizer.step()
        Xb, yb = next(iter(run.data_loader))
        with pytest.raises(ConfigurationError, match="batch just drawn"):
            _step(run, X, y)  # a batch is waiting, but these rows are not it
        with pytest.raises(ConfigurationError, match="batch just drawn"):
            _step(run, Xb * 1.0, yb)  # a copy of it is not it either
        assert _same(before, net)
        with torch.no_grad():
            run.model(X)  # evaluation without gradients is free
        _step(run, Xb.view(len(yb), 8, 8).view(len(yb), 64), yb)  # views are the batch
    assert run.steps_taken == 1


@pytest.mark.parametrize("mode", MODES)
def test_interleaved_iterators_are_refused_and_reiterating_is_charged_per_batch(
    make_vault, digits, make_mlp, mode
):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, mode, epochs=2) as run:
        first = iter(run.data_loader)
        _step(run, *next(first))
        second = iter(run.data_loader)
        with pytest.raises(ConfigurationError, match="newer iter"):
            next(first)
        _step(run, *next(second))
        for _ in range(3):  # restarting the loop mid-epoch: fresh Poisson batches each time
            for X, y in run.data_loader:
                _step(run, X, y)
                break
        with pytest.raises(ConfigurationError, match="copied or pickled"):
            copy.deepcopy(run.data_loader)
        with pytest.raises(ConfigurationError, match="copied or pickled"):
            pickle.dumps(run.data_loader)
    assert run.steps_taken == run.batches_drawn == 5
    assert run.charge.event.params["steps"] == 5


@pytest.mark.parametrize("mode", MODES)
def test_the_reservation_caps_batches_even_without_steps(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, mode, batch_size=600) as run:  # 2 steps per epoch, 1 epoch
        assert run.steps_planned == 2
        for X, y in run.data_loader:
            _step(run, X, y)
        with pytest.raises(BudgetExceededError, match="would exceed the 2 DP-SGD steps"):
            next(iter(run.data_loader))
    assert run.batches_drawn == 2 and run.charge.event.params["steps"] == 2
    with pytest.raises(ConfigurationError, match="run has ended"):
        next(iter(run.data_loader))  # the loader is dead after the block


@pytest.mark.parametrize("mode", MODES)
def test_empty_poisson_batches_are_stepped_like_any_other(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    # q = 1/1797: a batch is empty with probability (1 - q)^1797 ≈ 0.37; 40 steps, and the
    # loop must accept empty and non-empty batches alike (no assertion on how many).
    with start_training(v, digits, net, mode, batch_size=1, noise_multiplier=5.0) as run:
        for X, y in run.data_loader:
            _step(run, X, y)
            if run.steps_taken == 40:
                break
    assert run.charge.event.params["steps"] == 40
