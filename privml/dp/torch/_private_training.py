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

With ``canaries=m``, the included synthetic canaries join the sealed table and
are Poisson-sampled with the same q = batch_size / N (N: the real rows), so
the same event bounds every real record and every canary; the plan, the
reservation and the registered provenance are those of the real rows (see
:mod:`privml.attacks._canaries` for the argument and the scoring). The run
also draws m white-box (Dirac) canaries, gradients ``C·e_i`` that the
optimizer adds to the clipped sum at the same q (:mod:`privml.attacks._dirac`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import torch
from opacus.accountants import RDPAccountant
from torch import nn

from ...accounting.composition import epsilon_alone
from ...attacks._canaries import Canaries
from ...attacks._dirac import DiracCanaries, check_dirac_count, coordinates, trainable
from ...attacks._holdout import Membership, held_out_count, version_rows
from ...exceptions import ConfigurationError, IntegrityError
from .. import _random
from .._training_spec import TrainingSpec
from ._checkpoint import (
    Checkpointer,
    DurableGuard,
    check_checkpointable,
    open_resume,
    plan_record,
    spec_record,
    unpack,
)
from ._data import Encoding, default_criterion, prepare, scaler_for, task_of
from ._distributed import Ranks, Release, Sampler, check_plan, check_same, digest, fingerprint
from ._engine import build, prepare_module
from ._fence import Fence
from ._frozen import Frozen
from ._loader import PoissonLoader
from ._plan import Plan
from ._rows import drop, row_shape, seal
from ._settle import Exit, finish, register
from ._training_run import TrainingRun
from ._views import Views

if TYPE_CHECKING:
    from ..._gate import Authorization, Gate, Loaded
    from ...accounting.ledger import Reservation
    from ...schema import Schema
    from ...vault._checkpoints import CheckpointRecord, RunHold, TrainingCheckpoints
    from ..scaling import SchemaScaler

__all__ = ["TrainingRun", "private_training"]


@contextmanager
def private_training(gate: Gate, dataset: str, spec: TrainingSpec) -> Iterator[TrainingRun]:
    """Reserve a DP-SGD run, hand out its parts, settle and register it on exit.

    See :meth:`privml.dp.DPSession.private_training`; ``spec`` checked itself when made.
    A refusal before the block runs (a bad column, the policy, a batch larger than the
    rows, no σ that fits) is audited once, as every refused request is.
    """
    with gate.request("dp.train", dataset):
        begin = _begin_distributed if spec.distributed else _begin
        begin = _resume if spec.resume is not None else begin
        run, ending, setup, encoding, auth, membership = begin(gate, dataset, spec)
    completed = False
    ddp = run.optimizer.privml_ddp
    try:
        yield run
        completed = True
    finally:
        measured = _take_canaries(run)  # off the run on every exit
        if ddp is not None:
            _conclude(ddp, run, completed)
        try:
            finish(run, ending)
        finally:
            if ddp is not None:
                _share_charge(ddp, run, completed)
    if ddp is not None and ddp.ranks.rank != 0:  # rank 0 alone registers the run's model
        _follower_end(run, completed)
        return
    if completed and run.steps_taken > 0:
        assert run._guard is not None
        if run._guard.tampered is not None:
            raise ConfigurationError(
                f"{run._guard.tampered}. The model was not registered "
                "(the steps released were charged)."
            )
        _measure(run, *measured)
        register(
            gate,
            run,
            ending.engine,
            encoding,
            setup.features,
            spec.target,
            setup.optimizer,
            rows=auth.rows_digest,  # the row filters it was read under
            membership=membership,
        )


def _take_canaries(run: TrainingRun) -> tuple[Canaries | None, DiracCanaries | None]:
    """The run's canaries, taken off the run and its optimizer (only the caller holds them)."""
    canaries, dirac, run._canaries, run._dirac = run._canaries, run._dirac, None, None
    if getattr(run.optimizer, "privml_dirac", None) is not None:
        run.optimizer.privml_dirac = None
    return canaries, dirac


def _measure(run: TrainingRun, canaries: Canaries | None, dirac: DiracCanaries | None) -> None:
    """Score both kinds of canary (post-processing of what was released); then drop them."""
    if canaries is not None and dirac is not None and run.epsilon is not None:
        claim = {"epsilon": run.epsilon, "delta": run.delta}
        run.canary_measurement = {
            "black_box": canaries.tally(run.model, **claim).as_dict(),
            "white_box": dirac.tally(**claim).as_dict(),
        }


def _begin(
    gate: Gate, dataset: str, spec: TrainingSpec
) -> tuple[TrainingRun, Exit, _Setup, Encoding, Authorization, dict[str, Any] | None]:
    """Check, authorize, reserve and wire the run; on any failure nothing stays reserved."""
    name = spec.model_name(dataset)
    gate.check_may_register(name)
    setup = _Setup.check(gate.schema(dataset), spec)  # 1. schema, module, loss: no data
    version = gate.latest_version(dataset)
    auth = _authorize(gate, dataset, spec, version)  # 2. the policy: still no data
    plan = Plan(gate, dataset, spec, gate.budget(dataset).delta)
    # 3. The door reads N, fixes the plan from it (σ given, or calibrated), reserves it,
    #    and only then hands out the values.
    reserved = gate.reserve(
        auth,
        # N (and so q) counts the training rows only: the held-out ones are never trained on
        plan=lambda n: plan(n - held_out_count(n, spec.holdout)),
        action="dp.train",
        version=version,
        context={
            "grad_sample_mode": spec.grad_sample_mode,
            "epochs": spec.epochs,
            "target_epsilon": spec.target_epsilon,
            "model": name,
            **({"canaries": spec.canaries} if spec.canaries else {}),
            **({"holdout": spec.holdout} if spec.holdout else {}),
            **({"augmentations": spec.augmentations} if spec.augmentations > 1 else {}),
            **({"transform": True} if spec.transform is not None else {}),
            **(
                {"max_physical_batch_size": spec.max_physical_batch_size}
                if spec.max_physical_batch_size
                else {}
            ),
        },
    )
    reservation, request_id = reserved.reservation, reserved.request_id
    try:
        frame, membership = _hold_out(reserved.values, spec.holdout)
        X, y, encoding = prepare(setup.schema, frame, setup.features, spec.target, setup.scaler)
        del frame
    except BaseException:
        reservation.release()
        raise
    del reserved  # the decrypted frame: from here the rows live only in the sealed table
    # 4. From here every exit settles or releases the reservation.
    canaries = dirac = None
    try:
        if spec.canaries:  # synthetic rows after the real ones, sampled at the same q
            dirac = DiracCanaries(  # C·e_i added to the clipped sums, sampled at the same q
                [p.numel() for p in trainable(setup.optimizer)],
                spec.canaries,
                rate=spec.batch_size / plan.n,
                clip=float(spec.max_grad_norm),
                rng=_random.fresh_generator(),
            )
            canaries = Canaries.draw(
                setup.schema,
                setup.features,
                spec.target,
                setup.scaler,
                spec.canaries,
                rng=_random.fresh_generator(),  # keyed from the OS, as the Poisson coins
            )
            X_in, y_in = canaries.joined()
            X, y = torch.cat([X, X_in]), torch.cat([y, y_in])
    except BaseException:
        reservation.release()
        raise
    token = seal(X, y)
    rows = len(y)
    del X, y
    try:
        run, ending = _start(
            gate, setup, plan, token, reservation, version, request_id, name, rows=rows
        )
        run._canaries, run._dirac = canaries, dirac
        run.optimizer.privml_dirac = dirac
    except BaseException:
        drop(token)
        reservation.release()
        raise
    return run, ending, setup, encoding, auth, membership


def _resume(
    gate: Gate, dataset: str, spec: TrainingSpec
) -> tuple[TrainingRun, Exit, _Setup, Encoding, Authorization, dict[str, Any] | None]:
    """Continue a checkpointed run: its reservation, counts, plan and state (``_checkpoint``)."""
    assert spec.resume is not None
    name = spec.model_name(dataset)
    gate.check_may_register(name)
    # 1. The checkpoint's rows against this call, and this process's hold: no payload, no data.
    record, hold, store = open_resume(gate, dataset, spec, spec.resume)
    try:
        setup = _Setup.check(gate.schema(dataset), spec)
        auth = _authorize(gate, dataset, spec, record.version)  # the policy, still no data
        plan = _stored_plan(gate, dataset, spec, record)
        # 2. The model's and optimizer's state, before the module's other state is frozen.
        state = unpack(store.payload(record))
        setup.module.load_state_dict(state["module"])
        setup.optimizer.load_state_dict(state["optimizer"])
        setup = replace(setup, frozen=Frozen(setup.module))
        # 3. The same rows, under the same reservation: nothing new is reserved.
        reserved = gate.resume(
            auth,
            request_id=record.request_id,
            action="dp.train.resume",
            version=record.version,
            context={
                "checkpoint": record.id,
                "steps_taken": record.steps_taken,
                "batches_counted": max(record.drawn_mark, record.batches_drawn),
            },
        )
        reservation = reserved.reservation
        if reservation.planned.params != plan.planned.params:
            raise IntegrityError(
                f"checkpoint {record.id!r} records a plan its reservation does not: the "
                "vault's metadata was edited without the key"
            )
        if len(reserved.values.frame) != plan.n:
            raise ConfigurationError(
                f"this session now sees {len(reserved.values.frame)} rows of {dataset!r} where "
                f"the run was planned on {plan.n} (the row filters of its grants changed): "
                "the run cannot be continued on other rows"
            )
        X, y, encoding = prepare(
            setup.schema, reserved.values.frame, setup.features, spec.target, setup.scaler
        )
        del reserved
        token = seal(X, y)
        rows = len(y)
        del X, y
        try:
            run, ending = _start(
                gate, setup, plan, token, reservation, record.version, record.request_id,
                name, rows=rows, resumed=(record, hold, store),
            )  # fmt: skip
        except BaseException:
            drop(token)
            raise
    except BaseException:
        hold.release()  # the reservation stays as it was: reserved, its run resumable
        raise
    return run, ending, setup, encoding, auth, None


def _stored_plan(gate: Gate, dataset: str, spec: TrainingSpec, record: CheckpointRecord) -> Plan:
    """The run's plan as reserved (never re-calibrated: the reservation itself now counts)."""
    stored = record.plan
    plan = Plan(gate, dataset, spec, gate.budget(dataset).delta)
    plan.n, plan.steps_per_epoch = int(stored["n"]), int(stored["steps_per_epoch"])
    plan.steps_planned = int(stored["steps_planned"])
    plan.noise_multiplier = float(stored["noise_multiplier"])
    plan.binding, plan.note = stored["binding"], stored["note"]
    return plan


def _hold_out(values: Loaded, fraction: float) -> tuple[Any, dict[str, Any] | None]:
    """The training rows of ``values`` and the membership record (None without holdout)."""
    if not fraction:
        return values.frame, None
    rows = version_rows(len(values.frame), values.positions)
    drawn = Membership.draw(rows=rows, positions=values.positions, fraction=fraction)
    kept = drawn.training_rows(values.positions)
    return values.frame.loc[kept].reset_index(drop=True), drawn.to_record()


@dataclass(frozen=True)
class _Setup:
    """What a run needs besides its rows, all checked before the policy is asked."""

    spec: TrainingSpec
    schema: Schema
    scaler: SchemaScaler
    features: list[str]
    criterion: Any
    module: nn.Module  # the one trained: the caller's, or with fix_module a fixed copy
    optimizer: torch.optim.Optimizer  # over ``module``
    frozen: Frozen  # the module's state besides its parameters, taken before any data

    @classmethod
    def check(cls, schema: Schema, spec: TrainingSpec) -> _Setup:
        """The columns against the schema, the loss, the module and optimizer; reads no data."""
        scaler = scaler_for(schema, spec.features)
        task, _ = task_of(schema, spec.target)
        criterion = spec.criterion if spec.criterion is not None else default_criterion(task)
        module, optimizer = prepare_module(
            spec.module, spec.optimizer, mode=spec.grad_sample_mode, fix_module=spec.fix_module
        )
        if spec.canaries:  # each white-box canary needs a coordinate of its own
            check_dirac_count(spec.canaries, coordinates(trainable(optimizer)))
        frozen = Frozen(module)
        return cls(spec, schema, scaler, list(spec.features), criterion, module, optimizer, frozen)


def _authorize(gate: Gate, dataset: str, spec: TrainingSpec, version: int) -> Authorization:
    """The policy's decision: ``dp_training`` (or more revealing) on every column used."""
    return gate.authorize(
        dataset,
        columns=[*spec.features, spec.target],
        needed="dp_training",
        action="dp.train",
        version=version,
    )


def _views(spec: TrainingSpec, token: str) -> Views | None:
    """The run's per-row transform and multiplicity (probed on a row of zeros), or None."""
    if spec.transform is None and spec.augmentations == 1:
        return None
    shape, dtype = row_shape(token)
    return Views(spec.transform, spec.augmentations, row_shape=shape, dtype=dtype)


def _start(
    gate: Gate,
    setup: _Setup,
    plan: Plan,
    token: str,
    reservation: Reservation,
    version: int,
    request_id: str,
    name: str,
    *,
    rows: int,
    resumed: tuple[CheckpointRecord, RunHold, TrainingCheckpoints] | None = None,
) -> tuple[TrainingRun, Exit]:
    """Wire the reserved run: its guard, the private engine, the fence, the loader."""
    spec, dataset, planned = setup.spec, plan.dataset, plan.steps_planned
    event = plan.planned
    views = _views(spec, token)  # probes the transform first: nothing is wired yet

    def audit(action: str, outcome: str, details: dict[str, Any]) -> None:
        gate.record(action, outcome, dataset, version, {"request_id": request_id, **details})

    guard = DurableGuard(
        limit=planned,
        dataset=dataset,
        request_id=request_id,
        plan=event,
        delta=plan.delta,
        alive=gate.check_open,
        on_refuse=lambda step: audit(
            "dp.train.step", "refused", {"step": step, "steps_reserved": planned}
        ),
    )
    engine = build(
        spec.grad_sample_mode,
        setup.module,
        setup.optimizer,
        setup.criterion,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=spec.max_grad_norm,
        batch_size=spec.batch_size,
        guard=guard,
        views=spec.augmentations,
        # the rows the forward takes, probed on zeros before the loader exists
        sample=(views.shape, views.dtype) if views is not None else row_shape(token),
    )
    fence = Fence.attach(
        guard,
        engine.plain,
        inner=setup.optimizer,
        fenced=[*engine.plain.parameters(), *spec.module.parameters()],
        original=spec.optimizer,
    )
    guard.watch(engine.plain.parameters(), setup.frozen)
    plain = engine.plain
    loader = PoissonLoader(
        token=token,
        n=rows,  # the real rows (plan.n), then any included canaries; q is the real rows'
        sample_rate=spec.batch_size / plan.n,
        steps=plan.steps_per_epoch,
        guard=guard,
        device_of=lambda: next(plain.parameters()).device,
        views=views,
        physical=spec.max_physical_batch_size,
    )
    accountant = RDPAccountant()  # Opacus's own figure, for cross-checking only
    checkpointer = Checkpointer(
        gate,
        dataset,
        version,
        request_id,
        spec_record(dataset, spec),
        plan_record(plan, spec.grad_sample_mode),
        guard,
        plain,
        setup.optimizer,
        checkpointable=_why_not_checkpointable(spec),
    )
    if resumed is not None:  # the same reservation: its guard goes on from the run's counts
        record, hold, store = resumed
        guard.taken, guard.rows = record.steps_taken, record.rows_drawn
        guard.drawn = max(record.drawn_mark, record.batches_drawn)
        checkpointer.resumed(store, hold, guard.drawn)
        if record.steps_taken:  # Opacus's figure then covers every step of the run too
            accountant.history.append(
                (plan.noise_multiplier, 1 / plan.steps_per_epoch, record.steps_taken)
            )
    engine.optimizer.attach_step_hook(
        accountant.get_optimizer_hook_fn(sample_rate=1 / plan.steps_per_epoch)
    )
    run = TrainingRun(
        model=engine.model,
        optimizer=engine.optimizer,
        data_loader=loader,
        criterion=engine.criterion,
        epochs=spec.epochs,
        epsilon_planned=epsilon_alone(event, plan.delta),
        noise_multiplier=plan.noise_multiplier,
        sample_rate=spec.batch_size / plan.n,
        batch_size=spec.batch_size,
        n=plan.n,
        max_grad_norm=float(spec.max_grad_norm),
        delta=plan.delta,
        steps_per_epoch=plan.steps_per_epoch,
        steps_planned=planned,
        grad_sample_mode=spec.grad_sample_mode,
        dataset=dataset,
        version=version,
        request_id=request_id,
        name=name,
        binding=plan.binding,
        calibration=plan.note,
        _guard=guard,
        _planned=event,
        _checkpointer=checkpointer,
        _loaded=lambda outcome, details: audit("dp.train.load", outcome, details),
    )
    ending = Exit(
        engine=engine,
        fence=fence,
        token=token,
        reservation=reservation,
        accountant=accountant,
        event_for=plan.event,
        record=lambda details: audit(
            "dp.train.batches", "handed_out" if details["batches_drawn"] else "none", details
        ),
        end=checkpointer.end,
    )
    return run, ending


def _why_not_checkpointable(spec: TrainingSpec) -> str | None:
    """Why ``run.checkpoint()`` refuses this run (None: it may checkpoint)."""
    try:
        check_checkpointable(spec)
    except ConfigurationError as err:
        return str(err)
    return None


# -- data-parallel runs (distributed=True; see ._distributed) -----------------------------


class _Joined:
    """A follower rank's side of rank 0's reservation: settling and releasing are rank 0's."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def settle(self, event: Any, /) -> None:
        """Rank 0 settles; its charge reaches this rank afterwards."""

    def release(self) -> None:
        """Rank 0 releases."""


def _begin_distributed(
    gate: Gate, dataset: str, spec: TrainingSpec
) -> tuple[TrainingRun, Exit, _Setup, Encoding, Authorization, dict[str, Any] | None]:
    """As :func:`_begin` for one rank of a data-parallel run (a collective call)."""
    ranks = Ranks.join_group(spec)
    try:
        return _begin_rank(gate, dataset, spec, ranks)
    except BaseException:
        ranks.close()
        raise


def _begin_rank(
    gate: Gate, dataset: str, spec: TrainingSpec, ranks: Ranks
) -> tuple[TrainingRun, Exit, _Setup, Encoding, Authorization, dict[str, Any] | None]:
    """Check and authorize on every rank, reserve on rank 0, join elsewhere, keep one block."""
    name, first = spec.model_name(dataset), ranks.rank == 0
    error: Exception | None = None
    try:  # 1. every rank: its own checks, reading no data; settings and weights compared
        if first:
            gate.check_may_register(name)
        setup = _Setup.check(gate.schema(dataset), spec)
        mine = (gate.latest_version(dataset), fingerprint(spec, setup.optimizer))
    except Exception as err:
        error, mine = err, (0, {})
    version, leading = ranks.agree(error, mine)[0]
    try:  # 2. every rank: the policy, on its own session (rank 0's version)
        check_same(mine[1], leading)
        auth = _authorize(gate, dataset, spec, version)
    except Exception as err:
        error = err
    ranks.agree(error)
    delta = gate.budget(dataset).delta
    plan = Plan(gate, dataset, spec, delta)
    if first:  # 3. rank 0 reserves for the whole run; the others join its reservation
        values, reservation, request_id = _reserve_for_all(gate, auth, plan, version, ranks)
    else:
        values, request_id = _join(gate, auth, plan, version, ranks)
        reservation = cast("Reservation", _Joined(request_id))
    try:
        X, y, encoding = prepare(
            setup.schema, values.frame, setup.features, spec.target, setup.scaler
        )
        del values
        start, stop = ranks.block(plan.n)  # this rank keeps its own block of rows only
        token = seal(X[start:stop].clone(), y[start:stop].clone())
        del X, y
    except BaseException:
        reservation.release()
        raise
    try:
        run, ending = _start(
            gate, setup, plan, token, reservation, version, request_id, name, rows=stop - start
        )
        run.data_loader.sampler = Sampler(ranks, plan.n, spec.batch_size / plan.n)
        run.optimizer.privml_ddp = Release(ranks)
        record, where = ending.record, {"rank": ranks.rank, "ranks": ranks.world}
        ending = replace(ending, record=lambda details: record({**details, **where}))
    except BaseException:
        drop(token)
        reservation.release()
        raise
    return run, ending, setup, encoding, auth, None


def _reserve_for_all(
    gate: Gate, auth: Authorization, plan: Plan, version: int, ranks: Ranks
) -> tuple[Loaded, Reservation, str]:
    """Rank 0: reserve the run, send its plan, and wait for every rank to have joined."""
    try:
        reserved = gate.reserve(
            auth,
            plan=plan,
            action="dp.train",
            version=version,
            context={
                "grad_sample_mode": plan.spec.grad_sample_mode,
                "epochs": plan.spec.epochs,
                "target_epsilon": plan.spec.target_epsilon,
                "model": plan.spec.model_name(plan.dataset),
                "ranks": ranks.world,
            },
        )
    except BaseException as err:
        ranks.share({"error": f"{type(err).__name__}: {err}"})
        raise
    try:
        ranks.share(
            {
                "request_id": reserved.request_id,
                "version": version,
                "content_hash": reserved.values.content_hash,
                "n": plan.n,
                "delta": plan.delta,
                "steps_per_epoch": plan.steps_per_epoch,
                "steps_planned": plan.steps_planned,
                "noise_multiplier": plan.noise_multiplier,
                "binding": plan.binding,
                "note": plan.note,
            }
        )
        ranks.agree(None)  # every rank joined and agreed with the plan
    except BaseException:
        reserved.reservation.release()
        raise
    return reserved.values, reserved.reservation, reserved.request_id


def _join(
    gate: Gate, auth: Authorization, plan: Plan, version: int, ranks: Ranks
) -> tuple[Loaded, str]:
    """A rank other than 0: rank 0's plan, checked; the reserved rows, read on this session."""
    shared = ranks.share(None)
    if "error" in shared:
        raise ConfigurationError(
            f"rank 0 could not reserve the run ({shared['error']}); nothing was read on this rank"
        )
    error: Exception | None = None
    values: Loaded | None = None
    try:
        values = gate.join(
            auth, request_id=shared["request_id"], action="dp.train.join", version=version
        )
        check_plan(shared, plan.spec, plan.delta, len(values.frame))
        if values.content_hash != shared["content_hash"]:
            raise ConfigurationError(
                "this rank read other stored bytes than rank 0 for the same version; "
                "every rank must open the same vault"
            )
    except Exception as err:
        error = err
    ranks.agree(error)
    assert values is not None
    plan.n, plan.steps_per_epoch = shared["n"], shared["steps_per_epoch"]
    plan.steps_planned, plan.noise_multiplier = shared["steps_planned"], shared["noise_multiplier"]
    plan.binding, plan.note = shared["binding"], shared["note"]
    return values, str(shared["request_id"])


def _conclude(ddp: Release, run: TrainingRun, completed: bool) -> None:
    """A completed block: every rank's counts and weights must match rank 0's (else noted).

    A block left with an error takes the run's group down instead, so the others fail at
    their next collective rather than wait for it.
    """
    guard = run._guard
    assert guard is not None
    if not completed:
        ddp.ranks.close()
        return
    mine = (guard.taken, guard.drawn, digest(run.model.parameters()))
    try:
        seen = ddp.ranks.agree(None, mine)
    except Exception as err:  # a peer is gone: nothing can be confirmed
        ddp.ranks.close()
        seen = [None]
        problem = f"the ranks could not compare their weights at the end ({type(err).__name__})"
    else:
        problem = "the ranks' step counts or weights differ at the end of the run"
    if any(other != mine for other in seen) and guard.tampered is None:
        guard.tampered = problem


def _share_charge(ddp: Release, run: TrainingRun, completed: bool) -> None:
    """Rank 0's settled charge, sent to the other ranks of a completed block; group down."""
    ranks = ddp.ranks
    try:
        if completed and ranks.open:
            sent = ranks.share((run.charge, run.epsilon) if ranks.rank == 0 else None)
            if ranks.rank != 0:
                run.charge, run.epsilon = sent
    finally:
        ranks.close()


def _follower_end(run: TrainingRun, completed: bool) -> None:
    """A rank other than 0 registers nothing; a defect found at the end still raises."""
    assert run._guard is not None
    if completed and run.steps_taken > 0 and run._guard.tampered is not None:
        raise ConfigurationError(
            f"{run._guard.tampered}. Rank 0 registered no model (the steps released were charged)."
        )
