"""The end of a ``private_training`` block: unwrap, record, settle on what was drawn, register."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..._gate import TRAINING_ROWS
from ...accounting.composition import epsilon_alone
from ...accounting.events import PrivacyEvent
from ...attacks._holdout import MEMBERSHIP
from ...exceptions import ConfigurationError
from ._data import Encoding
from ._engine import Engine
from ._fence import Fence
from ._model import TorchModel
from ._rows import drop
from ._training_run import TrainingRun

if TYPE_CHECKING:
    from ..._gate import Gate
    from ...accounting.ledger import Reservation

__all__ = ["Exit", "finish", "register"]


@dataclass(frozen=True)
class Exit:
    """What the end of a block takes apart, settles and records."""

    engine: Engine
    fence: Fence
    token: str
    reservation: Reservation
    accountant: Any
    event_for: Callable[[float, int, float | None], PrivacyEvent]
    record: Callable[[dict[str, Any]], None]
    #: Run last on every exit (e.g. a checkpointed run's hold is let go).
    end: Callable[[], None] | None = None


def finish(run: TrainingRun, end: Exit) -> None:
    """Take the wrappers off, record what was handed out, and settle on the steps it cost.

    The charge covers every batch drawn, stepped or not: a drawn batch reached
    the caller's code, so the conservative figure charges its sampling step
    as if it had been released (the guard lets at most one batch be drawn
    without a step, the last one). No batch drawn: the reservation is released.

    If the vault was closed inside the block, the training wrappers still come
    off and the rows are dropped, but nothing can be recorded, settled or
    released (the ledger and the audit log are closed with the vault):
    :class:`~privml.exceptions.VaultClosedError` is raised and the reservation
    stays ``reserved``, so its whole planned cost keeps counting against the
    budget (conservative). The guard refused every draw and step after the
    close, so nothing left the data that the reservation does not cover.
    """
    try:
        _finish(run, end)
    finally:
        if end.end is not None:
            end.end()


def _finish(run: TrainingRun, end: Exit) -> None:
    guard = run._guard
    assert guard is not None
    try:
        end.fence.remove()
        run.model = end.engine.close()
        with contextlib.suppress(ConfigurationError):
            guard.check_params()  # a change after the last step: noted in guard.tampered
        guard.check_state()  # the whole state besides the parameters, wrappers off
    finally:
        guard.close()
        drop(end.token)
        guard.alive()  # a closed vault: the reservation stays reserved (see above)
        taken, drawn = guard.taken, guard.drawn
        charged = max(taken, drawn)
        try:
            end.record(
                {
                    "batches_drawn": drawn,
                    "rows_drawn": guard.rows,
                    "steps_taken": taken,
                    "steps_charged": charged,
                    "parameters_changed_outside": guard.tampered is not None,
                    "module_state_changed": guard.state_changed,
                }
            )
        finally:
            _settle(run, end, taken, charged)


def _settle(run: TrainingRun, end: Exit, taken: int, charged: int) -> None:
    if charged == 0:
        run.charge = end.reservation.release()
        run.epsilon = 0.0
        return
    run.opacus_epsilon, run.opacus_notes = _opacus_epsilon(end.accountant, run.delta)
    reported = run.opacus_epsilon if charged == taken else None
    if reported is not None and not (0 < reported < math.inf):
        reported = None
    actual = end.event_for(run.noise_multiplier, charged, reported)
    run.charge = end.reservation.settle(actual)
    run.epsilon = epsilon_alone(actual, run.delta)


def _opacus_epsilon(accountant: Any, delta: float) -> tuple[float | None, list[str]]:
    """Opacus's RDP accountant's ε, and what it warned about (kept, not raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            epsilon = float(accountant.get_epsilon(delta=delta))
        except Exception as err:  # its figure is informative only; the ledger's is charged
            return None, [f"{type(err).__name__}: {err}"]
    return epsilon, [str(w.message) for w in caught]


def register(
    gate: Gate,
    run: TrainingRun,
    engine: Engine,
    data: Encoding,
    features: list[str],
    target: str,
    optimizer: torch.optim.Optimizer,
    *,
    rows: str | None = None,
    membership: dict[str, Any] | None = None,
) -> None:
    """Register the trained network, its input view and its hyperparameters in vault.models."""
    trained = TorchModel(
        module=engine.plain,
        scaler=data.scaler,
        features=features,
        target=target,
        task=data.task,
        classes=data.classes,
        target_bounds=data.target_bounds,
    )
    settings = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in optimizer.defaults.items()
        if isinstance(v, int | float | str | bool | tuple) and v is not None
    }
    unit = gate.privacy_unit(run.dataset)
    extra = {
        "features": features,
        "target": target,
        "task": data.task,
        "classes": data.classes,
        "target_bounds": data.target_bounds,
        "training": {
            "grad_sample_mode": run.grad_sample_mode,
            "noise_multiplier": run.noise_multiplier,
            "sample_rate": run.sample_rate,
            "batch_size": run.batch_size,
            "max_grad_norm": run.max_grad_norm,
            "epochs": run.epochs,
            "steps": run.steps_taken,
            "steps_planned": run.steps_planned,
            "optimizer": type(optimizer).__name__,
            "optimizer_settings": settings,
            "binding": run.binding,
            "request_id": run.request_id,
        },
        "opacus_epsilon": run.opacus_epsilon,
        "opacus_accountant": "rdp, q = 1/len(data_loader)",
        TRAINING_ROWS: rows,  # the row filters it was read under (see privml.vault._model_access)
        # one row per person on a person-level unit: N and q = B/N count people
        "privacy_unit": {"unit": unit.name, "rows_per_unit_used": 1},
    }
    if membership is not None:  # which version rows it trained on and which it never saw
        extra[MEMBERSHIP] = membership
    if run.canary_measurement is not None:
        extra["canary_measurement"] = run.canary_measurement  # counts and bounds only
    run.model_info = gate.register_model(
        run.name,
        trained,
        trained_on=(run.dataset, run.version),
        epsilon=run.epsilon,
        delta=run.delta,
        notes=f"DP-SGD ({run.grad_sample_mode}), {run.steps_taken} steps",
        extra=extra,
    )
    run.trained = trained
