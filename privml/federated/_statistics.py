"""Distributed DP count, sum and mean over several vaults: noise shares summed under SecAgg+.

Why the joint statistic is private (add/remove one row of any one site; person-level
units as in :mod:`privml.dp._statistics`, at ε/k for k rows per person): the joint count
(or clipped sum) has sensitivity 1 (or max(|lo|, |hi|)) whichever site holds the row. The
Laplace distribution is infinitely divisible: if each of m sites adds
``G₁ − G₂`` with G₁, G₂ ~ Gamma(shape 1/m, scale b), the m shares sum to exactly
Laplace(b) noise. So the sum of the m sites' noisy shares is the Laplace mechanism on
the joint statistic, ε-DP for every site's rows, with b = Δ/ε. Each site charges that
Laplace event (ε) to its own ledger before it reads a row; the mean is a sum (of values
shifted by the bounds' midpoint, sensitivity (hi − lo)/2) and a count at ε/2 each, its
ratio post-processing.

``sites`` is the fewest shares the sum will hold: if more sites contribute, the sum holds
Laplace(b) plus further independent noise (post-processing, still ε-DP); if fewer
survive a round, the sum must not be released (:func:`combine` refuses it).

Who sees what: under SecAgg+ the server sees only the sum of the shares. A site's own
share holds Laplace noise of variance 2b²/m only, so a site's exact statistic is hidden
from the server by the masks and from everyone by the sum's full noise; sites that
collude (c of them) can remove their own shares, leaving noise of the other m − c.
The shares are floating-point samples (NumPy's Gamma over a Philox generator keyed from
the OS); like every floating-point Laplace sampler, they are not hardened against the
least-significant-bit attacks on floating-point noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..vault import Session

__all__ = ["STATISTICS", "StatisticShare", "combine", "laplace_share", "share"]

#: The joint statistics, and how many numbers each site's share holds.
STATISTICS = {"count": 1, "sum": 1, "mean": 2}


@dataclass(frozen=True)
class StatisticShare:
    """One site's noisy share of a joint statistic, charged to its ledger.

    ``values`` are what the site sends (inside SecAgg+): exact local value(s) plus its
    noise share(s). ``noise_scales`` are the Laplace scales b the m shares sum to.
    """

    statistic: str
    values: np.ndarray
    epsilon: float
    noise_scales: tuple[float, ...]
    sites: int
    request_id: str


def laplace_share(scale: float, sites: int, rng: np.random.Generator, size: int = 1) -> np.ndarray:
    """Noise shares of which ``sites`` independent draws sum to Laplace(``scale``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> total = sum(laplace_share(2.0, 4, rng, size=200_000) for _ in range(4))
    >>> round(float(total.var()) / (2 * 2.0**2), 1)  # Laplace(b) has variance 2b²
    1.0
    """
    shape = 1.0 / sites
    return np.asarray(
        rng.gamma(shape, scale, size=size) - rng.gamma(shape, scale, size=size), dtype=np.float64
    )


def share(
    session: Session,
    dataset: str,
    *,
    statistic: str,
    epsilon: float,
    sites: int,
    column: str | None = None,
) -> StatisticShare:
    """This site's noisy share of the joint ``statistic``: charged, then read, then noised.

    Parameters
    ----------
    session : Session
        A session of the site's vault with ``dp_aggregate`` (or more) on ``column``.
    dataset : str
        The site's dataset.
    statistic : {"count", "sum", "mean"}
        The joint statistic.
    epsilon : float
        The ε each site's ledger is charged (the joint release's ε).
    sites : int
        The fewest sites whose shares the released sum will hold (at least 2).
    column : str, optional
        A numeric column with declared bounds (``sum`` and ``mean``).

    Examples
    --------
    >>> vault = getfixture("dp_vault")
    >>> part = share(vault.session("ana", purpose="studies"), "patients",
    ...              statistic="count", epsilon=1.0, sites=3)
    >>> part.values.shape, part.noise_scales, vault.budget("patients").epsilon_spent
    ((1,), (1.0,), 1.0)
    """
    if statistic not in STATISTICS:
        raise ConfigurationError(
            f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}"
        )
    if not isinstance(sites, int) or isinstance(sites, bool) or sites < 2:
        raise ConfigurationError(f"sites must be an integer of at least 2, got {sites!r}")
    if (column is None) != (statistic == "count"):
        raise ConfigurationError("give column= for sum and mean, and no column for count")
    # privml.dp (and scikit-learn with it) is imported here, not with the module: Flower's
    # ClientApp processes import privml.federated for every message and never need it.
    from ..dp import _chunked, _random
    from ..dp._release import release_stream
    from ..dp._statistics import _bounds, _laplace

    gate = session.dp._gate
    unit = gate.privacy_unit(dataset)
    prepared: list[Any] = []

    def check(schema: Any) -> None:
        if column is not None:
            prepared.append(_bounds(schema, dataset, column))

    streamed = release_stream(
        gate,
        dataset,
        [] if column is None else [column],
        needed="dp_aggregate",
        event=_laplace(epsilon, unit),
        action=f"federated.{statistic}",
        check=check,
    )
    row_epsilon = epsilon / unit.max_rows  # group privacy, as session.dp's statistics
    rng = _random.fresh_generator()
    if column is None:
        total = _chunked.Count()
        for chunk in streamed.chunks:
            total.update(chunk)
        exact, scales = [float(total.n)], [1.0 / row_epsilon]
    else:
        lo, hi = prepared[0]
        moments = _chunked.Moments(column, (lo, hi))
        for chunk in streamed.chunks:
            moments.update(chunk)
        if statistic == "sum":
            exact, scales = [moments.total], [max(abs(lo), abs(hi)) / row_epsilon]
        else:
            each = row_epsilon / 2  # the shifted sum and the count, ε/2 each
            exact = [moments.shifted, float(moments.n)]
            scales = [(hi - lo) / 2 / each, 1.0 / each]
    noise = np.concatenate([laplace_share(b, sites, rng) for b in scales])
    return StatisticShare(
        statistic=statistic,
        values=np.asarray(exact, dtype=np.float64) + noise,
        epsilon=float(epsilon),
        noise_scales=tuple(scales),
        sites=sites,
        request_id=streamed.request_id,
    )


def combine(
    statistic: str,
    summed: np.ndarray,
    *,
    contributed: int,
    sites: int,
    bounds: tuple[float, float] | None = None,
) -> float:
    """The joint statistic from the sum of ``contributed`` sites' shares (post-processing).

    Refuses a sum of fewer than ``sites`` shares: it would carry less than the full noise.

    Examples
    --------
    >>> combine("mean", np.array([-30.0, 10.0]), contributed=3, sites=3, bounds=(0.0, 20.0))
    7.0
    """
    if contributed < sites:
        raise ConfigurationError(
            f"only {contributed} of the {sites} sites' shares were summed: the sum carries "
            "less than the full noise and is not released; run again with the sites present"
        )
    if statistic == "mean":
        if bounds is None:
            raise ConfigurationError("the mean needs the column's declared bounds")
        lo, hi = bounds
        return float((lo + hi) / 2 + summed[0] / max(float(summed[1]), 1.0))
    return float(summed[0])
