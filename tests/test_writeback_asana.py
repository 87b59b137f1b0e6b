"""Asana write-back against the Asana emulator: pmsync's custom fields where a project has them, project status
updates, its portfolio project, and what a push must never touch. The tool is synced into DuckDB, the schedule
computed, and the plan pushed with `writeback.push.run_push`; everything is read back through the asana SDK."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import asana
import pandas as pd
import pytest
import yaml
from conftest import incremental_sync

from connectors.asana import ITEM_MARK, PMSYNC_FIELDS, AsanaConnector
from connectors.base import Write
from connectors.registry import build_connector
from pmsync.config import AsanaConnection, Config, load_config
from pmsync.run import open_config_warehouse, run_sync
from sandbox.core import CREDENTIALS
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, task_uid
from schedule.compute import compute_and_store
from warehouse.base import Warehouse
from writeback.plan import plan_writes

pytestmark = pytest.mark.skipif(importlib.util.find_spec("writeback.push") is None,
                                reason="writeback/push.py (run_push) does not exist yet")

FIELD_NAMES = {spec.name for spec in PMSYNC_FIELDS.values()}
TASK_OWN_FIELDS = ("name", "notes", "due_on", "start_on", "completed", "assignee.gid", "parent.gid",
                   "resource_subtype")
READ_FIELDS = ",".join((*TASK_OWN_FIELDS, "custom_fields.name", "custom_fields.display_value",
                        "custom_fields.number_value", "custom_fields.date_value", "custom_fields.enum_value.name"))


def push(config: Config, **options: Any) -> Any:
    from writeback.push import run_push

    return run_push(config, **options)


def asana_config(box: Sandbox, tmp_path: Path, portfolio_project: str | None = None, also: tuple[str, ...] = (),
                 **connection: Any) -> Config:
    """A configuration with just the sandbox's Asana connection, plus the connections of the tools in `also`."""
    raw = box.config(f"duckdb:///{tmp_path / 'pmsync.duckdb'}")
    conn = next(c for c in raw["connections"] if c["tool"] == "asana")
    conn.update(connection)
    others = [c for c in raw["connections"] if c["tool"] in also]
    for other in others:
        other["rate_limit"] = {"requests_per_second": 5000}
    raw["connections"], raw["links"] = [conn, *others], []
    if portfolio_project:
        raw["writeback"] = {"portfolio": {"asana_project": {"connection": conn["name"], "id": portfolio_project}}}
    path = tmp_path / "pmsync.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def sync_and_schedule(config: Config) -> Warehouse:
    outcome = run_sync(config, None)
    assert outcome.ok, outcome.failures
    warehouse = open_config_warehouse(config)
    compute_and_store(warehouse, config, TEST_AS_OF)
    return warehouse


def sdk(box: Sandbox) -> asana.ApiClient:
    configuration = asana.Configuration()
    configuration.host = box.api_url("asana")
    configuration.access_token = CREDENTIALS["asana"]["token"]
    return asana.ApiClient(configuration)


def tasks_of(client: asana.ApiClient, projects: list[str]) -> dict[str, dict[str, Any]]:
    """Every task of the projects and their subtasks, as Asana holds them, custom fields by name."""
    api = asana.TasksApi(client)
    out: dict[str, dict[str, Any]] = {}
    queue = [task for project in projects for task in api.get_tasks({"project": project, "opt_fields": READ_FIELDS})]
    while queue:
        task = queue.pop()
        task["fields"] = {f["name"]: f for f in task.pop("custom_fields", None) or ()}
        out[task["gid"]] = task
        queue.extend(api.get_subtasks_for_task(task["gid"], {"opt_fields": READ_FIELDS}))
    return out


def owned_by_users(tasks: dict[str, dict[str, Any]]) -> dict[str, tuple]:
    """What belongs to the tasks' people: their own fields and every custom field but pmsync's."""
    return {gid: (tuple(str(task.get(k.split(".")[0])) for k in TASK_OWN_FIELDS),
                  tuple(sorted((name, str(f.get("display_value"))) for name, f in task["fields"].items()
                               if name not in FIELD_NAMES)))
            for gid, task in tasks.items()}


def schedule_by_gid(warehouse: Warehouse) -> pd.DataFrame:
    tasks = warehouse.read("tasks", "deleted_at IS NULL")[["task_uid", "native_id", "parent_uid"]]
    return tasks.merge(warehouse.read("schedule"), on="task_uid").set_index("native_id")


def test_setup_once_then_push_shows_every_tasks_schedule_and_a_second_push_writes_nothing(
        sandbox: Sandbox, tmp_path: Path) -> None:
    config = asana_config(sandbox, tmp_path)
    connection = config.connections[0]
    emulator = sandbox.emulators["asana"]
    client = sdk(sandbox)
    warehouse = sync_and_schedule(config)
    before = tasks_of(client, connection.projects)

    created = build_connector(connection).setup_writeback(connection.projects)
    assert len(created) == 3 + 3 * len(connection.projects)
    writes = emulator.stats.writes
    assert build_connector(connection).setup_writeback(connection.projects) == []
    assert emulator.stats.writes == writes

    outcome = push(config)
    assert outcome.ok, (outcome.failures, [r.errors for r in outcome.results.values()])
    after = tasks_of(client, connection.projects)
    schedule = schedule_by_gid(warehouse)
    in_projects = [gid for gid in schedule.index if after[gid]["fields"]]
    assert len(in_projects) > 40
    for gid in in_projects:
        row, fields = schedule.loc[gid], after[gid]["fields"]
        slip = None if pd.isna(row["slip_days"]) else float(row["slip_days"])
        forecast = None if pd.isna(row["forecast_finish"]) else pd.Timestamp(row["forecast_finish"]).date().isoformat()
        assert fields["pmsync slip days"]["number_value"] == slip, gid
        assert (fields["pmsync forecast finish"]["date_value"] or {}).get("date") == forecast, gid
        assert (fields["pmsync state"]["enum_value"] or {}).get("name") == row["state"], gid
    assert owned_by_users(after) == owned_by_users(before)

    updates = asana.StatusUpdatesApi(client)
    health = warehouse.read("project_health").set_index("project_uid")["health"]
    for project in connection.projects:
        (update,) = list(updates.get_statuses_for_object(project, {"opt_fields": "status_type,title,text"}))
        expected = {"green": "on_track", "amber": "at_risk", "red": "off_track"}[health[f"{connection.name}:{project}"]]
        assert update["status_type"] == expected

    writes = emulator.stats.writes
    assert push(config).ok
    assert emulator.stats.writes == writes


def test_a_project_without_pmsyncs_fields_is_skipped_quietly(sandbox: Sandbox, tmp_path: Path) -> None:
    config = asana_config(sandbox, tmp_path)
    connection = config.connections[0]
    with_fields, without = connection.projects[0], connection.projects[1]
    build_connector(connection).setup_writeback([with_fields])
    sync_and_schedule(config)
    client = sdk(sandbox)
    before = tasks_of(client, [without])

    outcome = push(config)
    assert outcome.ok
    after = tasks_of(client, [without])
    assert after == before
    assert any(task["fields"].get("pmsync state") for task in tasks_of(client, [with_fields]).values())


def test_writes_failing_with_500_are_recorded_and_completed_by_the_next_push(sandbox: Sandbox, tmp_path: Path) -> None:
    config = asana_config(sandbox, tmp_path, rate_limit={"max_retries": 1, "max_wait_seconds": 0.01})
    connection = config.connections[0]
    build_connector(connection).setup_writeback(connection.projects)
    warehouse = sync_and_schedule(config)
    emulator = sandbox.emulators["asana"]
    fault = emulator.inject("status", status=500, method="PUT", times=-1)
    assert not push(config).ok
    ledger = warehouse.read("writeback_ledger")
    assert (ledger[ledger["target"] == "asana.custom_fields"]["status"] == "failed").any()

    emulator.faults.remove(fault)
    assert push(config).ok
    ledger = warehouse.read("writeback_ledger")
    assert ledger["status"].isin(["written", "skipped"]).all()  # skipped: subtasks, which are in no project
    assert ledger.loc[ledger["status"] == "skipped", "error"].str.contains("no project").all()
    schedule = schedule_by_gid(warehouse)
    after = tasks_of(sdk(sandbox), connection.projects)
    for gid, state in schedule["state"].items():
        if after[gid]["fields"]:
            assert (after[gid]["fields"]["pmsync state"]["enum_value"] or {}).get("name") == state


def portfolio_tasks(client: asana.ApiClient, project: str) -> dict[str, dict[str, Any]]:
    listed = asana.TasksApi(client).get_tasks({"project": project, "opt_fields": "name,notes,completed"})
    return {task["gid"]: task for task in listed if ITEM_MARK in (task.get("notes") or "")}


def test_portfolio_project_holds_one_task_per_project_and_milestone_and_completes_vanished_ones(
        sandbox: Sandbox, tmp_path: Path) -> None:
    p = sandbox.portfolio
    *synced, container = asana_config(sandbox, tmp_path).connections[0].projects
    # The container is not synced itself: its tasks are pmsync's items, not work to schedule.
    config = asana_config(sandbox, tmp_path, portfolio_project=container, also=("trello",), projects=synced)
    client = sdk(sandbox)
    warehouse = sync_and_schedule(config)
    planned = plan_writes(warehouse, config).query("target == 'portfolio.item'")
    assert (planned["payload"].map(lambda payload: payload["kind"]) == "milestone").any()
    assert push(config, setup=True).ok

    items = portfolio_tasks(client, container)
    assert sorted(task["name"] for task in items.values()) == sorted(planned["payload"].map(lambda x: x["title"]))
    assert not any(task["completed"] for task in items.values())
    writes = sandbox.emulators["asana"].stats.writes
    assert push(config).ok
    assert sandbox.emulators["asana"].stats.writes == writes
    assert portfolio_tasks(client, container) == items

    milestone = next(row for row in planned.itertuples(index=False) if row.payload["kind"] == "milestone")
    i = next(i for i in range(p.tasks.size) if task_uid(p, i) == milestone.task_uid)
    sandbox.call(p.delete, i)
    warehouse = sync_and_schedule(config)
    assert push(config).ok
    after = portfolio_tasks(client, container)
    assert set(after) == set(items)
    assert [task["name"] for task in after.values() if task["completed"]] == [milestone.payload["title"]]


def test_a_portfolio_item_is_found_again_without_its_ledger_row_and_recreated_when_deleted(
        sandbox: Sandbox, tmp_path: Path) -> None:
    raw = asana_config(sandbox, tmp_path).connections[0]
    container = raw.projects[0]

    def connector() -> AsanaConnector:
        return AsanaConnector.from_config(AsanaConnection.model_validate(raw.model_dump() | {
            "auth": {"token": CREDENTIALS["asana"]["token"]}}))

    payload = {"kind": "project", "title": "Platform (Jira)", "tool": "jira", "health": "amber", "state": None,
               "forecast_finish": "2026-12-01", "baseline_due": "2026-11-20", "slip_days": 11,
               "url": "https://acme.atlassian.net/browse/PLAT"}
    first = connector().write(Write("portfolio.item", container, payload))
    found = connector().write(Write("portfolio.item", container, {**payload, "health": "red"}))
    assert found.remote_ref == first.remote_ref
    asana.TasksApi(sdk(sandbox)).delete_task(first.remote_ref)
    recreated = connector().write(Write("portfolio.item", container, payload, payload, first.remote_ref))
    assert recreated.remote_ref != first.remote_ref
    assert [t["gid"] for t in portfolio_tasks(sdk(sandbox), container).values()] == [recreated.remote_ref]


def test_the_sync_after_a_push_leaves_out_pmsyncs_own_edits_and_reads_everyone_elses(
        sandbox: Sandbox, tmp_path: Path) -> None:
    config = asana_config(sandbox, tmp_path)
    warehouse = sync_and_schedule(config)
    top = warehouse.read("tasks", "parent_uid IS NULL", columns=["native_id"])["native_id"].tolist()
    warehouse.close()
    api = asana.TasksApi(sdk(sandbox))
    # Someone changes a task between the sync and the push: pmsync's write then lands on top of that change.
    before_push = top[0]
    api.update_task({"data": {"due_on": "2030-06-01"}}, before_push, {})
    outcome = push(config, setup=True)
    assert outcome.ok, (outcome.failures, outcome.results)
    with open_config_warehouse(config) as warehouse:
        ledger = warehouse.read("writeback_ledger", "target = 'asana.custom_fields' AND status = 'written'")
    written = [uid.split(":", 1)[1] for uid in ledger["task_uid"]]
    assert before_push in written
    due_moved, renamed = [gid for gid in written if gid != before_push][:2]
    api.update_task({"data": {"due_on": "2031-01-15"}}, due_moved, {})
    api.update_task({"data": {"name": "Renamed by someone"}}, renamed, {})

    me_reads = sandbox.emulators["asana"].stats.by_route["GET /api/1.0/users/me"]
    result, story_reads = incremental_sync(config, sandbox.emulators["asana"], "GET /api/1.0/tasks/{gid}/stories")
    # Only the three tasks someone else changed are read again; the rest of the push echo is left out.
    assert result.loaded == 3
    assert story_reads == 3
    # Whose events are pmsync's: one read of the token's user, however many projects' events ask at once.
    assert sandbox.emulators["asana"].stats.by_route["GET /api/1.0/users/me"] - me_reads == 1
    # No read per task of the echo: the pull costs its listing and events pages, not one request per task written.
    assert result.requests < len(written)
    with open_config_warehouse(config) as warehouse:
        tasks = warehouse.read("tasks", columns=["native_id", "due_date", "title"]).set_index("native_id")
    assert pd.Timestamp(tasks.loc[due_moved, "due_date"]).date().isoformat() == "2031-01-15"
    assert pd.Timestamp(tasks.loc[before_push, "due_date"]).date().isoformat() == "2030-06-01"
    assert tasks.loc[renamed, "title"] == "Renamed by someone"
