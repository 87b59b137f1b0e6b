"""`pmsync sync`: every configured connection pulled concurrently, then links resolved, then the schedule.

One connection failing does not stop the others; the result says which failed and why. DuckDB takes one writer
at a time, so its writes are serialized by a lock while pulls still overlap; PostgreSQL takes them in parallel.
The lock is handed over in the order the connections asked for it (`TurnLock`), so a small connection's write
waits for at most one write of each other connection, not for a big one's whole backlog.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from connectors.registry import build_connector
from mappings.mapping import load_mapping
from pmsync.config import Config, redact
from pmsync.errors import ConfigError, PmsyncError
from pmsync.links import replace_config_links, resolve_url_links
from pmsync.sync import Progress, SyncResult, TurnLock, sync_connection
from warehouse import open_warehouse
from warehouse.base import Warehouse

log = logging.getLogger("pmsync.run")


@dataclass
class SyncOutcome:
    """The results of one `pmsync sync`: per connection, and what failed."""

    results: list[SyncResult] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    links_resolved: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


def open_config_warehouse(config: Config, *, migrate: bool = True) -> Warehouse:
    """The configured warehouse, migrated (unless `migrate` is False: this process has just migrated it)."""
    return open_warehouse(config.warehouse_url, migrate=migrate)


def selected_connections(config: Config, names: list[str] | None) -> list:
    """The configured connections to work on (all when `names` is empty); ConfigError for an unknown name."""
    if not names:
        return list(config.connections)
    known = {c.name: c for c in config.connections}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"--connection {unknown[0]!r} is not a configured connection; configured: {', '.join(known)}."
        )
    return [known[n] for n in names]


def run_sync(
    config: Config,
    names: list[str] | None = None,
    *,
    full: bool = False,
    progress: Progress | None = None,
    on_done: Callable[[SyncResult], None] | None = None,
) -> SyncOutcome:
    """Pull the selected connections into the warehouse, concurrently, then resolve cross-tool links."""
    connections = selected_connections(config, names)
    with open_config_warehouse(config) as warehouse:
        # Held open for the whole run: it was migrated once here, each connection's own session needs no migration,
        # and DuckDB keeps the file open between them (no re-reading it, no checkpoint as the last session closes).
        return _run_connections(config, connections, warehouse, full, progress, on_done)


def _run_connections(config: Config, connections: list, warehouse: Warehouse, full: bool, progress: Progress | None,
                     on_done: Callable[[SyncResult], None] | None) -> SyncOutcome:
    outcome = SyncOutcome()
    parallel_writes = warehouse.dialect == "postgresql"
    lock = None if parallel_writes else TurnLock()
    shared_lock = lock or threading.Lock()

    def one(connection) -> SyncResult | None:
        own_lock = shared_lock if lock is not None else threading.Lock()
        try:
            connector = build_connector(connection, config.timezone)
        except PmsyncError as exc:
            outcome.failures[connection.name] = redact(str(exc), config)
            return None
        try:
            with open_config_warehouse(config, migrate=False) as session:
                result = sync_connection(
                    connector, load_mapping(connection.tool).with_overrides(mapping_overrides(connection)), session,
                    full=full, timezone=config.timezone, progress=progress, write_lock=own_lock,
                    commit_every_records=config.sync.commit_every_records,
                    commit_every_seconds=config.sync.commit_every_seconds,
                )
            if on_done:
                on_done(result)
            return result
        except Exception as exc:  # one connection failing must not stop the others
            message = str(exc) if isinstance(exc, PmsyncError) else f"{type(exc).__name__}: {exc}"
            outcome.failures[connection.name] = redact(message, config)
            log.info("sync of %s failed: %s", connection.name, outcome.failures[connection.name])
            return None
        finally:
            connector.close()

    workers = max(1, min(len(connections), config.sync.concurrency or len(connections)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pmsync-sync") as pool:
        for result in pool.map(one, connections):
            if result is not None:
                outcome.results.append(result)
    replace_config_links(warehouse, config.links)
    outcome.links_resolved = resolve_url_links(warehouse)
    return outcome


def mapping_overrides(connection) -> dict[str, str]:
    """Mapping overrides a connection asks for (a Jira site's own custom field ids)."""
    custom = getattr(connection, "custom_fields", None) or {}
    known = {"start_date", "story_points", "estimate_hours", "due_date"}
    return {name: (value if "." in value else f"fields.{value}") for name, value in custom.items() if name in known}
