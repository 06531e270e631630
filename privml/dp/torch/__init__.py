"""Differentially private deep learning (DP-SGD with Opacus) through a session.

Reach it as ``session.dp.private_training(...)`` (your own PyTorch loop) or
``session.dp.train(...)`` (a standard loop with a history). A run:

* reads its features and target through the session (``dp_training`` or a more
  revealing mode), scaled by the schema's bounds, as tensors;
* samples batches by Poisson sampling, always, with q = batch_size / N;
* reserves its planned DP-SGD event in the ledger before the first batch
  (σ given, or calibrated to ``target_epsilon`` and the remaining budget),
  lets each step consume exactly one freshly drawn batch, refuses a batch past
  the reservation before it is drawn, and settles on the batches drawn however
  the block ends;
* registers the trained model in ``vault.models`` with its (ε, δ).

Training modes: ``"ghost"`` (Opacus ghost clipping, the default), ``"hooks"``
(Opacus per-sample gradients) and ``"bk"`` (privml's book-keeping for Linear,
Embedding, convolution, normalization and attention layers: one backward pass,
the same clipped sums).

Importing this subpackage imports torch and opacus
(``pip install 'privml[torch]'``); ``import privml`` does not.

The files, in the order a run uses them::

    ../_training_spec.py  TrainingSpec: the run's parameters, checked when made (no torch needed)
    _private_training.py  the block: checks, policy, reservation, wiring, settling at exit
    _data.py              columns to tensors by the schema
    _engine.py            one training mode's module wrapper, optimizer and loss
    _bk_layout.py         every clipped layer sees the batch where its mode reads it (probed)
    _bk.py  _optim.py     book-keeping clipping; the DP optimizers behind the step guard
    _bk_*.py              book-keeping's tape and rules, one file per layer family
    _opacus.py  _noise.py what privml takes from Opacus; the OS-seeded noise source
    _frozen.py            the module's state besides its parameters, fixed for the run
    _plan.py              the planned DP-SGD event, fixed from N (σ given or calibrated)
    _calibrate.py         choosing σ for a target ε and the remaining budget
    _rows.py  _loader.py  the sealed rows; Poisson batches drawn one step at a time
    _guard.py  _fence.py  one batch per step, none past the reservation; hooks that hold to it
    _training_run.py      TrainingRun, the object the block yields
    _settle.py            the end of a block: unwrap, record, settle, register
    _standard_loop.py     train(): the usual loop over the block, with a history
    _distributed.py       distributed=True: ranks, their shares of each batch, one noisy sum
    _model.py             TorchModel, the registered network with its input scaling
    _deps.py              torch and opacus, or the install line

Declared runs (a network and run described as JSON, for clients that send no code)::

    _layers.py            the allowlisted layers: checked, counted and traced before building
    _weights.py           a state dict as bytes without pickle, loaded only if it fits exactly
    _declared.py          TrainingRequest, train_declared (through train()), rebuild
"""

from .._training_spec import TrainingSpec
from . import _deps  # noqa: F401  (first: a missing torch/opacus raises OptionalDependencyError)
from ._declared import (
    DeclaredTraining,
    TrainingRequest,
    build_module,
    load_weights,
    rebuild,
    train_declared,
    weights_to_bytes,
)
from ._model import TorchModel
from ._private_training import TrainingRun, private_training
from ._standard_loop import TrainResult, train

__all__ = [
    "DeclaredTraining",
    "TorchModel",
    "TrainResult",
    "TrainingRequest",
    "TrainingRun",
    "TrainingSpec",
    "build_module",
    "load_weights",
    "private_training",
    "rebuild",
    "train",
    "train_declared",
    "weights_to_bytes",
]
