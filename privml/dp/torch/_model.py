"""A DP-SGD-trained network with the input view it was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..scaling import SchemaScaler
from ._data import inputs

__all__ = ["TorchModel"]


class TorchModel:
    """A network trained through a session, and the schema scaling its inputs need.

    What :meth:`privml.dp.DPSession.private_training` registers in
    ``vault.models``. Predictions take raw feature values (a DataFrame with the
    feature columns), scale them by the schema's bounds as in training, and run
    the network: post-processing of the DP parameters, at no privacy cost.

    Attributes
    ----------
    module : torch.nn.Module
        The trained network (plain: no Opacus hooks).
    scaler : SchemaScaler
        The fixed input scaling (from the schema, not the data); for a model on
        one tensor or sequence field, its array view (float32 ``(N, *shape)`` in
        [0, 1], or int64 ids ``(N, max_length)`` padded with the pad id).
    features : list of str
    target : str
    task : {"classification", "regression"}
    classes : list or None
        The target's categories, in the order of the network's outputs.
    target_bounds : (float, float) or None
        A numeric target's declared bounds: the network predicts in [0, 1] and
        :meth:`predict` maps back to them.

    Examples
    --------
    >>> import torch
    >>> vault = getfixture("dp_vault")
    >>> net = torch.nn.Linear(1, 2)
    >>> model, _ = vault.session("ana", purpose="studies").dp.train(
    ...     "patients", features=["age"], target="sex", module=net,
    ...     optimizer=torch.optim.SGD(net.parameters(), lr=0.1), batch_size=2, epochs=1,
    ...     max_grad_norm=1.0, noise_multiplier=10.0, grad_sample_mode="bk", name="sex-by-age",
    ... )
    >>> model
    <privml TorchModel classification on 1 features>
    >>> new = pd.DataFrame({"age": [30, 80]})
    >>> model.predict(new).shape, model.predict_proba(new).sum(axis=1).round(6).tolist()
    ((2,), [1.0, 1.0])
    >>> vault.models.load("sex-by-age").classes
    ['F', 'M']
    """

    def __init__(
        self,
        *,
        module: nn.Module,
        scaler: SchemaScaler,
        features: list[str],
        target: str,
        task: str,
        classes: list[Any] | None,
        target_bounds: tuple[float, float] | None = None,
    ) -> None:
        self.module = module
        self.scaler = scaler
        self.features = list(features)
        self.target = target
        self.task = task
        self.classes = classes
        self.target_bounds = target_bounds

    def __repr__(self) -> str:
        return f"<privml TorchModel {self.task} on {len(self.features)} features>"

    def outputs(self, X: pd.DataFrame) -> np.ndarray:
        """The network's raw outputs (logits or values) for the rows of ``X``."""
        tensor = inputs(self.scaler, X, self.features)
        device = next(self.module.parameters()).device
        training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                out = self.module(tensor.to(device))
        finally:
            self.module.train(training)
        return np.asarray(out.detach().cpu().numpy())

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Class labels (the target's categories) or regression values (in the target's units)."""
        out = self.outputs(X)
        if self.task == "classification":
            assert self.classes is not None
            labels: np.ndarray = np.asarray(self.classes)[out.argmax(axis=1)]
            return labels
        values = out.reshape(len(out), -1)[:, 0]
        if self.target_bounds is not None:
            lo, hi = self.target_bounds
            values = lo + values * (hi - lo)
        return np.asarray(values)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Class probabilities (softmax of the outputs), one column per class."""
        out = self.outputs(X)
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        proba: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
        return proba
