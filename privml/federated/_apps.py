"""The Flower apps: the server's FedAvg under SecAgg+, and each site's ClientApp.

Flower's deployment engine loads these by reference (``privml.federated._apps:server_app``
and ``...:client_app``) in processes it starts itself: the ServerApp process beside the
SuperLink, one ClientApp process per message beside each site's SuperNode. A ClientApp
process holds no data and no key: it forwards the round to its site process over the
local link (:mod:`privml.federated._link`) and hands the site's weights to Flower's
``secaggplus_mod``, which masks them before anything leaves the site.

Importing this module imports flwr (``pip install 'privml[federated]'``).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require

# flwr's own imports warn of click and typer deprecations that are not ours to fix; the
# filter is scoped to these imports and leaves the caller's warning filters as they were.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    require("flwr", feature="privml.federated", extra="federated")
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import (
        Context,
        FitRes,
        Parameters,
        Scalar,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from . import _link
from ._model import ModelSpec

__all__ = ["client_app", "plain_client_app", "server_app"]

#: The node-config key naming the file where a site process wrote its link address.
LINK_KEY = "privml-link"


#: What a statistic's request carries from the run config to each site.
_SHARE_KEYS = ("statistic", "epsilon", "sites", "column")


class _SiteClient(NumPyClient):  # type: ignore[misc,unused-ignore]
    """Forwards a round to the site process; every site weighs 1 (an unweighted FedAvg)."""

    def __init__(self, address: _link.LinkAddress) -> None:
        self.address = address

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Scalar]
    ) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        if config.get("task") == "statistic":
            request: dict[str, Any] = {"op": "share", **{k: config[k] for k in _SHARE_KEYS}}
            header, arrays = _link.call(self.address, request)
            if "error" not in header:  # scaled into SecAgg+'s clipping range (public scale)
                arrays = [arrays[0] / float(config["scale"])]
        else:
            request = {
                "op": "fit",
                "round": int(config.get("round", 0)),
                "rounds": int(config.get("rounds", 0)),  # the planned rounds, reserved at once
            }
            header, arrays = _link.call(self.address, request, parameters)
        if "error" in header:  # the site stopped (e.g. its budget): the server sees why
            raise RuntimeError(f"site refused the round: {header['error']}")
        return arrays, 1, {}


def _client_fn(context: Context) -> Any:
    address = _link.LinkAddress.read(str(context.node_config[LINK_KEY]))
    return _SiteClient(address).to_client()


client_app = ClientApp(client_fn=_client_fn, mods=[secaggplus_mod])
#: The same without SecAgg+: sends unmasked weights (benchmarks' baseline only). A site's
#: DP guarantee does not depend on which one runs: the site process trains and charges.
plain_client_app = ClientApp(client_fn=_client_fn)


class _FedAvg(FedAvg):  # type: ignore[misc,unused-ignore]
    """FedAvg that writes each round's aggregate and its failures to the output folder."""

    def __init__(self, output: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output = output

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        aggregated, metrics = super().aggregate_fit(server_round, results, failures)
        if aggregated is not None:
            arrays = parameters_to_ndarrays(aggregated)
            np.savez(self.output / "global.npz", *arrays)
        note = {
            "round": server_round,
            "results": len(results),
            "failures": len(failures),
            "time": time.time(),  # when the round's aggregate was made
        }
        with (self.output / "rounds.jsonl").open("a") as file:
            file.write(json.dumps(note) + "\n")
        return aggregated, metrics


server_app = ServerApp()


@server_app.main()  # type: ignore[untyped-decorator,unused-ignore]
def _server_main(grid: Grid, context: Context) -> None:
    config = context.run_config
    spec = ModelSpec.from_config(dict(config))
    sites, rounds = int(config["sites"]), int(config["rounds"])
    output = Path(str(config["output"]))
    output.mkdir(parents=True, exist_ok=True)
    statistic = str(config.get("task", "train")) == "statistic"
    if statistic:
        initial = [np.zeros(int(config["width"]), dtype=np.float64)]
        fit_config = {k: config[k] for k in (*_SHARE_KEYS, "scale")} | {"task": "statistic"}
    else:
        initial = spec.initial_weights()
        fit_config = {"rounds": rounds}
    strategy = _FedAvg(
        output,
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=sites,
        min_evaluate_clients=0,
        min_available_clients=sites,
        initial_parameters=ndarrays_to_parameters(initial),
        on_fit_config_fn=lambda r: {"round": r, **fit_config},
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
    )
    fit_workflow = None
    if bool(config["secagg"]):
        fit_workflow = SecAggPlusWorkflow(
            num_shares=int(config["num_shares"]),
            reconstruction_threshold=int(config["threshold"]),
            max_weight=1.0,  # every site weighs 1
            clipping_range=float(config["clipping_range"]),
            timeout=float(config["timeout"]),
        )
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    _note_halted(output, rounds)
    (output / "done").write_text("ok")


def _note_halted(output: Path, rounds: int) -> None:
    """Add a line for each round that produced no aggregate (SecAgg+ halted: too few sites)."""
    path = output / "rounds.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    seen = {json.loads(line)["round"] for line in lines}
    notes = [json.loads(line) for line in lines] + [
        {"round": r, "results": 0, "failures": 0, "halted": True}
        for r in range(1, rounds + 1)
        if r not in seen
    ]
    notes.sort(key=lambda note: int(note["round"]))
    path.write_text("".join(json.dumps(note) + "\n" for note in notes))
