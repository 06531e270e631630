"""``session.dp``: DP statistics, diffprivlib models and DP-SGD, each release charged first.

:class:`DPSession` is the public face only: each method checks the vault is
open, audits a failure as its action and hands over to the module that does
the work (:mod:`privml.dp._statistics`, :mod:`privml.dp._fit`,
:mod:`privml.dp.torch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _statistics
from ._groupby import DPGroupBy
from ._result import DPResult
from ._training_spec import StandardLoopSpec, TrainingSpec, takes_spec

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .._gate import Gate, Where
    from .torch import TrainingRun, TrainResult

__all__ = ["DPSession"]


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
        with self._gate.request("dp.count", dataset, where=where):
            return _statistics.count(self._gate, dataset, epsilon, where)

    def sum(
        self, dataset: str, column: str, *, epsilon: float, where: Where | None = None
    ) -> DPResult:
        """Sum of ``column`` clipped to its declared bounds, with Laplace noise."""
        with self._gate.request("dp.sum", dataset, where=where):
            return _statistics.numeric(self._gate, dataset, column, epsilon, where, "sum")

    def mean(
        self, dataset: str, column: str, *, epsilon: float, where: Where | None = None
    ) -> DPResult:
        """Mean of ``column`` (clipped): a noisy shifted sum over a noisy count."""
        with self._gate.request("dp.mean", dataset, where=where):
            return _statistics.numeric(self._gate, dataset, column, epsilon, where, "mean")

    def var(
        self, dataset: str, column: str, *, epsilon: float, where: Where | None = None
    ) -> DPResult:
        """Variance of ``column`` (clipped), from noisy sums of x, x² and a count."""
        with self._gate.request("dp.var", dataset, where=where):
            return _statistics.numeric(self._gate, dataset, column, epsilon, where, "var")

    def std(
        self, dataset: str, column: str, *, epsilon: float, where: Where | None = None
    ) -> DPResult:
        """Standard deviation of ``column``: the square root of :meth:`var` (post-processing)."""
        with self._gate.request("dp.std", dataset, where=where):
            return _statistics.std(self._gate, dataset, column, epsilon, where)

    def histogram(
        self,
        dataset: str,
        column: str,
        *,
        epsilon: float,
        bins: int | Sequence[float] | None = None,
        where: Where | None = None,
    ) -> DPResult:
        """Noisy counts per category (from the schema) or per bin of the declared bounds.

        ``bins``: a number of equal bins over the bounds (10 by default, at most
        :data:`~privml.dp._statistics.MAX_BINS`) or the bin edges themselves.
        """
        with self._gate.request("dp.histogram", dataset, where=where):
            return _statistics.histogram(self._gate, dataset, column, epsilon, bins, where)

    def quantile(self, dataset: str, column: str, q: float, *, epsilon: float) -> DPResult:
        """The ``q``-quantile of ``column`` by the exponential mechanism over its bounds."""
        with self._gate.request("dp.quantile", dataset):
            return _statistics.quantile(self._gate, dataset, column, q, epsilon)

    def groupby(
        self,
        dataset: str,
        *,
        by: str | Sequence[str],
        where: Where | None = None,
        keys: str = "auto",
        max_groups_per_unit: int | None = None,
    ) -> DPGroupBy:
        """DP statistics per group of ``by``: ``.count``, ``.sum``, ``.mean``, ``.var``,
        ``.std``, ``.quantile``, each one charge for all its groups, one row per group.

        Keys are public when every by-column declares its domain (a categorical's
        categories, an integer whose bounds span at most 1,000 values): every key of
        the product is answered, empty groups included, at most 100,000. Otherwise
        (``keys="private"``, or a by-column without a declared domain) keys come from
        DP partition selection: a key is released only if a noisy count of the
        distinct people holding it passes a threshold, so a key held by one person is
        released with probability at most δ; such a query needs ``delta=`` and
        spends half of ε on the selection. The threshold grows with the keys one
        person may hold (about ``g·ln(g/2δ)`` at noise scale ``g``), so on a
        person-level dataset set ``max_groups_per_unit`` small (1 for a key
        every person holds once).

        Why it is private: see :mod:`privml.dp._group_noise` (per-cell noise,
        parallel composition across disjoint groups) and
        :func:`privml.dp._opendp.threshold` (partition selection). Privacy unit: on
        a person-level dataset each person contributes at most ``k =
        max_rows_per_unit`` rows (the noise is calibrated to k) in at most
        ``max_groups_per_unit`` groups (a keyed random choice; default k).

        Parameters
        ----------
        dataset : str
            The dataset; the by-columns and the statistic's column need ``dp_aggregate``.
        by : str or list of str
            The columns to group by (at most 8).
        where : list, optional
            Row conditions, as in the other statistics.
        keys : {"auto", "public", "private"}
            Where the keys come from (see above).
        max_groups_per_unit : int, optional
            The most groups one person's rows stay in (person-level datasets only).

        Examples
        --------
        >>> vault = getfixture("dp_vault")
        >>> dp = vault.session("ana", purpose="studies").dp
        >>> counts = dp.groupby("patients", by="sex").count(epsilon=0.5)
        >>> counts["sex"].tolist(), counts.columns.tolist()[1:]
        (['F', 'M'], ['value', 'noise_scale', 'lower', 'upper'])
        >>> counts.attrs["epsilon"], counts.attrs["keys"]
        (0.5, 'public (declared in the schema)')
        """
        self._gate.check_open()
        with self._gate.request("dp.groupby", dataset, where=where):
            return DPGroupBy(
                self._gate,
                dataset,
                by=by,
                where=where,
                keys=keys,
                max_groups_per_unit=max_groups_per_unit,
            )

    # -- models -----------------------------------------------------------------------
    def fit(
        self,
        estimator: Any,
        dataset: str,
        *,
        features: Sequence[str],
        target: str | None = None,
        name: str | None = None,
        holdout: float = 0.0,
    ) -> Any:
        """Fit a diffprivlib estimator on ``dataset``; see :func:`privml.dp._fit.fit`.

        ``holdout=h`` (0 to 0.5, with ``name``) keeps a random share of the rows out of
        training and records which, for ``vault.models.privacy_report``.
        """
        from ._fit import fit

        with self._gate.request("dp.fit", dataset):
            return fit(
                self._gate,
                estimator,
                dataset,
                features=features,
                target=target,
                name=name,
                holdout=holdout,
            )

    # -- deep learning (DP-SGD through Opacus) ------------------------------------------
    @takes_spec(TrainingSpec)
    def private_training(  # noqa: D417  (callers pass the spec's keywords, documented there)
        self, dataset: str, spec: TrainingSpec
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
        **parameters
            The keywords of :class:`~privml.dp.torch.TrainingSpec` (``features``,
            ``target``, ``module``, ``optimizer``, ``batch_size``, ``epochs``,
            ``max_grad_norm``, ``target_epsilon`` or ``noise_multiplier``, ...),
            documented there and checked before any data is read or budget reserved.

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

        return private_training(self._gate, dataset, spec)

    @takes_spec(StandardLoopSpec)
    def train(self, dataset: str, spec: StandardLoopSpec) -> TrainResult:  # noqa: D417
        """Train with DP-SGD in a standard loop; return the registered model and a history.

        The loop is :meth:`private_training`'s, written out (zero_grad,
        forward, loss, backward, step over every epoch), with the same
        parameters, plus ``progress=True`` for a tqdm progress bar. The
        history has one row per epoch: mean training loss and the ledger's ε
        so far. The loss is computed on the private batches and is not itself
        protected by DP; the model is.

        Parameters
        ----------
        dataset : str
            The dataset; ``features`` and ``target`` need ``dp_training``.
        **parameters
            The keywords of :class:`~privml.dp.torch.TrainingSpec`, documented
            there, and ``progress`` (bool, default False).

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

        return train(self._gate, dataset, spec, progress=spec.progress)
