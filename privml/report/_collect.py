"""Collect a vault's report from its own services: budgets, ledger, audit log, models.

Every part is read on its own: a part that fails (a tampered row, a broken anchor) is
named in the report's problems and the rest is still collected, so a vault that fails
verification still gets a report. Only names, figures and counts are kept.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from ..accounting._report import cumulative
from ..accounting.composition import Tally
from ..accounting.events import PrivacyEvent
from ..accounting.filter import filter_figure
from ..audit import VerifyReport
from ._model import DatasetSection, LedgerRow, ModelAudit, ModelSection, Refusal, VaultEvent
from ._report import DpoReport

if TYPE_CHECKING:
    from ..vault import DatasetInfo, Vault

__all__ = ["EVENT_ACTIONS", "MAX_LEDGER_ROWS", "REFUSED", "collect"]

#: Audit outcomes that mean a request was refused.
REFUSED = ("denied", "refused", "rejected")
#: Audit actions of key rotation, key destruction and erasure.
EVENT_ACTIONS = (
    "vault.rotate_key",
    "dataset.rotate_keys",
    "crypto.field_key",
    "crypto.field_key_drop",
    "dataset.erase_subject",
)
#: The newest ledger rows of a dataset shown as a table (the plot and budget use all).
MAX_LEDGER_ROWS = 500
_PRIVACY_REPORT = "model.privacy_report"
_MESSAGE_LIMIT = 300

T = TypeVar("T")


def collect(vault: Vault, *, since: datetime | None, until: datetime | None) -> DpoReport:
    """Read everything the report shows from ``vault``, for the period ``[since, until]``."""
    problems: list[str] = []

    def attempt(what: str, read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except Exception as err:  # a report of a damaged vault names the damage, never crashes
            problems.append(f"{what} could not be read: {_describe(err)}")
            return default

    verification = attempt("the audit log", vault.audit.verify, None)
    if verification is not None and not verification.ok:
        problems[:0] = _verification_problems(verification)
    no_checkpoints: tuple[tuple[int, str], ...] = ()
    checkpoints = attempt(
        "the anchor file", lambda: _anchored(vault.audit.anchor_path), no_checkpoints
    )
    entries = attempt("the audit entries", lambda: _period(vault, since, until), None)
    infos: list[DatasetInfo] = attempt("the datasets", vault.datasets, [])
    datasets = tuple(_dataset(vault, info.name, problems) for info in infos)
    models = attempt("the model registry", vault.models.list, None)
    return DpoReport(
        generated=datetime.now(UTC),
        vault=str(vault.path) if vault.path is not None else repr(vault),
        since=since,
        until=until,
        verification=verification,
        anchor_path=str(vault.audit.anchor_path),
        checkpoints=checkpoints,
        datasets=datasets,
        refusals=() if entries is None else _refusals(entries),
        events=() if entries is None else _events(entries),
        models=() if models is None else _models(models, vault, problems),
        problems=tuple(problems),
    )


def _describe(err: Exception) -> str:
    text = str(err)
    if len(text) > _MESSAGE_LIMIT:
        text = text[:_MESSAGE_LIMIT] + "…"
    return f"{type(err).__name__}: {text}"


def _verification_problems(report: VerifyReport) -> list[str]:
    found = [f"audit log: seq {seq}: {reason}" for seq, reason in report.problems]
    found += [f"vault metadata: {reason}" for reason in report.row_problems]
    return found or [str(report)]


def _anchored(path: Path) -> tuple[tuple[int, str], ...]:
    """Sequence number and time of each checkpoint line of the anchor file (none if absent)."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return ()
    out = []
    for line in lines:
        try:
            item = json.loads(line)
            out.append((int(item["seq"]), str(item["time"])))
        except (ValueError, KeyError, TypeError):
            continue  # verification reports the malformed line
    return tuple(out)


def _period(vault: Vault, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    # filtered here on the parsed, zone-aware times: the log stores UTC, the period may be
    # given in any zone
    frame = vault.audit.entries()
    if since is not None:
        frame = frame[frame["time"] >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame["time"] <= pd.Timestamp(until)]
    return frame


def _when(value: Any) -> datetime:
    moment: datetime = pd.Timestamp(value).to_pydatetime()
    return moment


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _refusals(frame: pd.DataFrame) -> tuple[Refusal, ...]:
    found = frame[frame["outcome"].isin(REFUSED)]
    out = []
    for row in found.itertuples(index=False):
        details: Mapping[str, Any] = row.details if isinstance(row.details, dict) else {}
        if "requested" in details:
            reason = "privacy budget exceeded"
        else:
            reason = str(details.get("error") or row.outcome)
        out.append(
            Refusal(
                seq=int(row.seq),
                time=_when(row.time),
                principal=str(row.principal),
                purpose=str(row.purpose),
                action=str(row.action),
                dataset=_text(row.dataset),
                outcome=str(row.outcome),
                reason=reason,
                requested_epsilon=_number(details.get("requested")),
            )
        )
    return tuple(out)


def _figures(details: Mapping[str, Any]) -> dict[str, float | int | bool]:
    """The numeric fields of an entry's details (counts, versions), never its strings."""
    out: dict[str, float | int | bool] = {}
    for name, value in details.items():
        if isinstance(value, bool | int | float):
            out[str(name)] = value
        elif isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            out[str(name)] = len(value)
    return out


def _events(frame: pd.DataFrame) -> tuple[VaultEvent, ...]:
    found = frame[frame["action"].isin(EVENT_ACTIONS) & (frame["outcome"] == "ok")]
    return tuple(
        VaultEvent(
            seq=int(row.seq),
            time=_when(row.time),
            action=str(row.action),
            principal=str(row.principal),
            dataset=_text(row.dataset),
            figures=_figures(row.details if isinstance(row.details, dict) else {}),
        )
        for row in found.itertuples(index=False)
    )


def _dataset(vault: Vault, name: str, problems: list[str]) -> DatasetSection:
    try:
        status = vault.budget(name)
        frame = vault.ledger.events(name)
        active = frame[frame["status"].isin(("reserved", "committed"))]
        events = [_event(row) for row in active.itertuples(index=False)]
        charges, tight, naive = cumulative(events, status.delta)
        committed = Tally.empty()
        for event, row_status in zip(events, active["status"], strict=True):
            if row_status == "committed":
                committed = committed.plus(event)
        epsilon_committed = filter_figure(committed, status.delta).epsilon
    except Exception as err:  # see collect
        problems.append(
            f"the budget and ledger of dataset {name!r} could not be read: " + _describe(err)
        )
        return DatasetSection(name=name, status=None, error=_describe(err))
    shown = frame.tail(MAX_LEDGER_ROWS)
    rows = tuple(
        LedgerRow(
            id=int(row.id),
            time=_when(row.time),
            principal=str(row.principal),
            purpose=str(row.purpose),
            status=str(row.status),
            description=str(row.description),
            epsilon_after=float(row.epsilon_after),
            method=str(row.method),
        )
        for row in shown.itertuples(index=False)
    )
    reserved = Counter(str(p) for p in frame.loc[frame["status"] == "reserved", "principal"])
    return DatasetSection(
        name=name,
        status=status,
        rows=rows,
        rows_left_out=len(frame) - len(shown),
        epsilon_committed=epsilon_committed,
        first_charge=_when(active["time"].iloc[0]) if len(active) else None,
        last_charge=_when(active["time"].iloc[-1]) if len(active) else None,
        reserved_by_principal=dict(sorted(reserved.items())),
        charges=tuple(charges),
        tight=tuple(tight),
        naive=tuple(naive),
    )


def _event(row: Any) -> PrivacyEvent:
    return PrivacyEvent.from_dict(
        {
            "kind": row.kind,
            "params": row.params,
            "library": row.library,
            "library_version": _text(row.library_version),
            "reported_epsilon": _number(row.reported_epsilon),
            "dp_event": row.dp_event,
        }
    )


def _models(frame: pd.DataFrame, vault: Vault, problems: list[str]) -> tuple[ModelSection, ...]:
    try:
        audits = _model_audits(vault.audit.entries(action=_PRIVACY_REPORT))
    except Exception as err:  # see collect
        problems.append(f"the models' privacy reports could not be read: {_describe(err)}")
        audits = {}
    out = []
    for row in frame.to_dict("records"):
        dataset_version = row["dataset_version"]
        key = (str(row["name"]), int(row["version"]))
        out.append(
            ModelSection(
                name=key[0],
                version=key[1],
                dataset=_text(row["dataset"]),
                dataset_version=None if pd.isna(dataset_version) else int(dataset_version),
                epsilon=_number(row["epsilon"]),
                delta=_number(row["delta"]),
                model_class=_text(row["class"]),
                created=str(row["created"]),
                audits=tuple(audits.get(key, ())),
            )
        )
    return tuple(out)


def _model_audits(frame: pd.DataFrame) -> dict[tuple[str, int], list[ModelAudit]]:
    out: dict[tuple[str, int], list[ModelAudit]] = {}
    for row in frame.itertuples(index=False):
        d: Mapping[str, Any] = row.details if isinstance(row.details, dict) else {}
        if "model" not in d or "model_version" not in d:
            continue
        attacks = tuple(
            (str(a.get("attack")), _number(a.get("auc")), _number(a.get("epsilon_lower_bound")))
            for a in d.get("attacks") or ()
            if isinstance(a, dict)
        )
        audit = ModelAudit(
            seq=int(row.seq),
            time=_when(row.time),
            outcome=str(row.outcome),
            epsilon_claimed=_number(d.get("epsilon_claimed")),
            best_lower_bound=_number(d.get("best_lower_bound")),
            confidence=_number(d.get("confidence")),
            exceeded=bool(d.get("exceeded")),
            attacks=attacks,
            verdict=str(d.get("verdict") or row.outcome),
        )
        out.setdefault((str(d["model"]), int(d["model_version"])), []).append(audit)
    return out
