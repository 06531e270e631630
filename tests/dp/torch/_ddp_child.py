"""One process of a DP-SGD run for the data-parallel tests: ``python _ddp_child.py SETTINGS``.

``SETTINGS`` is JSON: ``vault``, ``key`` (hex), ``out`` (where the result JSON goes),
``world`` (0: one process, no process group; else the group's size), ``rank``, ``store``
(the FileStore path of the group's rendezvous: no port is chosen by hand; gloo binds its
own), ``mode``, ``steps``, ``seed`` (privml's entropy becomes a stream seeded with it, in
this process only, so two runs can be compared), and optionally ``die_at`` (the process
SIGKILLs itself once that many steps were taken, after drawing the next batch),
``raise_at`` and ``linger`` (the loop raises there instead, and the process stays alive
that many seconds),
``epochs``, ``batch_size``, ``lr`` and ``settings`` (keywords that override the call's).
"""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import sys
import time
from typing import Any


def main(settings: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist

    import privml
    from privml.dp import _random

    stream = random.Random(settings["seed"])
    _random.entropy = stream.randbytes  # test only: reproducible coins and noise seeds
    world = settings["world"]
    if world:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{settings['store']}",
            rank=settings["rank"],
            world_size=world,
            timeout=datetime.timedelta(seconds=settings.get("timeout", 30)),
        )
    features = [f"pixel_{i}_{j}" for i in range(8) for j in range(8)]  # the digits' columns
    vault = privml.Vault.open(settings["vault"], key=bytes.fromhex(settings["key"]))
    torch.manual_seed(settings.get("net_seed", 1))
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    call = {
        "features": features,
        "target": "target",
        "module": net,
        "optimizer": torch.optim.SGD(net.parameters(), lr=settings.get("lr", 0.5)),
        "batch_size": settings.get("batch_size", 64),
        "epochs": settings.get("epochs", 1),
        "max_grad_norm": 1.0,
        "noise_multiplier": 1.0,
        "grad_sample_mode": settings["mode"],
        "distributed": bool(world),
        **settings.get("settings", {}),
    }
    out: dict[str, Any] = {"grads": []}
    run = None
    try:
        session = vault.session("eng", purpose="ml")
        with session.dp.private_training("data", **call) as run:
            for X, y in run.data_loader:
                if run.steps_taken == settings.get("die_at"):
                    os.kill(os.getpid(), signal.SIGKILL)
                if run.steps_taken == settings.get("raise_at"):
                    raise KeyboardInterrupt  # the loop stops with an error; the process lives on
                run.optimizer.zero_grad()
                run.criterion(run.model(X), y).backward()
                run.optimizer.step()
                grads = [p.grad.reshape(-1) for p in run.model.parameters()]
                out["grads"].append(torch.cat(grads).tolist())
                out.setdefault("rows", []).append(len(y))
                if run.steps_taken >= settings["steps"]:
                    break
    except (Exception, KeyboardInterrupt) as err:
        out["error"] = f"{type(err).__name__}: {err}"
        time.sleep(settings.get("linger", 0))  # still alive while the other rank fails
    if run is not None:
        out["params"] = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).tolist()
        out["steps_taken"] = run.steps_taken
        out["batches_drawn"] = run.data_loader.batches_drawn
        out["epsilon"] = run.epsilon
        out["request_id"] = run.request_id
        out["charge"] = None if run.charge is None else run.charge.status
        out["registered"] = run.model_info is not None
    vault.close()
    if world and dist.is_initialized():
        dist.destroy_process_group()
    return out


if __name__ == "__main__":
    given = json.loads(sys.argv[1])
    result = main(given)
    with open(given["out"], "w") as f:
        json.dump(result, f)
