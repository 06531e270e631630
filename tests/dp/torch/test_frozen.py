"""The per-step state check: every kind of write to a module's tensors is named, nothing else.

Each case changes one buffer, tensor attribute or submodule of a module:
``Frozen.moved`` must name it; an untouched module whose parameters train gives
nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from privml.dp.torch._frozen import Frozen


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 2)))
    net.register_buffer("scale", torch.ones(2))
    net[2].offset = torch.zeros(2)  # a plain tensor attribute
    return net


def _rename(net: nn.Module) -> None:
    """The norm's name changes, its place among the submodules does not."""
    net._modules = {("norm" if k == "1" else k): m for k, m in net._modules.items()}


def _replace_freed(net: nn.Module) -> None:
    """The old tensor is freed first, so its successor may take its id (and version 0)."""
    del net._buffers["scale"]
    net.register_buffer("scale", torch.full((2,), 7.0))


CASES: dict[str, tuple[Callable[[nn.Module], None], str]] = {
    "buffer written in place": (lambda n: n.scale.add_(1), "buffer scale"),
    "buffer of a submodule written": (lambda n: n[1].running_mean.add_(1), "buffer 1.running_mean"),
    "buffer replaced": (lambda n: setattr(n, "scale", torch.ones(2)), "buffer scale"),
    "buffer freed, then a new one under its name": (_replace_freed, "buffer scale"),
    "buffer removed": (lambda n: n._buffers.pop("scale"), "buffer scale"),
    "buffer added": (lambda n: n[0].register_buffer("rows", torch.zeros(3)), "buffer 0.rows"),
    "attribute written": (lambda n: n[2].offset.add_(1), "attribute 2.offset"),
    "attribute added": (lambda n: setattr(n[0], "seen", torch.zeros(1)), "attribute 0.seen"),
    "attribute removed": (lambda n: delattr(n[2], "offset"), "attribute 2.offset"),
    "submodule renamed": (_rename, "buffer norm.running_mean"),
    "submodule replaced": (lambda n: n._modules.__setitem__("1", nn.BatchNorm1d(4)), "buffer 1."),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_write_is_named(case):
    net = _net()
    frozen = Frozen(net)
    change, expected = CASES[case]
    change(net)
    moved = frozen.moved()
    assert any(name.startswith(expected) for name in moved), moved


def test_an_untouched_module_has_nothing_moved_while_its_parameters_train():
    net = _net()
    frozen = Frozen(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # parameters are not the state checked here
    net.eval()
    net.train()
    assert frozen.moved() == []
