"""Render a :class:`~privml.report.DpoReport` as one self-contained HTML document.

No script, no external stylesheet, font or image: the page opens offline, and its
Content-Security-Policy forbids scripts and every network fetch, so a name that slipped
past escaping still could not run. Every string from the vault is escaped by :func:`_e`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING

from ._model import DatasetSection, ModelSection, Refusal, VaultEvent
from ._svg import Series, line_chart

if TYPE_CHECKING:
    from ._report import DpoReport

__all__ = ["render"]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0 auto;max-width:1100px;padding:1rem 2rem;color:#1c1c1c}
h1{font-size:1.6rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.banner{padding:1rem 1.25rem;border-radius:6px;margin:1rem 0;font-size:1.05rem}
.banner.ok{background:#e6f4ea;border:2px solid #1e8e3e;color:#0d652d}
.banner.fail{background:#c5221f;border:3px solid #7f0000;color:#fff;font-size:1.2rem}
.banner.fail li{margin:.2rem 0}.muted{color:#666;font-size:.9rem}
.figures{display:flex;gap:1rem;flex-wrap:wrap}.figure{border:1px solid #ccc;border-radius:6px;
padding:.5rem 1rem;min-width:9rem}.figure b{display:block;font-size:1.4rem}
.chart text{font-size:11px;fill:#333}.chart .chart-title{font-size:13px;font-weight:600}
.exceeded{color:#c5221f;font-weight:600}
"""


def _e(value: object) -> str:
    """Escape any value for HTML text and attributes."""
    return escape(str(value), quote=True)


def _n(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    return f"{value:.4g}"


def _t(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _table(head: Sequence[str], rows: Iterable[Sequence[tuple[str, bool]]], cls: str) -> str:
    """A table; each cell is (already escaped HTML, numeric?)."""
    out = [f'<table class="{cls}"><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        out += [f'<td class="n">{c}</td>' if num else f"<td>{c}</td>" for c, num in row]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _banner(report: DpoReport) -> str:
    if report.problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in report.problems)
        return (
            '<div id="integrity" class="banner fail" role="alert">'
            "<strong>VERIFICATION FAILED: this vault's audit log or metadata has been "
            "tampered with or could not be read. Do not rely on the figures below "
            "until this is investigated.</strong>"
            f"<ul>{items}</ul></div>"
        )
    v = report.verification
    assert v is not None  # no problems means it ran and passed
    return (
        '<div id="integrity" class="banner ok" role="status">'
        f"Verification OK: {v.entries_checked} audit entries and "
        f"{v.checkpoints_checked} signed checkpoints verified; vault metadata intact.</div>"
    )


def _audit_section(report: DpoReport) -> str:
    v = report.verification
    result = "could not run" if v is None else ("OK" if v.ok else "FAILED")
    rows = [
        ("Result", result),
        ("Entries checked", "—" if v is None else str(v.entries_checked)),
        ("Signed checkpoints checked", "—" if v is None else str(v.checkpoints_checked)),
        ("First bad entry", "—" if v is None or v.first_bad_seq is None else str(v.first_bad_seq)),
        ("Anchor file", report.anchor_path),
        ("Checkpoints in the anchor", str(len(report.checkpoints))),
    ]
    if report.checkpoints:
        seq, time = report.checkpoints[-1]
        rows.append(("Last anchored checkpoint", f"seq {seq} at {time}"))
    table = (
        '<table class="verify"><tbody>'
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(val)}</td></tr>" for k, val in rows)
        + "</tbody></table>"
    )
    shown = report.checkpoints[-20:]
    cps = (
        _table(
            ["Checkpoint seq", "Signed at"],
            [[(_e(seq), True), (_e(time), False)] for seq, time in shown],
            "checkpoints",
        )
        if shown
        else '<p class="muted">No checkpoint in the anchor file yet.</p>'
    )
    more = len(report.checkpoints) - len(shown)
    note = f'<p class="muted">{more} earlier checkpoints not listed.</p>' if more else ""
    return f'<section id="audit"><h2>Audit log</h2>{table}{cps}{note}</section>'


def _shares(d: DatasetSection) -> str:
    s = d.status
    assert s is not None
    rows = []
    for kind, shares in (("principal", s.by_principal), ("purpose", s.by_purpose)):
        for name, share in shares.items():
            reserved = d.reserved_by_principal.get(name, 0) if kind == "principal" else None
            rows.append(
                [
                    (_e(kind), False),
                    (_e(name), False),
                    (_n(share.epsilon_spent), True),
                    ("—" if reserved is None else str(reserved), True),
                    (_n(share.epsilon_cap), True),
                    (_n(share.remaining), True),
                ]
            )
    if not rows:
        return '<p class="muted">No charges yet.</p>'
    head = ["By", "Name", "ε spent", "Open reservations", "ε cap", "ε remaining (of cap)"]
    return _table(head, rows, "shares")


def _ledger(d: DatasetSection) -> str:
    if not d.rows:
        return '<p class="muted">The ledger is empty.</p>'
    head = ["#", "Time", "Principal", "Purpose", "Status", "Release", "Dataset ε after", "Filter"]
    rows = [
        [
            (str(r.id), True),
            (_e(_t(r.time)), False),
            (_e(r.principal), False),
            (_e(r.purpose), False),
            (_e(r.status), False),
            (_e(r.description), False),
            (_n(r.epsilon_after), True),
            (_e(r.method), False),
        ]
        for r in d.rows
    ]
    note = (
        f'<p class="muted">{d.rows_left_out} older ledger rows not listed (counted above).</p>'
        if d.rows_left_out
        else ""
    )
    return note + _table(head, rows, "ledger")


def _held(d: DatasetSection) -> float | None:
    if d.status is None or d.epsilon_committed is None:
        return None
    return max(d.status.epsilon_spent - d.epsilon_committed, 0.0)


def _dataset(d: DatasetSection) -> str:
    title = f"<h3>Dataset <code>{_e(d.name)}</code></h3>"
    s = d.status
    if s is None:
        return f'<div class="dataset">{title}<p class="exceeded">{_e(d.error)}</p></div>'
    fixed = s.epsilon_fixed_sequence
    figures = [
        ("ε spent", _n(s.epsilon_spent), "spent"),
        ("ε budget", _n(s.epsilon_total), "total"),
        ("ε held by open reservations", _n(_held(d)), "reserved"),
        ("ε remaining", _n(s.remaining), "remaining"),
        ("δ", f"{s.delta:g}", "delta"),
        ("Naive sum ε", _n(s.epsilon_naive), "naive"),
        ("Committed / reserved / released", f"{s.committed} / {s.reserved} / {s.released}", "rows"),
    ]
    if fixed is not None:
        figures.append(("Fixed-sequence ε (PLD)", _n(fixed), "pld"))
    boxes = "".join(
        f'<div class="figure {cls}">{_e(label)}<b>{val}</b></div>' for label, val, cls in figures
    )
    unit = (
        "one row"
        if s.privacy_unit == "row"
        else f"one person ({_e(s.privacy_unit)}, at most {s.max_rows_per_unit} rows per release)"
    )
    chart = ""
    if d.charges:
        chart = line_chart(
            [
                Series("naive sum", (0, *d.charges), (0.0, *d.naive), "#888888", "6 4"),
                Series("privacy filter (admission)", (0, *d.charges), (0.0, *d.tight), "#1f5fa8"),
            ],
            title=f"Cumulative ε of {d.name}",
            x_label=f"charges in time order (reserved and committed), {_t(d.first_charge)} "
            f"to {_t(d.last_charge)}",
            y_label=f"ε at δ={s.delta:g}",
            limit=s.epsilon_total,
            limit_label=f"budget ε={s.epsilon_total:g}",
        )
    return (
        f'<div class="dataset" data-dataset="{_e(d.name)}">{title}'
        f'<div class="figures">{boxes}</div>'
        f'<p class="muted">Privacy unit: {unit}. Admission: {_e(s.accounting.describe())}.</p>'
        f"{_shares(d)}{chart}<h4>Ledger</h4>{_ledger(d)}</div>"
    )


def _refusals(refusals: Sequence[Refusal]) -> str:
    if not refusals:
        return '<p class="muted">No refusals in the period.</p>'
    head = ["Seq", "Time", "Principal", "Purpose", "Action", "Dataset", "Outcome", "Reason"]
    head.append("ε requested")
    rows = [
        [
            (str(r.seq), True),
            (_e(_t(r.time)), False),
            (_e(r.principal), False),
            (_e(r.purpose), False),
            (_e(r.action), False),
            (_e(r.dataset or "—"), False),
            (_e(r.outcome), False),
            (_e(r.reason), False),
            (_n(r.requested_epsilon), True),
        ]
        for r in refusals
    ]
    return _table(head, rows, "refusals")


def _events(events: Sequence[VaultEvent]) -> str:
    if not events:
        return '<p class="muted">No key rotation, key destruction or erasure in the period.</p>'
    rows = [
        [
            (str(v.seq), True),
            (_e(_t(v.time)), False),
            (_e(v.action), False),
            (_e(v.principal), False),
            (_e(v.dataset or "—"), False),
            (_e(", ".join(f"{k}={val}" for k, val in v.figures.items()) or "—"), False),
        ]
        for v in events
    ]
    return _table(["Seq", "Time", "Action", "By", "Dataset", "Figures"], rows, "events")


def _models(models: Sequence[ModelSection]) -> str:
    if not models:
        return '<p class="muted">No registered models.</p>'
    head = ["Model", "Version", "Trained on", "ε", "δ", "Class", "Empirical audit"]
    rows = []
    for m in models:
        trained = "—" if m.dataset is None else f"{m.dataset} v{m.dataset_version}"
        audits = []
        for a in m.audits:
            attacks = "; ".join(f"{n}: ε ≥ {_n(b)} (AUC {_n(auc)})" for n, auc, b in a.attacks)
            cls = ' class="exceeded"' if a.exceeded else ""
            audits.append(f"<div{cls}>{_e(_t(a.time))}: {_e(a.verdict)} {_e(attacks)}</div>")
        rows.append(
            [
                (_e(m.name), False),
                (str(m.version), True),
                (_e(trained), False),
                (_n(m.epsilon), True),
                (_n(m.delta), True),
                (_e(m.model_class or "—"), False),
                ("".join(audits) or "none recorded", False),
            ]
        )
    return _table(head, rows, "models")


def render(report: DpoReport) -> str:
    """The whole report as an HTML document (a string)."""
    if report.since is None and report.until is None:
        period = "all time"
    else:
        period = f"from {_t(report.since)} to {_t(report.until)}"
    datasets = "".join(_dataset(d) for d in report.datasets) or (
        '<p class="muted">No datasets.</p>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>privml report: {_e(report.vault)}</title><style>{_STYLE}</style></head><body>"
        f"{_banner(report)}"
        "<h1>Privacy report for the data-protection officer</h1>"
        f'<p class="muted">Vault {_e(report.vault)}; generated {_e(_t(report.generated))}. '
        f"Refusals and key events: {_e(period)}. Budgets and ledgers: all time. "
        "This report holds names, figures and counts only, never a data value.</p>"
        f'<section id="budgets"><h2>Privacy budgets and ledgers</h2>{datasets}</section>'
        f"{_audit_section(report)}"
        f'<section id="refusals"><h2>Refusals</h2>{_refusals(report.refusals)}</section>'
        f'<section id="models"><h2>Models</h2>{_models(report.models)}</section>'
        f'<section id="events"><h2>Key rotation and erasure</h2>{_events(report.events)}</section>'
        "</body></html>\n"
    )
