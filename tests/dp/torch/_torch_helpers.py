"""Helpers shared by the DP-SGD tests."""

from __future__ import annotations

from typing import Any

import pandas as pd

from privml import Vault


def start_training(
    v: Vault,
    digits: tuple[pd.DataFrame, list[str]],
    net: Any,
    mode: str = "ghost",
    *,
    optimizer: Any = None,
    **kwargs: Any,
) -> Any:
    """``private_training`` on the digits as principal "eng": B = 64, one epoch, σ = 1."""
    import torch

    _, features = digits
    settings = {"batch_size": 64, "epochs": 1, "max_grad_norm": 1.0, "noise_multiplier": 1.0}
    return v.session("eng", purpose="ml").dp.private_training(
        "data",
        features=features,
        target="target",
        module=net,
        optimizer=optimizer or torch.optim.SGD(net.parameters(), lr=0.5),
        grad_sample_mode=mode,
        **{**settings, **kwargs},
    )
