"""When syncs run: the whole job on the configuration's cron, one connection's assets when its tool changes, and
every failed run recorded in `sync_runs` so that `pmsync status` shows it."""
# No `from __future__ import annotations`: Dagster reads the decorated functions' annotations at runtime.

import hashlib
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from pipelines.defs.resources import PmsyncResource
from pipelines.location import SYNC_JOB, ingest_key, location_config, op_name, sync_job_tags

# Change probes are cheap (one small request), so a change starts a sync within a minute.
PROBE_INTERVAL_SECONDS = 30


def build_sync_job(tags: dict[str, str]) -> Any:
    """Every asset and check: pull all connections, compute the schedule, write back, report."""
    return dg.define_asset_job(SYNC_JOB, selection=dg.AssetSelection.all(), run_tags=tags,
                               description="The whole pmsync job, as `pmsync sync` then `pmsync push` run it.")


def connection_selection(connection_name: str) -> dg.AssetSelection:
    """One connection's ingest asset and everything computed from it."""
    return dg.AssetSelection.assets(ingest_key(connection_name)).downstream()


def change_sensor_name(connection_name: str) -> str:
    return f"{op_name(ingest_key(connection_name))}_changes"


def build_change_sensor(connection_name: str, tags: dict[str, str]) -> dg.SensorDefinition:
    """Asks the connection's tool every PROBE_INTERVAL_SECONDS whether anything changed past the stored cursor,
    and requests an incremental run of that connection's assets when it did (once per cursor)."""

    @dg.sensor(
        name=change_sensor_name(connection_name),
        target=connection_selection(connection_name),
        minimum_interval_seconds=PROBE_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts an incremental sync of {connection_name} when its tool reports a change.",
    )
    def changes(context: dg.SensorEvaluationContext, pmsync: PmsyncResource) -> dg.SensorResult | dg.SkipReason:
        try:
            probe = pmsync.probe_changes(connection_name)
        except Exception as exc:  # noqa: BLE001 - a busy DuckDB file or an unreachable tool: ask again next time
            return dg.SkipReason(pmsync.redact(f"could not probe {connection_name}: {type(exc).__name__}: {exc}"))
        if not probe.changed:
            return dg.SkipReason(f"{connection_name} has no changes since its cursor")
        cursor_digest = hashlib.sha256((probe.cursor or "").encode()).hexdigest()[:16]
        return dg.SensorResult(run_requests=[dg.RunRequest(
            run_key=f"{connection_name}:{cursor_digest}",
            tags={**tags, "pmsync/connection": connection_name, "pmsync/trigger": "change"},
        )])

    return changes


def build_failure_sensor(connection_names: list[str]) -> dg.SensorDefinition:
    """Records every failed run of this code location as failed `sync_runs` rows (one per connection affected)."""
    by_step = {op_name(ingest_key(name)): name for name in connection_names}
    by_key = {ingest_key(name): name for name in connection_names}

    @dg.run_failure_sensor(name="record_failed_runs", default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Records failed runs in sync_runs, where `pmsync status` shows them.")
    def record_failed_runs(context: dg.RunFailureSensorContext, pmsync: PmsyncResource) -> None:
        run = context.dagster_run
        failed_steps = [event.step_key for event in context.get_step_failure_events()]
        connections = [by_step[step] for step in failed_steps if step in by_step]
        if not connections:
            # The run failed after (or outside) ingest: every connection it synced is affected.
            selected = run.asset_selection
            connections = [name for key, name in by_key.items() if selected is None or key in selected]
        where = f" at {', '.join(failed_steps)}" if failed_steps else ""
        reason = _failure_message(context)
        pmsync.record_failed_run(run.run_id, connections, f"Dagster run {run.run_id} failed{where}: {reason}",
                                 started_at=datetime.now(UTC))
        context.log.info(f"recorded the failure of run {run.run_id} for {', '.join(connections)}")

    return record_failed_runs


def _failure_message(context: dg.RunFailureSensorContext) -> str:
    """The first step's error, else the run's own failure message."""
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        if error is not None:
            return error.message.strip()
    return context.failure_event.message or "unknown error"


@dg.definitions
def defs() -> dg.Definitions:
    config = location_config()
    names = [c.name for c in config.connections] if config is not None else []
    tags = sync_job_tags(config)
    sync_job = build_sync_job(tags)
    schedules = []
    if config is not None:
        schedules.append(dg.ScheduleDefinition(
            name="pmsync_sync_schedule", cron_schedule=config.sync.cron, job=sync_job,
            execution_timezone=config.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
            description="The whole sync on the configuration's sync.cron.",
        ))
    return dg.Definitions(
        jobs=[sync_job],
        schedules=schedules,
        sensors=[*(build_change_sensor(name, tags) for name in names), build_failure_sensor(names)],
    )
