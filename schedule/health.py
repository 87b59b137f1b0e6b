"""Project health: the schedule rolled up per project, and green / amber / red from slip and late tasks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from schedule.days import as_dates

GREEN, AMBER, RED = "green", "amber", "red"


@dataclass(frozen=True)
class HealthRules:
    """Amber from `amber_slip_days` of project slip or from `amber_late_tasks` late tasks; red from
    `red_slip_days` of slip."""

    amber_slip_days: int = 3
    red_slip_days: int = 10
    amber_late_tasks: int = 1


def project_health(
    project_uids: pd.Series,
    done: np.ndarray,
    late: np.ndarray,
    at_risk: np.ndarray,
    progress: np.ndarray,
    baseline: np.ndarray,
    forecast: np.ndarray,
    rules: HealthRules,
) -> pd.DataFrame:
    """One row per project (tasks without a project are left out): tasks_total, tasks_done, tasks_late,
    tasks_at_risk, percent_complete (the mean of the tasks' progress, done tasks counting 100 and tasks
    without one 0), baseline_finish (the latest baseline), forecast_finish (the latest forecast), slip_days
    (forecast_finish - baseline_finish) and health. Arrays are per task, dates as day numbers."""
    codes, projects = pd.factorize(project_uids, sort=True)
    mine = codes >= 0
    per_task = pd.DataFrame(
        {
            "project": codes[mine],
            "done": done[mine],
            "late": late[mine],
            "at_risk": at_risk[mine],
            "progress": progress[mine],
            "baseline": baseline[mine],
            "forecast": forecast[mine],
        }
    )
    rolled = per_task.groupby("project", sort=True).agg(
        tasks_total=("done", "size"),
        tasks_done=("done", "sum"),
        tasks_late=("late", "sum"),
        tasks_at_risk=("at_risk", "sum"),
        percent_complete=("progress", "mean"),
        baseline_finish=("baseline", "max"),
        forecast_finish=("forecast", "max"),
    )
    slip = rolled["forecast_finish"].to_numpy() - rolled["baseline_finish"].to_numpy()
    health = np.select(
        [
            slip >= rules.red_slip_days,
            (slip >= rules.amber_slip_days) | (rolled["tasks_late"] >= rules.amber_late_tasks),
        ],
        [RED, AMBER],
        GREEN,
    )
    return pd.DataFrame(
        {
            "project_uid": pd.Series(np.asarray(projects)[rolled.index.to_numpy()], dtype="str"),
            "tasks_total": rolled["tasks_total"].to_numpy().astype(np.int64),
            "tasks_done": rolled["tasks_done"].to_numpy().astype(np.int64),
            "tasks_late": rolled["tasks_late"].to_numpy().astype(np.int64),
            "tasks_at_risk": rolled["tasks_at_risk"].to_numpy().astype(np.int64),
            "percent_complete": rolled["percent_complete"].to_numpy(dtype=np.float64),
            "baseline_finish": as_dates(rolled["baseline_finish"].to_numpy(dtype=np.float64)),
            "forecast_finish": as_dates(rolled["forecast_finish"].to_numpy(dtype=np.float64)),
            "slip_days": pd.array(np.where(np.isnan(slip), None, slip), dtype="Int64"),
            "health": pd.Series(health, dtype="str"),
        }
    )
