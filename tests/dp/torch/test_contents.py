"""Contents: a bit-exact copy of tensors, and every kind of write found by value."""

from __future__ import annotations

import pytest
import torch

from privml.dp.torch._contents import Contents


def _tensors() -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [
        torch.randn(3, 4),
        torch.tensor([float("nan"), 1.0]),  # NaN equals itself, bit for bit
        torch.zeros(0),
        torch.randn(2, dtype=torch.float64),
        torch.tensor([True, False]),
        torch.randn(5, 2).t(),  # not contiguous
        # sparse: compared by a hash
        torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,), check_invariants=True),
    ]


def test_nothing_written_nothing_found():
    kept = Contents(_tensors())
    assert kept.differ() == []
    kept.take()
    assert kept.differ() == []


WRITES = {
    0: lambda ts: ts[0].data.__setitem__((1, 2), 9.0),
    1: lambda ts: ts[1].numpy().__setitem__(1, 2.0),
    2: lambda ts: setattr(ts[2], "data", torch.ones(1)),  # a shape change
    3: lambda ts: ts[3].untyped_storage().fill_(0),
    4: lambda ts: ts[4].data.fill_(True),
    5: lambda ts: ts[5].data.mul_(2.0),
    6: lambda ts: ts[6]._values().mul_(3.0),
}


@pytest.mark.parametrize("index", sorted(WRITES))
def test_each_write_is_found_and_only_it(index):
    tensors = _tensors()
    kept = Contents(tensors)
    WRITES[index](tensors)
    assert kept.differ() == [index]
    kept.take()  # the new values become the expected ones
    assert kept.differ() == []


def test_a_negative_zero_differs_from_zero():
    """Bits, not numbers: -0.0 == 0.0 numerically, and could carry one bit each."""
    t = torch.zeros(2)
    kept = Contents([t])
    t.data[0] = -0.0
    assert kept.differ() == [0]


def test_the_copy_is_one_row_per_dtype_not_a_table():
    kept = Contents([torch.zeros(100, 3), torch.zeros(7)])
    assert [tuple(c.shape) for c in kept._copies] == [(1, 307)]


def test_a_large_group_is_compared_tensor_by_tensor_into_the_same_copy():
    """Past 2^20 values no concatenation is made to compare; the copy is retaken in place."""
    big, small = torch.zeros(1 << 20), torch.zeros(3)
    kept = Contents([big, small])
    copy = kept._copies[0]
    assert kept.differ() == []
    big.data[-1] = 1.0
    small.numpy()[0] = 2.0
    assert kept.differ() == [0, 1]
    kept.take()
    assert kept._copies[0] is copy
    assert kept.differ() == []
