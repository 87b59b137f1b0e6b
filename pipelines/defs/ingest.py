"""One ingest asset per configured connection: pull, normalize and load its tasks (`pmsync sync --connection`)."""
# No `from __future__ import annotations`: Dagster reads the decorated functions' annotations at runtime.

import dagster as dg

from pipelines.defs.resources import PmsyncResource
from pipelines.location import ingest_key, location_config

# Connectors already absorb 429s and transient errors; a step retry covers a tool being down for a while.
INGEST_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)


class IngestConfig(dg.Config):
    """Run configuration of an ingest step."""

    full: bool = False
    """Pull everything again instead of what changed since the cursor."""


def build_ingest_asset(connection_name: str, tool: str) -> dg.AssetsDefinition:
    """The asset of one connection's tasks, with the tool as its kind and the tool's API pool."""

    @dg.asset(
        key=ingest_key(connection_name),
        group_name="ingest",
        kinds={tool},
        pool=f"{tool}_api",
        retry_policy=INGEST_RETRY,
        description=f"Tasks of {connection_name} ({tool}), pulled incrementally, normalized and loaded.",
        tags={"pmsync/connection": connection_name},
    )
    def ingest(context: dg.AssetExecutionContext, config: IngestConfig, pmsync: PmsyncResource) -> dg.MaterializeResult:
        try:
            ingested = pmsync.sync(connection_name, full=config.full)
        except Exception as exc:  # noqa: BLE001 - every failure is re-raised, redacted
            # The message may quote a URL with credentials in it; the event log must not.
            raise dg.Failure(description=pmsync.redact(_sentence(exc)), allow_retries=is_transient(exc)) from None
        result = ingested.result
        context.log.info(
            f"{connection_name}: {result.mode} sync loaded {result.loaded} tasks in {result.requests} requests"
        )
        return dg.MaterializeResult(metadata={
            "dagster/row_count": ingested.live_tasks,
            "mode": result.mode,
            "requests": result.requests,
            "429s absorbed": result.throttled,
            "retries": result.retries,
            "records pulled": result.pulled,
            "records loaded": result.loaded,
            "quarantined": result.quarantined,
            "deleted": result.deleted,
            "cursor": dg.MetadataValue.json(_json(ingested.cursor)),
            "sync run": result.run_id,
        })

    return ingest


def is_transient(error: Exception) -> bool:
    """Whether retrying the step may help: not for a wrong configuration, mapping or missing connector."""
    from mappings.mapping import MappingError
    from pmsync.errors import ConfigError

    return not isinstance(error, (ConfigError, MappingError, ImportError))


def _sentence(error: Exception) -> str:
    from pmsync.errors import PmsyncError

    return str(error) if isinstance(error, PmsyncError) else f"{type(error).__name__}: {error}"


def _json(text: str | None) -> dict | list:
    import orjson

    value = orjson.loads(text) if text else {}
    return value if isinstance(value, (dict, list)) else {"value": value}


@dg.definitions
def defs() -> dg.Definitions:
    config = location_config()
    connections = config.connections if config is not None else []
    return dg.Definitions(assets=[build_ingest_asset(c.name, c.tool) for c in connections])
