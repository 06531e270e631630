"""What a run hands out: its batches, never the table; every drawn batch charged and audited."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from _torch_helpers import start_training

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

N = 1797  # digits
# A Poisson batch at q = 64/N has ~64 rows; 600 or more has probability far below 1e-100.
BATCH_BOUND = 600


def _children(obj: Any) -> list[Any]:
    """What a curious caller reaches from ``obj`` without reading raw memory."""
    out: list[Any] = []
    if isinstance(obj, dict):
        out += list(obj.keys()) + list(obj.values())
    elif isinstance(obj, list | tuple | set | frozenset):
        out += list(obj)
    if isinstance(obj, types.FunctionType):
        out += [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
        out += [obj.__defaults__, obj.__kwdefaults__]
    elif isinstance(obj, types.MethodType):
        out += [obj.__self__, obj.__func__]
    elif isinstance(obj, types.GeneratorType) and obj.gi_frame is not None:
        out.append(obj.gi_frame.f_locals)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        out.append(vars(obj))
    for slot in getattr(type(obj), "__slots__", ()):
        if isinstance(slot, str) and hasattr(obj, slot):
            out.append(getattr(obj, slot))
    return out


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _rows(obj: Any) -> int:
    if isinstance(obj, torch.Tensor | np.ndarray | pd.DataFrame | pd.Series) and obj.ndim:
        return int(obj.shape[0])
    return 0


def _largest_table(root: Any, limit: int = 400_000) -> tuple[int, str]:
    """Walk attributes, containers, closures and generator frames from ``root``.

    Modules, classes and functions' globals are not followed: from there every
    object of the process is reachable (the caller holds the vault key anyway).
    """
    seen: set[int] = set()
    todo: list[tuple[Any, str]] = [(root, "run")]
    best = (0, "")
    while todo and len(seen) < limit:
        obj, path = todo.pop()
        if id(obj) in seen or isinstance(obj, types.ModuleType | type | str | bytes | int):
            continue
        seen.add(id(obj))
        rows = _rows(obj)
        if rows > best[0]:
            best = (rows, path)
        if isinstance(obj, torch.Tensor | np.ndarray | pd.DataFrame | pd.Series):
            continue
        for i, child in enumerate(_children(obj)):
            todo.append((child, f"{path}/{type(child).__name__}[{i}]"))
    return best


@pytest.mark.parametrize("mode", ["ghost", "hooks", "bk"])
def test_nothing_reachable_from_the_run_holds_the_table(make_vault, digits, make_mlp, mode):
    v = make_vault("digits")
    net = make_mlp()
    with start_training(v, digits, net, mode) as run:
        assert not hasattr(run.data_loader, "dataset")
        it = iter(run.data_loader)
        for _ in range(3):
            X, y = next(it)
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
        next(it)  # a batch waiting for its step, and a live iterator
        rows, path = _largest_table(run)
        assert rows < BATCH_BOUND, path
        rows, path = _largest_table(it)
        assert rows < BATCH_BOUND, path
    rows, path = _largest_table(run)  # after the block: the registered model and its scaler
    assert rows < BATCH_BOUND, path


def test_leaving_without_a_step_charges_and_audits_the_batch_that_left(
    make_vault, digits, make_mlp
):
    v = make_vault("digits")
    with start_training(v, digits, make_mlp()) as run:
        _, y = next(iter(run.data_loader))  # seen by the caller's code, never stepped
    assert run.steps_taken == 0 and run.batches_drawn == 1
    assert run.charge.status == "committed" and run.charge.event.params["steps"] == 1
    assert run.epsilon == pytest.approx(run.epsilon_at(1)) and run.epsilon > 0
    assert v.budget("data").epsilon_fixed_sequence == pytest.approx(run.epsilon, rel=1e-6)
    assert run.epsilon < v.budget("data").epsilon_spent  # the privacy filter's figure
    assert v.models.list().empty
    entry = v.audit.entries(action="dp.train.batches").iloc[-1]
    assert entry["outcome"] == "handed_out"
    assert entry["details"] == {
        "request_id": run.request_id,
        "batches_drawn": 1,
        "rows_drawn": len(y),
        "steps_taken": 0,
        "steps_charged": 1,
        "parameters_changed_outside": False,
        "module_state_changed": False,
    }


def test_a_trained_run_audits_every_row_handed_out(make_vault, digits, make_mlp, train_loop):
    v = make_vault("digits")
    sizes: list[int] = []
    with start_training(v, digits, make_mlp(), mode="bk") as run:
        for X, y in run.data_loader:
            sizes.append(len(y))
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
    details = v.audit.entries(action="dp.train.batches").iloc[-1]["details"]
    assert details["batches_drawn"] == details["steps_charged"] == len(sizes) == 28
    assert details["rows_drawn"] == sum(sizes)
    assert v.audit.verify().ok


def test_the_callers_seed_replays_neither_the_batches_nor_the_noise(make_mlp):
    from torch import nn

    from privml.dp.torch._engine import build
    from privml.dp.torch._loader import poisson_sample

    samples = []
    for _ in range(2):
        torch.manual_seed(0)
        np.random.seed(0)
        samples.append(poisson_sample(2000, 0.5))
    assert not np.array_equal(*samples)  # equal with probability 2^-2000

    X, y = torch.zeros(8, 64), torch.zeros(8, dtype=torch.long)  # zero gradients: noise only
    updates = []
    for _ in range(2):
        net = make_mlp()
        before = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.SGD(net.parameters(), lr=1.0)
        engine = build(
            "bk",
            net,
            opt,
            nn.CrossEntropyLoss(),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            batch_size=8,
            guard=None,
        )
        engine.optimizer.zero_grad()
        engine.criterion(engine.model(X), y).backward()
        torch.manual_seed(0)  # the caller's seed, just before the noise is drawn
        engine.optimizer.step()
        updates.append(
            torch.cat(
                [(b - p.detach()).flatten() for b, p in zip(before, net.parameters(), strict=True)]
            )
        )
        engine.close()
    assert float(updates[0].abs().max()) > 0
    assert not torch.allclose(updates[0], updates[1])
