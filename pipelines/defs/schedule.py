"""The consolidated assets: cross-tool links, then the schedule and project health (`pmsync sync`'s last steps)."""
# No `from __future__ import annotations`: Dagster reads the decorated functions' annotations at runtime.

from collections.abc import Iterator
from datetime import date

import dagster as dg
import pandas as pd

from pipelines.defs.resources import PmsyncResource
from pipelines.location import LINKS, PROJECT_HEALTH, SCHEDULE, ingest_key, location_config

PREVIEW_ROWS = 10


class ScheduleConfig(dg.Config):
    """Run configuration of the schedule step."""

    as_of: str | None = None
    """Compute as of this date (YYYY-MM-DD); today in the configured time zone when unset."""


def build_links_asset(connection_names: list[str]) -> dg.AssetsDefinition:
    """The normalized tasks of every connection with their cross-tool links resolved."""

    @dg.asset(
        key=LINKS,
        deps=[ingest_key(name) for name in connection_names],
        group_name="schedule",
        kinds={"python"},
        description="Every connection's tasks together: configured links written, URL links resolved to tasks.",
    )
    def links(pmsync: PmsyncResource) -> dg.MaterializeResult:
        resolved = pmsync.resolve_links()
        return dg.MaterializeResult(metadata={
            "dagster/row_count": resolved.dependencies,
            "live tasks": resolved.tasks,
            "config links": resolved.config_links,
            "URL links resolved": resolved.url_links_resolved,
            "dangling links": resolved.dangling,
        })

    return links


@dg.multi_asset(
    specs=[
        dg.AssetSpec(SCHEDULE, deps=[LINKS], group_name="schedule", kinds={"python"},
                     description="One row per task: baseline, forecast finish, slip days, state, critical path."),
        dg.AssetSpec(PROJECT_HEALTH, deps=[LINKS], group_name="schedule", kinds={"python"},
                     description="One row per project: tasks late and at risk, forecast against baseline, health."),
    ],
)
def schedule_and_health(config: ScheduleConfig, pmsync: PmsyncResource) -> Iterator[dg.MaterializeResult]:
    """Both tables come from one computation (`schedule.compute.compute_and_store`)."""
    as_of = date.fromisoformat(config.as_of) if config.as_of else None
    computed = pmsync.compute_schedule(as_of)
    schedule = computed.frames.schedule
    with pmsync.warehouse() as warehouse:
        titles = warehouse.query("SELECT task_uid, key, title, project_uid FROM tasks WHERE deleted_at IS NULL")
    yield dg.MaterializeResult(asset_key=SCHEDULE, metadata={
        "dagster/row_count": len(schedule),
        "as of": str(computed.as_of),
        "late": int((schedule["state"] == "late").sum()),
        "at risk": int((schedule["state"] == "at_risk").sum()),
        "cycles": computed.cycle_count,
        "dangling links ignored": computed.frames.dangling_links,
        "worst slippage": dg.MetadataValue.md(worst_slippage_markdown(schedule, titles)),
    })
    health = computed.frames.project_health
    yield dg.MaterializeResult(asset_key=PROJECT_HEALTH, metadata={
        "dagster/row_count": len(health),
        "as of": str(computed.as_of),
        **{f"{colour} projects": int((health["health"] == colour).sum()) for colour in ("green", "amber", "red")},
        "worst projects": dg.MetadataValue.md(worst_projects_markdown(health)),
    })


def worst_slippage_markdown(schedule: pd.DataFrame, tasks: pd.DataFrame) -> str:
    """A markdown table of the open or late tasks that slipped most, for the asset's page in the UI."""
    slipped = schedule.dropna(subset=["slip_days"]).sort_values("slip_days", ascending=False).head(PREVIEW_ROWS)
    if slipped.empty:
        return "No task has a baseline to slip from yet."
    rows = slipped.merge(tasks, on="task_uid", how="left")
    return markdown_table(
        ["task", "title", "baseline", "forecast", "slip (days)", "state"],
        [[_text(r.key) or r.task_uid, _text(r.title)[:60], _day(r.baseline_due), _day(r.forecast_finish),
          str(int(r.slip_days)), r.state] for r in rows.itertuples()],
    )


def worst_projects_markdown(health: pd.DataFrame) -> str:
    """A markdown table of the projects that slipped most."""
    worst = health.sort_values("slip_days", ascending=False, na_position="last").head(PREVIEW_ROWS)
    if worst.empty:
        return "No projects yet."
    return markdown_table(
        ["project", "health", "late", "at risk", "forecast", "slip (days)"],
        [[r.project_uid, r.health, _count(r.tasks_late), _count(r.tasks_at_risk), _day(r.forecast_finish),
          _count(r.slip_days)] for r in worst.itertuples()],
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table; pipes inside cells are escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _text(value: object) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _day(value: object) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d")


def _count(value: object) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


@dg.definitions
def defs() -> dg.Definitions:
    config = location_config()
    names = [c.name for c in config.connections] if config is not None else []
    return dg.Definitions(assets=[build_links_asset(names), schedule_and_health])
