"""``session.dp``: DP statistics and diffprivlib models, each release charged before it runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._optional import require
from ..accounting.events import PrivacyEvent
from ..exceptions import ConfigurationError
from . import _stats
from ._release import release
from ._result import DPResult

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .._gate import Gate, Where
    from .torch import TrainingRun, TrainResult

__all__ = ["DPSession"]

_NUMERIC = ("numeric", "integer")


class DPSession:
    """Differentially private releases for one session. Reach it as ``session.dp``.

    Statistics need ``dp_aggregate`` (or a more revealing mode) on the columns
    they use; :meth:`fit` needs ``dp_training``. Each call charges the dataset's
    budget before reading any data; a refused charge raises
    :class:`~privml.BudgetExceededError` and reads nothing.

    Examples
    --------
    >>> vault = getfixture("dp_vault")
    >>> dp = vault.session("ana", purpose="studies").dp
    >>> result = dp.mean("patients", "glucose", epsilon=0.5)
    >>> result.mechanism, result.epsilon
    ('laplace (sum and count, ε/2 each)', 0.5)
    """

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    # -- statistics -------------------------------------------------------------------
    def count(self, dataset: str, *, epsilon: float, where: Where | None = None) -> DPResult:
        """Number of rows (meeting ``where``), with Laplace noise of scale 1/ε.

        The rows counted are those every column usable at ``dp_aggregate``
        admits under the row filters of its deciding grants.
        """

        def compute(frame: pd.DataFrame) -> tuple[Any, _stats.Noisy, str]:
            noisy = _stats.count(len(frame), epsilon)
            return noisy.value, noisy, "laplace"

        with self._gate.request("dp.count", dataset, where=where):
            return self._statistic(dataset, [], epsilon, where, "count", compute)

    def sum(
        self, dataset: str, column: str, *, epsilon: float, where: Where | None = None
    ) -> DPResult:
        """Sum of ``column`` clipped to its declared bounds, with Laplace noise."""
        with self._gate.request("dp.sum", dataset, where=where):
            return self._numeric(dataset, column, epsilon, where, "sum", _stats.sum_, "laplace")

    def mean(
        self, dataset: str, column: str, *, epsilon: float, where: Where | None = None
    ) -> DPResult:
        """Mean of ``column`` (clipped): a noisy shifted sum over a noisy count."""
        mechanism = "laplace (sum and count, ε/2 each)"
        with self._gate.request("dp.mean", dataset, where=where):
            return self._numeric(dataset, column, epsilon, where, "mean", _stats.mean, mechanism)

    def var(
        self, dataset: str, column: str, *, epsilon: float, where: Where | None = None
    ) -> DPResult:
        """Variance of ``column`` (clipped), from noisy sums of x, x² and a count."""
        mechanism = "laplace (sums of x, x² and count, ε/3 each)"
        with self._gate.request("dp.var", dataset, where=where):
            return self._numeric(dataset, column, epsilon, where, "var", _stats.var, mechanism)

    def std(
        self, dataset: str, column: str, *, epsilon: float, where: Where | None = None
    ) -> DPResult:
        """Standard deviation of ``column``: the square root of :meth:`var` (post-processing)."""

        def compute(frame: pd.DataFrame) -> tuple[Any, _stats.Noisy, str]:
            noisy = _stats.var(_values(frame, column), self._bounds(dataset, column), epsilon)
            root = float(np.sqrt(noisy.value))
            low = float(np.sqrt(max(noisy.value + noisy.interval[0], 0.0))) - root
            high = float(np.sqrt(max(noisy.value + noisy.interval[1], 0.0))) - root
            scaled = _stats.Noisy(root, noisy.noise_scale / max(2 * root, 1e-12), (low, high))
            return root, scaled, "laplace (sums of x, x² and count, ε/3 each)"

        with self._gate.request("dp.std", dataset, where=where):
            return self._statistic(dataset, [column], epsilon, where, "std", compute)

    def histogram(
        self,
        dataset: str,
        column: str,
        *,
        epsilon: float,
        bins: int | Sequence[float] | None = None,
        where: Where | None = None,
    ) -> DPResult:
        """Noisy counts per category (from the schema) or per bin of the declared bounds."""
        with self._gate.request("dp.histogram", dataset, where=where):
            return self._histogram(dataset, column, epsilon, bins, where)

    def quantile(self, dataset: str, column: str, q: float, *, epsilon: float) -> DPResult:
        """The ``q``-quantile of ``column`` by the exponential mechanism over its bounds."""

        def compute(frame: pd.DataFrame) -> tuple[Any, _stats.Noisy | None, str]:
            bounds = self._bounds(dataset, column)
            value = _stats.quantile(_values(frame, column), q, bounds, epsilon)
            return value, None, "exponential (diffprivlib)"

        with self._gate.request("dp.quantile", dataset):
            if not 0 <= q <= 1:
                raise ConfigurationError(f"q must lie in [0, 1], got {q!r}")
            return self._statistic(
                dataset, [column], epsilon, None, "quantile", compute, library="diffprivlib"
            )

    def _histogram(
        self,
        dataset: str,
        column: str,
        epsilon: float,
        bins: int | Sequence[float] | None,
        where: Where | None,
    ) -> DPResult:
        field = self._field(dataset, column)
        if field.kind == "categorical":
            if bins is not None:
                raise ConfigurationError(
                    "bins= is for numeric columns; categories come from the schema"
                )
            labels: list[Any] = list(field.categories or ())
        elif field.kind in _NUMERIC:
            lo, hi = field.bounds or (0.0, 1.0)
            edges = _edges(bins, lo, hi)
            labels = list(pd.IntervalIndex.from_breaks(edges, closed="left"))
        else:
            raise ConfigurationError(
                f"histogram needs a categorical or numeric column; {column!r} is {field.kind}"
            )

        def compute(frame: pd.DataFrame) -> tuple[Any, _stats.Noisy, str]:
            if field.kind == "categorical":
                counts = frame[column].value_counts().reindex(labels, fill_value=0).to_numpy()
            else:
                values = np.clip(_values(frame, column), edges[0], edges[-1])
                counts, _ = np.histogram(values, bins=edges)
            noisy, info = _stats.histogram(counts, epsilon)
            return pd.Series(noisy, index=pd.Index(labels, name=column)), info, "laplace"

        return self._statistic(dataset, [column], epsilon, where, "histogram", compute)

    # -- models -----------------------------------------------------------------------
    def fit(
        self,
        estimator: Any,
        dataset: str,
        *,
        features: Sequence[str],
        target: str | None = None,
        name: str | None = None,
    ) -> Any:
        """Fit a diffprivlib estimator on ``dataset``; see :func:`privml.dp._fit.fit`."""
        from ._fit import fit

        with self._gate.request("dp.fit", dataset):
            return fit(self._gate, estimator, dataset, features=features, target=target, name=name)

    # -- deep learning (DP-SGD through Opacus) ------------------------------------------
    def private_training(
        self,
        dataset: str,
        *,
        features: Sequence[str],
        target: str,
        module: Any,
        optimizer: Any,
        batch_size: int,
        epochs: int,
        max_grad_norm: float,
        target_epsilon: float | None = None,
        noise_multiplier: float | None = None,
        criterion: Any = None,
        grad_sample_mode: str = "ghost",
        name: str | None = None,
        fix_module: bool = False,
    ) -> AbstractContextManager[TrainingRun]:
        """Train your PyTorch module with DP-SGD in your own loop: reserved, guarded, settled.

        A context manager yielding a :class:`~privml.dp.torch.TrainingRun`
        whose ``model``, ``optimizer``, ``data_loader`` and ``criterion`` take
        the place of yours. On entry the planned run (``epochs ×
        len(data_loader)`` steps) is reserved in the ledger, or
        :class:`~privml.BudgetExceededError` is raised and nothing trains. Each
        step must consume the one batch drawn for it; a batch past the
        reservation raises ``BudgetExceededError`` before it is drawn. On exit
        (normal, ``break``, or an exception) the reservation is settled on the
        batches drawn (stepped or not), and after a normal exit the model is registered in
        ``vault.models`` as ``name`` with its (ε, δ).

        Why it is private: Poisson-sampled batches (each row with probability
        q = batch_size / N), each sample's whole gradient clipped to
        ``max_grad_norm``, Gaussian noise of standard deviation
        σ·``max_grad_norm`` on the sum: every step is the Poisson-sampled
        Gaussian mechanism, composed over the steps released, which is the
        event the ledger charges. It covers the model's parameters; what your
        loop does with the batches themselves (printing losses, say) is yours.

        Parameters
        ----------
        dataset : str
            The dataset; ``features`` and ``target`` need ``dp_training``.
        features : sequence of str
            Numeric features are scaled into [0, 1] by their declared bounds
            (clipped), categoricals one-hot encoded by their declared categories.
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
            privml's one-backward book-keeping for Linear/Embedding stacks.
        name : str, optional
            The name to register the model under (default ``"<dataset>-dpsgd"``).
        fix_module : bool
            Let Opacus's ``ModuleValidator.fix`` replace unsupported layers, in
            a copy (``run.model`` then trains the copy, not ``module``).

        Examples
        --------
        >>> import torch
        >>> vault = getfixture("dp_vault")
        >>> dp = vault.session("ana", purpose="studies").dp
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Linear(1, 2)
        >>> with dp.private_training(
        ...     "patients", features=["age"], target="sex", module=net,
        ...     optimizer=torch.optim.SGD(net.parameters(), lr=0.5),
        ...     batch_size=2, epochs=1, max_grad_norm=1.0, noise_multiplier=8.0,
        ... ) as run:
        ...     for X, y in run.data_loader:
        ...         run.optimizer.zero_grad()
        ...         run.criterion(run.model(X), y).backward()
        ...         run.optimizer.step()
        >>> run.steps_taken, round(run.epsilon, 3), run.charge.status
        (2, 0.38, 'committed')
        >>> vault.models.info("patients-dpsgd").epsilon == run.epsilon
        True
        """
        from .torch import private_training

        return private_training(
            self._gate,
            dataset,
            features=features,
            target=target,
            module=module,
            optimizer=optimizer,
            batch_size=batch_size,
            epochs=epochs,
            max_grad_norm=max_grad_norm,
            target_epsilon=target_epsilon,
            noise_multiplier=noise_multiplier,
            criterion=criterion,
            grad_sample_mode=grad_sample_mode,
            name=name,
            fix_module=fix_module,
        )

    def train(
        self,
        dataset: str,
        *,
        features: Sequence[str],
        target: str,
        module: Any,
        optimizer: Any,
        batch_size: int,
        epochs: int,
        max_grad_norm: float,
        target_epsilon: float | None = None,
        noise_multiplier: float | None = None,
        criterion: Any = None,
        grad_sample_mode: str = "ghost",
        name: str | None = None,
        fix_module: bool = False,
        progress: bool = False,
    ) -> TrainResult:
        """Train with DP-SGD in a standard loop; return the registered model and a history.

        The loop is :meth:`private_training`'s, written out (zero_grad,
        forward, loss, backward, step over every epoch), with the same
        parameters, plus ``progress=True`` for a tqdm progress bar. The
        history has one row per epoch: mean training loss and the ledger's ε
        so far. The loss is computed on the private batches and is not itself
        protected by DP; the model is.

        Returns
        -------
        TrainResult
            ``(model, history)``: a :class:`~privml.dp.torch.TorchModel`
            (``predict`` takes raw feature values) and a DataFrame.

        Examples
        --------
        >>> import torch
        >>> vault = getfixture("dp_vault")
        >>> dp = vault.session("ana", purpose="studies").dp
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Linear(1, 2)
        >>> model, history = dp.train(
        ...     "patients", features=["age"], target="sex", module=net,
        ...     optimizer=torch.optim.SGD(net.parameters(), lr=0.5), batch_size=2,
        ...     epochs=2, max_grad_norm=1.0, target_epsilon=0.9, grad_sample_mode="bk",
        ... )
        >>> history[["epoch", "steps"]].values.tolist(), history.attrs["binding"]
        ([[1, 2], [2, 4]], 'budget')
        >>> float(history["epsilon"].iloc[-1].round(2))  # the run's own (PLD) ε
        0.8
        >>> model.predict(vault.session("analyst", purpose="research").read("patients")).shape
        (4,)
        """
        from .torch import train

        return train(
            self._gate,
            dataset,
            features=features,
            target=target,
            module=module,
            optimizer=optimizer,
            batch_size=batch_size,
            epochs=epochs,
            max_grad_norm=max_grad_norm,
            target_epsilon=target_epsilon,
            noise_multiplier=noise_multiplier,
            criterion=criterion,
            grad_sample_mode=grad_sample_mode,
            name=name,
            fix_module=fix_module,
            progress=progress,
        )

    # -- plumbing ---------------------------------------------------------------------
    def _numeric(
        self,
        dataset: str,
        column: str,
        epsilon: float,
        where: Where | None,
        what: str,
        mechanism: Callable[[np.ndarray, tuple[float, float], float], _stats.Noisy],
        name: str,
    ) -> DPResult:
        """A statistic of one bounded numeric column: clip, add noise, release."""

        def compute(frame: pd.DataFrame) -> tuple[Any, _stats.Noisy, str]:
            noisy = mechanism(_values(frame, column), self._bounds(dataset, column), epsilon)
            return noisy.value, noisy, name

        return self._statistic(dataset, [column], epsilon, where, what, compute)

    def _field(self, dataset: str, column: str) -> Any:
        schema = self._gate.schema(dataset)
        if column not in schema:
            raise ConfigurationError(f"dataset {dataset!r} has no column {column!r}")
        return schema[column]

    def _bounds(self, dataset: str, column: str) -> tuple[float, float]:
        field = self._field(dataset, column)
        if field.kind not in _NUMERIC or field.bounds is None:
            raise ConfigurationError(
                f"{column!r} is {field.kind}; this statistic needs a "
                "numeric column with declared bounds"
            )
        return field.bounds  # type: ignore[no-any-return]

    def _statistic(
        self,
        dataset: str,
        columns: list[str],
        epsilon: float,
        where: Where | None,
        what: str,
        compute: Callable[[pd.DataFrame], tuple[Any, _stats.Noisy | None, str]],
        *,
        library: str = "privml",
    ) -> DPResult:
        for column in columns:
            if what not in ("histogram",):
                self._bounds(dataset, column)
        require("diffprivlib", feature=f"session.dp.{what}")
        event = (
            PrivacyEvent.generic(
                epsilon=epsilon, delta=0.0, library=library, library_version=_version(library)
            )
            if library != "privml"
            else PrivacyEvent.laplace(epsilon=epsilon)
        )
        released = release(
            self._gate,
            dataset,
            columns,
            needed="dp_aggregate",
            event=event,
            action=f"dp.{what}",
            where=where,
        )
        frame, request_id = released.frame, released.request_id
        value, noisy, mechanism = compute(frame)
        return DPResult(
            value=value,
            epsilon=epsilon,
            delta=0.0,
            mechanism=mechanism,
            noise_scale=noisy.noise_scale if noisy else None,
            interval=noisy.interval if noisy else None,
            request_id=request_id,
        )


def _values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column's non-null values as floats (nulls contribute nothing)."""
    values = np.asarray(frame[column].to_numpy(dtype=float, na_value=np.nan), dtype=float)
    kept: np.ndarray = values[~np.isnan(values)]
    return kept


def _version(library: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(library)
    except Exception:
        return None


#: The most bins a histogram may have: each is a noisy count, and memory stays small.
MAX_BINS = 10_000


def _edges(bins: Any, lo: float, hi: float) -> np.ndarray:
    """Bin edges over the declared bounds: ``bins`` equal bins (10 by default) or given edges.

    Refused before any charge: a count that is not a whole number from 1 to
    :data:`MAX_BINS` (``True`` and ``0`` included), or edges that are not finite and
    strictly increasing, or more than ``MAX_BINS + 1`` of them.
    """
    if bins is None:
        return np.linspace(lo, hi, 11)
    if isinstance(bins, int | np.integer) and not isinstance(bins, bool | np.bool_):
        if not 1 <= int(bins) <= MAX_BINS:
            raise ConfigurationError(f"bins= takes a number of bins from 1 to {MAX_BINS}")
        return np.linspace(lo, hi, int(bins) + 1)
    if isinstance(bins, str | bytes | bool | float) or not isinstance(bins, Sequence | np.ndarray):
        raise ConfigurationError(
            f"bins= takes a number of bins (1 to {MAX_BINS}) or a list of bin edges"
        )
    if not 2 <= len(bins) <= MAX_BINS + 1:
        raise ConfigurationError(f"bins= takes from 2 to {MAX_BINS + 1} bin edges")
    try:
        edges = np.asarray(bins, dtype=float)
    except (TypeError, ValueError):
        raise ConfigurationError("bins= edges must be numbers") from None
    if edges.ndim != 1 or not np.isfinite(edges).all() or not (np.diff(edges) > 0).all():
        raise ConfigurationError("bins= edges must be finite and strictly increasing")
    return edges
