"""Planner write-back against the Graph emulator: categories and the schedule block per computed state, read back
through msgraph-sdk; If-Match always and 412s recovered; user fields untouched; a second push writes nothing; a
Planner plan as portfolio view with one item per project and milestone of every tool, archived when its source
goes away."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml
from conftest import incremental_sync

from connectors.base import Write
from connectors.graph import GraphPreconditionFailed, GraphSession, StaticToken
from connectors.http import RequestStats
from connectors.planner import (
    ARCHIVED_PREFIX,
    AT_RISK_CATEGORY,
    BLOCK_END,
    BLOCK_START,
    LATE_CATEGORY,
    PlannerConnector,
    etag_digest,
    outside_block,
    own_edit_only,
    own_version,
    pick_category_slots,
    with_schedule_block,
)
from pmsync.config import Config, PlannerConnection, load_config
from pmsync.run import open_config_warehouse, run_sync
from sandbox import ids, server
from sandbox.core import CREDENTIALS
from sandbox.generator import PLANNER
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox
from schedule.compute import compute_and_store
from writeback.ledger import read_ledger
from writeback.plan import plan_writes
from writeback.push import run_push

TOKEN = CREDENTIALS["graph"]["token"]


# -- pure pieces ------------------------------------------------------------------------------------------------

def test_schedule_block_is_appended_once_then_replaced_in_place() -> None:
    user = "Scope and contacts.\nSecond line."
    first = with_schedule_block(user, "late, 3 days")
    assert first == f"{user}\n\n{BLOCK_START}\nlate, 3 days\n{BLOCK_END}"
    edited = first + "\nA note the user added after the block."
    second = with_schedule_block(edited, "on track")
    assert second == f"{user}\n\n{BLOCK_START}\non track\n{BLOCK_END}\nA note the user added after the block."
    assert outside_block(second) == user + "\nA note the user added after the block."
    assert with_schedule_block(second, "on track") == second
    assert with_schedule_block("", "x") == f"{BLOCK_START}\nx\n{BLOCK_END}"


def test_category_slots_are_reused_when_named_and_never_take_a_users_category() -> None:
    keys, patch = pick_category_slots({"category1": "Blocked", "category20": None, "category21": ""})
    assert (keys.late, keys.at_risk) == ("category20", "category21")
    assert patch == {"category20": LATE_CATEGORY, "category21": AT_RISK_CATEGORY}
    keys, patch = pick_category_slots({"category20": "Budget", "category7": LATE_CATEGORY})
    assert keys.late == "category7" and keys.at_risk not in ("category20", "category7")
    assert patch == {keys.at_risk: AT_RISK_CATEGORY}
    assert pick_category_slots({"category7": LATE_CATEGORY, "category3": AT_RISK_CATEGORY})[1] == {}


def test_a_task_is_pmsyncs_own_edit_only_when_its_write_went_from_the_committed_etag_to_the_current_one() -> None:
    synced, written, later = 'W/"JzEtVGFzayAx"', 'W/"JzEtVGFzayAy"', 'W/"JzEtVGFzayAz"'
    versions = [own_version(synced, written)]
    assert own_edit_only({"@odata.etag": written}, etag_digest(synced), versions)
    # someone changed it after pmsync's write, or before it (the write's If-Match is not what the pull saw)
    assert not own_edit_only({"@odata.etag": later}, etag_digest(synced), versions)
    assert not own_edit_only({"@odata.etag": written}, etag_digest('W/"JzEtVGFzayAw"'), versions)
    assert not own_edit_only({"@odata.etag": written}, None, versions)
    assert not own_edit_only({"@odata.etag": written}, etag_digest(synced), [written])


# -- reading back through msgraph-sdk ---------------------------------------------------------------------------

class SdkReader:
    """Planner as a user sees it, through msgraph-sdk's typed request builders and models."""

    def __init__(self, box: Sandbox) -> None:
        self.session = GraphSession("Microsoft Planner", box.api_url("graph"), StaticToken(TOKEN), RequestStats())
        self.client = self.session.client

    def tasks(self, plan_id: str) -> list[Any]:
        page = self.session.run(self.client.planner.plans.by_planner_plan_id(plan_id).tasks.get())
        found = list(page.value or [])
        while page.odata_next_link:
            builder = self.client.planner.plans.by_planner_plan_id(plan_id).tasks.with_url(page.odata_next_link)
            page = self.session.run(builder.get())
            found += list(page.value or [])
        return found

    def description(self, task_id: str) -> str:
        details = self.session.run(self.client.planner.tasks.by_planner_task_id(task_id).details.get())
        return details.description or ""

    def categories(self, plan_id: str) -> dict[str, str]:
        details = self.session.run(self.client.planner.plans.by_planner_plan_id(plan_id).details.get())
        named = {f"category{n}": getattr(details.category_descriptions, f"category{n}") for n in range(1, 26)}
        return {slot: label for slot, label in named.items() if label}

    def snapshot(self, plan_ids: list[str], skip: set[str] = frozenset()) -> dict[str, dict[str, Any]]:
        """Every task's user-owned fields (pmsync's categories and block left out), by task id."""
        shot = {}
        for plan_id in plan_ids:
            pmsync_slots = {k for k, v in self.categories(plan_id).items() if v.startswith("pmsync")}
            for task in self.tasks(plan_id):
                if task.id in skip:
                    continue
                shot[task.id] = {
                    "title": task.title, "due": task.due_date_time, "start": task.start_date_time,
                    "percent": task.percent_complete, "bucket": task.bucket_id, "priority": task.priority,
                    "assignments": sorted((task.assignments.additional_data or {}).keys()),
                    "categories": sorted(k for k, on in applied(task).items() if on and k not in pmsync_slots),
                    "description": outside_block(self.description(task.id)),
                }
        return shot

    def close(self) -> None:
        self.session.close()


def applied(task: Any) -> dict[str, bool]:
    """A typed task's applied categories as {slot: on}."""
    categories = task.applied_categories
    if categories is None:
        return {}
    return {k: bool(v) for k, v in (categories.additional_data or {}).items() if k.startswith("category")}


def block_of(description: str) -> str | None:
    start, end = description.find(BLOCK_START), description.find(BLOCK_END)
    return description[start + len(BLOCK_START):end].strip() if 0 <= start < end else None


# -- the synced world -------------------------------------------------------------------------------------------

@dataclass
class World:
    box: Sandbox
    config: Config
    connection: str
    synced_plans: list[str]
    portfolio_plan: str
    reader: SdkReader
    before: dict[str, dict[str, Any]]
    first_push: Any
    recorded_patches: list[Any]

    def warehouse_frames(self) -> dict[str, pd.DataFrame]:
        with open_config_warehouse(self.config) as warehouse:
            return {name: warehouse.read(name) for name in ("tasks", "schedule", "projects", "project_health")} | {
                "ledger": read_ledger(warehouse, [self.connection])}

    def refresh(self) -> None:
        """Sync every connection, recompute the schedule as of the test date."""
        outcome = run_sync(self.config)
        assert outcome.ok, outcome.failures
        with open_config_warehouse(self.config) as warehouse:
            compute_and_store(warehouse, self.config, as_of=TEST_AS_OF)

    def item_ids(self) -> set[str]:
        ledger = self.warehouse_frames()["ledger"]
        return set(ledger.loc[ledger["target"].isin(["portfolio.item", "portfolio.archive"]), "remote_ref"].dropna())


def write_config(box: Sandbox, folder: Path) -> tuple[Config, str, list[str], str]:
    """The sandbox's five connections, with the last Planner plan kept out of the sync as the portfolio view."""
    data = box.config(warehouse=f"duckdb:///{folder / 'pmsync.duckdb'}")
    planner = next(c for c in data["connections"] if c["tool"] == "planner")
    p = box.portfolio
    plans = [ids.graph_id(p, "plan", pr.index) for pr in p.projects_of(PLANNER)]
    planner["plans"] = plans[:-1]
    data["writeback"] = {"portfolio": {"planner_plan": {"connection": planner["name"], "id": plans[-1]}}}
    path = folder / "pmsync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path), planner["name"], plans[:-1], plans[-1]


def recorded_patches(emulator: Any) -> list[Any]:
    """The PATCH exchanges the emulator recorded, once every PATCH it counted is recorded (an exchange is
    recorded just after its response is sent, so the last one may trail the client by a moment)."""
    counted = sum(n for route, n in emulator.stats.writes_by_route.items() if route.startswith("PATCH "))
    for _ in range(500):
        found = [r for r in emulator.recorded if r.method == "PATCH"]
        if len(found) >= counted:
            return found
        time.sleep(0.01)
    raise AssertionError(f"the emulator recorded {len(found)} of the {counted} PATCH requests it counted")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False) as box:
        config, connection, synced, portfolio_plan = write_config(box, tmp_path_factory.mktemp("planner-push"))
        reader = SdkReader(box)
        world = World(box, config, connection, synced, portfolio_plan, reader, {}, None, [])
        world.refresh()
        world.before = reader.snapshot(synced + [portfolio_plan])
        emulator = box.emulators["graph"]
        emulator.settings.record = True
        world.first_push = run_push(config, [connection], setup=True)
        world.recorded_patches = recorded_patches(emulator)
        emulator.settings.record = False
        yield world
        reader.close()


def test_first_push_writes_every_planned_value(world: World) -> None:
    result = world.first_push.results[world.connection]
    assert world.first_push.ok, (world.first_push.failures, result.errors)
    assert result.written == result.planned > 0 and result.skipped == 0


def test_every_patch_carries_an_if_match_etag_and_each_412_is_retried(world: World) -> None:
    assert world.recorded_patches
    last_status: dict[str, int] = {}
    for exchange in world.recorded_patches:
        headers = {k.lower(): v for k, v in exchange.request_headers.items()}
        assert headers.get("if-match", "").startswith('W/"'), exchange.path
        assert exchange.status in (200, 204, 412), (exchange.path, exchange.status)
        last_status[exchange.path] = exchange.status
    # the categories and the details of one task are written concurrently, and a details change that fills an
    # empty description moves the task's etag too: such 412s are real, and each must end in a success
    assert set(last_status.values()) <= {200, 204}


def test_push_puts_categories_and_schedule_block_on_every_task_per_computed_state(world: World) -> None:
    frames = world.warehouse_frames()
    tasks = frames["tasks"]
    planner = tasks[(tasks["connection"] == world.connection) & tasks["deleted_at"].isna()]
    schedule = frames["schedule"].set_index("task_uid")
    assert len(planner) > 10
    for plan_id in world.synced_plans:
        slots = {v: k for k, v in world.reader.categories(plan_id).items()}
        late, at_risk = slots[LATE_CATEGORY], slots[AT_RISK_CATEGORY]
        for task in world.reader.tasks(plan_id):
            row = schedule.loc[f"{world.connection}:{task.id}"]
            on = applied(task)
            assert on.get(late, False) == (row["state"] == "late"), task.id
            assert on.get(at_risk, False) == (row["state"] == "at_risk"), task.id
            block = block_of(world.reader.description(task.id))
            assert block is not None, task.id
            assert row["state"].replace("_", " ") in block
            if row["state"] != "unscheduled" and not pd.isna(row["forecast_finish"]):
                assert row["forecast_finish"].date().isoformat() in block


def test_push_leaves_every_user_owned_field_unchanged(world: World) -> None:
    after = world.reader.snapshot(world.synced_plans + [world.portfolio_plan], skip=world.item_ids())
    assert after == world.before


def test_second_push_makes_zero_write_requests(world: World) -> None:
    emulator = world.box.emulators["graph"]
    writes = emulator.stats.writes
    items_before = {t.id: (t.title, t.due_date_time, applied(t)) for t in world.reader.tasks(world.portfolio_plan)}
    again = run_push(world.config, [world.connection])
    assert again.ok and again.results[world.connection].planned == 0
    assert emulator.stats.writes == writes
    assert {t.id: (t.title, t.due_date_time, applied(t))
            for t in world.reader.tasks(world.portfolio_plan)} == items_before


def expected_items(frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """{source uid: item title} of every live project and milestone in the warehouse."""
    projects = frames["projects"][frames["projects"]["deleted_at"].isna()].set_index("project_uid")
    labels = {"jira": "Jira", "asana": "Asana", "trello": "Trello", "planner": "Planner", "msproject": "MS Project"}
    found = {uid: f"{row['name']} ({labels[row['tool']]})" for uid, row in projects.iterrows()}
    tasks = frames["tasks"]
    milestones = tasks[tasks["deleted_at"].isna() & tasks["is_milestone"].fillna(False).astype(bool)
                       & tasks["project_uid"].isin(projects.index)]
    for task in milestones.itertuples(index=False):
        found[task.task_uid] = f"{task.title} — {projects.loc[task.project_uid, 'name']}"
    return found


def test_portfolio_plan_holds_one_item_per_project_and_milestone_of_every_tool(world: World) -> None:
    frames = world.warehouse_frames()
    wanted = expected_items(frames)
    assert set(frames["projects"]["tool"]) == {"jira", "asana", "trello", "planner", "msproject"}
    ledger = frames["ledger"]
    items = ledger[ledger["target"] == "portfolio.item"].set_index("task_uid")
    assert set(items.index) == set(wanted)
    live = {t.id: t for t in world.reader.tasks(world.portfolio_plan)
            if not (t.title or "").startswith(ARCHIVED_PREFIX) and t.id in set(items["remote_ref"])}
    assert len(live) == len(wanted)
    slots = {v: k for k, v in world.reader.categories(world.portfolio_plan).items()}
    health = frames["project_health"].set_index("project_uid")
    for uid, title in wanted.items():
        task = live[items.loc[uid, "remote_ref"]]
        assert task.title == title
        if uid in health.index:
            row = health.loc[uid]
            forecast = None if pd.isna(row["forecast_finish"]) else row["forecast_finish"].date()
            assert (task.due_date_time.date() if task.due_date_time else None) == forecast
            assert applied(task).get(slots[LATE_CATEGORY], False) == (row["health"] == "red")
            assert applied(task).get(slots[AT_RISK_CATEGORY], False) == (row["health"] == "amber")
        assert block_of(world.reader.description(task.id))


def test_removing_a_milestone_archives_its_item_and_leaves_the_others(world: World) -> None:
    frames = world.warehouse_frames()
    tasks = frames["tasks"]
    milestone = tasks[tasks["is_milestone"].fillna(False).astype(bool) & tasks["deleted_at"].isna()
                      & (tasks["connection"] != world.connection)].sort_values("task_uid").iloc[0]
    p = world.box.portfolio
    index = next(i for i in range(p.tasks.size) if server.task_uid(p, i) == milestone["task_uid"])
    ledger = frames["ledger"].set_index(["target", "task_uid"])
    item_id = ledger.loc[("portfolio.item", milestone["task_uid"]), "remote_ref"]
    others = {t.id: (t.title, t.percent_complete) for t in world.reader.tasks(world.portfolio_plan)
              if t.id != item_id}
    world.box.call(p.delete, index)
    world.refresh()
    pushed = run_push(world.config, [world.connection])
    assert pushed.ok, pushed.failures
    tasks_now = {t.id: t for t in world.reader.tasks(world.portfolio_plan)}
    archived = tasks_now[item_id]
    assert archived.title.startswith(ARCHIVED_PREFIX) and archived.percent_complete == 100
    assert {i: (t.title, t.percent_complete) for i, t in tasks_now.items() if i != item_id} == others
    writes = world.box.emulators["graph"].stats.writes
    assert run_push(world.config, [world.connection]).ok
    assert world.box.emulators["graph"].stats.writes == writes


# -- 412: a stale etag ------------------------------------------------------------------------------------------

@pytest.fixture
def graph_box() -> Iterator[Sandbox]:
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",)) as box:
        yield box


def planner_connector(box: Sandbox) -> PlannerConnector:
    p = box.portfolio
    return PlannerConnector.from_config(PlannerConnection.model_validate({
        "name": "pmo-planner", "tool": "planner", "base_url": box.api_url("graph"), "auth": {"token": TOKEN},
        "plans": [ids.graph_id(p, "plan", pr.index) for pr in p.projects_of(PLANNER)]}))


def a_planner_task(box: Sandbox) -> str:
    p = box.portfolio
    i = next(i for i in range(p.tasks.size) if p.tasks.tool[i] == PLANNER and not p.tasks.deleted[i])
    return server.native_id(p, i)


def change_between_read_and_write(box: Sandbox, connector: PlannerConnector, path: str, body: dict[str, Any]) -> None:
    """After the connector's next read of `path`, another client changes that resource (so its etag moves)."""
    read = connector.session.get_json
    fired: list[bool] = []

    def reading_then_someone_edits(builder: Any, doing: str, url: str | None = None) -> Any:
        found = read(builder, doing, url)
        if not fired and path in builder.to_get_request_information().url:
            fired.append(True)
            answer = requests.patch(f"{box.api_url('graph')}{path}", json=body, timeout=10, headers={
                "Authorization": f"Bearer {TOKEN}", "If-Match": found["@odata.etag"]})
            assert answer.status_code in (200, 204), answer.text
        return found

    connector.session.get_json = reading_then_someone_edits  # type: ignore[method-assign]


@pytest.mark.parametrize("target, path_suffix, edit", [
    ("planner.categories", "", {"priority": 1}),
    ("planner.details", "/details", {"previewType": "checklist"}),
])
def test_a_stale_etag_412_is_reread_and_the_write_retried(graph_box: Sandbox, target: str, path_suffix: str,
                                                          edit: dict[str, Any]) -> None:
    connector = planner_connector(graph_box)
    task_id = a_planner_task(graph_box)
    emulator = graph_box.emulators["graph"]
    route = f"PATCH /v1.0/planner/tasks/{{task}}{path_suffix}"
    try:
        change_between_read_and_write(graph_box, connector, f"/planner/tasks/{task_id}{path_suffix}", edit)
        payload = {"late": True, "at_risk": False} if target == "planner.categories" else {"text": "late by 3 days"}
        connector.write(Write(target, task_id, payload))
    finally:
        connector.close()
    # the other client's PATCH, pmsync's PATCH with the etag it had read (412), and the retry after re-reading
    assert emulator.stats.writes_by_route[route] == 3
    reader = SdkReader(graph_box)
    try:
        task = next(t for plan in planner_connector_plans(graph_box) for t in reader.tasks(plan) if t.id == task_id)
        if target == "planner.categories":
            assert applied(task).get("category20") is True and task.priority == 1
        else:
            assert block_of(reader.description(task_id)) == "late by 3 days"
            details = reader.session.run(reader.client.planner.tasks.by_planner_task_id(task_id).details.get())
            assert details.preview_type.value == "checklist"
    finally:
        reader.close()


def planner_connector_plans(box: Sandbox) -> list[str]:
    p = box.portfolio
    return [ids.graph_id(p, "plan", pr.index) for pr in p.projects_of(PLANNER)]


def test_a_412_on_every_attempt_fails_after_a_few_rereads(graph_box: Sandbox) -> None:
    connector = planner_connector(graph_box)
    task_id = a_planner_task(graph_box)
    fault = graph_box.emulators["graph"].inject("status", status=412, method="PATCH",
                                                 path=f"/planner/tasks/{task_id}$", times=-1)
    try:
        connector.setup_writeback([])
        with pytest.raises(GraphPreconditionFailed, match="If-Match"):
            connector.write(Write("planner.categories", task_id, {"late": True, "at_risk": False}))
    finally:
        connector.close()
    assert fault.fired == 3


def test_a_portfolio_item_deleted_by_a_user_is_made_again(graph_box: Sandbox) -> None:
    connector = planner_connector(graph_box)
    plan_id = planner_connector_plans(graph_box)[-1]
    payload = {"kind": "project", "title": "Engine (Jira)", "health": "amber", "forecast_finish": "2025-04-01",
               "url": "https://jira.example.com/browse/ENG"}
    try:
        first = connector.write(Write("portfolio.item", plan_id, payload)).remote_ref
        gone = connector.session.get_json(connector._task_builder(first), "reading")
        answer = requests.delete(f"{graph_box.api_url('graph')}/planner/tasks/{first}", timeout=10, headers={
            "Authorization": f"Bearer {TOKEN}", "If-Match": gone["@odata.etag"]})
        assert answer.status_code == 204
        second = connector.write(Write("portfolio.item", plan_id, payload, remote_ref=first)).remote_ref
    finally:
        connector.close()
    assert second and second != first
    reader = SdkReader(graph_box)
    try:
        titles = [t.title for t in reader.tasks(plan_id)]
    finally:
        reader.close()
    assert titles.count("Engine (Jira)") == 1


def test_an_item_whose_id_the_ledger_lost_is_adopted_not_duplicated(graph_box: Sandbox) -> None:
    plan_id = planner_connector_plans(graph_box)[-1]
    payload = {"kind": "milestone", "title": "Beta — Engine", "state": "late", "health": "red",
               "forecast_finish": "2025-04-01", "url": "https://jira.example.com/browse/ENG-1"}
    twin = {**payload, "url": "https://jira.example.com/browse/ENG-2"}
    first_push = planner_connector(graph_box)
    try:
        first = first_push.write(Write("portfolio.item", plan_id, payload)).remote_ref
    finally:
        first_push.close()
    next_push = planner_connector(graph_box)
    try:
        again = next_push.write(Write("portfolio.item", plan_id, payload)).remote_ref  # no remote_ref: lost
        other = next_push.write(Write("portfolio.item", plan_id, twin)).remote_ref  # same title, other source
    finally:
        next_push.close()
    assert again == first and other != first
    reader = SdkReader(graph_box)
    try:
        assert [t.title for t in reader.tasks(plan_id)].count("Beta — Engine") == 2
    finally:
        reader.close()


# -- the push echo ----------------------------------------------------------------------------------------------

def planner_only_config(box: Sandbox, folder: Path) -> Config:
    """A configuration with only the sandbox's Planner connection and a DuckDB warehouse in `folder`."""
    data = {"warehouse": f"duckdb:///{folder / 'pmsync.duckdb'}", "timezone": "UTC", "links": [],
            "schedule": {"baseline": "original", "at_risk_days": 3},
            "connections": [{"name": "pmo-planner", "tool": "planner", "base_url": box.api_url("graph"),
                             "auth": {"token": TOKEN}, "plans": planner_connector_plans(box)}]}
    path = folder / "pmsync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


def someone_patches(box: Sandbox, task_id: str, body: dict[str, Any]) -> None:
    """Another Graph client changes a task: read it for its ETag, PATCH it with that ETag in If-Match."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{box.api_url('graph')}/planner/tasks/{task_id}"
    etag = requests.get(url, headers=headers, timeout=10).json()["@odata.etag"]
    answer = requests.patch(url, json=body, timeout=10, headers={**headers, "If-Match": etag})
    assert answer.status_code in (200, 204), answer.text


def test_the_sync_after_a_push_leaves_out_pmsyncs_own_edits_and_reads_everyone_elses(tmp_path: Path) -> None:
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",)) as box:
        config = planner_only_config(box, tmp_path)
        name = config.connections[0].name
        assert run_sync(config).ok
        with open_config_warehouse(config) as warehouse:
            compute_and_store(warehouse, config, as_of=TEST_AS_OF)
        # The first push fills empty descriptions, which moves those tasks' ETags without telling pmsync: the sync
        # after it reads them. From then on a push edits the block in place and moves ETags by categories alone.
        assert run_push(config, setup=True).ok
        assert run_sync(config).ok
        later = (pd.Timestamp(TEST_AS_OF) + pd.Timedelta(days=45)).date()
        with open_config_warehouse(config) as warehouse:
            compute_and_store(warehouse, config, as_of=later)
            plan = plan_writes(warehouse, config, [name])
        categorised = sorted(plan.loc[plan["needed"] & (plan["target"] == "planner.categories"), "native_id"])
        assert len(categorised) > 5
        # Changed by someone after the last sync but before pmsync's write: the write's own If-Match ETag then
        # is not the one the sync committed, so the change is read.
        before_write, due_moved, titled = categorised[:3]
        someone_patches(box, before_write, {"percentComplete": 50})
        pushed = run_push(config)
        assert pushed.ok and pushed.results[name].written == pushed.results[name].planned
        someone_patches(box, due_moved, {"dueDateTime": "2031-01-15T00:00:00Z"})
        untouched_by_pmsync = next(t for t in planner_task_ids(box) if t not in set(plan.loc[plan["needed"], "native_id"]))
        someone_patches(box, titled, {"title": "Renamed by a colleague"})
        someone_patches(box, untouched_by_pmsync, {"title": "Not pmsync's"})

        result, listings = incremental_sync(config, box.emulators["graph"],
                                            "GET /v1.0/planner/plans/{plan}/tasks")
        # Only the four tasks someone else changed are loaded; the rest of the push echo is left out, from the
        # same listing pages as before (Planner has no cheaper read of changes).
        assert result.loaded == 4
        assert listings == len(planner_connector_plans(box))
        with open_config_warehouse(config) as warehouse:
            tasks = warehouse.read("tasks", columns=["native_id", "title", "due_date", "percent_complete"],
                                   ).set_index("native_id")
        assert tasks.loc[before_write, "percent_complete"] == 50
        assert pd.Timestamp(tasks.loc[due_moved, "due_date"]).date().isoformat() == "2031-01-15"
        assert tasks.loc[titled, "title"] == "Renamed by a colleague"
        assert tasks.loc[untouched_by_pmsync, "title"] == "Not pmsync's"


def planner_task_ids(box: Sandbox) -> list[str]:
    p = box.portfolio
    return [server.native_id(p, i) for i in range(p.tasks.size) if p.tasks.tool[i] == PLANNER
            and not p.tasks.deleted[i]]
