"""The server's Flower app: FedAvg under SecAgg+ (each site's ClientApp: :mod:`._client_app`).

Flower's deployment engine loads it by reference (``privml.federated._apps:server_app``)
in the ServerApp process it starts beside the SuperLink. Importing this module imports
flwr (``pip install 'privml[federated]'``).
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

from ._client_app import SHARE_KEYS
from ._model import ModelSpec

__all__ = ["server_app"]


#: Seconds between the ServerApp's pulls for replies (Flower's own grid waits 3 s).
REPLY_POLL = 0.1


class _PromptGrid(Grid):  # type: ignore[misc,unused-ignore]
    """The ServerApp's grid, pulling replies every :data:`REPLY_POLL` seconds instead of 3.

    A SecAgg+ round is four message exchanges (setup, key shares, masked vectors,
    unmasking) where plain FedAvg is one; Flower's grid sleeps 3 s between its pulls for
    the replies, so each exchange waited up to 3 s after the last site had answered. The
    messages, their order and their timeouts are Flower's; only the polling is denser.
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Any:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Any:
        return self._grid.get_node_ids()

    def get_nodes(self) -> Any:
        return self._grid.get_nodes()

    def push_messages(self, messages: Any) -> Any:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Any) -> Any:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        waiting = set(self.push_messages(messages))
        end = time.monotonic() + (timeout if timeout is not None else 0.0)
        replies: list[Any] = []
        while timeout is None or time.monotonic() < end:
            pulled = list(self.pull_messages(waiting))
            replies.extend(pulled)
            waiting.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if not waiting:
                break
            time.sleep(REPLY_POLL)
        return replies


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
        fit_config = {k: config[k] for k in (*SHARE_KEYS, "scale")} | {"task": "statistic"}
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
    DefaultWorkflow(fit_workflow=fit_workflow)(_PromptGrid(grid), legacy)
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
