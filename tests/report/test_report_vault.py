"""The report of a vault: its figures against the vault's own, its audit entry, what it
leaves out, and a tampered vault's report (SQLite and PostgreSQL metadata)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

import privml
from privml.report import DpoReport


def _report(vault: privml.Vault, tmp_path: Path, **kw) -> tuple[DpoReport, str]:
    out = tmp_path / "report.html"
    report = vault.report(out, **kw)
    return report, out.read_text(encoding="utf-8")


def test_figures_are_the_vaults_own(busy_vault, tmp_path):
    report, page = _report(busy_vault, tmp_path)
    assert report.ok and report.verification is not None and report.verification.ok
    (section,) = report.datasets
    status = busy_vault.budget("patients")
    assert section.status is not None
    assert section.status.epsilon_spent == pytest.approx(status.epsilon_spent)
    assert section.status.remaining == pytest.approx(status.remaining)
    assert section.reserved_by_principal == {"ana": 1}
    assert set(section.status.by_principal) == {"ana", "analyst"}
    assert [r.status for r in section.rows] == ["committed", "committed", "reserved"]
    # the plot's last points are the filter's figure and the naive sum of every active event
    assert section.tight[-1] == pytest.approx(status.epsilon_spent)
    assert section.naive[-1] == pytest.approx(status.epsilon_naive)
    assert list(section.tight) == sorted(section.tight)
    assert list(section.naive) == sorted(section.naive)
    remaining = f"{status.remaining:.4g}"
    assert re.search(r"ε remaining<b>" + re.escape(remaining) + "</b>", page)
    assert page.count("<svg") == 1 and "privacy filter (admission)" in page
    assert 'id="integrity" class="banner ok"' in page


def test_refusals_models_and_key_events(busy_vault, hostile, tmp_path):
    report, page = _report(busy_vault, tmp_path)
    reasons = {(r.principal, r.reason) for r in report.refusals}
    assert ("ana", "AccessDenied") in reasons
    assert ("ana", "privacy budget exceeded") in reasons
    assert (hostile, "AccessDenied") in reasons
    (exceeded,) = [r for r in report.refusals if r.reason == "privacy budget exceeded"]
    assert exceeded.requested_epsilon == pytest.approx(0.95)
    (model,) = report.models
    assert (model.name, model.epsilon) == ("tree", None)
    (audit,) = model.audits
    assert audit.best_lower_bound is not None and audit.best_lower_bound > 0
    assert audit.verdict.startswith("Non-private model")
    assert [e.action for e in report.events] == ["dataset.rotate_keys"]
    assert all(isinstance(v, int | float | bool) for v in report.events[0].figures.values())
    assert "Non-private model" in page and "dataset.rotate_keys" in page


def test_the_period_bounds_refusals_and_events(busy_vault, tmp_path):
    future = datetime.now(UTC) + timedelta(days=1)
    report, page = _report(busy_vault, tmp_path, since=future)
    assert (report.refusals, report.events) == ((), ())
    assert "No refusals in the period" in page
    past = datetime.now(UTC) - timedelta(days=1)
    report, _ = _report(busy_vault, tmp_path, until=past.isoformat())
    assert (report.refusals, report.events) == ((), ())
    report, _ = _report(busy_vault, tmp_path, since=past, until=future)
    assert len(report.refusals) == 3
    # budgets and ledgers are the dataset's lifetime, whatever the period
    assert len(report.datasets[0].rows) == 3


def test_reading_for_a_report_is_one_audit_entry_of_figures(busy_vault, tmp_path):
    before = len(busy_vault.audit.entries())
    report, _ = _report(busy_vault, tmp_path)
    entries = busy_vault.audit.entries()
    assert len(entries) == before + 1
    last = entries.iloc[-1]
    assert (last["action"], last["outcome"]) == ("vault.report", "ok")
    assert last["details"] == report.figures()
    assert all(v is None or isinstance(v, int | bool | str) for v in last["details"].values())
    assert busy_vault.audit.verify().ok


def test_no_data_value_reaches_the_page(busy_vault, busy_patients, tmp_path):
    _, page = _report(busy_vault, tmp_path)
    text = page.replace("&#x27;", "'")
    for value in [*busy_patients["patient"], *busy_patients["note"]]:
        assert value not in text
    for value in busy_patients["glucose"]:
        assert f">{value}<" not in text


class _Tags(HTMLParser):
    """Every element and attribute name a browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_markup_in_vault_names_is_text_not_code(busy_vault, hostile, tmp_path):
    report, page = _report(busy_vault, tmp_path)
    assert hostile in {r.principal for r in report.refusals}  # the name is in the report...
    tags = _Tags()
    tags.feed(page)
    assert hostile in "".join(tags.text)  # ...as text
    # no element that runs or fetches, no event handler, no link: nothing leaves the page
    assert not tags.tags & {"script", "img", "iframe", "object", "embed", "link", "a", "base"}
    assert not {a for a in tags.attributes if a.startswith("on") or a in ("src", "href")}
    assert "default-src 'none'" in page  # and a policy that forbids scripts and fetches


def test_a_tampered_audit_log_gets_a_report_with_a_banner(tampered, tmp_path):
    vault = tampered("UPDATE audit_log SET outcome = 'ok' WHERE outcome = 'denied'")
    report, page = _report(vault, tmp_path)
    assert not report.ok and report.verification is not None and not report.verification.ok
    assert any("modified" in p for p in report.problems)
    assert 'id="integrity" class="banner fail"' in page
    assert page.index("VERIFICATION FAILED") < page.index("<h1>")
    assert report.datasets[0].status is not None  # the rest is still there


def test_tampered_metadata_gets_a_report_naming_it(tampered, tmp_path):
    vault = tampered("UPDATE datasets SET budget_epsilon = 1000 WHERE name = 'patients'")
    report, page = _report(vault, tmp_path)
    assert not report.ok
    assert any("datasets" in p for p in report.problems)
    assert "VERIFICATION FAILED" in page and "1000" not in re.sub(r"<[^>]+>", "", page)


def test_bad_requests_are_refused_before_anything_is_read(busy_vault, tmp_path):
    before = len(busy_vault.audit.entries())
    with pytest.raises(privml.ConfigurationError, match="does not exist"):
        busy_vault.report(tmp_path / "missing" / "r.html")
    with pytest.raises(privml.ConfigurationError, match="is a folder"):
        busy_vault.report(tmp_path)
    with pytest.raises(privml.ConfigurationError, match="until= is before since="):
        busy_vault.report(tmp_path / "r.html", since="2026-02-01", until="2026-01-01")
    with pytest.raises(privml.ConfigurationError, match="ISO 8601"):
        busy_vault.report(tmp_path / "r.html", since="last tuesday")
    with pytest.raises(privml.ConfigurationError, match="file path"):
        busy_vault.report(42)  # type: ignore[arg-type]
    assert len(busy_vault.audit.entries()) == before
    assert not (tmp_path / "r.html").exists()


def test_a_closed_vault_refuses(demo_vault, tmp_path):
    demo_vault.close()
    with pytest.raises(privml.exceptions.VaultClosedError):
        demo_vault.report(tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_an_erasure_shows_its_counts_never_the_subject(demo_vault, tmp_path):
    (pseudonym,) = demo_vault.pseudonymize("patients", "patient", ["P-1001"])
    demo_vault.erase_subject("patients", identifier="P-1001")
    report, page = _report(demo_vault, tmp_path)
    (erasure,) = [e for e in report.events if e.action == "dataset.erase_subject"]
    assert erasure.figures["rows_removed"] == 2
    assert pseudonym is not None and pseudonym not in page and "P-1001" not in page
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o600


def test_what_open_reservations_hold(busy_vault, tmp_path):
    report, page = _report(busy_vault, tmp_path)
    section = report.datasets[0]
    assert section.status is not None and section.epsilon_committed is not None
    held = section.status.epsilon_spent - section.epsilon_committed
    assert 0 < held <= 0.1 + 1e-9  # the open reservation is a Laplace release of ε = 0.1
    # committed alone is what the ledger's own filter says once the reservation is released
    events = busy_vault.ledger.events("patients")
    (request_id,) = events.loc[events["status"] == "reserved", "request_id"]
    busy_vault.ledger.release(request_id)
    after = busy_vault.budget("patients").epsilon_spent
    assert section.epsilon_committed == pytest.approx(after)
    assert re.search(r"ε held by open reservations<b>" + re.escape(f"{held:.4g}"), page)


@pytest.fixture
def far_east(monkeypatch):
    """The process's local time zone is UTC+9 for the test."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.sqlite_only("time zones are the report's arithmetic, not the database's")
def test_the_period_holds_in_any_time_zone(busy_vault, tmp_path, far_east):
    now = datetime.now(UTC)
    report, _ = _report(busy_vault, tmp_path, since=now - timedelta(hours=1))
    assert len(report.refusals) == 3
    report, _ = _report(busy_vault, tmp_path, since=now + timedelta(hours=1))
    assert report.refusals == ()
    # a naive time is local (here UTC+9): one hour ago, written in Tokyo's time
    local = (now - timedelta(hours=1)).astimezone().replace(tzinfo=None)
    report, _ = _report(busy_vault, tmp_path, since=local.isoformat())
    assert len(report.refusals) == 3


def test_a_lost_anchor_is_named_and_its_checkpoints_are_listed(busy_vault, dba, busy_key, tmp_path):
    report, page = _report(busy_vault, tmp_path)
    assert report.checkpoints and report.checkpoints[-1][0] <= report.verification.entries_checked
    assert f"<td>{report.checkpoints[-1][1]}</td>" in page
    folder = Path(busy_vault.path)
    busy_vault.close()
    (folder / "audit.anchor").unlink()
    with dba.vaults.open(folder, key=busy_key) as vault:
        report, page = _report(vault, tmp_path)
    assert report.checkpoints == ()
    assert any("anchor file" in p and "missing" in p for p in report.problems)
    assert "VERIFICATION FAILED" in page
