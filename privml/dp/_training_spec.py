"""The DP-SGD run a caller asks for: one frozen spec, checked before any data or budget is touched.

:class:`TrainingSpec` is the one declaration of the parameters of
``session.dp.private_training`` and ``session.dp.train``; :func:`takes_spec`
gives those methods its keyword arguments (for type checkers and ``help()``)
and turns a call's keywords into a spec. Importing this module imports
neither torch nor opacus, so ``import privml`` stays light.

The checks here need nothing but the values themselves (torch is imported
when a spec is made, to check the module and the optimizer are torch's). Those
that need the dataset's schema (the columns exist, the target is categorical
or bounded) or look inside the module (its layers, the optimizer's parameters)
run when the run starts, still before any data is read or any budget reserved.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from .._optional import require
from .._validation import check_name
from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "MODES",
    "OPTIMIZER_EXPECTED",
    "StandardLoopSpec",
    "TrainingSpec",
    "loss_reduction",
    "takes_spec",
]

#: The training modes: Opacus ghost clipping, Opacus per-sample gradients, privml's book-keeping.
MODES = ("ghost", "hooks", "bk")

#: What ``optimizer=`` takes, for every refusal of one.
OPTIMIZER_EXPECTED = (
    "optimizer= takes a plain torch.optim.Optimizer over the module's parameters, "
    "e.g. torch.optim.SGD(module.parameters(), lr=0.1); privml makes it private"
)

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class TrainingSpec:
    """What a DP-SGD run trains, on what, and at which privacy: checked when made.

    Every invalid value raises :class:`~privml.exceptions.ConfigurationError`
    here, before the run reads any data or reserves any budget.
    ``session.dp.private_training(dataset, **parameters)`` and
    ``session.dp.train(dataset, **parameters)`` take these parameters as keywords.

    Parameters
    ----------
    features : sequence of str
        Numeric features are scaled into [0, 1] by their declared bounds
        (clipped), categoricals one-hot encoded by their declared categories.
        They and ``target`` need ``dp_training`` (or a more revealing mode).
    target : str
        A categorical column (classification: int64 class indices in the
        schema's category order) or a numeric one with bounds (regression:
        float32 ``(N, 1)`` values scaled into [0, 1] by those bounds; the
        registered model's ``predict`` maps back).
    module : torch.nn.Module
        The network. Modules Opacus cannot train (BatchNorm, ...) are
        refused unless ``fix_module=True``.
    optimizer : torch.optim.Optimizer
        A plain optimizer over ``module``'s parameters.
    batch_size : int
        The expected batch size; q = batch_size / N.
    epochs : int
        Planned epochs (``len(data_loader)`` steps each).
    max_grad_norm : float
        The per-sample clip norm C.
    target_epsilon : float, optional
        Choose σ so the run's ε is at most this and the run fits the
        dataset's remaining budget (and any allocation); ``run.binding``
        says which bound bound.
    noise_multiplier : float, optional
        σ, given instead of ``target_epsilon``.
    criterion : torch loss, optional
        ``reduction`` 'mean' (default) or 'sum'. By default cross-entropy
        for a categorical target, mean squared error for a numeric one.
    grad_sample_mode : {"ghost", "hooks", "bk"}
        Opacus ghost clipping (default), Opacus per-sample gradients, or
        privml's one-backward book-keeping (Linear, Embedding, Conv1d/2d,
        LayerNorm, RMSNorm, GroupNorm, InstanceNorm and multi-head attention).
    name : str, optional
        The name to register the model under (default ``"<dataset>-dpsgd"``).
    fix_module : bool
        Let Opacus's ``ModuleValidator.fix`` replace unsupported layers, in
        a copy (``run.model`` then trains the copy, not ``module``).
    canaries : int
        Measure the run: this many synthetic input canaries (never real
        records) and as many gradient (Dirac) canaries, each trained on with
        probability 1/2 at the same q as the real rows, give two empirical ε
        lower bounds (black-box, final model; white-box, every noisy gradient)
        beside the charged ε (``run.canary_measurement``; see
        :mod:`privml.attacks._canaries` and :mod:`privml.attacks._dirac`).
        0 (default) is off; at most 10,000, at most one per real row and one
        per trainable parameter coordinate.
    holdout : float
        Keep ``floor(holdout · n)`` of the ``n`` rows read out of training
        (0 to 0.5, drawn from the operating system's randomness); N and q are
        the training rows', and the registered model records which version
        rows it trained on and which it never saw, for
        ``vault.models.privacy_report``. 0 (default): train on every row.
    transform : callable, optional
        ``transform(row) -> tensor``: applied by the loader to each sampled
        row's feature tensor (one row at a time, a copy; never the table or
        the rest of the batch) before the batch is handed out, e.g. to decode,
        normalise or augment. Its output shape must be the same for every
        row: it is probed once on a row of zeros when the run starts, and any
        other shape is refused before that batch can be stepped. Random
        augmentations may draw from torch's generator or their own: that
        randomness touches the features only, not the mechanism (clipping and
        noise), so it changes no privacy figure. It runs during training only:
        the registered model is the module, so preprocessing needed at
        prediction time belongs inside the module.
    augmentations : int
        K >= 1 (default 1): augmentation multiplicity (De et al. 2022). Each
        sampled row is handed out as K consecutive views (``transform`` applied
        K times), and its per-sample gradient is the *average* of its K views'
        gradients, clipped once to ``max_grad_norm``: one record still moves
        the clipped sum by at most C, so q, σ, the steps and the ledger's
        charge are those of K = 1. Modes ``"hooks"`` and ``"bk"`` only
        (ghost clipping computes one norm per view).
    max_physical_batch_size : int, optional
        P: process each Poisson (logical) batch in physical chunks of at most
        P sampled rows (each chunk holds at most P·K views), to bound memory.
        ``run.data_loader`` then yields the chunks; ``run.optimizer.step()``
        after a chunk that is not the batch's last clips and accumulates it
        only, and after the last one clips, adds noise once and updates. The
        step count and the ledger are per logical batch, at q = batch_size / N.
        None (default): one chunk per batch.
    resume : str, optional
        A checkpoint id from ``run.checkpoint()``: continue that run (its
        reservation, its counts, its model and optimizer state) instead of
        reserving a new one; every other parameter must be the ones it was
        made with (see :mod:`privml.dp.torch._checkpoint`).
    distributed : bool
        Data-parallel DP-SGD over every process of the initialised
        ``torch.distributed`` process group (gloo on CPU, NCCL on GPUs): each
        process opens the same vault with its own session and makes the same
        call. Rank 0 reserves the run and registers the model; the others
        join its reservation. Each rank trains on its share of each Poisson
        batch, the clipped sums are added up and noised once (σ·C, on rank 0),
        and every rank applies the same update, so the run releases (and is
        charged) exactly what one process would. Not with ``canaries`` or
        ``holdout``. False (default): one process. See
        :mod:`privml.dp.torch._distributed` and SECURITY.md.

        >>> import torch.distributed as dist  # doctest: +SKIP
        >>> dist.init_process_group("gloo")  # torchrun sets rank and world size  # doctest: +SKIP
        >>> with session.dp.private_training(
        ...     "data", features=features, target="target", module=net,
        ...     optimizer=torch.optim.SGD(net.parameters(), lr=0.5), batch_size=64,
        ...     epochs=1, max_grad_norm=1.0, noise_multiplier=1.0, distributed=True,
        ... ) as run:  # doctest: +SKIP
        ...     for X, y in run.data_loader:  # this rank's share of each batch
        ...         run.optimizer.zero_grad()
        ...         run.criterion(run.model(X), y).backward()
        ...         run.optimizer.step()  # the same noisy update on every rank

    Examples
    --------
    >>> import torch
    >>> from privml.dp.torch import TrainingSpec
    >>> net = torch.nn.Linear(1, 2)
    >>> spec = TrainingSpec(
    ...     features=["age"], target="sex", module=net,
    ...     optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
    ...     batch_size=2, epochs=1, max_grad_norm=1.0, noise_multiplier=8.0,
    ... )
    >>> spec.features, spec.model_name("patients")
    (('age',), 'patients-dpsgd')
    >>> TrainingSpec(**{**vars(spec), "epochs": 0})
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: epochs must be an integer >= 1, got 0
    """

    features: Sequence[str]
    target: str
    module: nn.Module
    optimizer: torch.optim.Optimizer
    batch_size: int
    epochs: int
    max_grad_norm: float
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    criterion: Any = None
    grad_sample_mode: str = "ghost"
    name: str | None = None
    fix_module: bool = False
    canaries: int = 0
    holdout: float = 0.0
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    augmentations: int = 1
    max_physical_batch_size: int | None = None
    resume: str | None = None
    distributed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", _column_names(self.features))
        _check_torch_objects(self.module, self.optimizer)
        if not isinstance(self.target, str):
            raise ConfigurationError(
                f"target= takes a column name, got {type(self.target).__name__}"
            )
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ConfigurationError(
                "give exactly one of target_epsilon= (privml chooses σ) or noise_multiplier= (σ)"
            )
        counts = ("batch_size", "epochs")
        for name in (*counts, "max_grad_norm", "target_epsilon", "noise_multiplier"):
            # numpy's numbers too (a batch size computed with numpy), held as Python's
            value = getattr(self, name)
            if value is not None:
                kind = int if name in counts else float
                object.__setattr__(self, name, _positive(name, value, kind))
        if self.criterion is not None:
            if not callable(self.criterion):
                raise ConfigurationError(
                    "criterion= takes a loss, e.g. torch.nn.CrossEntropyLoss()"
                )
            loss_reduction(self.criterion)
        if self.grad_sample_mode not in MODES:
            raise ConfigurationError(
                f"grad_sample_mode must be one of {MODES}, got {self.grad_sample_mode!r}"
            )
        if self.name is not None:
            check_name(self.name, "model name", file_safe=True)
        if not isinstance(self.fix_module, bool):
            raise ConfigurationError(f"fix_module must be True or False, got {self.fix_module!r}")
        object.__setattr__(self, "canaries", _canary_count(self.canaries))
        object.__setattr__(self, "holdout", _holdout(self.holdout))
        _check_views(self)
        if self.resume is not None and not isinstance(self.resume, str):
            raise ConfigurationError(
                f"resume= takes a checkpoint id from run.checkpoint(), got "
                f"{type(self.resume).__name__}"
            )
        if not isinstance(self.distributed, bool):
            raise ConfigurationError(f"distributed must be True or False, got {self.distributed!r}")

    def model_name(self, dataset: str) -> str:
        """The name the model is registered under: ``name``, or ``"<dataset>-dpsgd"``."""
        name = self.name if self.name is not None else f"{dataset}-dpsgd"
        return check_name(name, "model name", file_safe=True)


@dataclass(frozen=True, kw_only=True)
class StandardLoopSpec(TrainingSpec):
    """A :class:`TrainingSpec` for ``session.dp.train``, plus ``progress``.

    Parameters
    ----------
    progress : bool
        Show a tqdm progress bar over the run's steps.
    """

    progress: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resume is not None:
            raise ConfigurationError(
                "session.dp.train runs a whole plan in one call and takes no resume=; "
                "continue a checkpointed run with session.dp.private_training(..., resume=...)"
            )


def loss_reduction(criterion: Any) -> str:
    """The criterion's reduction: 'mean' (also when it has none) or 'sum'."""
    reduction = getattr(criterion, "reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ConfigurationError(
            f"the criterion's reduction must be 'mean' or 'sum', got {reduction!r}"
        )
    return str(reduction)


def takes_spec(
    spec: Callable[P, T],
) -> Callable[[Callable[[S, str, T], R]], Callable[Concatenate[S, str, P], R]]:
    """Give a method ``(self, dataset, spec)`` the spec's keywords: ``(self, dataset, **spec)``.

    Type checkers and ``help()`` see the spec's parameters as the method's
    keyword arguments; a call builds the spec (which checks itself) and hands
    it on. A keyword the spec does not take, or a missing one, raises
    ``TypeError`` naming it, as a misspelt keyword does in any call.
    """
    accepted = inspect.signature(spec).parameters

    def decorate(method: Callable[[S, str, T], R]) -> Callable[Concatenate[S, str, P], R]:
        @functools.wraps(method)
        def forward(self: S, dataset: str, /, *args: P.args, **params: P.kwargs) -> R:
            _check_keywords(method.__name__, args, params, accepted)
            return method(self, dataset, spec(*args, **params))

        own = inspect.signature(method)
        head = list(own.parameters.values())[:2]
        forward.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(kind=p.POSITIONAL_ONLY) for p in head] + list(accepted.values())
        )
        return forward

    return decorate


def _check_keywords(
    method: str,
    args: tuple[Any, ...],
    params: Mapping[str, Any],
    accepted: Mapping[str, inspect.Parameter],
) -> None:
    if args:
        raise TypeError(
            f"{method}() takes the dataset as its only positional argument; "
            "give the rest by keyword (features=..., target=..., ...)"
        )
    for given in params:
        if given not in accepted:
            close = get_close_matches(given, list(accepted), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"{method}() got an unexpected keyword argument {given!r}{hint}; "
                f"it takes: {', '.join(accepted)}"
            )
    missing = [name for name, p in accepted.items() if p.default is p.empty and name not in params]
    if missing:
        raise TypeError(f"{method}() is missing keyword arguments: {', '.join(missing)}")


def _check_torch_objects(module: Any, optimizer: Any) -> None:
    torch = require("torch", feature="DP-SGD (session.dp.private_training)")
    if not isinstance(module, torch.nn.Module):
        raise ConfigurationError(f"module= takes a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigurationError(OPTIMIZER_EXPECTED)


def _column_names(features: Any) -> tuple[str, ...]:
    """``features`` as a tuple of column names: a non-empty collection of strings."""
    message = "features= takes a non-empty list of column names"
    if isinstance(features, str | bytes) or not hasattr(features, "__iter__"):
        raise ConfigurationError(message)
    names = tuple(features)
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigurationError(message)
    return names


def _canary_count(value: Any) -> int:
    """``value`` as a Python int in ``[0, CANARIES_MAX]`` (never a bool)."""
    from ..attacks._canaries import check_canary_count

    if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_) or value < 0:
        raise ConfigurationError(f"canaries must be an integer >= 0 (0: off), got {value!r}")
    check_canary_count(int(value))
    return int(value)


#: The most views of one sampled row (``augmentations=``).
AUGMENTATIONS_MAX = 1024
#: The training modes that average a sample's views before clipping.
MULTIPLICITY_MODES = ("hooks", "bk")


def _check_views(spec: TrainingSpec) -> None:
    """``transform``, ``augmentations`` and ``max_physical_batch_size`` (held as Python ints)."""
    if spec.transform is not None and not callable(spec.transform):
        raise ConfigurationError(
            "transform= takes a function of one row's feature tensor returning a tensor, got "
            f"{type(spec.transform).__name__}"
        )
    k = spec.augmentations
    if (
        not isinstance(k, numbers.Integral)
        or isinstance(k, bool | np.bool_)
        or not (1 <= k <= AUGMENTATIONS_MAX)
    ):
        raise ConfigurationError(
            f"augmentations must be an integer from 1 to {AUGMENTATIONS_MAX}, got {k!r}"
        )
    object.__setattr__(spec, "augmentations", int(k))
    if k > 1 and spec.grad_sample_mode not in MULTIPLICITY_MODES:
        raise ConfigurationError(
            f"augmentations={int(k)} averages each sample's views before clipping, which "
            f"grad_sample_mode={spec.grad_sample_mode!r} cannot do (ghost clipping computes "
            f"one norm per view); use grad_sample_mode='hooks' or 'bk'"
        )
    if spec.max_physical_batch_size is not None:
        value = _positive("max_physical_batch_size", spec.max_physical_batch_size, int)
        object.__setattr__(spec, "max_physical_batch_size", value)


def _holdout(value: Any) -> float:
    from ..attacks._holdout import check_holdout

    return check_holdout(value)


def _positive(name: str, value: Any, kind: type[int] | type[float]) -> int | float:
    """``value`` as a Python ``kind``: an integer >= 1, or a finite float > 0 (never a bool)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if kind is int:
        ok = ok and isinstance(value, numbers.Integral) and int(value) >= 1
    elif ok:
        ok = math.isfinite(value) and value > 0
    if not ok:
        what = "an integer >= 1" if kind is int else "finite and > 0"
        raise ConfigurationError(f"{name} must be {what}, got {value!r}")
    return kind(value)
