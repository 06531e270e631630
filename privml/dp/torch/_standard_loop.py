"""``session.dp.train``: a standard DP-SGD loop over :func:`private_training`, with a history."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from ..._optional import require
from .._training_spec import TrainingSpec, loss_reduction
from ._engine import FIRST_LAYER_HOOK
from ._model import TorchModel
from ._private_training import private_training

if TYPE_CHECKING:
    from ..._gate import Gate

__all__ = ["TrainResult", "train"]


class TrainResult(NamedTuple):
    """What :meth:`privml.dp.DPSession.train` returns: ``model, history = dp.train(...)``.

    Attributes
    ----------
    model : TorchModel
        The registered model (also in ``vault.models``).
    history : pandas.DataFrame
        One row per epoch: ``epoch``, ``steps``, ``loss`` (mean training loss
        over the epoch's samples) and ``epsilon`` (the ledger's ε for the run
        so far). ``attrs`` holds the run's facts (σ, q, Opacus's ε, ...).
    """

    model: TorchModel
    history: pd.DataFrame


def _tqdm() -> Any:
    return require("tqdm.auto", feature="progress=True").tqdm


def train(gate: Gate, dataset: str, spec: TrainingSpec, *, progress: bool = False) -> TrainResult:
    """Run the usual loop inside :func:`private_training`; see :meth:`privml.dp.DPSession.train`."""
    bar_class = _tqdm() if progress else None  # before anything is reserved
    reduction = loss_reduction(spec.criterion) if spec.criterion is not None else "mean"
    rows: list[dict[str, Any]] = []
    with private_training(gate, dataset, spec) as run:
        device = next(run.model.parameters()).device
        bar = bar_class(total=run.steps_planned, unit="step") if bar_class else None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=FIRST_LAYER_HOOK, category=UserWarning)
                for epoch in range(1, run.epochs + 1):
                    total, count = 0.0, 0
                    for X, y in run.data_loader:  # batches, or their chunks
                        X, y = X.to(device), y.to(device)
                        before = run.steps_taken
                        run.optimizer.zero_grad()
                        loss = run.criterion(run.model(X), y)
                        loss.backward()
                        run.optimizer.step()  # releases after a batch's last chunk only
                        if len(y):
                            value = float(loss.item())
                            total += value * len(y) if reduction == "mean" else value
                            count += len(y)
                        if bar is not None:
                            bar.update(run.steps_taken - before)
                    epsilon = run.epsilon_at(run.steps_taken)
                    mean = total / count if count else math.nan
                    rows.append(
                        {"epoch": epoch, "steps": run.steps_taken, "loss": mean, "epsilon": epsilon}
                    )
                    if bar is not None:
                        bar.set_postfix(epoch=epoch, loss=f"{mean:.4g}", epsilon=f"{epsilon:.3g}")
        finally:
            if bar is not None:
                bar.close()
    assert run.trained is not None
    history = pd.DataFrame(rows, columns=["epoch", "steps", "loss", "epsilon"])
    history.attrs.update(
        noise_multiplier=run.noise_multiplier,
        sample_rate=run.sample_rate,
        delta=run.delta,
        binding=run.binding,
        epsilon=run.epsilon,
        opacus_epsilon=run.opacus_epsilon,
        model=run.name,
        model_version=run.model_info.version if run.model_info else None,
        request_id=run.request_id,
        canary_measurement=run.canary_measurement,
    )
    return TrainResult(run.trained, history)
