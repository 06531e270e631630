"""run.load_global: weights from outside the data, loaded between steps, audited, nothing more.

The attacker is a caller in the same process who wants un-noised information into the
released model through the one legitimate way to overwrite the parameters mid-run:
loading while a batch waits (its gradients not yet noised), loading tensors of the run,
aliasing the module with arrays it keeps writing to, or changing state besides the
parameters. Each is refused or made harmless; each load (and refusal) is in the log.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _torch_helpers import start_training

from privml import ConfigurationError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

MODES = ["ghost", "hooks", "bk"]


def _arrays(net, value: float = 0.25) -> list[np.ndarray]:
    return [np.full(tuple(p.shape), value, dtype=np.float32) for p in net.parameters()]


def _step(run) -> None:
    X, y = next(iter(run.data_loader))
    run.optimizer.zero_grad()
    run.criterion(run.model(X), y).backward()
    run.optimizer.step()


@pytest.mark.parametrize("mode", MODES)
def test_weights_load_between_steps_and_the_run_goes_on_under_one_reservation(
    make_vault, digits, make_mlp, mode
):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, mode, epochs=2) as run:
        _step(run)
        digest = run.load_global(_arrays(net), origin="federated round 2")
        assert all(torch.all(p == 0.25) for p in net.parameters())
        assert all(p.grad is None for p in net.parameters())  # the last batch's, cleared
        _step(run)  # the guard accepts the loaded parameters as the run's own
        assert not all(torch.all(p == 0.25) for p in net.parameters())
    assert run.steps_taken == 2 and run.charge.status == "committed"
    assert run.charge.event.params["steps"] == 2
    assert not v.models.list().empty  # loading is not tampering: the model is registered
    (entry,) = v.audit.entries(action="dp.train.load").to_dict("records")
    assert entry["outcome"] == "allowed"
    assert entry["details"]["weights_sha256"] == digest
    assert entry["details"]["steps_taken"] == 1
    assert entry["details"]["request_id"] == run.request_id
    assert v.audit.verify().ok


@pytest.mark.parametrize("mode", ["ghost", "bk"])
def test_a_batch_drawn_and_not_stepped_refuses_a_load(make_vault, digits, make_mlp, mode):
    """Its gradients are not yet noised: weights computed from them must not get in."""
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, mode) as run:
        X, y = next(iter(run.data_loader))
        run.criterion(run.model(X), y).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
        leaked = [  # plain SGD on the waiting batch, no clipping, no noise
            (p.detach() - 0.5 * g).numpy().copy()
            for p, g in zip(net.parameters(), grads, strict=True)
        ]
        before = [p.detach().clone() for p in net.parameters()]
        with pytest.raises(ConfigurationError, match="only between steps"):
            run.load_global(leaked, origin="plain SGD")
        assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
        run.optimizer.step()  # the run goes on: the refusal changed nothing
    assert run.steps_taken == 1
    (entry,) = v.audit.entries(action="dp.train.load").to_dict("records")
    assert entry["outcome"] == "refused" and "weights_sha256" not in entry["details"]


def test_tensors_wrong_shapes_and_non_finite_values_are_refused_before_anything_changes(
    make_vault, digits, make_mlp
):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net) as run:
        _step(run)
        before = [p.detach().clone() for p in net.parameters()]
        tensors = [p.detach() * 2 for p in net.parameters()]
        short = _arrays(net)[:-1]
        shapes = [a.T.copy() if a.ndim == 2 else a for a in _arrays(net)]
        ints = [a.astype(np.int64) for a in _arrays(net)]
        nan = _arrays(net)
        nan[-1][0] = np.nan
        for bad, why in [
            (tensors, "NumPy"),
            (short, "list of"),
            (shapes, "shape"),
            (ints, "floating-point"),
            (nan, "non-finite"),
            (tuple(_arrays(net)[:1]), "list of"),
        ]:
            with pytest.raises(ConfigurationError, match=why):
                run.load_global(bad, origin="bad")
            assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
        with pytest.raises(ConfigurationError, match="origin"):
            run.load_global(_arrays(net), origin="")
    assert run.charge.status == "committed" and not v.models.list().empty
    outcomes = list(v.audit.entries(action="dp.train.load")["outcome"])
    assert outcomes == ["refused"] * 6  # the empty origin is refused before the guard


def test_the_loaded_values_are_copied_so_writing_to_the_arrays_later_changes_nothing(
    make_vault, digits, make_mlp
):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, epochs=2) as run:
        arrays = _arrays(net)
        run.load_global(arrays, origin="server")
        for a in arrays:  # an alias would let these writes skip the guard
            a += 100.0
        assert all(torch.all(p == 0.25) for p in net.parameters())
        _step(run)
    assert run.charge.status == "committed" and not v.models.list().empty


def test_no_load_after_the_block_or_after_tampering(make_vault, digits, make_mlp):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net) as run:
        _step(run)
    with pytest.raises(ConfigurationError, match="has ended"):
        run.load_global(_arrays(net), origin="late")

    net = make_mlp()
    with (
        pytest.raises(ConfigurationError, match="modified outside"),
        start_training(v, digits, net) as run,
    ):
        _step(run)
        with torch.no_grad():
            next(net.parameters()).add_(1.0)  # by hand: no clipping, no noise
        # a load would otherwise hide the tampering by resetting the expected versions
        run.load_global(_arrays(net), origin="cover-up")
