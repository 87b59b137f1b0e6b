"""The plan of a push: what each write-back target should hold, compared with what the ledger says was written.

Pure functions over the warehouse's frames (`tasks`, `schedule`, `project_health`, `projects`) and the ledger,
plus `compact_plan` and `plan_writes`, which read them from the warehouse. One row per (target, connection,
task_uid): the payload as `writeback/targets.py` describes it, its hash (sha256 of the canonical JSON without the
VOLATILE keys), what was last written there (`previous`, `remote_ref`) and whether a write is `needed` (never
written, the hash differs, or the last write failed).

A portfolio of a million tasks has a million and a half writes to plan, so the plan is made a range of one
connection's tasks at a time (only the columns it uses read, the ledger rows of those tasks alone) and kept
compact: `payload` and `previous` as JSON text in Arrow-backed columns, a few hundred bytes a write where dicts
took kilobytes. A push keeps that form and decodes its writes a few at a time (`plan_rows`); `plan_writes` and
`plan_from_frames` give the expanded form, with dicts, to look into.

Some targets are quiet until there is something to say: no labels, categories or comment are put on a task that
is on track and never had one; once pmsync has written there, the target keeps following the state (a label is
removed, a comment is edited to say the task is back on track).
"""
from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pmsync.config import PORTFOLIO_TOOLS, Config, ConnectionWriteback
from writeback.ledger import WRITTEN, read_ledger
from writeback.targets import AT_RISK_LABEL, LATE_LABEL, TARGETS, VOLATILE, Target, targets_of

PLAN_COLUMNS = ["target", "connection", "task_uid", "native_id", "payload", "payload_hash", "previous",
                "remote_ref", "needed"]
DESIRED_COLUMNS = ["target", "connection", "task_uid", "native_id", "payload"]
TOOL_LABELS = {"jira": "Jira", "asana": "Asana", "trello": "Trello", "planner": "Planner",
               "msproject": "MS Project"}
ARCHIVE = "portfolio.archive"
PORTFOLIO_ITEM = "portfolio.item"
# What the plan reads of each table (the rest of a task's hundred-odd bytes of columns stays in the warehouse).
SCHEDULE_USED = ["task_uid", "baseline_due", "forecast_finish", "slip_days", "state", "on_critical_path", "as_of",
                 "driver_uid"]
MILESTONE_USED = ["task_uid", "connection", "tool", "native_id", "title", "url", "project_uid", "is_milestone"]
LEDGER_USED = ["target", "connection", "task_uid", "payload_hash", "status", "remote_ref", "payload"]
CHUNK = 20_000  # tasks turned into desired writes, and desired writes into Arrow columns, at a time
# The plan's parts, in this order (and within each, connection by connection).
TASK_WRITES, PROJECT_WRITES, PORTFOLIO_WRITES, ARCHIVE_WRITES = range(4)
KEY = ["target", "connection", "task_uid"]
TEXT = pa.large_string()

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
    return with_drivers(joined, {row.task_uid: _driver_name(row) for row in live.itertuples(index=False)})


def with_drivers(joined: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """The scheduled tasks with `driver`: the name (in `names`, by task_uid) of the task holding each one back."""
    drivers = joined["driver_uid"] if "driver_uid" in joined.columns else pd.Series(None, index=joined.index)
    joined["driver"] = [names.get(uid) if isinstance(uid, str) else None for uid in drivers]
    return joined


def _driver_name(task: Any) -> str:
    label = _text(getattr(task, "key", None)) or _text(getattr(task, "title", None)) or task.task_uid
    return f"{label} in {TOOL_LABELS.get(task.tool, task.tool)}"


def task_writes(scheduled: pd.DataFrame, config: Config, name: str) -> Iterator[Row]:
    """The desired task-level writes of one connection's scheduled tasks: one row per task and target switched on,
    made a chunk of tasks at a time (a million tasks are never all dicts at once)."""
    settings = config.writeback_for(name)
    targets = [t for t in targets_of(config.connection(name).tool) if t.level == "task" and target_on(t, settings)]
    if not targets:
        return
    for start in range(0, len(scheduled), CHUNK):
        for task in scheduled.iloc[start:start + CHUNK].to_dict("records"):
            for target in targets:
                yield {"target": target.name, "connection": name, "task_uid": task["task_uid"],
                       "native_id": str(task["native_id"]), "payload": TASK_PAYLOADS[target.name](task, settings)}


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


def portfolio_on(config: Config, names: Iterable[str]) -> bool:
    """Whether any named connection holds a portfolio view (and `writeback/portfolio.py` is there to fill it)."""
    return bool(set(names) & set(portfolio_containers(config))) \
        and importlib.util.find_spec("writeback.portfolio") is not None


def portfolio_writes(items: pd.DataFrame, name: str) -> list[Row]:
    """The portfolio items (`writeback/portfolio.py`'s frame) that connection `name` shows."""
    return items.loc[items["connection"] == name, DESIRED_COLUMNS].to_dict("records")


def portfolio_containers(config: Config) -> dict[str, str]:
    """Connection name -> the id of the container (board, project, plan) the configuration names as its
    portfolio target."""
    chosen = (getattr(config.writeback.portfolio, key) for key in PORTFOLIO_TOOLS)
    return {target.connection: target.id for target in chosen if target is not None}


def archive_writes(ledger: pd.DataFrame, planned: set[tuple[str, str]], containers: dict[str, str]) -> list[Row]:
    """A `portfolio.archive` for every portfolio item pmsync created (it has a remote_ref) whose source is no
    longer planned (`planned`: (connection, task_uid) of the portfolio items) in that connection's view."""
    items = ledger[(ledger["target"] == PORTFOLIO_ITEM) & ledger["remote_ref"].notna()
                   & ledger["connection"].isin(list(containers))]
    return [{"target": ARCHIVE, "connection": item.connection, "task_uid": item.task_uid,
             "native_id": containers[item.connection], "payload": {"item": item.remote_ref},
             "remote_ref": item.remote_ref}
            for item in items.itertuples(index=False) if (item.connection, item.task_uid) not in planned]


# -- where a plan reads from ------------------------------------------------------------------------------------

@dataclass
class Sources:
    """What a plan reads, asked for one connection at a time and its tasks a range at a time, so that only a chunk
    of a connection's tasks and their ledger rows are in memory while their part of the plan is made.

    `task_parts`: (scheduled tasks, their ledger rows) per range of the connection's live tasks, in task_uid
    order, the scheduled tasks joined with their schedule and driver (`scheduled_tasks`); `ledger`: the ledger
    rows of the connection's project and portfolio targets (at least); `portfolio`: every configured view's
    items."""

    task_parts: Callable[[str], Iterable[tuple[pd.DataFrame, pd.DataFrame]]]
    ledger: Callable[[str], pd.DataFrame]
    projects: pd.DataFrame
    project_health: pd.DataFrame
    portfolio: Callable[[], pd.DataFrame]


def frame_sources(tasks: pd.DataFrame, schedule: pd.DataFrame, project_health: pd.DataFrame,
                  projects: pd.DataFrame, ledger: pd.DataFrame, config: Config) -> Sources:
    """Sources over whole frames in memory (tests, small portfolios): a connection's tasks in one part."""
    scheduled = scheduled_tasks(tasks, schedule)

    def items() -> pd.DataFrame:
        from writeback.portfolio import portfolio_items

        return portfolio_items(tasks, schedule, project_health, projects, config)

    def mine(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        return frame[frame["connection"] == name]

    return Sources(task_parts=lambda name: [(mine(scheduled, name), mine(ledger, name))],
                   ledger=lambda name: mine(ledger, name), projects=projects, project_health=project_health,
                   portfolio=items)


def warehouse_sources(warehouse: Any, config: Config) -> Sources:
    """Sources read from the warehouse, each table restricted to the columns the plan uses: a connection's live
    tasks, their schedule rows and ledger rows CHUNK tasks at a time (ranges of task_uid), the tasks that hold
    others back (for the comments' `held back by`), and the milestones alone for the portfolio views."""
    live = "deleted_at IS NULL AND connection = %s"
    milestones = "deleted_at IS NULL AND is_milestone"
    drivers = warehouse.read("tasks", "deleted_at IS NULL AND task_uid IN (SELECT driver_uid FROM schedule)",
                             columns=["task_uid", "tool", "key", "title"])
    names = {row.task_uid: _driver_name(row) for row in drivers.itertuples(index=False)}
    projects, project_health = warehouse.read("projects"), warehouse.read("project_health")

    def task_parts(name: str) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        for within, bounds in task_ranges(warehouse, name):
            tasks = warehouse.read("tasks", f"{live} AND {within}", [name, *bounds],
                                   columns=["task_uid", "native_id"])
            schedule = warehouse.read("schedule", f"task_uid IN (SELECT task_uid FROM tasks WHERE {live}) "
                                                  f"AND {within}", [name, *bounds], columns=SCHEDULE_USED)
            ledger = read_ledger(warehouse, [name], LEDGER_USED, within, bounds)
            yield with_drivers(tasks.merge(schedule, on="task_uid", how="inner"), names), ledger

    def items() -> pd.DataFrame:
        from writeback.portfolio import portfolio_items

        tasks = warehouse.read("tasks", milestones, columns=MILESTONE_USED)
        schedule = warehouse.read("schedule", f"task_uid IN (SELECT task_uid FROM tasks WHERE {milestones})")
        return portfolio_items(tasks, schedule, project_health, projects, config)

    def others(name: str) -> pd.DataFrame:
        targets = [target for target, about in TARGETS.items() if about.level != "task"]
        return read_ledger(warehouse, [name], LEDGER_USED, f"target IN ({', '.join(['%s'] * len(targets))})", targets)

    return Sources(task_parts=task_parts, ledger=others, projects=projects, project_health=project_health,
                   portfolio=items)


def task_ranges(warehouse: Any, name: str) -> list[tuple[str, list[str]]]:
    """(SQL condition, its parameters) for each range of CHUNK of the connection's live tasks, by task_uid in the
    warehouse's own order, so that the ranges read one after the other give the tasks in that order."""
    uids = warehouse.read("tasks", "deleted_at IS NULL AND connection = %s", [name], columns=["task_uid"])
    starts = uids["task_uid"].iloc[::CHUNK].tolist()
    return [("task_uid >= %s AND task_uid < %s", [low, high]) for low, high in zip(starts, starts[1:])] \
        + [("task_uid >= %s", [starts[-1]])] if starts else []


# -- the plan, one connection at a time -------------------------------------------------------------------------

def make_plan(sources: Sources, config: Config, names: Iterable[str]) -> pd.DataFrame:
    """The compact plan of the named connections: PLAN_COLUMNS with `payload` and `previous` as JSON text (missing
    values NaN), in Arrow-backed columns of a few hundred bytes a write instead of dicts of kilobytes.

    Each range of a connection's tasks is turned into desired writes and compared with its ledger rows before the
    next is read. Rows come in the order of a plan over all connections at once: task writes (connection by
    connection), project writes, portfolio items (view by view), archives (in ledger order)."""
    names = list(names)
    containers = {c: i for c, i in portfolio_containers(config).items() if c in names}
    items = sources.portfolio() if portfolio_on(config, names) else None
    views = {connection: rank for rank, connection in enumerate(containers)}
    ledger_order = {connection: rank for rank, connection in enumerate(sorted(names))}
    parts: list[tuple[int, int, pa.Table]] = []
    for index, name in enumerate(names):
        for scheduled, ledger in sources.task_parts(name):
            parts.append((TASK_WRITES, index, _compare(_desired(task_writes(scheduled, config, name)),
                                                       _ledger_table(ledger))))
        ledger = sources.ledger(name)
        last = _ledger_table(ledger)
        shown = portfolio_writes(items, name) if items is not None and name in containers else []
        planned = {(row["connection"], row["task_uid"]) for row in shown}
        parts += [
            (PROJECT_WRITES, index,
             _compare(_desired(project_writes(sources.projects, sources.project_health, config, [name])), last)),
            (PORTFOLIO_WRITES, views.get(name, 0), _compare(_desired(shown), last)),
            (ARCHIVE_WRITES, ledger_order[name],
             _compare(_desired(archive_writes(ledger, planned, containers)), last)),
        ]
    parts.sort(key=lambda part: part[:2])
    tables = [table for _, _, table in parts if table.num_rows]
    return _frame(pa.concat_tables(tables) if tables else _compare(_EMPTY, _EMPTY_LEDGER))


def _desired(rows: Iterable[Row]) -> pa.Table:
    """Desired writes as Arrow columns, a chunk at a time: payload as JSON text with its hash, and whether the
    target is quiet (left alone while never written)."""
    rows = iter(rows)
    batches: list[pa.Table] = []
    while batch := list(islice(rows, CHUNK)):
        payloads = [row["payload"] for row in batch]
        batches.append(pa.table({
            **{column: pa.array([row[column] for row in batch], TEXT) for column in DESIRED_COLUMNS[:4]},
            "payload": pa.array([orjson.dumps(payload).decode() for payload in payloads], TEXT),
            "payload_hash": pa.array([payload_hash(payload) for payload in payloads], TEXT),
            "own_ref": pa.array([_text(row.get("remote_ref")) for row in batch], TEXT),
            "quiet": pa.array([_quiet(row["target"], row["payload"]) for row in batch], pa.bool_()),
        }))
    return pa.concat_tables(batches) if batches else _EMPTY


def _quiet(target: str, payload: dict[str, Any]) -> bool:
    quiet = QUIET.get(target)
    return quiet is not None and bool(quiet(payload))


def _ledger_table(ledger: pd.DataFrame) -> pa.Table:
    """The ledger rows the comparison needs, as Arrow columns (payload as JSON text)."""
    payloads = ledger["payload"]
    if payloads.dtype == object:  # frames made by hand may hold dicts
        payloads = payloads.map(lambda value: None if _missing(value) else value if isinstance(value, str)
                                else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
    columns = {"target": ledger["target"], "connection": ledger["connection"], "task_uid": ledger["task_uid"],
               "last_status": ledger["status"], "last_hash": ledger["payload_hash"],
               "last_ref": ledger["remote_ref"], "previous": payloads}
    return pa.table({name: _arrow_text(values) for name, values in columns.items()})


def _arrow_text(values: pd.Series) -> pa.ChunkedArray | pa.Array:
    if values.dtype == object:
        return pa.array([None if _missing(value) else str(value) for value in values], TEXT)
    return pa.array(values, TEXT, from_pandas=True)


def _compare(desired: pa.Table, ledger: pa.Table) -> pa.Table:
    """Each desired write with what the ledger last recorded there: its hash, whether it is needed (never written,
    the hash differs, or the last attempt did not succeed) and the remote_ref to edit; quiet targets never
    written are dropped. In the desired writes' order."""
    found = pc.index_in(_keys(desired), value_set=_keys(ledger).combine_chunks())  # null: never written
    last = ledger.take(found.combine_chunks())
    known = pc.is_valid(found)
    needed = pc.or_(pc.or_(pc.invert(known), pc.fill_null(pc.not_equal(last["last_status"], WRITTEN), True)),
                    pc.fill_null(pc.not_equal(last["last_hash"], desired["payload_hash"]), True))
    # An archive acts on the item's remote_ref, which it carries; other targets edit what they created.
    own = desired["own_ref"]
    remote_ref = pc.if_else(pc.fill_null(pc.not_equal(own, ""), False), own, last["last_ref"])
    plan = pa.table({**{column: desired[column] for column in PLAN_COLUMNS[:6]}, "previous": last["previous"],
                     "remote_ref": remote_ref, "needed": needed})
    # The rows kept are allocated apart from the many short-lived buffers of making them: kept among those in one
    # pool, they left it a quarter bigger than the plan at a million tasks.
    return pc.filter(plan, pc.or_(known, pc.invert(desired["quiet"])), memory_pool=pa.system_memory_pool())


def _keys(rows: pa.Table) -> pa.ChunkedArray:
    """(target, connection, task_uid) as one text per row, for a hash lookup (no id holds the unit separator)."""
    return pc.binary_join_element_wise(*(rows[column] for column in KEY), pa.scalar("\x1f", TEXT))


def _frame(plan: pa.Table) -> pd.DataFrame:
    """The plan as a frame (Arrow-backed text; target and connection categorical, a few names for many rows)."""
    for column in ("target", "connection"):
        plan = plan.set_column(plan.schema.get_field_index(column), column, pc.dictionary_encode(plan[column]))
    return plan.to_pandas()


# -- the plan in other forms ------------------------------------------------------------------------------------

def plan_rows(plan: pd.DataFrame, positions: Sequence[int] | None = None, chunk: int = 1_000) -> Iterator[Row]:
    """The plan's rows (those at `positions`, all when None) as dicts, payload and previous decoded (previous and
    remote_ref None where there is none), a chunk at a time: a compact plan of a million writes is never
    decoded whole."""
    positions = range(len(plan)) if positions is None else positions
    for start in range(0, len(positions), chunk):
        for row in plan.iloc[positions[start:start + chunk]].to_dict("records"):
            yield {"target": row["target"], "connection": row["connection"], "task_uid": row["task_uid"],
                   "native_id": row["native_id"], "payload": _stored_payload(row["payload"]),
                   "payload_hash": row["payload_hash"], "previous": _stored_payload(row["previous"]),
                   "remote_ref": _text(row["remote_ref"]), "needed": bool(row["needed"])}


def expand(plan: pd.DataFrame) -> pd.DataFrame:
    """The compact plan with dicts for payload and previous and None for missing values (the form `plan_writes`
    returns, to look into; a push keeps the compact one)."""
    rows = list(plan_rows(plan))
    # Object columns, built as such: pandas 3 would infer a string dtype for text with gaps and turn each None
    # into NaN, which is truthy, so a write with nothing to edit would try to edit "nan".
    return pd.DataFrame({column: pd.Series([row[column] for row in rows],
                                           dtype=bool if column == "needed" else object)
                         for column in PLAN_COLUMNS})


def _stored_payload(value: Any) -> dict[str, Any] | None:
    if _missing(value):
        return None
    return orjson.loads(value) if isinstance(value, (str, bytes)) else dict(value)


def compare_with_ledger(desired: list[Row], ledger: pd.DataFrame) -> pd.DataFrame:
    """The plan (expanded): each desired write with its hash, what the ledger last recorded there, and whether it
    is needed. Quiet targets never written are dropped."""
    return expand(_frame(_compare(_desired(desired), _ledger_table(ledger))))


def plan_from_frames(tasks: pd.DataFrame, schedule: pd.DataFrame, project_health: pd.DataFrame,
                     projects: pd.DataFrame, ledger: pd.DataFrame, config: Config,
                     names: Iterable[str]) -> pd.DataFrame:
    """The whole plan (expanded) from frames: desired writes, archives of vanished portfolio sources, ledger
    comparison."""
    return expand(make_plan(frame_sources(tasks, schedule, project_health, projects, ledger, config), config,
                            names))


def compact_plan(warehouse: Any, config: Config, names: Iterable[str] | None = None) -> pd.DataFrame:
    """The plan of a push for the named connections (all when None), read from the warehouse a connection at a
    time, in its compact form (see `make_plan`)."""
    names = list(names) if names else [c.name for c in config.connections]
    return make_plan(warehouse_sources(warehouse, config), config, names)


def plan_writes(warehouse: Any, config: Config, names: Iterable[str] | None = None) -> pd.DataFrame:
    """The plan of a push for the named connections (all when None), read from the warehouse, expanded:
    DataFrame[target, connection, task_uid, native_id, payload, payload_hash, previous, remote_ref, needed]."""
    return expand(compact_plan(warehouse, config, names))


def changed_fields(previous: dict[str, Any] | str | None,
                   payload: dict[str, Any] | str) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for each field a write changes (every field of a first write; every field
    again when a failed write is retried unchanged). VOLATILE fields alone never make a change. Either side may
    be the compact plan's JSON text."""
    previous, payload = _stored_payload(previous), _stored_payload(payload) or {}
    old = previous or {}
    changed = [(key, old.get(key), value) for key, value in payload.items()
               if key not in VOLATILE and old.get(key) != value]
    if changed or previous is None:
        return changed or [(key, None, value) for key, value in payload.items()]
    return [(key, old.get(key), value) for key, value in payload.items() if key not in VOLATILE]


_EMPTY = pa.table({**{column: pa.array([], TEXT) for column in [*DESIRED_COLUMNS[:4], "payload", "payload_hash",
                                                                   "own_ref"]},
                   "quiet": pa.array([], pa.bool_())})
_EMPTY_LEDGER = pa.table({**{column: pa.array([], TEXT) for column in [*KEY, "last_status", "last_hash", "last_ref",
                                                                      "previous"]}})
