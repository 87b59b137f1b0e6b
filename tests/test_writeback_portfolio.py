"""Portfolio items (pure): one item per project and milestone of every tool for each configured portfolio view."""
from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from pmsync.config import Config
from writeback.portfolio import portfolio_items

AS_OF = pd.Timestamp("2025-03-03")


def config(**portfolio: Any) -> Config:
    return Config.model_validate({
        "warehouse": "duckdb:///pmsync.duckdb",
        "connections": [
            {"name": "eng-jira", "tool": "jira", "url": "https://jira.example.com",
             "auth": {"email": "a@example.com", "token": "t"}, "projects": ["ENG"]},
            {"name": "ops-trello", "tool": "trello", "auth": {"key": "k", "token": "t"}, "boards": ["b1"]},
            {"name": "pmo-planner", "tool": "planner", "auth": {"token": "t"}, "plans": ["plan-a"]},
        ],
        "writeback": {"portfolio": portfolio},
    })


def projects() -> pd.DataFrame:
    return pd.DataFrame({
        "project_uid": ["eng-jira:10000", "ops-trello:b1", "pmo-planner:plan-a", "pmo-planner:plan-pf",
                        "eng-jira:10001"],
        "connection": ["eng-jira", "ops-trello", "pmo-planner", "pmo-planner", "eng-jira"],
        "tool": ["jira", "trello", "planner", "planner", "jira"],
        "native_id": ["10000", "b1", "plan-a", "plan-pf", "10001"],
        "name": ["Engine", "Ops board", "Launch plan", "Portfolio", "Gone"],
        "url": ["https://jira.example.com/browse/ENG", "https://trello.com/b/b1", "https://planner/plan-a",
                "https://planner/plan-pf", "https://jira.example.com/browse/OLD"],
        "deleted_at": [pd.NaT, pd.NaT, pd.NaT, pd.NaT, pd.Timestamp("2025-02-01", tz="UTC")],
    })


def tasks() -> pd.DataFrame:
    return pd.DataFrame({
        "task_uid": ["eng-jira:1", "eng-jira:2", "ops-trello:c1", "pmo-planner:t1", "eng-jira:3", "eng-jira:9"],
        "connection": ["eng-jira", "eng-jira", "ops-trello", "pmo-planner", "eng-jira", "eng-jira"],
        "tool": ["jira", "jira", "trello", "planner", "jira", "jira"],
        "native_id": ["1", "2", "c1", "t1", "3", "9"],
        "project_uid": ["eng-jira:10000", "eng-jira:10000", "ops-trello:b1", "pmo-planner:plan-a",
                        "eng-jira:10000", "eng-jira:10001"],
        "title": ["Beta release", "Fix login", "Go live", "Sign-off", "Deleted gate", "Old gate"],
        "url": ["https://jira.example.com/browse/ENG-1", None, "https://trello.com/c/abc", None, None, None],
        "is_milestone": [True, False, True, True, True, True],
        "deleted_at": [pd.NaT, pd.NaT, pd.NaT, pd.NaT, pd.Timestamp("2025-02-01", tz="UTC"), pd.NaT],
    })


def schedule() -> pd.DataFrame:
    return pd.DataFrame({
        "task_uid": ["eng-jira:1", "eng-jira:2", "ops-trello:c1", "pmo-planner:t1"],
        "baseline_due": pd.to_datetime(["2025-03-01", "2025-03-10", "2025-04-01", None]),
        "forecast_finish": pd.to_datetime(["2025-03-03", "2025-03-10", "2025-04-01", None]),
        "slip_days": pd.array([2, 0, 0, None], dtype="Int64"),
        "state": ["late", "on_track", "at_risk", "unscheduled"],
    })


def health() -> pd.DataFrame:
    return pd.DataFrame({
        "project_uid": ["eng-jira:10000", "ops-trello:b1", "pmo-planner:plan-a"],
        "baseline_finish": pd.to_datetime(["2025-03-10", "2025-04-01", "2025-05-01"]),
        "forecast_finish": pd.to_datetime(["2025-03-12", "2025-04-01", "2025-05-01"]),
        "slip_days": pd.array([2, 0, 0], dtype="Int64"),
        "health": ["red", "amber", "green"],
    })


def items(cfg: Config, **frames: pd.DataFrame) -> pd.DataFrame:
    given = {"tasks": tasks(), "schedule": schedule(), "project_health": health(), "projects": projects()}
    given.update(frames)
    return portfolio_items(given["tasks"], given["schedule"], given["project_health"], given["projects"], cfg)


PLANNER_VIEW = {"planner_plan": {"connection": "pmo-planner", "id": "plan-pf"}}


def test_one_item_per_live_project_and_milestone_in_the_container() -> None:
    found = items(config(**PLANNER_VIEW))
    assert set(found["target"]) == {"portfolio.item"}
    assert set(found["connection"]) == {"pmo-planner"}
    assert set(found["native_id"]) == {"plan-pf"}
    # the portfolio plan (were it known as a project) is not an item of its own view; deleted projects and
    # their milestones drop out
    assert list(found["task_uid"]) == ["eng-jira:10000", "eng-jira:1", "ops-trello:b1", "ops-trello:c1",
                                       "pmo-planner:plan-a", "pmo-planner:t1"]


def test_each_configured_view_gets_every_item() -> None:
    found = items(config(trello_board={"connection": "ops-trello", "id": "pf-board"}, **PLANNER_VIEW))
    by_view = found.groupby("native_id")["task_uid"].apply(list).to_dict()
    assert by_view["pf-board"][:2] == ["eng-jira:10000", "eng-jira:1"]
    assert len(by_view["pf-board"]) == 7  # the Trello view also holds the Planner portfolio plan's project
    assert set(found.loc[found["native_id"] == "pf-board", "connection"]) == {"ops-trello"}


def test_project_payload_carries_health_forecast_baseline_slip_and_link() -> None:
    found = items(config(**PLANNER_VIEW)).set_index("task_uid")
    assert found.loc["eng-jira:10000", "payload"] == {
        "kind": "project", "title": "Engine (Jira)", "tool": "jira", "health": "red", "state": None,
        "forecast_finish": "2025-03-12", "baseline_due": "2025-03-10", "slip_days": 2,
        "url": "https://jira.example.com/browse/ENG",
    }


def test_milestone_payload_carries_state_forecast_baseline_slip_and_link() -> None:
    found = items(config(**PLANNER_VIEW)).set_index("task_uid")
    assert found.loc["eng-jira:1", "payload"] == {
        "kind": "milestone", "title": "Beta release — Engine", "tool": "jira", "health": "red", "state": "late",
        "forecast_finish": "2025-03-03", "baseline_due": "2025-03-01", "slip_days": 2,
        "url": "https://jira.example.com/browse/ENG-1",
    }
    unscheduled = found.loc["pmo-planner:t1", "payload"]
    assert unscheduled["state"] == "unscheduled" and unscheduled["forecast_finish"] is None
    assert unscheduled["slip_days"] is None and unscheduled["health"] is None


def test_deleting_a_milestone_drops_its_item() -> None:
    before = items(config(**PLANNER_VIEW))
    gone = tasks()
    gone.loc[gone["task_uid"] == "ops-trello:c1", "deleted_at"] = pd.Timestamp("2025-03-02", tz="UTC")
    after = items(config(**PLANNER_VIEW), tasks=gone)
    assert set(before["task_uid"]) - set(after["task_uid"]) == {"ops-trello:c1"}


def test_items_are_deterministic_whatever_the_input_order() -> None:
    cfg = config(**PLANNER_VIEW)
    first = items(cfg)
    shuffled = items(cfg, tasks=tasks().sample(frac=1, random_state=3), projects=projects().sample(
        frac=1, random_state=5), schedule=schedule().iloc[::-1], project_health=health().iloc[::-1])
    pd.testing.assert_frame_equal(first.reset_index(drop=True), shuffled.reset_index(drop=True))


def test_no_configured_view_gives_no_items() -> None:
    found = items(config())
    assert found.empty and list(found.columns) == ["target", "connection", "task_uid", "native_id", "payload"]


@pytest.mark.parametrize("column", ["slip_days", "forecast_finish"])
def test_payloads_hold_plain_json_values(column: str) -> None:
    import json

    found = items(config(**PLANNER_VIEW))
    for payload in found["payload"]:
        json.dumps(payload)
        assert payload[column] is None or type(payload[column]) in (int, str)
