"""`pmsync demo`: the whole job on the sandbox through Dagster, leaving a warehouse and reports behind."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sandbox.server import CONNECTION_NAMES
from warehouse import open_warehouse

PMSYNC = Path(sys.executable).with_name("pmsync")


def test_demo_runs_the_whole_job_and_leaves_every_connection_the_schedule_and_the_reports(tmp_path: Path):
    done = subprocess.run([str(PMSYNC), "demo", "--folder", str(tmp_path / "demo"), "--as-of", "2026-11-22"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Dagster run succeeded" in done.stdout and "Portfolio, worst slippage first" in done.stdout
    with open_warehouse(f"duckdb:///{tmp_path / 'demo' / 'pmsync.duckdb'}") as warehouse:
        connections = set(warehouse.query("SELECT DISTINCT connection FROM tasks")["connection"])
        schedule = warehouse.count("schedule")
        health = warehouse.count("project_health")
    assert connections == set(CONNECTION_NAMES.values())
    assert schedule > 250 and health == 11
    reports = {p.suffix for p in (tmp_path / "demo" / "reports").iterdir()}
    assert reports == {".html", ".xlsx", ".xml"}
