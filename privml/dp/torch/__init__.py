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
(Opacus per-sample gradients) and ``"bk"`` (privml's book-keeping for stacks
of Linear and Embedding layers: one backward pass, the same clipped sums).

Importing this subpackage imports torch and opacus
(``pip install 'privml[torch]'``); ``import privml`` does not.
"""

from .._training_spec import TrainingSpec
from . import _deps  # noqa: F401  (first: a missing torch/opacus raises OptionalDependencyError)
from ._model import TorchModel
from ._private_training import TrainingRun, private_training
from ._standard_loop import TrainResult, train

__all__ = ["TorchModel", "TrainResult", "TrainingRun", "TrainingSpec", "private_training", "train"]
