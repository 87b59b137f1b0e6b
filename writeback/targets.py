"""Every write-back target: its name, the tool that takes it, what its payload holds, and whether it is on by
default. One source of truth for the planner (`writeback/plan.py`), the connectors' `write()` methods, the
ledger and `pmsync push --dry-run`.

Payload keys use the `schedule` table's names. Keys in VOLATILE (the as-of date) are written but left out of
the payload hash, so a push on a new day with nothing else changed writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

VOLATILE = frozenset({"as_of"})
LATE_LABEL = "pmsync-late"
AT_RISK_LABEL = "pmsync-at-risk"


@dataclass(frozen=True)
class Target:
    name: str
    tool: str
    level: str  # "task", "project" or "portfolio"
    config_key: str  # the key in the connection's `writeback:` section that switches it
    default_on: bool
    payload: str  # what the payload holds, for readers and the dry-run


TARGETS = {t.name: t for t in (
    Target("jira.property", "jira", "task", "property", True,
           "the issue property `pmsync.schedule`: {baseline_due, forecast_finish, slip_days, state, "
           "on_critical_path, as_of}"),
    Target("jira.custom_fields", "jira", "task", "custom_fields", False,
           "{slip_days, forecast_finish} into the field ids the connection's writeback.custom_fields names"),
    Target("jira.labels", "jira", "task", "labels", True,
           "{state}: pmsync-late when late, pmsync-at-risk when at risk, neither otherwise (other labels untouched)"),
    Target("jira.comment", "jira", "task", "comments", True,
           "{state, text}: one comment by pmsync per task, edited in place when the state changes"),
    Target("asana.custom_fields", "asana", "task", "custom_fields", True,
           "{slip_days, forecast_finish, state} into the project's pmsync custom fields where it has them"),
    Target("asana.status_update", "asana", "project", "status_updates", True,
           "{health, text}: a project status update when the project's health changes"),
    Target("trello.custom_fields", "trello", "task", "custom_fields", True,
           "{slip_days, forecast_finish, state} into the board's pmsync custom fields"),
    Target("trello.comment", "trello", "task", "comments", True,
           "{state, text}: one comment by pmsync per card, edited in place when the state changes"),
    Target("planner.categories", "planner", "task", "categories", True,
           "{late, at_risk}: the plan's pmsync categories applied or cleared on the task (If-Match)"),
    Target("planner.details", "planner", "task", "details", True,
           "{text}: a pmsync schedule block at the end of the task details' description (If-Match)"),
    Target("portfolio.item", "*", "portfolio", "portfolio", True,
           "{kind (project|milestone), title, tool, health, state, forecast_finish, baseline_due, slip_days, url}: "
           "one item per project and milestone in the configured portfolio board/project/plan, updated in place"),
    Target("portfolio.archive", "*", "portfolio", "portfolio", True,
           "{}: archive the portfolio item (remote_ref) whose source went away"),
)}


def targets_of(tool: str) -> list[Target]:
    """The task- and project-level targets a tool takes."""
    return [t for t in TARGETS.values() if t.tool == tool]
