"""The write-back ledger: what pmsync last wrote to each target, so a push writes only what differs.

One row per (target, connection, task_uid): the hash and JSON of the payload last written, the id of anything
pmsync created there (`remote_ref`: a comment, a portfolio card), and whether the last attempt was 'written' or
'failed' (with the error). A failure keeps the last successful hash, payload and remote_ref, so the retry on the
next push edits what exists instead of adding a second one. `version` keeps the task's version marker the tool
reported right after pmsync's write, so the next incremental pull can leave pmsync's own edits out (`own_edits`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd

from connectors.base import OwnEdits
from warehouse.base import Warehouse

TABLE = "writeback_ledger"
WRITTEN, FAILED, SKIPPED = "written", "failed", "skipped"
RECENT_PAYLOADS = 50


def read_ledger(warehouse: Warehouse, connections: Iterable[str] | None = None,
                columns: Sequence[str] | None = None, where: str | None = None,
                params: Sequence[Any] = ()) -> pd.DataFrame:
    """The ledger rows of these connections (all when None) that match `where` (with its `params`), with these
    columns (all when None): a plan reads only what it compares, a range of tasks at a time."""
    names = list(connections) if connections is not None else None
    conditions, values = ([where], list(params)) if where else ([], [])
    if names is not None:
        conditions.insert(0, f"connection IN ({', '.join(['%s'] * len(names))})" if names else "1 = 0")
        values[:0] = names
    return warehouse.read(TABLE, " AND ".join(f"({c})" for c in conditions) or None, values or None, columns=columns)


def _now() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(UTC))


def record_written(warehouse: Warehouse, target: str, connection: str, task_uid: str, *, payload: dict[str, Any],
                   payload_hash: str, remote_ref: str | None, written_at: datetime | None = None,
                   version: str | None = None) -> None:
    """Record a successful write: its hash, payload, remote_ref and the version it left; any earlier error is
    cleared."""
    warehouse.upsert(TABLE, pd.DataFrame([{
        "target": target, "connection": connection, "task_uid": task_uid, "payload_hash": payload_hash,
        "status": WRITTEN, "written_at": pd.Timestamp(written_at) if written_at else _now(), "error": None,
        "remote_ref": remote_ref, "payload": orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode(),
        "version": version,
    }]))


def record_failed(warehouse: Warehouse, target: str, connection: str, task_uid: str, *, error: str,
                  failed_at: datetime | None = None) -> None:
    """Record a failed write (retried next push); the last successful hash, payload and remote_ref stay."""
    warehouse.upsert(TABLE, pd.DataFrame([{
        "target": target, "connection": connection, "task_uid": task_uid, "status": FAILED,
        "written_at": pd.Timestamp(failed_at) if failed_at else _now(), "error": error,
    }]))


def record_skipped(warehouse: Warehouse, target: str, connection: str, task_uid: str, *, reason: str) -> None:
    """Record a write the tool could not take yet (tried again next push); what was written before stays."""
    warehouse.upsert(TABLE, pd.DataFrame([{
        "target": target, "connection": connection, "task_uid": task_uid, "status": SKIPPED,
        "written_at": _now(), "error": reason,
    }]))


def forget(warehouse: Warehouse, target: str, connection: str, task_uid: str) -> None:
    """Drop a row (a portfolio item once archived, so a source that comes back gets a fresh item)."""
    warehouse.delete(TABLE, "target = %s AND connection = %s AND task_uid = %s", [target, connection, task_uid])


def own_edits(warehouse: Warehouse, connection: str) -> OwnEdits:
    """What pmsync last wrote into this connection's tool: the version markers its writes left per task, and the
    field ids it writes (from the payloads that name them), for the connector to recognise its own edits."""
    rows = warehouse.query(
        f"SELECT task_uid, version FROM {TABLE} WHERE connection = %s AND version IS NOT NULL", [connection])
    versions: dict[str, set[str]] = {}
    prefix = f"{connection}:"
    for task_uid, version in rows.itertuples(index=False):
        if isinstance(version, str) and version and str(task_uid).startswith(prefix):
            versions.setdefault(str(task_uid)[len(prefix):], set()).add(version)
    # Every custom-field payload of a connection names the same field ids (they come from its configuration): the
    # latest writes say which ones pmsync writes now, without reading a payload per task.
    recent = warehouse.query(
        f"SELECT payload FROM {TABLE} WHERE connection = %s AND target LIKE %s AND payload IS NOT NULL "
        f"ORDER BY written_at DESC LIMIT {RECENT_PAYLOADS}", [connection, "%.custom_fields"])
    fields: set[str] = set()
    for payload in recent["payload"]:
        data = orjson.loads(payload) if isinstance(payload, str | bytes) else payload
        named = data.get("field_ids") if isinstance(data, dict) else None
        fields.update(str(field_id) for field_id in (named or {}).values() if field_id)
    return OwnEdits({native_id: frozenset(found) for native_id, found in versions.items()}, frozenset(fields))
