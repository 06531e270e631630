"""Model builders shared by the HE tests (a module of its own: ``conftest`` names collide)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def square_module() -> Any:
    """A user-written x**2 activation, as in most HE tutorials."""
    torch = pytest.importorskip("torch")

    class Square(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x: Any) -> Any:
            return x * x

    return Square()


def train_mlp(
    X: np.ndarray, y: np.ndarray, activation: Any, *, hidden: int, steps: int = 300, seed: int = 0
) -> Any:
    """A small nn.Sequential(Linear, activation, Linear) trained full-batch with Adam."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    net = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], hidden), activation, torch.nn.Linear(hidden, n_classes)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(Xt), yt)
        loss.backward()
        opt.step()
    return net.eval()
