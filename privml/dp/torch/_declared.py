"""DP-SGD runs described as JSON: a declared network, optimizer and run, trained server-side.

A client that may not send code (a curator server's analyst) describes the
run as data; :meth:`TrainingRequest.parse` checks every value against an
allowlist before anything else happens, :func:`train_declared` builds the
network and optimizer and trains through ``session.dp.train`` (reserved,
guarded, settled and registered as any run), and the client rebuilds the
trained network from the same description and the weights' bytes
(:func:`rebuild`), with no pickle anywhere.

Why it is private: the run is ``session.dp.train``'s (see
:mod:`privml.dp.torch._private_training`); the weights and the per-epoch
history are what that run releases. The history's losses are computed on the
private batches and are not themselves DP (as ``dp.train`` says); the weights
and ε are.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..._validation import check_name
from ...exceptions import ConfigurationError
from .._declared_estimators import scaler_to_wire
from .._training_spec import MODES
from .._wire import (
    at,
    boolean,
    choice,
    integer,
    keys,
    name_list,
    number,
    refuse,
    sequence,
    string,
)
from ._array_input import ArrayScaler
from ._data import scaler_for, task_of
from ._layers import Declared, build_module, declare
from ._weights import load_weights, weights_to_bytes

if TYPE_CHECKING:
    from ..._gate import Gate
    from .._session import DPSession

__all__ = [
    "MAX_BATCH_VALUES",
    "DeclaredTraining",
    "OptimizerRequest",
    "TrainingRequest",
    "build_module",
    "load_weights",
    "rebuild",
    "train_declared",
    "weights_to_bytes",
]

#: The most activation values a batch may hold (batch size × one sample's layer outputs).
MAX_BATCH_VALUES = 1 << 28
#: The largest batch size, epoch count and number of features a request may ask for.
MAX_BATCH_SIZE = 65_536
MAX_EPOCHS = 1_000
MAX_FEATURES = 4_096
#: The losses a request may name, by the task each fits.
LOSSES = {"cross_entropy": "classification", "mse": "regression"}

_UNIT = (0.0, 1.0 - 1e-7)  # momentum, dampening, alpha, each beta: in [0, 1)
_DECAY = (0.0, 1.0)
_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "SGD": {"momentum": _UNIT, "dampening": _UNIT, "weight_decay": _DECAY, "nesterov": bool},
    "Adam": {"betas": "betas", "eps": "eps", "weight_decay": _DECAY, "amsgrad": bool},
    "AdamW": {"betas": "betas", "eps": "eps", "weight_decay": _DECAY, "amsgrad": bool},
    "RMSprop": {
        "alpha": _UNIT,
        "eps": "eps",
        "weight_decay": _DECAY,
        "momentum": _UNIT,
        "centered": bool,
    },
}


@dataclass(frozen=True)
class OptimizerRequest:
    """A checked optimizer: a ``torch.optim`` class name, ``lr`` and its allowed settings."""

    type: str
    lr: float
    settings: Mapping[str, Any]

    @classmethod
    def parse(cls, value: Any, path: str = "optimizer") -> OptimizerRequest:
        """Check ``{"type": "SGD"|"Adam"|"AdamW"|"RMSprop", "lr": ..., <settings>}``."""
        if not isinstance(value, Mapping):
            raise refuse(path, "must be an object with a 'type' and an 'lr'")
        kind = choice(value.get("type"), at(path, "type"), list(_OPTIMIZERS))
        allowed = _OPTIMIZERS[kind]
        given = keys(value, path, ["type", "lr", *allowed], required=["lr"])
        lr = number(given["lr"], at(path, "lr"), 0.0, 10.0, open_low=True)
        settings = {
            name: _setting(allowed[name], item, at(path, name))
            for name, item in given.items()
            if name in allowed
        }
        if settings.get("nesterov") and (
            settings.get("momentum", 0.0) <= 0 or settings.get("dampening", 0.0) != 0
        ):
            raise refuse(at(path, "nesterov"), "needs momentum > 0 and dampening 0")
        return cls(kind, lr, settings)

    def make(self, module: nn.Module) -> torch.optim.Optimizer:
        """The torch optimizer over ``module``'s parameters."""
        optimizer: torch.optim.Optimizer = getattr(torch.optim, self.type)(
            module.parameters(), lr=self.lr, **self.settings
        )
        return optimizer


def _setting(rule: Any, value: Any, path: str) -> Any:
    if rule is bool:
        return boolean(value, path)
    if rule == "eps":
        return number(value, path, 0.0, 1.0, open_low=True)
    if rule == "betas":
        items = sequence(value, path, min_items=2, max_items=2)
        return tuple(number(v, at(path, i), *_UNIT) for i, v in enumerate(items))
    low, high = rule
    return number(value, path, low, high)


_KEYS = (
    "module",
    "features",
    "target",
    "optimizer",
    "batch_size",
    "epochs",
    "max_grad_norm",
    "target_epsilon",
    "noise_multiplier",
    "grad_sample_mode",
    "name",
    "seed",
    "loss",
)


@dataclass(frozen=True)
class TrainingRequest:
    """A server-side DP-SGD run described as JSON, checked in full by :meth:`TrainingRequest.parse`.

    Each field maps onto a keyword of ``session.dp.train``
    (:class:`~privml.dp.torch.TrainingSpec`): ``module`` (a network
    description, see :func:`build_module`), ``features``, ``target``,
    ``optimizer`` (``{"type": "SGD"|"Adam"|"AdamW"|"RMSprop", "lr": ...,
    ...}``), ``batch_size``, ``epochs``, ``max_grad_norm``, exactly one of
    ``target_epsilon`` and ``noise_multiplier``, ``grad_sample_mode``
    (``"ghost"``, ``"hooks"`` or ``"bk"``) and ``name``; plus ``loss``
    (``"cross_entropy"`` for a categorical target, ``"mse"`` for a numeric
    one; by default the target's) and ``seed`` (the initial weights' seed; DP
    noise is never seeded). δ is the dataset budget's, as for every run.

    Examples
    --------
    >>> request = TrainingRequest.parse({
    ...     "module": {"layers": [{"type": "Linear", "in_features": 1, "out_features": 2}]},
    ...     "features": ["age"], "target": "sex", "optimizer": {"type": "SGD", "lr": 0.5},
    ...     "batch_size": 2, "epochs": 1, "max_grad_norm": 1.0, "noise_multiplier": 8.0,
    ... })
    >>> request.features, request.network.parameters
    (('age',), 4)
    >>> TrainingRequest.parse({**request.raw, "target_epsilon": 1.0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    privml.exceptions.ConfigurationError: the request: give exactly one of target_epsilon and ...
    """

    raw: Mapping[str, Any]
    network: Declared
    features: tuple[str, ...]
    target: str
    optimizer: OptimizerRequest
    batch_size: int
    epochs: int
    max_grad_norm: float
    target_epsilon: float | None
    noise_multiplier: float | None
    grad_sample_mode: str
    name: str | None
    seed: int | None
    loss: str | None

    @classmethod
    def parse(cls, obj: Any) -> TrainingRequest:
        """Check every value of a request, naming the path of the first one wrong."""
        if isinstance(obj, Mapping) and "delta" in obj:
            raise refuse("delta", "not taken: a run's δ is its dataset budget's δ")
        given = keys(
            obj,
            "",
            _KEYS,
            required=("module", "features", "target", "optimizer", "batch_size", "epochs"),
        )
        if "max_grad_norm" not in given:
            raise refuse("", "missing max_grad_norm")
        if (given.get("target_epsilon") is None) == (given.get("noise_multiplier") is None):
            raise refuse("", "give exactly one of target_epsilon and noise_multiplier")

        def optional(key: str, check: Any) -> Any:
            return check(given[key], key) if given.get(key) is not None else None

        name = optional("name", _model_name)
        return cls(
            raw=dict(given),
            network=declare(given["module"], "module"),
            features=tuple(name_list(given["features"], "features", max_items=MAX_FEATURES)),
            target=string(given["target"], "target"),
            optimizer=OptimizerRequest.parse(given["optimizer"]),
            batch_size=integer(given["batch_size"], "batch_size", 1, MAX_BATCH_SIZE),
            epochs=integer(given["epochs"], "epochs", 1, MAX_EPOCHS),
            max_grad_norm=number(given["max_grad_norm"], "max_grad_norm", 0, 1e4, open_low=True),
            target_epsilon=optional("target_epsilon", lambda v, p: _positive(v, p, 100.0)),
            noise_multiplier=optional("noise_multiplier", lambda v, p: _positive(v, p, 1e4)),
            grad_sample_mode=choice(
                given.get("grad_sample_mode", "ghost"), "grad_sample_mode", MODES
            ),
            name=name,
            seed=optional("seed", lambda v, p: integer(v, p, 0, 2**63 - 1)),
            loss=optional("loss", lambda v, p: choice(v, p, list(LOSSES))),
        )


def _positive(value: Any, path: str, high: float) -> float:
    return number(value, path, 0.0, high, open_low=True)


def _model_name(value: Any, path: str) -> str:
    string(value, path, max_chars=128)
    try:
        return check_name(value, "model name", file_safe=True)
    except ConfigurationError:
        raise refuse(path, "must be letters, digits, '_', '.' and '-' (at most 128)") from None


@dataclass(frozen=True)
class DeclaredTraining:
    """What a declared run returns: the weights' bytes, the history and the run's privacy.

    Attributes
    ----------
    weights : bytes
        :func:`weights_to_bytes` of the trained network (no pickle).
    history : list of dict
        One row per epoch: ``epoch``, ``steps``, ``loss`` (None when an epoch drew
        no rows), ``epsilon``; JSON-able.
    epsilon, delta : float
        The run's (ε, δ), as the ledger and ``vault.models`` record them.
    model_name : str
    model_version : int or None
    classes : list or None
        A classifier's classes, in the order of the network's outputs.
    target_bounds : [float, float] or None
        A regression target's bounds: the network predicts in [0, 1] of them.
    scaler : dict or None
        The input scaling (from the schema), as :mod:`privml.dp._declared_estimators`
        writes a scaler: a client rebuilds the :class:`~privml.dp.torch.TorchModel`.
    canary_measurement : dict or None
        With ``canaries=m``: the run's canary counts and ε lower bounds (``history.attrs``).
    """

    weights: bytes
    history: list[dict[str, Any]]
    epsilon: float
    delta: float
    model_name: str
    model_version: int | None
    classes: list[Any] | None = None
    target_bounds: list[float] | None = None
    scaler: dict[str, Any] | None = None
    canary_measurement: dict[str, Any] | None = None


def _check_against_schema(gate: Gate, dataset: str, request: TrainingRequest) -> None:
    """The network's input and output against the features and target; reads no data.

    The columns' existence and kinds are checked as ``dp.train`` checks them; the policy
    is asked before the network is compared with them, so a caller without
    ``dp_training`` on them learns nothing of their encoded width or classes.
    """
    schema = gate.schema(dataset)
    scaler = scaler_for(schema, request.features)
    if isinstance(scaler, ArrayScaler):
        raise refuse(
            "features",
            f"{request.features[0]!r} is a {scaler.kind} field: server-side training takes "
            "scalar features; train on it in process with session.dp.private_training",
        )
    width = len(scaler.get_feature_names_out())
    task, classes = task_of(schema, request.target)
    gate.authorize(
        dataset,
        columns=[*request.features, request.target],
        needed="dp_training",
        action="dp.train",
        version=gate.latest_version(dataset),
    )
    if request.loss is not None and LOSSES[request.loss] != task:
        raise refuse("loss", f"{request.loss} does not fit a {task} target")
    fixed, _, _ = request.network.trace(None)
    if fixed is not None and fixed != width:
        raise refuse("module", "its input width is not the features' encoded width")
    _, out, held = request.network.trace(width)
    wanted = (len(classes),) if classes is not None else (1,)
    if out != wanted:
        what = f"{len(classes)} classes" if classes is not None else "one value"
        raise refuse("module", f"its output per sample must be {list(wanted)} ({what})")
    if request.batch_size * (held + width) > MAX_BATCH_VALUES:
        raise refuse(
            "batch_size", f"a batch's activations would hold more than {MAX_BATCH_VALUES} values"
        )


#: Held while torch's global generator is seeded, so concurrent seeded builds do not interleave.
_SEEDING = threading.Lock()


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw from torch's global generator seeded with ``seed``, restoring its state after."""
    if seed is None:
        yield
        return
    with _SEEDING, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def train_declared(
    dp: DPSession,
    dataset: str,
    request: TrainingRequest,
    *,
    canaries: int = 0,
    holdout: float = 0.0,
) -> DeclaredTraining:
    """Train a declared network on ``dataset`` through ``dp.train``; return its weights as bytes.

    Checks the network against the schema (input width, output per class or
    value, the loss, activation memory) before anything is reserved or read,
    builds it (initialized from ``seed`` when given), and hands it to
    ``dp.train``: the usual reservation, guard, settlement and registration in
    ``vault.models``. ``canaries`` and ``holdout`` are ``dp.train``'s (checked there).

    Examples
    --------
    >>> vault = getfixture("dp_vault")
    >>> dp = vault.session("ana", purpose="studies").dp
    >>> request = TrainingRequest.parse({
    ...     "module": {"layers": [{"type": "Linear", "in_features": 1, "out_features": 2}]},
    ...     "features": ["age"], "target": "sex", "optimizer": {"type": "SGD", "lr": 0.5},
    ...     "batch_size": 2, "epochs": 1, "max_grad_norm": 1.0, "noise_multiplier": 8.0,
    ...     "seed": 0, "name": "sex-by-age",
    ... })
    >>> result = train_declared(dp, "patients", request)
    >>> result.model_name, round(result.epsilon, 3), result.classes
    ('sex-by-age', 0.38, ['F', 'M'])
    >>> net = rebuild(request.raw["module"], result.weights)
    >>> vault.models.info("sex-by-age").epsilon == result.epsilon
    True
    """
    gate: Gate = dp._gate
    with gate.request("dp.train", dataset):
        _check_against_schema(gate, dataset, request)
    with _seeded(request.seed):
        module = request.network.build()
    criterion = {"cross_entropy": nn.CrossEntropyLoss, "mse": nn.MSELoss}
    model, history = dp.train(
        dataset,
        features=list(request.features),
        target=request.target,
        module=module,
        optimizer=request.optimizer.make(module),
        batch_size=request.batch_size,
        epochs=request.epochs,
        max_grad_norm=request.max_grad_norm,
        target_epsilon=request.target_epsilon,
        noise_multiplier=request.noise_multiplier,
        criterion=criterion[request.loss]() if request.loss is not None else None,
        grad_sample_mode=request.grad_sample_mode,
        name=request.name,
        canaries=canaries,
        holdout=holdout,
    )
    rows = [
        {
            "epoch": int(row["epoch"]),
            "steps": int(row["steps"]),
            "loss": float(row["loss"]) if math.isfinite(row["loss"]) else None,
            "epsilon": float(row["epsilon"]),
        }
        for row in history.to_dict("records")
    ]
    attrs = history.attrs
    bounds = model.target_bounds
    return DeclaredTraining(
        weights=weights_to_bytes(model.module),
        history=rows,
        epsilon=float(attrs["epsilon"]),
        delta=float(attrs["delta"]),
        model_name=str(attrs["model"]),
        model_version=None if attrs["model_version"] is None else int(attrs["model_version"]),
        classes=None if model.classes is None else [_plain(c) for c in model.classes],
        scaler=scaler_to_wire(model.scaler),
        target_bounds=None if bounds is None else [float(bounds[0]), float(bounds[1])],
        canary_measurement=attrs.get("canary_measurement"),
    )


def _plain(value: Any) -> Any:
    """A class label as a JSON scalar (numpy scalars as Python's)."""
    return value.item() if hasattr(value, "item") else value


def rebuild(spec: Mapping[str, Any], weights: bytes) -> nn.Module:
    """The trained network, for the client: built from ``spec``, weights loaded, eval mode.

    Raises
    ------
    ConfigurationError
        ``spec`` is not a valid network description, or ``weights`` do not
        fit it exactly (see :func:`load_weights`).
    """
    module = build_module(spec)
    load_weights(module, weights)
    return module.eval()
