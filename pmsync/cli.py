"""The `pmsync` command line. Each command is a thin shell over a function in the package that owns the work."""
from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from pmsync.errors import PmsyncError

app = typer.Typer(
    name="pmsync",
    help="One honest schedule across Jira, Asana, Trello and Microsoft Project.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

ConfigOption = typer.Option(
    None, "--config", "-c", help="Path to pmsync.yaml (default ./pmsync.yaml or $PMSYNC_CONFIG)."
)


@app.callback()
def _root() -> None:
    """One honest schedule across Jira, Asana, Trello and Microsoft Project."""


def config_path(given: Path | None) -> Path:
    """The configuration file the user means: --config, else $PMSYNC_CONFIG, else ./pmsync.yaml."""
    if given is not None:
        return given
    return Path(os.environ.get("PMSYNC_CONFIG", "pmsync.yaml"))


def _parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PmsyncError(f"{option} {value!r} is not a date; write it as YYYY-MM-DD, for example 2026-11-22.")


@app.command()
def sandbox(
    size: str = typer.Option("small", help="small (~300 tasks), medium (~5,000), large (~200,000), or a task count."),
    seed: int = typer.Option(7, help="Seed of the generated portfolio; the same seed gives the same data."),
    port: int = typer.Option(8700, help="First port: Jira, Asana, Trello and Graph listen on PORT..PORT+3 (0 = free ports)."),
    as_of: str | None = typer.Option(None, "--as-of", help="The sandbox's today (YYYY-MM-DD); default today."),
    write_config: Path | None = typer.Option(None, "--write-config", help="Write a ready pmsync.yaml here."),
    tls: bool = typer.Option(False, help="Serve https with a throwaway local CA (its bundle is named in the config)."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", help="Latency added to every request, in milliseconds."),
    no_rate_limits: bool = typer.Option(False, "--no-rate-limits", help="Turn the vendors' rate limits off."),
) -> None:
    """Serve the four emulated tools on 127.0.0.1 until stopped, with a ready configuration."""
    from sandbox.server import serve_forever

    serve_forever(
        size=size, seed=seed, port=port, as_of=_parse_date(as_of, "--as-of"), write_config=write_config,
        tls=tls, latency_ms=latency_ms, rate_limits=not no_rate_limits,
    )


@app.command()
def init(
    config: Path | None = ConfigOption,
    force: bool = typer.Option(False, "--force", help="Overwrite the file if it exists."),
) -> None:
    """Write a commented example pmsync.yaml."""
    from pmsync.config import write_example

    written = write_example(config_path(config), force=force)
    typer.echo(f"Wrote {written}; set the environment variables it names, then edit it to match your tools.")


def _load(config: Path | None):
    from pmsync.config import load_config

    return load_config(config_path(config))


@app.command()
def sync(
    connection: list[str] | None = typer.Option(None, "--connection", help="Only this connection (repeatable)."),
    full: bool = typer.Option(False, "--full", help="Pull everything again instead of what changed."),
    as_of: str | None = typer.Option(None, "--as-of", help="Compute the schedule as of this date (YYYY-MM-DD)."),
    config: Path | None = ConfigOption,
) -> None:
    """Pull, normalize and load every configured connection, then compute the schedule."""
    from pmsync.commands import sync_command

    code = sync_command(_load(config), connection or [], full=full, as_of=_parse_date(as_of, "--as-of"))
    raise typer.Exit(code)


@app.command()
def status(
    project: str | None = typer.Option(None, "--project", help="Show one project's tasks (its project_uid)."),
    config: Path | None = ConfigOption,
) -> None:
    """The portfolio (or one project) as a table: health, slippage, and the last sync of each connection."""
    from pmsync.commands import status_command

    status_command(_load(config), project)


@app.command()
def report(
    format: str = typer.Option(..., "--format", help="html (dashboard), xlsx (workbook) or mspdi (MS Project XML)."),
    out: Path = typer.Option(..., "--out", help="The file to write."),
    as_of: str | None = typer.Option(None, "--as-of", help="Report the schedule as of this date (YYYY-MM-DD)."),
    config: Path | None = ConfigOption,
) -> None:
    """The consolidated schedule as an HTML dashboard, an Excel workbook or MS Project XML."""
    from reports import report_file

    written, uploads = report_file(_load(config), format, out, as_of=_parse_date(as_of, "--as-of"))
    typer.echo(f"Wrote {written}" + (f"; uploaded to {uploads} drive folder(s)." if uploads else "."))


@app.command()
def demo(
    size: str = typer.Option("small", help="small (~300 tasks), medium (~5,000), large (~200,000), or a task count."),
    seed: int = typer.Option(7, help="Seed of the generated portfolio."),
    folder: Path = typer.Option(Path("demo"), help="Where the demo's configuration, warehouse and reports go."),
    as_of: str | None = typer.Option(None, "--as-of", help="The sandbox's today (YYYY-MM-DD); default today."),
) -> None:
    """The whole job on the local sandbox, through Dagster: pull, load, schedule, write back, report."""
    from pmsync.demo import run_demo

    raise typer.Exit(run_demo(size, seed, folder, _parse_date(as_of, "--as-of")))


@app.command()
def push(
    connection: list[str] | None = typer.Option(None, "--connection", help="Only this connection (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan of writes and change nothing."),
    setup: bool = typer.Option(False, "--setup", help="First create the custom fields and categories write-back uses."),
    config: Path | None = ConfigOption,
) -> None:
    """Write the schedule and slippage back into the tools; only what changed since the last push."""
    from pmsync.push_command import push_command

    raise typer.Exit(push_command(_load(config), connection or [], dry_run=dry_run, setup=setup))


def main() -> None:
    """Entry point: run the app and turn known failures into one sentence and a non-zero exit."""
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except PmsyncError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("stopped.")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code and message
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="Address the UI listens on."),
    port: int = typer.Option(3000, help="Port the UI listens on."),
    config: Path | None = ConfigOption,
) -> None:
    """The Dagster UI on this code location: runs, assets, schedules and sensors. Stops on Ctrl-C."""
    from pipelines.ui import serve_ui

    code = serve_ui(config_path(config), host=host, port=port)
    raise typer.Exit(0 if code in (0, 130, -2) else code)  # -2: dagster dev stopped by SIGINT (Ctrl-C)
