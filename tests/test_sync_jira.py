"""Jira end to end through the spine, on DuckDB and on PostgreSQL: full, incremental, deletions, quarantine,
a killed sync resumed, and bad configurations, all against the sandbox over HTTP."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import yaml
from conftest import Backend

import connectors.jira as jira_module
from pmsync.config import load_config
from pmsync.run import run_sync
from sandbox import ids
from sandbox.generator import JIRA, LINK_NATIVE, LINK_REMOTE, NO_DAY, STATUS_CATEGORIES, day_to_date
from sandbox.server import Sandbox, task_uid

PMSYNC = Path(sys.executable).with_name("pmsync")
REPO = Path(__file__).resolve().parents[1]
# `pmsync sync`'s own run, printing a line at each committed group.
COMMITTING_SYNC = """
import sys
from pathlib import Path
import connectors.jira as jira_module
from pmsync.config import load_config
from pmsync.run import run_sync
from pmsync.sync import Progress
committed = Progress(advance=lambda name, records: print("committed", flush=True))
run_sync(load_config(Path(sys.argv[1])), progress=committed)
"""


def jira_only_config(box: Sandbox, backend: Backend, path: Path, **sync: object) -> Path:
    """The sandbox's configuration with only its Jira connection, pointed at the backend's warehouse."""
    config = box.config(warehouse=backend.config_url)
    config["connections"] = [c for c in config["connections"] if c["tool"] == "jira"]
    config["links"] = []
    config["sync"].update(sync)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def sync(config_path: Path, **options):
    outcome = run_sync(load_config(config_path), **options)
    assert outcome.ok, outcome.failures
    return outcome


def tasks_of(backend: Backend) -> pd.DataFrame:
    with backend.open() as warehouse:
        return warehouse.read("tasks").set_index("task_uid")


def live_jira(box: Sandbox) -> np.ndarray:
    return box.portfolio.task_indexes(JIRA)


def test_a_full_sync_loads_every_issue_once_equal_to_the_sandbox(sandbox: Sandbox, backend: Backend, tmp_path: Path):
    sync(jira_only_config(sandbox, backend, tmp_path / "pmsync.yaml"))
    p = sandbox.portfolio
    tasks = tasks_of(backend)
    expected = {task_uid(p, int(i)): int(i) for i in live_jira(sandbox)}
    assert set(tasks.index) == set(expected) and tasks.index.is_unique
    for uid, i in expected.items():
        row = tasks.loc[uid]
        due = day_to_date(int(p.tasks.due[i]))
        assert (row.due_date.date() if pd.notna(row.due_date) else None) == due, uid
        assert row.status_category == STATUS_CATEGORIES[int(p.tasks.status[i])], uid
        parent = int(p.tasks.parent[i])
        assert (row.parent_uid if isinstance(row.parent_uid, str) else None) == (task_uid(p, parent) if parent >= 0 else None)
        assert row.key == ids.jira_key(p, i)
    with backend.open() as warehouse:
        deps = warehouse.read("dependencies")
        history = warehouse.read("task_history", where="source = 'tool_history'", order_by="task_uid, valid_from")
        runs = warehouse.read("sync_runs")
    native = set(zip(deps.predecessor_uid, deps.successor_uid))
    k = p.links_of(LINK_NATIVE)
    want = {(task_uid(p, int(a)), task_uid(p, int(b))) for a, b in zip(p.link_pred[k], p.link_succ[k])
            if p.tasks.tool[b] == JIRA}
    assert want <= native
    remote = deps.loc[deps.origin == "remote_link"]
    k = p.links_of(LINK_REMOTE)
    assert set(remote.predecessor_uid) == {f"url:{ids.task_url(p, int(a))}" for a in p.link_pred[k]}
    for uid, i in list(expected.items()):
        changes = p.due_changes(i)
        if not changes:
            continue
        dues = history.loc[history.task_uid == uid, "due_date"].dt.date.tolist()
        assert dues == [day_to_date(changes[0].old_day)] + [day_to_date(c.new_day) for c in changes], uid
    assert runs.iloc[0]["status"] == "succeeded" and runs.iloc[0]["records_loaded"] == len(expected)


def test_after_ten_changes_the_next_sync_pulls_only_those(sandbox: Sandbox, backend: Backend, tmp_path: Path):
    config = jira_only_config(sandbox, backend, tmp_path / "pmsync.yaml")
    first = sync(config).results[0]
    p = sandbox.portfolio
    changed = [int(i) for i in live_jira(sandbox)[::11][:10]]
    new_due = {}
    for i in changed:
        day = int(p.tasks.due[i]) if p.tasks.due[i] != NO_DAY else 20_800
        new_due[i] = day + 9
        sandbox.call(p.set_due, i, day + 9)
    time.sleep(1.1)
    second = sync(config).results[0]
    assert second.mode == "incremental"
    assert second.loaded == 10
    pages = min(len(p.projects_of(JIRA)), jira_module.SEARCH_CHAINS)  # a search per project, side by side
    constant = 4  # myself, the project reads, the census page
    assert second.requests <= constant + pages + len(changed) and second.requests < first.requests / 5
    tasks = tasks_of(backend)
    with backend.open() as warehouse:
        runs = warehouse.read("sync_runs", order_by="started_at")
        history = warehouse.read("task_history")
    assert runs["requests"].tolist()[-1] == second.requests
    for i, day in new_due.items():
        uid = task_uid(p, i)
        assert tasks.loc[uid, "due_date"].date() == day_to_date(day)
        open_row = history.loc[(history.task_uid == uid) & history.valid_to.isna()]
        assert open_row.due_date.iloc[0].date() == day_to_date(day)


def test_a_deleted_issue_gets_deleted_at_and_nothing_else_changes(sandbox: Sandbox, backend: Backend, tmp_path: Path):
    config = jira_only_config(sandbox, backend, tmp_path / "pmsync.yaml")
    sync(config)
    before = tasks_of(backend)
    gone = int(live_jira(sandbox)[7])
    sandbox.call(sandbox.portfolio.delete, gone)
    result = sync(config).results[0]
    after = tasks_of(backend)
    uid = task_uid(sandbox.portfolio, gone)
    assert result.deleted == 1 and pd.notna(after.loc[uid, "deleted_at"])
    unchanged = [c for c in before.columns if c not in ("last_synced_at", "deleted_at")]
    pd.testing.assert_frame_equal(before.drop(index=uid)[unchanged], after.drop(index=uid)[unchanged])
    assert after.drop(index=uid)["deleted_at"].isna().all()


def test_a_malformed_issue_is_quarantined_and_every_other_issue_loads(sandbox: Sandbox, backend: Backend, tmp_path: Path):
    config = jira_only_config(sandbox, backend, tmp_path / "pmsync.yaml")
    sandbox.emulators["jira"].inject("invalid_record", path="/search/jql", times=1)
    result = sync(config).results[0]
    with backend.open() as warehouse:
        quarantine = warehouse.read("quarantine")
    assert len(quarantine) == 1 and result.quarantined == 1
    row = quarantine.iloc[0]
    payload = orjson.loads(row.raw_payload)
    assert payload["id"] == row.native_id and "is not a date" in row.reason
    assert len(tasks_of(backend)) == len(live_jira(sandbox)) - 1


def test_a_sync_killed_midway_and_run_again_leaves_the_tables_an_uninterrupted_sync_leaves(
    backend: Backend, tmp_path: Path
):
    with Sandbox(size=1000, seed=11, as_of=date(2026, 11, 22), rate_limits=False) as box:
        killed = Backend(backend.name, backend.url, tmp_path / "killed", backend.schema and backend.schema + "_k")
        clean = Backend(backend.name, backend.url, tmp_path / "clean", backend.schema and backend.schema + "_c")
        # Two pages to a transaction: the kill lands after a commit, and the resumed sync redoes what followed.
        killed_config = jira_only_config(box, killed, tmp_path / "killed.yaml", commit_every_records=200,
                                         commit_every_seconds=3600)
        clean_config = jira_only_config(box, clean, tmp_path / "clean.yaml")
        emulator = box.emulators["jira"]
        emulator.settings.latency_s = 0.02
        # The pull runs ahead of the load, so served pages say nothing of commits: the sync says when it committed.
        process = subprocess.Popen([sys.executable, "-c", COMMITTING_SYNC, str(killed_config)], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        stuck = threading.Timer(120, process.kill)  # a sync that never commits ends the wait (and fails the test)
        stuck.start()
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "committed", \
                process.stderr.read() if process.stderr else ""
            process.send_signal(signal.SIGKILL)
            process.wait()
        finally:
            stuck.cancel()
        emulator.settings.latency_s = 0
        with killed.open() as warehouse:
            assert warehouse.get_cursor("eng-jira", "pull") is not None, "no batch was committed before the kill"
            assert 0 < warehouse.count("tasks") < len(box.portfolio.task_indexes(JIRA))
        sync(killed_config)
        sync(clean_config)
        for table, ignore in [
            ("tasks", ["first_seen_at", "last_synced_at"]),
            ("task_history", []),
            ("dependencies", ["last_seen_at"]),
            ("projects", ["first_seen_at", "last_synced_at"]),
            ("people", ["updated_at"]),
            ("quarantine", ["run_id", "quarantined_at"]),
            ("sync_state", ["updated_at"]),
        ]:
            with killed.open() as a, clean.open() as b:
                left, right = (_comparable(w.read(table), ignore) for w in (a, b))
            pd.testing.assert_frame_equal(left, right, obj=table)
        if backend.name == "postgres":
            _drop_schemas(killed.schema, clean.schema)


def _comparable(frame: pd.DataFrame, ignore: list[str]) -> pd.DataFrame:
    frame = frame.drop(columns=ignore)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _drop_schemas(*schemas: str | None) -> None:
    import psycopg
    from conftest import POSTGRES_URL

    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        for schema in schemas:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PMSYNC), *args], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "JIRA_API_TOKEN"})


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda c: c["connections"][0].update(projcts=["X"]), "projcts"),
        (lambda c: c["connections"][0]["auth"].update(token="${JIRA_API_TOKEN}"), "JIRA_API_TOKEN"),
        (lambda c: c["schedule"].update(at_risk_days="soon"), "at_risk_days"),
        (lambda c: c["connections"][0].update(url="http://127.0.0.1:9"), "127.0.0.1:9"),
        (lambda c: c["connections"][0]["auth"].update(token="not-the-token"), "credentials"),
    ],
    ids=["unknown key", "missing variable", "wrong type", "unreachable url", "wrong token"],
)
def test_a_bad_configuration_gives_one_clear_sentence_and_a_non_zero_exit(shared_sandbox: Sandbox, tmp_path, breakage, expected):
    config = shared_sandbox.config(warehouse=f"duckdb:///{tmp_path / 'w.duckdb'}")
    config["connections"] = [c for c in config["connections"] if c["tool"] == "jira"]
    config["links"] = []
    breakage(config)
    path = tmp_path / "pmsync.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    done = _run_cli("sync", "--config", str(path))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output and expected in output, output
    assert "not-the-token" not in output
    sentences = [line for line in output.splitlines() if line.startswith(("error:", "eng-jira failed:"))]
    assert len(sentences) == 1 and sentences[0].rstrip().endswith("."), output
