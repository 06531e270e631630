"""The privml command: a demo, and audit tools for data-protection officers.

Exit status: 0 ok, 1 the audit log failed verification, 2 usage or access error.
Keys come from ``--key-file`` or the ``PRIVML_VAULT_KEY`` environment variable,
never from the command line (where other users could read them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .exceptions import PrivmlError
from .vault import Vault

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privml", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="create a vault with a real dataset and audit it")

    audit = commands.add_parser("audit", help="verify or print the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)

    def vault_command(group: Any, name: str, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help)
        sub.add_argument("vault", help="the vault folder")
        sub.add_argument("--key-file", help="file holding the vault key (else PRIVML_VAULT_KEY)")
        sub.add_argument("--anchor", help="the audit anchor file, if kept outside the vault")
        return sub

    vault_command(audit_commands, "verify", "verify the log; exit status 1 if it was tampered with")
    log = vault_command(audit_commands, "log", "print audit entries")
    log.add_argument("--since", type=int, help="only entries with seq >= SINCE")
    log.add_argument("--principal")
    log.add_argument("--action")
    vault_command(commands, "datasets", "list datasets and their versions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        run_demo(print)
        return 0
    try:
        with Vault.open(args.vault, key_file=args.key_file, anchor_path=args.anchor) as vault:
            if args.command == "audit" and args.audit_command == "verify":
                report = vault.audit.verify()
                print(report)
                for seq, reason in report.problems[1:]:
                    print(f"  also at seq {seq}: {reason}")
                return 0 if report.ok else 1
            if args.command == "audit":
                frame = vault.audit.entries(
                    since=args.since, principal=args.principal, action=args.action
                )
                columns = [
                    "seq",
                    "time",
                    "principal",
                    "purpose",
                    "action",
                    "dataset",
                    "version",
                    "outcome",
                ]
                with pd.option_context("display.width", 200, "display.max_rows", None):
                    print(frame[columns].to_string(index=False))
                return 0
            for info in vault.datasets():
                latest = info.latest
                print(
                    f"{info.name}: {len(info.versions)} version(s), latest v{latest.version} "
                    f"({latest.rows} rows), budget ε={info.budget.epsilon:g} "
                    f"δ={info.budget.delta:g}"
                )
            return 0
    except PrivmlError as err:
        print(f"privml: error: {err}", file=sys.stderr)
        return 2
