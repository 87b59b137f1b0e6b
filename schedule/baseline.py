"""Baselines and reschedule counts from the type-2 task history, one vectorized pass over its rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from schedule.days import day_numbers, instants

ORIGINAL = "original"
FIRST_SEEN = "first_seen"
BASELINE_MODES = (ORIGINAL, FIRST_SEEN)


class Versions:
    """History rows of known tasks as arrays, ordered by task then valid_from: task position, due date as a day
    number (NaN for none), and whether pmsync observed it (rather than reading it from the tool's history)."""

    def __init__(self, task: np.ndarray, due: np.ndarray, observed: np.ndarray) -> None:
        self.task, self.due, self.observed = task, due, observed


def ordered_versions(task_positions: np.ndarray, history: pd.DataFrame) -> Versions:
    """The history rows whose task is scheduled (`task_positions`: each row's task position, -1 for others),
    ordered by task then valid_from."""
    known = task_positions >= 0
    if not known.any():
        return Versions(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=bool))
    valid_from = instants(history["valid_from"])[known]
    task = task_positions[known]
    order = np.lexsort((valid_from, task))
    due = day_numbers(history["due_date"])[known][order]
    source = history["source"] if "source" in history.columns else pd.Series("observed", index=history.index)
    observed = source.eq("observed").fillna(False).to_numpy(dtype=bool)[known][order]
    return Versions(task[order], due, observed)


def baseline_days(versions: Versions, current_due: np.ndarray, mode: str = ORIGINAL) -> np.ndarray:
    """Each task's baseline due date as a day number (NaN when it never had a due date).

    `original`: the due date of the earliest version that has one, whatever its source (the tool's own change
    log, or what pmsync observed). `first_seen`: the earliest version pmsync observed with a due date. A task the
    history does not cover falls back to its current due date.
    """
    if mode not in BASELINE_MODES:
        raise ValueError(f"baseline must be one of {BASELINE_MODES}, not {mode!r}")
    usable = ~np.isnan(versions.due)
    if mode == FIRST_SEEN:
        usable &= versions.observed
    task, due = versions.task[usable], versions.due[usable]
    first_tasks, first_rows = np.unique(task, return_index=True)
    baseline = current_due.astype(np.float64, copy=True)
    baseline[first_tasks] = due[first_rows]
    return baseline


def reschedule_counts(versions: Versions, task_count: int) -> np.ndarray:
    """How many times each task's due date changed between consecutive versions that both had one."""
    same_task = versions.task[1:] == versions.task[:-1]
    both_dated = ~np.isnan(versions.due[1:]) & ~np.isnan(versions.due[:-1])
    moved = same_task & both_dated & (versions.due[1:] != versions.due[:-1])
    return np.bincount(versions.task[1:][moved], minlength=task_count).astype(np.int64)
