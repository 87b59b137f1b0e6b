"""The sync engine: pull each connection's pages, normalize them, and load them with the cursor that covers them.

Every batch is written in one transaction together with its cursor, so a sync killed at any point resumes from
the last committed batch: upserts are keyed on task_uid and history versions are idempotent, so nothing is
duplicated and nothing is skipped. After the pull, a census of the ids the tool still has marks the ones it no
longer has as deleted. The same functions serve `pmsync sync` and the Dagster assets.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd

from connectors.base import Batch, Connector, DueChange, Link
from mappings.mapping import Mapping
from mappings.normalize import normalize_tasks
from pmsync.errors import PmsyncError
from warehouse.base import Warehouse
from writeback.ledger import own_edits

log = logging.getLogger("pmsync.sync")
PULL_CURSOR = "pull"
# Pages can be loaded several to a transaction (`sync.commit_every_records` / `commit_every_seconds`): a load has a
# fixed cost (statements, frames) that a 100-task page would otherwise pay alone. The cursor committed with a group
# is that of its last page, so a crash still resumes with neither gap nor duplicate; it only redoes more pages.
HISTORY_FIELDS = ("due_date", "start_date", "status_category", "percent_complete")


@dataclass
class SyncResult:
    """What one connection's sync did, as `sync_runs` records it."""

    connection: str
    run_id: str
    mode: str
    status: str = "running"
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    pulled: int = 0
    loaded: int = 0
    quarantined: int = 0
    deleted: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


@dataclass
class Progress:
    """Callbacks for long pulls: `advance(connection, records)` after each committed batch."""

    advance: Callable[[str, int], None] = lambda connection, records: None


@dataclass
class _RunState:
    seen: set[tuple[str, Any]] = field(default_factory=set)


def sync_connection(
    connector: Connector,
    mapping: Mapping,
    warehouse: Warehouse,
    *,
    full: bool = False,
    timezone: str = "UTC",
    census: bool = True,
    progress: Progress | None = None,
    write_lock: threading.Lock | None = None,
    commit_every_records: int = 1,
    commit_every_seconds: float = 0.0,
) -> SyncResult:
    """Pull one connection into the warehouse (incrementally from its cursor unless `full`) and record the run."""
    name = connector.name
    lock = write_lock or threading.Lock()
    with lock:
        stored = warehouse.get_cursor(name, PULL_CURSOR)
        cursor = None if full or stored is None else orjson.loads(stored)
        mode = "full" if cursor is None else "incremental"
        if cursor is not None:
            connector.recognise_own_edits(own_edits(warehouse, name))
        run_id = warehouse.start_run(name, mode)
    result = SyncResult(connection=name, run_id=run_id, mode=mode)
    state = _RunState()
    try:
        for group in grouped(connector.pull(cursor), commit_every_records, commit_every_seconds):
            result.pulled += len(group.records)
            with lock, warehouse.transaction():
                loaded, quarantined = load_batch(warehouse, connector.name, connector.tool, group, mapping, timezone,
                                                 run_id, state)
            result.loaded += loaded
            result.quarantined += quarantined
            if progress:
                progress.advance(name, len(group.records))
        if connector.echoes_skipped:
            log.info("%s: %d changed tasks left out, changed only by pmsync's own write-back", name,
                     connector.echoes_skipped)
        if census:
            live = set(connector.census())
            with lock:
                result.deleted = mark_missing_as_deleted(warehouse, name, live)
        result.status = "succeeded"
    except Exception as exc:
        result.status = "failed"
        result.error = str(exc) if isinstance(exc, PmsyncError) else f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _record_stats(result, connector)
        with lock:
            warehouse.finish_run(
                run_id, name, status=result.status, error=result.error, requests=result.requests,
                requests_429=result.throttled, retries=result.retries, records_pulled=result.pulled,
                records_loaded=result.loaded, records_quarantined=result.quarantined, records_deleted=result.deleted,
            )
    return result


def grouped(batches: Iterable[Batch], records: int = 1, seconds: float = 0.0) -> Iterable[Batch]:
    """Consecutive batches merged into groups of about `records` records or `seconds` of pulling."""
    pending: list[Batch] = []
    size, started = 0, time.monotonic()
    for batch in batches:
        if not pending:
            started = time.monotonic()
        pending.append(batch)
        size += len(batch.records)
        if size >= records or time.monotonic() - started >= seconds:
            yield merge_batches(pending)
            pending, size = [], 0
    if pending:
        yield merge_batches(pending)


def merge_batches(batches: list[Batch]) -> Batch:
    """One batch holding several, in order; a task's links come from the last batch that covers it, and the
    cursor is the last one given."""
    if len(batches) == 1:
        return batches[0]
    last_cover = {native_id: k for k, batch in enumerate(batches) for native_id in batch.covers_links_of}
    merged = Batch()
    for k, batch in enumerate(batches):
        merged.records.extend(batch.records)
        merged.projects.extend(batch.projects)
        merged.due_changes.extend(batch.due_changes)
        merged.people.extend(batch.people)
        merged.rejected.extend(batch.rejected)
        merged.links.extend(link for link in batch.links if last_cover.get(link.successor_native_id, k) == k)
        if batch.cursor is not None:
            merged.cursor = batch.cursor
    merged.covers_links_of = list(last_cover)
    return merged


def _record_stats(result: SyncResult, connector: Connector) -> None:
    stats = connector.stats.snapshot()
    result.requests = int(stats["requests"])
    result.throttled = int(stats["throttled"])
    result.retries = int(stats["retries"])


def load_batch(
    warehouse: Warehouse, connection: str, tool: str, batch: Batch, mapping: Mapping, timezone: str, run_id: str,
    state: _RunState | None = None,
) -> tuple[int, int]:
    """Write one batch (inside the caller's transaction): tasks, history, links, people, projects, quarantine and
    the cursor. Returns (tasks loaded, records quarantined)."""
    page = normalize_tasks(batch.records, mapping, connection, timezone)
    tasks = _dedupe(page.tasks, state)
    now = pd.Timestamp.now(tz="UTC")
    if not tasks.empty:
        tasks = tasks.assign(first_seen_at=now, last_synced_at=now, deleted_at=pd.NaT)
        warehouse.upsert("tasks", tasks)
        warehouse.apply_task_versions(history_versions(connection, tasks, batch.due_changes))
        warehouse.clear_quarantine(connection, tasks["native_id"])
    if batch.projects:
        warehouse.upsert("projects", pd.DataFrame([
            {"project_uid": f"{connection}:{p.native_id}", "connection": connection, "tool": tool,
             "native_id": p.native_id, "name": p.name, "url": p.url, "first_seen_at": now, "last_synced_at": now,
             "deleted_at": pd.NaT} for p in batch.projects
        ]))
    if batch.people:
        upsert_people(warehouse, connection, batch)
    replace_links(warehouse, connection, batch.covers_links_of, batch.links, now)
    quarantined = page.quarantine
    if batch.rejected:
        rejected = pd.DataFrame(
            [(connection, native_id, orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode(), reason)
             for native_id, payload, reason in batch.rejected],
            columns=["connection", "native_id", "raw_payload", "reason"])
        quarantined = pd.concat([quarantined, rejected], ignore_index=True) if not quarantined.empty else rejected
    if not quarantined.empty:
        warehouse.quarantine(quarantined.assign(run_id=run_id, quarantined_at=now))
    if batch.cursor is not None:
        warehouse.set_cursor(connection, PULL_CURSOR, orjson.dumps(batch.cursor).decode())
    return len(tasks), len(quarantined)


def _dedupe(tasks: pd.DataFrame, state: _RunState | None) -> pd.DataFrame:
    """Drop rows already loaded in this run with the same (task, updated): the overlap window re-reads them."""
    if tasks.empty:
        return tasks
    tasks = tasks.sort_values("updated_at", kind="stable").drop_duplicates("task_uid", keep="last")
    if state is None:
        return tasks
    keys = list(zip(tasks["task_uid"], tasks["updated_at"]))
    fresh = [key not in state.seen for key in keys]
    state.seen.update(keys)
    return tasks.loc[fresh]


def history_versions(connection: str, tasks: pd.DataFrame, changes: Iterable[DueChange]) -> pd.DataFrame:
    """Type-2 versions of the schedule fields: the tool's own due-date history, then what was observed now.

    A reconstructed version knows only the due date; the other fields are left unknown (null) rather than
    guessed, and the observed version (at the task's own updated_at) fills them in.
    """
    observed = tasks[["task_uid", "updated_at", *HISTORY_FIELDS]].rename(columns={"updated_at": "valid_from"})
    observed = observed.assign(
        valid_from=observed["valid_from"].fillna(pd.Timestamp.now(tz="UTC")), source="observed", deleted=False
    )
    uids: list[str] = []
    starts: list[Any] = []
    dues: list[Any] = []
    created = dict(zip(tasks["native_id"], tasks["created_at"]))
    for native_id, group in _by_task(changes).items():
        if native_id not in created:
            continue
        uid = f"{connection}:{native_id}"
        first = group[0]
        if first.old_due is not None:
            uids.append(uid)
            starts.append(created[native_id] if pd.notna(created[native_id]) else first.changed_at)
            dues.append(first.old_due)
        for change in group:
            uids.append(uid)
            starts.append(change.changed_at)
            dues.append(change.new_due)
    if not uids:
        return observed
    # Built as plain lists and converted column by column: a Timestamp per value costs more than the rest.
    reconstructed = pd.DataFrame({
        "task_uid": uids,
        "valid_from": pd.to_datetime(pd.Series(starts, dtype=object), utc=True),
        "due_date": pd.to_datetime(pd.Series(dues, dtype=object)),
    }).assign(source="tool_history", deleted=False)
    # The observed version wins where both fall on the same instant.
    merged = pd.concat([reconstructed, observed], ignore_index=True)
    return merged.drop_duplicates(["task_uid", "valid_from"], keep="last")


def _by_task(changes: Iterable[DueChange]) -> dict[str, list[DueChange]]:
    grouped: dict[str, list[DueChange]] = {}
    for change in changes:
        grouped.setdefault(change.native_id, []).append(change)
    return {k: sorted(v, key=lambda c: c.changed_at) for k, v in grouped.items()}


def replace_links(
    warehouse: Warehouse, connection: str, successors: Iterable[str], links: list[Link], now: pd.Timestamp
) -> None:
    """Make the stored links of these successors exactly the given ones (links removed in the tool go too)."""
    successor_uids = [f"{connection}:{s}" for s in successors]
    if successor_uids:
        warehouse.delete(
            "dependencies",
            "connection = %s AND origin <> 'config' AND successor_uid = ANY(%s)",
            [connection, successor_uids],
        )
    if not links:
        return
    rows = [{
        "predecessor_uid": f"{connection}:{link.predecessor_native_id}" if link.predecessor_native_id
        else f"url:{link.predecessor_url}",
        "successor_uid": f"{connection}:{link.successor_native_id}",
        "kind": link.kind, "origin": link.origin, "connection": connection, "lag_days": link.lag_days,
        "last_seen_at": now,
    } for link in links]
    warehouse.upsert("dependencies", pd.DataFrame(rows))


def upsert_people(warehouse: Warehouse, connection: str, batch: Batch) -> None:
    """People keyed by lower-cased email (one person across tools), else by connection and native id."""
    rows = {}
    for person in batch.people:
        uid = person.email.strip().lower() if person.email else f"{connection}:{person.native_id}"
        rows[uid] = {"person_uid": uid, "email": person.email.strip().lower() if person.email else None,
                     "display_name": person.display_name}
    if not rows:
        return
    frame = pd.DataFrame(list(rows.values()))
    stored = warehouse.read("people", "person_uid = ANY(%s)", [list(rows)])
    names = dict(zip(stored["person_uid"], stored["display_names"])) if not stored.empty else {}
    frame["display_names"] = [
        orjson.dumps({**(orjson.loads(names[u]) if names.get(u) else {}), connection: n}).decode()
        for u, n in zip(frame["person_uid"], frame["display_name"])
    ]
    frame["updated_at"] = pd.Timestamp.now(tz="UTC")
    warehouse.upsert("people", frame)


def mark_missing_as_deleted(warehouse: Warehouse, connection: str, live_native_ids: set[str]) -> int:
    """Mark the connection's stored, not yet deleted tasks that the tool no longer lists; returns how many."""
    stored = warehouse.query(
        "SELECT native_id, task_uid FROM tasks WHERE connection = %s AND deleted_at IS NULL", [connection]
    )
    if stored.empty:
        return 0
    if not live_native_ids:
        raise PmsyncError(
            f"{connection} listed no tasks at all while the warehouse holds {len(stored)}; refusing to mark them all "
            "deleted. Check the connection's projects and its permissions, then sync again."
        )
    missing = stored.loc[~stored["native_id"].isin(live_native_ids), "task_uid"]
    return warehouse.mark_deleted(connection, missing.tolist(), pd.Timestamp.now(tz="UTC"))
