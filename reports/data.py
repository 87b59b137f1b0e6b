"""What a report needs from the warehouse, read into frames once: projects with their health, tasks with their
schedule, dependencies and cycles (`load_report_data`).

Every report format reads the same `ReportData`, so the dashboard, the workbook and the MS Project file always
agree. Nothing here reads the configuration's credentials: a report holds only what the warehouse holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pmsync.config import Config
    from warehouse import Warehouse

TASK_COLUMNS = (
    "task_uid",
    "connection",
    "tool",
    "key",
    "url",
    "project_uid",
    "parent_uid",
    "title",
    "status",
    "status_category",
    "is_milestone",
    "start_date",
    "due_date",
    "percent_complete",
)
SCHEDULE_COLUMNS = (
    "task_uid",
    "baseline_due",
    "forecast_finish",
    "slip_days",
    "state",
    "on_critical_path",
    "float_days",
    "as_of",
)
HEALTH_COLUMNS = (
    "project_uid",
    "tasks_total",
    "tasks_done",
    "tasks_late",
    "tasks_at_risk",
    "percent_complete",
    "baseline_finish",
    "forecast_finish",
    "slip_days",
    "health",
)
HEALTH_ORDER = {"red": 0, "amber": 1, "green": 2}
NO_PROJECT = "(no project)"


@dataclass(frozen=True)
class ReportData:
    """The portfolio as every report shows it.

    `projects`: one row per project that has tasks or health, worst slip first (project_uid, name, tool,
    connection, url, the project_health columns, start). `tasks`: one row per live task with its schedule columns
    (null where the schedule has no row, e.g. cancelled tasks). `dependencies`: predecessor_uid, successor_uid,
    kind, lag_days between live tasks. `cycles`: cycle_id, task_uid, position.
    """

    as_of: date
    projects: pd.DataFrame
    tasks: pd.DataFrame
    dependencies: pd.DataFrame
    cycles: pd.DataFrame

    def project_tasks(self, project_uid: str) -> pd.DataFrame:
        """The tasks of one project, in schedule order (forecast finish, then key)."""
        return self.tasks[self.tasks["project_uid"] == project_uid]

    @property
    def critical_path(self) -> pd.DataFrame:
        """Tasks on the critical path, in the order they finish (then start, then uid)."""
        critical = self.tasks[self.tasks["on_critical_path"].fillna(False).astype(bool)]
        return critical.sort_values(["forecast_finish", "start_date", "task_uid"], na_position="last")


def load_report_data(
    warehouse: Warehouse, config: Config | None = None, as_of: date | None = None
) -> ReportData:
    """Read the portfolio from the warehouse. With `as_of` differing from the stored schedule's date (and a
    configuration to take the rules from), the schedule is computed afresh as of that date, in memory only."""
    tasks = warehouse.read("tasks", "deleted_at IS NULL", columns=TASK_COLUMNS)
    schedule = warehouse.read("schedule", columns=SCHEDULE_COLUMNS)
    health = warehouse.read("project_health", columns=HEALTH_COLUMNS)
    cycles = warehouse.read("schedule_cycles", columns=("cycle_id", "task_uid", "position"))
    stored_as_of = _stored_as_of(schedule)
    if as_of is not None and as_of != stored_as_of and config is not None:
        schedule, health, cycles = _recomputed(warehouse, config, as_of)
    report_as_of = as_of or stored_as_of or date.today()
    merged = _tasks_with_schedule(tasks, schedule)
    return ReportData(
        as_of=report_as_of,
        projects=_projects(warehouse.read("projects"), merged, health),
        tasks=merged,
        dependencies=_dependencies(warehouse, merged["task_uid"]),
        cycles=cycles.sort_values(["cycle_id", "position"]).reset_index(drop=True),
    )


def _stored_as_of(schedule: pd.DataFrame) -> date | None:
    stamps = schedule["as_of"].dropna()
    return None if stamps.empty else stamps.max().date()


def _recomputed(
    warehouse: Warehouse, config: Config, as_of: date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from schedule.compute import DEPENDENCY_COLUMNS, HISTORY_COLUMNS, ScheduleRules, compute_schedule
    from schedule.compute import TASK_COLUMNS as SCHEDULE_TASK_COLUMNS

    frames = compute_schedule(
        warehouse.read("tasks", "deleted_at IS NULL", columns=SCHEDULE_TASK_COLUMNS),
        warehouse.read("dependencies", columns=DEPENDENCY_COLUMNS),
        warehouse.read("task_history", columns=HISTORY_COLUMNS),
        as_of,
        ScheduleRules.from_config(config),
    )
    schedule = frames.schedule.copy()
    for name in ("baseline_due", "forecast_finish", "as_of"):
        schedule[name] = pd.to_datetime(schedule[name])
    health = frames.project_health.copy()
    for name in ("baseline_finish", "forecast_finish"):
        health[name] = pd.to_datetime(health[name])
    return schedule[list(SCHEDULE_COLUMNS)], health[list(HEALTH_COLUMNS)], frames.cycles


def _tasks_with_schedule(tasks: pd.DataFrame, schedule: pd.DataFrame) -> pd.DataFrame:
    merged = tasks.merge(schedule.drop(columns=["as_of"]), on="task_uid", how="left")
    missing = merged["project_uid"].isna()
    merged.loc[missing, "project_uid"] = merged.loc[missing, "connection"] + ":" + NO_PROJECT
    merged["is_milestone"] = merged["is_milestone"].fillna(False).astype(bool)
    merged["on_critical_path"] = merged["on_critical_path"].fillna(False).astype(bool)
    order = merged.sort_values(["project_uid", "forecast_finish", "key", "task_uid"], na_position="last")
    return order.reset_index(drop=True)


def _projects(stored: pd.DataFrame, tasks: pd.DataFrame, health: pd.DataFrame) -> pd.DataFrame:
    """One row per project with tasks or health, named and tooled even where the projects table lacks it."""
    spans = tasks.assign(
        first_day=tasks["start_date"].fillna(tasks["forecast_finish"]).fillna(tasks["due_date"])
    )
    per_project = spans.groupby("project_uid", sort=False).agg(
        connection=("connection", "first"),
        tool=("tool", "first"),
        start=("first_day", "min"),
        last_forecast=("forecast_finish", "max"),
        task_count=("task_uid", "size"),
    )
    uids = pd.Index(per_project.index).union(pd.Index(health["project_uid"]))
    projects = pd.DataFrame({"project_uid": uids.astype("str")})
    known = stored[["project_uid", "name", "url", "connection", "tool"]].rename(
        columns={"connection": "stored_connection", "tool": "stored_tool"}
    )
    projects = projects.merge(known, on="project_uid", how="left")
    projects = projects.merge(per_project.reset_index(), on="project_uid", how="left")
    projects = projects.merge(health, on="project_uid", how="left")
    prefix = projects["project_uid"].str.partition(":")[0]
    projects["connection"] = projects["stored_connection"].fillna(projects["connection"]).fillna(prefix)
    projects["tool"] = projects["stored_tool"].fillna(projects["tool"]).fillna("")
    fallback = projects["project_uid"].str.partition(":")[2]
    projects["name"] = projects["name"].fillna(
        fallback.where(fallback != NO_PROJECT, "Tasks without a project")
    )
    projects["forecast_finish"] = projects["forecast_finish"].fillna(projects["last_forecast"])
    projects["task_count"] = projects["task_count"].fillna(0).astype(int)
    projects["health_rank"] = projects["health"].map(HEALTH_ORDER).fillna(3)
    projects = projects.sort_values(
        ["slip_days", "health_rank", "name", "project_uid"],
        ascending=[False, True, True, True],
        na_position="last",
    )
    return projects.drop(columns=["stored_connection", "stored_tool", "last_forecast"]).reset_index(drop=True)


def _dependencies(warehouse: Warehouse, task_uids: pd.Series) -> pd.DataFrame:
    links = warehouse.read("dependencies", columns=("predecessor_uid", "successor_uid", "kind", "lag_days"))
    live = np.asarray(links["predecessor_uid"].isin(task_uids) & links["successor_uid"].isin(task_uids))
    return links[live].reset_index(drop=True)
