"""The warehouse interface: everything the engine stores goes through these operations, on either backend.

Backends supply a handful of primitives (run SQL, fetch a frame, stage an Arrow table as a relation); every
operation here is written once, in SQL that DuckDB and PostgreSQL both accept. Parameters in SQL passed by
callers use the `%s` / `%(name)s` style on both backends.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self

import pandas as pd
import pyarrow as pa

from mappings.schema import SCHEDULE_FIELDS, TABLES, Table
from mappings.schema import table as schema_table
from pmsync.errors import PmsyncError
from warehouse import frames

Params = Sequence[Any] | Mapping[str, Any] | None

HISTORY_INPUT_COLUMNS = ("task_uid", "valid_from", *SCHEDULE_FIELDS, "source")


class WarehouseError(PmsyncError):
    """The warehouse could not be opened or used: the message says which warehouse and what to do."""


def quote(identifier: str) -> str:
    """A double-quoted SQL identifier, valid on both backends."""
    return '"' + identifier.replace('"', '""') + '"'


def _column_list(names: Iterable[str]) -> str:
    return ", ".join(quote(name) for name in names)


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


class Warehouse(ABC):
    """One open warehouse (one connection). Not thread-safe: give each thread or process its own."""

    dialect: str = ""
    type_names: Mapping[str, str] = {}

    def __init__(self) -> None:
        self._transaction_depth = 0

    # Backend primitives.

    @abstractmethod
    def _execute(self, sql: str, params: Params = None) -> None:
        """Run one statement whose result is not needed."""

    @abstractmethod
    def _fetch(self, sql: str, params: Params = None) -> pd.DataFrame:
        """Run one query and return its rows as a frame with the result's column names."""

    @abstractmethod
    def _staged(self, name: str, table: Table, data: pa.Table) -> Any:
        """A context manager during which `data` can be selected from as relation `name` in this transaction."""

    @abstractmethod
    def _lock_for_migration(self) -> None:
        """Serialize migrations between processes, for the rest of the current transaction."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; the object is unusable afterwards."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where this warehouse lives, for messages: a file path or a URL without its password."""

    # Plain SQL.

    def execute(self, sql: str, params: Params = None) -> None:
        """Run one statement (DDL or DML) inside the current transaction, or in its own."""
        with self.transaction():
            self._execute(sql, params)

    def query(self, sql: str, params: Params = None) -> pd.DataFrame:
        """The rows of any query as a frame, with the types the database gives them."""
        return self._fetch(sql, params)

    # Transactions.

    @contextmanager
    def transaction(self) -> Iterator[Warehouse]:
        """Everything inside commits together, or not at all when the block raises.

        A nested block joins the outer transaction: it commits or rolls back with it.
        """
        if self._transaction_depth:
            self._transaction_depth += 1
            try:
                yield self
            finally:
                self._transaction_depth -= 1
            return
        self._execute("BEGIN")
        self._transaction_depth = 1
        try:
            yield self
        except BaseException:
            self._transaction_depth = 0
            self._execute("ROLLBACK")
            raise
        self._transaction_depth = 0
        self._execute("COMMIT")

    @property
    def in_transaction(self) -> bool:
        return self._transaction_depth > 0

    # Tables.

    def migrate(self) -> list[int]:
        """Apply every pending migration; returns the versions applied (none when already current)."""
        from warehouse.migrations import migrate

        return migrate(self)

    def create_table_sql(self, table: Table) -> str:
        """`CREATE TABLE IF NOT EXISTS` for a canonical table, in this backend's types."""
        columns = [
            f"{quote(column.name)} {self.type_names[column.type]}{'' if column.nullable else ' NOT NULL'}"
            for column in table.columns
        ]
        columns.append(f"PRIMARY KEY ({_column_list(table.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {quote(table.name)} (\n  " + ",\n  ".join(columns) + "\n)"

    def existing_columns(self, table_name: str) -> set[str]:
        """The columns the stored table has (empty when it does not exist)."""
        return self.existing_tables().get(table_name, set())

    def existing_tables(self) -> dict[str, set[str]]:
        """Every table of the warehouse's schema, with its columns."""
        rows = self._fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        )
        return {name: set(group["column_name"]) for name, group in rows.groupby("table_name")}

    def upsert(self, table_name: str, frame: pd.DataFrame) -> int:
        """Insert the frame's rows, or update the stored rows with the same primary key; returns rows written.

        The frame may hold a subset of the table's columns (it must hold the key); columns it lacks keep their
        stored values on update. When the frame repeats a key, its last row wins. Write-once columns keep the
        value they were first given.
        """
        table = schema_table(table_name)
        frame = self._keyed_rows(table, frame)
        if frame.empty:
            return 0
        data = frames.to_arrow(table, frame)
        with self.transaction(), self._staged("_pmsync_incoming", table, data):
            if _lacks_required_columns(table, data.column_names):
                # PostgreSQL checks NOT NULL on the proposed row before ON CONFLICT, so partial rows update
                # the stored ones instead; any that are new fail on the missing columns, as they should.
                for statement in self._update_then_insert_sql(table, data.column_names, "_pmsync_incoming"):
                    self._execute(statement)
            else:
                self._execute(self._upsert_sql(table, data.column_names, "_pmsync_incoming"))
        return len(frame)

    def _keyed_rows(self, table: Table, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [key for key in table.primary_key if key not in frame.columns]
        if missing:
            raise ValueError(f"rows for {table.name} lack its key columns {missing}")
        if frame[list(table.primary_key)].isna().any().any():
            raise ValueError(f"rows for {table.name} have an empty key ({', '.join(table.primary_key)})")
        return frame.drop_duplicates(subset=list(table.primary_key), keep="last")

    def _upsert_sql(self, table: Table, names: Sequence[str], source: str) -> str:
        target = quote(table.name)
        insert = (
            f"INSERT INTO {target} ({_column_list(names)}) SELECT {_column_list(names)} FROM {quote(source)}"
            f" ON CONFLICT ({_column_list(table.primary_key)})"
        )
        updates = []
        for name in names:
            if name in table.primary_key:
                continue
            if table.column(name).write_once:
                updates.append(f"{quote(name)} = COALESCE({target}.{quote(name)}, EXCLUDED.{quote(name)})")
            else:
                updates.append(f"{quote(name)} = EXCLUDED.{quote(name)}")
        if not updates:
            return insert + " DO NOTHING"
        return insert + " DO UPDATE SET " + ", ".join(updates)

    def _update_then_insert_sql(self, table: Table, names: Sequence[str], source: str) -> list[str]:
        target, staged = quote(table.name), quote(source)
        matches = " AND ".join(f"t.{quote(key)} = s.{quote(key)}" for key in table.primary_key)
        updates = [
            f"{quote(name)} = COALESCE(t.{quote(name)}, s.{quote(name)})"
            if table.column(name).write_once
            else f"{quote(name)} = s.{quote(name)}"
            for name in names
            if name not in table.primary_key
        ]
        statements = []
        if updates:
            statements.append(
                f"UPDATE {target} AS t SET {', '.join(updates)} FROM {staged} AS s WHERE {matches}"
            )
        statements.append(
            f"INSERT INTO {target} ({_column_list(names)}) SELECT {_column_list(names)} FROM {staged} AS s"
            f" WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {matches})"
        )
        return statements

    def replace(
        self, table_name: str, frame: pd.DataFrame, where: str | None = None, params: Params = None
    ) -> int:
        """Delete the rows matching `where` (every row when None) and insert the frame, in one transaction.

        For tables recomputed whole, such as schedule and project_health. Returns the rows inserted.
        """
        with self.transaction():
            self.delete(table_name, where, params)
            return self.upsert(table_name, frame)

    def delete(self, table_name: str, where: str | None = None, params: Params = None) -> None:
        """Delete the rows matching `where` (an SQL condition; every row when None)."""
        table = schema_table(table_name)
        sql = f"DELETE FROM {quote(table.name)}" + (f" WHERE {where}" if where else "")
        self.execute(sql, params)

    def read(
        self,
        table_name: str,
        where: str | None = None,
        params: Params = None,
        columns: Sequence[str] | None = None,
        order_by: str | None = None,
    ) -> pd.DataFrame:
        """Rows of a canonical table, every column at its schema dtype (see mappings.schema.PANDAS_DTYPES)."""
        table = schema_table(table_name)
        names = list(columns or table.column_names)
        for name in names:
            table.column(name)
        sql = f"SELECT {_column_list(names)} FROM {quote(table.name)}"
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order_by or _column_list(table.primary_key)}"
        result = self._fetch(sql, params)
        if result.empty:
            return frames.empty_frame(table)[names]
        return frames.coerce(table, result)

    def count(self, table_name: str, where: str | None = None, params: Params = None) -> int:
        """How many rows of the table match `where` (all when None)."""
        table = schema_table(table_name)
        sql = f"SELECT COUNT(*) AS n FROM {quote(table.name)}" + (f" WHERE {where}" if where else "")
        return int(self._fetch(sql, params)["n"].iloc[0])

    # Type-2 task history.

    def apply_task_versions(self, versions: pd.DataFrame) -> int:
        """Merge task versions into task_history; returns how many history rows were written or removed.

        Each version is (task_uid, valid_from, due_date, start_date, status_category, percent_complete,
        deleted, source); `deleted` defaults to false and `source` to 'observed'. A version opens a new row
        only where a schedule-relevant field differs from the version in effect just before it, and every
        row's valid_to is the next row's valid_from (null for the open row). Versions older than stored ones
        (reconstructed from a tool's change log) are slotted in order; stored rows they make redundant are
        removed. A version at an existing (task_uid, valid_from) replaces it. Applying the same versions again
        changes nothing.
        """
        incoming = self._history_input(versions)
        if incoming.empty:
            return 0
        with self.transaction():
            stored = self._stored_history(incoming["task_uid"].drop_duplicates())
            wanted = _merge_history(stored, incoming)
            to_write, to_remove = _history_changes(stored, wanted)
            if not to_remove.empty:
                self._delete_keys("task_history", to_remove)
            self.upsert("task_history", to_write)
        return len(to_write) + len(to_remove)

    def _history_input(self, versions: pd.DataFrame) -> pd.DataFrame:
        table = TABLES["task_history"]
        versions = versions.copy()
        if "deleted" not in versions.columns:
            versions["deleted"] = False
        if "source" not in versions.columns:
            versions["source"] = "observed"
        for name in HISTORY_INPUT_COLUMNS:
            if name not in versions.columns:
                versions[name] = None
        versions = frames.coerce(table, versions[list(HISTORY_INPUT_COLUMNS)])
        versions["deleted"] = versions["deleted"].fillna(False)
        versions = self._keyed_rows(table, versions)
        return versions.reset_index(drop=True)

    def _stored_history(self, task_uids: pd.Series) -> pd.DataFrame:
        keys = pa.table({"task_uid": pa.array(task_uids.astype("str"), type=pa.string())})
        names = TABLES["task_history"].column_names
        with self._staged("_pmsync_keys", TABLES["task_history"], keys):
            result = self._fetch(
                f"SELECT {', '.join('h.' + quote(name) for name in names)} FROM task_history h"
                " JOIN _pmsync_keys k ON h.task_uid = k.task_uid"
            )
        if result.empty:
            return frames.empty_frame(TABLES["task_history"])
        return frames.coerce(TABLES["task_history"], result)

    def _delete_keys(self, table_name: str, keys: pd.DataFrame) -> None:
        table = schema_table(table_name)
        key_names = list(table.primary_key)
        data = frames.to_arrow(table, keys[key_names])
        matches = " AND ".join(f"t.{quote(name)} = k.{quote(name)}" for name in key_names)
        with self.transaction(), self._staged("_pmsync_keys", table, data):
            self._execute(
                f"DELETE FROM {quote(table.name)} t WHERE EXISTS (SELECT 1 FROM _pmsync_keys k WHERE {matches})"
            )

    def mark_deleted(self, connection: str, task_uids: Iterable[str], at: Any) -> int:
        """Record that these tasks of `connection` are gone from their tool: set tasks.deleted_at and open a
        deleted history version at `at`. Tasks already marked keep their first deleted_at. Returns how many
        tasks were newly marked."""
        uids = pd.Series(list(task_uids), dtype="str").drop_duplicates()
        if uids.empty:
            return 0
        at = pd.Timestamp(at)
        at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
        keys = pa.table({"task_uid": pa.array(uids, type=pa.string())})
        with self.transaction():
            with self._staged("_pmsync_keys", TABLES["tasks"], keys):
                newly = self._fetch(
                    "SELECT task_uid, due_date, start_date, status_category, percent_complete FROM tasks"
                    " WHERE connection = %s AND deleted_at IS NULL"
                    " AND task_uid IN (SELECT task_uid FROM _pmsync_keys)",
                    [connection],
                )
                self._execute(
                    "UPDATE tasks SET deleted_at = %s WHERE connection = %s AND deleted_at IS NULL"
                    " AND task_uid IN (SELECT task_uid FROM _pmsync_keys)",
                    [at.to_pydatetime(), connection],
                )
            if not newly.empty:
                self.apply_task_versions(newly.assign(valid_from=at, deleted=True, source="observed"))
        return len(newly)

    # Sync state.

    def get_cursor(self, connection: str, name: str) -> str | None:
        """The stored value of a connection's cursor, or None when it was never set."""
        rows = self._fetch(
            "SELECT value FROM sync_state WHERE connection = %s AND cursor_name = %s", [connection, name]
        )
        return None if rows.empty else rows["value"].iloc[0]

    def set_cursor(self, connection: str, name: str, value: str | None) -> None:
        """Store a cursor; inside a transaction it commits or rolls back with the rows it covers."""
        self.upsert(
            "sync_state",
            pd.DataFrame(
                {"connection": [connection], "cursor_name": [name], "value": [value], "updated_at": [_now()]}
            ),
        )

    def start_run(self, connection: str, mode: str, run_id: str | None = None, started_at: Any = None) -> str:
        """Open a sync_runs row with status 'running'; returns its run_id (a new uuid when none is given).

        Call it outside the sync's transaction so that a killed sync leaves its row behind.
        """
        run_id = run_id or uuid.uuid4().hex
        row = {
            "run_id": run_id,
            "connection": connection,
            "mode": mode,
            "started_at": started_at if started_at is not None else _now(),
            "status": "running",
        }
        self.upsert("sync_runs", pd.DataFrame([row]))
        return run_id

    def finish_run(
        self,
        run_id: str,
        connection: str,
        status: str = "succeeded",
        error: str | None = None,
        finished_at: Any = None,
        *,
        requests: int | None = None,
        requests_429: int | None = None,
        retries: int | None = None,
        records_pulled: int | None = None,
        records_loaded: int | None = None,
        records_quarantined: int | None = None,
        records_deleted: int | None = None,
    ) -> None:
        """Close a sync_runs row with its status ('succeeded' or 'failed'), error and counts; counts left None
        keep their stored value."""
        row: dict[str, Any] = {
            "run_id": run_id,
            "connection": connection,
            "status": status,
            "error": error,
            "finished_at": finished_at if finished_at is not None else _now(),
        }
        counts = {
            "requests": requests,
            "requests_429": requests_429,
            "retries": retries,
            "records_pulled": records_pulled,
            "records_loaded": records_loaded,
            "records_quarantined": records_quarantined,
            "records_deleted": records_deleted,
        }
        row.update({name: count for name, count in counts.items() if count is not None})
        updates = ", ".join(
            f"{quote(name)} = %({name})s" for name in row if name not in ("run_id", "connection")
        )
        with self.transaction():
            if self.count("sync_runs", "run_id = %s AND connection = %s", [run_id, connection]) == 0:
                raise ValueError(f"no sync run {run_id} for connection {connection} was started")
            self._execute(
                f"UPDATE sync_runs SET {updates} WHERE run_id = %(run_id)s AND connection = %(connection)s",
                row,
            )

    # Quarantine.

    def quarantine(self, records: pd.DataFrame) -> int:
        """Keep records that failed to normalize: connection, native_id, raw_payload (dict, list or JSON text)
        and reason, optionally run_id and quarantined_at. A record without a readable native_id is keyed by the
        digest of its payload. A record quarantined again replaces its earlier entry. Returns rows kept."""
        if records.empty:
            return 0
        records = records.copy()
        if "native_id" not in records.columns:
            records["native_id"] = None
        no_id = records["native_id"].isna()
        if no_id.any():
            records.loc[no_id, "native_id"] = records.loc[no_id, "raw_payload"].map(frames.payload_digest)
        records["native_id"] = records["native_id"].astype("str")
        if "quarantined_at" not in records.columns:
            records["quarantined_at"] = _now()
        return self.upsert("quarantine", records)

    def clear_quarantine(self, connection: str, native_ids: Iterable[str]) -> None:
        """Remove quarantine entries of records that have since loaded."""
        keys = pd.DataFrame({"connection": connection, "native_id": pd.Series(list(native_ids), dtype="str")})
        if not keys.empty:
            self._delete_keys("quarantine", keys)

    # Lifecycle.

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _lacks_required_columns(table: Table, names: Sequence[str]) -> bool:
    return any(not column.nullable and column.name not in names for column in table.columns)


def _merge_history(stored: pd.DataFrame, incoming: pd.DataFrame) -> pd.DataFrame:
    """The minimal version chain of stored plus incoming versions, with valid_to recomputed."""
    key = ["task_uid", "valid_from"]
    replaced = stored.merge(incoming[key], on=key, how="left", indicator=True)["_merge"].eq("both").to_numpy()
    merged = pd.concat([stored.loc[~replaced, list(incoming.columns)], incoming], ignore_index=True)
    merged = merged.sort_values(key, kind="stable").reset_index(drop=True)
    previous = merged.groupby("task_uid", sort=False)[list(SCHEDULE_FIELDS)].shift()
    first_of_task = merged["task_uid"].ne(merged["task_uid"].shift())
    changed = first_of_task.copy()
    for field in SCHEDULE_FIELDS:
        changed |= _differs(merged[field], previous[field])
    wanted = merged.loc[changed.to_numpy()].reset_index(drop=True)
    wanted["valid_to"] = wanted.groupby("task_uid", sort=False)["valid_from"].shift(-1)
    return wanted


def _history_changes(stored: pd.DataFrame, wanted: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to upsert, keys to delete) that turn the stored history into the wanted one."""
    key = ["task_uid", "valid_from"]
    compared = wanted.merge(stored, on=key, how="left", suffixes=("", "_stored"), indicator=True)
    is_new = compared["_merge"].eq("left_only").to_numpy()
    differs = pd.Series(is_new, index=compared.index)
    for field in (*SCHEDULE_FIELDS, "valid_to", "source"):
        differs |= _differs(compared[field], compared[field + "_stored"])
    to_write = wanted.loc[differs.to_numpy()]
    kept = stored.merge(wanted[key], on=key, how="left", indicator=True)["_merge"].eq("both").to_numpy()
    to_remove = stored.loc[~kept, key]
    return to_write, to_remove


def _differs(left: pd.Series, right: pd.Series) -> pd.Series:
    """Element-wise inequality where two nulls count as equal."""
    both_null = left.isna().to_numpy() & right.isna().to_numpy()
    equal = (left == right).astype("boolean").fillna(False).to_numpy(dtype=bool)
    return pd.Series(~(equal | both_null), index=left.index)
