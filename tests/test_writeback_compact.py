"""The plan at the size of a million tasks: read from the warehouse a range of tasks at a time, only the columns it
uses, and kept compact (JSON text in Arrow-backed columns), it is the plan made from whole frames in memory; a push
decodes its writes a few at a time from it and makes each planned write once."""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import yaml
from conftest import Backend
from test_writeback_core import frame, write_config

import writeback.plan as plan_module
import writeback.push as push_module
from pmsync.config import Config, load_config
from pmsync.run import open_config_warehouse, run_sync
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox
from schedule.compute import compute_and_store
from warehouse.base import Warehouse
from writeback.ledger import read_ledger, record_failed, record_written
from writeback.plan import (
    changed_fields,
    compact_plan,
    expand,
    plan_from_frames,
    plan_rows,
    plan_writes,
    task_ranges,
)
from writeback.push import run_push

NAMES = ["eng-jira", "ops-trello"]


def config_for(folder: Path, warehouse: str) -> Config:
    return write_config(folder, {"portfolio": {"trello_board": {"connection": "ops-trello", "id": "pf-board"}}},
                        warehouse)


def task(uid: str, **values: Any) -> dict[str, Any]:
    connection, native = uid.split(":")
    tool = connection.split("-")[1]
    project = "eng-jira:PLAT" if tool == "jira" else "ops-trello:board1"
    return {"task_uid": uid, "connection": connection, "tool": tool, "native_id": native, "key": f"K-{native}",
            "title": f"Task {native}", "project_uid": project, "first_seen_at": pd.Timestamp("2026-11-01", tz="UTC"),
            **values}


# Seven Jira tasks (one deleted, one a milestone) and three Trello cards; some held back by a task of the other
# tool, one by the deleted task (no name then), one by a card without a key (its title names it).
TASKS = [task(f"eng-jira:{n}") for n in (1, 4, 5, 7)] + [
    task("eng-jira:2", is_milestone=True), task("eng-jira:3", deleted_at=pd.Timestamp("2026-11-20", tz="UTC")),
    task("eng-jira:6"), task("ops-trello:c1", is_milestone=True), task("ops-trello:c2", key=None),
    task("ops-trello:c3"),
]
STATES = ["late", "at_risk", "on_track", "done_late", "on_track", "late", "at_risk", "late", "late", "at_risk"]
DRIVERS = {"ops-trello:c1": "eng-jira:4", "eng-jira:5": "eng-jira:3", "eng-jira:6": "ops-trello:c2",
           "eng-jira:7": "eng-jira:1"}
PROJECTS = [
    {"project_uid": "eng-jira:PLAT", "connection": "eng-jira", "tool": "jira", "native_id": "PLAT",
     "name": "Platform", "url": "http://jira/browse/PLAT"},
    {"project_uid": "ops-trello:board1", "connection": "ops-trello", "tool": "trello", "native_id": "board1",
     "name": "Ops", "url": "http://trello/b/board1"},
]


def schedule_rows() -> list[dict[str, Any]]:
    return [{"task_uid": row["task_uid"], "project_uid": row["project_uid"], "baseline_due": date(2026, 12, 1),
             "due_date": date(2026, 12, 1 + n), "forecast_finish": date(2026, 12, 1 + n), "slip_days": n,
             "state": STATES[n], "on_critical_path": n % 2 == 0, "as_of": TEST_AS_OF,
             "driver_uid": DRIVERS.get(row["task_uid"])} for n, row in enumerate(TASKS)]


@pytest.fixture
def planned(warehouse: Warehouse, tmp_path: Path, backend: Backend) -> tuple[Config, Warehouse]:
    """The tasks in the warehouse and a ledger of an earlier push: some writes made, some failed, a portfolio item
    whose source is gone; a range is two tasks, so Jira's six live tasks are read in three ranges."""
    config = config_for(tmp_path, backend.config_url)
    warehouse.upsert("tasks", frame("tasks", TASKS))
    warehouse.upsert("schedule", frame("schedule", schedule_rows()))
    warehouse.upsert("projects", frame("projects", PROJECTS))
    first = plan_writes(warehouse, config)
    for n, row in enumerate(first.itertuples(index=False)):
        if n % 3 == 0:
            record_written(warehouse, row.target, row.connection, row.task_uid, payload=row.payload,
                           payload_hash=row.payload_hash, remote_ref=f"ref-{n}")
        elif n % 3 == 1:
            record_failed(warehouse, row.target, row.connection, row.task_uid, error="HTTP 500")
    record_written(warehouse, "portfolio.item", "ops-trello", "gone:9", payload={"kind": "project"},
                   payload_hash="old", remote_ref="card-gone")
    warehouse.upsert("schedule", frame("schedule", [{**row, "state": "late"} for row in schedule_rows()[:3]]))
    return config, warehouse


@pytest.fixture(autouse=True)
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "CHUNK", 2)


@pytest.mark.parametrize("names", [NAMES, NAMES[::-1]])
def test_the_plan_read_a_range_of_tasks_at_a_time_is_the_plan_from_whole_frames(planned, names):
    config, warehouse = planned
    assert [len(task_ranges(warehouse, name)) for name in NAMES] == [3, 2]
    whole = plan_from_frames(warehouse.read("tasks"), warehouse.read("schedule"), warehouse.read("project_health"),
                             warehouse.read("projects"), read_ledger(warehouse), config, names)
    pd.testing.assert_frame_equal(plan_writes(warehouse, config, names), whole)
    # The case is not an empty one: writes needed and not, an archive, drivers named across tools or not at all.
    assert whole["needed"].any() and not whole["needed"].all()
    assert whole[whole.target == "portfolio.archive"]["task_uid"].tolist() == ["gone:9"]
    comments = {row.task_uid: row.payload["text"] for row in whole.itertuples(index=False)
                if row.target in ("jira.comment", "trello.comment")}
    assert comments["ops-trello:c1"].endswith("Held back by K-4 in Jira.")
    assert comments["eng-jira:6"].endswith("Held back by Task c2 in Trello.")
    assert "Held back" not in comments["eng-jira:5"]
    assert "eng-jira:3" not in set(whole["task_uid"])


def test_the_compact_plan_holds_json_text_that_decodes_to_the_expanded_plan(planned):
    config, warehouse = planned
    compact = compact_plan(warehouse, config)
    expanded = plan_writes(warehouse, config)
    assert all(isinstance(text, str) for text in compact["payload"])
    assert [orjson.loads(text) for text in compact["payload"]] == list(expanded["payload"])
    assert list(plan_rows(compact)) == expanded.to_dict("records")
    pd.testing.assert_frame_equal(expand(compact), expanded)
    for text, decoded in zip(compact.itertuples(index=False), expanded.itertuples(index=False), strict=True):
        assert changed_fields(text.previous, text.payload) == changed_fields(decoded.previous, decoded.payload)


def test_a_push_hands_out_a_few_writes_at_a_time_and_makes_each_planned_write_once(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(push_module, "IN_FLIGHT", 3)
    raw = sandbox.config(f"duckdb:///{tmp_path / 'pmsync.duckdb'}")
    raw["connections"] = [{**c, "rate_limit": {"requests_per_second": 5000}} for c in raw["connections"]
                          if c["tool"] == "trello"]
    raw["links"] = []
    (tmp_path / "pmsync.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "pmsync.yaml")
    assert run_sync(config).ok
    with open_config_warehouse(config) as warehouse:
        compute_and_store(warehouse, config, as_of=TEST_AS_OF)
    outcome = run_push(config, setup=True)
    result = outcome.results["ops-trello"]
    assert outcome.ok and result.planned > 3 * push_module.IN_FLIGHT
    assert result.written == result.planned
    plan = expand(outcome.plan)
    with open_config_warehouse(config) as warehouse:
        ledger = read_ledger(warehouse).set_index(["target", "task_uid"])
    for row in plan[plan.needed].itertuples(index=False):
        last = ledger.loc[(row.target, row.task_uid)]
        assert last.status == "written" and last.payload_hash == row.payload_hash
        assert orjson.loads(last.payload) == row.payload
    assert run_push(config, dry_run=True).results["ops-trello"].planned == 0
