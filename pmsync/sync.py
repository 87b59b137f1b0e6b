"""The sync engine: pull each connection's pages, normalize them, and load them with the cursor that covers them.

Every batch is written in one transaction together with its cursor, so a sync killed at any point resumes from
the last committed batch: upserts are keyed on task_uid and history versions are idempotent, so nothing is
duplicated and nothing is skipped. After the pull, a census of the ids the tool still has marks the ones it no
longer has as deleted. An incremental pull whose tool's own change feed proves that nothing left the scope (no
deletion, no move; see `Connector.census_needed`) needs no census, as long as the last census covered the same scope
and is less than `CENSUS_MAX_AGE` old. The same functions serve `pmsync sync` and the Dagster assets.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.ahead import read_ahead
from connectors.base import Batch, Connector, DueChange, Link, PersonRecord
from mappings.mapping import Mapping
from mappings.normalize import normalize_tasks
from pmsync.errors import PmsyncError
from warehouse.base import Warehouse
from warehouse.frames import last_per_key
from writeback.ledger import own_edits

log = logging.getLogger("pmsync.sync")
PULL_CURSOR = "pull"
# What the last census covered and when: {"scope": connector.census_scope(), "at": ISO instant}.
CENSUS_CURSOR = "census"
# A census is taken at least this often even when every pull's change feed vouches for the scope: a safety net for
# a deletion a feed might not report.
CENSUS_MAX_AGE = timedelta(hours=24)
# Pages can be loaded several to a transaction (`sync.commit_every_records` / `commit_every_seconds`): a load has a
# fixed cost (statements, frames) that a 100-task page would otherwise pay alone. The cursor committed with a group
# is that of its last page, so a crash still resumes with neither gap nor duplicate; it only redoes more pages.
# Groups the pull may run ahead of the load: the next requests travel while a group is written.
PULL_AHEAD = 2
HISTORY_FIELDS = ("due_date", "start_date", "status_category", "percent_complete")
TIMESTAMP = pa.timestamp("us", tz="UTC")


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
    census_skipped: bool = False
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
    # People written in this run, as (connection, native id, email, name): a connection names the same assignees on
    # every page.
    people: set[tuple[str, str, str | None, str | None]] = field(default_factory=set)


class TurnLock:
    """A lock granted in the order it was asked for. `threading.Lock` lets the thread that releases it take it back
    at once, before a waiter wakes: a connection with groups ready to write could keep DuckDB's one writer for as
    long as its backlog lasts while a smaller connection's only group waited. For worker threads: a wait cut short
    (an interrupt, which only the main thread receives) would keep its turn and stall those after it."""

    def __init__(self) -> None:
        self._turns = threading.Condition(threading.Lock())
        self._issued = 0  # tickets handed out
        self._serving = 0  # the ticket whose turn it is

    def acquire(self) -> bool:
        with self._turns:
            ticket = self._issued
            self._issued += 1
            self._turns.wait_for(lambda: self._serving == ticket)
        return True

    def release(self) -> None:
        with self._turns:
            self._serving += 1
            self._turns.notify_all()

    def waiting(self) -> int:
        """How many have asked for the lock and not been granted it yet."""
        with self._turns:
            return max(0, self._issued - self._serving - 1)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()


def sync_connection(
    connector: Connector,
    mapping: Mapping,
    warehouse: Warehouse,
    *,
    full: bool = False,
    timezone: str = "UTC",
    census: bool = True,
    progress: Progress | None = None,
    write_lock: threading.Lock | TurnLock | None = None,
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
        groups = grouped(connector.pull(cursor), commit_every_records, commit_every_seconds)
        # Each group is normalized on the pull's thread, outside the warehouse's lock, so that normalizing the next
        # group overlaps with writing this one (and with the other connections' writes).
        prepared = (prepare_batch(name, connector.tool, group, mapping, timezone, state) for group in groups)
        for ready in pulled_ahead(prepared, f"pmsync-pull-{name}"):
            result.pulled += len(ready.batch.records)
            with lock, warehouse.transaction():
                loaded, quarantined = write_batch(warehouse, ready, run_id)
            result.loaded += loaded
            result.quarantined += quarantined
            if progress:
                progress.advance(name, len(ready.batch.records))
        if connector.echoes_skipped:
            log.info("%s: %d changed tasks left out, changed only by pmsync's own write-back", name,
                     connector.echoes_skipped)
        if census and census_vouched(warehouse, connector, mode, lock):
            result.census_skipped = True
            log.info("%s: no census needed: the pull's change feed shows nothing left the scope", name)
        elif census:
            live = set(connector.census())
            with lock, warehouse.transaction():
                result.deleted = mark_missing_as_deleted(warehouse, name, live)
                record_census(warehouse, connector)
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


def census_vouched(warehouse: Warehouse, connector: Connector, mode: str, lock: threading.Lock | TurnLock,
                   ) -> bool:
    """True when the census may be skipped: an incremental pull whose change feed saw nothing leave the scope, and
    a census of the same scope taken less than `CENSUS_MAX_AGE` ago (a changed configuration, a new mapping of the
    scope, or a census never taken means one is due)."""
    if mode != "incremental" or connector.census_needed():
        return False
    scope = connector.census_scope()
    if scope is None:
        return False
    with lock:
        stored = warehouse.get_cursor(connector.name, CENSUS_CURSOR)
    if stored is None:
        return False
    try:
        last = orjson.loads(stored)
        at = datetime.fromisoformat(last["at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return False
    return last.get("scope") == scope and datetime.now(UTC) - at < CENSUS_MAX_AGE


def record_census(warehouse: Warehouse, connector: Connector) -> None:
    """Note (in the census's transaction) which scope the census just covered, and when."""
    scope = connector.census_scope()
    if scope is not None:
        at = datetime.now(UTC).isoformat()
        warehouse.set_cursor(connector.name, CENSUS_CURSOR, orjson.dumps({"scope": scope, "at": at}).decode())


def pulled_ahead(batches: Iterable[PreparedBatch], thread_name: str, depth: int = PULL_AHEAD,
                 ) -> Iterator[PreparedBatch]:
    """The batches, pulled and prepared on a thread of their own up to `depth` ahead of the caller: the pull keeps
    its requests going while the caller writes (each write commits its own cursor, so a crash still resumes exactly
    where the last commit left off; what was pulled ahead is pulled again). The pull has ended, its generator's
    last lines included, before this returns; if the caller stops early (a failed write), the pull is closed at
    its next batch."""
    return read_ahead(batches, thread_name, depth)


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


@dataclass
class PreparedBatch:
    """A pulled group, normalized and ready to be written: its task rows (deduplicated, stamped), their history
    versions and what failed to normalize. Made on the pull's thread; `write_batch` needs only the warehouse."""

    connection: str
    tool: str
    batch: Batch
    tasks: pa.Table
    versions: pa.Table | None
    quarantined: pd.DataFrame
    now: pd.Timestamp
    # The batch's people that this run has not written yet.
    people: list[PersonRecord]


def prepare_batch(connection: str, tool: str, batch: Batch, mapping: Mapping, timezone: str,
                  state: _RunState | None = None) -> PreparedBatch:
    """Normalize one batch (no warehouse needed): task rows as Arrow columns, their type-2 history versions and
    the quarantine rows of records that failed to normalize or that the connector rejected."""
    page = normalize_tasks(batch.records, mapping, connection, timezone)
    tasks = _dedupe(page.table, state)
    now = pd.Timestamp.now(tz="UTC")
    versions = None
    if tasks.num_rows:
        stamp = pa.repeat(pa.scalar(now.to_pydatetime(), TIMESTAMP), tasks.num_rows)
        tasks = (tasks.append_column("first_seen_at", stamp).append_column("last_synced_at", stamp)
                 .append_column("deleted_at", pa.nulls(tasks.num_rows, TIMESTAMP)))
        versions = history_versions(connection, tasks, batch.due_changes)
    quarantined = page.quarantine
    if batch.rejected:
        rejected = pd.DataFrame(
            [(connection, native_id, orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode(), reason)
             for native_id, payload, reason in batch.rejected],
            columns=["connection", "native_id", "raw_payload", "reason"])
        quarantined = pd.concat([quarantined, rejected], ignore_index=True) if not quarantined.empty else rejected
    return PreparedBatch(connection, tool, batch, tasks, versions, quarantined, now,
                         _new_people(connection, batch.people, state))


def _new_people(connection: str, people: list[PersonRecord], state: _RunState | None) -> list[PersonRecord]:
    """The people this run has not met yet with that email and name (all of them without a run state). A failed
    write ends the connection's sync and its run state with it, so what is noted here has been written."""
    if state is None:
        return people
    fresh = []
    for person in people:
        key = (connection, person.native_id, person.email, person.display_name)
        if key not in state.people:
            state.people.add(key)
            fresh.append(person)
    return fresh


def write_batch(warehouse: Warehouse, prepared: PreparedBatch, run_id: str) -> tuple[int, int]:
    """Write one prepared batch (inside the caller's transaction): tasks, history, links, people, projects,
    quarantine and the cursor. Returns (tasks loaded, records quarantined).

    The normalized rows stay Arrow columns all the way into the database (no pandas frame per batch): a batch
    costs a fixed handful of statements whatever its size.
    """
    connection, tool, batch, tasks, now = (prepared.connection, prepared.tool, prepared.batch, prepared.tasks,
                                           prepared.now)
    if tasks.num_rows:
        warehouse.upsert_tasks(tasks, prepared.versions)
        warehouse.clear_quarantine(connection, tasks.column("native_id"))
    if batch.projects:
        warehouse.upsert("projects", pa.table({
            "project_uid": [f"{connection}:{p.native_id}" for p in batch.projects],
            "connection": [connection] * len(batch.projects), "tool": [tool] * len(batch.projects),
            "native_id": [p.native_id for p in batch.projects], "name": [p.name for p in batch.projects],
            "url": [p.url for p in batch.projects],
            "first_seen_at": pa.repeat(pa.scalar(now.to_pydatetime(), TIMESTAMP), len(batch.projects)),
            "last_synced_at": pa.repeat(pa.scalar(now.to_pydatetime(), TIMESTAMP), len(batch.projects)),
            "deleted_at": pa.nulls(len(batch.projects), TIMESTAMP),
        }))
    if prepared.people:
        upsert_people(warehouse, connection, prepared.people)
    replace_links(warehouse, connection, batch.covers_links_of, batch.links, now)
    quarantined = prepared.quarantined
    if not quarantined.empty:
        warehouse.quarantine(quarantined.assign(run_id=run_id, quarantined_at=now))
    if batch.cursor is not None:
        warehouse.set_cursor(connection, PULL_CURSOR, orjson.dumps(batch.cursor).decode())
    return tasks.num_rows, len(quarantined)


def _dedupe(tasks: pa.Table, state: _RunState | None) -> pa.Table:
    """Drop rows already loaded in this run with the same (task, updated): the overlap window re-reads them.

    Within the batch a task read twice keeps its row with the latest updated_at (a row without one counts as the
    latest; equal ones, the later row).
    """
    if tasks.num_rows == 0:
        return tasks
    uids = tasks.column("task_uid")
    if pc.count_distinct(uids).as_py() < tasks.num_rows:
        order = pc.sort_indices(
            tasks.select(["updated_at"]).append_column("_row", pa.array(np.arange(tasks.num_rows))),
            sort_keys=[("updated_at", "ascending", "at_end"), ("_row", "ascending", "at_end")],
        )
        tasks = last_per_key(tasks.take(order), ("task_uid",))
    if state is None:
        return tasks
    keys = list(zip(tasks.column("task_uid").to_pylist(),
                    tasks.column("updated_at").cast(pa.int64()).to_pylist()))
    fresh = [key not in state.seen for key in keys]
    state.seen.update(keys)
    return tasks if all(fresh) else tasks.filter(pa.array(fresh))


def history_versions(connection: str, tasks: pa.Table, changes: Iterable[DueChange]) -> pa.Table:
    """Type-2 versions of the schedule fields: the tool's own due-date history, then what was observed now.

    A reconstructed version knows only the due date; the other fields are left unknown (null) rather than
    guessed, and the observed version (at the task's own updated_at) fills them in. Where both fall on the same
    instant the observed version comes later, so it wins.
    """
    n = tasks.num_rows
    observed = {
        "task_uid": tasks.column("task_uid"),
        "valid_from": pc.fill_null(tasks.column("updated_at"), pa.scalar(pd.Timestamp.now(tz="UTC"), TIMESTAMP)),
        **{name: tasks.column(name) for name in HISTORY_FIELDS},
        "source": pa.repeat(pa.scalar("observed"), n),
        "deleted": pa.repeat(pa.scalar(False), n),
    }
    changes = list(changes)
    task = pc.index_in(pa.array([c.native_id for c in changes], pa.string()), value_set=tasks.column("native_id"))
    if not changes or task.null_count == len(changes):
        return pa.table(observed)
    # One row per change of this batch's tasks, each task's changes in time order (ties in the tool's order).
    found = pa.table({
        "task": task, "changed_at": _instants([c.changed_at for c in changes]),
        "old_due": _dates([c.old_due for c in changes]), "new_due": _dates([c.new_due for c in changes]),
        "seq": pa.array(np.arange(len(changes))),
    }).filter(task.is_valid())
    found = found.take(pc.sort_indices(found, sort_keys=[("task", "ascending"), ("changed_at", "ascending"),
                                                         ("seq", "ascending")]))
    task = found.column("task")
    # Before a task's first change its due date was the change's old one, from the task's creation (or, when
    # that is unknown, from the change itself).
    first = np.ones(found.num_rows, dtype=bool)
    first[1:] = pc.not_equal(task[1:], task[:-1]).to_numpy(zero_copy_only=False)
    opening = first & found.column("old_due").is_valid().to_numpy(zero_copy_only=False)
    initial = found.filter(pa.array(opening))
    created = tasks.column("created_at").take(initial.column("task"))
    # Each opening version sorts right before its task's first change, and the changes keep their order.
    rank = np.arange(found.num_rows) * 2
    rows = pa.concat_tables([
        pa.table({"task": initial.column("task"), "valid_from": pc.coalesce(created, initial.column("changed_at")),
                  "due_date": initial.column("old_due"), "rank": pa.array(rank[opening])}),
        pa.table({"task": task, "valid_from": found.column("changed_at"), "due_date": found.column("new_due"),
                  "rank": pa.array(rank + 1)}),
    ])
    rows = rows.take(pc.sort_indices(rows.column("rank")))
    count = rows.num_rows
    reconstructed = pa.table({
        "task_uid": tasks.column("task_uid").take(rows.column("task")),
        "valid_from": rows.column("valid_from"),
        "due_date": rows.column("due_date"),
        "start_date": pa.nulls(count, pa.date32()),
        "status_category": pa.nulls(count, pa.string()),
        "percent_complete": pa.nulls(count, pa.float64()),
        "source": pa.repeat(pa.scalar("tool_history"), count),
        "deleted": pa.repeat(pa.scalar(False), count),
    })
    return pa.concat_tables([reconstructed, pa.table(observed).select(reconstructed.column_names)])


def _instants(values: list[Any]) -> pa.Array:
    """Change times as UTC microseconds (a naive time is taken as UTC, as pandas' utc=True does)."""
    try:
        return pa.array(values, TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.Array.from_pandas(pd.to_datetime(pd.Series(values, dtype=object), utc=True).astype(
            "datetime64[us, UTC]"), type=TIMESTAMP)


def _dates(values: list[Any]) -> pa.Array:
    """Due dates as date32, whether the connector gave dates, datetimes or ISO text."""
    if all(value is None or type(value) is date for value in values):
        return pa.array(values, pa.date32())
    parsed = pd.to_datetime(pd.Series(values, dtype=object)).astype("datetime64[us]")
    return pc.cast(pa.Array.from_pandas(parsed.dt.normalize()), pa.date32())


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
    warehouse.upsert("dependencies", pa.table({
        "predecessor_uid": [f"{connection}:{link.predecessor_native_id}" if link.predecessor_native_id
                            else f"url:{link.predecessor_url}" for link in links],
        "successor_uid": [f"{connection}:{link.successor_native_id}" for link in links],
        "kind": [link.kind for link in links],
        "origin": [link.origin for link in links],
        "connection": [connection] * len(links),
        "lag_days": pa.array([link.lag_days for link in links], pa.float64()),
        "last_seen_at": pa.repeat(pa.scalar(now.to_pydatetime(), TIMESTAMP), len(links)),
    }))


def upsert_people(warehouse: Warehouse, connection: str, people: Iterable[PersonRecord]) -> None:
    """People keyed by lower-cased email (one person across tools), else by connection and native id."""
    rows: dict[str, tuple[str | None, str | None]] = {}
    for person in people:
        email = person.email.strip().lower() if person.email else None
        rows[email or f"{connection}:{person.native_id}"] = (email, person.display_name)
    if not rows:
        return
    stored = warehouse.query_arrow(
        "SELECT person_uid, CAST(display_names AS TEXT) AS display_names FROM people WHERE person_uid = ANY(%s)",
        [list(rows)],
    )
    names = dict(zip(stored.column(0).to_pylist(), stored.column(1).to_pylist())) if stored.num_rows else {}
    display_names = []
    for uid, (_, name) in rows.items():
        known = names.get(uid)
        earlier = orjson.loads(known) if isinstance(known, str) and known else {}
        display_names.append(orjson.dumps({**earlier, connection: name}).decode())
    warehouse.upsert("people", pa.table({
        "person_uid": list(rows),
        "email": pa.array([email for email, _ in rows.values()], pa.string()),
        "display_name": pa.array([name for _, name in rows.values()], pa.string()),
        "display_names": display_names,
        "updated_at": pa.repeat(pa.scalar(pd.Timestamp.now(tz="UTC").to_pydatetime(), TIMESTAMP), len(rows)),
    }), stored=len(names))


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
