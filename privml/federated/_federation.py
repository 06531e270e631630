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

__all__ = ["FederatedResult", "run_rounds"]


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
    home = Path(tempfile.mkdtemp(prefix="privml-superlink-"))
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
    with FlowerProcesses(home) as flower:
        flower.superlink(port)
        submit(home, f"127.0.0.1:{port}", config, timeout=timeout)
    return read_result(output, secagg=secagg)


def read_result(output: Path, *, secagg: bool) -> FederatedResult:
    """The result a run wrote to ``output``."""
    with np.load(output / "global.npz", allow_pickle=False) as data:
        weights = [data[f"arr_{i}"] for i in range(len(data.files))]
    lines = (output / "rounds.jsonl").read_text().splitlines()
    return FederatedResult(weights, [json.loads(line) for line in lines], secagg)
