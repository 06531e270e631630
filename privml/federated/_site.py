"""A site: one vault taking part in federated DP-SGD through a :class:`~privml.Session`.

Why a site's contribution is private (add/remove one record of its dataset): the whole
federated run is one ``session.dp.private_training`` run over the site's own rows,
reserved in the site's ledger before round 1 for the planned rounds' steps (``rounds ×
local_epochs`` epochs), its steps guarded, settled on the batches drawn. Each round
starts from the global model the server sent, loaded with ``run.load_global`` between
steps: the aggregate of earlier noisy releases, so post-processing. Every step is a
Poisson batch, per-sample clipping to ``max_grad_norm`` and Gaussian noise
σ·``max_grad_norm``: the ledger's one ``dp_sgd`` event for the run bounds everything the
site sent. If the planned rounds do not fit the site's budget, the site reserves the
most rounds that fit (each larger reservation refused by the ledger, nothing charged,
audited) and answers every later round with a refusal, which the server sees as a
dropout: a site never overspends. The weights a site sends travel to the server only
inside SecAgg+ (masked), so the server learns only the sum.

Crash safety: when the site has a ``state`` file, the run is checkpointed in the vault
before its first batch and after each round, and the checkpoint's id written to that
file; a site process killed mid-round leaves its run
reserved, and :meth:`Site.recover` (run by ``privml federated site`` at start) resumes
that run and ends it at once, so it settles on every batch the killed process drew (the
checkpoint machinery's durable drawn mark).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing import AuthenticationError
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import BudgetExceededError, ConfigurationError, PrivmlError, RunEndedError
from . import _link
from ._model import ModelSpec, weights_of

if TYPE_CHECKING:
    from multiprocessing.connection import Listener

    from ..vault import Session

__all__ = ["RoundRecord", "Site"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class RoundRecord:
    """One round at the site: the run's request id, the round's steps, the run's ε so far."""

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
        The DP-SGD run: expected batch size, clip norm, σ, SGD learning rate, epochs
        over the site's rows per round.
    target_epsilon : float, optional
        Instead of ``noise_multiplier``: the ε the whole run (every reserved round) may
        cost at the site; σ is calibrated to it when the run is reserved.
    grad_sample_mode : str
        ``"ghost"`` (default), ``"hooks"`` or ``"bk"``.
    name : str, optional
        The name the run's model is registered under in the site's vault when the run
        ends; by default ``"<dataset>-federated"``.
    planned_rounds : int, optional
        The rounds to reserve before the first; a server's round request says it too
        (``fit(..., planned=)``), which takes precedence.
    state : path, optional
        A file where the site keeps its open run's checkpoint id (no data), so that
        :meth:`recover` can settle a run whose process died. Without it the run is not
        checkpointed.

    Examples
    --------
    >>> vault = getfixture("dp_vault")
    >>> site = Site(vault.session("ana", purpose="studies"), "patients", features=["age"],
    ...             target="sex", model=ModelSpec(inputs=1, outputs=2, hidden=(4,)),
    ...             batch_size=2, max_grad_norm=1.0, noise_multiplier=8.0, planned_rounds=2)
    >>> weights = site.fit(1, site.model.initial_weights())
    >>> weights = site.fit(2, weights)
    >>> [w.shape for w in weights], [r.steps for r in site.rounds], site.reserved_rounds
    ([(4, 1), (4,), (2, 4), (2,)], [2, 2], 2)
    >>> events = vault.ledger.events("patients")
    >>> list(events["kind"]), events["steps"].tolist(), list(events["status"])
    (['dp_sgd'], [4], ['committed'])
    """

    session: Session
    dataset: str
    features: Sequence[str]
    target: str
    model: ModelSpec
    batch_size: int
    max_grad_norm: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    lr: float = 0.5
    local_epochs: int = 1
    grad_sample_mode: str = "ghost"
    name: str | None = None
    planned_rounds: int | None = None
    state: Path | None = None
    rounds: list[RoundRecord] = field(default_factory=list)
    reserved_rounds: int | None = None
    stopped: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stack: ExitStack | None = field(default=None, repr=False)
    _run: Any = field(default=None, repr=False)

    # -- the run ----------------------------------------------------------------------
    def fit(
        self, round: int, weights: Sequence[np.ndarray], *, planned: int | None = None
    ) -> list[np.ndarray]:
        """Train one round from the global ``weights``; return the site's new weights.

        The first call reserves the planned rounds (``planned``, else
        ``planned_rounds``) as one DP-SGD run; each call loads ``weights`` into it
        and takes ``local_epochs`` epochs of steps; the call that takes the last
        reserved round ends the run (settled, its model registered).

        Raises
        ------
        BudgetExceededError
            Not even one round fits the site's budget (nothing was charged).
        ConfigurationError
            The site stopped (its reserved rounds are taken, or it was finished), the
            weights do not fit the network, or no number of rounds was given.
        """
        with self._lock:
            if self.stopped is not None:
                raise ConfigurationError(f"site {self.dataset!r} stopped: {self.stopped}")
            arrays = self._fitting(weights)
            if self._run is None:
                self._open(planned or self.planned_rounds)
                if self.state is not None:
                    self._checkpoint_from_the_start()
            try:
                return self._round(round, arrays)
            except BaseException as error:  # the run settles on what it drew, and stops
                if self._run is not None:
                    self._end(f"round {round} failed ({type(error).__name__})")
                raise

    def _open(self, planned: int | None) -> None:
        """Reserve the most of ``planned`` rounds that fit the budget (at least one)."""
        if planned is None or int(planned) < 1:
            raise ConfigurationError(
                "give the number of rounds to reserve (planned_rounds= or fit(planned=))"
            )
        refused: BudgetExceededError | None = None
        for rounds in range(int(planned), 0, -1):
            try:
                self._enter(rounds)
            except BudgetExceededError as error:
                refused = error  # nothing charged; the refusal is audited
                continue
            self.reserved_rounds = rounds
            if rounds < int(planned):
                log.info("site %s reserved %d of %d rounds", self.dataset, rounds, planned)
            return
        assert refused is not None
        self.stopped = f"its budget does not cover one round ({refused})"
        raise refused

    def _settings(self, rounds: int) -> dict[str, Any]:
        import torch

        module = self.model.build()
        return {
            "features": list(self.features),
            "target": self.target,
            "module": module,
            "optimizer": torch.optim.SGD(module.parameters(), lr=self.lr),
            "batch_size": self.batch_size,
            "epochs": rounds * self.local_epochs,
            "max_grad_norm": self.max_grad_norm,
            "noise_multiplier": self.noise_multiplier,
            "target_epsilon": self.target_epsilon,
            "grad_sample_mode": self.grad_sample_mode,
            "name": self.name or f"{self.dataset}-federated",
        }

    def _enter(self, rounds: int) -> None:
        stack = ExitStack()
        self._run = stack.enter_context(
            self.session.dp.private_training(self.dataset, **self._settings(rounds))
        )
        self._stack = stack

    def _fitting(self, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``weights`` as arrays, refused unless they fit the network (before any reservation)."""
        arrays = [np.asarray(w) for w in weights]
        shapes = [tuple(w.shape) for w in self.model.initial_weights()]
        if [tuple(a.shape) for a in arrays] != shapes or any(a.dtype.kind != "f" for a in arrays):
            raise ConfigurationError(
                "the global weights do not fit this site's network; give the site and the "
                "server the same ModelSpec"
            )
        return arrays

    def _round(self, round: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        run = self._run
        assert run is not None and self.reserved_rounds is not None
        run.load_global(arrays, origin=f"federated round {round}")
        before = run.steps_taken
        for _ in range(self.local_epochs):
            for X, y in run.data_loader:
                run.optimizer.zero_grad()
                run.criterion(run.model(X), y).backward()
                run.optimizer.step()
        steps = run.steps_taken
        self.rounds.append(
            RoundRecord(round, run.request_id, steps - before, float(run.epsilon_at(steps)))
        )
        out = weights_of(run.model)
        if len(self.rounds) >= self.reserved_rounds:
            self._end(f"its budget covered {self.reserved_rounds} round(s)")
        elif self.state is not None:
            self._write_state(run.checkpoint())
        return out

    def _checkpoint_from_the_start(self) -> None:
        """Checkpoint the run before its first batch, so a kill in round 1 is recoverable.

        A vault that cannot checkpoint (its metadata on PostgreSQL) is refused here, before
        any batch is drawn: the run ends with its reservation released.
        """
        assert self._run is not None
        try:
            self._write_state(self._run.checkpoint())
        except BaseException:
            self._end("its run cannot be checkpointed (give no state= on this vault)")
            raise

    def _end(self, why: str) -> None:
        """Leave the run's block: it settles on the batches drawn and registers its model."""
        self.stopped = why
        stack, self._stack, self._run = self._stack, None, None
        if stack is not None:
            stack.close()
        if self.state is not None and self.state.exists():
            self.state.unlink()

    def finish(self) -> None:
        """End the run now (the server stopped early, or the site shuts down); idempotent."""
        with self._lock:
            if self._run is not None:
                self._end("the run was finished")

    # -- crash recovery ---------------------------------------------------------------
    def _write_state(self, checkpoint: str) -> None:
        assert self.state is not None and self.reserved_rounds is not None
        self.state.parent.mkdir(parents=True, exist_ok=True)
        part = self.state.with_suffix(".part")
        part.write_text(json.dumps({"checkpoint": checkpoint, "rounds": self.reserved_rounds}))
        os.replace(part, self.state)

    def recover(self) -> str | None:
        """Settle the run a killed process of this site left open; its request id, or None.

        Reads the checkpoint id from ``state``, resumes that run (the same reservation,
        counted from its durable drawn mark) and ends it at once: the ledger settles on
        every batch the dead process drew. A run that had already ended is left as it is.
        """
        if self.state is None or not self.state.exists():
            return None
        saved = json.loads(self.state.read_text())
        settings = self._settings(int(saved["rounds"]))
        try:
            with self.session.dp.private_training(
                self.dataset, **settings, resume=str(saved["checkpoint"])
            ) as run:
                request_id: str | None = run.request_id
        except RunEndedError:
            request_id = None  # it settled before the process died
        self.state.unlink()
        return request_id

    # -- statistics and the link ------------------------------------------------------
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
        """Answer one link request: ``{"op": "fit", "round": r, "rounds": R}`` with the global
        weights, or ``{"op": "share", "statistic": ..., "epsilon": ..., "sites": m, "column":
        ...}``."""
        try:
            if header.get("op") == "fit":
                planned = int(header["rounds"]) if header.get("rounds") else None
                weights = self.fit(int(header["round"]), arrays, planned=planned)
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
        except Exception as error:  # the site keeps serving; the server sees a failed round
            log.warning("site: a request failed (%s)", type(error).__name__)
            return _link.encode({"error": f"the site failed ({type(error).__name__})"})
        return _link.encode({"error": "unknown request"})

    def serve(self, listener: Listener, stop: threading.Event) -> None:
        """Answer requests on ``listener`` until ``stop`` is set (one at a time)."""
        while not stop.is_set():
            try:
                connection = listener.accept()
            except (AuthenticationError, EOFError, ConnectionError):  # no key, or hung up
                if not stop.is_set():
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
