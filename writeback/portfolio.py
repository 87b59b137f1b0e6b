"""Portfolio items: the desired content of each configured portfolio view (a Trello board, an Asana project, a
Planner plan) as one row per project and per milestone of every tool.

Pure: frames in (the warehouse's `tasks`, `schedule`, `project_health`, `projects`), a frame out; the planner
(`writeback/plan.py`) compares it with the ledger and the connectors write it. Each row's `task_uid` is the
SOURCE uid (the project_uid, or the milestone's task_uid), `connection` the portfolio target's connection and
`native_id` the container (board, project or plan id). A source that is deleted simply drops out; the planner
turns its ledger row into a `portfolio.archive`.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pandas as pd

from pmsync.config import PORTFOLIO_TOOLS, Config, PortfolioTarget

TARGET = "portfolio.item"
COLUMNS = ["target", "connection", "task_uid", "native_id", "payload"]
TOOL_LABELS = {"jira": "Jira", "asana": "Asana", "trello": "Trello", "planner": "Planner",
               "msproject": "MS Project"}
# A milestone has a state, not a health; the views colour it by the health its state amounts to.
STATE_HEALTH = {"late": "red", "done_late": "green", "at_risk": "amber", "on_track": "green",
                "done_on_time": "green", "unscheduled": None}


def portfolio_items(tasks: pd.DataFrame, schedule: pd.DataFrame, project_health: pd.DataFrame,
                    projects: pd.DataFrame, config: Config) -> pd.DataFrame:
    """One `portfolio.item` row per (portfolio target, live project) and per (target, live milestone task),
    ordered by target, project and then milestone, so equal inputs give equal frames. A target's own container
    (when it is also a synced project) is left out of its own view."""
    rows: list[dict[str, Any]] = []
    targets = portfolio_targets(config)
    if targets:
        project_rows = _project_payloads(projects, project_health)
        milestone_rows = _milestone_payloads(tasks, schedule, projects)
        for target in targets:
            rows.extend(_rows_for(target, project_rows, milestone_rows, _container_uids(target, projects)))
    return pd.DataFrame(rows, columns=COLUMNS)


def portfolio_targets(config: Config) -> list[PortfolioTarget]:
    """The configured portfolio containers, in a fixed order (Trello board, Asana project, Planner plan)."""
    chosen = (getattr(config.writeback.portfolio, key) for key in PORTFOLIO_TOOLS)
    return [target for target in chosen if target is not None]


def _container_uids(target: PortfolioTarget, projects: pd.DataFrame) -> set[str]:
    mine = projects[(projects["connection"] == target.connection) & (projects["native_id"] == target.id)]
    return set(mine["project_uid"])


def _rows_for(target: PortfolioTarget, project_rows: list[tuple[str, str, dict[str, Any]]],
              milestone_rows: list[tuple[str, str, dict[str, Any]]], skip: set[str]) -> list[dict[str, Any]]:
    ordered = sorted(
        [(project_uid, 0, uid, payload) for project_uid, uid, payload in project_rows]
        + [(project_uid, 1, uid, payload) for project_uid, uid, payload in milestone_rows]
    )
    return [{"target": TARGET, "connection": target.connection, "task_uid": uid, "native_id": target.id,
             "payload": payload} for project_uid, _, uid, payload in ordered if project_uid not in skip]


def _live(frame: pd.DataFrame) -> pd.DataFrame:
    if "deleted_at" not in frame.columns:
        return frame
    return frame[frame["deleted_at"].isna()]


def _project_payloads(projects: pd.DataFrame, project_health: pd.DataFrame) -> list[tuple[str, str, dict[str, Any]]]:
    """(project_uid, source uid, payload) of every live project."""
    health = project_health.set_index("project_uid") if len(project_health) else None
    found = []
    for project in _live(projects).itertuples(index=False):
        rolled = health.loc[project.project_uid] if health is not None and project.project_uid in health.index \
            else None
        found.append((project.project_uid, project.project_uid, {
            "kind": "project",
            "title": f"{_text(project.name) or project.native_id} ({TOOL_LABELS.get(project.tool, project.tool)})",
            "tool": project.tool,
            "health": _text(rolled["health"]) if rolled is not None else None,
            "state": None,
            "forecast_finish": _day(rolled["forecast_finish"]) if rolled is not None else None,
            "baseline_due": _day(rolled["baseline_finish"]) if rolled is not None else None,
            "slip_days": _whole(rolled["slip_days"]) if rolled is not None else None,
            "url": _text(project.url),
        }))
    return found


def _milestone_payloads(tasks: pd.DataFrame, schedule: pd.DataFrame,
                        projects: pd.DataFrame) -> list[tuple[str, str, dict[str, Any]]]:
    """(project_uid, milestone task_uid, payload) of every live milestone of a live project."""
    live_projects = _live(projects).set_index("project_uid")
    milestones = _live(tasks)
    milestones = milestones[milestones["is_milestone"].fillna(False).astype(bool)
                            & milestones["project_uid"].isin(live_projects.index)]
    planned = schedule.set_index("task_uid") if len(schedule) else None
    found = []
    for task in milestones.itertuples(index=False):
        row = planned.loc[task.task_uid] if planned is not None and task.task_uid in planned.index else None
        project = live_projects.loc[task.project_uid]
        state = _text(row["state"]) if row is not None else None
        found.append((task.project_uid, task.task_uid, {
            "kind": "milestone",
            "title": f"{_text(task.title) or task.native_id} — {_text(project['name']) or project['native_id']}",
            "tool": task.tool,
            "health": STATE_HEALTH.get(state) if state else None,
            "state": state,
            "forecast_finish": _day(row["forecast_finish"]) if row is not None else None,
            "baseline_due": _day(row["baseline_due"]) if row is not None else None,
            "slip_days": _whole(row["slip_days"]) if row is not None else None,
            "url": _text(task.url),
        }))
    return found


def _missing(value: Any) -> bool:
    return value is None or bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def _day(value: Any) -> str | None:
    """An ISO date (YYYY-MM-DD) from a date, timestamp or string; None when absent."""
    if _missing(value):
        return None
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


def _whole(value: Any) -> int | None:
    return None if _missing(value) else int(value)
