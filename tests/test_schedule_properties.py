"""Properties of the schedule that hold on any graph (hypothesis): forecasts respect the links, slip is forecast
minus baseline, critical tasks have no float, and nothing depends on the order of rows."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedule.compute import ScheduleFrames, compute_schedule

AS_OF = date(2025, 3, 10)
PROJECTS = ("eng-jira:P", "mkt-asana:P", "ops-trello:P")
KINDS = ("blocks", "finish_to_start", "start_to_start", "finish_to_finish", "start_to_finish")


@st.composite
def portfolios(draw: st.DrawFn, acyclic: bool = True, kinds: tuple[str, ...] = ("finish_to_start",)) -> tuple:
    """(tasks, links, history) frames: up to 25 tasks, links from an earlier to a later task when `acyclic`."""
    count = draw(st.integers(1, 25))
    rows = [draw(_task(number)) for number in range(count)]
    pairs = st.tuples(st.integers(0, count - 1), st.integers(0, count - 1))
    if acyclic:
        pairs = pairs.filter(lambda pair: pair[0] < pair[1])
    edges = draw(st.lists(pairs, max_size=3 * count)) if count > 1 or not acyclic else []
    links = pd.DataFrame(
        {
            "predecessor_uid": [rows[a]["task_uid"] for a, _ in edges],
            "successor_uid": [rows[b]["task_uid"] for _, b in edges],
            "kind": [draw(st.sampled_from(kinds)) for _ in edges],
            "lag_days": pd.Series(
                [draw(st.sampled_from([None, 0.0, 1.0, 2.0])) for _ in edges], dtype="float64"
            ),
        }
    )
    history = _history(draw, rows)
    return _tasks_frame(rows), links, history


@st.composite
def _task(draw: st.DrawFn, number: int) -> dict:
    due = draw(st.one_of(st.none(), st.integers(-15, 30)))
    start = None if due is None else draw(st.one_of(st.none(), st.integers(due - 10, due)))
    status = draw(st.sampled_from(["todo", "in_progress", "done"]))
    completed = None
    if status == "done":
        completed = draw(st.one_of(st.none(), st.integers(-20, 0)))
    return {
        "task_uid": f"{draw(st.sampled_from(['eng-jira', 'mkt-asana', 'ops-trello', 'pmo-planner']))}:{number:03d}",
        "project_uid": draw(st.sampled_from(PROJECTS)),
        "status_category": status,
        "is_milestone": draw(st.booleans()),
        "start_date": _day(start),
        "due_date": _day(due),
        "completed_at": None
        if completed is None
        else pd.Timestamp(_day(completed)).tz_localize("UTC") + pd.Timedelta(hours=12),
        "estimate_hours": draw(st.one_of(st.none(), st.floats(0, 100))),
        "percent_complete": draw(st.one_of(st.none(), st.floats(0, 100))),
        "deleted_at": None,
    }


def _history(draw: st.DrawFn, rows: list[dict]) -> pd.DataFrame:
    versions = []
    for row in rows:
        for version in range(draw(st.integers(0, 3))):
            due = draw(st.one_of(st.none(), st.integers(-20, 30)))
            source = draw(st.sampled_from(["tool_history", "observed"]))
            versions.append(
                (
                    row["task_uid"],
                    pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=version),
                    _day(due),
                    source,
                )
            )
    frame = pd.DataFrame(versions, columns=["task_uid", "valid_from", "due_date", "source"])
    frame["valid_from"] = pd.to_datetime(frame["valid_from"], utc=True)
    frame["due_date"] = pd.to_datetime(frame["due_date"]).astype("datetime64[us]")
    return frame


def _day(offset: int | None) -> date | None:
    return None if offset is None else AS_OF + timedelta(days=offset)


def _tasks_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for name in ("start_date", "due_date"):
        frame[name] = pd.to_datetime(frame[name]).astype("datetime64[us]")
    for name in ("completed_at", "deleted_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    for name in ("estimate_hours", "percent_complete"):
        frame[name] = frame[name].astype("float64")
    return frame


def _duration(task: pd.Series) -> float:
    """A task's own duration in days, as PRODUCT.md defines it."""
    if task["is_milestone"]:
        return 0.0
    if pd.notna(task["due_date"]) and pd.notna(task["start_date"]):
        return max((task["due_date"] - task["start_date"]).days, 0)
    if pd.notna(task["estimate_hours"]):
        return math.ceil(task["estimate_hours"] / 8)
    return 0.0


def _compute(portfolio: tuple) -> ScheduleFrames:
    tasks, links, history = portfolio
    return compute_schedule(tasks, links, history, AS_OF)


PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(portfolios())
def test_open_task_never_finishes_before_a_finish_to_start_predecessor_plus_its_own_duration(
    portfolio: tuple,
) -> None:
    tasks, links, _ = portfolio
    frames = _compute(portfolio)
    forecast = frames.schedule.set_index("task_uid")["forecast_finish"]
    by_uid = tasks.set_index("task_uid")
    for link in links.itertuples():
        successor = by_uid.loc[link.successor_uid]
        before = forecast[link.predecessor_uid]
        if successor["status_category"] == "done" or pd.isna(before):
            continue
        lag = 0 if pd.isna(link.lag_days) else link.lag_days
        earliest = before + pd.Timedelta(days=_duration(successor) + lag)
        assert forecast[link.successor_uid] >= earliest


@PROPERTY_SETTINGS
@given(portfolios(kinds=KINDS))
def test_slip_is_forecast_minus_baseline_in_calendar_days(portfolio: tuple) -> None:
    schedule = _compute(portfolio).schedule
    both = schedule["forecast_finish"].notna() & schedule["baseline_due"].notna()
    expected = (schedule["forecast_finish"] - schedule["baseline_due"]).dt.days
    assert (schedule.loc[both, "slip_days"] == expected[both]).all()
    assert schedule.loc[~both, "slip_days"].isna().all()


@PROPERTY_SETTINGS
@given(portfolios(acyclic=False, kinds=KINDS))
def test_critical_tasks_have_zero_float_and_no_task_has_negative_float(portfolio: tuple) -> None:
    schedule = _compute(portfolio).schedule
    for column, critical in (
        ("float_days", "on_critical_path"),
        ("portfolio_float_days", "on_portfolio_critical_path"),
    ):
        assert (schedule.loc[schedule[critical], column] == 0).all()
        assert (schedule[column].dropna() >= 0).all()
        dated = schedule["forecast_finish"].notna()
        assert schedule.loc[dated, column].notna().all()


@PROPERTY_SETTINGS
@given(portfolios(acyclic=False, kinds=KINDS))
def test_every_project_has_a_critical_task_at_its_latest_forecast_finish(portfolio: tuple) -> None:
    frames = _compute(portfolio)
    schedule = frames.schedule
    for project in frames.project_health.itertuples():
        if pd.isna(project.forecast_finish):
            continue
        last = schedule[
            (schedule["project_uid"] == project.project_uid)
            & (schedule["forecast_finish"] == project.forecast_finish)
        ]
        assert last["on_critical_path"].all()


@PROPERTY_SETTINGS
@given(portfolios(acyclic=False, kinds=KINDS), st.randoms(use_true_random=False))
def test_results_do_not_depend_on_the_order_of_rows(portfolio: tuple, random: object) -> None:
    tasks, links, history = portfolio
    seed = random.randint(0, 2**31)  # type: ignore[attr-defined]
    shuffled = tuple(
        frame.sample(frac=1, random_state=seed).reset_index(drop=True) for frame in (tasks, links, history)
    )
    first, second = _compute((tasks, links, history)), _compute(shuffled)
    pd.testing.assert_frame_equal(first.schedule, second.schedule)
    pd.testing.assert_frame_equal(first.project_health, second.project_health)
    pd.testing.assert_frame_equal(first.cycles, second.cycles)


@PROPERTY_SETTINGS
@given(portfolios(acyclic=False))
def test_links_outside_reported_cycles_still_hold_on_any_graph(portfolio: tuple) -> None:
    tasks, links, _ = portfolio
    frames = _compute(portfolio)
    forecast = frames.schedule.set_index("task_uid")["forecast_finish"]
    cycle_of = frames.cycles.set_index("task_uid")["cycle_id"].to_dict()
    by_uid = tasks.set_index("task_uid")
    assert set(frames.schedule["task_uid"]) == set(tasks["task_uid"])
    for link in links.itertuples():
        inside = cycle_of.get(link.predecessor_uid, object()) == cycle_of.get(link.successor_uid)
        successor = by_uid.loc[link.successor_uid]
        before = forecast[link.predecessor_uid]
        if inside or successor["status_category"] == "done" or pd.isna(before):
            continue
        lag = 0 if pd.isna(link.lag_days) else link.lag_days
        assert forecast[link.successor_uid] >= before + pd.Timedelta(days=_duration(successor) + lag)
    assert np.isin(frames.cycles["task_uid"], tasks["task_uid"]).all()
