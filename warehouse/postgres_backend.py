"""The PostgreSQL warehouse, for shared deployments, through psycopg 3.

Batches travel as CSV written by Arrow and loaded with COPY into a temporary table, from which INSERT ... ON
CONFLICT merges them: no row-by-row round trips.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql as pg_sql
from psycopg.types.string import TextLoader

from mappings.schema import Table
from warehouse.base import Params, Warehouse, WarehouseError, quote
from warehouse.frames import ARROW_TYPES


def split_schema(url: str) -> tuple[str, str | None]:
    """The URL without a `schema=` query parameter (which libpq does not know), and that schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), None)
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def redact(url: str) -> str:
    """The URL with its password replaced by ***, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresWarehouse(Warehouse):
    """A warehouse in a PostgreSQL database, in the schema named by `schema` (or `?schema=` in the URL, or
    the search_path), which is created when missing. Sessions run in UTC."""

    dialect = "postgresql"
    type_names: ClassVar[dict[str, str]] = {
        "string": "TEXT",
        "date": "DATE",
        "timestamp": "TIMESTAMPTZ",
        "boolean": "BOOLEAN",
        "integer": "BIGINT",
        "float": "DOUBLE PRECISION",
        "json": "JSONB",
    }

    def __init__(self, url: str, schema: str | None = None) -> None:
        super().__init__()
        conninfo, url_schema = split_schema(url)
        self.url = url
        self.schema = schema or url_schema
        try:
            self._connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as error:
            raise WarehouseError(
                f"Cannot connect to the PostgreSQL warehouse {redact(url)} ({_first_line(error)}); "
                "check the warehouse URL in pmsync.yaml and that the server is running."
            ) from None
        for json_type in ("json", "jsonb"):
            self._connection.adapters.register_loader(json_type, TextLoader)
        self._execute("SET TIME ZONE 'UTC'")
        self._use_schema()

    def _use_schema(self) -> None:
        if self.schema:
            self._execute(pg_sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pg_sql.Identifier(self.schema)))
            self._execute(pg_sql.SQL("SET search_path TO {}").format(pg_sql.Identifier(self.schema)))
            return
        current = self._fetch("SELECT current_schema() AS name")["name"].iloc[0]
        if current is None:
            # The search_path (e.g. from ?options=-csearch_path=...) names a schema that does not exist yet.
            path = self._fetch("SELECT current_setting('search_path') AS path")["path"].iloc[0]
            first = path.split(",")[0].strip().strip('"')
            self._execute(pg_sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pg_sql.Identifier(first)))
            current = first
        self.schema = current

    @property
    def location(self) -> str:
        return redact(self.url)

    def _execute(self, sql: str | pg_sql.Composable, params: Params = None) -> None:
        self._connection.execute(sql, params)  # type: ignore[arg-type]

    def _execute_count(self, sql: str, params: Params = None) -> int:
        with self._connection.cursor() as cursor:
            cursor.execute(sql, params)  # type: ignore[arg-type]
            return max(cursor.rowcount, 0)

    def _fetch(self, sql: str, params: Params = None) -> pd.DataFrame:
        with self._connection.cursor() as cursor:
            cursor.execute(sql, params)  # type: ignore[arg-type]
            names = [column.name for column in cursor.description or ()]
            return pd.DataFrame.from_records(cursor.fetchall(), columns=names)

    @contextmanager
    def _staged(self, name: str, table: Table, data: pa.Table) -> Iterator[None]:
        columns = ", ".join(
            f"{quote(column)} {self.type_names[table.column(column).type]}" for column in data.column_names
        )
        with self.transaction():
            self._execute(f"DROP TABLE IF EXISTS {quote(name)}")
            self._execute(f"CREATE TEMP TABLE {quote(name)} ({columns}) ON COMMIT DROP")
            self._copy_in(name, table, data)
            yield
            self._execute(f"DROP TABLE IF EXISTS {quote(name)}")

    def _copy_in(self, name: str, table: Table, data: pa.Table) -> None:
        # Arrow quotes every string and leaves nulls bare, which is exactly how COPY's CSV tells them apart.
        data = data.cast(
            pa.schema([(column, ARROW_TYPES[table.column(column).type]) for column in data.column_names])
        )
        buffer = io.BytesIO()
        pa_csv.write_csv(data, buffer, pa_csv.WriteOptions(include_header=False))
        columns = ", ".join(quote(column) for column in data.column_names)
        statement = f"COPY {quote(name)} ({columns}) FROM STDIN (FORMAT csv)"
        with self._connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(buffer.getbuffer())

    def _lock_for_migration(self) -> None:
        self._execute("SELECT pg_advisory_xact_lock(hashtext('pmsync-migrations:' || current_schema()))")

    def close(self) -> None:
        self._connection.close()


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
