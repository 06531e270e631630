"""The DP statistics of ``session.dp``: columns checked, the release charged, then the noise.

Each function here has the policy allow its columns, checks them against the
authorized schema (bounds and kinds come from the schema, never from the data),
charges the statistic's event through :func:`~privml.dp._release.release` and
only then computes the noisy value from the released rows with
:mod:`privml.dp._noisy`. Why each statistic
is private is written beside its mechanism in :mod:`privml.dp._noisy`.

Privacy unit: on a person-level dataset the door hands over at most ``k =
max_rows_per_unit`` rows per person, and each mechanism here runs at ε/k (its
noise calibrated to a person's k rows, group privacy, exact for pure ε-DP) while
the ledger is charged the person-level ε the caller asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._optional import require
from ..accounting.events import PrivacyEvent
from ..exceptions import ConfigurationError
from . import _chunked, _noisy
from ._release import release, release_stream
from ._result import DPResult

if TYPE_CHECKING:
    from .._gate import Gate, Where
    from ..accounting._unit import PrivacyUnit
    from ..schema import Field, Schema

__all__ = ["MAX_BINS", "NUMERIC", "count", "histogram", "numeric", "quantile", "std"]

#: The most bins a histogram may have: each is a noisy count, and memory stays small.
MAX_BINS = 10_000

_NUMERIC = ("numeric", "integer")

#: What a statistic computes from the released rows at a row-level ε (the person-level ε
#: divided by the rows one person may contribute): its value, its noise, its mechanism.
Compute = Callable[[pd.DataFrame, float], tuple[Any, "_noisy.Noisy | None", str]]
#: How a statistic folds the released rows (a fresh aggregate with ``update(chunk)``) and
#: what it makes of the exact aggregate at a row-level ε: value, noise, mechanism.
Aggregation = tuple[Callable[[], Any], Callable[[Any, float], tuple[Any, "_noisy.Noisy", str]]]
#: The statistics of one clipped numeric column: ``noisy(values, bounds, epsilon)`` and the
#: mechanism's description.
NUMERIC: dict[str, tuple[Callable[..., _noisy.Noisy], str]] = {
    "sum": (_noisy.sum_, "laplace"),
    "mean": (_noisy.mean, "laplace (sum and count, ε/2 each)"),
    "var": (_noisy.var, "laplace (sums of x, x² and count, ε/3 each)"),
}


def count(gate: Gate, dataset: str, epsilon: float, where: Where | None) -> DPResult:
    """The number of rows released, with Laplace noise of scale 1/ε."""

    def prepare(schema: Schema) -> Aggregation:
        def finish(total: Any, epsilon: float) -> tuple[Any, _noisy.Noisy, str]:
            noisy = _noisy.count(total.n, epsilon)
            return noisy.value, noisy, "laplace"

        return _chunked.Count, finish

    return _aggregated(gate, dataset, [], epsilon, where, "count", prepare)


def numeric(
    gate: Gate, dataset: str, column: str, epsilon: float, where: Where | None, what: str
) -> DPResult:
    """The statistic ``what`` (a key of :data:`NUMERIC`) of one bounded numeric column."""
    name = NUMERIC[what][1]

    def prepare(schema: Schema) -> Aggregation:
        bounds = _bounds(schema, dataset, column)

        def finish(m: Any, epsilon: float) -> tuple[Any, _noisy.Noisy, str]:
            noisy = _from_moments(what, m, epsilon)
            return noisy.value, noisy, name

        return (lambda: _chunked.Moments(column, bounds)), finish

    return _aggregated(gate, dataset, [column], epsilon, where, what, prepare)


def std(gate: Gate, dataset: str, column: str, epsilon: float, where: Where | None) -> DPResult:
    """The square root of the noisy variance (post-processing), its interval mapped alike."""

    def prepare(schema: Schema) -> Aggregation:
        bounds = _bounds(schema, dataset, column)

        def finish(m: Any, epsilon: float) -> tuple[Any, _noisy.Noisy, str]:
            noisy = _from_moments("var", m, epsilon)
            root = float(np.sqrt(noisy.value))
            low = float(np.sqrt(max(noisy.value + noisy.interval[0], 0.0))) - root
            high = float(np.sqrt(max(noisy.value + noisy.interval[1], 0.0))) - root
            scaled = _noisy.Noisy(root, noisy.noise_scale / max(2 * root, 1e-12), (low, high))
            return root, scaled, NUMERIC["var"][1]

        return (lambda: _chunked.Moments(column, bounds)), finish

    return _aggregated(gate, dataset, [column], epsilon, where, "std", prepare)


def quantile(gate: Gate, dataset: str, column: str, q: float, epsilon: float) -> DPResult:
    """The ``q``-quantile by diffprivlib's exponential mechanism over the declared bounds."""
    if not 0 <= q <= 1:
        raise ConfigurationError(f"q must lie in [0, 1], got {q!r}")

    def prepare(schema: Schema) -> Compute:
        bounds = _bounds(schema, dataset, column)

        def compute(frame: pd.DataFrame, epsilon: float) -> tuple[Any, _noisy.Noisy | None, str]:
            value = _noisy.quantile(_values(frame, column), q, bounds, epsilon)
            return value, None, "exponential (diffprivlib)"

        return compute

    return _statistic(
        gate, dataset, [column], epsilon, None, "quantile", prepare, library="diffprivlib"
    )


def histogram(
    gate: Gate,
    dataset: str,
    column: str,
    epsilon: float,
    bins: int | Sequence[float] | None,
    where: Where | None,
) -> DPResult:
    """Noisy counts per declared category, or per bin of the declared bounds."""

    def prepare(schema: Schema) -> Aggregation:
        field = _field(schema, dataset, column)
        edges: np.ndarray | None = None
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

        def finish(h: Any, epsilon: float) -> tuple[Any, _noisy.Noisy, str]:
            noisy, info = _noisy.histogram(h.counts, epsilon)
            return pd.Series(noisy, index=pd.Index(labels, name=column)), info, "laplace"

        if edges is not None:
            return (lambda: _chunked.Histogram(column, edges=edges)), finish
        return (lambda: _chunked.Histogram(column, labels=labels)), finish

    return _aggregated(gate, dataset, [column], epsilon, where, "histogram", prepare)


def _aggregated(
    gate: Gate,
    dataset: str,
    columns: list[str],
    epsilon: float,
    where: Where | None,
    what: str,
    prepare: Callable[[Schema], Aggregation],
) -> DPResult:
    """As :func:`_statistic`, but the released rows are folded chunk by chunk into an exact
    aggregate (:mod:`privml.dp._chunked`), in memory bounded by the vault's setting, and
    noised once, when every chunk has been read (a file found modified midway raises
    before anything is released)."""
    require("diffprivlib", feature=f"session.dp.{what}")
    unit = gate.privacy_unit(dataset)
    prepared: list[Aggregation] = []
    streamed = release_stream(
        gate,
        dataset,
        columns,
        needed="dp_aggregate",
        event=_laplace(epsilon, unit),
        action=f"dp.{what}",
        where=where,
        check=lambda schema: prepared.append(prepare(schema)),
    )
    make, finish = prepared[0]
    aggregate = make()
    for chunk in streamed.chunks:
        aggregate.update(chunk)
    # Group privacy: ε/k-DP for one row changed is ε-DP for k rows (one bounded person) changed.
    value, noisy, mechanism = finish(aggregate, epsilon / unit.max_rows)
    return DPResult(
        value=value,
        epsilon=epsilon,
        delta=0.0,
        mechanism=mechanism,
        noise_scale=noisy.noise_scale,
        interval=noisy.interval,
        request_id=streamed.request_id,
        privacy_unit=unit.name,
        max_rows_per_unit=unit.max_rows,
    )


def _from_moments(what: str, m: _chunked.Moments, epsilon: float) -> _noisy.Noisy:
    """The noisy ``what`` (sum, mean or var) from a column's exact clipped moments."""
    if what == "sum":
        return _noisy.sum_of(m.total, m.bounds, epsilon)
    if what == "mean":
        return _noisy.mean_of(m.shifted, m.n, m.bounds, epsilon)
    return _noisy.var_of(m.shifted, m.squares, m.n, m.bounds, epsilon)


def _statistic(
    gate: Gate,
    dataset: str,
    columns: list[str],
    epsilon: float,
    where: Where | None,
    what: str,
    prepare: Callable[[Schema], Compute],
    *,
    library: str = "privml",
) -> DPResult:
    """Authorize the columns, check them against the schema, charge the event and read (one
    release), then compute. Nothing about a column (its kind, its bounds) is checked before
    the policy allows it, and nothing is charged before it is checked."""
    require("diffprivlib", feature=f"session.dp.{what}")
    unit = gate.privacy_unit(dataset)
    event = (
        PrivacyEvent.generic(
            epsilon=epsilon, delta=0.0, library=library, library_version=_version(library)
        )
        if library != "privml"
        else _laplace(epsilon, unit)
    )
    computes: list[Compute] = []
    released = release(
        gate,
        dataset,
        columns,
        needed="dp_aggregate",
        event=event,
        action=f"dp.{what}",
        where=where,
        check=lambda schema: computes.append(prepare(schema)),
    )
    # Group privacy: ε/k-DP for one row changed is ε-DP for k rows (one bounded person) changed.
    value, noisy, mechanism = computes[0](released.frame, epsilon / unit.max_rows)
    return DPResult(
        value=value,
        epsilon=epsilon,
        delta=0.0,
        mechanism=mechanism,
        noise_scale=noisy.noise_scale if noisy else None,
        interval=noisy.interval if noisy else None,
        request_id=released.request_id,
        privacy_unit=unit.name,
        max_rows_per_unit=unit.max_rows,
    )


def _field(schema: Schema, dataset: str, column: str) -> Field:
    if column not in schema:
        raise ConfigurationError(f"dataset {dataset!r} has no column {column!r}")
    return schema[column]


def _bounds(schema: Schema, dataset: str, column: str) -> tuple[float, float]:
    field = _field(schema, dataset, column)
    if field.kind not in _NUMERIC or field.bounds is None:
        raise ConfigurationError(
            f"{column!r} is {field.kind}; this statistic needs a "
            "numeric column with declared bounds"
        )
    return field.bounds


_values = _chunked.values


def _version(library: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(library)
    except Exception:
        return None


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


def _laplace(epsilon: float, unit: PrivacyUnit) -> PrivacyEvent:
    """The event of a Laplace release at ε for one unit: its noise is calibrated to the unit's
    ``max_rows`` rows (1 for a row), so the ledger records scale k/ε for sensitivity k, in
    units of one row's sensitivity (the event's ε is the same either way)."""
    return PrivacyEvent.laplace(epsilon=epsilon, sensitivity=float(unit.max_rows))
