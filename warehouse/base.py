"""The warehouse interface: everything the engine stores goes through these operations, on either backend.

Backends supply a handful of primitives (run SQL, count the rows it changed, fetch a frame or an Arrow table,
stage an Arrow table as a relation); every operation here is written once, in SQL that DuckDB and PostgreSQL
both accept. Parameters in SQL passed by callers use the `%s` / `%(name)s` style on both backends. Rows travel
as Arrow tables (pandas frames are converted once, on the way in), so a load costs a few statements whatever
its size.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mappings.schema import SCHEDULE_FIELDS, TABLES, Table
from mappings.schema import table as schema_table
from pmsync.errors import PmsyncError
from warehouse import frames

Params = Sequence[Any] | Mapping[str, Any] | None
Rows = pd.DataFrame | pa.Table

HISTORY_INPUT_COLUMNS = ("task_uid", "valid_from", *SCHEDULE_FIELDS, "source")
# An upsert counts its stored keys first (where the backend asks for it) when it holds at least 1/64 of the table:
# the count's scan of the table then costs less than what a plain INSERT saves over ON CONFLICT (measured on
# DuckDB: about 7 us a row saved, 20 ns a stored row scanned; their fixed costs are alike).
COUNT_FIRST_SHARE = 64


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
    # Whether upserts count the stored keys first to use a plain INSERT or UPDATE where they can (see upsert).
    upsert_checks_first: bool = False

    def __init__(self) -> None:
        self._transaction_depth = 0
        self._row_counts: dict[str, int] = {}

    # Backend primitives.

    @abstractmethod
    def _execute(self, sql: str, params: Params = None) -> None:
        """Run one statement whose result is not needed."""

    @abstractmethod
    def _execute_count(self, sql: str, params: Params = None) -> int:
        """Run one INSERT, UPDATE or DELETE and return how many rows it wrote or removed."""

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

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        """The rows of any query as an Arrow table (no frame built: cheaper for a few columns read once)."""
        return self._fetch_arrow(sql, params)

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

    def upsert(self, table_name: str, rows: Rows, *, stored: int | None = None) -> int:
        """Insert the rows, or update the stored rows with the same primary key; returns rows written.

        `rows` is a pandas frame or an Arrow table (which goes to the database as it is, column for column). It may
        hold a subset of the table's columns (it must hold the key); columns it lacks keep their stored values on
        update. When the rows repeat a key, the last one wins. Write-once columns keep the value they were first
        given. A caller that has just read, in the same transaction, how many of the rows' keys are stored may
        say so in `stored`, which spares a backend that would count them (see `upsert_checks_first`).
        """
        return self._upsert(schema_table(table_name), rows, stored)[0]

    def _upsert(self, table: Table, rows: Rows, stored: int | None = None) -> tuple[int, int | None]:
        """`upsert`: (rows written, how many of them were stored before where that was counted or given, else
        None)."""
        data = self._keyed_arrow(table, rows)
        if data.num_rows == 0:
            return 0, None
        with self.transaction(), self._staged("_pmsync_incoming", table, data):
            counted = self._merge_staged(table, data.column_names, "_pmsync_incoming", data.num_rows, stored)
        return data.num_rows, counted

    def _merge_staged(
        self, table: Table, names: Sequence[str], source: str, rows: int, stored: int | None = None
    ) -> int | None:
        """Upsert the staged relation `source` (`rows` rows, columns `names`, `stored` of them already stored when
        known) into the table; returns how many of the rows were stored before, where that was counted (or given),
        else None."""
        if (self.upsert_checks_first and not _lacks_required_columns(table, names)
                and (stored is not None or self._worth_counting(table, rows))):
            # Where INSERT ... ON CONFLICT costs several times a plain INSERT or UPDATE (DuckDB), count the keys
            # already stored first: all new (a first sync) or all stored (a re-read) takes the cheap statement.
            if stored is None:
                matches = " AND ".join(f"t.{quote(key)} = s.{quote(key)}" for key in table.primary_key)
                stored = self._fetch_scalar(
                    f"SELECT COUNT(*) AS n FROM {quote(source)} AS s"
                    f" WHERE EXISTS (SELECT 1 FROM {quote(table.name)} AS t WHERE {matches})"
                )
            if stored == 0:
                self._execute(
                    f"INSERT INTO {quote(table.name)} ({_column_list(names)}) SELECT {_column_list(names)}"
                    f" FROM {quote(source)}"
                )
                if table.name in self._row_counts:
                    self._row_counts[table.name] += rows
                return stored
            if stored == rows:
                self._execute(self._update_then_insert_sql(table, names, source)[0])
                return stored
        if _lacks_required_columns(table, names):
            # PostgreSQL checks NOT NULL on the proposed row before ON CONFLICT, so partial rows update
            # the stored ones instead; any that are new fail on the missing columns, as they should.
            for statement in self._update_then_insert_sql(table, names, source):
                self._execute(statement)
        else:
            self._execute(self._upsert_sql(table, names, source))
        return stored

    def upsert_tasks(self, tasks: Rows, versions: Rows | None) -> int:
        """Upsert task rows (as `upsert` does) and merge their history versions (as `apply_task_versions` does),
        in one transaction; returns the task rows written.

        History is written only for stored tasks (here, for the tasks just upserted), so where the upsert counted
        the tasks already stored and found none (a first sync on DuckDB), they have no history yet and it is not
        read back: about a sixth of the write of a first sync.
        """
        with self.transaction():
            written, stored = self._upsert(TABLES["tasks"], tasks)
            if written and versions is not None:
                self.apply_task_versions(versions, tasks_new=stored == 0)
        return written

    def _worth_counting(self, table: Table, rows: int) -> bool:
        """Whether counting the stored keys of `rows` staged rows costs less than it may save.

        The count scans the table while ON CONFLICT probes its index, so it pays for batches that are large
        against the table (a first sync, a small warehouse) and not for a few rows into a large table (an
        incremental sync). The table's size is read once and then kept up to date with this object's own plain
        inserts: an estimate is enough to choose.
        """
        known = self._row_counts.get(table.name)
        if known is None:
            known = int(self._fetch_scalar(f"SELECT COUNT(*) FROM {quote(table.name)}"))
            self._row_counts[table.name] = known
        return rows * COUNT_FIRST_SHARE >= known

    def _keyed_arrow(self, table: Table, rows: Rows) -> pa.Table:
        """The rows as an Arrow table of the schema's types, keys present and not null, one row per key."""
        if isinstance(rows, pd.DataFrame):
            return frames.to_arrow(table, self._keyed_rows(table, rows))
        missing = [key for key in table.primary_key if key not in rows.column_names]
        if missing:
            raise ValueError(f"rows for {table.name} lack its key columns {missing}")
        if any(rows.column(key).null_count for key in table.primary_key):
            raise ValueError(f"rows for {table.name} have an empty key ({', '.join(table.primary_key)})")
        return frames.last_per_key(frames.arrow_table(table, rows), table.primary_key)

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

    def apply_task_versions(self, versions: Rows, *, tasks_new: bool = False) -> int:
        """Merge task versions into task_history; returns how many history rows were written or removed.

        Each version is (task_uid, valid_from, due_date, start_date, status_category, percent_complete,
        deleted, source); `deleted` defaults to false and `source` to 'observed'. A version opens a new row
        only where a schedule-relevant field differs from the version in effect just before it, and every
        row's valid_to is the next row's valid_from (null for the open row). Versions older than stored ones
        (reconstructed from a tool's change log) are slotted in order; stored rows they make redundant are
        removed. A version at an existing (task_uid, valid_from) replaces it. Applying the same versions again
        changes nothing. `tasks_new` says that none of the tasks has stored history (`upsert_tasks` knows when), so
        none is read.
        """
        incoming = self._history_input(versions)
        if incoming.num_rows == 0:
            return 0
        with self.transaction():
            if tasks_new:
                stored = frames.empty_arrow(TABLES["task_history"])
            else:
                stored = self._stored_history(pc.unique(incoming.column("task_uid")))
            to_write, to_remove, rewritten = _history_changes(stored, incoming)
            if to_remove.num_rows:
                self._delete_keys("task_history", to_remove)
            if to_write.num_rows:
                with self._staged("_pmsync_incoming", TABLES["task_history"], to_write):
                    self._merge_staged(TABLES["task_history"], to_write.column_names, "_pmsync_incoming",
                                       to_write.num_rows, rewritten)
        return to_write.num_rows + to_remove.num_rows

    def _stored_history(self, task_uids: pa.Array) -> pa.Table:
        """Every stored version of these tasks, as Arrow columns of the schema's types."""
        table = TABLES["task_history"]
        with self._staged("_pmsync_keys", table, pa.table({"task_uid": task_uids})):
            stored = self._fetch_arrow(
                f"SELECT {', '.join('h.' + quote(name) for name in table.column_names)} FROM task_history h"
                " WHERE h.task_uid IN (SELECT task_uid FROM _pmsync_keys)"
            )
        return frames.arrow_table(table, stored)

    def _fetch_scalar(self, sql: str, params: Params = None) -> Any:
        """The first value of the first row of a query (None when it returns no rows)."""
        rows = self._fetch(sql, params)
        return None if rows.empty else rows.iloc[0, 0]

    def _fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        """Run one query and return its rows as an Arrow table (backends with an Arrow result override this)."""
        return pa.Table.from_pandas(self._fetch(sql, params), preserve_index=False)

    def _history_input(self, versions: Rows) -> pa.Table:
        """The versions as an Arrow table of HISTORY_INPUT_COLUMNS, `deleted` false and `source` 'observed' by
        default, one row per (task_uid, valid_from) (the last one given)."""
        table = TABLES["task_history"]
        if isinstance(versions, pd.DataFrame):
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
            return frames.to_arrow(table, self._keyed_rows(table, versions))
        n = versions.num_rows
        defaults = {"deleted": pa.repeat(pa.scalar(False), n), "source": pa.repeat(pa.scalar("observed"), n)}
        columns = {}
        for name in HISTORY_INPUT_COLUMNS:
            if name in versions.column_names:
                columns[name] = versions.column(name)
            else:
                columns[name] = defaults.get(name, pa.nulls(n, frames.ARROW_TYPES[table.column(name).type]))
        columns["deleted"] = pc.fill_null(columns["deleted"], False)
        return self._keyed_arrow(table, pa.table(columns))

    def _delete_keys(self, table_name: str, keys: Rows) -> None:
        table = schema_table(table_name)
        key_names = list(table.primary_key)
        if isinstance(keys, pd.DataFrame):
            data = frames.to_arrow(table, keys[key_names])
        else:
            data = frames.arrow_table(table, keys.select(key_names))
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
        # One row: a statement with parameters costs a fraction of staging a relation for it.
        at = _now().to_pydatetime()
        if not self.upsert_checks_first:
            self.execute(
                "INSERT INTO sync_state (connection, cursor_name, value, updated_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (connection, cursor_name) DO UPDATE SET value = EXCLUDED.value,"
                " updated_at = EXCLUDED.updated_at",
                [connection, name, value, at],
            )
            return
        # Where ON CONFLICT is dear (DuckDB, which also takes one writer at a time): the cursor is usually there
        # already, so the UPDATE alone does.
        with self.transaction():
            updated = self._execute_count(
                "UPDATE sync_state SET value = %s, updated_at = %s WHERE connection = %s AND cursor_name = %s",
                [value, at, connection, name],
            )
            if not updated:
                self._execute(
                    "INSERT INTO sync_state (connection, cursor_name, value, updated_at) VALUES (%s, %s, %s, %s)",
                    [connection, name, value, at],
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

    def clear_quarantine(self, connection: str, native_ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> None:
        """Remove quarantine entries of records that have since loaded."""
        if isinstance(native_ids, (pa.Array, pa.ChunkedArray)):
            ids = native_ids.cast(pa.string())
        else:
            ids = pa.array([str(native_id) for native_id in native_ids], pa.string())
        # Most syncs have nothing quarantined: asking costs less than staging the ids to delete nothing.
        if len(ids) and self._fetch_scalar("SELECT 1 AS found FROM quarantine WHERE connection = %s LIMIT 1",
                                           [connection]) is not None:
            self._delete_keys("quarantine", pa.table({"connection": pa.repeat(pa.scalar(connection), len(ids)),
                                                      "native_id": ids}))

    # Lifecycle.

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _lacks_required_columns(table: Table, names: Sequence[str]) -> bool:
    return any(not column.nullable and column.name not in names for column in table.columns)


_HISTORY_KEY = ["task_uid", "valid_from"]


def _history_changes(stored: pa.Table, incoming: pa.Table) -> tuple[pa.Table, pa.Table, int]:
    """(versions to upsert, keys to delete, how many of the versions to upsert are stored) that turn the stored
    history of the incoming versions' tasks into their minimal chain, computed on whole Arrow columns.

    The chain is the stored versions the incoming ones do not replace plus the incoming ones, in time order,
    keeping a version only where a schedule field differs from the one before it (null equal to null), each
    closed by the next one kept.
    """
    names = list(HISTORY_INPUT_COLUMNS)
    merged = pa.concat_tables([
        stored.select(names).append_column("_incoming", pa.repeat(pa.scalar(False), stored.num_rows)),
        incoming.select(names).append_column("_incoming", pa.repeat(pa.scalar(True), incoming.num_rows)),
    ])
    merged = merged.take(pc.sort_indices(merged, sort_keys=[
        ("task_uid", "ascending"), ("valid_from", "ascending"), ("_incoming", "ascending")]))
    same_task = _same_as_previous(merged.column("task_uid"))
    if stored.num_rows:
        # Keys are unique on each side, so a stored version an incoming one replaces sorts right before it.
        replaced = np.append(same_task[1:] & _same_as_previous(merged.column("valid_from"))[1:], False)
        if replaced.any():
            merged = merged.filter(pa.array(~replaced))
            same_task = _same_as_previous(merged.column("task_uid"))
    opens = ~same_task
    for name in SCHEDULE_FIELDS:
        opens[1:] |= _differs(merged.column(name)[1:], merged.column(name)[:-1])
    wanted = merged.filter(pa.array(opens)).drop_columns(["_incoming"])
    starts = wanted.column("valid_from")
    followed = np.append(_same_as_previous(wanted.column("task_uid"))[1:], False)
    valid_to = pc.if_else(pa.array(followed), pa.concat_arrays([_single(starts)[1:], pa.nulls(1, starts.type)]),
                          pa.scalar(None, starts.type)) if wanted.num_rows else pa.nulls(0, starts.type)
    wanted = wanted.add_column(2, "valid_to", valid_to)
    if not stored.num_rows:
        return wanted, stored.select(_HISTORY_KEY), 0
    compared = [name for name in wanted.column_names if name not in _HISTORY_KEY]
    before = stored.select([*_HISTORY_KEY, *compared]).rename_columns(
        [*_HISTORY_KEY, *(f"_stored_{name}" for name in compared)]
    ).append_column("_stored", pa.repeat(pa.scalar(True), stored.num_rows))
    joined = wanted.join(before, keys=_HISTORY_KEY, join_type="left outer", use_threads=False)
    new = joined.column("_stored").is_null().to_numpy(zero_copy_only=False)
    write = new.copy()
    for name in compared:
        write |= _differs(joined.column(name), joined.column(f"_stored_{name}"))
    to_write = joined.filter(pa.array(write)).select(wanted.column_names)
    to_remove = stored.select(_HISTORY_KEY).join(wanted.select(_HISTORY_KEY), keys=_HISTORY_KEY,
                                                 join_type="left anti", use_threads=False)
    return to_write, to_remove, int((write & ~new).sum())


def _single(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.Array):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _same_as_previous(column: pa.ChunkedArray) -> np.ndarray:
    """Where a value equals the one before it (never for the first)."""
    same = np.zeros(len(column), dtype=bool)
    if len(column) > 1:
        same[1:] = pc.fill_null(pc.equal(column[1:], column[:-1]), False).to_numpy(zero_copy_only=False)
    return same


def _differs(left: pa.ChunkedArray, right: pa.ChunkedArray) -> np.ndarray:
    """Element-wise inequality where two nulls count as equal."""
    equal = pc.fill_null(pc.equal(left, right), False)
    both_null = pc.and_(left.is_null(), right.is_null())
    return pc.invert(pc.or_(equal, both_null)).to_numpy(zero_copy_only=False)
