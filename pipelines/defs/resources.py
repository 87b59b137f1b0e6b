"""`PmsyncResource`: the one resource of the code location, a thin shell over the functions the CLI calls."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from pipelines.location import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    REPORTS_ENTRY,
    WRITEBACK_ENTRY,
    engine_function,
    is_duckdb,
    location_config,
)

if TYPE_CHECKING:
    from pmsync.config import Config
    from pmsync.sync import SyncResult
    from schedule.compute import ScheduleResult
    from warehouse import Warehouse


@dataclass(frozen=True)
class Ingested:
    """One connection's sync, with the cursor it left and how many live tasks the connection now has."""

    result: SyncResult
    cursor: str | None
    live_tasks: int


@dataclass(frozen=True)
class ChangeProbe:
    """What a sensor learns from a connector: the cursor it asked about, and whether changes may be past it."""

    cursor: str | None
    changed: bool


@dataclass(frozen=True)
class LinksResolved:
    """The cross-tool link pass: config links written, URL links resolved, links left dangling."""

    tasks: int
    dependencies: int
    config_links: int
    url_links_resolved: int
    dangling: int


@dataclass(frozen=True)
class LedgerSummary:
    """The write-back ledger of one connection: how many targets are in each status."""

    by_status: dict[str, int]

    @property
    def targets(self) -> int:
        return sum(self.by_status.values())


class PmsyncResource(dg.ConfigurableResource):
    """The pmsync configuration a run works on, and the engine's operations on it.

    Every method opens what it needs (the warehouse, a connector) and closes it before returning, so that a
    DuckDB warehouse is held only while a step writes to it.
    """

    config_path: str

    def load(self) -> Config:
        """The configuration file, validated (secrets come from the run's environment)."""
        from pmsync.config import load_config

        return load_config(Path(self.config_path))

    @contextmanager
    def warehouse(self, config: Config | None = None) -> Iterator[Warehouse]:
        """The configured warehouse, migrated, closed on exit."""
        from pmsync.run import open_config_warehouse

        with open_config_warehouse(config or self.load()) as warehouse:
            yield warehouse

    def sync(self, connection_name: str, *, full: bool = False) -> Ingested:
        """Pull one connection into the warehouse (incrementally from its cursor unless `full`)."""
        from connectors.registry import build_connector
        from mappings.mapping import load_mapping
        from pmsync.run import mapping_overrides
        from pmsync.sync import PULL_CURSOR, sync_connection

        config = self.load()
        connection = config.connection(connection_name)
        connector = build_connector(connection)
        try:
            mapping = load_mapping(connection.tool).with_overrides(mapping_overrides(connection))
            with self.warehouse(config) as warehouse:
                result = sync_connection(
                    connector, mapping, warehouse, full=full, timezone=config.timezone,
                    commit_every_records=config.sync.commit_every_records,
                    commit_every_seconds=config.sync.commit_every_seconds,
                )
                cursor = warehouse.get_cursor(connection_name, PULL_CURSOR)
                live = warehouse.count("tasks", "connection = %s AND deleted_at IS NULL", [connection_name])
        finally:
            connector.close()
        return Ingested(result=result, cursor=cursor, live_tasks=live)

    def resolve_links(self) -> LinksResolved:
        """Write the configuration's links and resolve URL links now that every connection has loaded."""
        from pmsync.links import dangling_links, replace_config_links, resolve_url_links

        config = self.load()
        with self.warehouse(config) as warehouse:
            config_links = replace_config_links(warehouse, config.links)
            resolved = resolve_url_links(warehouse)
            return LinksResolved(
                tasks=warehouse.count("tasks", "deleted_at IS NULL"),
                dependencies=warehouse.count("dependencies"),
                config_links=config_links,
                url_links_resolved=resolved,
                dangling=len(dangling_links(warehouse)),
            )

    def compute_schedule(self, as_of: date | None = None) -> ScheduleResult:
        """Compute and store the schedule and project health (as of today in the configured zone by default)."""
        from schedule.compute import compute_and_store

        config = self.load()
        with self.warehouse(config) as warehouse:
            return compute_and_store(warehouse, config, as_of=as_of)

    def probe_changes(self, connection_name: str) -> ChangeProbe:
        """The connector's cheap probe against the stored cursor: may the tool hold changes past it?"""
        import orjson

        from connectors.registry import build_connector
        from pmsync.sync import PULL_CURSOR

        config = self.load()
        with self.warehouse(config) as warehouse:
            stored = warehouse.get_cursor(connection_name, PULL_CURSOR)
        connector = build_connector(config.connection(connection_name))
        try:
            changed = connector.has_changes(None if stored is None else orjson.loads(stored))
        finally:
            connector.close()
        return ChangeProbe(cursor=stored, changed=changed)

    def push(self, connection_name: str) -> LedgerSummary:
        """Write the schedule back into one connection's tool (`pmsync push --connection`), then read the ledger."""
        push = engine_function(WRITEBACK_ENTRY)
        if push is None:
            raise RuntimeError(f"write-back is not available: {'.'.join(WRITEBACK_ENTRY)} does not exist")
        config = self.load()
        push(config, [connection_name])
        with self.warehouse(config) as warehouse:
            ledger = warehouse.query(
                "SELECT status, count(*) AS targets FROM writeback_ledger WHERE connection = %s GROUP BY status",
                [connection_name],
            )
        return LedgerSummary(by_status={str(row.status): int(row.targets) for row in ledger.itertuples()})

    def write_reports(self) -> list[Path]:
        """Write the portfolio outputs (`pmsync report`) into the configured reports folder; the files there."""
        write = engine_function(REPORTS_ENTRY)
        if write is None:
            raise RuntimeError(f"reports are not available: {'.'.join(REPORTS_ENTRY)} does not exist")
        config = self.load()
        write(config)
        out_dir = Path(config.reports.out_dir)
        return sorted(path for path in out_dir.glob("*") if path.is_file())

    def record_failed_run(
        self, run_id: str, connections: list[str], error: str, started_at: datetime | None = None
    ) -> None:
        """Record a failed Dagster run in `sync_runs` for these connections, where `pmsync status` shows it."""
        from pmsync.config import redact

        config = self.load()
        message = redact(error, config)
        with self.warehouse(config) as warehouse:
            for connection in connections:
                warehouse.start_run(connection, "incremental", run_id=run_id, started_at=started_at)
                warehouse.finish_run(run_id, connection, status="failed", error=message)

    def redact(self, text: str) -> str:
        """`text` without any secret of the configuration (as is when the configuration itself fails to load,
        whose errors never quote a secret)."""
        from pmsync.config import redact
        from pmsync.errors import ConfigError

        try:
            return redact(text, self.load())
        except ConfigError:
            return text


def pmsync_resource() -> PmsyncResource:
    """The resource for this deployment: the configuration named by $PMSYNC_CONFIG, else ./pmsync.yaml."""
    if os.environ.get(CONFIG_ENV):
        return PmsyncResource(config_path=dg.EnvVar(CONFIG_ENV))
    return PmsyncResource(config_path=DEFAULT_CONFIG)


@dg.definitions
def defs() -> dg.Definitions:
    # DuckDB takes one writer: steps of a run go one after another in the run's own process.
    executor = dg.in_process_executor if is_duckdb(location_config()) else dg.multiprocess_executor
    return dg.Definitions(resources={"pmsync": pmsync_resource()}, executor=executor)
