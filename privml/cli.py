"""The privml command: a demo, audit and budget tools for data-protection officers, and tokens.

Exit status: 0 ok; 1 the audit log failed verification (``report`` still writes its
file, the failure at the top), or a dataset is over its privacy budget; 2 usage or
access error.
``privml token issue`` prints a token's secret once: hand it to the analyst, it is
not stored and cannot be shown again (issue a new token if it is lost).
Keys come from ``--key-file`` or the ``PRIVML_VAULT_KEY`` environment variable,
never from the command line (where other users could read them). A vault whose
metadata lives in PostgreSQL names it with ``--metadata-url`` or ``PRIVML_METADATA_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from .exceptions import PrivmlError
from .vault import TokenInfo, Vault

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privml", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="create a vault with a real dataset and audit it")
    from .service._cli import add_serve

    add_serve(commands)
    from .federated._cli import add_federated

    add_federated(commands)

    audit = commands.add_parser("audit", help="verify or print the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)

    def vault_command(group: Any, name: str, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help)
        sub.add_argument("vault", help="the vault folder")
        sub.add_argument("--key-file", help="file holding the vault key (else PRIVML_VAULT_KEY)")
        sub.add_argument("--anchor", help="the audit anchor file, if kept outside the vault")
        sub.add_argument(
            "--metadata-url",
            default=os.environ.get("PRIVML_METADATA_URL"),
            help="the metadata database of a vault that keeps it outside the folder "
            "(else PRIVML_METADATA_URL; the variable keeps a password out of the process list)",
        )
        return sub

    vault_command(audit_commands, "verify", "verify the log; exit status 1 if it was tampered with")
    log = vault_command(audit_commands, "log", "print audit entries")
    log.add_argument(
        "--since",
        type=_since,
        help="only entries with seq >= SINCE (an integer) or written at or after SINCE "
        "(an ISO 8601 time, e.g. 2025-01-31T09:00)",
    )
    log.add_argument("--principal")
    log.add_argument("--action")
    vault_command(commands, "datasets", "list datasets and their versions")
    budget = vault_command(
        commands, "budget", "privacy budgets: spent, total, remaining; exit 1 if over budget"
    )
    budget.add_argument("--dataset", help="only this dataset")
    budget.add_argument("--json", action="store_true", help="print JSON")
    ledger = vault_command(commands, "ledger", "print a dataset's privacy ledger")
    ledger.add_argument("--dataset", required=True, help="the dataset")
    ledger.add_argument("--json", action="store_true", help="print JSON records")
    report = vault_command(
        commands, "report", "write the data-protection officer's report (one HTML file)"
    )
    report.add_argument("-o", "--output", required=True, help="the HTML file to write")
    report.add_argument(
        "--since", type=_moment, help="refusals and key events at or after this ISO 8601 time"
    )
    report.add_argument(
        "--until", type=_moment, help="refusals and key events at or before this ISO 8601 time"
    )

    token = commands.add_parser("token", help="issue, list and revoke analysts' bearer tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    issue = vault_command(token_commands, "issue", "issue a token; prints its secret once")
    issue.add_argument("--principal", required=True, help="the registered principal")
    issue.add_argument(
        "--purpose",
        action="append",
        required=True,
        dest="purposes",
        help="a registered purpose the token may act for (repeat for several)",
    )
    expiry = issue.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in", type=_days, default=30.0, help="days until it expires (default 30)"
    )
    expiry.add_argument("--no-expiry", action="store_true", help="a token that never expires")
    issue.add_argument(
        "--dpo", action="store_true", help="may use the read-only oversight endpoints"
    )
    listing = vault_command(token_commands, "list", "list tokens (never their secrets)")
    listing.add_argument("--principal", help="only this principal's tokens")
    listing.add_argument("--all", action="store_true", help="revoked and expired tokens too")
    listing.add_argument("--json", action="store_true", help="print JSON records")
    revoke = vault_command(token_commands, "revoke", "revoke a token at once")
    revoke.add_argument("token_id", help="the token's id (tok_...), as token list shows it")
    return parser


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = float("nan")
    if not 0 < days <= 36_500:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days in (0, 36500]")
    return days


def _since(text: str) -> int | datetime:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a sequence number nor an ISO 8601 time"
        ) from None


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2025-01-31T09:00)"
        ) from None


def _report(vault: Vault, args: argparse.Namespace) -> int:
    written = vault.report(args.output, since=args.since, until=args.until)
    print(f"report written to {args.output}")
    for problem in written.problems:
        print(f"privml: verification failed: {problem}", file=sys.stderr)
    return 0 if written.ok else 1


def _budget(vault: Vault, dataset: str | None, as_json: bool) -> int:
    names = [dataset] if dataset is not None else [d.name for d in vault.datasets()]
    statuses = [vault.budget(name) for name in names]
    if as_json:
        print(json.dumps([s.to_dict() for s in statuses], ensure_ascii=False, indent=2))
    else:
        print("\n".join(str(s) for s in statuses) if statuses else "no datasets")
    over = [s.dataset for s in statuses if s.epsilon_spent > s.epsilon_total * (1 + 1e-9)]
    if over:
        print(f"privml: over budget: {', '.join(over)}", file=sys.stderr)
    return 1 if over else 0


def _ledger(vault: Vault, dataset: str, as_json: bool) -> int:
    frame = vault.ledger.events(dataset)
    if as_json:
        print(frame.to_json(orient="records", date_format="iso", force_ascii=False, indent=2))
        return 0
    columns = ["id", "time", "principal", "purpose", "status", "description"]
    columns += ["epsilon_after", "method"]
    with pd.option_context("display.width", 200, "display.max_rows", None):
        print(frame[columns].to_string(index=False) if len(frame) else f"{dataset}: no charges")
    return 0


def _token(vault: Vault, args: argparse.Namespace) -> int:
    if args.token_command == "issue":
        issued = vault.tokens.issue(
            args.principal,
            purposes=args.purposes,
            expires=None if args.no_expiry else timedelta(days=args.expires_in),
            dpo=args.dpo,
        )
        until = "never" if issued.expires is None else issued.expires.isoformat()
        print(f"token:   {issued.id}")
        print(f"for:     {issued.principal} ({', '.join(issued.purposes)})")
        print(f"dpo:     {'yes' if issued.dpo else 'no'}")
        print(f"expires: {until}")
        print(f"secret:  {issued.secret}")
        print("The secret is shown only now: hand it to the analyst over a private channel.")
        return 0
    if args.token_command == "revoke":
        known = {t.id: t for t in vault.tokens.list(include_inactive=True)}
        before = known.get(args.token_id)
        vault.tokens.revoke(args.token_id)
        if before is not None and before.revoked is not None:
            print(f"{args.token_id} was already revoked at {before.revoked.isoformat()}")
        else:
            print(f"{args.token_id} revoked")
        return 0
    found = vault.tokens.list(principal=args.principal, include_inactive=args.all)
    records = [_token_record(t) for t in found]
    if args.json:
        print(json.dumps(records, ensure_ascii=False, indent=2))
    elif records:
        frame = pd.DataFrame(records)
        frame["purposes"] = [", ".join(p) for p in frame["purposes"]]
        with pd.option_context("display.width", 200, "display.max_rows", None):
            print(frame.fillna("").to_string(index=False))
    else:
        print("no tokens")
    return 0


def _token_record(info: TokenInfo) -> dict[str, Any]:
    def stamp(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    return {
        "id": info.id,
        "principal": info.principal,
        "purposes": list(info.purposes),
        "dpo": info.dpo,
        "created": stamp(info.created),
        "expires": stamp(info.expires),
        "revoked": stamp(info.revoked),
        "active": info.active,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        run_demo(print)
        return 0
    if args.command == "federated":
        from .federated._cli import run_federated

        try:
            return run_federated(args)
        except PrivmlError as err:
            print(f"privml: error: {err}", file=sys.stderr)
            return 2
    if args.command == "serve":
        from .service._cli import run_serve

        try:
            return run_serve(args)
        except PrivmlError as err:
            print(f"privml: error: {err}", file=sys.stderr)
            return 2
    try:
        with Vault.open(
            args.vault,
            key_file=args.key_file,
            anchor_path=args.anchor,
            metadata_url=args.metadata_url,
        ) as vault:
            if args.command == "budget":
                return _budget(vault, args.dataset, args.json)
            if args.command == "ledger":
                return _ledger(vault, args.dataset, args.json)
            if args.command == "report":
                return _report(vault, args)
            if args.command == "token":
                return _token(vault, args)
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
