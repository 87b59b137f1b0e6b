"""Storage: DuckDB embedded by default, PostgreSQL for shared deployments, behind one interface."""

from __future__ import annotations

from pathlib import Path

from warehouse.base import Warehouse, WarehouseError

__all__ = ["Warehouse", "WarehouseError", "duckdb_path", "open_warehouse"]


def duckdb_path(url: str, base_dir: str | Path | None = None) -> str:
    """The file a `duckdb:` URL names. `duckdb:///data/x.duckdb` is relative to `base_dir` (the configuration
    file's folder; the working directory when None), `duckdb:////abs/x.duckdb` is absolute, and
    `duckdb:///:memory:` is an in-memory warehouse."""
    rest = url.removeprefix("duckdb:")
    rest = rest.removeprefix("///") if rest.startswith("///") else rest.removeprefix("//")
    if rest == ":memory:":
        return rest
    if not rest:
        raise WarehouseError(
            f"The warehouse URL {url!r} names no file; write it as duckdb:///data/pmsync.duckdb."
        )
    path = Path(rest).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or ".").resolve() / path
    return str(path)


def open_warehouse(
    url: str, base_dir: str | Path | None = None, *, schema: str | None = None, migrate: bool = True
) -> Warehouse:
    """Open the warehouse a URL names and bring its tables up to date (unless `migrate` is False).

    `duckdb:///relative.duckdb`, `duckdb:////absolute.duckdb` or a plain file path ending in .duckdb / .db:
    DuckDB, relative paths resolved against `base_dir`. `postgresql://user@host:5432/db` (or `postgres://`):
    PostgreSQL, in `schema`, the URL's `?schema=` parameter, or the search_path of
    `?options=-csearch_path%3D<schema>`. Raises WarehouseError with one clear sentence when it cannot.
    """
    warehouse = _connect(url, base_dir, schema)
    if migrate:
        try:
            warehouse.migrate()
        except WarehouseError:
            warehouse.close()
            raise
        except Exception as error:
            warehouse.close()
            raise WarehouseError(
                f"Cannot prepare the tables of the warehouse {warehouse.location} ({error}); "
                "check that this user may create tables there."
            ) from error
    return warehouse


def _connect(url: str, base_dir: str | Path | None, schema: str | None) -> Warehouse:
    if url.startswith(("postgresql://", "postgres://")):
        from warehouse.postgres_backend import PostgresWarehouse

        return PostgresWarehouse(url, schema=schema)
    if url.startswith("duckdb:") or url.endswith((".duckdb", ".db")):
        from warehouse.duckdb_backend import DuckDBWarehouse

        return DuckDBWarehouse(
            duckdb_path(url, base_dir) if url.startswith("duckdb:") else _plain(url, base_dir)
        )
    raise WarehouseError(
        f"The warehouse URL {url!r} is neither duckdb:///path.duckdb nor postgresql://user@host:5432/db; "
        "fix the warehouse key in pmsync.yaml."
    )


def _plain(path: str, base_dir: str | Path | None) -> str:
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = Path(base_dir or ".").resolve() / resolved
    return str(resolved)
