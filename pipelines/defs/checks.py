"""Asset checks that guard what flows into write-back: a failing ERROR check blocks every asset downstream."""
# No `from __future__ import annotations`: Dagster reads the decorated functions' annotations at runtime.

import dagster as dg

from pipelines.defs.resources import PmsyncResource
from pipelines.location import LINKS, SCHEDULE, ingest_key, location_config

# Above this share of a connection's records failing to normalize, its mapping is wrong, not its data.
MAX_QUARANTINE_RATIO = 0.05


def build_quarantine_check(connection_name: str) -> dg.AssetChecksDefinition:
    """Blocks on a connection whose quarantined records exceed MAX_QUARANTINE_RATIO of what it holds."""

    @dg.asset_check(asset=ingest_key(connection_name), name="quarantine_ratio", blocking=True,
                    description=f"At most {MAX_QUARANTINE_RATIO:.0%} of the connection's records are quarantined.")
    def quarantine_ratio(pmsync: PmsyncResource) -> dg.AssetCheckResult:
        with pmsync.warehouse() as warehouse:
            quarantined = warehouse.count("quarantine", "connection = %s", [connection_name])
            loaded = warehouse.count("tasks", "connection = %s AND deleted_at IS NULL", [connection_name])
        ratio = quarantined / (quarantined + loaded) if quarantined + loaded else 0.0
        return dg.AssetCheckResult(
            passed=ratio <= MAX_QUARANTINE_RATIO,
            description=f"{quarantined} of {quarantined + loaded} records quarantined",
            metadata={"quarantined": quarantined, "loaded": loaded, "ratio": round(ratio, 4),
                      "threshold": MAX_QUARANTINE_RATIO},
        )

    return quarantine_ratio


@dg.asset_check(asset=LINKS, name="schema", blocking=True,
                description="Every warehouse table has the columns of the contract (mappings/schema.py).")
def schema_check(pmsync: PmsyncResource) -> dg.AssetCheckResult:
    from mappings.schema import TABLES

    with pmsync.warehouse() as warehouse:
        stored = warehouse.existing_tables()
    missing = {name: sorted(set(table.column_names) - stored.get(name, set())) for name, table in TABLES.items()}
    missing = {name: columns for name, columns in missing.items() if columns}
    return dg.AssetCheckResult(
        passed=not missing,
        description="; ".join(f"{name} lacks {', '.join(columns)}" for name, columns in missing.items())
        or f"all {len(TABLES)} tables match the contract",
        metadata={"tables missing columns": len(missing)},
    )


@dg.asset_check(asset=SCHEDULE, name="dangling_dependencies", blocking=True,
                description="Dependencies whose other end pmsync does not know (reported, not fatal).")
def dangling_dependencies_check(pmsync: PmsyncResource) -> dg.AssetCheckResult:
    from pmsync.links import dangling_links

    with pmsync.warehouse() as warehouse:
        dangling = dangling_links(warehouse)
    examples = (dangling["predecessor_uid"] + " -> " + dangling["successor_uid"]).head(10).tolist()
    return dg.AssetCheckResult(
        passed=dangling.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(dangling)} dangling dependencies",
        metadata={"dangling": len(dangling), "examples": dg.MetadataValue.json(examples)},
    )


@dg.asset_check(asset=SCHEDULE, name="cycles", blocking=True,
                description="Dependency cycles, whose links the schedule ignores (reported, not fatal).")
def cycles_check(pmsync: PmsyncResource) -> dg.AssetCheckResult:
    with pmsync.warehouse() as warehouse:
        if "schedule_cycles" not in warehouse.existing_tables():
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                       description="the warehouse has no schedule_cycles table to read cycles from")
        cycles = warehouse.query("SELECT cycle_id, count(*) AS tasks FROM schedule_cycles GROUP BY cycle_id"
                                 " ORDER BY cycle_id")
    return dg.AssetCheckResult(
        passed=cycles.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(cycles)} dependency cycles",
        metadata={"cycles": len(cycles), "examples": dg.MetadataValue.json(cycles["cycle_id"].head(10).tolist())},
    )


@dg.definitions
def defs() -> dg.Definitions:
    config = location_config()
    names = [c.name for c in config.connections] if config is not None else []
    return dg.Definitions(asset_checks=[*(build_quarantine_check(name) for name in names), schema_check,
                                        dangling_dependencies_check, cycles_check])
