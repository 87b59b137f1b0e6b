"""What the code location knows when it loads: which configuration it serves, and the names of its assets.

The configuration is read once per load, at definition time, to know the connections (one ingest asset, one
sensor and one write-back asset each). Runs read it again through `PmsyncResource`, so a run always works on
the file as it is when the run starts.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from pmsync.config import Config, load_config

log = logging.getLogger("pmsync.pipelines")

CONFIG_ENV = "PMSYNC_CONFIG"
DEFAULT_CONFIG = "pmsync.yaml"
# Runs on a DuckDB warehouse carry this tag so that the run queue lets only one of them run at a time.
WAREHOUSE_TAG = "pmsync/warehouse"

LINKS = dg.AssetKey("links")
SCHEDULE = dg.AssetKey("schedule")
PROJECT_HEALTH = dg.AssetKey("project_health")
REPORTS = dg.AssetKey("reports")
SYNC_JOB = "pmsync_sync"
# The engine functions the write-back and reports assets call: (module, function). The assets exist only when the
# function does, so the location loads while those parts of the engine are still being built.
WRITEBACK_ENTRY = ("writeback.push", "run_push")
REPORTS_ENTRY = ("reports", "write_reports")

_reported_missing: set[Path] = set()


def config_path() -> Path:
    """The configuration this code location serves: $PMSYNC_CONFIG, else ./pmsync.yaml."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def location_config() -> Config | None:
    """The configuration as it is now, or None (logged) when there is no file, so the location still loads."""
    path = config_path()
    if not path.is_file():
        if path in _reported_missing:
            return None
        _reported_missing.add(path)
        log.warning("no configuration at %s (set %s): loading definitions with no connections", path, CONFIG_ENV)
        return None
    return load_config(path)


def engine_function(entry: tuple[str, str]) -> Callable[..., Any] | None:
    """The engine function `entry` names, or None when its module (or the function in it) does not exist yet."""
    module_name, function_name = entry
    try:
        if importlib.util.find_spec(module_name) is None:
            return None
    except ModuleNotFoundError:  # the parent package is missing
        return None
    return getattr(importlib.import_module(module_name), function_name, None)


def ingest_key(connection: str) -> dg.AssetKey:
    """The asset of one connection's tasks, as pulled, normalized and loaded."""
    return dg.AssetKey(["ingest", connection])


def writeback_key(connection: str) -> dg.AssetKey:
    """The asset of what pmsync last wrote back into one connection's tool."""
    return dg.AssetKey(["writeback", connection])


def op_name(key: dg.AssetKey) -> str:
    """The step name Dagster gives an asset's op (asset keys may hold '-', op names may not)."""
    return key.to_python_identifier()


def is_duckdb(config: Config | None) -> bool:
    """Whether the warehouse is an embedded DuckDB file, which only one process may write at a time."""
    return config is None or config.warehouse_url.startswith("duckdb:")


def sync_job_tags(config: Config | None) -> dict[str, str]:
    """Run tags for every pmsync job: DuckDB runs are tagged so the run queue serializes them."""
    return {WAREHOUSE_TAG: "duckdb"} if is_duckdb(config) else {WAREHOUSE_TAG: "postgresql"}
