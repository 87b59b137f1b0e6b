"""End to end in the Dagster UI: the webserver on a loopback port, the sync job launched, its run seen to succeed in
headless Chromium (Debian's, driven by Playwright), and a screenshot of the asset graph saved."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_pipelines import write_sandbox_config

from sandbox.server import Sandbox

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOCATION = "pipelines.definitions"
# Runs start at once in a subprocess of the webserver: no daemon is needed to dequeue them.
INSTANCE_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""
STARTUP_SECONDS = 90
RUN_SECONDS = 120
MAX_GROUPS = 10

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                      "(run `make browser`)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webserver(sandbox: Sandbox, tmp_path: Path) -> Iterator[str]:
    """dagster-webserver on this code location, with a temporary DAGSTER_HOME and a Jira-only sandbox config."""
    config = write_sandbox_config(sandbox, tmp_path / "project", "duckdb:///pmsync.duckdb", tools=("jira",))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = free_port()
    env = {**os.environ, "PMSYNC_CONFIG": str(config), "DAGSTER_HOME": str(home)}
    log = (tmp_path / "webserver.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-m", LOCATION],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, tmp_path / "webserver.log")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"dagster-webserver did not answer within {STARTUP_SECONDS}s:\n{log.read_text()[-3000:]}")


def launch_sync_job(url: str) -> str:
    """Launch the whole sync job through the webserver's GraphQL API; returns the run id."""
    from dagster_graphql import DagsterGraphQLClient

    host, port = url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port))
    return client.submit_job_execution("pmsync_sync", repository_location_name=LOCATION,
                                       repository_name="__repository__")


def dismiss_welcome(page) -> None:
    """Close the first-visit dialog (newsletter sign-up) a fresh DAGSTER_HOME shows over every page."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=10_000)
    except PlaywrightTimeout:  # no dialog on this version: nothing to close
        return
    skip.click()


def expand_asset_groups(page) -> None:
    """Open every collapsed group of the lineage graph (once it has drawn) so the screenshot shows each asset."""
    from playwright.sync_api import expect

    expand = page.get_by_role("img", name="unfold_more")
    expect(expand.first).to_be_visible(timeout=60_000)
    for _ in range(MAX_GROUPS):
        if expand.count() == 0:
            return
        expand.first.click()


def test_sync_job_launched_from_the_webserver_succeeds_in_the_ui(webserver: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    run_id = launch_sync_job(webserver)
    screenshot = tmp_path / "asset-graph.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{webserver}/runs/{run_id}")
            dismiss_welcome(page)
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_SECONDS * 1000)
            page.goto(f"{webserver}/asset-groups")
            expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=60_000)
            expand_asset_groups(page)
            expect(page.get_by_text("project_health").first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000, f"the asset graph screenshot looks empty: {screenshot}"
    print(f"asset graph screenshot: {screenshot}")
