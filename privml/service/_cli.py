"""``privml serve``: the command line of the curator server (see :func:`privml.serve`)."""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

from ._limits import Limits

__all__ = ["add_serve", "run_serve"]


def add_serve(commands: Any) -> None:
    """Add the ``serve`` command to the privml parser's subcommands."""
    sub: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="serve a vault to analysts who never hold its key (a curator server)",
        description="Serve a vault over HTTP(S). The key comes from --key-file, "
        "PRIVML_VAULT_KEY or --passphrase-prompt; never from the command line.",
    )
    sub.add_argument("vault", nargs="?", help="the vault folder (omit for a folder-less vault)")
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    sub.add_argument("--port", type=int, default=8750, help="port to listen on (8750)")
    sub.add_argument("--workers", type=int, default=1, help="server processes (1)")
    sub.add_argument("--tls-cert", help="TLS certificate (PEM)")
    sub.add_argument("--tls-key", help="the TLS certificate's private key (PEM)")
    sub.add_argument("--key-file", help="file holding the vault key (else PRIVML_VAULT_KEY)")
    sub.add_argument(
        "--passphrase-prompt", action="store_true", help="ask for the vault's passphrase"
    )
    sub.add_argument(
        "--metadata-url",
        default=os.environ.get("PRIVML_METADATA_URL"),
        help="the metadata database (else PRIVML_METADATA_URL)",
    )
    sub.add_argument("--storage", help="where the data files live (a URI), if not in the folder")
    sub.add_argument("--anchor", help="the audit anchor file, if kept outside the vault")
    sub.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP on a non-loopback address (only behind a TLS proxy on this host)",
    )
    sub.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body")
    sub.add_argument(
        "--max-reply-mb", type=float, default=64.0, help="largest answer to a release (64)"
    )
    sub.add_argument("--max-rows", type=int, default=250_000, help="rows per read response")
    sub.add_argument("--rate", type=float, default=200.0, help="requests/s per principal")
    sub.add_argument("--burst", type=int, default=100, help="requests at once per principal")
    sub.add_argument(
        "--auth-failures",
        type=int,
        default=5,
        help="failed authentications per address and minute before each next one is delayed",
    )
    sub.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    sub.add_argument(
        "--training-timeout", type=float, default=900.0, help="seconds per DP-SGD run request"
    )
    sub.add_argument(
        "--in-flight", type=int, default=16, help="requests of one principal running at once"
    )
    sub.add_argument("--log-level", default="info", help="uvicorn's log level")


def run_serve(args: argparse.Namespace) -> int:
    """Run ``privml serve`` with parsed ``args``; return the exit status."""
    from ._serve import serve

    passphrase = getpass.getpass("vault passphrase: ") if args.passphrase_prompt else None
    limits = Limits(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_rows=args.max_rows,
        max_reply_bytes=int(args.max_reply_mb * 2**20),
        rate=args.rate,
        burst=args.burst,
        failures_before_delay=args.auth_failures,
        timeout=args.timeout,
        training_timeout=args.training_timeout,
        in_flight=args.in_flight,
    )
    serve(
        args.vault,
        host=args.host,
        port=args.port,
        workers=args.workers,
        certfile=args.tls_cert,
        keyfile=args.tls_key,
        key_file=args.key_file,
        passphrase=passphrase,
        metadata_url=args.metadata_url,
        storage=args.storage,
        anchor_path=args.anchor,
        limits=limits,
        allow_insecure=args.insecure,
        log_level=args.log_level,
    )
    return 0
