"""The report in a real browser: Debian's headless Chromium, driven by Playwright.

The page is opened from its file (``file://``) with every network feature of the browser
off; the test reads what a person would see. Without Chromium or Playwright the tests
skip, except under ``CI`` (set by .ci/run), where they fail: CI must run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("PRIVML_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.sqlite_only("the page is the same whatever holds the metadata")


def _missing(what: str) -> None:
    message = f"{what}: the report's browser tests need it"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI runs them (.ci/run installs Debian's chromium)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium context (its own user-data-dir), closed after the test."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        _missing(f"Chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install 'privml[dev]')")
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def _open(browser: Any, path: Path) -> tuple[Any, list[str]]:
    page = browser.new_page()
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(path.as_uri())
    return page, fetched


def test_a_healthy_report_shows_its_key_figures(busy_vault, hostile, browser, tmp_path):
    out = tmp_path / "report.html"
    report = busy_vault.report(out)
    status = busy_vault.budget("patients")
    page, fetched = _open(browser, out)

    banner = page.locator("#integrity")
    assert banner.is_visible() and "Verification OK" in banner.inner_text()
    dataset = page.locator('.dataset[data-dataset="patients"]')
    remaining = dataset.locator(".figure.remaining b")
    assert remaining.is_visible() and remaining.inner_text() == f"{status.remaining:.4g}"
    spent = dataset.locator(".figure.spent b")
    assert spent.is_visible() and spent.inner_text() == f"{status.epsilon_spent:.4g}"
    last = dataset.locator("table.ledger tbody tr").last.locator("td").nth(6)
    assert (
        last.is_visible()
        and last.inner_text() == f"{report.datasets[0].rows[-1].epsilon_after:.4g}"
    )
    chart = dataset.locator("svg.chart")
    box = chart.bounding_box()
    assert chart.is_visible() and box is not None and box["width"] > 300 and box["height"] > 150

    # the attacker's name is on the page as text, and nothing of it ran
    assert page.locator("table.refusals td").filter(has_text=hostile).count() == 1
    assert "pwned" not in page.title()
    # nothing but the file itself was fetched
    assert fetched == [out.as_uri()]

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_a_tampered_report_shows_the_failure_first(tampered, browser, tmp_path):
    vault = tampered("UPDATE audit_log SET outcome = 'ok' WHERE outcome = 'denied'")
    out = tmp_path / "report.html"
    assert not vault.report(out).ok
    page, _ = _open(browser, out)

    banner = page.locator("#integrity.banner.fail")
    assert banner.is_visible()
    assert "VERIFICATION FAILED" in banner.inner_text() and "modified" in banner.inner_text()
    top, heading = banner.bounding_box(), page.locator("h1").bounding_box()
    assert top is not None and heading is not None
    assert top["y"] < heading["y"] and top["y"] < 900  # above everything, on the first screen
    colour = banner.evaluate("element => getComputedStyle(element).backgroundColor")
    assert colour == "rgb(197, 34, 31)"  # the red of .banner.fail

    shot = tmp_path / "tampered.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_the_browser_tests_find_a_missing_chromium_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI runs them"):
        _missing("Chromium not found at /nowhere")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _missing("Chromium not found at /nowhere")
