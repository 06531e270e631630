"""``session.dp.groupby``: DP statistics per group, one charge per query.

A query (``count``, ``sum``, ``mean``, ``var``, ``std``, ``quantile``) runs in
the order every privml release runs (:func:`privml.dp._release.release_stream`):
the policy allows the by-columns and the statistic's column, the schema checks
them and fixes the keys and the query's whole event, the ledger is charged,
and only then are the released rows read, as chunks in memory bounded by the
vault's setting (one chunk when the version fits it), each with its rows'
people as opaque codes, every row of one person in one chunk. Chunk by chunk
(:class:`~privml.dp._group_fold.GroupFold`):

1. each row gets its group (:mod:`privml.dp._group_keys`): public keys from the
   schema, or the data's keys, gathered to be selected privately;
2. on a person-level dataset each person keeps their rows in at most
   ``max_groups_per_unit`` groups (a keyed random choice of (person, key) pairs, fixed
   per release; the door already kept at most ``k = max_rows_per_unit`` rows of each
   person);
3. private keys: the distinct people per key are counted;
4. per-group partials are accumulated (:class:`~privml.dp._partials.Partials`).

Then, once every chunk is read, private keys go through DP partition selection
on the number of distinct people per key (OpenDP's Laplace threshold, ε/2 and
the caller's δ; see :func:`privml.dp._opendp.threshold`), unselected keys are
dropped, and the partials are noised once (:mod:`privml.dp._group_noise`) with
the rest of ε. A count asked with ``select_on="rows"`` needs no second step: one
Laplace threshold on the rows per key (L0 ``max_groups_per_unit``, L1 and L∞ ``k``)
spends the whole (ε, δ), and the noisy counts that pass are the answer, as in
OpenDP's own grouped counts. The partials are exactly those of the whole frame,
however it was chunked.

Private keys are held in memory until selection, at most
:data:`~privml.dp._group_keys.MAX_CANDIDATE_KEYS` distinct candidate keys
(a quantile, which keeps a histogram per key: ``4,000,000 / QUANTILE_BINS``). How
many there are is only known while reading, after the charge: a query that finds
more stops with :class:`~privml.exceptions.ConfigurationError`, releases nothing,
and its charge stays spent. That refusal tells the caller one fact not covered by
ε: that the admitted rows hold more distinct keys than the limit.

The event charged: public keys, ``PrivacyEvent.laplace(epsilon=ε)`` (pure, the
quantile ``generic(ε, 0)``); private keys, ``generic(ε, δ)`` (selection at ε/2 and δ,
then the statistic at ε/2 on the selected groups, sequential composition; a count with
``select_on="rows"``: one threshold mechanism).
Which keys were suppressed, and how many, is never released.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._optional import require
from ..accounting._params import EPSILON_RANGE, in_range
from ..accounting._params import delta as check_delta
from ..accounting.events import PrivacyEvent
from ..exceptions import ConfigurationError
from . import _group_keys, _group_noise, _noisy, _opendp
from ._group_fold import GroupFold
from ._release import release_stream
from ._statistics import _bounds, _field

if TYPE_CHECKING:
    from .._gate import Gate, Where
    from ..accounting._unit import PrivacyUnit
    from ..schema import Schema

__all__ = ["MAX_BY", "QUANTILE_BINS", "DPGroupBy"]

#: The most by-columns of one group-by.
MAX_BY = 8
#: The resolution of a group's quantile: equal bins over the declared bounds.
QUANTILE_BINS = 256
#: The share of ε spent on partition selection when keys are private.
SELECTION_SHARE = 0.5
#: The most histogram cells (groups × bins) of one quantile query.
_QUANTILE_CELLS = 4_000_000
_KEYS = ("auto", "public", "private")


@dataclass
class _Plan:
    """What the authorized schema decided of one query (filled before the charge)."""

    domains: list[list[Any]] | None = None
    bounds: tuple[float, float] | None = None
    threshold: _opendp.Threshold | None = None
    #: A count on private keys: one threshold mechanism on the rows per key, whose noisy
    #: counts above the threshold are the answer (the whole ε and δ spent once).
    counts: _opendp.Threshold | None = None
    select_on: str = "people"


class DPGroupBy:
    """DP statistics of one dataset per group of ``by``; build it with ``session.dp.groupby``.

    Each statistic is one release, charged once for all its groups, and returns a
    DataFrame: the by-columns, then ``value``, ``noise_scale`` (the Laplace scale, or
    an estimate of the noise's standard deviation for ratios), ``lower`` and
    ``upper`` (a 95% interval of the noiseless clipped value given the noise, NaN
    for quantiles). ``attrs`` records ``epsilon``, ``delta``, ``mechanism``,
    ``keys``, ``privacy_unit``, ``max_rows_per_unit``, ``max_groups_per_unit`` and
    ``request_id``.
    """

    def __init__(
        self,
        gate: Gate,
        dataset: str,
        *,
        by: str | Sequence[str],
        where: Where | None,
        keys: str,
        max_groups_per_unit: int | None,
    ) -> None:
        self._gate = gate
        self._dataset = dataset
        self._by = _check_by(by)
        self._where = where
        if keys not in _KEYS:
            raise ConfigurationError(f"keys= takes one of {list(_KEYS)}, got {keys!r}")
        self._keys = keys
        if max_groups_per_unit is not None and (
            isinstance(max_groups_per_unit, bool)
            or not isinstance(max_groups_per_unit, int)
            or max_groups_per_unit < 1
        ):
            raise ConfigurationError(
                "max_groups_per_unit= takes a whole number of groups, at least 1"
            )
        self._max_groups = max_groups_per_unit

    def __repr__(self) -> str:
        return f"DPGroupBy({self._dataset!r}, by={self._by}, keys={self._keys!r})"

    def count(
        self, *, epsilon: float, delta: float | None = None, select_on: str = "people"
    ) -> pd.DataFrame:
        """Rows per group, with Laplace noise of scale k/ε on every cell.

        ``select_on`` matters for private keys only: ``"people"`` (default) selects
        keys on their distinct people at ε/2 (a threshold near 1 + (g/ε′)·ln(g/2δ)
        people, whatever the rows per person) and counts rows on the selected keys
        with the other ε/2; ``"rows"`` spends the whole ε once, on one threshold over
        the rows per key whose passing noisy counts are the answer (OpenDP's grouped
        count): better when people hold many rows of a key, worse when they hold one
        (its threshold is in rows, near k + (k/ε)·ln(g/2δ)).
        """
        if select_on not in ("people", "rows"):
            raise ConfigurationError(f"select_on takes 'people' or 'rows', got {select_on!r}")
        return self._run("count", None, epsilon, delta, select_on=select_on)

    def sum(self, column: str, *, epsilon: float, delta: float | None = None) -> pd.DataFrame:
        """The clipped sum of ``column`` per group."""
        return self._run("sum", column, epsilon, delta)

    def mean(self, column: str, *, epsilon: float, delta: float | None = None) -> pd.DataFrame:
        """The clipped mean of ``column`` per group (a noisy sum over a noisy count)."""
        return self._run("mean", column, epsilon, delta)

    def var(self, column: str, *, epsilon: float, delta: float | None = None) -> pd.DataFrame:
        """The clipped variance of ``column`` per group."""
        return self._run("var", column, epsilon, delta)

    def std(self, column: str, *, epsilon: float, delta: float | None = None) -> pd.DataFrame:
        """The square root of :meth:`var` per group (post-processing)."""
        return self._run("std", column, epsilon, delta)

    def quantile(
        self, column: str, q: float, *, epsilon: float, delta: float | None = None
    ) -> pd.DataFrame:
        """The ``q``-quantile of ``column`` per group (exponential mechanism, bin edges)."""
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 1:
            raise ConfigurationError(f"q must be a number in [0, 1], got {q!r}")
        return self._run("quantile", column, epsilon, delta, float(q))

    # -- one query -----------------------------------------------------------------------
    def _run(
        self,
        what: str,
        column: str | None,
        epsilon: float,
        delta: float | None,
        q: float = 0.5,
        *,
        select_on: str = "people",
    ) -> pd.DataFrame:
        action = f"dp.groupby.{what}"
        gate = self._gate
        with gate.request(action, self._dataset, where=self._where):
            require("diffprivlib", feature=f"session.dp.groupby(...).{what}")
            require("opendp", feature=f"session.dp.groupby(...).{what}")
            eps = in_range("epsilon", epsilon, EPSILON_RANGE)
            if column is not None and column in self._by:
                raise ConfigurationError(
                    f"{column!r} is a by-column; a statistic's column is another column"
                )
            unit = gate.privacy_unit(self._dataset)
            groups = self._groups_per_unit(unit)
            plan = _Plan(select_on=select_on)
            columns = [*self._by, *([column] if column else [])]
            streamed = release_stream(
                gate,
                self._dataset,
                columns,
                needed="dp_aggregate",
                event=lambda s: self._event(s, plan, what, column, eps, delta, unit, groups),
                action=action,
                where=self._where,
                units=True,
            )
            assert streamed.coded is not None
            stat_eps = eps if plan.threshold is None else eps * (1 - SELECTION_SHARE)
            selected = plan.threshold is not None or plan.counts is not None
            bound = not unit.is_row and (groups < unit.max_rows or selected)
            fold = GroupFold(
                self._by,
                domains=plan.domains,
                value=column,
                bounds=plan.bounds,
                bins=QUANTILE_BINS if what == "quantile" else 0,
                max_groups=groups if bound else None,
                people=plan.threshold is not None,
                key=_group_keys.choice_key(streamed.request_id),
                limit=_candidate_limit(what),
            )
            for chunk, people in streamed.coded:
                fold.update(chunk, people)
            if plan.counts is not None:
                keys, out = _threshold_counts(fold, plan.counts)
                mechanism = "laplace threshold on the rows per key (OpenDP)"
            else:
                keys, partials = fold.finish(plan.threshold)
                cells, mechanism = _group_noise.STATISTICS[what]
                out = cells(partials, stat_eps, unit.max_rows, q)
        result = keys.assign(
            value=out.value, noise_scale=out.noise_scale, lower=out.lower, upper=out.upper
        )
        chosen = plan.threshold or plan.counts
        if chosen is not None:
            result = result.sort_values(self._by, ignore_index=True)
        result.attrs.update(
            epsilon=eps,
            delta=0.0 if chosen is None else float(delta or 0.0),
            mechanism=mechanism,
            statistic=what,
            keys=_keys_text(chosen),
            privacy_unit=unit.name,
            max_rows_per_unit=unit.max_rows,
            max_groups_per_unit=groups,
            request_id=streamed.request_id,
        )
        return result

    def _groups_per_unit(self, unit: PrivacyUnit) -> int:
        if self._max_groups is not None and unit.is_row:
            raise ConfigurationError(
                f"max_groups_per_unit= applies to a person-level dataset; {self._dataset!r} "
                "protects single rows (each row is in one group): leave it out"
            )
        return min(self._max_groups or unit.max_rows, unit.max_rows)

    def _event(
        self,
        schema: Schema,
        plan: _Plan,
        what: str,
        column: str | None,
        epsilon: float,
        delta: float | None,
        unit: PrivacyUnit,
        groups: int,
    ) -> PrivacyEvent:
        """Check the query against the authorized schema, fix its keys, make its whole event."""
        for name in self._by:
            _field(schema, self._dataset, name)
            if name == unit.column:
                raise ConfigurationError(
                    f"{name!r} is the privacy unit: each of its keys is one person, and no "
                    "group of one person is ever released; group by another column"
                )
        if column is not None:
            plan.bounds = _bounds(schema, self._dataset, column)
        domains = [_group_keys.domain(schema[name]) for name in self._by]
        undeclared = [n for n, d in zip(self._by, domains, strict=True) if d is None]
        if self._keys == "public" and undeclared:
            raise ConfigurationError(
                f"keys='public' needs a declared domain for every by-column; {undeclared} "
                "have none (categories, or integer bounds spanning at most "
                f"{_group_keys.MAX_INTEGER_DOMAIN} values): use keys='private'"
            )
        private = self._keys == "private" or bool(undeclared)
        k = unit.max_rows
        reported = _group_noise.reported_epsilon(
            what, plan.bounds, epsilon * (1 - SELECTION_SHARE) if private else epsilon, k
        )
        if not private:
            plan.domains = [d for d in domains if d is not None]
            size = len(_group_keys.public_keys(self._by, plan.domains))
            if what == "quantile" and size * QUANTILE_BINS > _QUANTILE_CELLS:
                raise ConfigurationError(
                    f"a quantile per group answers at most {_QUANTILE_CELLS // QUANTILE_BINS} "
                    f"groups; grouping by {self._by} makes {size}: group by fewer columns"
                )
            if delta not in (None, 0, 0.0):
                raise ConfigurationError(
                    "delta= is for keys chosen by partition selection; these keys are public "
                    "(declared in the schema) and the query is pure ε-DP: leave delta out"
                )
            if what == "quantile":
                return PrivacyEvent.generic(
                    epsilon=epsilon,
                    library="diffprivlib",
                    library_version=_version("diffprivlib"),
                    reported_epsilon=reported,
                )
            return PrivacyEvent.laplace(
                epsilon=epsilon,
                library="opendp",
                library_version=_opendp.version(),
                reported_epsilon=reported,
            )
        if delta is None or delta == 0:
            raise ConfigurationError(
                f"the keys of {undeclared or self._by} come from DP partition selection, which "
                "needs delta= (the chance a key held by few people is released; e.g. 1e-6, "
                "well below 1 / the number of people)"
            )
        dlt = check_delta("delta", delta)
        if what == "count" and plan.select_on == "rows":  # the passing noisy counts answer
            plan.counts = _opendp.threshold(
                epsilon=epsilon, delta=dlt, keys_per_unit=groups, rows_per_key=k
            )
            return PrivacyEvent.generic(
                epsilon=epsilon,
                delta=dlt,
                library="opendp",
                library_version=_opendp.version(),
                reported_epsilon=plan.counts.epsilon,
            )
        plan.threshold = _opendp.threshold(
            epsilon=epsilon * SELECTION_SHARE, delta=dlt, keys_per_unit=groups
        )
        return PrivacyEvent.generic(
            epsilon=epsilon,
            delta=dlt,
            library="opendp",
            library_version=_opendp.version(),
            reported_epsilon=plan.threshold.epsilon + reported,
        )


def _check_by(by: Any) -> list[str]:
    names = [by] if isinstance(by, str) else by
    if (
        not isinstance(names, Sequence)
        or isinstance(names, bytes)
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise ConfigurationError("by= takes a column name or a non-empty list of column names")
    if len(names) > MAX_BY or len(set(names)) != len(names):
        raise ConfigurationError(f"by= takes at most {MAX_BY} distinct column names")
    return list(names)


def _candidate_limit(what: str) -> int:
    """The most distinct candidate keys a query gathers before selection: a quantile holds a
    histogram of :data:`QUANTILE_BINS` cells for each, so it holds fewer."""
    limit = _group_keys.MAX_CANDIDATE_KEYS
    return min(limit, _QUANTILE_CELLS // QUANTILE_BINS) if what == "quantile" else limit


def _threshold_counts(
    fold: GroupFold, counts: _opendp.Threshold
) -> tuple[pd.DataFrame, _group_noise.Cells]:
    """The keys whose noisy row count passes the threshold, with those noisy counts."""
    keys, partials = fold.finish(None)  # every candidate key, each held by some row
    rows = partials.count
    released = counts.release({int(i): int(rows[i]) for i in np.flatnonzero(rows > 0)})
    picked = np.asarray(sorted(released), dtype=np.int64)
    value = np.asarray([released[int(i)] for i in picked], dtype=float)
    half = counts.scale * _noisy.Z95
    n = len(picked)
    cells = _group_noise.Cells(value, np.full(n, counts.scale), value - half, value + half)
    return keys.iloc[picked].reset_index(drop=True), cells


def _keys_text(threshold: _opendp.Threshold | None) -> str:
    if threshold is None:
        return "public (declared in the schema)"
    return f"partition selection (laplace threshold {threshold.threshold}, OpenDP)"


def _version(library: str) -> str | None:
    from importlib.metadata import version

    try:
        return version(library)
    except Exception:
        return None
