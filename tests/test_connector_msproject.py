"""The MS Project connector: drive files through the Graph emulator and local files, read with MPXJ; syncs into the
warehouse, baselines as due-date history, predecessors as links, re-reads only of changed files, a killed sync
resumed, and the real .mpp files in ../shared/fixtures/msproject."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from connectors.base import Batch
from connectors.msproject import MsProjectConnector, parse_ranges, uid_ranges
from mappings.mapping import load_mapping
from pmsync.config import MsProjectConnection
from pmsync.errors import ConnectionFailed
from pmsync.sync import sync_connection
from sandbox import ids
from sandbox.core import CREDENTIALS
from sandbox.generator import (
    FF,
    FS,
    LINK_NATIVE,
    MILESTONE,
    MSPROJECT,
    NO_DAY,
    SF,
    SS,
    STATUS_CATEGORIES,
    day_to_date,
)
from sandbox.mspdi import render_project
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, native_id, task_uid
from tests.conftest import Backend
from tests.test_connector_planner import (  # noqa: F401 - `reference` is a fixture
    REPO,
    SYNC_SCRIPT,
    kill_after,
    reference,
    snapshot,
    write_config,
)
from warehouse import Warehouse

CONNECTION = "pmo-files"
TOKEN = CREDENTIALS["graph"]["token"]
FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "msproject"
DOWNLOAD_ROUTE = "GET /_download/{token}"
KINDS = {FF: "finish_to_finish", FS: "finish_to_start", SF: "start_to_finish", SS: "start_to_start"}

pytest.importorskip("mpxj")


def _graph_only() -> Sandbox:
    return Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",))


@pytest.fixture(scope="module")
def shared_box() -> Iterator[Sandbox]:
    with _graph_only() as box:
        yield box


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with _graph_only() as sandbox_:
        yield sandbox_


def drive_files(box: Sandbox) -> list[str]:
    p = box.portfolio
    return [f"drive:{ids.graph_drive_id(p)}/items/{ids.graph_item_id(p, pr.index)}" for pr in p.projects_of(MSPROJECT)]


def connection_dict(box: Sandbox | None, files: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": CONNECTION, "tool": "msproject", "files": files or drive_files(box)}
    if box is not None:
        raw.update(base_url=box.api_url("graph"), auth={"token": TOKEN})
    return {**raw, **overrides}


@pytest.fixture
def connect() -> Iterator[Any]:
    made: list[MsProjectConnector] = []

    def build(box: Sandbox | None, files: list[str] | None = None, **overrides: Any) -> MsProjectConnector:
        raw = connection_dict(box, files, **overrides)
        connector = MsProjectConnector.from_config(MsProjectConnection.model_validate(raw))
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


def msproject_tasks(box: Sandbox) -> list[int]:
    return [int(i) for i in box.portfolio.task_indexes(MSPROJECT)]


def pulled_ids(batches: list[Batch]) -> list[str]:
    return [r["_pmsync"]["native_id"] for batch in batches for r in batch.records]


def sync(connector: MsProjectConnector, warehouse: Warehouse, full: bool = False) -> Any:
    return sync_connection(connector, load_mapping("msproject"), warehouse, full=full)


def _day(value: Any) -> Any:
    return None if pd.isna(value) else pd.Timestamp(value).date()


def last_run(warehouse: Warehouse) -> pd.Series:
    return warehouse.read("sync_runs", "connection = %s", [CONNECTION]).sort_values("started_at").iloc[-1]


# -- a full sync of the drive files -------------------------------------------------------------------------------

def test_full_sync_loads_every_task_with_dates_hierarchy_milestones_baselines_and_links(
    shared_box: Sandbox, warehouse: Warehouse, connect,
) -> None:
    p, t = shared_box.portfolio, shared_box.portfolio.tasks
    result = sync(connect(shared_box), warehouse)
    assert result.ok and result.quarantined == 0
    rows = warehouse.read("tasks", "connection = %s", [CONNECTION]).set_index("task_uid")
    indexes = msproject_tasks(shared_box)
    assert sorted(rows.index) == sorted(task_uid(p, i) for i in indexes)
    for i in indexes:
        row = rows.loc[task_uid(p, i)]
        assert _day(row["due_date"]) == day_to_date(int(t.due[i])), i
        if int(t.kind[i]) != MILESTONE:
            assert _day(row["start_date"]) == day_to_date(int(t.start[i])), i
        assert row["status_category"] == STATUS_CATEGORIES[int(t.status[i])], i
        assert bool(row["is_milestone"]) == (int(t.kind[i]) == MILESTONE), i
        parent = int(t.parent[i])
        expected_parent = task_uid(p, parent) if parent >= 0 else None
        assert (None if pd.isna(row["parent_uid"]) else row["parent_uid"]) == expected_parent, i
        assert row["project_uid"] == f"{CONNECTION}:{ids.graph_item_id(p, int(t.project[i]))}"

    # Baseline 0 holds the original due date: history runs from it to today's finish.
    history = warehouse.read("task_history", "source = 'tool_history'")
    expected = {task_uid(p, i): (day_to_date(p.original_due(i)), day_to_date(int(t.due[i])))
                for i in indexes if p.original_due(i) != int(t.due[i]) and p.original_due(i) != NO_DAY}
    assert expected, "the sandbox should reschedule some MS Project tasks"
    got = {uid: tuple(_day(d) for d in group.sort_values("valid_from")["due_date"])
           for uid, group in history.groupby("task_uid")}
    assert got == expected

    links = warehouse.read("dependencies", "connection = %s", [CONNECTION])
    expected_links = sorted(
        (task_uid(p, int(p.link_succ[k])), task_uid(p, int(p.link_pred[k])), KINDS[int(p.link_type[k])],
         float(p.link_lag[k]))
        for k in p.links_of(LINK_NATIVE) if int(t.tool[p.link_succ[k]]) == MSPROJECT
    )
    assert sorted(zip(links["successor_uid"], links["predecessor_uid"], links["kind"],
                      links["lag_days"].astype(float))) == expected_links
    assert len({kind for _, _, kind, _ in expected_links}) > 1, "the small sandbox has FS and SS links"
    projects = warehouse.read("projects", "connection = %s", [CONNECTION])
    assert sorted(projects["name"]) == sorted(pr.name for pr in p.projects_of(MSPROJECT))


def test_full_pull_reads_metadata_then_content_of_every_file(shared_box: Sandbox, connect) -> None:
    connector = connect(shared_box)
    batches = list(connector.pull(None))
    files = len(shared_box.portfolio.projects_of(MSPROJECT))
    assert connector.stats.requests == files * 3  # item, /content (302), the download URL
    assert len(batches) == files
    record = batches[0].records[0]
    assert {"uid", "name", "summary", "milestone", "finish", "baseline_finish", "predecessors", "resources"} <= set(
        record)
    assert sorted(connector.census()) == sorted(native_id(shared_box.portfolio, i) for i in msproject_tasks(shared_box))
    assert connector.stats.requests == files * 3


def test_the_drive_files_metadata_and_downloads_are_in_flight_together(box: Sandbox, connect) -> None:
    emulator = box.emulators["graph"]
    emulator.settings.latency_s = 0.2  # every request is held a while: those sent together overlap in the server
    files = len(box.portfolio.projects_of(MSPROJECT))
    assert files >= 2
    emulator.reset_stats()
    batches = list(connect(box).pull(None))
    assert len(batches) == files and emulator.stats.requests == files * 3
    assert emulator.stats.peak_in_flight == files  # one after another, it would be 1


def test_a_failed_download_is_raised_in_its_files_turn_after_the_files_before_it(box: Sandbox, connect) -> None:
    files = drive_files(box)
    first, second = (f.rsplit("/", 1)[-1] for f in files[:2])
    box.emulators["graph"].inject("status", status=404, path=f"/items/{second}/content", times=-1)
    pulled: list[Batch] = []
    with pytest.raises(ConnectionFailed, match=second):
        for batch in connect(box).pull(None):
            pulled.append(batch)
    assert pulled and {r["_pmsync"]["project_native_id"] for b in pulled for r in b.records} == {first}
    assert pulled[-1].cursor is not None and list(pulled[-1].cursor) == [files[0]]  # the first file is committed


# -- incremental syncs --------------------------------------------------------------------------------------------

def test_incremental_sync_rereads_only_the_changed_file(box: Sandbox, warehouse: Warehouse, connect) -> None:
    p, t = box.portfolio, box.portfolio.tasks
    sync(connect(box), warehouse)
    project = p.projects_of(MSPROJECT)[1].index
    in_file = [int(i) for i in p.task_indexes(MSPROJECT, project)]
    changed = in_file[:10]
    for i in changed:
        box.call(p.set_due, i, int(t.due[i]) + 2)
    probe = connect(box)
    result = sync(connect(box), warehouse)
    files = len(p.projects_of(MSPROJECT))
    assert result.mode == "incremental"
    # A changed file is read whole: every task of it is pulled again.
    assert result.pulled == len(in_file)
    assert last_run(warehouse)["requests"] == files + 2
    rows = warehouse.read("tasks", "connection = %s", [CONNECTION]).set_index("task_uid")
    for i in changed:
        assert _day(rows.loc[task_uid(p, i), "due_date"]) == day_to_date(int(t.due[i]))
    again = sync(connect(box), warehouse)
    assert again.pulled == 0 and last_run(warehouse)["requests"] == files
    assert not probe.has_changes(_stored_cursor(warehouse))


def _stored_cursor(warehouse: Warehouse) -> dict[str, str]:
    import orjson

    return orjson.loads(warehouse.get_cursor(CONNECTION, "pull"))


def test_a_deleted_task_gets_deleted_at_and_nothing_else_changes(
    box: Sandbox, warehouse: Warehouse, connect,
) -> None:
    p = box.portfolio
    sync(connect(box), warehouse)
    before = warehouse.read("tasks", "connection = %s", [CONNECTION]).set_index("task_uid")
    # A leaf task without successors: deleting it changes no other row of the file.
    succ = {int(s) for s in p.link_succ} | {int(x) for x in p.link_pred}
    parents = {int(x) for x in p.tasks.parent[: p.tasks.size] if x >= 0}
    gone = next(i for i in msproject_tasks(box) if i not in succ and i not in parents)
    box.call(p.delete, gone)
    result = sync(connect(box), warehouse)
    assert result.deleted == 1
    after = warehouse.read("tasks", "connection = %s", [CONNECTION]).set_index("task_uid")
    assert pd.notna(after.loc[task_uid(p, gone), "deleted_at"])
    keep = [c for c in after.columns if c not in ("last_synced_at", "first_seen_at")]
    pd.testing.assert_frame_equal(after.drop(index=task_uid(p, gone))[keep], before.drop(index=task_uid(p, gone))[keep])


# -- local files --------------------------------------------------------------------------------------------------

def test_a_local_file_is_read_again_only_when_its_mtime_or_size_changes(
    shared_box: Sandbox, connect, tmp_path: Path,
) -> None:
    p = shared_box.portfolio
    project = p.projects_of(MSPROJECT)[0]
    path = tmp_path / "roadmap.xml"
    path.write_bytes(render_project(p, project.index))
    batches = list(connect(None, [f"file:{path}"]).pull(None))
    assert sorted(pulled_ids(batches)) == sorted(
        f"roadmap:{int(p.tasks.seq[i])}" for i in p.task_indexes(MSPROJECT, project.index))
    cursor = batches[-1].cursor
    unchanged = connect(None, [f"file:{path}"])
    assert not unchanged.has_changes(cursor) and list(unchanged.pull(cursor)) == []
    assert sorted(unchanged.census()) == sorted(pulled_ids(batches))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = connect(None, [f"file:{path}"])
    assert touched.has_changes(cursor)
    assert sorted(pulled_ids(list(touched.pull(cursor)))) == sorted(pulled_ids(batches))
    assert touched.stats.requests == 0


def test_uid_ranges_round_trip() -> None:
    uids = [1, 2, 3, 5, 7, 8, 9, 10, 42]
    assert uid_ranges(uids) == "1-3,5,7-10,42"
    assert parse_ranges(uid_ranges(uids)) == uids


@pytest.mark.parametrize("name, tasks, summaries, milestones, links, baselines", [
    # SOURCES.md counts the project summary row (UID 0) among the tasks and summaries; pmsync treats it as the
    # project itself, so it has one task and one summary fewer.
    ("construction-software-plan-2014.mpp", 54, 9, 7, 47, True),
    ("software-plan-2020.mpp", 36, 6, None, 26, False),
])
def test_real_mpp_files_read_as_sources_md_describes(
    connect, name: str, tasks: int, summaries: int, milestones: int | None, links: int, baselines: bool,
) -> None:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared fixtures are not checked out next to the repository)")
    batches = list(connect(None, [f"file:{path}"]).pull(None))
    records = [r for b in batches for r in b.records]
    named = [r for r in records if r["name"]]
    assert len(named) + 1 == tasks
    assert sum(r["summary"] for r in records) + 1 == summaries
    if milestones is not None:
        assert sum(r["milestone"] for r in records) == milestones
    assert sum(len(b.links) for b in batches) == links
    assert all(link.kind in KINDS.values() for b in batches for link in b.links)
    assert all(r["baseline_finish"] for r in named) == baselines
    by_uid = {r["uid"]: r for r in records}
    for r in records:  # every child's parent is a summary row of the same file
        if r["parent_uid"] is not None:
            assert by_uid[r["parent_uid"]]["summary"]
    changes = [c for b in batches for c in b.due_changes]
    assert bool(changes) == baselines
    assert [pr.name for b in batches for pr in b.projects] and all(pr.name for b in batches for pr in b.projects)


# -- a sync killed mid-way ----------------------------------------------------------------------------------------

def test_a_killed_sync_resumed_leaves_what_an_uninterrupted_one_leaves(
    box: Sandbox, backend: Backend, reference: Backend, connect, tmp_path: Path,  # noqa: F811
) -> None:
    emulator = box.emulators["graph"]
    emulator.settings.latency_s = 0.3
    config = write_config(tmp_path / "pmsync.yaml", backend.config_url, connection_dict(box))
    # Files are fetched a window at a time; with windows of one file, the second file's download shows that the
    # first was read and handed to the load (its commit follows at once), so the kill lands between files.
    script = "import connectors.msproject\nconnectors.msproject.FILES_AT_ONCE = 1\n" + SYNC_SCRIPT
    process = subprocess.Popen([sys.executable, "-c", script, str(config), CONNECTION], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_after(process, lambda: emulator.stats.by_route[DOWNLOAD_ROUTE] >= 2, timeout_s=120)
    assert process.returncode == -signal.SIGKILL
    emulator.settings.latency_s = 0.0
    with backend.open() as warehouse:
        loaded = warehouse.count("tasks")
        assert 0 < loaded < len(msproject_tasks(box)), "the kill should land between files"
        sync(connect(box), warehouse)
        resumed = snapshot(warehouse)
    with reference.open() as clean:
        sync(connect(box), clean)
        assert resumed == snapshot(clean)


# -- credentials --------------------------------------------------------------------------------------------------

def test_a_wrong_token_gives_one_sentence_without_the_token(box: Sandbox, connect) -> None:
    wrong = "not-the-sandbox-token-789"
    connector = connect(box, auth={"token": wrong})
    with pytest.raises(ConnectionFailed) as failure:
        list(connector.pull(None))
    message = str(failure.value)
    assert box.api_url("graph") in message and wrong not in message and TOKEN not in message


def test_a_missing_local_file_is_named(connect, tmp_path: Path) -> None:
    with pytest.raises(ConnectionFailed, match="nowhere.mpp"):
        connect(None, [f"file:{tmp_path / 'nowhere.mpp'}"]).check()


def test_an_unreadable_plan_is_quarantined_and_the_other_files_still_load(
    shared_box: Sandbox, warehouse: Warehouse, connect, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mpp"
    broken.write_bytes(b"this is not a project file at all")
    connector = connect(shared_box, [*drive_files(shared_box), f"file:{broken}"])
    result = sync(connector, warehouse)
    assert result.ok and result.quarantined == 1
    (row,) = warehouse.read("quarantine").itertuples()
    assert row.native_id == "broken" and "not a project MPXJ can read" in row.reason
    assert orjson.loads(row.raw_payload)["file"] == "broken.mpp"
    assert warehouse.count("tasks") == len(msproject_tasks(shared_box))
