"""`pmsync sync` then `pmsync status` on the sandbox's own configuration: every connection, one portfolio."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Backend

from sandbox.generator import TOOLS
from sandbox.server import CONNECTION_NAMES, Sandbox

PMSYNC = Path(sys.executable).with_name("pmsync")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PMSYNC), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def synced(shared_sandbox: Sandbox, backend: Backend, tmp_path: Path):
    path = shared_sandbox.write_config(tmp_path / "pmsync.yaml", warehouse=backend.config_url)
    done = run("sync", "--config", str(path), "--as-of", "2026-11-22")
    return path, done


def test_sync_pulls_every_connection_and_status_shows_them(synced, backend: Backend, shared_sandbox: Sandbox):
    path, done = synced
    assert done.returncode == 0, done.stdout + done.stderr
    assert "synced 5 of 5 connections" in done.stdout
    status = run("status", "--config", str(path))
    assert status.returncode == 0, status.stderr
    for name in CONNECTION_NAMES.values():
        assert name in status.stdout
    with backend.open() as warehouse:
        by_connection = warehouse.query("SELECT connection, count(*) AS n FROM tasks GROUP BY connection")
        runs = warehouse.read("sync_runs")
        schedule = warehouse.count("schedule")
        health = warehouse.read("project_health")
    p = shared_sandbox.portfolio
    counts = dict(zip(by_connection["connection"], by_connection["n"]))
    for tool, name in CONNECTION_NAMES.items():
        assert counts.get(name) == len(p.task_indexes(tool)), (TOOLS[tool], counts)
    assert set(runs["status"]) == {"succeeded"}
    assert schedule == sum(counts.values()) - _cancelled(p)
    assert len(health) == len(p.projects)
    worst = health.sort_values("slip_days", ascending=False).iloc[0]
    assert worst.project_uid in status.stdout or str(worst.slip_days) in status.stdout


def test_status_of_one_project_lists_its_tasks_worst_slip_first(synced, backend: Backend):
    path, done = synced
    assert done.returncode == 0, done.stdout + done.stderr
    with backend.open() as warehouse:
        worst = warehouse.query(
            "SELECT s.task_uid, t.project_uid, t.key, s.slip_days FROM schedule s JOIN tasks t USING (task_uid)"
            " WHERE s.slip_days IS NOT NULL ORDER BY s.slip_days DESC LIMIT 1"
        ).iloc[0]
    shown = run("status", "--config", str(path), "--project", worst.project_uid)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "│" in line]
    assert worst.key in shown.stdout
    assert any(str(int(worst.slip_days)) in line for line in lines[:6])


def _cancelled(p) -> int:
    from sandbox.generator import CANCELLED

    return int((p.tasks.view("status") == CANCELLED).sum())


def test_every_cross_tool_link_the_generator_made_is_a_resolved_dependency(synced, backend: Backend, shared_sandbox):
    from sandbox.generator import LINK_ATTACHMENT, LINK_CONFIG, LINK_REMOTE
    from sandbox.server import task_uid

    path, done = synced
    assert done.returncode == 0, done.stdout + done.stderr
    p = shared_sandbox.portfolio
    with backend.open() as warehouse:
        deps = warehouse.read("dependencies")
    stored = set(zip(deps["predecessor_uid"], deps["successor_uid"]))
    for mechanism in (LINK_REMOTE, LINK_ATTACHMENT, LINK_CONFIG):
        links = p.links_of(mechanism)
        assert len(links) > 0
        for k in links:
            pair = (task_uid(p, int(p.link_pred[k])), task_uid(p, int(p.link_succ[k])))
            assert pair in stored, (mechanism, pair)
    assert not deps["predecessor_uid"].str.startswith("url:").any(), "every URL link names a task pmsync knows"
