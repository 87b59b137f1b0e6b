"""`pmsync push`: the plan of writes carried out through the connectors, every connection concurrently.

Each needed write goes to `connector.write(Write(...))`; its result is recorded in the ledger right away
('written' with the hash and remote_ref, or 'failed' with the error), so a push stopped half-way loses nothing and
the next one retries what failed. One connection failing does not stop the others; within a connection, a run of
consecutive failures (the tool is down) stops the attempts and records the rest as failed, instead of waiting
out every retry of every write. DuckDB takes one writer at a time, so ledger writes are serialized by a lock as
in `pmsync/run.py`.

The plan is kept compact (`writeback.plan.make_plan`: payloads as JSON text in Arrow-backed columns) and its
writes are decoded into dicts a few at a time as they are handed to the connector, so a push of a million tasks'
writes holds the plan and a window of writes in flight, never a million dicts.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from connectors.base import Connector, Write, WriteResult
from connectors.registry import build_connector
from pmsync.config import Config, redact
from pmsync.errors import PmsyncError
from pmsync.run import open_config_warehouse, selected_connections
from writeback.ledger import forget, record_failed, record_skipped, record_written
from writeback.plan import ARCHIVE, PORTFOLIO_ITEM, compact_plan, plan_rows, portfolio_containers

log = logging.getLogger("pmsync.writeback")

WRITE_WORKERS = 4
# Writes handed to the workers ahead of their results: enough to keep them busy, few enough to decode on the way.
IN_FLIGHT = WRITE_WORKERS * 8
# This many failures in a row on one connection and the tool is taken to be down for this push.
MAX_CONSECUTIVE_FAILURES = 5
ERRORS_KEPT = 5


@dataclass
class ConnectionPush:
    """What one push did to one connection's tool."""

    connection: str
    tool: str
    planned: int = 0
    written: int = 0
    failed: int = 0
    skipped: int = 0  # writes the tool cannot take yet (a target it lacks, fields not set up): tried next push
    errors: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)


@dataclass
class PushOutcome:
    """The results of one `pmsync push`: per connection, connection-level failures, and the plan it followed
    (compact: `payload` and `previous` as JSON text; `writeback.plan.expand` gives the dicts)."""

    results: dict[str, ConnectionPush] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    plan: pd.DataFrame = field(default_factory=pd.DataFrame)
    dry_run: bool = False

    @property
    def failed_writes(self) -> int:
        return sum(r.failed for r in self.results.values())

    @property
    def ok(self) -> bool:
        """True when every connection was reached and every write made."""
        return not self.failures and not self.failed_writes


def run_push(config: Config, names: list[str] | None = None, dry_run: bool = False,
             setup: bool = False) -> PushOutcome:
    """Write the schedule back into the selected connections (all when `names` is empty).

    `dry_run` computes the plan and changes nothing (no connector is even built). `setup` first has each connector
    create what write-back needs (custom fields, categories) in its projects.
    """
    connections = selected_connections(config, names)
    chosen = [c.name for c in connections]
    with open_config_warehouse(config) as warehouse:
        plan = compact_plan(warehouse, config, chosen)
        containers = _containers(warehouse, config, chosen) if setup else {}
        parallel_writes = warehouse.dialect == "postgresql"
    outcome = PushOutcome(plan=plan, dry_run=dry_run)
    planned = plan.loc[plan["needed"], "connection"].value_counts()
    for connection in connections:
        outcome.results[connection.name] = ConnectionPush(connection.name, connection.tool,
                                                          planned=int(planned.get(connection.name, 0)))
    if dry_run:
        return outcome
    lock = None if parallel_writes else threading.Lock()

    def one(connection: Any) -> None:
        result = outcome.results[connection.name]
        # Which of the plan's rows are this connection's needed writes (a flag a row: the rows are not copied).
        mine = (plan["needed"] & (plan["connection"] == connection.name)).to_numpy(bool)
        try:
            connector = build_connector(connection, config.timezone)
        except PmsyncError as exc:
            outcome.failures[connection.name] = redact(str(exc), config)
            return
        try:
            _use_settings(connector, config, connection.name)
            if setup:
                _setup(connector, containers.get(connection.name, []), result, outcome, config)
            if mine.any():
                with open_config_warehouse(config) as warehouse:
                    _push_rows(connector, plan, mine, result, warehouse, lock, config)
        except Exception as exc:  # one connection failing must not stop the others
            message = str(exc) if isinstance(exc, PmsyncError) else f"{type(exc).__name__}: {exc}"
            outcome.failures[connection.name] = redact(message, config)
            log.info("push to %s failed: %s", connection.name, outcome.failures[connection.name])
        finally:
            connector.close()

    workers = max(1, min(len(connections), config.sync.concurrency))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pmsync-push") as pool:
        list(pool.map(one, connections))
    return outcome


def _containers(warehouse: Any, config: Config, names: list[str]) -> dict[str, list[str]]:
    """Per connection, the projects (boards, plans) write-back setup prepares, the portfolio container included."""
    projects = warehouse.read("projects", "deleted_at IS NULL", columns=["connection", "native_id"])
    found = {name: sorted(set(projects.loc[projects["connection"] == name, "native_id"].astype(str)))
             for name in names}
    for connection, container in portfolio_containers(config).items():
        if connection in found and container not in found[connection]:
            found[connection].append(container)
    return found


def _use_settings(connector: Connector, config: Config, name: str) -> None:
    """Hand the connection's write-back settings to a connector that asks for them (Jira's custom field ids)."""
    use = getattr(connector, "use_writeback", None)
    if callable(use):
        use(config.writeback_for(name))


def _setup(connector: Connector, containers: list[str], result: ConnectionPush, outcome: PushOutcome,
           config: Config) -> None:
    try:
        result.setup = list(connector.setup_writeback(containers))
    except Exception as exc:  # writes may still work where setup failed (fields made by hand)
        message = str(exc) if isinstance(exc, PmsyncError) else f"{type(exc).__name__}: {exc}"
        outcome.failures[result.connection] = redact(f"setup: {message}", config)


def _push_rows(connector: Connector, plan: pd.DataFrame, mine: np.ndarray, result: ConnectionPush, warehouse: Any,
               lock: threading.Lock | None, config: Config) -> None:
    """Carry out the plan's rows flagged in `mine` (one connection's needed writes) a few at a time, in plan order,
    recording each result as it comes; at most IN_FLIGHT writes are decoded from the compact plan and waiting."""
    writable = mine & plan["target"].isin(list(connector.write_targets)).to_numpy(bool)
    result.skipped = int(mine.sum() - writable.sum())
    breaker = _Breaker()
    ledger_lock = lock or nullcontext()

    def record(done: set[Future]) -> None:
        for future in done:
            written, error = future.result()
            with ledger_lock:
                _record(warehouse, pending.pop(future), written, error, result, config)

    pending: dict[Future, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=WRITE_WORKERS, thread_name_prefix=f"push-{result.connection}") as pool:
        for row in plan_rows(plan, np.flatnonzero(writable)):
            if len(pending) >= IN_FLIGHT:
                record(wait(pending, return_when=FIRST_COMPLETED).done)
            pending[pool.submit(_attempt, connector, row, breaker)] = row
        while pending:
            record(wait(pending, return_when=FIRST_COMPLETED).done)


class _Breaker:
    """Counts failures in a row; once the limit is reached, the remaining writes are not attempted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_a_row = 0
        self.last_error = ""

    @property
    def open(self) -> bool:
        return self.in_a_row >= MAX_CONSECUTIVE_FAILURES

    def saw(self, error: str | None) -> None:
        with self.lock:
            self.in_a_row = 0 if error is None else self.in_a_row + 1
            self.last_error = error or self.last_error


def _attempt(connector: Connector, row: dict[str, Any], breaker: _Breaker) -> tuple[WriteResult | None, str | None]:
    if breaker.open:
        return None, f"not attempted after {MAX_CONSECUTIVE_FAILURES} failures in a row: {breaker.last_error}"
    write = Write(target=row["target"], native_id=row["native_id"], payload=row["payload"],
                  previous=row["previous"], remote_ref=row["remote_ref"])
    try:
        written = connector.write(write)
    except Exception as exc:  # recorded and retried next push
        error = str(exc) if isinstance(exc, PmsyncError) else f"{type(exc).__name__}: {exc}"
        breaker.saw(error)
        return None, error
    breaker.saw(None)
    return written or WriteResult(), None


def _record(warehouse: Any, row: dict[str, Any], written: WriteResult | None, error: str | None,
            result: ConnectionPush, config: Config) -> None:
    key = (row["target"], row["connection"], row["task_uid"])
    if written is None:
        message = redact(error or "failed", config)
        record_failed(warehouse, *key, error=message)
        result.failed += 1
        if len(result.errors) < ERRORS_KEPT:
            result.errors.append(f"{row['target']} {row['task_uid']}: {message}")
        return
    if written.skipped:
        record_skipped(warehouse, *key, reason=written.skipped)
        result.skipped += 1
        return
    record_written(warehouse, *key, payload=row["payload"], payload_hash=row["payload_hash"],
                   remote_ref=written.remote_ref or row["remote_ref"], version=written.version)
    if row["target"] == ARCHIVE:
        forget(warehouse, PORTFOLIO_ITEM, row["connection"], row["task_uid"])
    result.written += 1

