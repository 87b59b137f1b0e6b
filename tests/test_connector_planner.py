"""The Planner connector against the Graph emulator over HTTP: full and incremental syncs into the warehouse, ETag
cursors, deletions, quarantine, a killed sync resumed, throttling and credentials."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import psycopg
import pytest
import yaml

from connectors import planner as planner_module
from connectors.base import Batch
from connectors.planner import PlannerConnector, pack, unpack
from mappings.mapping import load_mapping
from pmsync.config import PlannerConnection
from pmsync.errors import ConnectionFailed
from pmsync.sync import sync_connection
from sandbox import graph, ids
from sandbox.core import CREDENTIALS, RateLimit
from sandbox.generator import CANCELLED, NO_DAY, PLANNER, STATUS_CATEGORIES, day_to_date
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, native_id, task_uid
from tests.conftest import POSTGRES_URL, Backend
from warehouse import Warehouse

CONNECTION = "pmo-planner"
TOKEN = CREDENTIALS["graph"]["token"]
REPO = Path(__file__).resolve().parents[1]
TASKS_ROUTE = "GET /v1.0/planner/plans/{plan}/tasks"


def _graph_only() -> Sandbox:
    return Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",))


@pytest.fixture(scope="module")
def shared_box() -> Iterator[Sandbox]:
    """A read-only sandbox serving only Graph, shared by the module."""
    with _graph_only() as box:
        yield box


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """A sandbox serving only Graph that one test may change."""
    with _graph_only() as sandbox_:
        yield sandbox_


def connection_dict(box: Sandbox, **overrides: Any) -> dict[str, Any]:
    p = box.portfolio
    return {"name": CONNECTION, "tool": "planner", "base_url": box.api_url("graph"), "auth": {"token": TOKEN},
            "plans": [ids.graph_id(p, "plan", pr.index) for pr in p.projects_of(PLANNER)], **overrides}


@pytest.fixture
def connect() -> Iterator[Any]:
    """Build connectors for a sandbox and close them after the test."""
    made: list[PlannerConnector] = []

    def build(box: Sandbox, **overrides: Any) -> PlannerConnector:
        connector = PlannerConnector.from_config(PlannerConnection.model_validate(connection_dict(box, **overrides)))
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


def planner_tasks(box: Sandbox) -> list[int]:
    return [int(i) for i in box.portfolio.task_indexes(PLANNER)]


def pulled_ids(batches: list[Batch]) -> list[str]:
    return [str(record["id"]) for batch in batches for record in batch.records]


def sync(connector: PlannerConnector, warehouse: Warehouse, full: bool = False) -> Any:
    return sync_connection(connector, load_mapping("planner"), warehouse, full=full)


def task_rows(warehouse: Warehouse) -> pd.DataFrame:
    return warehouse.read("tasks", "connection = %s", [CONNECTION]).set_index("task_uid")


def last_run(warehouse: Warehouse) -> pd.Series:
    runs = warehouse.read("sync_runs", "connection = %s", [CONNECTION]).sort_values("started_at")
    return runs.iloc[-1]


def _day(value: Any) -> Any:
    return None if pd.isna(value) else pd.Timestamp(value).date()


def expected_category(p: Any, i: int) -> str:
    # Planner has no cancelled state: a cancelled task is an unstarted one there (percentComplete 0).
    status = int(p.tasks.status[i])
    return "todo" if status == CANCELLED else STATUS_CATEGORIES[status]


# -- a full sync --------------------------------------------------------------------------------------------------

def test_full_sync_loads_every_planner_task_once_with_the_portfolios_fields(
    shared_box: Sandbox, warehouse: Warehouse, connect,
) -> None:
    p, t = shared_box.portfolio, shared_box.portfolio.tasks
    connector = connect(shared_box)
    result = sync(connector, warehouse)
    assert result.ok and result.quarantined == 0
    rows = task_rows(warehouse)
    indexes = planner_tasks(shared_box)
    assert sorted(rows.index) == sorted(task_uid(p, i) for i in indexes)
    for i in indexes:
        row = rows.loc[task_uid(p, i)]
        due = day_to_date(int(t.due[i])) if t.due[i] != NO_DAY else None
        start = day_to_date(int(t.start[i])) if t.start[i] != NO_DAY else None
        assert (_day(row["due_date"]), _day(row["start_date"])) == (due, start), i
        assert row["status_category"] == expected_category(p, i), i
        assert row["parent_uid"] is None or pd.isna(row["parent_uid"])
        assert row["project_uid"] == f"{CONNECTION}:{ids.graph_id(p, 'plan', int(t.project[i]))}"
        assert row["key"] == native_id(p, i) and row["title"] == p.title(i)
        assignee = int(t.assignee[i])
        email = None if pd.isna(row["assignee_email"]) else row["assignee_email"]
        assert email == (p.people[assignee].email_in(PLANNER) if assignee >= 0 else None)
    projects = warehouse.read("projects", "connection = %s", [CONNECTION])
    assert sorted(projects["name"]) == sorted(pr.name for pr in p.projects_of(PLANNER))
    people = set(warehouse.read("people")["email"])
    assert {p.people[int(t.assignee[i])].email_in(PLANNER).lower() for i in indexes if t.assignee[i] >= 0} <= people
    # Planner keeps no history: no due-date changes come from it, only what pmsync observes.
    assert warehouse.count("task_history", "source = 'tool_history'") == 0


def test_full_pull_costs_plans_pages_buckets_and_one_read_per_distinct_assignee(
    shared_box: Sandbox, connect,
) -> None:
    p, t = shared_box.portfolio, shared_box.portfolio.tasks
    connector = connect(shared_box)
    batches = list(connector.pull(None))
    plans = p.projects_of(PLANNER)
    pages = sum(-(-len(p.task_indexes(PLANNER, pr.index)) // graph.PAGE_SIZE) for pr in plans)
    users = len({int(t.assignee[i]) for i in planner_tasks(shared_box) if t.assignee[i] >= 0})
    assert connector.stats.requests == len(plans) * 2 + pages + users
    assert len(batches) == pages
    assert sorted(pulled_ids(batches)) == sorted(native_id(p, i) for i in planner_tasks(shared_box))
    assert all(not batch.links and not batch.due_changes for batch in batches)
    # The census after a pull reuses its listing.
    assert sorted(connector.census()) == sorted(pulled_ids(batches))
    assert connector.stats.requests == len(plans) * 2 + pages + users


def test_raw_records_stay_graphs_with_the_pmsync_context_added(shared_box: Sandbox, connect) -> None:
    batches = list(connect(shared_box).pull(None))
    record = next(r for b in batches for r in b.records if r["assignments"])
    assert {"@odata.etag", "id", "planId", "bucketId", "percentComplete", "dueDateTime", "assignments"} <= set(record)
    context = record["_pmsync"]
    assert context["bucket_name"] in graph.BUCKET_NAMES
    assert context["assignee_id"] == next(iter(record["assignments"]))
    assert context["assignee_email"] and context["url"].endswith(f"/task/{record['id']}")


# -- incremental syncs --------------------------------------------------------------------------------------------

def test_incremental_sync_after_ten_changes_pulls_only_those(box: Sandbox, warehouse: Warehouse, connect) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    sync(connect(box), warehouse)
    changed = planner_tasks(box)[3:13]
    for i in changed:
        box.call(p.set_due, i, int(t.due[i]) + 4 if t.due[i] != NO_DAY else 20_800)
    result = sync(connect(box), warehouse)
    assert result.mode == "incremental" and result.pulled == len(changed)
    plans = p.projects_of(PLANNER)
    pages = sum(-(-len(p.task_indexes(PLANNER, pr.index)) // graph.PAGE_SIZE) for pr in plans)
    changed_plans = {int(t.project[i]) for i in changed}
    # A read per plan, the pages of every plan, the buckets of plans with changes; the changed tasks' assignees
    # were read by the full sync and ride in its cursor.
    assert last_run(warehouse)["requests"] == len(plans) + pages + len(changed_plans)
    rows = task_rows(warehouse)
    for i in changed:
        assert _day(rows.loc[task_uid(p, i), "due_date"]) == day_to_date(int(t.due[i]))
    assert sync(connect(box), warehouse).pulled == 0


def test_assignees_in_the_cursor_are_read_again_once_a_day_old(box: Sandbox, connect) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    cursor = list(connect(box).pull(None))[-1].cursor
    held = orjson.loads(cursor[planner_module.USERS_KEY])
    assigned = {int(t.assignee[i]) for i in planner_tasks(box) if t.assignee[i] >= 0}
    assert len(held["people"]) == len(assigned) and all(email for email, _ in held["people"].values())
    changed = [i for i in planner_tasks(box) if t.assignee[i] >= 0][:6]
    for i in changed:
        box.call(p.set_due, i, int(t.due[i]) + 4 if t.due[i] != NO_DAY else 20_800)
    fresh = connect(box)
    batches = list(fresh.pull(cursor))
    assert sorted(pulled_ids(batches)) == sorted(native_id(p, i) for i in changed)
    emails = {r["_pmsync"]["assignee_id"]: r["_pmsync"]["assignee_email"] for b in batches for r in b.records}
    assert all(emails.values()) and set(emails) <= set(held["people"])
    plans = p.projects_of(PLANNER)
    pages = sum(-(-len(p.task_indexes(PLANNER, pr.index)) // graph.PAGE_SIZE) for pr in plans)
    changed_plans = {int(t.project[i]) for i in changed}
    assert fresh.stats.requests == len(plans) + pages + len(changed_plans)  # no /users read
    old = dict(cursor)
    old[planner_module.USERS_KEY] = orjson.dumps(
        {**held, "at": (datetime.now(UTC) - planner_module.USERS_MAX_AGE - timedelta(minutes=1)).isoformat()}).decode()
    aged = connect(box)
    assert sorted(pulled_ids(list(aged.pull(old)))) == sorted(native_id(p, i) for i in changed)
    users = len({int(t.assignee[i]) for i in changed})
    assert aged.stats.requests == len(plans) + pages + len(changed_plans) + users


def test_has_changes_compares_etags_with_the_cursor(box: Sandbox, connect) -> None:
    p = box.portfolio
    cursor = list(connect(box).pull(None))[-1].cursor
    assert not connect(box).has_changes(cursor)
    i = planner_tasks(box)[7]
    box.call(p.touch, i)
    assert connect(box).has_changes(cursor)
    assert connect(box).has_changes(None)


def test_resuming_from_any_batch_cursor_neither_repeats_nor_skips(
    box: Sandbox, connect, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(graph, "PAGE_SIZE", 6)
    batches = list(connect(box).pull(None))
    assert len(batches) > 4
    everything = pulled_ids(batches)
    for k, batch in enumerate(batches):
        rest = pulled_ids(list(connect(box).pull(batch.cursor)))
        assert rest == everything[len(pulled_ids(batches[: k + 1])):], k


def test_cursor_packs_sixteen_characters_per_task() -> None:
    digests = {f"{k:010d}": f"{k % 999999:06d}" for k in range(10_000)}
    packed = pack(digests)
    assert len(packed) == 160_000  # 160 KB per 10,000 tasks
    assert unpack(packed) == digests


# -- deletions and quarantine -------------------------------------------------------------------------------------

def test_a_deleted_task_gets_deleted_at_and_nothing_else_changes(
    box: Sandbox, warehouse: Warehouse, connect,
) -> None:
    p = box.portfolio
    sync(connect(box), warehouse)
    before = task_rows(warehouse).drop(columns=["last_synced_at"])
    gone = planner_tasks(box)[11]
    box.call(p.delete, gone)
    result = sync(connect(box), warehouse)
    assert result.deleted == 1 and result.pulled == 0
    after = task_rows(warehouse).drop(columns=["last_synced_at"])
    assert pd.notna(after.loc[task_uid(p, gone), "deleted_at"])
    others = after.drop(index=task_uid(p, gone))
    pd.testing.assert_frame_equal(others, before.drop(index=task_uid(p, gone)))


def test_a_malformed_task_is_quarantined_and_the_rest_loads(box: Sandbox, warehouse: Warehouse, connect) -> None:
    fault = box.emulators["graph"].inject("invalid_record", path=r"/planner/plans/[^/]+/tasks", times=1)
    result = sync(connect(box), warehouse)
    assert fault.fired == 1 and result.quarantined == 1
    quarantined = warehouse.read("quarantine", "connection = %s", [CONNECTION])
    assert len(quarantined) == 1
    assert "2023-02-30T25:61:00Z" in quarantined.iloc[0]["raw_payload"]
    assert "dueDateTime" in quarantined.iloc[0]["reason"]
    assert len(task_rows(warehouse)) == len(planner_tasks(box)) - 1


# -- a sync killed mid-way ----------------------------------------------------------------------------------------

SYNC_SCRIPT = """
import sys
from pathlib import Path
from connectors.registry import build_connector
from mappings.mapping import load_mapping
from pmsync.config import load_config
from pmsync.sync import Progress, sync_connection
from warehouse import open_warehouse
config = load_config(Path(sys.argv[1]))
connection = config.connection(sys.argv[2])
connector = build_connector(connection)
committed = Progress(advance=lambda name, records: print("committed", records, flush=True))
with open_warehouse(config.warehouse_url) as warehouse:
    sync_connection(connector, load_mapping(connection.tool), warehouse, timezone=config.timezone, progress=committed)
"""
VOLATILE = {"first_seen_at", "last_synced_at", "last_seen_at", "quarantined_at", "valid_from", "valid_to", "run_id",
            "updated_at"}
COMPARED_TABLES = ("tasks", "task_history", "projects", "people", "dependencies", "quarantine", "sync_state")


def snapshot(warehouse: Warehouse) -> dict[str, list[str]]:
    """Every compared table's rows, minus the instants of the run itself, as sorted text."""
    out = {}
    for table in COMPARED_TABLES:
        frame = warehouse.read(table)
        frame = frame[[c for c in frame.columns if c not in VOLATILE]]
        if table == "sync_state":  # when the cursor's assignees were read is an instant of the run too
            frame = frame.assign(value=frame["value"].map(_without_users_instant))
        out[table] = sorted("|".join(map(str, row)) for row in frame.itertuples(index=False))
    return out


def _without_users_instant(cursor: Any) -> Any:
    held = orjson.loads(cursor) if isinstance(cursor, str) else cursor
    if not isinstance(held, dict) or planner_module.USERS_KEY not in held:
        return cursor
    users = orjson.loads(held[planner_module.USERS_KEY])
    assert datetime.fromisoformat(users.pop("at"))
    return orjson.dumps({**held, planner_module.USERS_KEY: users}, option=orjson.OPT_SORT_KEYS).decode()


@pytest.fixture
def reference(backend: Backend) -> Iterator[Backend]:
    """A second, empty warehouse on the same backend, for an uninterrupted sync to compare with."""
    if backend.name == "duckdb":
        yield Backend("duckdb", "duckdb:///reference/pmsync.duckdb", backend.base_dir)
        return
    schema = f"pmsync_ref_{uuid.uuid4().hex[:12]}"
    yield Backend("postgres", POSTGRES_URL, backend.base_dir, schema)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def write_config(path: Path, warehouse_url: str, connection: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"warehouse": warehouse_url, "timezone": "UTC", "connections": [connection]}))
    return path


def kill_after(process: subprocess.Popen, ready: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the sync ended before it could be killed: {process.stderr.read().decode()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the sync never got far enough to be killed")
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_a_killed_sync_resumed_leaves_what_an_uninterrupted_one_leaves(
    box: Sandbox, backend: Backend, reference: Backend, connect, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr(graph, "PAGE_SIZE", 5)
    emulator = box.emulators["graph"]
    emulator.settings.latency_s = 0.15
    config = write_config(tmp_path / "pmsync.yaml", backend.config_url, connection_dict(box))
    process = subprocess.Popen([sys.executable, "-c", SYNC_SCRIPT, str(config), CONNECTION], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Killed once a batch is committed: pages are read ahead of the commits, so pages served say nothing of them.
    kill_after(process, lambda: process.stdout.readline().startswith(b"committed"))
    assert process.returncode == -signal.SIGKILL
    emulator.settings.latency_s = 0.0
    with backend.open() as warehouse:
        loaded = warehouse.count("tasks")
        assert 0 < loaded < len(planner_tasks(box)), "the kill should land mid-way"
        assert sync(connect(box), warehouse).mode == "incremental"
        resumed = snapshot(warehouse)
    with reference.open() as clean:
        sync(connect(box), clean)
        assert resumed == snapshot(clean)


# -- throttling, faults and credentials ---------------------------------------------------------------------------

def test_a_429_burst_is_absorbed_and_counted(box: Sandbox, connect) -> None:
    emulator = box.emulators["graph"]
    emulator.settings.rate_limit = RateLimit(4, 1.0)
    connector = connect(box)
    batches = list(connector.pull(None))
    assert sorted(pulled_ids(batches)) == sorted(native_id(box.portfolio, i) for i in planner_tasks(box))
    assert connector.stats.throttled > 0
    assert connector.stats.throttled == emulator.stats.rate_limited
    assert connector.stats.requests == emulator.stats.requests


def test_an_injected_503_and_a_truncated_page_are_retried(box: Sandbox, connect) -> None:
    emulator = box.emulators["graph"]
    unavailable = emulator.inject("status", status=503, path="/tasks", times=1)
    truncated = emulator.inject("truncated", path="/tasks", times=1)
    connector = connect(box)
    assert sorted(pulled_ids(list(connector.pull(None)))) == sorted(
        native_id(box.portfolio, i) for i in planner_tasks(box))
    assert unavailable.fired == 1 and truncated.fired == 1
    assert connector.stats.server_errors == 1 and connector.stats.bad_bodies == 1
    assert connector.stats.requests == emulator.stats.requests


def test_a_wrong_token_gives_one_sentence_without_the_token(box: Sandbox, connect) -> None:
    wrong = "not-the-sandbox-token-123"
    connector = connect(box, auth={"token": wrong})
    with pytest.raises(ConnectionFailed) as failure:
        connector.check()
    message = str(failure.value)
    assert box.api_url("graph") in message and "auth" in message
    assert wrong not in message and TOKEN not in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_an_unknown_plan_is_named_in_the_failure(box: Sandbox, connect) -> None:
    with pytest.raises(ConnectionFailed, match="NoSuchPlan"):
        list(connect(box, plans=["NoSuchPlanXXXXXXXXXXXXXXXXXX"]).pull(None))


def test_group_plans_are_pulled_like_configured_ones(shared_box: Sandbox, connect) -> None:
    p = shared_box.portfolio
    api = graph.GraphApi(p)
    plan = p.projects_of(PLANNER)[0].index
    group = api.group_id(plan)
    in_group = [pr.index for pr in p.projects_of(PLANNER) if api.group_id(pr.index) == group]
    batches = list(connect(shared_box, plans=[], groups=[group]).pull(None))
    assert sorted(pr.native_id for b in batches for pr in b.projects) == sorted(
        ids.graph_id(p, "plan", n) for n in in_group)
    assert sorted(pulled_ids(batches)) == sorted(
        native_id(p, int(i)) for n in in_group for i in p.task_indexes(PLANNER, n))


def test_client_credentials_are_exchanged_at_the_configured_login_url(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = CREDENTIALS["graph"]
    # azure-identity insists on an https authority: this sandbox serves TLS from its throwaway CA.
    with Sandbox(size=60, seed=7, as_of=TEST_AS_OF, rate_limits=False, tls=True, vendors=("graph",)) as secure:
        assert secure.tls_files is not None
        raw = connection_dict(secure, login_url=secure.urls["graph"], ca_bundle=str(secure.tls_files.ca_bundle),
                              auth={"tenant_id": creds["tenant_id"], "client_id": creds["client_id"],
                                    "client_secret": creds["client_secret"]})
        connector = PlannerConnector.from_config(PlannerConnection.model_validate(raw))
        try:
            ids_ = sorted(connector.census())
        finally:
            connector.close()
        assert ids_ == sorted(native_id(secure.portfolio, i) for i in planner_tasks(secure))
        bad = {**raw, "auth": {**raw["auth"], "client_secret": "wrong-secret-456"}}
        connector = PlannerConnector.from_config(PlannerConnection.model_validate(bad))
        try:
            with pytest.raises(ConnectionFailed, match="client credentials") as failure:
                connector.check()
        finally:
            connector.close()
        assert "wrong-secret-456" not in str(failure.value) and creds["client_secret"] not in str(failure.value)
