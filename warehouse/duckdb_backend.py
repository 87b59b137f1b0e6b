"""The embedded DuckDB warehouse: one file, the default."""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pandas as pd
import pyarrow as pa

from mappings.schema import Table
from warehouse.base import Params, Warehouse, WarehouseError

_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%s")
# DuckDB checkpoints (writes the WAL into the file, indexes included) once the WAL passes this size; its default,
# 16 MB, checkpoints every four or five groups of a first sync. A first sync of 100,000 tasks wrote in 2.2 to 2.4 s
# (close included) at 16 MB and 1.9 to 2.1 s at 64 MB (bench/bench_load.py). Until a checkpoint, the committed rows
# also stay in memory, which bounds how far this may go.
CHECKPOINT_THRESHOLD = "64MB"


def to_duckdb_placeholders(sql: str) -> str:
    """Rewrite `%s` / `%(name)s` placeholders (and `%%`) into DuckDB's `?` / `$name` (and `%`)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(1):
            return "$" + match.group(1)
        return "?"

    return _PLACEHOLDER.sub(replace, sql)


class DuckDBWarehouse(Warehouse):
    """A warehouse in a DuckDB file (or in memory for ':memory:'). Timestamps are read and written in UTC."""

    dialect = "duckdb"
    type_names: ClassVar[dict[str, str]] = {
        "string": "VARCHAR",
        "date": "DATE",
        "timestamp": "TIMESTAMPTZ",
        "boolean": "BOOLEAN",
        "integer": "BIGINT",
        "float": "DOUBLE",
        "json": "JSON",
    }
    # Its INSERT ... ON CONFLICT costs about three plain INSERTs (and 1.5 ms more on a single row).
    upsert_checks_first = True

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection = _connect(self.path)
        except duckdb.Error as error:
            raise WarehouseError(
                f"Cannot open the DuckDB warehouse {self.path} ({_first_line(error)}); "
                "check that the path is writable and that no other pmsync process holds it open."
            ) from None
        self._connection.execute("SET TimeZone = 'UTC'")
        self._connection.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")

    @property
    def location(self) -> str:
        return self.path

    def _execute(self, sql: str, params: Params = None) -> None:
        self._connection.execute(to_duckdb_placeholders(sql), params)

    def _execute_count(self, sql: str, params: Params = None) -> int:
        rows = self._connection.execute(to_duckdb_placeholders(sql), params).fetchall()
        return int(rows[0][0]) if rows else 0

    def _fetch_scalar(self, sql: str, params: Params = None) -> Any:
        rows = self._connection.execute(to_duckdb_placeholders(sql), params).fetchall()
        return rows[0][0] if rows else None

    def _fetch(self, sql: str, params: Params = None) -> pd.DataFrame:
        return self._fetch_arrow(sql, params).to_pandas()

    def _fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        with warnings.catch_warnings():
            # The extra copy it warns about is of the result, which is what a frame needs anyway.
            warnings.simplefilter("ignore", UserWarning)
            return self._connection.execute(to_duckdb_placeholders(sql), params).to_arrow_table()

    @contextmanager
    def _staged(self, name: str, table: Table, data: pa.Table) -> Iterator[None]:
        self._connection.register(name, data)
        try:
            yield
        except BaseException:
            # In an aborted transaction unregistering fails too; the original error is the one to report.
            with suppress(duckdb.Error):
                self._connection.unregister(name)
            raise
        self._connection.unregister(name)

    def existing_tables(self) -> dict[str, set[str]]:
        """Every table of the warehouse's schema, with its columns, from DuckDB's own catalog function (about 20
        times faster than `information_schema.columns`, which every open asks for)."""
        tables: dict[str, set[str]] = {}
        for name, column in self._connection.execute(
                "SELECT table_name, column_name FROM duckdb_columns() "
                "WHERE database_name = current_database() AND schema_name = current_schema()").fetchall():
            tables.setdefault(name, set()).add(column)
        return tables

    def _lock_for_migration(self) -> None:
        """DuckDB lets one process write a file at a time, so migrations are already serialized."""

    def close(self) -> None:
        with _ATTACHING:
            self._connection.close()


# DuckDB attaches a file once per process and shares it between the connections to it; a connection opened while
# the last one to the same file is closing fails with "Unique file handle conflict". pmsync opens one connection per
# connection it syncs, in threads, so opening and closing are serialized here, and that conflict is retried.
_ATTACHING = threading.Lock()
ATTACH_ATTEMPTS = 5


def _connect(path: str) -> duckdb.DuckDBPyConnection:
    for attempt in range(ATTACH_ATTEMPTS):
        try:
            with _ATTACHING:
                return duckdb.connect(path)
        except duckdb.Error as error:
            if "Unique file handle conflict" not in str(error) or attempt == ATTACH_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
