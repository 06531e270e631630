"""The run object a ``private_training`` block yields: its parts, its plan and, after, its cost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..._records import ModelInfo
from ...accounting.composition import epsilon_alone
from ...accounting.events import PrivacyEvent
from ...accounting.records import Charge
from ...attacks._canaries import Canaries
from ...attacks._dirac import DiracCanaries
from ...exceptions import ConfigurationError
from ._guard import StepGuard
from ._loader import PoissonLoader
from ._model import TorchModel

__all__ = ["TrainingRun"]


@dataclass(eq=False)
class TrainingRun:
    """One DP-SGD run, as yielded by :meth:`privml.dp.DPSession.private_training`.

    Use ``model``, ``optimizer``, ``data_loader`` and ``criterion`` in your loop
    as you would the non-private ones: draw a batch, one forward and backward
    pass on it, one ``optimizer.step()``. Figures are at the dataset's δ.

    Your loop sees its batches (the rows drawn for each step); nothing in the
    run holds the whole table. Every batch drawn is charged, stepped or not,
    and recorded in the audit log (``dp.train.batches``: batches and rows
    handed out). Inside the block, the optimizer you passed in (or any other
    over the module's parameters) refuses to step: only ``optimizer`` updates
    the parameters.

    Attributes
    ----------
    model : torch.nn.Module
        The module to call (wrapped by Opacus for ``"ghost"`` and ``"hooks"``).
        After the block: the plain trained module.
    optimizer
        The DP optimizer: each ``step()`` clips, adds noise, counts the step,
        and refuses, before updating anything, a step without a batch of its
        own (one batch drawn since the previous step, its forward and backward
        pass) or past the reservation.
    data_loader : PoissonLoader
        Poisson batches (q from the OS's CSPRNG), drawn one per step, on the
        model's device, of (features, target) tensors: features scaled into
        [0, 1] by the schema's bounds; int64 class indices (in the schema's
        category order), or float32 ``(N, 1)`` values scaled into [0, 1] by the
        target's declared bounds. With ``max_physical_batch_size`` each batch
        comes as its chunks: step after each; only the last chunk's step releases.
    criterion
        The loss to call. With ``"ghost"`` it must be this one (its
        ``backward()`` runs the clipping pass; a plain loss is refused at ``step()``).
    epochs, steps_per_epoch, steps_planned : int
        The reservation covers ``epochs × steps_per_epoch`` steps
        (``steps_per_epoch == len(data_loader)``).
    epsilon_planned : float
        ε of the planned run on its own, as the ledger computes it.
    noise_multiplier, sample_rate, batch_size, n, max_grad_norm, delta
        σ, q = batch_size / n, the expected batch size, the rows, the clip norm, δ.
    binding : str or None
        With ``target_epsilon``: ``"target"``, ``"budget"``, ``"principal:..."``
        or ``"purpose:..."``, whichever bound σ; ``calibration`` says so in words.
    request_id : str
        The ledger reservation (settled when the block exits).
    name : str
        The name the model is registered under.
    epsilon, opacus_epsilon : float or None
        After the block: the ledger's ε for the batches drawn, and the ε Opacus's
        own RDP accountant reports (q = 1/len(data_loader), RDP only), for
        cross-checking; the ledger's figure is the one charged.
    opacus_notes : list of str
        Warnings Opacus's accountant gave while computing its figure.
    charge : Charge or None
        After the block: the settled (or released) ledger row.
    model_info : ModelInfo or None
        After a block that ended normally with steps taken: the registered model.
    trained : TorchModel or None
        The registered model (network plus the input scaling it expects).
    canary_measurement : dict or None
        With ``canaries=m``, after a block that ended normally with steps
        taken: ``{"black_box": ..., "white_box": ...}``, each with m, guesses,
        correct, threat model, confidence, the empirical ε lower bound and the
        charged ε at δ: the input canaries scored on the final model
        (:mod:`privml.attacks._canaries`) and the gradient (Dirac) canaries
        scored on every noisy gradient (:mod:`privml.attacks._dirac`).
    """

    model: nn.Module
    optimizer: Any
    data_loader: PoissonLoader
    criterion: Any
    epochs: int
    epsilon_planned: float
    noise_multiplier: float
    sample_rate: float
    batch_size: int
    n: int
    max_grad_norm: float
    delta: float
    steps_per_epoch: int
    steps_planned: int
    grad_sample_mode: str
    dataset: str
    version: int
    request_id: str
    name: str
    binding: str | None = None
    calibration: str | None = None
    epsilon: float | None = None
    opacus_epsilon: float | None = None
    opacus_notes: list[str] = field(default_factory=list)
    charge: Charge | None = None
    model_info: ModelInfo | None = None
    trained: TorchModel | None = None
    canary_measurement: dict[str, Any] | None = None
    _canaries: Canaries | None = field(default=None, repr=False)
    _dirac: DiracCanaries | None = field(default=None, repr=False)
    _guard: StepGuard | None = field(default=None, repr=False)
    _planned: PrivacyEvent | None = field(default=None, repr=False)
    _checkpointer: Callable[[], str] | None = field(default=None, repr=False)
    _loaded: Callable[[str, dict[str, Any]], None] | None = field(default=None, repr=False)

    @property
    def steps_taken(self) -> int:
        """Optimizer steps released so far."""
        return self._guard.taken if self._guard is not None else 0

    @property
    def batches_drawn(self) -> int:
        """Batches handed out by ``data_loader`` so far (each is charged, stepped or not)."""
        return self._guard.drawn if self._guard is not None else 0

    def checkpoint(self) -> str:
        """Store the run's state in the vault, sealed; resume it with ``resume=`` the id returned.

        Stores the model's and the optimizer's state, the steps taken, the batches
        drawn, the plan (σ, q, C, N, planned steps, mode) and the reservation's request
        id, encrypted under the vault's keys (audited as ``dp.train.checkpoint``).
        Nothing about the sampler or the noise is stored: the coins come from the
        OS's CSPRNG and the noise from generators seeded from the OS. From the first
        checkpoint on, this process holds the run and batches are drawn only once a
        durable count covers them, so a run resumed after this process dies is
        charged for every batch it drew. See :mod:`privml.dp.torch._checkpoint`.

        Returns
        -------
        str
            The checkpoint id, for ``session.dp.private_training(..., resume=id)``.

        Examples
        --------
        >>> import torch
        >>> vault = getfixture("dp_vault")
        >>> dp = vault.session("ana", purpose="studies").dp
        >>> net = torch.nn.Linear(1, 2)
        >>> settings = dict(
        ...     features=["age"], target="sex", module=net,
        ...     optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        ...     batch_size=2, epochs=1, max_grad_norm=1.0, noise_multiplier=8.0,
        ... )
        >>> with dp.private_training("patients", **settings) as run:
        ...     X, y = next(iter(run.data_loader))
        ...     run.criterion(run.model(X), y).backward()
        ...     run.optimizer.step()
        ...     saved = run.checkpoint()
        >>> saved.startswith("ckpt-"), run.charge.status, run.steps_taken
        (True, 'committed', 1)

        Had the process died inside the block, ``private_training("patients",
        **settings, resume=saved)`` would continue the run; this one has settled:

        >>> with dp.private_training("patients", **settings, resume=saved) as again:
        ...     pass
        Traceback (most recent call last):
        ...
        privml.exceptions.RunEndedError: reservation ... is already committed: its run \
has ended and cannot be continued; start a new run
        """
        if self._checkpointer is None:
            raise ConfigurationError("this run cannot be checkpointed")
        return self._checkpointer()

    def load_global(self, weights: Sequence[np.ndarray], *, origin: str) -> str:
        """Overwrite the module's parameters, between steps, with weights from outside the data.

        For weights released earlier and sent back, e.g. a federated server's aggregate
        of the sites' noisy updates: loading them is post-processing, so the run's one
        reservation keeps covering everything the model reveals. Allowed only between
        steps (no batch drawn and waiting); the arrays are copied, every gradient is
        cleared (per-sample ones included), the module's other state must not change,
        and the load is audited (``dp.train.load``: ``origin``, the steps taken and
        the weights' SHA-256), refusals too.

        The run cannot tell where the arrays came from: loading weights computed from
        un-noised gradients or from the data would leak what the ledger does not cover.
        Load only what was released (or is public); ``origin`` says which, for the log.

        Parameters
        ----------
        weights : sequence of numpy.ndarray
            One finite floating-point array per parameter, in ``module.parameters()``
            order, of its shape.
        origin : str
            Where they came from, in words (e.g. ``"federated round 3"``; audited).

        Returns
        -------
        str
            The SHA-256 (hex) of the loaded weights as float32, as audited.

        Examples
        --------
        >>> import numpy as np, torch
        >>> vault = getfixture("dp_vault")
        >>> dp = vault.session("ana", purpose="studies").dp
        >>> net = torch.nn.Linear(1, 2)
        >>> with dp.private_training(
        ...     "patients", features=["age"], target="sex", module=net,
        ...     optimizer=torch.optim.SGD(net.parameters(), lr=0.5), batch_size=2,
        ...     epochs=2, max_grad_norm=1.0, noise_multiplier=8.0,
        ... ) as run:
        ...     zeros = [np.zeros((2, 1), np.float32), np.zeros(2, np.float32)]
        ...     digest = run.load_global(zeros, origin="all zeros")
        ...     loaded = float(net.weight.detach().abs().sum())
        >>> len(digest), loaded, run.charge.status
        (64, 0.0, 'released')
        """
        if self._guard is None or self._loaded is None:
            raise ConfigurationError("this run cannot load weights")
        if not isinstance(origin, str) or not origin.strip() or len(origin) > 200:
            raise ConfigurationError("origin= says where the weights came from (1-200 chars)")
        details: dict[str, Any] = {"origin": origin, "steps_taken": self.steps_taken}
        try:
            digest = self._guard.load_public(weights)
        except ConfigurationError:
            self._loaded("refused", details)
            raise
        self._loaded("allowed", {**details, "weights_sha256": digest})
        return digest

    def epsilon_at(self, steps: int) -> float:
        """The ledger's ε for this run after ``steps`` steps (0 for none)."""
        if steps <= 0 or self._planned is None:
            return 0.0
        return epsilon_alone(self._planned.with_steps(steps), self.delta)

    def __repr__(self) -> str:
        return (
            f"<privml TrainingRun {self.dataset!r} {self.grad_sample_mode} "
            f"σ={self.noise_multiplier:.4g} q={self.sample_rate:.4g} "
            f"steps {self.steps_taken}/{self.steps_planned}>"
        )
