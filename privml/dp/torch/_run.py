"""``session.dp.private_training``: your loop; privml's sampling, clipping, noise and ledger.

Why a run is private (add/remove one record): batches are Poisson samples
(each row independently with probability q = batch_size / N, Opacus's
``DPDataLoader``); every optimizer step clips each sample's whole gradient to
``max_grad_norm`` and adds Gaussian noise of standard deviation
σ·``max_grad_norm`` to their sum (Opacus's optimizers; privml's book-keeping
for ``"bk"``), so each step is the Poisson-sampled Gaussian mechanism and the
run is ``steps`` of them, self-composed: exactly the ``dp_sgd`` event the
ledger reserves before the first batch and settles on the steps released. A
step past the reservation is refused before the update, so the settled event
always covers what left the data. The model, and anything computed from it
alone, is post-processing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from opacus.accountants import RDPAccountant
from torch import nn

from ..._validation import check_name
from ...accounting.composition import epsilon_alone
from ...accounting.events import PrivacyEvent
from ...exceptions import ConfigurationError
from ._calibrate import calibrate
from ._close import Exit, finish, register
from ._data import default_criterion, prepare, scaler_for, task_of
from ._deps import OPACUS_VERSION
from ._engine import build, loss_reduction, prepare_module
from ._fence import Fence
from ._frozen import Frozen
from ._guard import StepGuard
from ._loader import PoissonLoader
from ._rows import drop, seal
from ._training_run import TrainingRun

if TYPE_CHECKING:
    from ..._gate import Gate

__all__ = ["TrainingRun", "private_training"]


def _positive(name: str, value: Any, kind: type = float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        ok = ok and isinstance(value, int) and value >= 1
    elif ok:
        ok = math.isfinite(value) and value > 0
    if not ok:
        what = "an integer >= 1" if kind is int else "finite and > 0"
        raise ConfigurationError(f"{name} must be {what}, got {value!r}")


def _check(
    batch_size: Any,
    epochs: Any,
    max_grad_norm: Any,
    target_epsilon: Any,
    noise_multiplier: Any,
    name: str,
) -> None:
    _positive("batch_size", batch_size, int)
    _positive("epochs", epochs, int)
    _positive("max_grad_norm", max_grad_norm)
    if (target_epsilon is None) == (noise_multiplier is None):
        raise ConfigurationError(
            "give exactly one of target_epsilon= (privml chooses σ) or noise_multiplier= (σ)"
        )
    if target_epsilon is not None:
        _positive("target_epsilon", target_epsilon)
    else:
        _positive("noise_multiplier", noise_multiplier)
    check_name(name, "model name", file_safe=True)


@contextmanager
def private_training(
    gate: Gate,
    dataset: str,
    *,
    features: Sequence[str],
    target: str,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    epochs: int,
    max_grad_norm: float,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    criterion: Any = None,
    grad_sample_mode: str = "ghost",
    name: str | None = None,
    fix_module: bool = False,
) -> Iterator[TrainingRun]:
    """Reserve a DP-SGD run, hand out its parts, settle and register it on exit.

    See :meth:`privml.dp.DPSession.private_training` for the parameters.
    """
    name = name if name is not None else f"{dataset}-dpsgd"
    _check(batch_size, epochs, max_grad_norm, target_epsilon, noise_multiplier, name)
    gate.check_may_register(name)
    # 1. Everything that needs no data: arguments, schema, module, loss.
    schema = gate.schema(dataset)
    scaler = scaler_for(schema, features)
    features = list(features)
    task, _ = task_of(schema, target)
    criterion = criterion if criterion is not None else default_criterion(task)
    loss_reduction(criterion)
    given = (module, optimizer)
    module, optimizer = prepare_module(
        module, optimizer, mode=grad_sample_mode, fix_module=fix_module
    )
    frozen = Frozen(module)  # its state besides the parameters, before any data is near
    # 2. The policy: dp_training (or more revealing) on every column used.
    version = gate.latest_version(dataset)
    auth = gate.authorize(
        dataset,
        columns=[*features, target],
        needed="dp_training",
        action="dp.train",
        version=version,
    )
    rows = auth.rows_digest  # the rows read: recorded with the model
    delta = gate.budget(dataset).delta
    found: dict[str, Any] = {}

    def event_for(sigma: float, steps: int, reported: float | None = None) -> PrivacyEvent:
        return PrivacyEvent.dp_sgd(
            noise_multiplier=sigma,
            steps=steps,
            batch_size=batch_size,
            n=found["n"],
            max_grad_norm=max_grad_norm,
            library="opacus",
            library_version=OPACUS_VERSION,
            reported_epsilon=reported,
        )

    def plan(n: int) -> tuple[PrivacyEvent, dict[str, Any]]:
        # 3. The plan, from N (which fixes q = batch_size / N): σ given, or calibrated
        #    against the target and the budget. Nothing reaches the model or the caller
        #    until the door holds its reservation.
        if batch_size > n:
            raise ConfigurationError(f"batch_size={batch_size} exceeds the {n} rows available")
        found["n"] = n
        found["steps_per_epoch"] = steps = int(1 / (batch_size / n))  # as Opacus's DPDataLoader
        found["planned"] = planned = epochs * steps
        if target_epsilon is not None:
            cal = calibrate(
                gate,
                dataset,
                lambda sigma: event_for(sigma, planned),
                delta=delta,
                target_epsilon=target_epsilon,
            )
            found.update(sigma=cal.noise_multiplier, binding=cal.binding, note=cal.note)
        else:
            assert noise_multiplier is not None
            found.update(sigma=float(noise_multiplier), binding=None, note=None)
        chosen = {"steps_per_epoch": steps, "binding": found["binding"]}
        return event_for(found["sigma"], planned), chosen

    # 4. The door reads N, reserves the plan, and only then hands out the values.
    reserved = gate.reserve(
        auth,
        plan=plan,
        action="dp.train",
        version=version,
        context={
            "grad_sample_mode": grad_sample_mode,
            "epochs": epochs,
            "target_epsilon": target_epsilon,
            "model": name,
        },
    )
    reservation, request_id = reserved.reservation, reserved.request_id
    n, steps_per_epoch, planned = found["n"], found["steps_per_epoch"], found["planned"]
    sigma, binding, note = found["sigma"], found["binding"], found["note"]
    plan_event = event_for(sigma, planned)
    try:
        X, y, encoding = prepare(schema, reserved.values.frame, features, target, scaler)
    except BaseException:
        reservation.release()
        raise
    del reserved  # the decrypted frame: from here the rows live only in the sealed table
    # 5. From here every exit settles or releases the reservation.
    token = seal(X, y)
    del X, y
    try:
        guard = StepGuard(
            limit=planned,
            dataset=dataset,
            request_id=request_id,
            plan=plan_event,
            delta=delta,
            alive=gate.check_open,
            on_refuse=lambda step: gate.record(
                "dp.train.step",
                "refused",
                dataset,
                version,
                {"request_id": request_id, "step": step, "steps_reserved": planned},
            ),
        )
        engine = build(
            grad_sample_mode,
            module,
            optimizer,
            criterion,
            noise_multiplier=sigma,
            max_grad_norm=max_grad_norm,
            batch_size=batch_size,
            guard=guard,
        )
        fence = Fence.attach(
            guard,
            engine.plain,
            inner=optimizer,
            fenced=[*engine.plain.parameters(), *given[0].parameters()],
            original=given[1],
        )
        guard.watch(engine.plain.parameters(), frozen)
        plain = engine.plain
        loader = PoissonLoader(
            token=token,
            n=n,
            sample_rate=batch_size / n,
            steps=steps_per_epoch,
            guard=guard,
            device_of=lambda: next(plain.parameters()).device,
        )
        accountant = RDPAccountant()  # Opacus's own figure, for cross-checking only
        engine.optimizer.attach_step_hook(
            accountant.get_optimizer_hook_fn(sample_rate=1 / steps_per_epoch)
        )
        run = TrainingRun(
            model=engine.model,
            optimizer=engine.optimizer,
            data_loader=loader,
            criterion=engine.criterion,
            epochs=epochs,
            epsilon_planned=epsilon_alone(plan_event, delta),
            noise_multiplier=sigma,
            sample_rate=batch_size / n,
            batch_size=batch_size,
            n=n,
            max_grad_norm=float(max_grad_norm),
            delta=delta,
            steps_per_epoch=steps_per_epoch,
            steps_planned=planned,
            grad_sample_mode=grad_sample_mode,
            dataset=dataset,
            version=version,
            request_id=request_id,
            name=name,
            binding=binding,
            calibration=note,
            _guard=guard,
            _planned=plan_event,
        )
    except BaseException:
        drop(token)
        reservation.release()
        raise
    completed = False
    ending = Exit(
        engine=engine,
        fence=fence,
        token=token,
        reservation=reservation,
        accountant=accountant,
        event_for=event_for,
        record=lambda details: gate.record(
            "dp.train.batches",
            "handed_out" if details["batches_drawn"] else "none",
            dataset,
            version,
            {"request_id": request_id, **details},
        ),
    )
    try:
        yield run
        completed = True
    finally:
        finish(run, ending)
    if completed and run.steps_taken > 0:
        if guard.tampered is not None:
            raise ConfigurationError(
                f"{guard.tampered}. The model was not registered (the steps released were charged)."
            )
        register(gate, run, engine, encoding, features, target, optimizer, rows=rows)
