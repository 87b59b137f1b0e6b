"""The write-back ledger: what pmsync last wrote to each target, so a push writes only what differs.

One row per (target, connection, task_uid): the hash and JSON of the payload last written, the id of anything
pmsync created there (`remote_ref`: a comment, a portfolio card), and whether the last attempt was 'written' or
'failed' (with the error). A failure keeps the last successful hash, payload and remote_ref, so the retry on the
next push edits what exists instead of adding a second one.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd

from warehouse.base import Warehouse

TABLE = "writeback_ledger"
WRITTEN, FAILED, SKIPPED = "written", "failed", "skipped"


def read_ledger(warehouse: Warehouse, connections: Iterable[str] | None = None) -> pd.DataFrame:
    """The ledger rows of these connections (all when None)."""
    names = list(connections) if connections is not None else None
    if names is None:
        return warehouse.read(TABLE)
    if not names:
        return warehouse.read(TABLE, "1 = 0")
    marks = ", ".join(["%s"] * len(names))
    return warehouse.read(TABLE, f"connection IN ({marks})", names)


def _now() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(UTC))


def record_written(warehouse: Warehouse, target: str, connection: str, task_uid: str, *, payload: dict[str, Any],
                   payload_hash: str, remote_ref: str | None, written_at: datetime | None = None) -> None:
    """Record a successful write: its hash, payload and remote_ref; any earlier error is cleared."""
    warehouse.upsert(TABLE, pd.DataFrame([{
        "target": target, "connection": connection, "task_uid": task_uid, "payload_hash": payload_hash,
        "status": WRITTEN, "written_at": pd.Timestamp(written_at) if written_at else _now(), "error": None,
        "remote_ref": remote_ref, "payload": orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode(),
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
