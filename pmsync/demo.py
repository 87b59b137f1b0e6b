"""`pmsync demo`: the whole job on the sandbox, through Dagster, in one command.

It starts the four emulated tools, writes a configuration for them in a demo folder, runs the code location's
whole asset graph in process (pull every connection, normalize, load, schedule, checks, write-back, reports),
then prints the portfolio and where the warehouse and reports are. Nothing outside the demo folder is touched.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from datetime import date
from pathlib import Path

import yaml
from rich.console import Console

from pmsync.errors import PmsyncError

console = Console(width=None if sys.stdout.isatty() else 160)


def run_demo(size: str, seed: int, folder: Path, as_of: date | None = None) -> int:
    """Run the demo; returns the exit code (0 when every step of the Dagster run succeeded)."""
    from sandbox.server import Sandbox

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("pmsync.duckdb", "pmsync.duckdb.wal"):
        (folder / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    console.print(f"[bold]pmsync demo[/]: starting the sandbox ({size} portfolio, seed {seed})")
    with Sandbox(size=size, seed=seed, as_of=as_of, rate_limits=True) as box:
        config_path = write_demo_config(box, folder)
        p = box.portfolio
        assert p is not None
        console.print(f"  {p.tasks.size:,} tasks in {len(p.projects)} projects across Jira, Asana, Trello, "
                      f"Planner and MS Project files; configuration at {config_path}")
        ok = run_pipeline(config_path, folder)
    from pmsync.commands import status_command
    from pmsync.config import load_config

    config = load_config(config_path)
    status_command(config, None)
    reports = sorted(config.reports.out_dir.glob("*")) if config.reports.out_dir.exists() else []
    console.print(f"warehouse: {config.duckdb_path}")
    for report in reports:
        console.print(f"report:    {report}")
    console.print(f"demo {'finished' if ok else 'FAILED'} in {time.perf_counter() - started:.0f}s; "
                  f"look around with `pmsync status --config {config_path}` or `pmsync ui --config {config_path}`")
    return 0 if ok else 1


def write_demo_config(box, folder: Path) -> Path:
    """The sandbox's configuration, with the warehouse and reports in the demo folder, and a portfolio view on a
    Trello board of its own (created as a coordinator would, through Trello's API)."""
    import httpx

    config = box.config(warehouse="duckdb:///pmsync.duckdb")
    config["reports"] = {"out_dir": "reports"}
    trello = next(c for c in config["connections"] if c["tool"] == "trello")
    board = httpx.post(f"{trello['base_url']}/boards", params={**trello["auth"], "name": "PMO portfolio"}, timeout=30)
    board.raise_for_status()
    config["writeback"] = {"portfolio": {"trello_board": {"connection": trello["name"], "id": board.json()["id"]}}}
    path = folder / "pmsync.yaml"
    header = "# Written by `pmsync demo` for the local sandbox; its credentials are the sandbox's own, not secrets.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, width=120))
    return path


def run_pipeline(config_path: Path, folder: Path) -> bool:
    """Materialize the whole asset graph in process with an ephemeral Dagster instance; True on success."""
    os.environ["PMSYNC_CONFIG"] = str(config_path)
    logging.getLogger("dagster").setLevel(logging.WARNING)
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.location import SYNC_JOB

    definitions = defs()
    job = definitions.resolve_job_def(SYNC_JOB)
    console.print("running the Dagster job [bold]pmsync_sync[/]: ingest -> links -> schedule -> checks -> "
                  "write-back -> reports")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            console.print(f"[red]step failed:[/] {event.step_key}: {event.event_specific_data.error.message.strip()}",
                          soft_wrap=True)
    steps = [e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    console.print(f"Dagster run {'succeeded' if result.success else 'failed'}: {len(steps)} steps succeeded")
    if not result.success and not any(e.event_type_value == "STEP_FAILURE" for e in result.all_events):
        raise PmsyncError("the Dagster run failed before any step ran; run `pmsync ui` to see why.")
    return result.success
