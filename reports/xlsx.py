"""The portfolio as an Excel workbook: a Summary sheet and one sheet per project (`write_workbook`).

Written with openpyxl in write-only mode (rows streamed to disk, no cell objects kept), so 200,000 tasks fit.
Dates are typed date cells, headers are frozen and filtered. Text from the tools is written as text only: a title
starting with `=` stays a string and never becomes a formula, and characters Excel cannot hold are dropped.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from reports.data import ReportData

SUMMARY = "Summary"
SHEET_NAME_LIMIT = 31
FORBIDDEN_IN_SHEET_NAMES = re.compile(r"[\[\]:*?/\\]")
RESERVED_SHEET_NAMES = {"history", SUMMARY.lower()}
PROJECT_COLUMNS = (
    ("Project", 40),
    ("Tool", 11),
    ("Health", 9),
    ("Tasks", 8),
    ("Done", 8),
    ("Late", 8),
    ("At risk", 8),
    ("% complete", 11),
    ("Baseline finish", 15),
    ("Forecast finish", 15),
    ("Slip (days)", 11),
    ("Sheet", 24),
    ("Link", 40),
)
TASK_COLUMNS = (
    ("Key", 14),
    ("Title", 50),
    ("Tool", 11),
    ("Status", 16),
    ("Due", 12),
    ("Baseline", 12),
    ("Forecast", 12),
    ("Slip (days)", 11),
    ("State", 13),
    ("Critical", 9),
    ("Link", 45),
)


def write_workbook(data: ReportData, out_path: Path) -> Path:
    """Write the workbook of `data` to `out_path` and return the path."""
    book = Workbook(write_only=True)
    names = sheet_names(list(data.projects["name"]))
    summary = book.create_sheet(SUMMARY)
    _write_summary(summary, data, names)
    tasks_by_project = {uid: group for uid, group in data.tasks.groupby("project_uid", sort=False)}
    for project, name in zip(data.projects.itertuples(index=False), names):
        sheet = book.create_sheet(name)
        _write_project(sheet, tasks_by_project.get(project.project_uid, data.tasks.iloc[0:0]))
    book.save(out_path)
    return out_path


def sheet_names(project_names: list[str]) -> list[str]:
    """A valid, unique Excel sheet name for each project: at most 31 characters, none of []:*?/\\, not starting or
    ending with an apostrophe, unique ignoring case, and never 'Summary' or the reserved 'History'."""
    taken = {SUMMARY.lower()}
    names = []
    for raw in project_names:
        base = (
            FORBIDDEN_IN_SHEET_NAMES.sub("_", ILLEGAL_CHARACTERS_RE.sub("", str(raw or "")))
            .strip()
            .strip("'")
        )
        base = base or "Project"
        if base.lower() in RESERVED_SHEET_NAMES:
            base = f"{base} project"
        name, number = base[:SHEET_NAME_LIMIT].strip(), 1
        while name.lower() in taken:
            number += 1
            suffix = f" ({number})"
            name = base[: SHEET_NAME_LIMIT - len(suffix)].rstrip().rstrip("'") + suffix
        taken.add(name.lower())
        names.append(name)
    return names


def _prepare(sheet: Worksheet, columns: tuple[tuple[str, int], ...], rows: int) -> None:
    """Widths, frozen header and autofilter: write-only sheets take these before any row is written."""
    for index, (_, width) in enumerate(columns, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{max(rows, 1) + 1}"


def _header(sheet: Worksheet, columns: tuple[tuple[str, int], ...]) -> None:
    cells = []
    for title, _ in columns:
        cell = WriteOnlyCell(sheet, value=title)
        cell.font = Font(bold=True)
        cells.append(cell)
    sheet.append(cells)


def _write_summary(sheet: Worksheet, data: ReportData, names: list[str]) -> None:
    projects = data.projects
    _prepare(sheet, PROJECT_COLUMNS, len(projects))
    _header(sheet, PROJECT_COLUMNS)
    for project, name in zip(projects.itertuples(index=False), names):
        sheet.append(
            _row(
                sheet,
                (
                    project.name,
                    project.tool,
                    project.health,
                    project.tasks_total,
                    project.tasks_done,
                    project.tasks_late,
                    project.tasks_at_risk,
                    project.percent_complete,
                    project.baseline_finish,
                    project.forecast_finish,
                    project.slip_days,
                    name,
                    project.url,
                ),
            )
        )
    sheet.append([])
    counts = projects["health"].value_counts()
    figures = (
        ("As of", data.as_of),
        ("Projects", len(projects)),
        ("Green", int(counts.get("green", 0))),
        ("Amber", int(counts.get("amber", 0))),
        ("Red", int(counts.get("red", 0))),
        ("Tasks", len(data.tasks)),
        ("Late tasks", int((data.tasks["state"] == "late").sum())),
        ("At-risk tasks", int((data.tasks["state"] == "at_risk").sum())),
        ("Critical tasks", int(data.tasks["on_critical_path"].sum())),
        ("Dependency cycles", int(data.cycles["cycle_id"].nunique())),
    )
    for label, figure in figures:
        sheet.append(_row(sheet, (label, figure)))


def _write_project(sheet: Worksheet, tasks: pd.DataFrame) -> None:
    _prepare(sheet, TASK_COLUMNS, len(tasks))
    _header(sheet, TASK_COLUMNS)
    columns = [
        tasks["key"],
        tasks["title"],
        tasks["tool"],
        tasks["status"],
        tasks["due_date"],
        tasks["baseline_due"],
        tasks["forecast_finish"],
        tasks["slip_days"],
        tasks["state"],
        tasks["on_critical_path"],
        tasks["url"],
    ]
    for values in zip(*(column.tolist() for column in columns)):
        sheet.append(_row(sheet, values))


def _row(sheet: Worksheet, values: tuple[Any, ...]) -> list[Any]:
    return [_cell(sheet, value) for value in values]


def _cell(sheet: Worksheet, value: Any) -> Any:
    """A value as Excel should store it: dates as date cells, missing as empty, text never as a formula."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()  # openpyxl types a date value as a date cell with a yyyy-mm-dd format
    if isinstance(value, str):
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
        if value.startswith("="):
            cell = WriteOnlyCell(sheet, value=value)
            cell.data_type = "s"  # user text, not a formula
            return cell
    return value
