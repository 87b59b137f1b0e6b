"""Portfolio outputs (`pmsync report`): a self-contained HTML dashboard, an Excel workbook and MS Project XML of
the consolidated schedule, written locally and uploaded to a Graph drive folder where the configuration names one.

`build` writes one format; `write_reports` writes all three into the configured reports folder (what `make demo`
and the Dagster asset call). Reports read the warehouse only; nothing of the configuration's auth reaches them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from pmsync.errors import PmsyncError
from reports.data import ReportData, load_report_data

if TYPE_CHECKING:
    from pmsync.config import Config
    from warehouse import Warehouse

FORMATS = ("html", "xlsx", "mspdi")
FILE_NAMES = {"html": "pmsync-dashboard.html", "xlsx": "pmsync-schedule.xlsx", "mspdi": "pmsync-schedule.xml"}

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "ReportData",
    "build",
    "load_report_data",
    "report_file",
    "write_format",
    "write_reports",
]


def _writer(fmt: str) -> Callable[[ReportData, Path], Path]:
    if fmt == "html":
        from reports.html import write_dashboard

        return write_dashboard
    if fmt == "xlsx":
        from reports.xlsx import write_workbook

        return write_workbook
    if fmt == "mspdi":
        from reports.mspdi import write_mspdi

        return write_mspdi
    raise PmsyncError(f"--format {fmt!r} is not a report format; use one of {', '.join(FORMATS)}.")


def write_format(data: ReportData, fmt: str, out_path: Path) -> Path:
    """Write `data` in one format to `out_path` (its folder is created) and return the path."""
    writer = _writer(fmt)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return writer(data, out_path)


def build(
    warehouse: Warehouse, config: Config | None, fmt: str, out_path: Path, as_of: date | None = None
) -> Path:
    """Write the report `fmt` (html, xlsx or mspdi) of the warehouse's schedule to `out_path` and return it.

    With `as_of` other than the stored schedule's date, the schedule is computed afresh for that date (not
    stored). Does not upload; `upload_reports` does.
    """
    _writer(fmt)  # an unknown format fails before any reading
    return write_format(load_report_data(warehouse, config, as_of), fmt, out_path)


def write_reports(config: Config, as_of: date | None = None, out_dir: Path | None = None) -> list[Path]:
    """Write all three reports into `out_dir` (default: the configuration's reports.out_dir), upload them to every
    configured drive folder, and return the files written."""
    from reports.upload import upload_reports
    from warehouse import open_warehouse

    folder = Path(out_dir or config.reports.out_dir)
    with open_warehouse(config.warehouse_url) as warehouse:
        data = load_report_data(warehouse, config, as_of)
    files = [write_format(data, fmt, folder / FILE_NAMES[fmt]) for fmt in FORMATS]
    upload_reports(config, files)
    return files


def report_file(config: Config, fmt: str, out_path: Path, as_of: date | None = None) -> tuple[Path, int]:
    """`pmsync report`: write one format from the configured warehouse to `out_path`, upload it to every
    configured drive folder, and return the path and how many uploads were made."""
    from reports.upload import upload_reports
    from warehouse import open_warehouse

    _writer(fmt)
    with open_warehouse(config.warehouse_url) as warehouse:
        written = build(warehouse, config, fmt, out_path, as_of)
    return written, len(upload_reports(config, [written]))
