"""``privml federated server|site``: the command line of a federated DP-SGD run.

``privml federated site VAULT ...`` opens the site's vault (key from ``--key-file`` or
``PRIVML_VAULT_KEY``), answers rounds for its SuperNode, which it starts, and stays up
until SIGTERM or SIGINT; on the way out the site's run settles and the vault closes. At
start it first settles a run that a killed process of the same site left open.
``privml federated server ...`` starts a SuperLink, submits privml's Flower app (FedAvg
under SecAgg+), waits for the rounds, prints a JSON summary and stops the SuperLink.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["add_federated", "run_federated"]


def add_federated(commands: Any) -> None:
    """Add ``federated server`` and ``federated site`` to the privml parser."""
    federated = commands.add_parser("federated", help="federated DP-SGD with secure aggregation")
    sub = federated.add_subparsers(dest="federated_command", required=True)

    def model(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--inputs", type=int, help="network inputs")
        parser.add_argument("--outputs", type=int, help="network outputs")
        parser.add_argument("--hidden", default="32", help="hidden widths, e.g. 32,16 (32)")
        parser.add_argument("--seed", type=int, default=0, help="initial weights' seed (0)")

    server = sub.add_parser("server", help="run a SuperLink and the FedAvg/SecAgg+ rounds")
    model(server)
    server.add_argument("--port", type=int, default=9190, help="SuperLink port (9190)")
    server.add_argument("--sites", type=int, required=True, help="sites taking part")
    server.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    server.add_argument("--threshold", type=int, help="SecAgg+ reconstruction threshold")
    server.add_argument("--no-secagg", action="store_true", help="plain FedAvg (testing only)")
    server.add_argument(
        "--statistic",
        choices=["count", "sum", "mean"],
        help="a joint DP statistic instead of training (noise shares summed under SecAgg+)",
    )
    server.add_argument("--column", help="the statistic's column (sum, mean)")
    server.add_argument("--epsilon", type=float, help="the statistic's ε, charged at each site")
    server.add_argument("--bounds", help="the column's declared bounds lo,hi (mean)")
    server.add_argument(
        "--scale", type=float, default=1e5, help="public bound on one site's share (1e5)"
    )
    server.add_argument("--output", help="folder for global.npz and rounds.jsonl")
    server.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (600)")
    server.add_argument(
        "--round-timeout",
        type=float,
        default=60.0,
        help="seconds a SecAgg+ stage waits for sites before treating the rest as dropped (60)",
    )

    site = sub.add_parser("site", help="serve a vault's rounds through its own SuperNode")
    model(site)
    site.add_argument("vault", help="the site's vault folder")
    site.add_argument("--key-file", help="file holding the vault key (else PRIVML_VAULT_KEY)")
    site.add_argument("--principal", required=True)
    site.add_argument("--purpose", required=True)
    site.add_argument("--dataset", required=True)
    site.add_argument("--features", required=True, help="comma-separated feature columns")
    site.add_argument("--target", required=True)
    site.add_argument("--batch-size", type=int, required=True)
    site.add_argument("--max-grad-norm", type=float, required=True)
    noise = site.add_mutually_exclusive_group(required=True)
    noise.add_argument("--noise-multiplier", type=float, help="σ of every DP-SGD step")
    noise.add_argument(
        "--target-epsilon", type=float, help="or: the ε the site's whole run may cost (σ fitted)"
    )
    site.add_argument("--lr", type=float, default=0.5)
    site.add_argument("--local-epochs", type=int, default=1, help="epochs per round (1)")
    site.add_argument(
        "--state",
        help="file keeping the open run's checkpoint id, so a restart settles a run whose "
        "process died (default: VAULT/federated/DATASET.json)",
    )
    site.add_argument("--superlink", default="127.0.0.1:9190", help="host:port of the SuperLink")
    site.add_argument("--node-port", type=int, help="the SuperNode's runtime API port")
    site.add_argument("--ready-file", help="written once the SuperNode is started")


def run_federated(args: argparse.Namespace) -> int:
    """Run ``privml federated ...``; return the exit status."""
    from ..exceptions import ConfigurationError
    from ._model import ModelSpec

    if args.federated_command == "server" and args.statistic:
        return _statistic(args)
    if args.inputs is None or args.outputs is None:
        raise ConfigurationError("give --inputs and --outputs: the network's shape")
    spec = ModelSpec(
        inputs=args.inputs,
        outputs=args.outputs,
        hidden=tuple(int(h) for h in args.hidden.split(",") if h),
        seed=args.seed,
    )
    if args.federated_command == "server":
        return _server(args, spec)
    return _site(args, spec)


def _exit_on_sigterm() -> None:
    """SIGTERM ends the command as an exception would: its SuperLink and helpers are stopped."""

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)


def _server(args: argparse.Namespace, spec: Any) -> int:
    from ._federation import run_rounds

    _exit_on_sigterm()
    output = Path(args.output or tempfile.mkdtemp(prefix="privml-federated-"))
    summary = run_rounds(
        spec,
        sites=args.sites,
        rounds=args.rounds,
        port=args.port,
        secagg=not args.no_secagg,
        threshold=args.threshold,
        output=output,
        timeout=args.timeout,
        round_timeout=args.round_timeout,
    )
    print(json.dumps(summary.as_dict()))
    return 0


def _statistic(args: argparse.Namespace) -> int:
    from ..exceptions import ConfigurationError
    from ._federation import run_statistic

    if args.epsilon is None:
        raise ConfigurationError("give --epsilon: the ε each site is charged")
    _exit_on_sigterm()
    bounds = None
    if args.bounds:
        lo, hi = (float(b) for b in args.bounds.split(","))
        bounds = (lo, hi)
    result = run_statistic(
        args.statistic,
        epsilon=args.epsilon,
        sites=args.sites,
        port=args.port,
        scale=args.scale,
        column=args.column,
        bounds=bounds,
        threshold=args.threshold,
        output=Path(args.output) if args.output else None,
        timeout=args.timeout,
        round_timeout=args.round_timeout,
    )
    print(json.dumps(result.as_dict()))
    return 0


def _site(args: argparse.Namespace, spec: Any) -> int:
    from ..vault import Vault
    from . import _link
    from ._deploy import FlowerProcesses, free_port
    from ._site import Site

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Vault.open(args.vault, key_file=args.key_file) as vault:
        site = Site(
            vault.session(args.principal, purpose=args.purpose),
            args.dataset,
            features=[f for f in args.features.split(",") if f],
            target=args.target,
            model=spec,
            batch_size=args.batch_size,
            max_grad_norm=args.max_grad_norm,
            noise_multiplier=args.noise_multiplier,
            target_epsilon=args.target_epsilon,
            lr=args.lr,
            local_epochs=args.local_epochs,
            state=Path(args.state or Path(args.vault) / "federated" / f"{args.dataset}.json"),
        )
        site.recover()  # a run a killed process of this site left open settles first
        listener, address = _link.listen()
        home = Path(tempfile.mkdtemp(prefix="privml-site-"))
        link_file = home / "link.json"
        address.write(link_file)
        server = threading.Thread(target=site.serve, args=(listener, stop), daemon=True)
        server.start()
        with FlowerProcesses(home / "flower") as flower:
            flower.supernode(
                args.superlink,
                args.node_port or free_port(),
                {"privml-link": str(link_file)},
                own_group=False,  # killed with the site
            )
            if args.ready_file:
                Path(args.ready_file).write_text(str(os.getpid()))
            stop.wait()
            _link.wake(address)  # returns at once, served or not
            server.join(timeout=30)
            listener.close()  # a round in progress finishes first
        site.finish()  # the run settles on the batches drawn, before the vault closes
    return 0
