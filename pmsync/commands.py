"""What the terminal shows for `pmsync sync` and `pmsync status`: progress while pulling, tables after."""
from __future__ import annotations

import logging
import sys
import threading
from datetime import date

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from pmsync.config import Config
from pmsync.run import open_config_warehouse, run_sync
from pmsync.sync import Progress, SyncResult

console = Console(width=None if sys.stdout.isatty() else 160)


def sync_command(config: Config, names: list[str], *, full: bool = False, as_of: date | None = None) -> int:
    """Run `pmsync sync` with a progress line per connection; returns the exit code (1 if any connection failed)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    lock = threading.Lock()
    with RichProgress(
        TextColumn("{task.description:<16}"), BarColumn(), TextColumn("{task.completed:>9,.0f} tasks"),
        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console, transient=False,
    ) as bar:
        rows = {c.name: bar.add_task(c.name, total=None, state="pulling")
                for c in config.connections if not names or c.name in names}

        def advance(connection: str, records: int) -> None:
            with lock:
                bar.advance(rows[connection], records)

        def done(result: SyncResult) -> None:
            with lock:
                bar.update(rows[result.connection], total=result.pulled or 1, completed=result.pulled or 1,
                           state=f"{result.mode}, {result.requests} requests, {result.deleted} deleted")

        outcome = run_sync(config, names, full=full, progress=Progress(advance=advance), on_done=done)
        for name, error in outcome.failures.items():
            if name in rows:
                bar.update(rows[name], state="[red]failed")
    for name, error in outcome.failures.items():
        console.print(f"[bold red]{name} failed:[/] {escape(error)}", highlight=False, soft_wrap=True)
    loaded = sum(r.loaded for r in outcome.results)
    quarantined = sum(r.quarantined for r in outcome.results)
    console.print(f"synced {len(outcome.results)} of {len(outcome.results) + len(outcome.failures)} connections: "
                  f"{loaded:,} tasks loaded, {quarantined:,} quarantined, "
                  f"{outcome.links_resolved:,} cross-tool links resolved", soft_wrap=True)
    _after_sync(config, as_of)
    return 0 if outcome.ok else 1


def _after_sync(config: Config, as_of: date | None) -> None:
    """Compute the schedule when the schedule module is available (it is its own step in Dagster too)."""
    try:
        from schedule.compute import compute_and_store
    except ImportError:
        return
    with open_config_warehouse(config) as warehouse:
        result = compute_and_store(warehouse, config, as_of=as_of)
    frames = result.frames
    late = int((frames.schedule["state"] == "late").sum())
    console.print(f"schedule as of {result.as_of}: {len(frames.schedule):,} tasks, {late:,} late, "
                  f"{int((frames.schedule['state'] == 'at_risk').sum()):,} at risk", soft_wrap=True)
    if result.cycle_count:
        console.print(f"[yellow]{result.cycle_count} dependency cycle(s) found and broken to compute the rest:[/]")
        for cycle_id, group in frames.cycles.groupby("cycle_id"):
            console.print("  " + " -> ".join(escape(uid) for uid in group.sort_values("position")["task_uid"]),
                          soft_wrap=True)


def status_command(config: Config, project: str | None) -> None:
    """Print the last sync of each connection and the portfolio (or one project's tasks)."""
    with open_config_warehouse(config) as warehouse:
        runs = warehouse.query(
            "SELECT connection, mode, status, started_at, finished_at, requests, records_loaded, records_deleted,"
            " records_quarantined, error FROM sync_runs r WHERE started_at = (SELECT max(started_at) FROM sync_runs"
            " WHERE connection = r.connection) ORDER BY connection"
        )
        console.print(_runs_table(runs, config))
        if project:
            console.print(_project_tasks(warehouse, project))
        else:
            console.print(_portfolio(warehouse))


def _runs_table(runs: pd.DataFrame, config: Config) -> Table:
    table = Table(title="Connections", title_justify="left")
    for column in ("connection", "last sync", "mode", "status", "requests", "loaded", "deleted", "quarantined"):
        table.add_column(column, justify="right" if column in ("requests", "loaded", "deleted", "quarantined") else "left")
    by_name = {row.connection: row for row in runs.itertuples()}
    for connection in config.connections:
        row = by_name.get(connection.name)
        if row is None:
            table.add_row(connection.name, "never", "", "", "", "", "", "")
            continue
        status = {"succeeded": "[green]ok", "failed": "[red]failed", "running": "[yellow]running"}.get(row.status, row.status)
        if row.status == "failed" and isinstance(row.error, str):
            status += f" [dim]{row.error[:60]}"
        table.add_row(connection.name, _when(row.finished_at or row.started_at), row.mode, status,
                      _int(row.requests), _int(row.records_loaded), _int(row.records_deleted), _int(row.records_quarantined))
    return table


def _portfolio(warehouse) -> Table:
    health = warehouse.query(
        "SELECT h.*, p.name, p.tool FROM project_health h LEFT JOIN projects p USING (project_uid)"
        " ORDER BY h.slip_days DESC NULLS LAST, h.project_uid"
    )
    table = Table(title="Portfolio, worst slippage first", title_justify="left")
    if health.empty:
        counts = warehouse.query(
            "SELECT t.project_uid, p.name, t.tool, count(*) AS tasks,"
            " sum(CASE WHEN t.status_category = 'done' THEN 1 ELSE 0 END) AS done"
            " FROM tasks t LEFT JOIN projects p USING (project_uid) WHERE t.deleted_at IS NULL"
            " GROUP BY 1, 2, 3 ORDER BY 1"
        )
        for column in ("project", "name", "tool", "tasks", "done"):
            table.add_column(column)
        for row in counts.itertuples():
            table.add_row(row.project_uid, row.name or "", row.tool, str(row.tasks), str(row.done))
        return table
    for column in ("project", "tool", "health", "tasks", "done", "late", "at risk", "forecast", "baseline", "slip"):
        table.add_column(column)
    colours = {"green": "green", "amber": "yellow", "red": "red"}
    for row in health.itertuples():
        table.add_row(
            row.name or row.project_uid, row.tool or "", f"[{colours.get(row.health, 'white')}]{row.health}",
            _int(row.tasks_total), _int(row.tasks_done), _int(row.tasks_late), _int(row.tasks_at_risk),
            _day(row.forecast_finish), _day(row.baseline_finish), _int(row.slip_days),
        )
    return table


def _project_tasks(warehouse, project_uid: str) -> Table:
    tasks = warehouse.query(
        "SELECT t.task_uid, t.key, t.title, t.tool, t.status_category, t.due_date, s.baseline_due, s.forecast_finish,"
        " s.slip_days, s.state, s.driver_uid, d.key AS driver_key, d.tool AS driver_tool, d.title AS driver_title"
        " FROM tasks t LEFT JOIN schedule s USING (task_uid) LEFT JOIN tasks d ON d.task_uid = s.driver_uid"
        " WHERE t.project_uid = %s AND t.deleted_at IS NULL ORDER BY s.slip_days DESC NULLS LAST, t.due_date",
        [project_uid],
    )
    table = Table(title=f"Tasks of {project_uid}", title_justify="left")
    for column in ("task", "title", "status", "due", "baseline", "forecast", "slip", "state", "held back by"):
        table.add_column(column)
    for row in tasks.itertuples():
        table.add_row(row.key or row.task_uid, escape((row.title or "")[:50]), row.status_category, _day(row.due_date),
                      _day(row.baseline_due), _day(row.forecast_finish), _int(row.slip_days), row.state or "",
                      _driver(row))
    return table


def _driver(row) -> str:
    """Which task sets this one's forecast, naming its tool when it is another tool's."""
    if not isinstance(row.driver_uid, str):
        return ""
    name = row.driver_key if isinstance(row.driver_key, str) else row.driver_uid
    title = escape((row.driver_title or "")[:30]) if isinstance(row.driver_title, str) else ""
    where = f" in {row.driver_tool}" if isinstance(row.driver_tool, str) and row.driver_tool != row.tool else ""
    return f"{escape(name)}{where} {title}".strip()


def _int(value) -> str:
    return "" if value is None or pd.isna(value) else f"{int(value):,}"


def _day(value) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d")


def _when(value) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")
