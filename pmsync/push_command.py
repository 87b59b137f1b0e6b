"""`pmsync push`: the plan printed (with --dry-run) or carried out, and what it did per connection."""
from __future__ import annotations

from typing import Any

import orjson
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pmsync.config import Config
from writeback.plan import changed_fields
from writeback.push import PushOutcome, run_push

NO_VALUE = "—"
LONGEST_VALUE = 80


def push_command(config: Config, names: list[str], *, dry_run: bool = False, setup: bool = False,
                 console: Console | None = None) -> int:
    """Run `pmsync push`; returns the exit code (1 when any write or connection failed, 0 otherwise)."""
    console = console or Console()
    outcome = run_push(config, names or None, dry_run=dry_run, setup=setup)
    if dry_run:
        print_plan(outcome.plan, console)
        return 0
    print_outcome(outcome, console)
    return 0 if outcome.ok else 1


def print_plan(plan: pd.DataFrame, console: Console) -> None:
    """The needed writes as a table: target | connection | task | field | old value | new value."""
    needed = plan[plan["needed"]] if len(plan) else plan
    if needed.empty:
        console.print("Nothing to write: every target already holds what pmsync computed.")
        return
    table = Table(title=f"{len(needed)} write(s) planned (dry run: nothing changed)")
    for column in ("target", "connection", "task", "field", "old value", "new value"):
        table.add_column(column, overflow="fold")
    for row in needed.itertuples(index=False):
        for field, old, new in changed_fields(row.previous, row.payload):
            table.add_row(row.target, row.connection, row.task_uid, field, _shown(old), _shown(new))
    console.print(table)


def print_outcome(outcome: PushOutcome, console: Console) -> None:
    """Per connection: writes made and failed, setup lines, the first errors, and connections not reached."""
    for name, result in outcome.results.items():
        for line in result.setup:
            console.print(f"{escape(name)}: {escape(line)}", highlight=False)
        line = f"{escape(name)}: {result.written} write(s) made, {result.failed} failed"
        if result.skipped:
            line += f", {result.skipped} not possible yet (tried again next push: see writeback_ledger.error)"
        console.print(line + ".", highlight=False)
        for error in result.errors:
            console.print(f"  [red]failed:[/] {escape(error)}", highlight=False, soft_wrap=True)
    for name, error in outcome.failures.items():
        console.print(f"[bold red]{escape(name)}:[/] {escape(error)}", highlight=False, soft_wrap=True)
    if outcome.failed_writes:
        console.print(f"{outcome.failed_writes} failed write(s) are in the ledger and will be retried next push.")


def _shown(value: Any) -> str:
    if value is None:
        return NO_VALUE
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return escape(text if len(text) <= LONGEST_VALUE else text[: LONGEST_VALUE - 1] + "…")
