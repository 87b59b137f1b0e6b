"""A small hand-made portfolio for the report tests: four projects in four tools, late, at-risk, done and
unscheduled tasks, a milestone, a critical chain across tools, a dependency cycle, and titles a user could type
to attack a report (`<script>`, a formula)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from warehouse import Warehouse

AS_OF = date(2026, 3, 2)
SCRIPT_TITLE = "<script>alert(1)</script>"
FORMULA_TITLE = '=HYPERLINK("http://evil.example","click")'
PROJECTS = [
    # project_uid, connection, tool, name, url
    ("eng-jira:10000", "eng-jira", "jira", "Platform rebuild", "https://acme.atlassian.net/browse/PLAT"),
    ("mkt-asana:1202", "mkt-asana", "asana", "Launch <b>campaign</b>", "https://app.asana.com/0/1202"),
    ("ops-trello:b1", "ops-trello", "trello", "Ops: office move [2026]", "javascript:alert(2)"),
    ("pmo-planner:p1", "pmo-planner", "planner", "Datacenter move", None),
]
D = pd.Timestamp
# task_uid, project, key, title, status_category, milestone, start, due, baseline, forecast, slip, state, critical
TASKS = [
    (
        "eng-jira:1",
        "eng-jira:10000",
        "PLAT-1",
        "Design API",
        "done",
        False,
        "2026-01-05",
        "2026-01-20",
        "2026-01-20",
        "2026-01-22",
        2,
        "done_late",
        True,
    ),
    (
        "eng-jira:2",
        "eng-jira:10000",
        "PLAT-2",
        SCRIPT_TITLE,
        "in_progress",
        False,
        "2026-01-23",
        "2026-02-20",
        "2026-02-10",
        "2026-03-02",
        20,
        "late",
        True,
    ),
    (
        "eng-jira:3",
        "eng-jira:10000",
        "PLAT-3",
        "API beta",
        "todo",
        True,
        None,
        "2026-03-15",
        "2026-03-01",
        "2026-03-20",
        19,
        "at_risk",
        True,
    ),
    (
        "eng-jira:4",
        "eng-jira:10000",
        "PLAT-4",
        "Docs",
        "todo",
        False,
        "2026-03-01",
        "2026-04-01",
        "2026-04-01",
        "2026-04-01",
        0,
        "on_track",
        False,
    ),
    (
        "mkt-asana:11",
        "mkt-asana:1202",
        None,
        FORMULA_TITLE,
        "todo",
        False,
        "2026-03-20",
        "2026-03-31",
        "2026-03-25",
        "2026-04-08",
        14,
        "at_risk",
        True,
    ),
    (
        "mkt-asana:12",
        "mkt-asana:1202",
        None,
        "Press kit",
        "done",
        False,
        "2026-02-01",
        "2026-02-15",
        "2026-02-15",
        "2026-02-14",
        -1,
        "done_on_time",
        False,
    ),
    (
        "mkt-asana:13",
        "mkt-asana:1202",
        None,
        "Launch day",
        "todo",
        True,
        None,
        "2026-04-10",
        "2026-04-10",
        "2026-04-15",
        5,
        "at_risk",
        True,
    ),
    (
        "ops-trello:c1",
        "ops-trello:b1",
        None,
        "Pack\x07 boxes",
        "todo",
        False,
        None,
        None,
        None,
        None,
        None,
        "unscheduled",
        False,
    ),
    (
        "ops-trello:c2",
        "ops-trello:b1",
        None,
        "Book movers",
        "in_progress",
        False,
        "2026-02-20",
        "2026-03-10",
        "2026-03-10",
        "2026-03-10",
        0,
        "on_track",
        False,
    ),
    (
        "pmo-planner:t1",
        "pmo-planner:p1",
        None,
        "Rack servers",
        "todo",
        False,
        "2026-04-16",
        "2026-04-30",
        "2026-04-20",
        "2026-05-05",
        15,
        "at_risk",
        True,
    ),
    (
        "pmo-planner:t2",
        "pmo-planner:p1",
        None,
        "Cut-over",
        "todo",
        True,
        None,
        "2026-05-10",
        "2026-05-10",
        "2026-05-12",
        2,
        "at_risk",
        True,
    ),
    (
        "pmo-planner:t3",
        "pmo-planner:p1",
        None,
        "Loop A",
        "todo",
        False,
        "2026-04-01",
        "2026-04-05",
        "2026-04-05",
        "2026-04-05",
        0,
        "on_track",
        False,
    ),
    (
        "pmo-planner:t4",
        "pmo-planner:p1",
        None,
        "Loop B",
        "todo",
        False,
        "2026-04-01",
        "2026-04-06",
        "2026-04-06",
        "2026-04-06",
        0,
        "on_track",
        False,
    ),
]
# predecessor, successor, kind, lag_days
DEPENDENCIES = [
    ("eng-jira:1", "eng-jira:2", "finish_to_start", 0.0),
    ("eng-jira:2", "eng-jira:3", "finish_to_start", 0.0),
    ("eng-jira:3", "mkt-asana:11", "finish_to_start", 2.0),
    ("mkt-asana:11", "mkt-asana:13", "start_to_start", 0.0),
    ("mkt-asana:13", "pmo-planner:t1", "blocks", 0.0),
    ("pmo-planner:t1", "pmo-planner:t2", "finish_to_finish", 1.0),
    ("pmo-planner:t3", "pmo-planner:t4", "finish_to_start", 0.0),
    ("pmo-planner:t4", "pmo-planner:t3", "finish_to_start", 0.0),
]
HEALTH = [
    # project, total, done, late, at_risk, pct, baseline, forecast, slip, health
    ("eng-jira:10000", 4, 1, 1, 1, 40.0, "2026-04-01", "2026-04-01", 20, "red"),
    ("mkt-asana:1202", 3, 1, 0, 2, 33.0, "2026-04-10", "2026-04-15", 5, "amber"),
    ("ops-trello:b1", 2, 0, 0, 0, 10.0, "2026-03-10", "2026-03-10", 0, "green"),
    ("pmo-planner:p1", 4, 0, 0, 2, 0.0, "2026-05-10", "2026-05-12", 15, "red"),
]


def _day(value: str | None) -> pd.Timestamp | None:
    return None if value is None else D(value)


def fill_warehouse(warehouse: Warehouse) -> None:
    """Write the hand-made portfolio into every table a report reads."""
    warehouse.upsert(
        "projects",
        pd.DataFrame(
            [
                {
                    "project_uid": uid,
                    "connection": c,
                    "tool": tool,
                    "native_id": uid.split(":")[1],
                    "name": name,
                    "url": url,
                }
                for uid, c, tool, name, url in PROJECTS
            ]
        ),
    )
    tools = {uid: (c, tool) for uid, c, tool, _, _ in PROJECTS}
    warehouse.upsert(
        "tasks",
        pd.DataFrame(
            [
                {
                    "task_uid": t[0],
                    "connection": tools[t[1]][0],
                    "tool": tools[t[1]][1],
                    "native_id": t[0].split(":")[1],
                    "key": t[2],
                    "url": f"https://example.test/{t[0]}",
                    "project_uid": t[1],
                    "title": t[3],
                    "status": t[4].replace("_", " "),
                    "status_category": t[4],
                    "is_milestone": t[5],
                    "start_date": _day(t[6]),
                    "due_date": _day(t[7]),
                    "percent_complete": 100.0 if t[4] == "done" else 20.0,
                }
                for t in TASKS
            ]
        ),
    )
    warehouse.upsert(
        "dependencies",
        pd.DataFrame(
            [
                {"predecessor_uid": p, "successor_uid": s, "kind": k, "origin": "native", "lag_days": lag}
                for p, s, k, lag in DEPENDENCIES
            ]
        ),
    )
    warehouse.upsert(
        "schedule",
        pd.DataFrame(
            [
                {
                    "task_uid": t[0],
                    "project_uid": t[1],
                    "baseline_due": _day(t[8]),
                    "due_date": _day(t[7]),
                    "forecast_finish": _day(t[9]),
                    "slip_days": t[10],
                    "state": t[11],
                    "on_critical_path": t[12],
                    "float_days": 0.0 if t[12] else 3.0,
                    "reschedule_count": 1,
                    "as_of": D(AS_OF),
                }
                for t in TASKS
            ]
        ),
    )
    warehouse.upsert(
        "project_health",
        pd.DataFrame(
            [
                {
                    "project_uid": h[0],
                    "tasks_total": h[1],
                    "tasks_done": h[2],
                    "tasks_late": h[3],
                    "tasks_at_risk": h[4],
                    "percent_complete": h[5],
                    "baseline_finish": D(h[6]),
                    "forecast_finish": D(h[7]),
                    "slip_days": h[8],
                    "health": h[9],
                    "as_of": D(AS_OF),
                }
                for h in HEALTH
            ]
        ),
    )
    warehouse.upsert(
        "schedule_cycles",
        pd.DataFrame(
            [
                {"cycle_id": "cycle:pmo-planner:t3", "task_uid": uid, "position": n, "as_of": D(AS_OF)}
                for n, uid in enumerate(["pmo-planner:t3", "pmo-planner:t4"], start=1)
            ]
        ),
    )
