"""The consolidated schedule: baselines, forecasts through dependencies in any tool, slippage, state, critical path
and project health, as pure functions over the warehouse's frames (`compute_schedule`), plus the thin shell that
reads and writes the warehouse (`compute_and_store`).

The meanings are those of PRODUCT.md, section Meanings. Choices it leaves open, made here:
- "little progress" (for at_risk) is percent_complete below 50; a task without one has made none.
- An open task never finishes before the as-of date, also when only its predecessors date it.
- A done task's forecast is its completion date (its due date when the tool gave none) and no predecessor moves
  it; links into done tasks are ignored. Cancelled and deleted tasks are not scheduled; links to them, to
  `url:` targets or to tasks pmsync does not know are dangling: counted, and ignored.
- Durations are calendar days: due - start, else estimate_hours / 8 rounded up, else zero; milestones take none.
- The critical path pass holds every task to its own project's latest forecast finish and to whatever its
  successors (in any project or tool) need: float_days is how far a task can slip before some project's finish
  moves, and on_critical_path means it cannot slip at all. The portfolio pass holds every task to the portfolio's
  latest forecast finish only (`portfolio_float_days`, `on_portfolio_critical_path`).
- The links inside a cycle are ignored so that the rest of the schedule still computes; the cycle is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mappings.schema import TABLES
from schedule import graph
from schedule.baseline import ORIGINAL, baseline_days, ordered_versions, reschedule_counts
from schedule.days import as_dates, day_number, day_numbers, local_day_numbers
from schedule.health import HealthRules, project_health

if TYPE_CHECKING:
    from pmsync.config import Config
    from warehouse import Warehouse

HOURS_PER_DAY = 8.0
LITTLE_PROGRESS_PERCENT = 50.0

FINISH_TO_START = "finish_to_start"
START_TO_START = "start_to_start"
FINISH_TO_FINISH = "finish_to_finish"
START_TO_FINISH = "start_to_finish"
KIND_ALIASES = {
    "fs": FINISH_TO_START,
    "ss": START_TO_START,
    "ff": FINISH_TO_FINISH,
    "sf": START_TO_FINISH,
    FINISH_TO_START: FINISH_TO_START,
    START_TO_START: START_TO_START,
    FINISH_TO_FINISH: FINISH_TO_FINISH,
    START_TO_FINISH: START_TO_FINISH,
}
# Which end of the predecessor a link reads, and whether it holds the successor's start (so the successor's own
# duration comes on top) or its finish.
READS_PREDECESSOR_START = (START_TO_START, START_TO_FINISH)
HOLDS_SUCCESSOR_START = (FINISH_TO_START, START_TO_START)

UNSCHEDULED, DONE_LATE, DONE_ON_TIME, LATE, AT_RISK, ON_TRACK = (
    "unscheduled",
    "done_late",
    "done_on_time",
    "late",
    "at_risk",
    "on_track",
)

TASK_COLUMNS = (
    "task_uid",
    "project_uid",
    "status_category",
    "is_milestone",
    "start_date",
    "due_date",
    "completed_at",
    "estimate_hours",
    "percent_complete",
    "deleted_at",
)
DEPENDENCY_COLUMNS = ("predecessor_uid", "successor_uid", "kind", "lag_days")
HISTORY_COLUMNS = ("task_uid", "valid_from", "due_date", "source")


@dataclass(frozen=True)
class ScheduleRules:
    """The settings a schedule computation depends on (from `pmsync.yaml`'s `schedule` section and timezone)."""

    baseline: str = ORIGINAL
    at_risk_days: int = 3
    little_progress_percent: float = LITTLE_PROGRESS_PERCENT
    timezone: str = "UTC"
    health: HealthRules = field(default_factory=HealthRules)

    @classmethod
    def from_config(cls, config: Config) -> ScheduleRules:
        """The rules a validated configuration states."""
        settings = config.schedule
        thresholds = settings.health
        return cls(
            baseline=settings.baseline,
            at_risk_days=settings.at_risk_days,
            timezone=config.timezone,
            health=HealthRules(
                amber_slip_days=thresholds.amber_slip_days,
                red_slip_days=thresholds.red_slip_days,
                amber_late_tasks=getattr(thresholds, "amber_late_tasks", HealthRules.amber_late_tasks),
            ),
        )


@dataclass(frozen=True)
class ScheduleFrames:
    """What one computation produces: the `schedule`, `project_health` and `schedule_cycles` rows (the schedule
    frame also holds driver_uid, portfolio_float_days and on_portfolio_critical_path), and the count of
    dangling links that were ignored."""

    schedule: pd.DataFrame
    project_health: pd.DataFrame
    cycles: pd.DataFrame
    dangling_links: int = 0
    links: int = 0


@dataclass(frozen=True)
class ScheduleResult:
    """A computation stored in the warehouse: its as-of date, its frames and how many rows each table got."""

    as_of: date
    frames: ScheduleFrames
    stored: dict[str, int]

    @property
    def cycle_count(self) -> int:
        return int(self.frames.cycles["cycle_id"].nunique())


def today_in(zone: str) -> date:
    """Today's date in an IANA time zone."""
    return datetime.now(ZoneInfo(zone)).date()


def compute_and_store(warehouse: Warehouse, config: Config, as_of: date | None = None) -> ScheduleResult:
    """Compute the schedule from the warehouse's tasks, dependencies and history as of `as_of` (default: today
    in the configured time zone) and replace the schedule, project_health and schedule_cycles tables with it,
    in one transaction."""
    rules = ScheduleRules.from_config(config)
    as_of = as_of or today_in(rules.timezone)
    tasks = warehouse.read("tasks", "deleted_at IS NULL", columns=TASK_COLUMNS)
    dependencies = warehouse.read("dependencies", columns=DEPENDENCY_COLUMNS)
    history = warehouse.read("task_history", columns=HISTORY_COLUMNS)
    frames = compute_schedule(tasks, dependencies, history, as_of, rules)
    stored = {}
    with warehouse.transaction():
        for name, frame in (
            ("schedule", frames.schedule),
            ("project_health", frames.project_health),
            ("schedule_cycles", frames.cycles),
        ):
            stored[name] = warehouse.replace(name, storable(name, frame))
    return ScheduleResult(as_of, frames, stored)


def storable(table_name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's columns that the warehouse table defines (extra columns such as driver_uid are kept in the
    frame but stored only once the schema has them)."""
    names = set(TABLES[table_name].column_names)
    return frame[[name for name in frame.columns if name in names]]


def compute_schedule(
    tasks: pd.DataFrame,
    dependencies: pd.DataFrame,
    history: pd.DataFrame,
    as_of: date,
    rules: ScheduleRules | None = None,
) -> ScheduleFrames:
    """The consolidated schedule as of a date. Pure: the same frames give the same result, whatever their row
    order. Frames need the columns TASK_COLUMNS, DEPENDENCY_COLUMNS (kind and lag_days optional) and
    HISTORY_COLUMNS (source optional); dates as naive dates, completed_at as UTC instants."""
    rules = rules or ScheduleRules()
    today = day_number(as_of)
    scheduled = _scheduled_tasks(tasks)
    uids = pd.Index(scheduled["task_uid"])
    predecessor, successor, history_task = _positions(
        scheduled["task_uid"],
        dependencies["predecessor_uid"],
        dependencies["successor_uid"],
        history["task_uid"],
    )
    work = _Work.of(scheduled, rules.timezone)
    links, dangling = _links(dependencies, predecessor, successor)
    plan = _plan(len(uids), links, work)

    forecast = _forward(plan, work, today)
    driver = _drivers(plan, work, forecast, today)
    project_deadline, portfolio_deadline = _deadlines(scheduled["project_uid"], forecast)
    latest = _latest_finish(plan, np.column_stack([project_deadline, portfolio_deadline]))
    versions = ordered_versions(history_task, history)
    baseline = baseline_days(versions, work.due, rules.baseline)
    reschedules = reschedule_counts(versions, len(uids))
    state = _states(work, forecast, baseline, today, rules)

    as_of_day = as_dates(np.array([today]))[0]
    schedule = _schedule_frame(scheduled, work, uids, forecast, driver, latest, baseline, reschedules, state)
    schedule["as_of"] = as_of_day
    health = project_health(
        scheduled["project_uid"],
        work.done,
        state == LATE,
        state == AT_RISK,
        work.progress,
        baseline,
        forecast,
        rules.health,
    )
    health["as_of"] = as_of_day
    cycles = _cycles_frame(plan.cycles, uids)
    cycles["as_of"] = as_of_day
    return ScheduleFrames(
        schedule, health, cycles, dangling_links=dangling, links=int(plan.predecessors.size)
    )


def _scheduled_tasks(tasks: pd.DataFrame) -> pd.DataFrame:
    """Tasks that take part: not deleted, not cancelled, one row per uid (the last), ordered by uid (so that ties
    break by uid and never by row order)."""
    keep = tasks["status_category"].ne("cancelled").fillna(True).to_numpy(dtype=bool)
    if "deleted_at" in tasks.columns:
        keep = keep & tasks["deleted_at"].isna().to_numpy()
    kept = tasks.loc[keep]
    kept = kept.iloc[kept["task_uid"].argsort(kind="stable").to_numpy()].reset_index(drop=True)
    uids = pa.array(kept["task_uid"])
    if len(uids) > 1:
        repeated = pc.equal(uids[1:], uids[:-1]).to_numpy(zero_copy_only=False)
        if repeated.any():
            kept = kept.loc[np.append(~repeated, True)].reset_index(drop=True)
    return kept


def _string_array(values: pd.Series) -> pa.Array:
    """One contiguous Arrow string array (a column read from the warehouse may arrive in several chunks)."""
    array = pa.array(values, type=pa.string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _positions(uids: pd.Series, *columns: pd.Series) -> list[np.ndarray]:
    """For each column of uids, the position of each value in `uids` (which holds each uid once), -1 where it is
    not there; one hash pass over all of them."""
    arrays = [_string_array(uids)] + [_string_array(column.astype("str")) for column in columns]
    encoded = pa.concat_arrays(arrays).dictionary_encode()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    found = []
    start = len(uids)
    for column in columns:
        position = codes[start : start + len(column)]
        found.append(np.where((position >= 0) & (position < len(uids)), position, -1))
        start += len(column)
    return found


@dataclass(frozen=True)
class _Work:
    """Per-task arrays, dates as day numbers."""

    due: np.ndarray
    duration: np.ndarray
    done: np.ndarray
    finished: np.ndarray  # done tasks' completion date (their due date when the tool gave none)
    progress: np.ndarray  # 0..100; done tasks 100, unknown 0

    @classmethod
    def of(cls, tasks: pd.DataFrame, zone: str) -> _Work:
        due = day_numbers(tasks["due_date"])
        start = day_numbers(tasks["start_date"])
        estimate = pd.to_numeric(tasks["estimate_hours"]).to_numpy(dtype=np.float64, na_value=np.nan)
        span = np.maximum(due - start, 0.0)  # NaN where either date is missing
        from_estimate = np.ceil(np.maximum(estimate, 0.0) / HOURS_PER_DAY)
        duration = np.where(np.isnan(span), np.where(np.isnan(from_estimate), 0.0, from_estimate), span)
        milestone = tasks["is_milestone"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        duration[milestone] = 0.0
        done = tasks["status_category"].eq("done").fillna(False).to_numpy(dtype=bool)
        completed = local_day_numbers(tasks["completed_at"], zone)
        finished = np.where(done, np.where(np.isnan(completed), due, completed), np.nan)
        percent = pd.to_numeric(tasks["percent_complete"]).to_numpy(dtype=np.float64, na_value=np.nan)
        progress = np.where(done, 100.0, np.nan_to_num(percent, nan=0.0))
        return cls(due, duration, done, finished, progress)


def _links(
    dependencies: pd.DataFrame, predecessor: np.ndarray, successor: np.ndarray
) -> tuple[pd.DataFrame, int]:
    """The links between scheduled tasks as node numbers with their kind and whole-day lag, and the count of
    dangling links left out (`predecessor` / `successor`: the positions of their ends, -1 when unknown)."""
    known = (predecessor >= 0) & (successor >= 0)
    kind = _link_kinds(dependencies["kind"]) if "kind" in dependencies.columns else None
    lag = (
        pd.to_numeric(dependencies["lag_days"]).to_numpy(dtype=np.float64, na_value=np.nan)
        if "lag_days" in dependencies.columns
        else np.zeros(len(dependencies))
    )
    links = pd.DataFrame(
        {
            "predecessor": predecessor[known].astype(np.int64),
            "successor": successor[known].astype(np.int64),
            "kind": (kind[known] if kind is not None else np.full(int(known.sum()), FINISH_TO_START)),
            "lag": np.rint(np.nan_to_num(lag[known], nan=0.0)),
        }
    )
    return links, int((~known).sum())


def _link_kinds(kinds: pd.Series) -> np.ndarray:
    """Canonical link kinds; anything else (blocks, depends on, ...) means finish-to-start."""
    codes, names = pd.factorize(kinds)
    canonical = (
        pd.Series(names, dtype="str")
        .str.strip()
        .str.lower()
        .str.replace("-", "_")
        .str.replace(" ", "_")
        .map(KIND_ALIASES)
        .fillna(FINISH_TO_START)
        .to_numpy(dtype=object)
    )
    return np.where(
        codes >= 0, canonical[np.maximum(codes, 0)] if canonical.size else FINISH_TO_START, FINISH_TO_START
    )


@dataclass(frozen=True)
class _Plan:
    """The schedule's graph: links without the ones inside cycles, topological levels, and each link's offset
    (successor finish >= predecessor finish + offset; NaN where the link holds nothing, into done tasks)."""

    predecessors: np.ndarray
    successors: np.ndarray
    offsets: np.ndarray
    level: np.ndarray
    cycles: list[graph.Cycle]

    @property
    def level_count(self) -> int:
        return int(self.level.max()) + 1 if self.level.size else 0


def _plan(node_count: int, links: pd.DataFrame, work: _Work) -> _Plan:
    predecessors = links["predecessor"].to_numpy()
    successors = links["successor"].to_numpy()
    level = graph.topological_levels(node_count, predecessors, successors)
    cycles = graph.find_cycles(node_count, predecessors, successors, level)
    if cycles:
        outside = ~graph.links_inside(cycles, node_count, predecessors, successors)
        links = links.loc[outside]
        predecessors, successors = predecessors[outside], successors[outside]
        level = graph.topological_levels(node_count, predecessors, successors)
    kind = links["kind"].to_numpy()
    offsets = links["lag"].to_numpy(dtype=np.float64).copy()
    offsets += np.where(np.isin(kind, HOLDS_SUCCESSOR_START), work.duration[successors], 0.0)
    offsets -= np.where(np.isin(kind, READS_PREDECESSOR_START), work.duration[predecessors], 0.0)
    offsets[work.done[successors]] = np.nan
    return _Plan(predecessors, successors, offsets, level, cycles)


def _own_finish(work: _Work, today: float) -> np.ndarray:
    """What a task's own dates say: done tasks their finish; open tasks their due date, today once it passed."""
    return np.where(work.done, work.finished, np.where(work.due < today, today, work.due))


def _forward(plan: _Plan, work: _Work, today: float) -> np.ndarray:
    """Forecast finish per task, level by level: the latest of its own finish and its predecessors' forecasts
    plus the links' offsets, and never before today for an open task."""
    open_ = ~work.done
    own = _own_finish(work, today)
    forecast = own.copy()
    order = graph.pair_order(plan.level[plan.successors], plan.successors, plan.level.size)
    predecessors, successors, offsets = plan.predecessors[order], plan.successors[order], plan.offsets[order]
    bounds = graph.level_bounds(plan.level[successors], plan.level_count)
    for level in range(1, plan.level_count):
        low, high = bounds[level], bounds[level + 1]
        if low == high:
            continue
        edge_to = successors[low:high]
        candidate = forecast[predecessors[low:high]] + offsets[low:high]
        starts = graph.group_starts(edge_to)
        targets = edge_to[starts]
        combined = np.fmax(own[targets], np.fmax.reduceat(candidate, starts))
        floor_today = open_[targets] & ~np.isnan(combined)
        forecast[targets] = np.where(floor_today, np.fmax(combined, today), combined)
    return forecast


def _drivers(plan: _Plan, work: _Work, forecast: np.ndarray, today: float) -> np.ndarray:
    """For each task that its predecessors push past its own finish (and past today), the predecessor that
    does (the smallest, on a tie); -1 for the others."""
    driver = np.full(forecast.size, -1, dtype=np.int64)
    if not plan.predecessors.size:
        return driver
    order = graph.pair_order(plan.successors, plan.predecessors, forecast.size)
    edge_from, edge_to = plan.predecessors[order], plan.successors[order]
    candidate = forecast[edge_from] + plan.offsets[order]
    starts = graph.group_starts(edge_to)
    targets = edge_to[starts]
    pushed = np.fmax.reduceat(candidate, starts)
    held = np.fmax(_own_finish(work, today)[targets], np.where(work.done[targets], np.nan, today))
    driven = pushed > held
    _record_drivers(driver, candidate, pushed, driven, starts, targets, edge_from)
    return driver


def _record_drivers(
    driver: np.ndarray,
    candidate: np.ndarray,
    pushed: np.ndarray,
    driven: np.ndarray,
    starts: np.ndarray,
    targets: np.ndarray,
    edge_from: np.ndarray,
) -> None:
    """For each driven target, the smallest predecessor whose link gives the pushed date (links are sorted by
    predecessor within a target, so the first match is the smallest)."""
    group = np.repeat(np.arange(starts.size), np.diff(np.append(starts, candidate.size)))
    matches = np.flatnonzero((candidate == pushed[group]) & driven[group])
    groups, first = np.unique(group[matches], return_index=True)
    driver[targets[groups]] = edge_from[matches[first]]


def _deadlines(project_uids: pd.Series, forecast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each task's project's latest forecast finish (the portfolio's for tasks without a project) and the
    portfolio's latest forecast finish."""
    dated = ~np.isnan(forecast)
    portfolio = float(forecast[dated].max()) if dated.any() else np.nan
    codes, _ = pd.factorize(project_uids)
    latest = pd.Series(forecast).groupby(codes).max()
    by_project = np.full(int(codes.max()) + 2 if codes.size else 1, np.nan)
    by_project[latest.index.to_numpy()] = latest.to_numpy()
    project = by_project[codes]
    project[codes < 0] = portfolio
    return project, np.full(forecast.size, portfolio)


def _latest_finish(plan: _Plan, deadlines: np.ndarray) -> np.ndarray:
    """Latest finish per task and per deadline column, level by level from the last: no later than its deadline,
    nor than any successor's latest finish minus the link's offset."""
    latest = deadlines.copy()
    order = graph.pair_order(plan.level[plan.predecessors], plan.predecessors, plan.level.size)
    predecessors, successors, offsets = plan.predecessors[order], plan.successors[order], plan.offsets[order]
    bounds = graph.level_bounds(plan.level[predecessors], plan.level_count)
    for level in range(plan.level_count - 1, -1, -1):
        low, high = bounds[level], bounds[level + 1]
        if low == high:
            continue
        edge_from = predecessors[low:high]
        candidate = latest[successors[low:high]] - offsets[low:high, None]
        starts = graph.group_starts(edge_from)
        sources = edge_from[starts]
        latest[sources] = np.fmin(latest[sources], np.fmin.reduceat(candidate, starts, axis=0))
    return latest


def _states(
    work: _Work, forecast: np.ndarray, baseline: np.ndarray, today: float, rules: ScheduleRules
) -> np.ndarray:
    """The state of every task (see PRODUCT.md); at_risk's "little progress" is below little_progress_percent."""
    with np.errstate(invalid="ignore"):
        due_soon = (work.due - today) <= rules.at_risk_days
        little_progress = work.progress < rules.little_progress_percent
        return np.select(
            [
                np.isnan(work.due),
                work.done & (forecast > work.due),
                work.done,
                work.due < today,
                (forecast > baseline) | (due_soon & little_progress),
            ],
            [UNSCHEDULED, DONE_LATE, DONE_ON_TIME, LATE, AT_RISK],
            ON_TRACK,
        )


def _schedule_frame(
    tasks: pd.DataFrame,
    work: _Work,
    uids: pd.Index,
    forecast: np.ndarray,
    driver: np.ndarray,
    latest: np.ndarray,
    baseline: np.ndarray,
    reschedules: np.ndarray,
    state: np.ndarray,
) -> pd.DataFrame:
    float_days = latest - forecast[:, None]
    critical = np.nan_to_num(float_days, nan=np.inf) <= 0.0
    slip = forecast - baseline
    uid_values = uids.to_numpy(dtype=object)
    driver_uid = np.where(driver >= 0, uid_values[np.maximum(driver, 0)], None)
    return pd.DataFrame(
        {
            "task_uid": tasks["task_uid"].astype("str"),
            "project_uid": tasks["project_uid"].astype("str"),
            "baseline_due": as_dates(baseline),
            "due_date": as_dates(work.due),
            "forecast_finish": as_dates(forecast),
            "slip_days": _whole_days(slip),
            "state": pd.Series(state, dtype="str"),
            "on_critical_path": critical[:, 0],
            "float_days": float_days[:, 0],
            "reschedule_count": pd.array(reschedules, dtype="Int64"),
            "driver_uid": pd.Series(driver_uid, dtype="str"),
            "portfolio_float_days": float_days[:, 1],
            "on_portfolio_critical_path": critical[:, 1],
        }
    )


def _whole_days(days: np.ndarray) -> Any:
    values = pd.array(np.where(np.isnan(days), 0, days).astype(np.int64), dtype="Int64")
    values[np.isnan(days)] = pd.NA
    return values


def _cycles_frame(cycles: list[graph.Cycle], uids: pd.Index) -> pd.DataFrame:
    """One row per task in a cycle: cycle_id (`cycle:` and the cycle's smallest task uid), task_uid and its
    position around the cycle from 1."""
    rows = [
        (f"cycle:{uids[cycle.nodes[0]]}", uids[node], position)
        for cycle in cycles
        for position, node in enumerate(cycle.nodes, start=1)
    ]
    frame = pd.DataFrame(rows, columns=["cycle_id", "task_uid", "position"])
    return frame.astype({"cycle_id": "str", "task_uid": "str", "position": "Int64"})
