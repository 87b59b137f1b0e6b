"""The HTML dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): it opens offline
with no console errors, its SVG Gantt has bars, and a screenshot is kept for a person to look at."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_portfolio import HEALTH, fill_warehouse

import reports
from warehouse import open_warehouse

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


@pytest.fixture
def dashboard(tmp_path: Path) -> Path:
    """The dashboard of the hand-made portfolio."""
    with open_warehouse(f"duckdb:///{tmp_path / 'pmsync.duckdb'}") as warehouse:
        fill_warehouse(warehouse)
        return reports.build(warehouse, None, "html", tmp_path / "dashboard.html")


@pytest.fixture
def page() -> Iterator[Any]:
    """A Chromium page at a laptop's screen size, offline."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 768}, offline=True)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def test_dashboard_opens_offline_without_console_errors_and_draws_the_gantt(
    dashboard: Path, page: Any, tmp_path: Path
) -> None:
    problems: list[str] = []
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"request to {request.url} failed"))
    page.goto(dashboard.as_uri())
    assert page.title() == "Portfolio schedule as of 2026-03-02"
    assert page.locator("#gantt rect.bar.forecast").count() >= len(HEALTH)
    assert page.locator("#gantt rect.bar.baseline").count() >= len(HEALTH)
    assert page.locator("#gantt polygon.milestone").count() > 0
    assert page.locator("#gantt line.as-of").count() == 1
    assert page.locator("#projects-table tbody tr").count() == len(HEALTH)
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000  # kept in pytest's tmp_path for a person to look at
    assert problems == []


def test_injected_title_stays_text_in_the_browser(dashboard: Path, page: Any) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(dashboard.as_uri())
    assert page.get_by_text("<script>alert(1)</script>").count() >= 1
    assert page.locator("body script").count() == 1
    assert dialogs == []


def test_filter_box_hides_projects_that_do_not_match(dashboard: Path, page: Any) -> None:
    page.goto(dashboard.as_uri())
    page.fill("#project-filter", "datacenter")
    visible = page.locator("#projects-table tbody tr:not([hidden])")
    assert visible.count() == 1 and "Datacenter move" in visible.inner_text()
