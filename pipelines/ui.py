"""`pmsync ui`: the Dagster UI (webserver and daemon, through `dagster dev`) on this code location."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pmsync.errors import ConfigError

# A DAGSTER_HOME pmsync creates gets this instance: runs queue, and DuckDB runs go one at a time.
INSTANCE_YAML = """\
# Written by `pmsync ui`. A DuckDB warehouse takes one writer, so runs tagged for it are queued one at a time.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    tag_concurrency_limits:
      - key: pmsync/warehouse
        value: duckdb
        limit: 1
telemetry:
  enabled: false
"""
STOP_GRACE_SECONDS = 20


def dagster_home(config_path: Path) -> Path:
    """$DAGSTER_HOME, else `.dagster/` beside the configuration (created with INSTANCE_YAML)."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = config_path.resolve().parent / ".dagster"
    home.mkdir(parents=True, exist_ok=True)
    instance = home / "dagster.yaml"
    if not instance.exists():
        instance.write_text(INSTANCE_YAML)
    return home


def ui_command(host: str = "127.0.0.1", port: int = 3000) -> list[str]:
    """The `dagster dev` command line serving this code location."""
    dagster = Path(sys.executable).parent / "dagster"
    return [str(dagster), "dev", "-m", "pipelines.definitions", "-h", host, "-p", str(port)]


def serve_ui(config_path: Path, host: str = "127.0.0.1", port: int = 3000) -> int:
    """Run the Dagster UI on the configuration at `config_path` until Ctrl-C; returns the exit code."""
    if not config_path.is_file():
        raise ConfigError(f"No configuration at {config_path}; run `pmsync init` or pass --config PATH.")
    env = {**os.environ, "PMSYNC_CONFIG": str(config_path.resolve()), "DAGSTER_HOME": str(dagster_home(config_path))}
    process = subprocess.Popen(ui_command(host, port), env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached `dagster dev` too; give it time to stop its webserver and daemon.
        try:
            return process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            return process.wait()
