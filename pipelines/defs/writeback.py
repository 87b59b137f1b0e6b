"""One write-back asset per connection: the schedule and slippage pushed into its tool (`pmsync push`).

They exist only once the engine's write-back function does (see `pipelines.location.WRITEBACK_ENTRY`).
"""
# No `from __future__ import annotations`: Dagster reads the decorated functions' annotations at runtime.

import dagster as dg

from pipelines.defs.resources import PmsyncResource
from pipelines.location import (
    PROJECT_HEALTH,
    SCHEDULE,
    WRITEBACK_ENTRY,
    engine_function,
    location_config,
    log,
    writeback_key,
)

WRITEBACK_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)


def build_writeback_asset(connection_name: str, tool: str) -> dg.AssetsDefinition:
    """What pmsync last wrote into one connection's tool; blocked by failing checks upstream."""

    @dg.asset(
        key=writeback_key(connection_name),
        deps=[SCHEDULE, PROJECT_HEALTH],
        group_name="writeback",
        kinds={tool},
        pool=f"{tool}_api",
        retry_policy=WRITEBACK_RETRY,
        description=f"Schedule and slippage written back into {connection_name} ({tool}); idempotent.",
        tags={"pmsync/connection": connection_name},
    )
    def writeback(pmsync: PmsyncResource) -> dg.MaterializeResult:
        ledger = pmsync.push(connection_name)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": ledger.targets,
            **{f"targets {status}": count for status, count in sorted(ledger.by_status.items())},
        })

    return writeback


@dg.definitions
def defs() -> dg.Definitions:
    config = location_config()
    if config is None:
        return dg.Definitions()
    if engine_function(WRITEBACK_ENTRY) is None:
        log.info("write-back assets left out: %s does not exist yet", ".".join(WRITEBACK_ENTRY))
        return dg.Definitions()
    return dg.Definitions(assets=[build_writeback_asset(c.name, c.tool) for c in config.connections])
