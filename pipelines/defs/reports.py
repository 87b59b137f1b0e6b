"""The portfolio outputs: HTML dashboard, Excel workbook and MS Project XML (`pmsync report`).

The asset exists only once the engine's reports function does (see `pipelines.location.REPORTS_ENTRY`).
"""
# No `from __future__ import annotations`: Dagster reads the decorated functions' annotations at runtime.

import dagster as dg

from pipelines.defs.resources import PmsyncResource
from pipelines.location import (
    PROJECT_HEALTH,
    REPORTS,
    REPORTS_ENTRY,
    SCHEDULE,
    engine_function,
    location_config,
    log,
)


@dg.asset(
    key=REPORTS,
    deps=[SCHEDULE, PROJECT_HEALTH],
    group_name="reports",
    kinds={"html", "excel"},
    description="The consolidated schedule as an HTML dashboard, an Excel workbook and MS Project XML.",
)
def reports(pmsync: PmsyncResource) -> dg.MaterializeResult:
    files = pmsync.write_reports()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(files),
        **{path.name: dg.MetadataValue.path(str(path)) for path in files},
    })


@dg.definitions
def defs() -> dg.Definitions:
    if location_config() is None:
        return dg.Definitions()
    if engine_function(REPORTS_ENTRY) is None:
        log.info("reports asset left out: %s does not exist yet", ".".join(REPORTS_ENTRY))
        return dg.Definitions()
    return dg.Definitions(assets=[reports])
