"""An empty Poisson batch through book-keeping: no norms, every clipped sum zero, no error."""

from __future__ import annotations

import pytest
import torch
from _bk_reference import bookkeeping
from _layer_nets import make
from opacus.validators import ModuleValidator
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore:fix_module=True replaces:UserWarning")


# (The attention networks cannot run an empty batch at all: their own forward reshapes
# with -1, and so does DPMultiheadAttention's.)
@pytest.mark.parametrize("name", ["cnn"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_an_empty_batch_gives_zero_sums_for_every_layer(name, reduction):
    net, fix = make(name)
    net = (ModuleValidator.fix(net) if fix else net).double()
    x = torch.zeros(0, 64, dtype=torch.float64)
    norms, sums = bookkeeping(net, x, torch.zeros(0, dtype=torch.long), reduction)
    assert norms.shape == (0,)
    assert sums.keys() == {n for n, p in net.named_parameters() if p.requires_grad}
    assert all(not s.any() for s in sums.values())
    assert all(s.shape == p.shape for (_, s), p in zip(sums.items(), net.parameters(), strict=True))


def test_an_empty_batch_of_views_gives_zero_sums():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(2, 3, 3),
        nn.GroupNorm(3, 3),  # (torch's InstanceNorm refuses an empty batch itself)
        nn.LayerNorm(4),
        nn.RMSNorm(4),
        nn.Linear(4, 4),  # on (N, 3, 4): a sequence of 3 positions
        nn.Flatten(),
        nn.Linear(12, 2),
    )
    norms, sums = bookkeeping(
        net.double(), torch.zeros(0, 2, 6, dtype=torch.float64), torch.zeros(0).long(), views=2
    )
    assert norms.shape == (0,) and all(not s.any() for s in sums.values())
