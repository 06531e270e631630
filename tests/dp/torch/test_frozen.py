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
    net.kept = [nn.Linear(2, 2)]  # a module outside the registered tree, pickled with it
    object.__setattr__(net, "box", nn.Linear(2, 2))  # another, set around __setattr__
    net.cache = {"rows": (torch.zeros(3),)}  # a tensor in plain containers
    return net


SECRET = torch.tensor([42.0, 43.0])


def _version_reset(net: nn.Module) -> None:
    """An in-place write, then the version counter set back to what it was."""
    version = net.scale._version
    net.scale.add_(1)
    torch._C._autograd._unsafe_set_version_counter((net.scale,), (version,))


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
    # writes that move no version counter: compared by value
    "buffer written through .data": (lambda n: n.scale.data.copy_(SECRET), "buffer scale"),
    "buffer's .data replaced": (lambda n: setattr(n.scale, "data", SECRET.clone()), "buffer scale"),
    "buffer written through NumPy": (
        lambda n: n.scale.numpy().__setitem__(slice(None), 7.0),
        "buffer scale",
    ),
    "buffer written through its storage": (
        lambda n: n.scale.untyped_storage().copy_(SECRET.untyped_storage()),
        "buffer scale",
    ),
    "buffer written, version set back": (_version_reset, "buffer scale"),
    "attribute written through .data": (
        lambda n: n[2].offset.data.copy_(SECRET),
        "attribute 2.offset",
    ),
    # what is kept outside the registered tree
    "module in a list written": (lambda n: n.kept[0].weight.data.fill_(7.0), "attribute kept"),
    "module in a list replaced": (
        lambda n: n.kept.__setitem__(0, nn.Linear(2, 2)),
        "attribute kept",
    ),
    "module set around __setattr__ written": (
        lambda n: n.box.bias.detach().add_(1.0),
        "attribute box",
    ),
    "tensor in containers written": (
        lambda n: n.cache["rows"][0].numpy().__setitem__(0, 7.0),
        "attribute cache",
    ),
    "tensor added to a container": (
        lambda n: n.cache.__setitem__("more", torch.zeros(1)),
        "attribute cache",
    ),
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
    assert frozen.changed() == []


def test_a_module_kept_outside_the_tree_counts_at_the_end_too():
    """The full comparison follows it as well: it is pickled with the model."""
    net = _net()
    frozen = Frozen(net)
    with torch.no_grad():
        net.kept[0].weight.fill_(7.0)
    assert frozen.changed() == ["attribute kept"]


def test_no_name_shows_a_container_key():
    """Entries are named by position: a dict's key may itself be data."""
    net = _net()
    net.cache = {"Jane Doe": torch.zeros(2)}
    frozen = Frozen(net)
    net.cache["Jane Doe"].data.fill_(1.0)
    moved = frozen.moved()
    assert moved == ["attribute cache/0"]
    assert not any("Jane" in name for name in moved)
