"""The server's side of a run: a SuperLink, privml's app submitted, the rounds' outcome."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from ._deploy import FlowerProcesses, submit
from ._model import ModelSpec

__all__ = ["FederatedResult", "JointStatistic", "run_rounds", "run_statistic"]


@dataclass(frozen=True)
class FederatedResult:
    """The outcome of :func:`run_rounds`: the last global model and each round's tally.

    ``rounds`` holds, per round, the number of sites whose update entered the
    aggregate (``results``: 1 under SecAgg+, the aggregate itself) and the failures
    (sites that dropped out or refused, e.g. for their budget).
    """

    weights: list[np.ndarray]
    rounds: list[dict[str, Any]]
    secagg: bool

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values: rounds, whether SecAgg+ ran, the number of tensors."""
        return {"rounds": self.rounds, "secagg": self.secagg, "tensors": len(self.weights)}


def run_rounds(
    spec: ModelSpec,
    *,
    sites: int,
    rounds: int,
    port: int,
    secagg: bool = True,
    threshold: int | None = None,
    clipping_range: float = 8.0,
    output: Path | None = None,
    timeout: float = 600.0,
    round_timeout: float = 60.0,
) -> FederatedResult:
    """Start a SuperLink on 127.0.0.1:``port``, run ``rounds`` of FedAvg, stop it.

    The ``sites`` SuperNodes connect on their own (``privml federated site``). Under
    SecAgg+ (the default) every site shares its key with all others
    (``num_shares = sites``) and ``threshold`` of them (default: a strict majority,
    at least 2) must survive a round for it to complete.
    """
    if sites < 2 or rounds < 1:
        raise ConfigurationError("a federated run needs at least 2 sites and 1 round")
    threshold = threshold if threshold is not None else max(2, sites // 2 + 1)
    if not 2 <= threshold <= sites:
        raise ConfigurationError(f"threshold must lie in [2, {sites}], got {threshold}")
    output = output if output is not None else Path(tempfile.mkdtemp(prefix="privml-fed-"))
    config = {
        **spec.to_config(),
        "sites": sites,
        "rounds": rounds,
        "secagg": secagg,
        "num_shares": sites,
        "threshold": threshold,
        "clipping_range": clipping_range,
        "timeout": round_timeout,
        "output": str(output),
    }
    _run(config, port=port, timeout=timeout)
    return read_result(output, secagg=secagg)


def _run(config: dict[str, Any], *, port: int, timeout: float) -> None:
    home = Path(tempfile.mkdtemp(prefix="privml-superlink-"))
    with FlowerProcesses(home) as flower:
        flower.superlink(port)
        submit(home, f"127.0.0.1:{port}", config, timeout=timeout)


@dataclass(frozen=True)
class JointStatistic:
    """A joint DP statistic over several vaults (see :mod:`privml.federated._statistics`).

    ``value`` is the released statistic, ``epsilon`` what each site's ledger was
    charged, ``contributed`` the sites whose shares the sum holds.
    """

    statistic: str
    value: float
    epsilon: float
    contributed: int
    sites: int

    def as_dict(self) -> dict[str, Any]:
        """The statistic as JSON-ready values: its value, ε, and the sites that contributed."""
        return {
            "statistic": self.statistic,
            "value": self.value,
            "epsilon": self.epsilon,
            "contributed": self.contributed,
            "sites": self.sites,
        }


def run_statistic(
    statistic: str,
    *,
    epsilon: float,
    sites: int,
    port: int,
    scale: float,
    column: str | None = None,
    bounds: tuple[float, float] | None = None,
    threshold: int | None = None,
    output: Path | None = None,
    timeout: float = 600.0,
    round_timeout: float = 60.0,
) -> JointStatistic:
    """A joint DP ``statistic`` over ``sites`` vaults, their noise shares summed under SecAgg+.

    ``scale`` is a public bound on the size of one site's share (e.g. an upper bound on a
    site's rows for a count): shares are divided by it to fit SecAgg+'s clipping range
    [-8, 8] and the sum is exact to 16·``scale``/2²² per site. Each site charges ε to its
    own ledger; the sum is released only if all ``sites`` shares are in it.
    """
    from ._statistics import STATISTICS, combine

    if statistic not in STATISTICS:
        raise ConfigurationError(f"statistic must be one of {sorted(STATISTICS)}")
    if not scale > 0:
        raise ConfigurationError(f"scale must be positive, got {scale!r}")
    threshold = threshold if threshold is not None else max(2, sites // 2 + 1)
    output = output if output is not None else Path(tempfile.mkdtemp(prefix="privml-fed-"))
    config = {
        **ModelSpec(inputs=1, outputs=1).to_config(),
        "task": "statistic",
        "statistic": statistic,
        "column": column or "",
        "epsilon": float(epsilon),
        "width": STATISTICS[statistic],
        "scale": float(scale),
        "sites": sites,
        "rounds": 1,
        "secagg": True,
        "num_shares": sites,
        "threshold": threshold,
        "clipping_range": 8.0,
        "timeout": round_timeout,
        "output": str(output),
    }
    _run(config, port=port, timeout=timeout)
    result = read_result(output, secagg=True)
    contributed = int(result.rounds[-1]["results"])
    # FedAvg with weight 1 per site: the aggregate is the mean of the scaled shares.
    summed = result.weights[0] * contributed * scale
    value = combine(statistic, summed, contributed=contributed, sites=sites, bounds=bounds)
    return JointStatistic(statistic, value, float(epsilon), contributed, sites)


def read_result(output: Path, *, secagg: bool) -> FederatedResult:
    """The result a run wrote to ``output``."""
    with np.load(output / "global.npz", allow_pickle=False) as data:
        weights = [data[f"arr_{i}"] for i in range(len(data.files))]
    lines = (output / "rounds.jsonl").read_text().splitlines()
    return FederatedResult(weights, [json.loads(line) for line in lines], secagg)
