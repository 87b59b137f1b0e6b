"""Versioned migrations, recorded in `schema_migrations`; re-opening a current warehouse applies nothing.

Migration 1 creates every table of mappings/schema.py. A later change to the schema appends a migration here
(for example `ALTER TABLE ... ADD COLUMN IF NOT EXISTS`, which both backends accept); nullable columns the schema
gained without one are added on open so that a warehouse never lags the code that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from mappings.schema import TABLES

if TYPE_CHECKING:
    from warehouse.base import Warehouse


@dataclass(frozen=True)
class Migration:
    """One schema change: its version (applied in ascending order), a name, and what it does."""

    version: int
    name: str
    apply: Callable[[Warehouse], None]


def _create_canonical_tables(warehouse: Warehouse) -> None:
    for table in TABLES.values():
        warehouse.execute(warehouse.create_table_sql(table))


MIGRATIONS: tuple[Migration, ...] = (Migration(1, "canonical schema", _create_canonical_tables),)


def migrate(warehouse: Warehouse) -> list[int]:
    """Apply the migrations the warehouse lacks, in one transaction; returns their versions."""
    with warehouse.transaction():
        warehouse._lock_for_migration()
        warehouse.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            f"version {warehouse.type_names['integer']} PRIMARY KEY,"
            f" name {warehouse.type_names['string']} NOT NULL,"
            f" applied_at {warehouse.type_names['timestamp']} NOT NULL)"
        )
        applied = set(warehouse.query("SELECT version FROM schema_migrations")["version"].astype(int))
        pending = [migration for migration in MIGRATIONS if migration.version not in applied]
        for migration in sorted(pending, key=lambda migration: migration.version):
            migration.apply(warehouse)
            warehouse.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                [migration.version, migration.name, pd.Timestamp.now(tz="UTC").to_pydatetime()],
            )
        _add_missing_nullable_columns(warehouse)
    return [migration.version for migration in pending]


def _add_missing_nullable_columns(warehouse: Warehouse) -> None:
    stored = warehouse.existing_tables()
    for table in TABLES.values():
        existing = stored.get(table.name, set())
        for column in table.columns:
            if column.name in existing:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"table {table.name} lacks the required column {column.name}; add a migration for it"
                )
            warehouse.execute(
                f'ALTER TABLE "{table.name}" ADD COLUMN IF NOT EXISTS "{column.name}"'
                f" {warehouse.type_names[column.type]}"
            )
