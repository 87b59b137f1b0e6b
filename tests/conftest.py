"""Shared test setup: the sandbox fixtures (`sandbox`, `shared_sandbox`) and the warehouse backends.

`backend` runs a test on DuckDB (a file) and on PostgreSQL (127.0.0.1:5432, database `test`, a fresh schema per
test, dropped afterwards; skipped with the reason when no server answers).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from warehouse import Warehouse, open_warehouse

pytest_plugins = ["sandbox.pytest_plugin"]

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_unavailable_reason() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it answers."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL at 127.0.0.1:5432 database test does not answer: {str(error).strip()[:200]}"


@dataclass
class Backend:
    """How a test opens its warehouse, and re-opens it to check what persisted."""

    name: str
    url: str
    base_dir: Path
    schema: str | None = None

    def open(self) -> Warehouse:
        return open_warehouse(self.url, self.base_dir, schema=self.schema)

    @property
    def config_url(self) -> str:
        """The warehouse as a pmsync.yaml `warehouse:` value (absolute DuckDB path, or PostgreSQL with ?schema=)."""
        if self.name == "duckdb":
            return f"duckdb:///{self.base_dir / 'warehouse' / 'pmsync.duckdb'}"
        return f"{self.url}?schema={self.schema}"


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "duckdb":
        yield Backend("duckdb", "duckdb:///warehouse/pmsync.duckdb", tmp_path)
        return
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    schema = f"pmsync_test_{uuid.uuid4().hex[:12]}"
    yield Backend("postgres", POSTGRES_URL, tmp_path, schema)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def warehouse(backend: Backend) -> Iterator[Warehouse]:
    opened = backend.open()
    yield opened
    opened.close()


def incremental_sync(config, emulator, route: str):
    """Sync a configuration's one connection incrementally; returns its SyncResult and how many `route` requests
    the emulator served for it (the write-back tests' measure of what the sync read again)."""
    from pmsync.run import run_sync

    before = emulator.stats.by_route[route]
    outcome = run_sync(config)
    assert outcome.ok, outcome.failures
    result, = outcome.results
    assert result.mode == "incremental"
    return result, emulator.stats.by_route[route] - before
