"""pmsync.yaml: the models of the configuration, its loading with `${VAR}` substitution, and its example.

Every problem with a configuration file reaches the user as one `ConfigError` sentence that names the file,
the key (connections by name, e.g. `connections[eng-jira].auth.token`) and the fix, never a secret's value.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pmsync.errors import ConfigError

TOOLS = ("jira", "asana", "trello", "planner", "msproject")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CONNECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DRIVE_ITEM = re.compile(r"^drive:(?P<drive_id>[^/\s]+)/items/(?P<item_id>[^/\s]+)$")
JIRA_PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
JIRA_FIELD_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
JIRA_CUSTOM_FIELD = re.compile(r"^customfield_\d+$")
JIRA_WRITEBACK_FIELDS = ("slip_days", "forecast_finish", "state")
GRAPH_API = "https://graph.microsoft.com/v1.0"
GRAPH_LOGIN = "https://login.microsoftonline.com"
PORTFOLIO_TOOLS = {"trello_board": "trello", "asana_project": "asana", "planner_plan": "planner"}
# Write-back targets each tool supports, with their defaults (PRODUCT.md "Writing back").
WRITEBACK_DEFAULTS: dict[str, dict[str, Any]] = {
    "jira": {"property": True, "labels": True, "comments": True, "custom_fields": {}},
    "asana": {"custom_fields": True, "status_updates": True},
    "trello": {"custom_fields": True, "comments": True},
    "planner": {"categories": True, "details": True, "drive_folder": None},
    "msproject": {"drive_folder": None},
}
EXAMPLE_TEMPLATE = "templates/pmsync.example.yaml"


class Problem(ValueError):
    """A validation failure phrased for the user: `problem` completes "<key> ...", `fix` says what to do.

    `loc` is set when the key is elsewhere than where the validator runs (checks across the whole file).
    """

    def __init__(self, problem: str, fix: str, loc: tuple[str | int, ...] | None = None) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix
        self.loc = loc


def _base_dir(info: ValidationInfo) -> Path:
    """The folder relative paths resolve against: the config file's folder, else the working directory."""
    context = info.context or {}
    return Path(context.get("base_dir") or Path.cwd())


def _resolve(path: str | Path, base_dir: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Problem("is not an http(s) URL", "write it like https://acme.atlassian.net")
    return value.rstrip("/")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class RateLimit(_Section):
    """Overrides of a connection's request budget; unset values keep the connector's vendor defaults."""

    requests_per_second: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0)
    max_wait_seconds: float | None = Field(None, gt=0)


class _Connection(_Section):
    name: str
    verify_tls: bool = True
    ca_bundle: Path | None = None
    rate_limit: RateLimit = Field(default_factory=RateLimit)

    @field_validator("name")
    @classmethod
    def _name_prefixes_uids(cls, name: str) -> str:
        if not CONNECTION_NAME.match(name):
            raise Problem(
                "must be lowercase letters, digits, '-' or '_' (starting with a letter or digit) "
                "because it prefixes every task uid",
                "rename it, for example eng-jira",
            )
        return name

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_exists(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        resolved = _resolve(path, _base_dir(info))
        if not resolved.is_file():
            raise Problem(
                f"names {resolved}, which does not exist", "point it at the PEM file of your local CA"
            )
        return resolved

    @model_validator(mode="after")
    def _one_way_to_trust(self) -> _Connection:
        if self.ca_bundle is not None and not self.verify_tls:
            raise Problem(
                "sets both ca_bundle and verify_tls: false",
                "keep ca_bundle (it verifies against your CA) and remove verify_tls",
                loc=("verify_tls",),
            )
        return self

    @property
    def tls_verify(self) -> bool | str:
        """The `verify` argument for requests/httpx: the CA bundle path, or whether to verify at all."""
        return str(self.ca_bundle) if self.ca_bundle is not None else self.verify_tls


class JiraAuth(_Section):
    email: str = Field(min_length=1)
    token: SecretStr = Field(min_length=1)


class JiraConnection(_Connection):
    """A Jira Cloud site; `url` is the site (or the sandbox) and the REST base."""

    tool: Literal["jira"]
    url: str
    auth: JiraAuth
    projects: list[str] = Field(min_length=1)
    api_version: Literal[2, 3] = 3
    custom_fields: dict[str, str] = Field(default_factory=dict)
    # Remote links carry cross-tool dependencies, but Jira has no bulk read for them: one request per changed
    # issue. Turn off where cross-tool links are listed in `links` instead.
    remote_links: bool = True
    # Minutes before the last cursor an incremental pull lists again, for changes Jira's search indexed late
    # (each re-listed page costs a request). Unset: `sync.overlap_minutes`.
    overlap_minutes: int | None = Field(None, ge=0)

    @field_validator("url")
    @classmethod
    def _site_url(cls, url: str) -> str:
        return _http_url(url)

    @field_validator("projects")
    @classmethod
    def _project_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not JIRA_PROJECT_KEY.match(key):
                raise Problem(
                    f"has {key!r}, which is not a Jira project key", "write keys in capitals, like PLAT"
                )
        return list(dict.fromkeys(keys))  # a key listed twice is searched once

    @field_validator("custom_fields")
    @classmethod
    def _field_ids(cls, fields: dict[str, str]) -> dict[str, str]:
        for meaning, field_id in fields.items():
            if not JIRA_FIELD_ID.match(field_id):
                raise Problem(
                    f"maps {meaning} to {field_id!r}", "write a Jira field id, like customfield_10015"
                )
        return fields

    @property
    def api_url(self) -> str:
        """Where the REST API lives."""
        return self.url


class AsanaAuth(_Section):
    token: SecretStr = Field(min_length=1)


class _ApiConnection(_Connection):
    """A connection whose API root may be overridden (`base_url`), e.g. to point it at the sandbox."""

    DEFAULT_API: ClassVar[str] = ""
    base_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _api_base(cls, url: str | None) -> str | None:
        return None if url is None else _http_url(url)

    @property
    def api_url(self) -> str:
        """Where the REST API lives: `base_url`, else the vendor's own."""
        return self.base_url or self.DEFAULT_API


class AsanaConnection(_ApiConnection):
    DEFAULT_API: ClassVar[str] = "https://app.asana.com/api/1.0"
    tool: Literal["asana"]
    auth: AsanaAuth
    workspace: str = Field(min_length=1)
    projects: list[str] = Field(min_length=1)
    # Subtasks belong to no project: reading them costs one request per task that has any, plus their stories.
    # Turn off where a team's subtasks are checklist items rather than scheduled work.
    subtasks: bool = True


class TrelloAuth(_Section):
    key: SecretStr = Field(min_length=1)
    token: SecretStr = Field(min_length=1)


class TrelloConnection(_ApiConnection):
    DEFAULT_API: ClassVar[str] = "https://api.trello.com/1"
    tool: Literal["trello"]
    auth: TrelloAuth
    boards: list[str] = Field(min_length=1)


class GraphClientCredentials(_Section):
    """An app registration: a token is fetched from the login endpoint with these."""

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr = Field(min_length=1)


class GraphToken(_Section):
    """A static bearer token (the sandbox's, or one the user obtained)."""

    token: SecretStr = Field(min_length=1)


def _graph_auth_kind(value: Any) -> str:
    if isinstance(value, Mapping) and "token" in value:
        return "bearer"
    if isinstance(value, GraphToken):
        return "bearer"
    return "client_credentials"


GraphAuth = Annotated[
    Annotated[GraphClientCredentials, Tag("client_credentials")] | Annotated[GraphToken, Tag("bearer")],
    Discriminator(_graph_auth_kind),
]


class _GraphConnection(_ApiConnection):
    DEFAULT_API: ClassVar[str] = GRAPH_API
    login_url: str | None = None

    @field_validator("login_url")
    @classmethod
    def _login(cls, url: str | None) -> str | None:
        return None if url is None else _http_url(url)

    @property
    def token_url(self) -> str | None:
        """The OAuth token endpoint for client credentials; None with a static token or no auth."""
        auth = getattr(self, "auth", None)
        if not isinstance(auth, GraphClientCredentials):
            return None
        return f"{self.login_url or GRAPH_LOGIN}/{auth.tenant_id}/oauth2/v2.0/token"


class PlannerConnection(_GraphConnection):
    tool: Literal["planner"]
    auth: GraphAuth
    plans: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something_to_pull(self) -> PlannerConnection:
        if not self.plans and not self.groups:
            raise Problem(
                "is empty and so is groups", "add plans: [plan-id] or groups: [group-id]", loc=("plans",)
            )
        return self


class ProjectFile(_Section):
    """One MS Project file: a drive item on SharePoint/OneDrive, or a local path (already resolved)."""

    kind: Literal["drive", "file"]
    drive_id: str | None = None
    item_id: str | None = None
    path: Path | None = None

    def __str__(self) -> str:
        return f"drive:{self.drive_id}/items/{self.item_id}" if self.kind == "drive" else f"file:{self.path}"


def _parse_project_file(value: Any, base_dir: Path, index: int) -> Any:
    if not isinstance(value, str):
        raise Problem(
            f"is {_kind_of(value)}, not a file reference", 'write "drive:..." or "file:..."', loc=(index,)
        )
    if match := DRIVE_ITEM.match(value):
        return {"kind": "drive", **match.groupdict()}
    if value.startswith("file:") and len(value) > len("file:"):
        return {"kind": "file", "path": _resolve(value[len("file:") :], base_dir)}
    raise Problem(
        f"is {value!r}, which is neither a drive item nor a file",
        'write "drive:{drive-id}/items/{item-id}" or "file:plans/name.mpp"',
        loc=(index,),
    )


class MsProjectConnection(_GraphConnection):
    tool: Literal["msproject"]
    auth: GraphAuth | None = None
    files: list[ProjectFile] = Field(min_length=1)

    @field_validator("files", mode="before")
    @classmethod
    def _parse_files(cls, files: Any, info: ValidationInfo) -> Any:
        if not isinstance(files, list):
            return files
        return [_parse_project_file(item, _base_dir(info), index) for index, item in enumerate(files)]

    @model_validator(mode="after")
    def _drive_needs_auth(self) -> MsProjectConnection:
        if self.auth is None and any(f.kind == "drive" for f in self.files):
            raise Problem(
                "is missing but drive: files need Microsoft Graph credentials",
                "add auth with tenant_id, client_id and client_secret, or a token",
                loc=("auth",),
            )
        return self


Connection = Annotated[
    JiraConnection | AsanaConnection | TrelloConnection | PlannerConnection | MsProjectConnection,
    Field(discriminator="tool"),
]


class Link(_Section):
    """A cross-tool dependency the tools themselves do not record; uids are `connection:native_id`."""

    predecessor: str
    successor: str
    kind: Literal["finish_to_start", "start_to_start", "finish_to_finish", "start_to_finish"] = (
        "finish_to_start"
    )
    lag_days: int = 0

    @field_validator("predecessor", "successor")
    @classmethod
    def _task_uid(cls, uid: str) -> str:
        connection, _, native_id = uid.partition(":")
        if not connection or not native_id:
            raise Problem(
                f"is {uid!r}, which is not a task uid",
                'write it as "connection:native_id", like "eng-jira:10042"',
            )
        return uid

    @property
    def predecessor_connection(self) -> str:
        """The connection name prefixing the predecessor's uid."""
        return self.predecessor.partition(":")[0]

    @property
    def successor_connection(self) -> str:
        """The connection name prefixing the successor's uid."""
        return self.successor.partition(":")[0]


class HealthThresholds(_Section):
    """Project health: amber from `amber_slip_days` of slip, red from `red_slip_days`."""

    amber_slip_days: int = Field(3, ge=0)
    red_slip_days: int = Field(10, ge=0)

    @model_validator(mode="after")
    def _red_after_amber(self) -> HealthThresholds:
        if self.red_slip_days < self.amber_slip_days:
            raise Problem(
                f"({self.red_slip_days}) is below amber_slip_days ({self.amber_slip_days})",
                "make red_slip_days at least amber_slip_days",
                loc=("red_slip_days",),
            )
        return self


class ScheduleSettings(_Section):
    baseline: Literal["original", "first_seen"] = "original"
    at_risk_days: int = Field(3, ge=0)
    workdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"], min_length=1
    )
    health: HealthThresholds = Field(default_factory=HealthThresholds)

    @field_validator("workdays")
    @classmethod
    def _no_repeats(cls, days: list[str]) -> list[str]:
        if len(set(days)) != len(days):
            raise Problem("repeats a day", "list each working day once")
        return sorted(days, key=WEEKDAYS.index)


def _drive_folder(value: str | None) -> str | None:
    if value is not None and not DRIVE_ITEM.match(value):
        raise Problem(
            f"is {value!r}, which is not a drive folder", 'write it as "drive:{drive-id}/items/{item-id}"'
        )
    return value


class ConnectionWriteback(_Section):
    """Which write-back targets are on for one connection; None means the tool's default."""

    property: bool | None = None
    labels: bool | None = None
    comments: bool | None = None
    custom_fields: bool | dict[str, str] | None = None
    status_updates: bool | None = None
    categories: bool | None = None
    details: bool | None = None
    drive_folder: str | None = None

    @field_validator("drive_folder")
    @classmethod
    def _folder(cls, folder: str | None) -> str | None:
        return _drive_folder(folder)

    def targets_set(self) -> list[str]:
        """The targets this entry sets explicitly."""
        return [name for name, value in self if value is not None]


class PortfolioTarget(_Section):
    """A container inside a tool (board, project, plan) that receives one item per project and milestone."""

    connection: str
    id: str = Field(min_length=1)


class PortfolioTargets(_Section):
    trello_board: PortfolioTarget | None = None
    asana_project: PortfolioTarget | None = None
    planner_plan: PortfolioTarget | None = None


class Writeback(BaseModel):
    """Write-back switches per connection name, plus `portfolio` targets."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, ConnectionWriteback] = Field(init=False)

    portfolio: PortfolioTargets = Field(default_factory=PortfolioTargets)

    @property
    def connections(self) -> dict[str, ConnectionWriteback]:
        """The per-connection entries, by connection name."""
        return dict(self.model_extra or {})


CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
CRON_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "day of week": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}


def _cron_value(text: str, field: str) -> int | None:
    if text.isdigit():
        return int(text)
    names = CRON_NAMES.get(field, [])
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + (1 if field == "month" else 0)
    return None


def _cron_part_ok(part: str, field: str, low: int, high: int) -> bool:
    span, _, step = part.partition("/")
    if step and (not step.isdigit() or int(step) == 0):
        return False
    if span == "*":
        return True
    bounds = span.split("-")
    values = [_cron_value(bound, field) for bound in bounds]
    return len(bounds) <= 2 and all(v is not None and low <= v <= high for v in values)


def check_cron(expression: str) -> str:
    """Returns the expression if it is a standard 5-field cron line; raises Problem naming the bad field."""
    fields = expression.split()
    if len(fields) != 5:
        raise Problem(
            f"is {expression!r}, which has {len(fields)} field{'s' if len(fields) != 1 else ''} instead of 5",
            'write minute hour day-of-month month day-of-week, like "*/15 * * * *"',
        )
    for text, (field, low, high) in zip(fields, CRON_FIELDS):
        if not all(_cron_part_ok(part, field, low, high) for part in text.split(",")):
            raise Problem(f"has {text!r} as its {field}", f"use *, a number {low}-{high}, a range or a /step")
    return " ".join(fields)


class SyncSettings(_Section):
    cron: str = "*/15 * * * *"
    # Jira: minutes before the last cursor an incremental pull lists again, for changes its search indexed late.
    overlap_minutes: int = Field(0, ge=0)
    concurrency: int = Field(8, ge=1)
    # Pages loaded per transaction: up to this many records, or pages pulled within this many seconds.
    commit_every_records: int = Field(5000, ge=1)
    commit_every_seconds: float = Field(1.0, ge=0)

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        return check_cron(cron)


class ReportSettings(_Section):
    out_dir: Path = Field(Path("reports"), validate_default=True)

    @field_validator("out_dir")
    @classmethod
    def _against_config_folder(cls, out_dir: Path, info: ValidationInfo) -> Path:
        return _resolve(out_dir, _base_dir(info))


def _duckdb_url(url: str, base_dir: Path) -> str:
    """duckdb:///relative/path is relative to the config folder, duckdb:////absolute/path absolute."""
    path = url[len("duckdb:///") :]
    if not path:
        raise Problem(
            "names no DuckDB file",
            "write duckdb:///pmsync.duckdb (relative to this file) or duckdb:////abs/path",
        )
    if path == ":memory:":
        return url
    return "duckdb:///" + str(_resolve(path, base_dir))


def _warehouse_url(url: str, base_dir: Path) -> str:
    if url.startswith("duckdb:///"):
        return _duckdb_url(url, base_dir)
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        if not urlsplit(url).netloc:
            raise Problem("has no host", "write postgresql://user@host:5432/database")
        return "postgresql://" + url.split("://", 1)[1]
    raise Problem(
        "is neither a DuckDB nor a PostgreSQL URL",
        "write duckdb:///pmsync.duckdb or postgresql://user@host:5432/database",
    )


class Config(_Section):
    """A whole pmsync.yaml, validated; build it with `load_config` so paths resolve against its folder."""

    warehouse: str = Field("duckdb:///pmsync.duckdb", repr=False)
    timezone: str = "UTC"
    connections: list[Connection] = Field(min_length=1)
    links: list[Link] = Field(default_factory=list)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    writeback: Writeback = Field(default_factory=Writeback)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    reports: ReportSettings = Field(default_factory=dict, validate_default=True)

    _warehouse_url: str = PrivateAttr("")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise Problem(
                f"is {zone!r}, which is not a time zone", "write an IANA name like America/Toronto or UTC"
            )
        return zone

    @field_validator("warehouse")
    @classmethod
    def _warehouse(cls, url: str, info: ValidationInfo) -> str:
        _warehouse_url(url, _base_dir(info))
        return url

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Config:
        self._base_dir = _base_dir(info)
        self._warehouse_url = _warehouse_url(self.warehouse, self._base_dir)
        _check_connection_names(self.connections)
        names = {c.name: c.tool for c in self.connections}
        _check_links(self.links, names)
        _check_writeback(self.writeback, names)
        _check_portfolio_not_synced(self.writeback, self.connections)
        for connection in self.connections:
            if isinstance(connection, JiraConnection) and connection.overlap_minutes is None:
                connection.overlap_minutes = self.sync.overlap_minutes
        return self

    @property
    def base_dir(self) -> Path:
        """The folder of the configuration file; relative paths in it were resolved against this."""
        return self._base_dir

    @property
    def warehouse_url(self) -> str:
        """The warehouse URL: a DuckDB path made absolute (duckdb:////abs/file.duckdb), or postgresql://..."""
        return self._warehouse_url

    @property
    def duckdb_path(self) -> Path | None:
        """The DuckDB file, or None for PostgreSQL (and for :memory:)."""
        if not self._warehouse_url.startswith("duckdb:///") or self._warehouse_url.endswith(":memory:"):
            return None
        return Path(self._warehouse_url[len("duckdb:///") :])

    @property
    def tzinfo(self) -> ZoneInfo:
        """The coordinators' time zone, in which dates and "today" are computed."""
        return ZoneInfo(self.timezone)

    def connection(self, name: str) -> Connection:
        """The connection called `name`; raises ConfigError naming the known ones."""
        for connection in self.connections:
            if connection.name == name:
                return connection
        known = ", ".join(c.name for c in self.connections)
        raise ConfigError(f"No connection is named {name!r}; use one of {known}.")

    def writeback_for(self, name: str) -> ConnectionWriteback:
        """The write-back targets of connection `name` with its tool's defaults filled in and others off."""
        tool = self.connection(name).tool
        given = self.writeback.connections.get(name, ConnectionWriteback())
        resolved = {target: False for target in ConnectionWriteback.model_fields}
        resolved.update({"custom_fields": False, "drive_folder": None})
        for target, default in WRITEBACK_DEFAULTS[tool].items():
            value = getattr(given, target)
            resolved[target] = default if value is None else value
        return ConnectionWriteback.model_validate(resolved)


def _check_connection_names(connections: list[Any]) -> None:
    seen: dict[str, int] = {}
    for index, connection in enumerate(connections):
        if connection.name == "portfolio":
            raise Problem(
                "is named 'portfolio', a name reserved for writeback.portfolio",
                "rename the connection",
                loc=("connections", index, "name"),
            )
        if connection.name in seen:
            raise Problem(
                f"is defined twice (entries {seen[connection.name] + 1} and {index + 1})",
                "give each connection a unique name, since names prefix every task uid",
                loc=("connections", index),
            )
        seen[connection.name] = index


def _check_links(links: list[Link], names: Mapping[str, str]) -> None:
    for index, link in enumerate(links):
        for end in ("predecessor", "successor"):
            connection = getattr(link, f"{end}_connection")
            if connection not in names:
                raise Problem(
                    f"names connection {connection!r}, which is not defined",
                    f"use one of {', '.join(names)} or add that connection",
                    loc=("links", index, end),
                )


def _check_writeback(writeback: Writeback, names: Mapping[str, str]) -> None:
    for name, entry in writeback.connections.items():
        if name not in names:
            raise Problem(
                "is not a connection", f"use one of {', '.join(names)}, or portfolio", loc=("writeback", name)
            )
        _check_targets(name, names[name], entry)
    for target, tool in PORTFOLIO_TOOLS.items():
        chosen = getattr(writeback.portfolio, target)
        if chosen is not None and names.get(chosen.connection) != tool:
            candidates = [n for n, t in names.items() if t == tool] or [f"a {tool} connection (add one)"]
            raise Problem(
                f"is {chosen.connection!r}, which is not a {tool} connection",
                f"use {' or '.join(candidates)}",
                loc=("writeback", "portfolio", target, "connection"),
            )


# Where each portfolio container would also be pulled from, were it synced.
SYNCED_CONTAINERS = {"trello_board": "boards", "asana_project": "projects", "planner_plan": "plans"}


def _check_portfolio_not_synced(writeback: Writeback, connections: list[Any]) -> None:
    """A portfolio container must not be one pmsync syncs: its items would come back as tasks of their own."""
    by_name = {c.name: c for c in connections}
    for target, attribute in SYNCED_CONTAINERS.items():
        chosen = getattr(writeback.portfolio, target)
        if chosen is None or chosen.connection not in by_name:
            continue
        if chosen.id in (getattr(by_name[chosen.connection], attribute, None) or []):
            raise Problem(
                f"is {chosen.id!r}, which {chosen.connection} also syncs as a {attribute[:-1]}",
                f"give the portfolio a {attribute[:-1]} of its own, or remove {chosen.id!r} from "
                f"connections[{chosen.connection}].{attribute}",
                loc=("writeback", "portfolio", target, "id"),
            )


def _check_targets(name: str, tool: str, entry: ConnectionWriteback) -> None:
    supported = WRITEBACK_DEFAULTS[tool]
    for target in entry.targets_set():
        if target not in supported:
            raise Problem(
                f"does not apply to a {tool} connection",
                f"use one of {', '.join(supported)}",
                loc=("writeback", name, target),
            )
    fields = entry.custom_fields
    if tool == "jira" and fields is True:
        raise Problem(
            "must name the Jira fields",
            "write {slip_days: customfield_10050, forecast_finish: customfield_10051}",
            loc=("writeback", name, "custom_fields"),
        )
    if tool != "jira" and isinstance(fields, dict):
        raise Problem(
            "must be true or false for a " + tool + " connection",
            "write custom_fields: true",
            loc=("writeback", name, "custom_fields"),
        )
    for meaning, field_id in fields.items() if isinstance(fields, dict) else []:
        if meaning not in JIRA_WRITEBACK_FIELDS or not JIRA_CUSTOM_FIELD.match(field_id):
            raise Problem(
                f"maps {meaning!r} to {field_id!r}",
                f"map {', '.join(JIRA_WRITEBACK_FIELDS)} to Jira field ids like customfield_10050",
                loc=("writeback", name, "custom_fields", meaning),
            )


def secret_values(config: Config) -> list[str]:
    """Every secret in the configuration (SecretStr values and the warehouse password), longest first."""
    found: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, SecretStr):
            found.add(node.get_secret_value())
        elif isinstance(node, BaseModel):
            for value in list(node.__dict__.values()) + list((node.model_extra or {}).values()):
                collect(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                collect(value)
        elif isinstance(node, dict):
            for value in node.values():
                collect(value)

    collect(config)
    password = _url_password(config.warehouse)
    if password:
        found.add(password)
    return sorted((s for s in found if s), key=len, reverse=True)


# Shorter values are no secret worth the name, and replacing them everywhere would garble the sentence.
MIN_SECRET_LENGTH = 4


def _redact_values(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
    return text


def redact(text: str, config: Config) -> str:
    """`text` with every secret value of `config` (of 4 characters or more) replaced by ***.

    Use it on anything bound for logs, errors, the warehouse or reports.
    """
    return _redact_values(text, secret_values(config))


ENV_REFERENCE = re.compile(r"(\$?)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found; run `pmsync init` to write an example, or pass --config."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"Cannot read {path} ({reason}); check the path and that it is a UTF-8 text file."
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = (exc.problem or exc.context or "invalid YAML").rstrip(".")
        raise ConfigError(
            f"In {path}{where}, the YAML is invalid ({problem}); fix the syntax there."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"In {path}, the YAML is invalid ({type(exc).__name__}); fix the syntax.") from None


def _label(parts: list[str]) -> str:
    return "".join(parts) or "the top level"


def _readable(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name.strip()) <= 60 and name.isprintable()


def _child_label(parts: list[str], key: Any, node: Any) -> list[str]:
    if isinstance(key, int):
        name = node.get("name") if parts == ["connections"] and isinstance(node, dict) else None
        return parts + [f"[{name if _readable(name) else key}]"]
    label = str(key) if _readable(key) else repr(key)
    return parts + [f".{label}" if parts else label]


def _substitute_text(text: str, env: Mapping[str, str], where: str, path: Path) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"In {path}, {where} uses ${{{name}}}, which is not set in the environment; "
                    f"export {name} or write the value."
                )
            value = default
        return value

    result = ENV_REFERENCE.sub(replace, text)
    if "${" in ENV_REFERENCE.sub("", text).replace("$${", ""):
        raise ConfigError(
            f"In {path}, {where} has a `${{` that is not a ${{NAME}} or ${{NAME:-default}} reference; "
            "fix the variable name (letters, digits, _) or write $${ for a literal ${."
        )
    return result


def substitute_env(node: Any, env: Mapping[str, str], path: Path, parts: list[str] | None = None) -> Any:
    """The YAML tree with `${VAR}` / `${VAR:-default}` in every string replaced from `env`.

    Raises ConfigError naming the key (and `path`) where a variable is unset and has no default.
    """
    parts = parts or []
    if isinstance(node, str):
        return _substitute_text(node, env, _label(parts), path)
    if isinstance(node, dict):
        return {
            key: substitute_env(value, env, path, _child_label(parts, key, value))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [substitute_env(item, env, path, _child_label(parts, i, item)) for i, item in enumerate(node)]
    return node


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Reads, substitutes and validates `path`; every failure is one ConfigError sentence (file, key, fix)."""
    path = Path(path)
    env = os.environ if env is None else env
    raw = _read_yaml(path)
    if raw is None:
        raise ConfigError(f"{path} is empty; run `pmsync init --force` to write an example, or fill it in.")
    if not isinstance(raw, dict):
        raise ConfigError(f"In {path}, the top level is not a mapping of keys; start from `pmsync init`.")
    data = substitute_env(raw, env, path)
    try:
        return Config.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        message = describe_validation_error(exc, data, path)
        raise ConfigError(_redact_values(message, sorted(_secret_inputs(data)))) from None


SECRET_KEYS = frozenset({"token", "key", "client_secret"})


def _secret_inputs(node: Any) -> set[str]:
    """Values written at secret keys (and the warehouse password), so no message can echo them."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_KEYS and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                found.add(str(value))
            else:
                found |= _secret_inputs(value)
        warehouse = node.get("warehouse")
        if isinstance(warehouse, str) and "://" in warehouse:
            found.add(_url_password(warehouse) or "")
    elif isinstance(node, list):
        for item in node:
            found |= _secret_inputs(item)
    return found - {""}


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _key_path(loc: tuple[Any, ...], data: Any, missing: bool = False) -> str:
    """The YAML key path of a pydantic error location, naming connections; pydantic's union tags are dropped.

    A last segment absent from the file is kept only when `missing` (it is the key the user must add).
    """
    parts: list[str] = []
    node = data
    for position, segment in enumerate(loc):
        last = position == len(loc) - 1
        in_list = isinstance(segment, int) and isinstance(node, list) and 0 <= segment < len(node)
        if in_list or (isinstance(node, dict) and segment in node):
            parts, node = _child_label(parts, segment, node[segment]), node[segment]
        elif last and missing:
            parts, node = _child_label(parts, segment, None), None
    return _label(parts)


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_member(members: tuple[Any, ...], segment: Any) -> tuple[Any, bool]:
    """The union member a location segment selects (tool tag, auth tag) and whether the segment was a tag."""
    for member in members:
        tags = [m.tag for m in getattr(member, "__metadata__", ()) if isinstance(m, Tag)]
        model = _unwrap(member)
        tool = getattr(model, "model_fields", {}).get("tool")
        if segment in tags or (tool is not None and typing.get_args(tool.annotation) == (segment,)):
            return model, True
    non_none = [m for m in members if m is not type(None)]
    return (non_none[0] if len(non_none) == 1 else None), False


def _step(annotation: Any, segment: Any) -> Any:
    """The annotation one location segment below `annotation`, or None where it cannot be followed."""
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        member, was_tag = _union_member(typing.get_args(annotation), segment)
        return member if was_tag or member is None else _step(member, segment)
    if origin is list:
        return typing.get_args(annotation)[0] if isinstance(segment, int) else None
    if origin is dict:
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if segment in annotation.model_fields:
            return annotation.model_fields[segment].annotation
        return ConnectionWriteback if annotation is Writeback else None
    return None


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    annotation: Any = Config
    for segment in loc:
        annotation = _step(annotation, segment)
        if annotation is None:
            return []
    model = _unwrap(annotation)
    if typing.get_origin(model) in (Union, types.UnionType):
        model, _ = _union_member(typing.get_args(model), None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [name for name in model.model_fields if name != "tool"] + (
            ["<connection name>"] if model is Writeback else []
        )
    return []


def _unknown_key(loc: tuple[Any, ...]) -> tuple[str, str]:
    key = str(loc[-1])
    known = [k for k in _known_keys(loc[:-1]) if not k.startswith("<")]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return "is not a known key", f"did you mean `{close[0]}`? rename it, or remove it"
    return (
        "is not a known key",
        f"remove it (keys allowed here: {', '.join(known)})" if known else "remove it",
    )


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _explain(error: Mapping[str, Any]) -> tuple[str, str]:
    """(problem, fix) for one pydantic error, never quoting the input (it may be a secret)."""
    kind = error["type"]
    if kind == "missing":
        return "is missing", "add it (`pmsync init` writes an example with every key)"
    if kind == "extra_forbidden":
        return _unknown_key(tuple(error["loc"]))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return "has no `tool` pmsync knows", f"set tool: to one of {', '.join(TOOLS)}"
    if kind == "literal_error":
        return f"should be {error['ctx']['expected']}", "use one of those values"
    if kind == "too_short" and error["ctx"].get("min_length") == 1:
        return "is empty", "give it a value" if isinstance(error.get("input"), str) else "list at least one"
    if _rank(error) == 2:
        return (
            f"is {_kind_of(error.get('input'))}, which does not fit here",
            "see `pmsync init` for the form it takes",
        )
    if kind == "path_type":
        return f"should be a path (got {_kind_of(error.get('input'))})", "write a folder, like reports"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a mapping of keys (got {_kind_of(error.get('input'))})", "write key: value pairs"
    message = error["msg"].removeprefix("Input ").removeprefix("Value ")
    return f"{message[0].lower()}{message[1:]} (got {_kind_of(error.get('input'))})", "correct the value"


def _rank(error: Mapping[str, Any]) -> int:
    # A misspelt key explains the "missing" error beside it; union members' errors come in pairs, so go last.
    if error["type"] == "extra_forbidden":
        return 0
    return (
        2
        if any(isinstance(s, str) and ("[" in s or s in ("bool", "str", "dict")) for s in error["loc"])
        else 1
    )


def describe_validation_error(exc: ValidationError, data: Any, path: Path) -> str:
    """One sentence naming the file, the key path and the fix for the first (most useful) error in `exc`."""
    errors = sorted(exc.errors(include_url=False), key=_rank)
    error = errors[0]
    loc = tuple(error["loc"])
    original = error.get("ctx", {}).get("error")
    if isinstance(original, Problem):
        problem, fix = original.problem, original.fix
        loc = loc + (original.loc or ())
    else:
        problem, fix = _explain(error)
    keys = {_key_path(tuple(e["loc"]), data, e["type"] == "missing") for e in errors}
    more = (
        f" ({len(keys) - 1} more problem{'s' if len(keys) > 2 else ''} after this one)"
        if len(keys) > 1
        else ""
    )
    return f"In {path}, {_key_path(loc, data, error['type'] == 'missing')} {problem}; {fix}{more}."


def example_text() -> str:
    """The commented example pmsync.yaml shipped with pmsync."""
    return resources.files("pmsync").joinpath(EXAMPLE_TEMPLATE).read_text(encoding="utf-8")


def write_example(path: Path, *, force: bool = False) -> Path:
    """Writes the commented example to `path` (creating folders); refuses to overwrite unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(
            f"{path} already exists; pass --force to overwrite it, or choose another file with --config."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(example_text(), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot write {path} ({exc.strerror}); choose a writable path with --config."
        ) from None
    return path
