"""LiRA's reference models: the same kind of model, refitted on rows the target never saw.

Reference models are the attacker's tools, not releases: they stay with the
party running the report and are discarded with it, so refitting a
diffprivlib model spends no budget (it gets a fresh ``BudgetAccountant``, so
diffprivlib's global default accountant is never touched). A torch model is
refitted non-privately: the same architecture, its parameters re-initialized,
trained with a small plain Adam loop.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["reference_fitter"]

Fitter = Callable[[pd.DataFrame, pd.Series], Any]

#: Epochs and learning rate of a torch reference model's plain loop.
TORCH_EPOCHS = 20
TORCH_LR = 1e-2


def reference_fitter(model: Any, *, random_state: int) -> tuple[Fitter | None, str | None]:
    """A ``fit_reference(X, y)`` for ``model``'s kind, or None and why it cannot be rebuilt."""
    from ._scores import _is_torch_model

    if _is_torch_model(model):
        return _torch_fitter(model, random_state)
    if hasattr(model, "get_params") and hasattr(model, "fit"):
        return _sklearn_fitter(model, random_state), None
    return None, f"{type(model).__name__} cannot be refitted (no get_params/fit)"


def _sklearn_fitter(model: Any, random_state: int) -> Fitter:
    from sklearn.base import clone

    counter = iter(range(1 << 30))

    def fit(X: pd.DataFrame, y: pd.Series) -> Any:
        fresh = clone(model)
        seed = random_state + next(counter)
        steps = fresh.steps if hasattr(fresh, "steps") else [(None, fresh)]
        for _, step in steps:
            params = step.get_params(deep=False)
            if type(step).__module__.startswith("diffprivlib") and "accountant" in params:
                from diffprivlib.accountant import BudgetAccountant

                step.set_params(accountant=BudgetAccountant())  # never the global default
            if "random_state" in params:
                step.set_params(random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reference fit's warnings concern no release
            fresh.fit(X, np.asarray(y.tolist()))
        return fresh

    return fit


def _torch_fitter(model: Any, random_state: int) -> tuple[Fitter | None, str | None]:
    import torch

    for sub in model.module.modules():
        own = list(sub.parameters(recurse=False))
        if own and not hasattr(sub, "reset_parameters"):
            return None, (
                f"the network's {type(sub).__name__} layer cannot be re-initialized, so its "
                "architecture cannot be rebuilt for reference models"
            )
    counter = iter(range(1 << 30))

    def fit(X: pd.DataFrame, y: pd.Series) -> Any:
        torch.manual_seed(random_state + next(counter))
        fresh = copy.deepcopy(model)
        module = fresh.module.cpu()
        for sub in module.modules():
            if list(sub.parameters(recurse=False)):
                sub.reset_parameters()
        inputs = np.nan_to_num(fresh.scaler.transform(X[fresh.features]), nan=0.0)
        xs = torch.as_tensor(inputs, dtype=torch.float32)
        if fresh.task == "classification":
            lookup = {c: i for i, c in enumerate(fresh.classes)}
            ys = torch.as_tensor([lookup[v] for v in y.tolist()], dtype=torch.int64)
            loss_fn: Any = torch.nn.CrossEntropyLoss()
        else:
            lo, hi = fresh.target_bounds or (0.0, 1.0)
            scaled = (np.asarray(y, dtype=float) - lo) / ((hi - lo) or 1.0)
            ys = torch.as_tensor(scaled, dtype=torch.float32).reshape(-1, 1)
            loss_fn = torch.nn.MSELoss()
        optimizer = torch.optim.Adam(module.parameters(), lr=TORCH_LR)
        module.train()
        for _ in range(TORCH_EPOCHS):
            for batch in torch.split(torch.randperm(len(xs)), 64):
                optimizer.zero_grad()
                loss_fn(module(xs[batch]), ys[batch]).backward()
                optimizer.step()
        module.eval()
        return fresh

    return fit, None
