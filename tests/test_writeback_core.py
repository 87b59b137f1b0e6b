"""The write-back planner on small hand-made frames: payload hashes, what a change makes needed, failed writes
retried, quiet targets, portfolio archives, and a dry run that changes nothing."""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mappings.schema import TABLES
from pmsync.config import Config, load_config
from warehouse import open_warehouse
from writeback.ledger import read_ledger, record_failed, record_written
from writeback.plan import (
    changed_fields,
    compare_with_ledger,
    payload_hash,
    plan_from_frames,
    status_sentence,
)
from writeback.push import run_push

AS_OF = date(2026, 11, 22)


def frame(table: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of a warehouse table, every column present (missing values None)."""
    return pd.DataFrame([{name: row.get(name) for name in TABLES[table].column_names} for row in rows],
                        columns=TABLES[table].column_names)


def write_config(folder: Path, writeback: dict[str, Any] | None = None, warehouse: str = "duckdb:///w.duckdb") -> Config:
    data = {
        "warehouse": warehouse,
        "connections": [
            {"name": "eng-jira", "tool": "jira", "url": "http://127.0.0.1:9", "projects": ["PLAT"],
             "auth": {"email": "a@example.com", "token": "jira-token-123"}},
            {"name": "ops-trello", "tool": "trello", "base_url": "http://127.0.0.1:9",
             "auth": {"key": "trello-key-123", "token": "trello-token-123"}, "boards": ["board1"]},
        ],
        "writeback": writeback or {},
    }
    path = folder / "pmsync.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path)


TASKS = [
    {"task_uid": "eng-jira:1", "connection": "eng-jira", "tool": "jira", "native_id": "1", "key": "PLAT-1",
     "title": "Design", "project_uid": "eng-jira:PLAT"},
    {"task_uid": "eng-jira:2", "connection": "eng-jira", "tool": "jira", "native_id": "2", "key": "PLAT-2",
     "title": "Build", "project_uid": "eng-jira:PLAT"},
    {"task_uid": "ops-trello:c1", "connection": "ops-trello", "tool": "trello", "native_id": "c1", "key": "aB3",
     "title": "Ship", "project_uid": "ops-trello:board1", "is_milestone": True},
]


def schedule_rows(as_of: date = AS_OF, **states: str) -> list[dict[str, Any]]:
    """The schedule of TASKS; `states` overrides a task's state by native id (`n2="late"`)."""
    base = {"eng-jira:1": ("late", date(2026, 11, 25), date(2026, 12, 4), 9, "eng-jira:2"),
            "eng-jira:2": ("on_track", date(2026, 12, 10), date(2026, 12, 10), 0, None),
            "ops-trello:c1": ("at_risk", date(2026, 12, 1), date(2026, 12, 3), 2, None)}
    rows = []
    for uid, (state, baseline, forecast, slip, driver) in base.items():
        state = states.get("n" + uid.split(":")[1], state)
        rows.append({"task_uid": uid, "project_uid": uid.split(":")[0], "baseline_due": baseline,
                     "due_date": forecast, "forecast_finish": forecast, "slip_days": slip, "state": state,
                     "on_critical_path": False, "as_of": as_of, "driver_uid": driver})
    return rows


PROJECTS = [
    {"project_uid": "eng-jira:PLAT", "connection": "eng-jira", "tool": "jira", "native_id": "PLAT",
     "name": "Platform", "url": "http://jira/browse/PLAT"},
    {"project_uid": "ops-trello:board1", "connection": "ops-trello", "tool": "trello", "native_id": "board1",
     "name": "Ops", "url": "http://trello/b/board1"},
]


def plan(config: Config, schedule: list[dict[str, Any]], ledger: pd.DataFrame | None = None,
         projects: list[dict[str, Any]] = PROJECTS, names: list[str] | None = None) -> pd.DataFrame:
    return plan_from_frames(
        frame("tasks", TASKS), frame("schedule", schedule), frame("project_health", []), frame("projects", projects),
        ledger if ledger is not None else frame("writeback_ledger", []), config,
        names or [c.name for c in config.connections],
    )


def ledger_of(planned: pd.DataFrame, status: str = "written") -> pd.DataFrame:
    """The ledger a push leaves when it wrote every row of the plan (or failed every one)."""
    return frame("writeback_ledger", [
        {"target": r.target, "connection": r.connection, "task_uid": r.task_uid, "payload_hash": r.payload_hash,
         "status": status, "payload": r.payload, "remote_ref": "ref-" + r.task_uid}
        for r in planned.itertuples(index=False)])


def needed(planned: pd.DataFrame) -> set[tuple[str, str]]:
    return {(r.target, r.task_uid) for r in planned.itertuples(index=False) if r.needed}


def test_the_payload_hash_ignores_the_as_of_date_and_nothing_else():
    payload = {"state": "late", "slip_days": 9, "as_of": "2026-11-22"}
    assert payload_hash(payload) == payload_hash({**payload, "as_of": "2026-11-23"})
    assert payload_hash(payload) == payload_hash(dict(reversed(payload.items())))
    assert payload_hash(payload) != payload_hash({**payload, "slip_days": 10})


def test_a_push_on_a_new_day_with_nothing_else_changed_needs_no_write(config: Config):
    first = plan(config, schedule_rows())
    later = plan(config, schedule_rows(as_of=date(2026, 11, 23)), ledger_of(first))
    assert len(later) == len(first) and not later["needed"].any()


def test_a_first_plan_writes_every_target_of_every_task_except_quiet_ones(config: Config):
    planned = plan(config, schedule_rows())
    assert needed(planned) == {
        ("jira.property", "eng-jira:1"), ("jira.labels", "eng-jira:1"), ("jira.comment", "eng-jira:1"),
        ("jira.property", "eng-jira:2"),
        ("trello.custom_fields", "ops-trello:c1"), ("trello.comment", "ops-trello:c1"),
    }
    labels = planned[(planned.target == "jira.labels")].iloc[0].payload
    assert labels == {"add": ["pmsync-late"], "remove": ["pmsync-at-risk"]}
    prop = planned[(planned.target == "jira.property") & (planned.task_uid == "eng-jira:1")].iloc[0].payload
    assert prop == {"baseline_due": "2026-11-25", "forecast_finish": "2026-12-04", "slip_days": 9, "state": "late",
                    "on_critical_path": False, "as_of": "2026-11-22"}


def test_a_changed_state_makes_exactly_that_tasks_targets_needed(config: Config):
    first = plan(config, schedule_rows())
    changed = plan(config, schedule_rows(n2="at_risk"), ledger_of(first))
    assert needed(changed) == {("jira.property", "eng-jira:2"), ("jira.labels", "eng-jira:2"),
                               ("jira.comment", "eng-jira:2")}


def test_a_task_back_on_track_has_its_label_removed_and_its_comment_edited(config: Config):
    first = plan(config, schedule_rows())
    recovered = plan(config, schedule_rows(n1="on_track"), ledger_of(first))
    rows = recovered[recovered.task_uid == "eng-jira:1"].set_index("target")
    assert rows.loc["jira.labels", "payload"] == {"add": [], "remove": ["pmsync-late", "pmsync-at-risk"]}
    assert rows.loc["jira.comment", "needed"] and rows.loc["jira.comment", "remote_ref"] == "ref-eng-jira:1"
    assert "(on track)" in rows.loc["jira.comment", "payload"]["text"]


def test_failed_ledger_rows_are_needed_again_with_what_was_last_written(config: Config):
    first = plan(config, schedule_rows())
    again = plan(config, schedule_rows(), ledger_of(first, status="failed"))
    assert again["needed"].all() and len(again) == len(first)
    assert again.iloc[0].previous == first.iloc[0].payload


def test_switched_off_targets_are_not_planned(tmp_path: Path):
    config = write_config(tmp_path, {"eng-jira": {"comments": False, "labels": False},
                                     "ops-trello": {"custom_fields": False}})
    assert needed(plan(config, schedule_rows())) == {
        ("jira.property", "eng-jira:1"), ("jira.property", "eng-jira:2"), ("trello.comment", "ops-trello:c1")}


def test_jira_custom_fields_carry_the_configured_field_ids(tmp_path: Path):
    config = write_config(tmp_path, {"eng-jira": {"custom_fields": {"slip_days": "customfield_10050",
                                                                    "forecast_finish": "customfield_10051"}}})
    planned = plan(config, schedule_rows(), names=["eng-jira"])
    fields = planned[(planned.target == "jira.custom_fields") & (planned.task_uid == "eng-jira:1")].iloc[0].payload
    assert fields == {"forecast_finish": "2026-12-04", "slip_days": 9,
                      "field_ids": {"slip_days": "customfield_10050", "forecast_finish": "customfield_10051"}}


def test_the_comment_says_forecast_slip_state_and_what_holds_the_task_back(config: Config):
    planned = plan(config, schedule_rows())
    comment = planned[(planned.target == "jira.comment") & (planned.task_uid == "eng-jira:1")].iloc[0].payload
    assert comment == {"state": "late", "text": "pmsync: forecast finish 2026-12-04, 9 days past the original "
                                                "commitment of 2026-11-25 (late). Held back by PLAT-2 in Jira."}
    assert status_sentence({"state": "unscheduled"}) == "pmsync: no due date, so no forecast (unscheduled)."


def test_a_portfolio_item_whose_source_disappeared_is_archived(tmp_path: Path):
    config = write_config(tmp_path, {"portfolio": {"trello_board": {"connection": "ops-trello", "id": "pf-board"}}})
    first = plan(config, schedule_rows(), names=["ops-trello"])
    items = first[first.target == "portfolio.item"]
    assert {"eng-jira:PLAT", "ops-trello:board1"} <= set(items.task_uid)
    without_plat = plan(config, schedule_rows(), ledger_of(first), projects=PROJECTS[1:], names=["ops-trello"])
    archives = without_plat[without_plat.target == "portfolio.archive"]
    assert archives[["task_uid", "native_id", "remote_ref"]].values.tolist() == [
        ["eng-jira:PLAT", "pf-board", "ref-eng-jira:PLAT"]]
    assert archives["needed"].all()
    assert not without_plat[without_plat.target != "portfolio.archive"]["needed"].any()


def test_the_dry_run_diff_names_each_changed_field_with_old_and_new_values():
    previous = {"state": "on_track", "slip_days": 0, "as_of": "2026-11-21"}
    assert changed_fields(previous, {"state": "late", "slip_days": 0, "as_of": "2026-11-22"}) == [
        ("state", "on_track", "late")]
    assert changed_fields(None, {"state": "late"}) == [("state", None, "late")]


def test_compare_with_the_ledger_drops_quiet_targets_never_written():
    desired = [{"target": "jira.labels", "connection": "c", "task_uid": "c:1", "native_id": "1",
                "payload": {"add": [], "remove": ["pmsync-late", "pmsync-at-risk"]}}]
    assert compare_with_ledger(desired, frame("writeback_ledger", [])).empty


def test_a_dry_run_plans_from_the_warehouse_and_changes_nothing(tmp_path: Path):
    config = write_config(tmp_path, warehouse=f"duckdb:///{tmp_path / 'w.duckdb'}")
    with open_warehouse(config.warehouse_url) as warehouse:
        warehouse.upsert("tasks", frame("tasks", TASKS).assign(first_seen_at=pd.Timestamp("2026-11-01", tz="UTC")))
        warehouse.upsert("schedule", frame("schedule", schedule_rows()))
        warehouse.upsert("projects", frame("projects", PROJECTS))
        record_failed(warehouse, "jira.property", "eng-jira", "eng-jira:1", error="HTTP 500")
        before = warehouse.read("writeback_ledger")
    outcome = run_push(config, dry_run=True)  # the tools' URLs answer nothing: any request would fail
    assert outcome.dry_run and outcome.ok
    assert needed(outcome.plan) == needed(plan(config, schedule_rows(), before))
    with open_warehouse(config.warehouse_url) as warehouse:
        pd.testing.assert_frame_equal(warehouse.read("writeback_ledger"), before)


def test_the_ledger_keeps_the_last_written_payload_when_a_retry_fails(tmp_path: Path):
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        record_written(warehouse, "jira.comment", "eng-jira", "eng-jira:1", payload={"state": "late"},
                       payload_hash="h1", remote_ref="10001")
        record_failed(warehouse, "jira.comment", "eng-jira", "eng-jira:1", error="HTTP 500")
        row = read_ledger(warehouse, ["eng-jira"]).iloc[0]
        assert (row.status, row.payload_hash, row.remote_ref, row.error) == ("failed", "h1", "10001", "HTTP 500")
        assert read_ledger(warehouse, ["other"]).empty


def test_a_write_with_nothing_to_edit_in_place_carries_no_remote_ref():
    # pandas 3 reads a text column with gaps as a string dtype whose gaps are NaN (truthy): the plan must keep
    # None, or a first comment would be "edited" at the id "nan" instead of posted.
    desired = [{"target": "trello.comment", "connection": "c", "task_uid": f"c:{n}", "native_id": str(n),
                "payload": {"state": "late", "text": "pmsync: late"}} for n in (1, 2)]
    ledger = frame("writeback_ledger", [{"target": "trello.comment", "connection": "c", "task_uid": "c:1",
                                         "payload_hash": "old", "status": "written", "remote_ref": "a1",
                                         "payload": '{"state": "at_risk"}'}])
    plan = compare_with_ledger(desired, ledger)
    refs = dict(zip(plan["task_uid"], plan["remote_ref"]))
    assert refs["c:1"] == "a1" and refs["c:2"] is None
    assert [row["remote_ref"] for row in plan[plan["needed"]].to_dict("records")] == ["a1", None]
