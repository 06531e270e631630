"""A site: one vault taking part in federated DP-SGD through a :class:`~privml.Session`.

Why a site's contribution is private (add/remove one record of its dataset): every round
is one ``session.dp.private_training`` run over the site's own rows, started from the
global model the server sent (post-processing of earlier releases): Poisson batches,
per-sample clipping to ``max_grad_norm``, Gaussian noise σ·``max_grad_norm`` per step.
Each round's run is reserved in the site's ledger before its first batch and settled
on the batches drawn, so the site's ledger holds one ``dp_sgd`` event per round taken;
their composition bounds everything the site sent. A round the ledger refuses
(:class:`~privml.BudgetExceededError`) ends the site's part in the run: it trains no
further, and the refusal is the answer the server receives. The weights a site sends
travel to the server only inside SecAgg+ (masked), so the server learns only the sum.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import AuthenticationError
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import BudgetExceededError, ConfigurationError, PrivmlError
from . import _link
from ._model import ModelSpec, load_into, weights_of

if TYPE_CHECKING:
    from multiprocessing.connection import Listener

    from ..vault import Session

__all__ = ["RoundRecord", "Site"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class RoundRecord:
    """What one round cost the site: the ledger's request id, steps and ε of that run."""

    round: int
    request_id: str
    steps: int
    epsilon: float


@dataclass(eq=False)
class Site:
    """One vault's side of a federated DP-SGD run.

    Parameters
    ----------
    session : Session
        A session of the site's vault whose principal holds ``dp_training`` on the
        dataset's ``features`` and ``target`` for the session's purpose.
    dataset : str
        The site's dataset.
    features, target
        As for :meth:`privml.dp.DPSession.private_training` (numeric features: the
        network's ``inputs`` is their number).
    model : ModelSpec
        The network, the same as the server's.
    batch_size, max_grad_norm, noise_multiplier, lr, local_epochs
        Each round's DP-SGD run: expected batch size, clip norm, σ, SGD learning
        rate, epochs over the site's rows per round.
    grad_sample_mode : str
        ``"ghost"`` (default), ``"hooks"`` or ``"bk"``.
    name : str, optional
        The name each round's model is registered under in the site's vault (a new
        version per round); by default ``"<dataset>-federated"``.

    Examples
    --------
    >>> vault = getfixture("dp_vault")
    >>> site = Site(vault.session("ana", purpose="studies"), "patients", features=["age"],
    ...             target="sex", model=ModelSpec(inputs=1, outputs=2, hidden=(4,)),
    ...             batch_size=2, max_grad_norm=1.0, noise_multiplier=8.0)
    >>> weights = site.fit(1, site.model.initial_weights())
    >>> [w.shape for w in weights], len(site.rounds), site.rounds[0].steps
    ([(4, 1), (4,), (2, 4), (2,)], 1, 2)
    """

    session: Session
    dataset: str
    features: Sequence[str]
    target: str
    model: ModelSpec
    batch_size: int
    max_grad_norm: float
    noise_multiplier: float
    lr: float = 0.5
    local_epochs: int = 1
    grad_sample_mode: str = "ghost"
    name: str | None = None
    rounds: list[RoundRecord] = field(default_factory=list)
    stopped: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fit(self, round: int, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Train one round from the global ``weights``; return the site's new weights.

        Raises
        ------
        BudgetExceededError
            The round does not fit the site's budget (nothing was charged); the site
            takes no further rounds.
        ConfigurationError
            The site stopped earlier, or the weights do not fit the network.
        """
        with self._lock:
            if self.stopped is not None:
                raise ConfigurationError(f"site {self.dataset!r} stopped: {self.stopped}")
            module = self.model.build()
            load_into(module, weights)  # before any data: the server's (public) model
            try:
                return self._train(round, module)
            except BudgetExceededError as error:
                self.stopped = f"its budget does not cover round {round} ({error})"
                raise

    def _train(self, round: int, module: Any) -> list[np.ndarray]:
        import torch

        with self.session.dp.private_training(
            self.dataset,
            features=list(self.features),
            target=self.target,
            module=module,
            optimizer=torch.optim.SGD(module.parameters(), lr=self.lr),
            batch_size=self.batch_size,
            epochs=self.local_epochs,
            max_grad_norm=self.max_grad_norm,
            noise_multiplier=self.noise_multiplier,
            grad_sample_mode=self.grad_sample_mode,
            name=self.name or f"{self.dataset}-federated",
        ) as run:
            for _ in range(run.epochs):
                for X, y in run.data_loader:
                    run.optimizer.zero_grad()
                    run.criterion(run.model(X), y).backward()
                    run.optimizer.step()
        self.rounds.append(
            RoundRecord(round, run.request_id, run.steps_taken, float(run.epsilon or 0.0))
        )
        return weights_of(run.model)

    def share(
        self, *, statistic: str, epsilon: float, sites: int, column: str | None
    ) -> np.ndarray:
        """This site's noisy share of a joint statistic (see :func:`~privml.federated.share`)."""
        from ._statistics import share

        with self._lock:
            part = share(
                self.session,
                self.dataset,
                statistic=statistic,
                epsilon=epsilon,
                sites=sites,
                column=column,
            )
        return part.values

    def handle(self, header: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
        """Answer one link request: ``{"op": "fit", "round": r}`` with the global weights,
        or ``{"op": "share", "statistic": ..., "epsilon": ..., "sites": m, "column": ...}``."""
        try:
            if header.get("op") == "fit":
                weights = self.fit(int(header["round"]), arrays)
                return _link.encode({"round": header["round"]}, weights)
            if header.get("op") == "share":
                values = self.share(
                    statistic=str(header["statistic"]),
                    epsilon=float(header["epsilon"]),
                    sites=int(header["sites"]),
                    column=header.get("column") or None,
                )
                return _link.encode({"share": True}, [values])
        except PrivmlError as error:
            return _link.encode({"error": f"{type(error).__name__}: {error}"})
        except (KeyError, TypeError, ValueError):
            return _link.encode({"error": "malformed request"})
        return _link.encode({"error": "unknown request"})

    def serve(self, listener: Listener, stop: threading.Event) -> None:
        """Answer requests on ``listener`` until ``stop`` is set (one at a time)."""
        while not stop.is_set():
            try:
                connection = listener.accept()
            except AuthenticationError:  # a peer without the site's key: refused
                log.warning("site link: a peer failed authentication")
                continue
            except OSError:  # the listener was closed
                return
            if stop.is_set():
                connection.close()
                return
            try:
                message = connection.recv_bytes()
                header, arrays = _link.decode(message)
                connection.send_bytes(self.handle(header, arrays))
            except (EOFError, OSError, ValueError) as error:
                log.warning("site link: a request failed (%s)", type(error).__name__)
            finally:
                connection.close()
