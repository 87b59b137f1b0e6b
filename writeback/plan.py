"""The plan of a push: what each write-back target should hold, compared with what the ledger says was written.

Pure functions over the warehouse's frames (`tasks`, `schedule`, `project_health`, `projects`) and the ledger,
plus `plan_writes`, which reads those frames and returns the plan. One row per (target, connection, task_uid):
the payload as `writeback/targets.py` describes it, its hash (sha256 of the canonical JSON without the VOLATILE
keys), what was last written there (`previous`, `remote_ref`) and whether a write is `needed` (never written, the
hash differs, or the last write failed).

Some targets are quiet until there is something to say: no labels, categories or comment are put on a task that
is on track and never had one; once pmsync has written there, the target keeps following the state (a label is
removed, a comment is edited to say the task is back on track).
"""
from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any

import orjson
import pandas as pd

from pmsync.config import PORTFOLIO_TOOLS, Config, ConnectionWriteback
from writeback.targets import AT_RISK_LABEL, LATE_LABEL, TARGETS, VOLATILE, Target, targets_of

PLAN_COLUMNS = ["target", "connection", "task_uid", "native_id", "payload", "payload_hash", "previous",
                "remote_ref", "needed"]
DESIRED_COLUMNS = ["target", "connection", "task_uid", "native_id", "payload"]
TOOL_LABELS = {"jira": "Jira", "asana": "Asana", "trello": "Trello", "planner": "Planner",
               "msproject": "MS Project"}
ARCHIVE = "portfolio.archive"
PORTFOLIO_ITEM = "portfolio.item"

Row = dict[str, Any]


# -- values ---------------------------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, (list, dict, str)) and bool(pd.isna(value)))


def _day(value: Any) -> str | None:
    """A date as ISO text (None when missing)."""
    if _missing(value):
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


def _whole(value: Any) -> int | None:
    return None if _missing(value) else int(value)


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def payload_hash(payload: dict[str, Any]) -> str:
    """sha256 of the payload's canonical JSON (sorted keys) without the VOLATILE keys, so a push on a new day with
    nothing else changed writes nothing."""
    stable = {key: value for key, value in payload.items() if key not in VOLATILE}
    return hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


# -- what a task's targets hold -------------------------------------------------------------------------------

def _days(n: int) -> str:
    return f"{n} day{'' if abs(n) == 1 else 's'}"


def _against_baseline(slip: int | None, baseline: str | None) -> str:
    if baseline is None or slip is None:
        return "with no original commitment to compare"
    if slip > 0:
        return f"{_days(slip)} past the original commitment of {baseline}"
    if slip < 0:
        return f"{_days(-slip)} ahead of the original commitment of {baseline}"
    return f"on the original commitment of {baseline}"


def status_sentence(task: Row) -> str:
    """One sentence in the coordinator's words: the forecast (or finish), its slip against the original
    commitment, the state, and which task holds this one back where the schedule knows it."""
    state = task.get("state") or "unscheduled"
    words = state.replace("_", " ")
    forecast, baseline, slip = _day(task.get("forecast_finish")), _day(task.get("baseline_due")), _whole(
        task.get("slip_days"))
    if state == "unscheduled" or forecast is None:
        sentence = f"pmsync: no due date, so no forecast ({words})."
    elif state.startswith("done"):
        sentence = f"pmsync: finished {forecast}, {_against_baseline(slip, baseline)} ({words})."
    else:
        sentence = f"pmsync: forecast finish {forecast}, {_against_baseline(slip, baseline)} ({words})."
    driver = _text(task.get("driver"))
    if driver and not state.startswith("done"):
        sentence += f" Held back by {driver}."
    return sentence


def _schedule_values(task: Row) -> dict[str, Any]:
    return {
        "baseline_due": _day(task.get("baseline_due")),
        "forecast_finish": _day(task.get("forecast_finish")),
        "slip_days": _whole(task.get("slip_days")),
        "state": _text(task.get("state")),
    }


def _property(task: Row, settings: ConnectionWriteback) -> dict[str, Any]:
    values = _schedule_values(task)
    critical = task.get("on_critical_path")
    return {**values, "on_critical_path": None if _missing(critical) else bool(critical),
            "as_of": _day(task.get("as_of"))}


def _jira_custom_fields(task: Row, settings: ConnectionWriteback) -> dict[str, Any]:
    field_ids = dict(settings.custom_fields) if isinstance(settings.custom_fields, dict) else {}
    values = _schedule_values(task)
    return {**{meaning: values[meaning] for meaning in sorted(field_ids)}, "field_ids": field_ids}


def _labels(task: Row, settings: ConnectionWriteback) -> dict[str, Any]:
    """The pmsync labels to add and to remove (never any other label)."""
    state = task.get("state")
    wanted = [LATE_LABEL] if state == "late" else [AT_RISK_LABEL] if state == "at_risk" else []
    return {"add": wanted, "remove": [label for label in (LATE_LABEL, AT_RISK_LABEL) if label not in wanted]}


def _comment(task: Row, settings: ConnectionWriteback) -> dict[str, Any]:
    return {"state": _text(task.get("state")), "text": status_sentence(task)}


def _custom_fields(task: Row, settings: ConnectionWriteback) -> dict[str, Any]:
    values = _schedule_values(task)
    return {"slip_days": values["slip_days"], "forecast_finish": values["forecast_finish"], "state": values["state"]}


def _categories(task: Row, settings: ConnectionWriteback) -> dict[str, Any]:
    return {"late": task.get("state") == "late", "at_risk": task.get("state") == "at_risk"}


def _details(task: Row, settings: ConnectionWriteback) -> dict[str, Any]:
    return {"text": status_sentence(task)}


TASK_PAYLOADS: dict[str, Callable[[Row, ConnectionWriteback], dict[str, Any]]] = {
    "jira.property": _property,
    "jira.custom_fields": _jira_custom_fields,
    "jira.labels": _labels,
    "jira.comment": _comment,
    "asana.custom_fields": _custom_fields,
    "trello.custom_fields": _custom_fields,
    "trello.comment": _comment,
    "planner.categories": _categories,
    "planner.details": _details,
}

# Targets left alone while they would say nothing, unless pmsync has already written there.
QUIET: dict[str, Callable[[dict[str, Any]], bool]] = {
    "jira.labels": lambda payload: not payload["add"],
    "jira.comment": lambda payload: payload["state"] == "on_track",
    "trello.comment": lambda payload: payload["state"] == "on_track",
    "planner.categories": lambda payload: not (payload["late"] or payload["at_risk"]),
}


def target_on(target: Target, settings: ConnectionWriteback) -> bool:
    """Whether the connection's write-back settings switch this target on (Jira custom fields: when field ids
    are named)."""
    return bool(getattr(settings, target.config_key, False))


# -- desired state ----------------------------------------------------------------------------------------------

def scheduled_tasks(tasks: pd.DataFrame, schedule: pd.DataFrame) -> pd.DataFrame:
    """Live tasks joined with their schedule rows, with `driver` naming the task that holds each one back
    (`PLAT-12 in Jira`)."""
    live = tasks[tasks["deleted_at"].isna()] if "deleted_at" in tasks.columns else tasks
    columns = [c for c in ("task_uid", "connection", "tool", "native_id", "key", "title", "project_uid")
               if c in live.columns]
    joined = live[columns].merge(schedule.drop(columns=["project_uid"], errors="ignore"), on="task_uid",
                                 how="inner")
    names = {row.task_uid: _driver_name(row) for row in live.itertuples(index=False)}
    drivers = joined["driver_uid"] if "driver_uid" in joined.columns else pd.Series(None, index=joined.index)
    joined["driver"] = [names.get(uid) if isinstance(uid, str) else None for uid in drivers]
    return joined


def _driver_name(task: Any) -> str:
    label = _text(getattr(task, "key", None)) or _text(getattr(task, "title", None)) or task.task_uid
    return f"{label} in {TOOL_LABELS.get(task.tool, task.tool)}"


def task_writes(scheduled: pd.DataFrame, config: Config, names: Iterable[str]) -> list[Row]:
    """The desired task-level writes of the named connections: one row per task and target switched on."""
    rows: list[Row] = []
    for name in names:
        connection = config.connection(name)
        settings = config.writeback_for(name)
        targets = [t for t in targets_of(connection.tool) if t.level == "task" and target_on(t, settings)]
        if not targets:
            continue
        mine = scheduled[scheduled["connection"] == name]
        for task in mine.to_dict("records"):
            for target in targets:
                rows.append({"target": target.name, "connection": name, "task_uid": task["task_uid"],
                             "native_id": str(task["native_id"]),
                             "payload": TASK_PAYLOADS[target.name](task, settings)})
    return rows


def project_writes(projects: pd.DataFrame, project_health: pd.DataFrame, config: Config,
                   names: Iterable[str]) -> list[Row]:
    """The desired project-level writes (Asana status updates) of the named connections."""
    rows: list[Row] = []
    health = project_health.set_index("project_uid") if len(project_health) else pd.DataFrame()
    for name in names:
        connection = config.connection(name)
        settings = config.writeback_for(name)
        if connection.tool != "asana" or not target_on(TARGETS["asana.status_update"], settings):
            continue
        live = projects[projects["connection"] == name]
        if "deleted_at" in live.columns:
            live = live[live["deleted_at"].isna()]
        for project in live.itertuples(index=False):
            if project.project_uid not in health.index or _missing(health.loc[project.project_uid, "health"]):
                continue
            state = str(health.loc[project.project_uid, "health"])
            label = _text(project.name) or project.native_id
            rows.append({"target": "asana.status_update", "connection": name, "task_uid": project.project_uid,
                         "native_id": str(project.native_id),
                         "payload": {"health": state, "text": f"pmsync: {label} health is {state}.",
                                     "as_of": _day(health.loc[project.project_uid, "as_of"])}})
    return rows


def portfolio_writes(tasks: pd.DataFrame, schedule: pd.DataFrame, project_health: pd.DataFrame,
                     projects: pd.DataFrame, config: Config, names: Iterable[str]) -> list[Row]:
    """The portfolio items of the selected portfolio connections, from `writeback/portfolio.py` when present."""
    wanted = set(names) & set(portfolio_containers(config))
    if not wanted or importlib.util.find_spec("writeback.portfolio") is None:
        return []
    from writeback.portfolio import portfolio_items

    items = portfolio_items(tasks, schedule, project_health, projects, config)
    return [row for row in items[DESIRED_COLUMNS].to_dict("records") if row["connection"] in wanted]


def portfolio_containers(config: Config) -> dict[str, str]:
    """Connection name -> the id of the container (board, project, plan) the configuration names as its
    portfolio target."""
    chosen = (getattr(config.writeback.portfolio, key) for key in PORTFOLIO_TOOLS)
    return {target.connection: target.id for target in chosen if target is not None}


def archive_writes(ledger: pd.DataFrame, desired: list[Row], containers: dict[str, str]) -> list[Row]:
    """A `portfolio.archive` for every portfolio item pmsync created (it has a remote_ref) whose source is no
    longer planned in that connection's view."""
    planned = {(row["connection"], row["task_uid"]) for row in desired if row["target"] == PORTFOLIO_ITEM}
    items = ledger[(ledger["target"] == PORTFOLIO_ITEM) & ledger["remote_ref"].notna()
                   & ledger["connection"].isin(list(containers))]
    return [{"target": ARCHIVE, "connection": item.connection, "task_uid": item.task_uid,
             "native_id": containers[item.connection], "payload": {"item": item.remote_ref},
             "remote_ref": item.remote_ref}
            for item in items.itertuples(index=False) if (item.connection, item.task_uid) not in planned]


def desired_writes(tasks: pd.DataFrame, schedule: pd.DataFrame, project_health: pd.DataFrame,
                   projects: pd.DataFrame, config: Config, names: Iterable[str]) -> list[Row]:
    """Every write the named connections should hold now, task, project and portfolio targets together."""
    names = list(names)
    return (task_writes(scheduled_tasks(tasks, schedule), config, names)
            + project_writes(projects, project_health, config, names)
            + portfolio_writes(tasks, schedule, project_health, projects, config, names))


# -- comparison with the ledger ---------------------------------------------------------------------------------

def _stored_payload(value: Any) -> dict[str, Any] | None:
    if _missing(value):
        return None
    return orjson.loads(value) if isinstance(value, (str, bytes)) else dict(value)


def compare_with_ledger(desired: list[Row], ledger: pd.DataFrame) -> pd.DataFrame:
    """The plan: each desired write with its hash, what the ledger last recorded there, and whether it is
    needed. Quiet targets never written are dropped."""
    stored = {(row.target, row.connection, row.task_uid): row for row in ledger.itertuples(index=False)}
    rows = []
    for row in desired:
        last = stored.get((row["target"], row["connection"], row["task_uid"]))
        quiet = QUIET.get(row["target"])
        if last is None and quiet is not None and quiet(row["payload"]):
            continue
        digest = payload_hash(row["payload"])
        needed = last is None or last.status != "written" or last.payload_hash != digest
        # An archive acts on the item's remote_ref, which it carries; other targets edit what they created.
        remote_ref = _text(row.get("remote_ref")) or (None if last is None else _text(last.remote_ref))
        rows.append({**row, "payload_hash": digest,
                     "previous": None if last is None else _stored_payload(last.payload),
                     "remote_ref": remote_ref, "needed": bool(needed)})
    # Object columns, built as such: pandas 3 would infer a string dtype for text with gaps and turn each None
    # into NaN, which is truthy, so a write with nothing to edit would try to edit "nan".
    return pd.DataFrame({column: pd.Series([row.get(column) for row in rows],
                                           dtype=bool if column == "needed" else object)
                         for column in PLAN_COLUMNS})


def plan_from_frames(tasks: pd.DataFrame, schedule: pd.DataFrame, project_health: pd.DataFrame,
                     projects: pd.DataFrame, ledger: pd.DataFrame, config: Config,
                     names: Iterable[str]) -> pd.DataFrame:
    """The whole plan from frames: desired writes, archives of vanished portfolio sources, ledger comparison."""
    names = list(names)
    desired = desired_writes(tasks, schedule, project_health, projects, config, names)
    containers = {c: i for c, i in portfolio_containers(config).items() if c in names}
    desired += archive_writes(ledger, desired, containers)
    return compare_with_ledger(desired, ledger)


def plan_writes(warehouse: Any, config: Config, names: Iterable[str] | None = None) -> pd.DataFrame:
    """The plan of a push for the named connections (all when None), read from the warehouse:
    DataFrame[target, connection, task_uid, native_id, payload, payload_hash, previous, remote_ref, needed]."""
    from writeback.ledger import read_ledger

    names = list(names) if names else [c.name for c in config.connections]
    return plan_from_frames(
        warehouse.read("tasks", "deleted_at IS NULL"), warehouse.read("schedule"),
        warehouse.read("project_health"), warehouse.read("projects"), read_ledger(warehouse, names), config, names,
    )


def changed_fields(previous: dict[str, Any] | None, payload: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for each field a write changes (every field of a first write; every field
    again when a failed write is retried unchanged). VOLATILE fields alone never make a change."""
    old = previous or {}
    changed = [(key, old.get(key), value) for key, value in payload.items()
               if key not in VOLATILE and old.get(key) != value]
    if changed or previous is None:
        return changed or [(key, None, value) for key, value in payload.items()]
    return [(key, old.get(key), value) for key, value in payload.items() if key not in VOLATILE]
