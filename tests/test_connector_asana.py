"""The Asana connector against the Asana emulator over HTTP: what a sync loads, what it costs, how it recovers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import pandas as pd
import pytest
import yaml

import connectors.asana as asana_module
from connectors.asana import TASK_FIELDS, AsanaConnector, PullCursor
from connectors.base import Batch
from mappings.mapping import load_mapping
from mappings.normalize import normalize_tasks
from pmsync.config import AsanaConnection
from pmsync.errors import ConnectionFailed
from pmsync.links import resolve_url_links
from pmsync.sync import CENSUS_CURSOR, CENSUS_MAX_AGE, sync_connection
from sandbox import ids
from sandbox.core import CREDENTIALS, RateLimit
from sandbox.generator import (
    ASANA,
    IN_PROGRESS,
    LINK_ATTACHMENT,
    LINK_NATIVE,
    LINK_REMOTE,
    MILESTONE,
    NO_DAY,
    STATUS_CATEGORIES,
    SUBTASK,
    TODO,
    day_to_date,
)
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, task_uid
from tests.test_connector_trello_overlap import Gate
from warehouse import open_warehouse
from warehouse.base import Warehouse

CONNECTION = "mkt-asana"
TOKEN = CREDENTIALS["asana"]["token"]
REPO = Path(__file__).resolve().parents[1]


def _asana_only() -> Sandbox:
    return Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("asana",))


@pytest.fixture(scope="module")
def shared_box() -> Iterator[Sandbox]:
    """A read-only sandbox serving only Asana, shared by the module."""
    with _asana_only() as box:
        yield box


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """A sandbox serving only Asana that one test may change."""
    with _asana_only() as sandbox_:
        yield sandbox_


def connection(box: Sandbox, **overrides: Any) -> AsanaConnection:
    p = box.portfolio
    raw = {"name": CONNECTION, "tool": "asana", "base_url": box.api_url("asana"), "auth": {"token": TOKEN},
           "workspace": ids.ASANA_WORKSPACE_GID,
           "projects": [ids.asana_project_gid(pr.index) for pr in p.projects_of(ASANA)], **overrides}
    return AsanaConnection.model_validate(raw)


@pytest.fixture
def connect() -> Iterator[Any]:
    made: list[AsanaConnector] = []

    def build(box: Sandbox, **overrides: Any) -> AsanaConnector:
        connector = AsanaConnector.from_config(connection(box, **overrides))
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


def asana_tasks(box: Sandbox) -> list[int]:
    return [int(i) for i in box.portfolio.task_indexes(ASANA)]


def hidden_parents(box: Sandbox) -> int:
    """Tasks whose subtasks no project lists (the generated subtasks hang under stories)."""
    t = box.portfolio.tasks
    return len({int(t.parent[i]) for i in asana_tasks(box) if t.kind[i] == SUBTASK})


def parents_with_subtasks(box: Sandbox) -> int:
    t = box.portfolio.tasks
    return len({int(t.parent[i]) for i in asana_tasks(box) if t.parent[i] >= 0})


def pulled_gids(batches: list[Batch]) -> list[str]:
    return [record["gid"] for batch in batches for record in batch.records]


def expected_category(box: Sandbox, i: int) -> str:
    """The portfolio's status as Asana can show it: a subtask has no section, so in progress reads as to do."""
    t = box.portfolio.tasks
    status = int(t.status[i])
    if t.kind[i] == SUBTASK and status == IN_PROGRESS:
        status = TODO
    return STATUS_CATEGORIES[status]


def sync(box: Sandbox, warehouse: Warehouse, full: bool = False) -> Any:
    connector = AsanaConnector.from_config(connection(box))
    try:
        return sync_connection(connector, load_mapping("asana"), warehouse, full=full)
    finally:
        connector.close()


def last_run(warehouse: Warehouse) -> pd.Series:
    runs = warehouse.query("SELECT * FROM sync_runs WHERE connection = %s ORDER BY started_at", [CONNECTION])
    return runs.iloc[-1]


# -- a full pull ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_pull(shared_box: Sandbox) -> tuple[list[Batch], dict[str, float]]:
    connector = AsanaConnector.from_config(connection(shared_box))
    try:
        return list(connector.pull(None)), connector.stats.snapshot()
    finally:
        connector.close()


def test_full_sync_loads_every_task_once_with_the_portfolios_dates_status_and_parent(shared_box, warehouse) -> None:
    p, t = shared_box.portfolio, shared_box.portfolio.tasks
    result = sync(shared_box, warehouse, full=True)
    assert result.ok and result.quarantined == 0
    tasks = warehouse.read("tasks").set_index("task_uid")
    expected = {task_uid(p, i): i for i in asana_tasks(shared_box)}
    assert sorted(tasks.index) == sorted(expected)
    for uid, i in expected.items():
        row = tasks.loc[uid]
        due = day_to_date(int(t.due[i])) if t.due[i] != NO_DAY else None
        assert (None if pd.isna(row["due_date"]) else row["due_date"].date()) == due, uid
        parent = int(t.parent[i])
        assert (None if pd.isna(row["parent_uid"]) else row["parent_uid"]) == (
            task_uid(p, parent) if parent >= 0 else None), uid
        assert row["status_category"] == expected_category(shared_box, i), uid
        assert row["project_uid"] == f"{CONNECTION}:{ids.asana_project_gid(int(t.project[i]))}", uid
    assert tasks["is_milestone"].sum() == sum(1 for i in expected.values() if t.kind[i] == MILESTONE)
    assert tasks["estimate_hours"].notna().any()

    history = warehouse.query("SELECT task_uid, valid_from, due_date FROM task_history WHERE source = 'tool_history'")
    for i in asana_tasks(shared_box):
        changes = p.due_changes(i)
        rows = history[history["task_uid"] == task_uid(p, i)].sort_values("valid_from")
        expected_dues = ([day_to_date(changes[0].old_day)] + [day_to_date(c.new_day) for c in changes]
                         if changes and changes[0].old_day != NO_DAY else [day_to_date(c.new_day) for c in changes])
        assert [None if pd.isna(d) else pd.Timestamp(d).date() for d in rows["due_date"]] == expected_dues, i

    links = warehouse.query("SELECT predecessor_uid, successor_uid, origin FROM dependencies")
    native = [k for k in p.links_of(LINK_NATIVE) if t.tool[p.link_succ[k]] == ASANA]
    assert sorted(zip(links["predecessor_uid"], links["successor_uid"])) == sorted(
        (task_uid(p, int(p.link_pred[k])), task_uid(p, int(p.link_succ[k]))) for k in native)
    assert set(links["origin"]) == {"native"}

    people = warehouse.read("people")
    assignees = {int(t.assignee[i]) for i in expected.values() if t.assignee[i] >= 0}
    assert set(people["email"]) == {p.people[a].email_in(ASANA).lower() for a in assignees}
    projects = warehouse.read("projects")
    assert sorted(projects["name"]) == sorted(pr.name for pr in p.projects_of(ASANA))


def test_full_pull_costs_listing_pages_subtask_walks_and_one_stories_read_per_task(shared_box, full_pull) -> None:
    batches, stats = full_pull
    projects = len(shared_box.portfolio.projects_of(ASANA))
    pages = sum(-(-len(shared_box.portfolio.task_indexes(ASANA, pr.index)) // 100)
                for pr in shared_box.portfolio.projects_of(ASANA))
    # per project: the project read and the events read that hands out a token; then the listing pages, one
    # subtasks listing per task with subtasks, one stories read per task.
    assert stats["requests"] == 2 * projects + pages + parents_with_subtasks(shared_box) + len(
        asana_tasks(shared_box))
    assert len(pulled_gids(batches)) == len(set(pulled_gids(batches))) == len(asana_tasks(shared_box))
    final = PullCursor.read(batches[-1].cursor)
    assert final.project is None and final.committed.at is not None
    assert set(final.tokens) == {ids.asana_project_gid(pr.index) for pr in shared_box.portfolio.projects_of(ASANA)}


def test_with_subtasks_off_only_what_the_projects_list_is_read_and_kept(box, warehouse) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    listed = [i for i in asana_tasks(box) if t.kind[i] != SUBTASK]
    subtasks = [i for i in asana_tasks(box) if t.kind[i] == SUBTASK]
    assert subtasks and listed

    def sync_without_subtasks(full: bool = False) -> Any:
        connector = AsanaConnector.from_config(connection(box, subtasks=False))
        try:
            return sync_connection(connector, load_mapping("asana"), warehouse, full=full)
        finally:
            connector.close()

    first = sync_without_subtasks(full=True)
    projects = len(p.projects_of(ASANA))
    pages = sum(-(-len(p.task_indexes(ASANA, pr.index)) // 100) for pr in p.projects_of(ASANA))
    # per project the project read, the events token and the listing pages; one stories read per listed task.
    assert first.requests == 2 * projects + pages + len(listed)
    stored = set(warehouse.read("tasks")["task_uid"])
    assert stored == {task_uid(p, i) for i in listed}

    for i in subtasks[:2] + listed[5:7]:
        box.call(p.set_due, i, int(t.due[i]) + 3 if t.due[i] != NO_DAY else 20_700)
    second = sync_without_subtasks()
    assert second.mode == "incremental" and second.loaded == 2 and second.deleted == 0
    assert set(warehouse.read("tasks")["task_uid"]) == stored
    assert warehouse.read("tasks").set_index("task_uid")["deleted_at"].isna().all()


def test_raw_records_keep_asanas_shape_plus_the_pmsync_context(full_pull) -> None:
    batches, _ = full_pull
    record = batches[0].records[0]
    sent = {path.split(".")[0] for path in TASK_FIELDS}
    assert set(record) - {"gid", "_pmsync"} <= sent
    assert set(record["_pmsync"]) == {"project_gid", "section", "tags", "custom_fields"}
    read = {path.split(".")[0] for path, _ in load_mapping("asana").paths().values()}
    assert read - {"gid", "_pmsync"} <= sent


def test_the_mapping_reads_cancelled_done_and_in_progress_from_completion_section_and_tags() -> None:
    def task(gid: str, completed: bool, section: str | None, tags: list[str]) -> dict[str, Any]:
        return {"gid": gid, "name": gid, "completed": completed, "resource_subtype": "default_task",
                "_pmsync": {"project_gid": "1", "section": section, "tags": tags, "custom_fields": {}}}

    records = [task("1", True, "Cancelled", ["Cancelled"]), task("2", True, None, ["Cancelled"]),
               task("3", True, "Backlog", []), task("4", False, "In progress", []), task("5", False, None, []),
               task("6", True, None, [])]
    page = normalize_tasks(records, load_mapping("asana"), CONNECTION)
    assert list(page.tasks["status_category"]) == ["cancelled", "cancelled", "done", "in_progress", "todo", "done"]


def test_links_from_other_tools_resolve_to_asana_tasks(shared_box, full_pull, tmp_path) -> None:
    p = shared_box.portfolio
    with open_warehouse("duckdb:///links.duckdb", tmp_path) as warehouse:
        sync(shared_box, warehouse, full=True)
        inbound = [k for k in list(p.links_of(LINK_REMOTE)) + list(p.links_of(LINK_ATTACHMENT))
                   if p.tasks.tool[p.link_pred[k]] == ASANA]
        assert inbound
        warehouse.upsert("dependencies", pd.DataFrame([{
            "predecessor_uid": f"url:{ids.task_url(p, int(p.link_pred[k]))}",
            "successor_uid": task_uid(p, int(p.link_succ[k])), "kind": "finish_to_start", "origin": "remote_link",
            "connection": "other", "lag_days": 0.0, "last_seen_at": pd.Timestamp.now(tz="UTC")} for k in inbound]))
        assert resolve_url_links(warehouse) == len(inbound)
        rows = warehouse.query("SELECT predecessor_uid FROM dependencies WHERE connection = 'other'")
        assert sorted(rows["predecessor_uid"]) == sorted(task_uid(p, int(p.link_pred[k])) for k in inbound)


# -- incremental pulls, deletions, quarantine -----------------------------------------------------------------

def test_incremental_sync_after_ten_changes_pulls_only_those(box, warehouse, connect) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    sync(box, warehouse, full=True)
    cursor = PullCursor.read(orjson.loads(warehouse.get_cursor(CONNECTION, "pull"))).write()
    assert not connect(box).has_changes(cursor)

    subtasks = [i for i in asana_tasks(box) if t.kind[i] == SUBTASK][:3]
    listed = [i for i in asana_tasks(box) if t.kind[i] != SUBTASK][10:17]
    changed = subtasks + listed
    for i in changed:
        box.call(p.set_due, i, int(t.due[i]) + 3 if t.due[i] != NO_DAY else 20_700)
    assert connect(box).has_changes(cursor)

    result = sync(box, warehouse)
    assert result.ok and result.mode == "incremental" and result.pulled == len(changed)
    projects = len(p.projects_of(ASANA))
    # pull: per project a project read, an events read and one listing page; a stories read per changed task and
    # a task read per changed subtask. No census: every project's events were read from its token and none can
    # have taken a task out of the projects (the census would cost an ids page per project and a subtasks listing
    # per hidden parent).
    pull_cost = 3 * projects + len(changed) + len(subtasks)
    assert result.census_skipped
    assert int(last_run(warehouse)["requests"]) == pull_cost
    tasks = warehouse.read("tasks").set_index("task_uid")
    for i in changed:
        assert tasks.loc[task_uid(p, i), "due_date"].date() == day_to_date(int(t.due[i]))
    # The change's story and the observed version fall on the same instant: one version holds the new due date.
    history = warehouse.query("SELECT task_uid, valid_to, due_date FROM task_history")
    for i in changed:
        current = history[(history["task_uid"] == task_uid(p, i)) & history["valid_to"].isna()]["due_date"]
        assert [pd.Timestamp(d).date() for d in current] == [day_to_date(int(t.due[i]))], i

    final = PullCursor.read(orjson.loads(warehouse.get_cursor(CONNECTION, "pull"))).write()
    probe = connect(box)
    assert not probe.has_changes(final)
    assert pulled_gids(list(probe.pull(final))) == []


def test_incremental_pull_asks_for_modified_since_the_cursor(box, connect) -> None:
    emulator = box.emulators["asana"]
    emulator.settings.record = True
    connector = connect(box)
    batches = list(connector.pull(None))
    cursor = PullCursor.read(batches[-1].cursor)
    list(connector.pull(batches[-1].cursor))
    connector.check()  # the emulator records an exchange after sending it
    listings = box.call(lambda: [r for r in emulator.recorded if r.path.endswith("/tasks") and r.method == "GET"])
    query = parse_qs(listings[-1].query)
    since = datetime.fromisoformat(query["modified_since"][0])
    # The events feed reports what the listing misses, so the listing starts at the watermark itself.
    assert since == cursor.committed.at
    assert query["modified_since"][0].endswith("Z") and query["limit"] == ["100"]
    assert set(query["opt_fields"][0].split(",")) == set(TASK_FIELDS)
    assert all("modified_since" not in parse_qs(r.query) for r in listings[:2])


def test_an_incremental_pull_reads_the_projects_events_and_listings_side_by_side(box, connect) -> None:
    projects = len(box.portfolio.projects_of(ASANA))
    assert projects >= 2
    emulator = box.emulators["asana"]
    connector = connect(box)
    cursor = list(connector.pull(None))[-1].cursor
    emulator.settings.latency_s = 0.2  # long enough that requests sent together are seen together
    box.call(emulator.reset_stats)
    assert pulled_gids(list(connector.pull(cursor))) == []
    stats = box.call(lambda: emulator.stats)
    # Nothing changed: one events page per project, each followed by the project's listing of changes. The events
    # reads all overlap, and so do the listings (each waits for its own project's events only).
    assert stats.by_route["GET /api/1.0/events"] == projects
    assert stats.peak_in_flight_by_path["GET /api/1.0/events"] == projects
    assert stats.by_route["GET /api/1.0/tasks"] == projects
    assert stats.peak_in_flight_by_path["GET /api/1.0/tasks"] >= 2
    assert stats.in_flight_by_path["GET /api/1.0/tasks"] == 0


def test_a_projects_listing_of_changes_goes_out_alongside_its_events_not_after_them(box, connect) -> None:
    projects = len(box.portfolio.projects_of(ASANA))
    connector = connect(box)
    cursor = list(connector.pull(None))[-1].cursor
    emulator = box.emulators["asana"]
    # Every events read is held until some listing of changes has arrived: a pull that lists a project only once
    # its events are read sends none while they are held, and every hold runs out of patience.
    gate = Gate(emulator._inner, {("/api/1.0/events", n): lambda g: g.arrived("/api/1.0/tasks") >= projects
                                  for n in range(1, projects + 1)}, patience_s=3.0)
    emulator._inner = gate
    assert pulled_gids(list(connector.pull(cursor))) == []
    assert gate.met == {("/api/1.0/events", n): True for n in range(1, projects + 1)}
    assert gate.arrived("/api/1.0/events") == gate.arrived("/api/1.0/tasks") == projects


def test_a_pull_reads_the_projects_themselves_side_by_side_with_their_events(box, connect) -> None:
    projects = len(box.portfolio.projects_of(ASANA))
    emulator = box.emulators["asana"]
    connector = connect(box)
    cursor = list(connector.pull(None))[-1].cursor
    emulator.settings.latency_s = 0.2  # long enough that requests sent together are seen together
    box.call(emulator.reset_stats)
    batches = list(connector.pull(cursor))
    stats = box.call(lambda: emulator.stats)
    assert [project.native_id for project in batches[0].projects] == connector.projects
    assert stats.by_route["GET /api/1.0/projects/{gid}"] == projects
    # Every project read and every events read at once. Reading the projects one after another before the events,
    # at most one request more than the projects would be in flight (the token's user, beside the listings).
    assert stats.peak_in_flight >= 2 * projects


def test_a_listing_longer_than_the_pages_read_ahead_goes_on_where_they_stopped(box, connect, monkeypatch) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    cursor = list(connect(box).pull(None))[-1].cursor
    project = p.projects_of(ASANA)[0].index
    changed = [i for i in asana_tasks(box) if t.kind[i] != SUBTASK and int(t.project[i]) == project][:12]
    assert len(changed) == 12
    for i in changed:
        box.call(p.set_due, i, int(t.due[i]) + 3 if t.due[i] != NO_DAY else 20_700)
    monkeypatch.setattr(asana_module, "PAGE", 5)  # 12 changes: three pages, two read ahead with the events
    monkeypatch.setattr(asana_module, "HEAD_PAGES", 2)
    emulator = box.emulators["asana"]
    box.call(emulator.reset_stats)
    assert sorted(pulled_gids(list(connect(box).pull(cursor)))) == sorted(ids.asana_gid(i) for i in changed)
    others = len(p.projects_of(ASANA)) - 1
    assert box.call(lambda: emulator.stats.by_route["GET /api/1.0/tasks"]) == 3 + others


def test_deleted_tasks_get_deleted_at_and_nothing_else_changes(box, warehouse) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    sync(box, warehouse, full=True)
    before = warehouse.read("tasks").set_index("task_uid")
    gone = [asana_tasks(box)[20], next(i for i in asana_tasks(box) if t.kind[i] == SUBTASK)]
    for i in gone:
        box.call(p.delete, i)
    result = sync(box, warehouse)
    assert result.deleted == len(gone)
    after = warehouse.read("tasks").set_index("task_uid")
    uids = [task_uid(p, i) for i in gone]
    assert after.loc[uids, "deleted_at"].notna().all()
    assert after.drop(index=uids)["deleted_at"].isna().all()
    stable = [c for c in after.columns if c not in ("deleted_at", "last_synced_at")]
    pd.testing.assert_frame_equal(after.drop(index=uids)[stable], before.drop(index=uids)[stable])


def census_cursor(warehouse: Warehouse) -> dict[str, Any]:
    return orjson.loads(warehouse.get_cursor(CONNECTION, CENSUS_CURSOR))


def test_a_deletion_in_the_events_brings_the_census_back_and_it_notes_its_scope(box, warehouse) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    sync(box, warehouse, full=True)
    assert census_cursor(warehouse)["scope"]["projects"] == sorted(connection(box).projects)
    box.call(p.set_due, asana_tasks(box)[5], int(t.due[asana_tasks(box)[5]]) + 2)
    assert sync(box, warehouse).census_skipped
    hidden = next(i for i in asana_tasks(box) if t.kind[i] == SUBTASK)
    box.call(p.delete, hidden)  # a subtask no project lists: only the events (or a census) can tell
    result = sync(box, warehouse)
    assert not result.census_skipped and result.deleted == 1
    tasks = warehouse.read("tasks").set_index("task_uid")
    assert pd.notna(tasks.loc[task_uid(p, hidden), "deleted_at"])


def test_a_census_is_taken_when_the_last_one_is_old_or_covered_another_scope(box, warehouse) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    sync(box, warehouse, full=True)
    stored = census_cursor(warehouse)
    stale = {**stored, "at": (datetime.now(UTC) - CENSUS_MAX_AGE - timedelta(minutes=1)).isoformat()}
    warehouse.set_cursor(CONNECTION, CENSUS_CURSOR, orjson.dumps(stale).decode())
    i = asana_tasks(box)[3]
    box.call(p.set_due, i, int(t.due[i]) + 1)
    assert not sync(box, warehouse).census_skipped  # a day old: taken again, and noted
    assert datetime.fromisoformat(census_cursor(warehouse)["at"]) > datetime.now(UTC) - timedelta(minutes=5)

    # Another scope: subtasks off. Its census must run (and mark the subtasks no project lists as gone).
    box.call(p.set_due, i, int(t.due[i]) + 1)
    connector = AsanaConnector.from_config(connection(box, subtasks=False))
    try:
        result = sync_connection(connector, load_mapping("asana"), warehouse)
    finally:
        connector.close()
    assert not result.census_skipped and result.deleted == sum(1 for k in asana_tasks(box) if t.kind[k] == SUBTASK)
    assert census_cursor(warehouse)["scope"]["subtasks"] is False


@pytest.mark.parametrize(("event", "leaves"), [
    ({"action": "changed", "resource": {"resource_type": "task"}, "change": {"field": "due_on"}}, False),
    ({"action": "added", "resource": {"resource_type": "task"}, "parent": {"resource_type": "project"}}, False),
    ({"action": "added", "resource": {"resource_type": "story"}}, False),
    ({"action": "removed", "resource": {"resource_type": "story"}}, False),
    ({"action": "deleted", "resource": {"resource_type": "task"}}, True),
    ({"action": "removed", "resource": {"resource_type": "task"}, "parent": {"resource_type": "project"}}, True),
    ({"action": "undeleted", "resource": {"resource_type": "task"}}, True),
    ({"action": "changed", "resource": {"resource_type": "task"}, "change": {"field": "parent"}}, True),
    ({"action": "changed", "resource": {"resource_type": "task"}, "change": {"field": "memberships"}}, True),
    ({"action": "changed", "resource": {"resource_type": "task"}}, True),
])
def test_only_deletions_removals_and_moves_can_take_a_task_out_of_the_projects(event, leaves) -> None:
    assert asana_module._may_leave_scope(event) is leaves


def test_a_malformed_record_is_quarantined_while_the_rest_loads(box, warehouse) -> None:
    fault = box.emulators["asana"].inject("invalid_record", path=r"/api/1\.0/tasks$", method="GET", times=1)
    result = sync(box, warehouse, full=True)
    assert fault.fired == 1 and result.quarantined == 1
    quarantine = warehouse.read("quarantine")
    assert len(quarantine) == 1 and "due_on" in quarantine.iloc[0]["reason"]
    assert "next tuesday-ish" in quarantine.iloc[0]["raw_payload"]
    assert warehouse.count("tasks") == len(asana_tasks(box)) - 1


# -- killed mid-way -------------------------------------------------------------------------------------------

KILLED_SYNC = """
import sys
from pmsync.config import load_config
from connectors.asana import AsanaConnector
from mappings.mapping import load_mapping
from mappings.normalize import normalize_tasks
from pmsync.run import open_config_warehouse
from pmsync.sync import Progress, sync_connection
config = load_config(sys.argv[1])
conn = next(c for c in config.connections if c.tool == "asana")
with open_config_warehouse(config) as warehouse:
    sync_connection(AsanaConnector.from_config(conn), load_mapping("asana"), warehouse,
                    progress=Progress(advance=lambda name, n: print("batch", flush=True)))
print("finished", flush=True)
"""

# Each table with the columns that record when the sync ran rather than what it loaded.
STABLE_TABLES = {
    "tasks": ("first_seen_at", "last_synced_at"), "task_history": (), "dependencies": ("last_seen_at",),
    "people": ("updated_at",), "projects": ("first_seen_at", "last_synced_at"),
    "quarantine": ("quarantined_at", "run_id"),
}


def _contents(warehouse: Warehouse, table: str, drop: tuple[str, ...]) -> pd.DataFrame:
    frame = warehouse.read(table)
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_a_sync_killed_mid_way_resumes_to_the_same_tables(box, tmp_path) -> None:
    box.emulators["asana"].settings.latency_s = 0.05
    config = tmp_path / "pmsync.yaml"
    config.write_text(yaml.safe_dump({"warehouse": f"duckdb:///{tmp_path / 'killed.duckdb'}", "timezone": "UTC",
                                      "connections": [connection(box).model_dump(mode="json") | {
                                          "auth": {"token": TOKEN}}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", KILLED_SYNC, str(config)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "batch", child.stderr.read() if child.poll() else ""
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    box.emulators["asana"].settings.latency_s = 0.0
    with open_warehouse(f"duckdb:///{tmp_path / 'killed.duckdb'}") as killed:
        stored = PullCursor.read(orjson.loads(killed.get_cursor(CONNECTION, "pull")))
        assert stored.project is not None, "the kill should land before the pull finished"
        assert killed.count("tasks") < len(asana_tasks(box))
        assert sync(box, killed).ok
        with open_warehouse(f"duckdb:///{tmp_path / 'whole.duckdb'}") as whole:
            assert sync(box, whole, full=True).ok
            for table, drop in STABLE_TABLES.items():
                pd.testing.assert_frame_equal(_contents(killed, table, drop), _contents(whole, table, drop),
                                              obj=table)


# -- throttling, faults and failures --------------------------------------------------------------------------

def test_a_429_burst_is_absorbed_and_counted(box, connect) -> None:
    emulator = box.emulators["asana"]
    emulator.settings.rate_limit = RateLimit(4, 0.5)
    connector = connect(box)
    assert sorted(connector.census()) == sorted(ids.asana_gid(i) for i in asana_tasks(box))
    assert connector.stats.throttled > 0
    assert connector.stats.throttled == emulator.stats.rate_limited
    assert connector.stats.requests == emulator.stats.requests


def test_an_injected_503_a_dropped_connection_and_a_truncated_page_are_retried(box, connect) -> None:
    emulator = box.emulators["asana"]
    unavailable = emulator.inject("status", status=503, path=r"/api/1\.0/tasks$", times=1)
    truncated = emulator.inject("truncated", path="/stories", times=1)
    reset = emulator.inject("reset", path="/subtasks", times=1)
    connector = connect(box)
    batches = list(connector.pull(None))
    assert sorted(pulled_gids(batches)) == sorted(ids.asana_gid(i) for i in asana_tasks(box))
    assert unavailable.fired == truncated.fired == reset.fired == 1
    assert connector.stats.server_errors == 1 and connector.stats.bad_bodies == 1
    assert connector.stats.connection_errors == 1 and connector.stats.retries == 3


def test_an_expired_events_token_walks_the_project_and_still_finds_changed_subtasks(box, connect) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    batches = list(connect(box).pull(None))
    cursor = batches[-1].cursor
    cursor["events"] = {gid: "00" * 32 for gid in cursor["events"]}  # unknown tokens: Asana answers 412
    sub = next(i for i in asana_tasks(box) if t.kind[i] == SUBTASK)
    box.call(p.set_due, sub, int(t.due[sub]) + 5 if t.due[sub] != NO_DAY else 20_700)
    assert connect(box).has_changes(cursor)
    again = list(connect(box).pull(cursor))
    assert pulled_gids(again) == [ids.asana_gid(sub)]


def test_a_wrong_token_gives_one_sentence_without_the_token(box) -> None:
    wrong = "2/1201/1209:not-the-sandbox-token"
    connector = AsanaConnector.from_config(connection(box, auth={"token": wrong}))
    try:
        with pytest.raises(ConnectionFailed) as failure:
            connector.check()
        with pytest.raises(ConnectionFailed):
            list(connector.census())
    finally:
        connector.close()
    message = str(failure.value)
    assert box.api_url("asana") in message and "auth.token" in message
    assert wrong not in message and TOKEN not in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_an_unknown_project_is_named_in_the_failure(box, connect) -> None:
    connector = connect(box, projects=["1207000000009999"])
    with pytest.raises(ConnectionFailed, match="1207000000009999"):
        list(connector.pull(None))
