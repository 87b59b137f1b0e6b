"""The canonical warehouse schema: the one source of truth for table names, column names, types and keys.

Column names follow the contract in PRODUCT.md; columns beyond it are marked as such in their docs. The warehouse
derives its DDL for DuckDB and PostgreSQL from these definitions, and frames are coerced to `pandas_dtypes`.
"""

from __future__ import annotations

from dataclasses import dataclass

STRING = "string"
DATE = "date"
TIMESTAMP = "timestamp"  # always UTC
BOOLEAN = "boolean"
INTEGER = "integer"
FLOAT = "float"
JSON = "json"  # JSON text; frames may also hold dicts and lists, which the warehouse serializes
LOGICAL_TYPES = (STRING, DATE, TIMESTAMP, BOOLEAN, INTEGER, FLOAT, JSON)

# Dates are naive midnight datetimes so that schedule arithmetic (due - start) works on whole columns.
PANDAS_DTYPES = {
    STRING: "str",
    DATE: "datetime64[us]",
    TIMESTAMP: "datetime64[us, UTC]",
    BOOLEAN: "boolean",
    INTEGER: "Int64",
    FLOAT: "float64",
    JSON: "str",
}

STATUS_CATEGORIES = ("todo", "in_progress", "done", "cancelled")
SCHEDULE_STATES = ("done_on_time", "done_late", "late", "at_risk", "on_track", "unscheduled")
HEALTH_VALUES = ("green", "amber", "red")
DEPENDENCY_ORIGINS = ("native", "remote_link", "config")
SYNC_MODES = ("full", "incremental")
RUN_STATUSES = ("running", "succeeded", "failed")
HISTORY_SOURCES = ("tool_history", "observed")

# The fields whose change makes a new task_history version.
SCHEDULE_FIELDS = ("due_date", "start_date", "status_category", "percent_complete", "deleted")


@dataclass(frozen=True)
class Column:
    """One column: its contract name, logical type, whether it may be null, and what it means."""

    name: str
    type: str
    nullable: bool = True
    doc: str = ""
    values: tuple[str, ...] = ()  # the allowed values of a categorical string column, for validation
    write_once: bool = False  # an upsert keeps the stored value once set (e.g. first_seen_at)

    def __post_init__(self) -> None:
        if self.type not in LOGICAL_TYPES:
            raise ValueError(f"column {self.name} has unknown logical type {self.type!r}")


@dataclass(frozen=True)
class Table:
    """One warehouse table: ordered columns and the primary key that upserts are keyed on."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    doc: str = ""

    def __post_init__(self) -> None:
        names = self.column_names
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name} repeats a column name")
        missing = [key for key in self.primary_key if key not in names]
        if missing:
            raise ValueError(f"table {self.name} has primary key columns {missing} that it does not define")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        """The column called `name`; KeyError naming the table when there is none."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name} has no column {name!r}")

    def pandas_dtypes(self) -> dict[str, str]:
        """The pandas dtype of every column, in table order."""
        return {column.name: PANDAS_DTYPES[column.type] for column in self.columns}


def _col(name: str, type_: str, nullable: bool = True, doc: str = "", **extra: object) -> Column:
    return Column(name, type_, nullable, doc, **extra)  # type: ignore[arg-type]


PROJECTS = Table(
    "projects",
    (
        _col("project_uid", STRING, False, "`{connection}:{native id}`"),
        _col("connection", STRING, False),
        _col("tool", STRING, False),
        _col("native_id", STRING, False),
        _col("name", STRING),
        _col("url", STRING),
        _col("deleted_at", TIMESTAMP, doc="beyond the contract: when the project was last seen gone"),
        _col("first_seen_at", TIMESTAMP, doc="beyond the contract", write_once=True),
        _col("last_synced_at", TIMESTAMP, doc="beyond the contract"),
        _col("extra", JSON, doc="beyond the contract: tool-specific fields worth keeping"),
    ),
    ("project_uid",),
    "One row per project, board, plan or file of every connection.",
)

TASKS = Table(
    "tasks",
    (
        _col("task_uid", STRING, False, "`{connection}:{native id}`"),
        _col("connection", STRING, False),
        _col("tool", STRING, False),
        _col("native_id", STRING, False),
        _col("key", STRING, doc="the human key, e.g. PLAT-42"),
        _col("url", STRING),
        _col("project_uid", STRING),
        _col("parent_uid", STRING),
        _col("title", STRING),
        _col("status", STRING, doc="the status as the tool says it"),
        _col("status_category", STRING, values=STATUS_CATEGORIES),
        _col("assignee", STRING),
        _col("assignee_email", STRING),
        _col("is_milestone", BOOLEAN),
        _col("start_date", DATE),
        _col("due_date", DATE),
        _col("completed_at", TIMESTAMP),
        _col("created_at", TIMESTAMP),
        _col("updated_at", TIMESTAMP),
        _col("estimate_hours", FLOAT),
        _col("percent_complete", FLOAT, doc="0 to 100"),
        _col("labels", JSON, doc="a JSON list of strings"),
        _col("deleted_at", TIMESTAMP),
        _col("first_seen_at", TIMESTAMP, write_once=True),
        _col("last_synced_at", TIMESTAMP),
        _col("story_points", FLOAT, doc="beyond the contract"),
        _col("assignee_uid", STRING, doc="beyond the contract: people.person_uid"),
        _col("extra", JSON, doc="beyond the contract: tool-specific fields worth keeping"),
    ),
    ("task_uid",),
    "Current state, one row per task of every tool.",
)

DEPENDENCIES = Table(
    "dependencies",
    (
        _col("predecessor_uid", STRING, False),
        _col("successor_uid", STRING, False),
        _col("kind", STRING, False, "e.g. finish_to_start, blocks"),
        _col("origin", STRING, False, values=DEPENDENCY_ORIGINS),
        _col(
            "connection", STRING, doc="beyond the contract: the connection that reported it; null for config"
        ),
        _col("lag_days", FLOAT, doc="beyond the contract"),
        _col("last_seen_at", TIMESTAMP, doc="beyond the contract"),
    ),
    ("predecessor_uid", "successor_uid", "kind"),
    "Task dependencies within and across tools.",
)

TASK_HISTORY = Table(
    "task_history",
    (
        _col("task_uid", STRING, False),
        _col("valid_from", TIMESTAMP, False),
        _col("valid_to", TIMESTAMP, doc="null for the open (current) version"),
        _col("due_date", DATE),
        _col("start_date", DATE),
        _col("status_category", STRING, values=STATUS_CATEGORIES),
        _col("percent_complete", FLOAT),
        _col("deleted", BOOLEAN, False),
        _col("source", STRING, False, "beyond the contract", values=HISTORY_SOURCES),
    ),
    ("task_uid", "valid_from"),
    "Type-2 history of the schedule-relevant fields, including versions read from the tools' own change logs.",
)

SCHEDULE = Table(
    "schedule",
    (
        _col("task_uid", STRING, False),
        _col("project_uid", STRING, doc="beyond the contract"),
        _col("baseline_due", DATE),
        _col("due_date", DATE),
        _col("forecast_finish", DATE),
        _col("slip_days", INTEGER, doc="forecast_finish - baseline_due in calendar days; negative is ahead"),
        _col("state", STRING, values=SCHEDULE_STATES),
        _col("on_critical_path", BOOLEAN),
        _col("float_days", FLOAT),
        _col("reschedule_count", INTEGER),
        _col("as_of", DATE),
        _col("driver_uid", STRING, doc="beyond the contract: the predecessor that sets this task's forecast"),
        _col("portfolio_float_days", FLOAT, doc="beyond the contract: float against the portfolio's finish"),
        _col("on_portfolio_critical_path", BOOLEAN, doc="beyond the contract"),
    ),
    ("task_uid",),
    "The consolidated schedule with slippage, one row per task.",
)

PROJECT_HEALTH = Table(
    "project_health",
    (
        _col("project_uid", STRING, False),
        _col("tasks_total", INTEGER),
        _col("tasks_done", INTEGER),
        _col("tasks_late", INTEGER),
        _col("tasks_at_risk", INTEGER),
        _col("percent_complete", FLOAT),
        _col("baseline_finish", DATE),
        _col("forecast_finish", DATE),
        _col("slip_days", INTEGER),
        _col("health", STRING, values=HEALTH_VALUES),
        _col("as_of", DATE),
    ),
    ("project_uid",),
    "Roll-up of the schedule per project.",
)

SCHEDULE_CYCLES = Table(
    "schedule_cycles",
    (
        _col("cycle_id", STRING, False),
        _col("task_uid", STRING, False),
        _col("position", INTEGER, doc="order of the task around the cycle"),
        _col("as_of", DATE),
    ),
    ("cycle_id", "task_uid"),
    "Dependency cycles found by the schedule pass: reported, not fatal.",
)

PEOPLE = Table(
    "people",
    (
        _col(
            "person_uid", STRING, False, "the lower-cased email where known, else `{connection}:{native id}`"
        ),
        _col("email", STRING),
        _col("display_name", STRING),
        _col("display_names", JSON, doc="a JSON object: connection name to the name that tool shows"),
        _col("updated_at", TIMESTAMP),
    ),
    ("person_uid",),
    "People across tools, matched by email.",
)

SYNC_STATE = Table(
    "sync_state",
    (
        _col("connection", STRING, False),
        _col("cursor_name", STRING, False),
        _col("value", STRING),
        _col("updated_at", TIMESTAMP),
    ),
    ("connection", "cursor_name"),
    "Incremental cursors, committed in the same transaction as the rows they cover.",
)

SYNC_RUNS = Table(
    "sync_runs",
    (
        _col("run_id", STRING, False),
        _col("connection", STRING, False),
        _col("mode", STRING, False, values=SYNC_MODES),
        _col("started_at", TIMESTAMP, False),
        _col("finished_at", TIMESTAMP),
        _col("requests", INTEGER),
        _col("requests_429", INTEGER, doc="beyond the contract: rate-limited responses absorbed"),
        _col("retries", INTEGER, doc="beyond the contract"),
        _col("records_pulled", INTEGER),
        _col("records_loaded", INTEGER),
        _col("records_quarantined", INTEGER),
        _col("records_deleted", INTEGER),
        _col("status", STRING, False, values=RUN_STATUSES),
        _col("error", STRING),
    ),
    ("run_id", "connection"),
    "One row per connection per sync.",
)

QUARANTINE = Table(
    "quarantine",
    (
        _col("connection", STRING, False),
        _col("native_id", STRING, False, "`sha1:<digest of the payload>` when the record has no readable id"),
        _col("raw_payload", JSON, False),
        _col("reason", STRING, False),
        _col("run_id", STRING, doc="beyond the contract"),
        _col("quarantined_at", TIMESTAMP, doc="beyond the contract"),
    ),
    ("connection", "native_id"),
    "Records that failed to normalize, with their raw payload: nothing is dropped silently.",
)

WRITEBACK_LEDGER = Table(
    "writeback_ledger",
    (
        _col("target", STRING, False, "e.g. jira.entity_property, trello.comment"),
        _col("connection", STRING, False),
        _col("task_uid", STRING, False),
        _col("payload_hash", STRING),
        _col("status", STRING),
        _col("written_at", TIMESTAMP),
        _col("error", STRING),
        _col("remote_ref", STRING, doc="beyond the contract: id of what was created there (comment, item)"),
        _col("payload", JSON, doc="beyond the contract: what was last written"),
        _col("version", STRING, doc="beyond the contract: the task's version marker (timestamp or ETag) the tool "
                                    "reported right after pmsync's write, so the next pull knows its own edit"),
    ),
    ("target", "connection", "task_uid"),
    "What was last written where, so that a push with no changes makes no requests.",
)

TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        PROJECTS,
        TASKS,
        DEPENDENCIES,
        TASK_HISTORY,
        SCHEDULE,
        PROJECT_HEALTH,
        SCHEDULE_CYCLES,
        PEOPLE,
        SYNC_STATE,
        SYNC_RUNS,
        QUARANTINE,
        WRITEBACK_LEDGER,
    )
}


def table(name: str) -> Table:
    """The canonical table called `name`; KeyError listing the known tables when there is none."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no warehouse table {name!r}; known tables: {', '.join(TABLES)}") from None
