"""How long the consolidated schedule takes, and how much memory, for 1,000,000 tasks and 1,500,000 links.

A synthetic portfolio (four tools, projects of 50 to 2,000 tasks, links mostly inside a project and some across
projects and tools, three quarters of the tasks with history) is built as the frames `warehouse.read` returns,
then `schedule.compute.compute_schedule` runs on it once. Wall and CPU time cover that call only; peak memory is
the process's peak resident set (inputs included), from resource.getrusage. Writes bench/results/schedule.json.
Run: `.venv/bin/python bench/bench_schedule.py [--tasks N] [--links M] [--seed S]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from schedule.compute import ScheduleRules, compute_schedule

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
TARGET_SECONDS = 10.0
TARGET_PEAK_MB = 2048.0
AS_OF = date(2025, 6, 2)
EPOCH_DAY = np.datetime64("2025-01-01", "D")
TOOLS = ("eng-jira", "mkt-asana", "ops-trello", "pmo-planner")
CROSS_PROJECT_SHARE = 0.05


def synthetic_portfolio(
    task_count: int, link_count: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(tasks, dependencies, task_history) for a random acyclic portfolio, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    tasks = _tasks(rng, task_count)
    dependencies = _dependencies(rng, tasks, link_count)
    history = _history(rng, tasks)
    return tasks, dependencies, history


def _tasks(rng: np.random.Generator, count: int) -> pd.DataFrame:
    sizes = rng.integers(50, 2000, size=count // 50 + 1)
    project = np.repeat(np.arange(sizes.size), sizes)[:count]
    tool = np.asarray(TOOLS)[project % len(TOOLS)]
    connection_of_task = pd.Series(tool)
    uids = connection_of_task + ":" + pd.Series(np.arange(count) + 10_000).astype("str")
    start = EPOCH_DAY + rng.integers(0, 300, size=count)
    span = rng.integers(0, 20, size=count)
    due = start + span
    no_due = rng.random(count) < 0.05
    status = rng.choice(["todo", "in_progress", "done", "cancelled"], p=[0.45, 0.2, 0.33, 0.02], size=count)
    done = status == "done"
    completed = pd.to_datetime(due + rng.integers(-3, 6, size=count)).tz_localize("UTC") + pd.Timedelta(
        hours=15
    )
    return pd.DataFrame(
        {
            "task_uid": uids.astype("str"),
            "project_uid": pd.Series(tool).str.cat(pd.Series(project).astype("str"), sep=":p").astype("str"),
            "status_category": pd.Series(status, dtype="str"),
            "is_milestone": pd.array(rng.random(count) < 0.03, dtype="boolean"),
            "start_date": pd.Series(start.astype("datetime64[us]")).where(rng.random(count) < 0.7),
            "due_date": pd.Series(due.astype("datetime64[us]")).mask(no_due),
            "completed_at": pd.Series(completed).where(done),
            "estimate_hours": pd.Series(rng.integers(1, 80, size=count).astype(float)).where(
                rng.random(count) < 0.5
            ),
            "percent_complete": pd.Series(rng.integers(0, 101, size=count).astype(float)),
            "deleted_at": pd.Series(pd.NaT, index=range(count), dtype="datetime64[us, UTC]"),
        }
    )


def _dependencies(rng: np.random.Generator, tasks: pd.DataFrame, count: int) -> pd.DataFrame:
    """Links from an earlier task to a later one (so the graph is acyclic): mostly up to 30 tasks back in the
    same project, some from anywhere earlier in the portfolio (another project, often another tool)."""
    task_count = len(tasks)
    project_start = _project_starts(tasks["project_uid"])
    successor = rng.integers(1, task_count, size=count)
    nearby = np.maximum(successor - rng.integers(1, 30, size=count), project_start[successor])
    anywhere = (rng.random(count) * successor).astype(np.int64)
    predecessor = np.where(rng.random(count) < CROSS_PROJECT_SHARE, anywhere, nearby)
    linked = predecessor < successor  # a project's first task has no earlier task in its project
    predecessor, successor = predecessor[linked], successor[linked]
    uids = tasks["task_uid"].to_numpy(dtype=object)
    kinds = ["blocks", "finish_to_start", "start_to_start", "finish_to_finish"]
    kind = rng.choice(kinds, p=[0.5, 0.4, 0.05, 0.05], size=predecessor.size)
    lag = pd.Series(rng.integers(0, 3, size=predecessor.size).astype(float))
    return pd.DataFrame(
        {
            "predecessor_uid": pd.Series(uids[predecessor], dtype="str"),
            "successor_uid": pd.Series(uids[successor], dtype="str"),
            "kind": pd.Series(kind, dtype="str"),
            "lag_days": lag.where(rng.random(predecessor.size) < 0.1),
        }
    ).drop_duplicates(["predecessor_uid", "successor_uid", "kind"], ignore_index=True)


def _project_starts(project_uids: pd.Series) -> np.ndarray:
    """For each task, the position of its project's first task (tasks of a project are contiguous)."""
    codes = pd.factorize(project_uids)[0]
    first = np.flatnonzero(np.append(True, codes[1:] != codes[:-1]))
    return first[np.cumsum(np.append(True, codes[1:] != codes[:-1])) - 1]


def _history(rng: np.random.Generator, tasks: pd.DataFrame) -> pd.DataFrame:
    """One to four versions for three tasks in four, the due date moving between them."""
    covered = np.flatnonzero(rng.random(len(tasks)) < 0.75)
    versions = rng.integers(1, 5, size=covered.size)
    task = np.repeat(covered, versions)
    step = np.arange(task.size) - np.repeat(np.cumsum(versions) - versions, versions)
    due = tasks["due_date"].to_numpy()[task] - (versions.repeat(versions) - 1 - step) * np.timedelta64(2, "D")
    valid_from = pd.Timestamp("2024-10-01", tz="UTC") + pd.to_timedelta(step * 7, unit="D")
    return pd.DataFrame(
        {
            "task_uid": tasks["task_uid"].iloc[task].reset_index(drop=True),
            "valid_from": valid_from,
            "due_date": pd.Series(due),
            "source": pd.Series(np.where(step == 0, "tool_history", "observed"), dtype="str"),
        }
    )


def _peak_mb() -> float:
    """The process's peak resident memory in MB (ru_maxrss is in kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--links", type=int, default=1_500_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    built = time.perf_counter()
    tasks, dependencies, history = synthetic_portfolio(args.tasks, args.links, args.seed)
    print(
        f"built {len(tasks):,} tasks, {len(dependencies):,} links, {len(history):,} history rows "
        f"in {time.perf_counter() - built:.1f} s"
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    frames = compute_schedule(tasks, dependencies, history, AS_OF, ScheduleRules())
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mb = _peak_mb()
    late = int((frames.schedule["state"] == "late").sum())
    critical = int(frames.schedule["on_critical_path"].sum())
    print(
        f"schedule of {len(frames.schedule):,} tasks, {frames.links:,} links used, {late:,} late, "
        f"{critical:,} on a project's critical path, {len(frames.project_health):,} projects"
    )
    results = [
        {
            "name": "schedule_wall_time",
            "value": round(seconds, 3),
            "unit": "s",
            "target": TARGET_SECONDS,
            "met": seconds < TARGET_SECONDS,
        },
        {
            # Wall time suffers when other processes share the machine; CPU time shows the work itself.
            "name": "schedule_cpu_time",
            "value": round(cpu_seconds, 3),
            "unit": "s",
            "target": TARGET_SECONDS,
            "met": cpu_seconds < TARGET_SECONDS,
        },
        {
            "name": "schedule_peak_memory",
            "value": round(peak_mb, 1),
            "unit": "MB",
            "target": TARGET_PEAK_MB,
            "met": peak_mb < TARGET_PEAK_MB,
        },
    ]
    for result in results:
        print(
            f"{result['name']}: {result['value']:,} {result['unit']} "
            f"({result['value'] / result['target']:.0%} of the {result['target']:,} {result['unit']} target)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "schedule.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
