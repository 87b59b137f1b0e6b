"""The consolidated schedule on hand-computed scenarios (PRODUCT.md, Meanings), and stored end to end in DuckDB and
PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from pmsync.config import Config
from schedule.compute import ScheduleFrames, ScheduleRules, compute_and_store, compute_schedule
from schedule.health import HealthRules
from warehouse import Warehouse, open_warehouse

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
AS_OF = date(2025, 3, 10)
JIRA, ASANA, TRELLO, PLANNER = "eng-jira", "mkt-asana", "ops-trello", "pmo-planner"


def task(
    uid: str,
    due: str | None = None,
    start: str | None = None,
    status: str = "todo",
    project: str | None = None,
    completed: str | None = None,
    estimate: float | None = None,
    percent: float | None = None,
    milestone: bool = False,
    deleted: str | None = None,
) -> dict:
    connection = uid.split(":")[0]
    return {
        "task_uid": uid,
        "connection": connection,
        "tool": connection.split("-")[1],
        "native_id": uid.split(":", 1)[1],
        "project_uid": project or f"{connection}:P",
        "status_category": status,
        "is_milestone": milestone,
        "start_date": start,
        "due_date": due,
        "completed_at": completed,
        "estimate_hours": estimate,
        "percent_complete": percent,
        "deleted_at": deleted,
    }


def tasks_frame(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    for name in ("start_date", "due_date"):
        frame[name] = pd.to_datetime(frame[name]).astype("datetime64[us]")
    for name in ("completed_at", "deleted_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    frame["estimate_hours"] = frame["estimate_hours"].astype("float64")
    frame["percent_complete"] = frame["percent_complete"].astype("float64")
    return frame


def links_frame(*links: tuple) -> pd.DataFrame:
    """(predecessor, successor[, kind[, lag_days]]) tuples; kind defaults to 'blocks'."""
    rows = [
        {
            "predecessor_uid": link[0],
            "successor_uid": link[1],
            "kind": link[2] if len(link) > 2 else "blocks",
            "origin": "native",
            "lag_days": link[3] if len(link) > 3 else None,
        }
        for link in links
    ]
    frame = pd.DataFrame(rows, columns=["predecessor_uid", "successor_uid", "kind", "origin", "lag_days"])
    frame["lag_days"] = frame["lag_days"].astype("float64")
    return frame


def history_frame(*versions: tuple) -> pd.DataFrame:
    """(task_uid, valid_from, due_date, source[, percent_complete]) tuples."""
    frame = pd.DataFrame(
        [
            {
                "task_uid": version[0],
                "valid_from": version[1],
                "due_date": version[2],
                "source": version[3],
                "percent_complete": version[4] if len(version) > 4 else None,
            }
            for version in versions
        ],
        columns=["task_uid", "valid_from", "due_date", "source", "percent_complete"],
    )
    frame["valid_from"] = pd.to_datetime(frame["valid_from"], utc=True)
    frame["due_date"] = pd.to_datetime(frame["due_date"]).astype("datetime64[us]")
    frame["percent_complete"] = frame["percent_complete"].astype("float64")
    return frame


def compute(
    tasks: pd.DataFrame,
    links: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
    as_of: date = AS_OF,
    rules: ScheduleRules | None = None,
) -> ScheduleFrames:
    return compute_schedule(
        tasks,
        links if links is not None else links_frame(),
        history if history is not None else history_frame(),
        as_of,
        rules,
    )


def row(frames: ScheduleFrames, uid: str) -> pd.Series:
    schedule = frames.schedule.set_index("task_uid")
    return schedule.loc[uid]


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


CHAIN = (
    task(f"{JIRA}:PLAT-1", start="2025-03-03", due="2025-03-07", status="in_progress", percent=60),
    task(f"{ASANA}:1202", start="2025-03-07", due="2025-03-12"),
    task(f"{TRELLO}:c3", start="2025-03-12", due="2025-03-14"),
    task(f"{PLANNER}:t4", start="2025-03-14", due="2025-03-18"),
)
CHAIN_LINKS = (
    (f"{JIRA}:PLAT-1", f"{ASANA}:1202"),
    (f"{ASANA}:1202", f"{TRELLO}:c3", "finish_to_start"),
    (f"{TRELLO}:c3", f"{PLANNER}:t4"),
)


def test_chain_across_four_tools_is_on_time_while_the_first_task_is_not_late() -> None:
    frames = compute(tasks_frame(*CHAIN), links_frame(*CHAIN_LINKS), as_of=date(2025, 3, 6))

    for uid, due in zip(
        [t["task_uid"] for t in CHAIN], ["2025-03-07", "2025-03-12", "2025-03-14", "2025-03-18"]
    ):
        assert row(frames, uid)["forecast_finish"] == day(due)
        assert row(frames, uid)["slip_days"] == 0
        assert pd.isna(row(frames, uid)["driver_uid"])


def test_one_late_task_moves_every_successor_across_tools_and_names_the_driver() -> None:
    frames = compute(tasks_frame(*CHAIN), links_frame(*CHAIN_LINKS))

    jira, asana, trello, planner = (t["task_uid"] for t in CHAIN)
    # Jira's task is due 03-07 and still open on 03-10; each successor takes its own duration after it.
    assert row(frames, jira)["forecast_finish"] == day("2025-03-10")
    assert row(frames, asana)["forecast_finish"] == day("2025-03-15")  # 03-10 + 5 days
    assert row(frames, trello)["forecast_finish"] == day("2025-03-17")  # 03-15 + 2 days
    assert row(frames, planner)["forecast_finish"] == day("2025-03-21")  # 03-17 + 4 days
    assert [row(frames, uid)["slip_days"] for uid in (jira, asana, trello, planner)] == [3, 3, 3, 3]
    assert [row(frames, uid)["driver_uid"] for uid in (asana, trello, planner)] == [jira, asana, trello]
    assert pd.isna(row(frames, jira)["driver_uid"])
    assert row(frames, jira)["state"] == "late"
    assert [row(frames, uid)["state"] for uid in (asana, trello, planner)] == ["at_risk"] * 3
    assert frames.schedule["on_critical_path"].all()
    assert frames.schedule["on_portfolio_critical_path"].all()
    assert (frames.schedule["float_days"] == 0).all()


def test_task_done_late_forecasts_its_completion_date_in_the_configured_time_zone() -> None:
    tasks = tasks_frame(
        # 02:00 UTC on 03-07 is still 03-06 in Toronto.
        task(f"{JIRA}:PLAT-2", due="2025-03-05", status="done", completed="2025-03-07T02:00:00Z"),
        task(f"{JIRA}:PLAT-3", due="2025-03-05", status="done", completed="2025-03-04T15:00:00Z"),
    )
    frames = compute(tasks, rules=ScheduleRules(timezone="America/Toronto"))

    late, on_time = row(frames, f"{JIRA}:PLAT-2"), row(frames, f"{JIRA}:PLAT-3")
    assert late["forecast_finish"] == day("2025-03-06")
    assert late["slip_days"] == 1
    assert late["state"] == "done_late"
    assert on_time["forecast_finish"] == day("2025-03-04")
    assert on_time["slip_days"] == -1
    assert on_time["state"] == "done_on_time"


def test_done_task_is_not_moved_by_a_late_predecessor() -> None:
    tasks = tasks_frame(
        task(f"{JIRA}:A", due="2025-03-01"),
        task(f"{ASANA}:B", due="2025-03-03", status="done", completed="2025-03-03T12:00:00Z"),
    )
    frames = compute(tasks, links_frame((f"{JIRA}:A", f"{ASANA}:B")))

    assert row(frames, f"{ASANA}:B")["forecast_finish"] == day("2025-03-03")
    assert row(frames, f"{ASANA}:B")["state"] == "done_on_time"
    assert row(frames, f"{JIRA}:A")["float_days"] >= 0


def test_task_without_due_date_is_unscheduled_with_no_baseline_or_slip() -> None:
    tasks = tasks_frame(
        task(f"{TRELLO}:loose"), task(f"{JIRA}:dated", due="2025-03-20"), task(f"{ASANA}:after", estimate=16)
    )
    frames = compute(tasks, links_frame((f"{JIRA}:dated", f"{ASANA}:after")))

    loose = row(frames, f"{TRELLO}:loose")
    assert loose["state"] == "unscheduled"
    assert (
        pd.isna(loose["baseline_due"]) and pd.isna(loose["forecast_finish"]) and pd.isna(loose["slip_days"])
    )
    after = row(frames, f"{ASANA}:after")
    assert after["state"] == "unscheduled"
    assert after["forecast_finish"] == day("2025-03-22")  # its predecessor's 03-20 plus 16 hours = 2 days
    assert after["driver_uid"] == f"{JIRA}:dated"


def test_due_date_moved_three_times_keeps_the_first_as_original_baseline_and_counts_three() -> None:
    uid = f"{JIRA}:PLAT-7"
    history = history_frame(
        (uid, "2025-01-02T09:00:00Z", "2025-03-01", "tool_history"),
        (uid, "2025-02-01T09:00:00Z", "2025-03-05", "observed"),
        (uid, "2025-02-10T09:00:00Z", "2025-03-08", "observed"),
        (uid, "2025-02-15T09:00:00Z", "2025-03-08", "observed", 40.0),  # progress only: not a reschedule
        (uid, "2025-02-20T09:00:00Z", "2025-03-12", "observed", 60.0),
    )
    tasks = tasks_frame(task(uid, due="2025-03-12", percent=60))

    original = row(compute(tasks, history=history.sample(frac=1, random_state=3)), uid)
    first_seen = row(compute(tasks, history=history, rules=ScheduleRules(baseline="first_seen")), uid)

    assert original["baseline_due"] == day("2025-03-01")
    assert original["reschedule_count"] == 3
    assert original["slip_days"] == 11
    assert original["state"] == "at_risk"  # forecast past its baseline
    assert first_seen["baseline_due"] == day("2025-03-05")
    assert first_seen["reschedule_count"] == 3
    assert first_seen["slip_days"] == 7


def test_task_without_history_takes_its_current_due_date_as_baseline() -> None:
    frames = compute(tasks_frame(task(f"{ASANA}:9", due="2025-04-01")))

    assert row(frames, f"{ASANA}:9")["baseline_due"] == day("2025-04-01")
    assert row(frames, f"{ASANA}:9")["reschedule_count"] == 0


def test_cycle_is_reported_in_order_and_the_rest_of_the_schedule_computes() -> None:
    a, b, c, d = f"{JIRA}:A", f"{ASANA}:B", f"{TRELLO}:C", f"{PLANNER}:D"
    tasks = tasks_frame(
        task(a, start="2025-03-10", due="2025-03-12"),
        task(b, start="2025-03-12", due="2025-03-14"),
        task(c, start="2025-03-14", due="2025-03-20"),
        task(d, start="2025-03-19", due="2025-03-20"),
    )
    frames = compute(tasks, links_frame((c, a), (a, b), (b, c), (c, d), (d, d)))

    cycles = frames.cycles.sort_values(["cycle_id", "position"])
    assert cycles["cycle_id"].tolist() == [f"cycle:{a}"] * 3 + [f"cycle:{d}"]
    assert cycles["task_uid"].tolist() == [a, b, c, d]
    assert cycles["position"].tolist() == [1, 2, 3, 1]
    # The cycle's own links are ignored; the link out of it still holds: D (1 day) follows C.
    assert row(frames, a)["forecast_finish"] == day("2025-03-12")
    assert row(frames, c)["forecast_finish"] == day("2025-03-20")
    assert row(frames, d)["forecast_finish"] == day("2025-03-21")
    assert all(pd.isna(row(frames, uid)["driver_uid"]) for uid in (a, b, c))
    assert row(frames, d)["driver_uid"] == c


def test_milestone_with_predecessors_in_two_tools_finishes_after_the_later_one() -> None:
    x, y, m = f"{JIRA}:X", f"{ASANA}:Y", f"{PLANNER}:M"
    tasks = tasks_frame(
        task(x, start="2025-03-11", due="2025-03-14", project="pmo-planner:P"),
        task(y, start="2025-03-12", due="2025-03-18", project="pmo-planner:P"),
        task(m, start="2025-03-10", due="2025-03-17", milestone=True),
    )
    frames = compute(tasks, links_frame((x, m), (y, m)))

    milestone = row(frames, m)
    assert milestone["forecast_finish"] == day("2025-03-18")  # a milestone takes no time of its own
    assert milestone["slip_days"] == 1
    assert milestone["driver_uid"] == y
    assert milestone["on_critical_path"]
    assert row(frames, y)["on_critical_path"]
    assert not row(frames, x)["on_critical_path"]
    assert row(frames, x)["float_days"] == 4


def test_start_to_start_finish_to_finish_and_lags_hold_where_the_tool_states_them() -> None:
    p, ss, ff, lagged = f"{JIRA}:P", f"{ASANA}:SS", f"{TRELLO}:FF", f"{PLANNER}:LAG"
    tasks = tasks_frame(
        task(p, start="2025-03-20", due="2025-03-25"),
        task(ss, start="2025-03-11", due="2025-03-13"),  # 2 days, may start once P starts (03-20) + 1 lag
        task(ff, start="2025-03-11", due="2025-03-12"),  # may finish once P finishes
        task(lagged, start="2025-03-11", due="2025-03-12"),  # 1 day, 3 days after P finishes
    )
    links = links_frame(
        (p, ss, "start_to_start", 1.0), (p, ff, "finish_to_finish"), (p, lagged, "blocks", 3.0)
    )
    frames = compute(tasks, links)

    assert row(frames, ss)["forecast_finish"] == day("2025-03-23")
    assert row(frames, ff)["forecast_finish"] == day("2025-03-25")
    assert row(frames, lagged)["forecast_finish"] == day("2025-03-29")


def test_dangling_links_and_deleted_or_cancelled_tasks_are_counted_out_and_ignored() -> None:
    a, gone, dropped = f"{JIRA}:A", f"{JIRA}:GONE", f"{ASANA}:DROPPED"
    tasks = tasks_frame(
        task(a, due="2025-03-20"),
        task(gone, due="2025-04-30", deleted="2025-03-01T00:00:00Z"),
        task(dropped, due="2025-04-30", status="cancelled"),
    )
    links = links_frame(("url:https://example.com/x", a), (f"{JIRA}:UNKNOWN", a), (gone, a), (dropped, a))
    frames = compute(tasks, links)

    assert frames.schedule["task_uid"].tolist() == [a]
    assert row(frames, a)["forecast_finish"] == day("2025-03-20")
    assert frames.dangling_links == 4
    assert frames.links == 0


def test_due_soon_with_little_progress_is_at_risk_and_with_progress_on_track() -> None:
    tasks = tasks_frame(
        task(f"{JIRA}:slow", due="2025-03-12", percent=20),
        task(f"{JIRA}:fast", due="2025-03-12", percent=80),
        task(f"{JIRA}:later", due="2025-03-20", percent=0),
    )
    frames = compute(tasks)

    assert row(frames, f"{JIRA}:slow")["state"] == "at_risk"
    assert row(frames, f"{JIRA}:fast")["state"] == "on_track"
    assert row(frames, f"{JIRA}:later")["state"] == "on_track"


def test_project_health_rolls_up_counts_progress_slip_and_colour() -> None:
    tasks = tasks_frame(
        task(f"{JIRA}:1", due="2025-03-05", project="eng-jira:RED", percent=50),  # late: forecast 03-10
        task(
            f"{JIRA}:2",
            due="2025-03-01",
            project="eng-jira:RED",
            status="done",
            completed="2025-03-02T12:00:00Z",
        ),
        task(f"{ASANA}:1", due="2025-03-20", project="mkt-asana:GREEN", percent=10),
        task(
            f"{TRELLO}:1",
            due="2025-03-09",
            project="ops-trello:AMBER",
            status="done",
            completed="2025-03-09T12:00:00Z",
        ),
        task(f"{TRELLO}:2", due="2025-03-14", project="ops-trello:AMBER", percent=100),
    )
    history = history_frame(
        (f"{JIRA}:1", "2025-01-01T00:00:00Z", "2025-02-20", "tool_history"),
        (f"{TRELLO}:2", "2025-01-01T00:00:00Z", "2025-03-11", "observed"),
    )
    rules = ScheduleRules(health=HealthRules(amber_slip_days=3, red_slip_days=10))
    health = compute(tasks, history=history, rules=rules).project_health.set_index("project_uid")

    red, green, amber = (
        health.loc["eng-jira:RED"],
        health.loc["mkt-asana:GREEN"],
        health.loc["ops-trello:AMBER"],
    )
    assert (red["tasks_total"], red["tasks_done"], red["tasks_late"], red["tasks_at_risk"]) == (2, 1, 1, 0)
    assert red["percent_complete"] == 75.0  # (50 + 100 for the done task) / 2
    assert red["baseline_finish"] == day("2025-03-01") and red["forecast_finish"] == day("2025-03-10")
    assert red["slip_days"] == 9
    assert red["health"] == "amber"  # 9 days is below red's 10, but one task is late anyway
    assert green["health"] == "green" and green["slip_days"] == 0
    assert amber["slip_days"] == 3  # forecast 03-14 against the 03-11 baseline
    assert amber["health"] == "amber"
    stricter = compute(tasks, history=history, rules=ScheduleRules(health=HealthRules(3, 9)))
    assert stricter.project_health.set_index("project_uid").loc["eng-jira:RED", "health"] == "red"


def test_project_critical_path_differs_from_the_portfolio_one() -> None:
    tasks = tasks_frame(
        task(f"{JIRA}:short", due="2025-03-14", project="eng-jira:SHORT"),
        task(f"{ASANA}:long", due="2025-04-30", project="mkt-asana:LONG"),
    )
    frames = compute(tasks)

    short = row(frames, f"{JIRA}:short")
    assert short["on_critical_path"] and short["float_days"] == 0
    assert not short["on_portfolio_critical_path"] and short["portfolio_float_days"] == 47
    assert row(frames, f"{ASANA}:long")["on_portfolio_critical_path"]


def test_every_computed_row_carries_the_as_of_date() -> None:
    tasks = tasks_frame(*CHAIN)
    frames = compute(tasks, links_frame(*CHAIN_LINKS, (f"{PLANNER}:t4", f"{JIRA}:PLAT-1")))

    for frame in (frames.schedule, frames.project_health, frames.cycles):
        assert not frame.empty
        assert (frame["as_of"] == pd.Timestamp(AS_OF)).all()


# End to end through the warehouse.


def _postgres_unavailable_reason() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL at 127.0.0.1:5432 database test does not answer: {str(error).strip()[:200]}"


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        opened = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
        yield opened
        opened.close()
        return
    reason = _postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    schema = f"pmsync_schedule_{uuid.uuid4().hex[:12]}"
    opened = open_warehouse(POSTGRES_URL, schema=schema)
    try:
        yield opened
    finally:
        opened.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _config() -> Config:
    return Config.model_validate(
        {
            "timezone": "America/Toronto",
            "connections": [
                {"name": TRELLO, "tool": "trello", "auth": {"key": "k", "token": "t"}, "boards": ["b"]}
            ],
            "schedule": {
                "baseline": "original",
                "at_risk_days": 3,
                "health": {"amber_slip_days": 2, "red_slip_days": 5},
            },
        }
    )


def test_compute_and_store_replaces_the_schedule_tables_in_the_warehouse(warehouse: Warehouse) -> None:
    tasks = tasks_frame(*CHAIN, task(f"{JIRA}:PLAT-9", start="2025-03-19", due="2025-03-20"))
    warehouse.upsert("tasks", tasks)
    warehouse.upsert(
        "dependencies",
        links_frame(*CHAIN_LINKS, (f"{PLANNER}:t4", f"{JIRA}:PLAT-9"), ("url:x", f"{JIRA}:PLAT-1")),
    )
    warehouse.apply_task_versions(
        history_frame(
            (f"{ASANA}:1202", "2025-01-05T00:00:00Z", "2025-03-10", "tool_history"),
            (f"{ASANA}:1202", "2025-02-05T00:00:00Z", "2025-03-12", "observed"),
        )[["task_uid", "valid_from", "due_date", "source"]]
    )
    warehouse.upsert("schedule", pd.DataFrame({"task_uid": ["stale:1"], "state": ["late"]}))

    result = compute_and_store(warehouse, _config(), as_of=AS_OF)

    stored = warehouse.read("schedule").set_index("task_uid")
    assert sorted(stored.index) == sorted([t["task_uid"] for t in CHAIN] + [f"{JIRA}:PLAT-9"])
    asana = stored.loc[f"{ASANA}:1202"]
    assert asana["baseline_due"] == day("2025-03-10")
    assert asana["forecast_finish"] == day("2025-03-15")
    assert asana["slip_days"] == 5 and asana["reschedule_count"] == 1
    assert stored.loc[f"{JIRA}:PLAT-9", "forecast_finish"] == day("2025-03-22")  # Planner's 03-21 plus 1 day
    assert (stored["as_of"] == pd.Timestamp(AS_OF)).all()
    health = warehouse.read("project_health").set_index("project_uid")
    assert health.loc[f"{JIRA}:P", "tasks_late"] == 1
    assert health.loc[f"{JIRA}:P", "slip_days"] == 2  # 03-22 against 03-20
    assert health.loc[f"{JIRA}:P", "health"] == "amber"
    assert health.loc[f"{PLANNER}:P", "health"] == "amber"  # 3 days of slip: amber from 2, red from 5
    assert health.loc[f"{ASANA}:P", "health"] == "red"  # 5 days of slip against the tool's first due date
    assert warehouse.count("schedule_cycles") == 0
    assert result.stored == {"schedule": 5, "project_health": 4, "schedule_cycles": 0}
    assert result.frames.dangling_links == 1


def test_compute_and_store_records_cycles_and_replaces_them_on_the_next_run(warehouse: Warehouse) -> None:
    a, b = f"{JIRA}:A", f"{ASANA}:B"
    warehouse.upsert("tasks", tasks_frame(task(a, due="2025-03-20"), task(b, due="2025-03-21")))
    warehouse.upsert("dependencies", links_frame((a, b), (b, a)))

    compute_and_store(warehouse, _config(), as_of=AS_OF)
    cycles = warehouse.read("schedule_cycles")
    assert cycles["task_uid"].tolist() == [a, b] and cycles["position"].tolist() == [1, 2]

    warehouse.delete("dependencies", "predecessor_uid = %s", [b])
    compute_and_store(warehouse, _config(), as_of=AS_OF)
    assert warehouse.count("schedule_cycles") == 0
    assert warehouse.read("schedule").set_index("task_uid").loc[b, "forecast_finish"] == day("2025-03-21")


def test_empty_warehouse_stores_an_empty_schedule(tmp_path: Path) -> None:
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as warehouse:
        result = compute_and_store(warehouse, _config(), as_of=AS_OF)

        assert result.stored == {"schedule": 0, "project_health": 0, "schedule_cycles": 0}
        assert warehouse.count("schedule") == 0


def test_uid_columns_read_back_in_several_arrow_chunks_are_matched():
    import pyarrow as pa

    from schedule.compute import _positions

    uids = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([["a", "b"], ["c"]])))
    (found,) = _positions(uids, pd.Series(["c", "x", "a"]))
    assert found.tolist() == [2, -1, 0]
