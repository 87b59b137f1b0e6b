"""Asana through the `asana` SDK (5.x): project tasks page by page, hidden subtasks, stories and events.

The SDK builds URLs, authenticates and parses JSON; everything else is here. Its urllib3 retry is switched off
(it skips POST and surfaces `MaxRetryError`) so that one SDK call is exactly one HTTP attempt, and `_call` retries
those calls with the shared policy of `connectors.http` (Retry-After, backoff), counting every attempt in
`stats`. Listings are always called with `full_payload=True` and a fresh opts dict, so the SDK neither pages by
itself nor keeps an offset: the offset is ours, one page of 100 at a time, and goes into the cursor.

What Asana hides and how it is found:
- Subtasks belong to no project, so no project listing shows them. A full pull walks `/tasks/{gid}/subtasks` of
  every listed task with `num_subtasks > 0` (recursively); subtasks that are project members anyway (an epic's
  stories) are skipped there, the listing delivers them. A subtask's project is its top-level parent's. With the
  connection's `subtasks: false` no subtask is read: only what the projects list.
- `modified_since` listings miss subtasks, and Asana does not touch a parent when a subtask changes. The events
  API per project does report them, so an incremental pull reads the project's events from the stored sync token
  first, and fetches the changed tasks the listing did not deliver one by one (`GET /tasks/{gid}`). The same
  events also cover tasks changed during the previous pull after their page was read. An expired token (412)
  falls back to the full walk of that project, keeping only tasks modified since the cursor.
- Due-date history is in stories (`due_date_changed`, with `old_dates`/`new_dates`); they cost one request per
  task, so only delivered tasks (all on a full pull, changed ones afterwards) have their stories read.

Costs: full pull = per project 1 project read + 1 events read (the 412 that hands out a token) + listing pages,
plus one subtasks request per task with subtasks, plus one stories request per task. Incremental pull = per
project 1 project read + events pages (100 events each) + listing pages of changed tasks, plus one stories
request per changed task and one task read per changed hidden subtask. Census = listing pages (ids only) plus one
subtasks request per parent whose subtasks are not all listed in a configured project; none after an incremental
pull whose events (read from every project's token) hold no deletion, removal or move (`census_needed`).

Write-back: pmsync's custom fields are found by name in the workspace (read once per push); a task "has them"
when it is listed in a configured project whose custom field settings hold them (settings read once per project,
listings of gids once per project that has them). Subtasks, which Asana lists in no project, are skipped. Writes
are one `PUT /tasks/{gid}` per task, one `POST /status_updates` per health change, one task per portfolio item.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asana
import orjson
import urllib3
from asana.rest import ApiException

from connectors.ahead import read_ahead_now
from connectors.base import Batch, Connector, DueChange, Link, PersonRecord, ProjectRecord, Write, WriteResult
from connectors.http import RetryPolicy, parse_retry_after, retry_delay
from pmsync.config import AsanaConnection
from pmsync.errors import ConnectionFailed

log = logging.getLogger("pmsync.connectors.asana")

ASANA_API = "https://app.asana.com/api/1.0"
PAGE = 100  # Asana's largest page
# The listing starts at the watermark itself: the events feed reports any change the listing misses (one made
# during the previous pull, one the listing's index shows late), and those tasks are read by gid.
OVERLAP = timedelta(0)
# Reads in flight at once (stories, subtasks, task reads). Asana allows 50 concurrent GETs per token; 16 keeps
# a page's 100 stories reads to about 7 round trips, so a pull is bound by the 1,500-a-minute budget, not by
# latency. Writes go through the push's own pool (writeback.push.WRITE_WORKERS), under Asana's 15.
WORKERS = 16
# Listing pages of changes an incremental pull reads per project right after its events, side by side with the
# other projects' (the rest follow in the project's turn): after a mass edit each project lists a few pages.
HEAD_PAGES = 4
TIMEOUT_S = (10.0, 60.0)  # connect, read
# What the mapping reads (mappings/asana.yaml) plus what the connector reads itself.
TASK_FIELDS = (
    "name", "completed", "completed_at", "created_at", "modified_at", "due_on", "due_at", "start_on",
    "assignee.name", "assignee.email", "parent.gid", "memberships.section.name", "memberships.project.gid",
    "resource_subtype", "custom_fields.name", "custom_fields.resource_subtype", "custom_fields.number_value",
    "custom_fields.display_value", "permalink_url", "num_subtasks", "tags.name", "dependencies",
)
STORY_FIELDS = ("resource_subtype", "created_at", "old_dates.due_on", "new_dates.due_on")
CENSUS_FIELDS = ("num_subtasks", "parent.gid")
DUE_DATE_CHANGED = "due_date_changed"
LISTING_DONE = "end"
VERSION_SEPARATOR = "|"  # a write's version: "<modified_at>|<field gid>,<field gid>"


# -- pure helpers ---------------------------------------------------------------------------------------------

def parse_time(text: Any) -> datetime | None:
    """An Asana timestamp (`2012-02-22T02:06:58.147Z`) as an aware datetime; None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def asana_time(instant: datetime) -> str:
    """An instant the way Asana writes and reads them: UTC, milliseconds, `Z`."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_day(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def due_changes(task_gid: str, stories: Iterable[dict[str, Any]]) -> list[DueChange]:
    """The `due_date_changed` stories of a task as due-date changes, in the order given (Asana: oldest first)."""
    out = []
    for story in stories:
        if story.get("resource_subtype") != DUE_DATE_CHANGED:
            continue
        changed_at = parse_time(story.get("created_at"))
        if changed_at is None:
            continue
        out.append(DueChange(native_id=task_gid, changed_at=changed_at,
                             old_due=parse_day((story.get("old_dates") or {}).get("due_on")),
                             new_due=parse_day((story.get("new_dates") or {}).get("due_on"))))
    return out


def dependency_links(task: dict[str, Any]) -> list[Link]:
    """The task's predecessors (Asana `dependencies`: the tasks it waits on)."""
    return [Link(successor_native_id=task["gid"], predecessor_native_id=str(dep["gid"]))
            for dep in task.get("dependencies") or () if isinstance(dep, dict) and dep.get("gid")]


def assignees(tasks: Iterable[dict[str, Any]]) -> list[PersonRecord]:
    """The distinct assignees of some tasks, emails as Asana holds them (the engine lower-cases)."""
    people: dict[str, PersonRecord] = {}
    for task in tasks:
        who = task.get("assignee")
        if isinstance(who, dict) and who.get("gid"):
            people[who["gid"]] = PersonRecord(who["gid"], who.get("name"), who.get("email"))
    return list(people.values())


def annotate(task: dict[str, Any], project_gid: str, configured: Iterable[str]) -> dict[str, Any]:
    """Add the `_pmsync` context the mapping reads (lists it cannot index): the task's project (the first
    configured project it is a member of, else the one it was found through), its section there, its tag names,
    and its custom fields by name."""
    configured = set(configured)
    memberships = [m for m in task.get("memberships") or () if isinstance(m, dict)]
    member = next((m for m in memberships if (m.get("project") or {}).get("gid") in configured), None)
    project = (member or {}).get("project", {}).get("gid") or project_gid
    section = ((member or {}).get("section") or {}).get("name")
    fields: dict[str, Any] = {}
    for custom in task.get("custom_fields") or ():
        if isinstance(custom, dict) and custom.get("name"):
            number = custom.get("resource_subtype") == "number"
            fields[custom["name"]] = custom.get("number_value") if number else custom.get("display_value")
    tags = [t["name"] for t in task.get("tags") or () if isinstance(t, dict) and t.get("name")]
    task["_pmsync"] = {"project_gid": project, "section": section, "tags": tags, "custom_fields": fields}
    return task


def is_project_member(task: dict[str, Any], projects: set[str]) -> bool:
    return any((m.get("project") or {}).get("gid") in projects for m in task.get("memberships") or ()
               if isinstance(m, dict))


# -- write-back helpers (pure) --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldSpec:
    """One of pmsync's custom fields as `pmsync push --setup` creates it."""

    name: str
    subtype: str
    description: str


@dataclass(frozen=True)
class FieldDefinition:
    """One of pmsync's custom fields as the workspace has it: its gid, type and (enum) option gids by name."""

    gid: str
    name: str
    subtype: str
    options: dict[str, str] = field(default_factory=dict)


STATES = ("done_on_time", "done_late", "late", "at_risk", "on_track", "unscheduled")
PMSYNC_FIELDS = {
    "slip_days": FieldSpec("pmsync slip days", "number", "Forecast finish minus baseline due, in days (pmsync)."),
    "forecast_finish": FieldSpec("pmsync forecast finish", "date", "When pmsync forecasts the task finishes."),
    "state": FieldSpec("pmsync state", "enum", "pmsync's schedule state of the task."),
}
HEALTH_STATUS = {"green": "on_track", "amber": "at_risk", "red": "off_track"}
ITEM_MARK = "pmsync portfolio item"
SOURCE_LINE = "Source: "


def pmsync_fields(listed: Iterable[dict[str, Any]]) -> dict[str, FieldDefinition]:
    """pmsync's fields among a workspace's custom fields, by meaning; matched by name, case-insensitively."""
    by_name = {spec.name.lower(): meaning for meaning, spec in PMSYNC_FIELDS.items()}
    found: dict[str, FieldDefinition] = {}
    for custom in listed:
        meaning = by_name.get(str(custom.get("name") or "").lower())
        if meaning is None or meaning in found:
            continue
        options = {str(o.get("name")): str(o.get("gid")) for o in custom.get("enum_options") or ()
                   if isinstance(o, dict)}
        found[meaning] = FieldDefinition(str(custom["gid"]), str(custom.get("name")),
                                         str(custom.get("resource_subtype") or ""), options)
    return found


def field_value(definition: FieldDefinition, value: Any) -> Any:
    """A payload value as Asana's `custom_fields` takes it for this field: a number, `{"date": ...}` (or the
    day as text where the field is a text field), an enum option gid; None clears the field."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if definition.subtype == "number":
        return float(value)
    if definition.subtype == "date":
        return {"date": str(value)[:10]}
    if definition.subtype == "enum":
        return definition.options.get(str(value))
    return str(value)


def item_identity(payload: dict[str, Any]) -> str:
    """What names a portfolio item's source in its text: the source's link, else its title."""
    return str(payload.get("url") or payload.get("title") or "")


def portfolio_notes(payload: dict[str, Any]) -> str:
    """A portfolio task's notes: health, forecast, slip and the link to the source, then pmsync's mark."""
    def shown(key: str) -> str:
        value = payload.get(key)
        return "—" if value is None else str(value)
    return "\n".join([
        f"Health: {shown('health')}",
        f"State: {shown('state')}",
        f"Forecast finish: {shown('forecast_finish')} (baseline {shown('baseline_due')})",
        f"Slip days: {shown('slip_days')}",
        f"{SOURCE_LINE}{item_identity(payload)}",
        "",
        f"{ITEM_MARK} ({payload.get('kind') or 'item'} in {payload.get('tool') or 'a tool'}): kept up to date by "
        "pmsync; edits here are overwritten.",
    ])


def identity_in_notes(notes: str) -> str | None:
    """The source a task's notes name, when pmsync wrote them (they carry its mark); else None."""
    if ITEM_MARK not in notes:
        return None
    for line in notes.splitlines():
        if line.startswith(SOURCE_LINE):
            return line[len(SOURCE_LINE):].strip() or None
    return None


@dataclass
class Watermark:
    """The latest `modified_at` delivered and the gids delivered at exactly that instant."""

    at: datetime | None = None
    gids: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, at: str | None, gids: str | None) -> Watermark:
        moment = parse_time(at) if at else None
        return cls(moment, {g for g in (gids or "").split(",") if g}) if moment else cls()

    def covers(self, gid: str, modified: datetime | None) -> bool:
        """True when a task in this state was delivered already (a re-read of the overlap window)."""
        if self.at is None or modified is None:
            return False
        return modified < self.at or (modified == self.at and gid in self.gids)

    def advance(self, gid: str, modified: datetime | None) -> None:
        if modified is None:
            return
        if self.at is None or modified > self.at:
            self.at, self.gids = modified, {gid}
        elif modified == self.at:
            self.gids.add(gid)

    def merged(self, other: Watermark) -> Watermark:
        out = Watermark(self.at, set(self.gids))
        for gid in other.gids:
            out.advance(gid, other.at)
        return out

    def text(self) -> tuple[str, str]:
        return (self.at.isoformat() if self.at else "", ",".join(sorted(self.gids)))


@dataclass
class PullCursor:
    """What a committed batch says: the watermark of finished pulls, the events sync token per project, and,
    while a pull is under way, where it is (the project, the listing offset, a pending token, the run's high)."""

    committed: Watermark = field(default_factory=Watermark)
    tokens: dict[str, str] = field(default_factory=dict)
    project: str | None = None
    offset: str = ""
    pending_token: str = ""
    high: Watermark = field(default_factory=Watermark)

    @classmethod
    def read(cls, cursor: dict[str, Any] | None) -> PullCursor:
        if not cursor:
            return cls()
        position = cursor.get("position") or {}
        return cls(
            committed=Watermark.read(cursor.get("modified_since"), cursor.get("ids_at")),
            tokens=dict(cursor.get("events") or {}),
            project=position.get("project"), offset=position.get("offset") or "",
            pending_token=position.get("events") or "",
            high=Watermark.read(position.get("high"), position.get("high_ids")),
        )

    def write(self) -> dict[str, Any]:
        since, ids_at = self.committed.text()
        out: dict[str, Any] = {"modified_since": since, "ids_at": ids_at, "events": dict(self.tokens)}
        if self.project is not None:
            high, high_ids = self.high.text()
            out["position"] = {"project": self.project, "offset": self.offset, "events": self.pending_token,
                               "high": high, "high_ids": high_ids}
        return out


# -- the connector --------------------------------------------------------------------------------------------

class AsanaConnector(Connector):
    """One Asana workspace and its configured projects."""

    tool = "asana"
    write_targets = ("asana.custom_fields", "asana.status_update", "portfolio.item", "portfolio.archive")

    def __init__(
        self,
        name: str,
        token: str,
        projects: list[str],
        *,
        base_url: str = ASANA_API,
        workspace: str | None = None,
        verify: bool | str = True,
        policy: RetryPolicy | None = None,
        overlap: timedelta = OVERLAP,
        sleep: Callable[[float], None] = time.sleep,
        subtasks: bool = True,
    ) -> None:
        super().__init__(name)
        self.base_url = base_url.rstrip("/")
        self.projects = list(projects)
        self.subtasks = subtasks  # False: only what the projects list (subtasks no project lists are left out)
        self.workspace = workspace
        self.overlap = overlap
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        configuration = asana.Configuration()
        configuration.host = self.base_url
        configuration.access_token = token
        configuration.retry_strategy = False  # one SDK call = one HTTP attempt; `_call` retries
        configuration.connection_pool_maxsize = WORKERS * 2
        configuration.verify_ssl = verify is not False
        if isinstance(verify, str):
            configuration.ssl_ca_cert = verify
        self.client = asana.ApiClient(configuration)
        self.tasks_api = asana.TasksApi(self.client)
        self.stories_api = asana.StoriesApi(self.client)
        self.events_api = asana.EventsApi(self.client)
        self.projects_api = asana.ProjectsApi(self.client)
        self.users_api = asana.UsersApi(self.client)
        self.fields_api = asana.CustomFieldsApi(self.client)
        self.field_settings_api = asana.CustomFieldSettingsApi(self.client)
        self.status_api = asana.StatusUpdatesApi(self.client)
        self._pool: ThreadPoolExecutor | None = None
        self._walked: list[str] | None = None  # every gid of the last full walk, for the census after it
        self._scope_vouched = False  # the last pull's events showed that nothing left the projects
        self._fresh_tokens: dict[str, str] = {}
        self._me: str | None = None
        self._me_lock = threading.Lock()
        # Tasks with events that are pmsync's own custom-field writes, and tasks with any other event.
        self._own_events: set[str] = set()
        self._other_events: set[str] = set()
        # What write-back looked up, once per connector (a push builds its own connector); a push writes from
        # several threads, so lookups are made under one lock.
        self._lookups = threading.RLock()
        self._pmsync_fields: dict[str, FieldDefinition] | None = None
        self._project_fields: dict[str, set[str]] = {}
        self._task_projects: dict[str, str] | None = None
        self._portfolio: dict[str, dict[str, str]] = {}

    @classmethod
    def from_config(cls, conn: AsanaConnection) -> AsanaConnector:
        """The connector for a configured Asana connection (no request is made until it is used)."""
        limits = conn.rate_limit
        defaults = RetryPolicy()
        policy = RetryPolicy(
            max_attempts=(limits.max_retries + 1) if limits.max_retries is not None else defaults.max_attempts,
            max_delay_s=limits.max_wait_seconds or defaults.max_delay_s,
        )
        return cls(conn.name, conn.auth.token.get_secret_value(), conn.projects, base_url=conn.api_url,
                   workspace=conn.workspace, verify=conn.tls_verify, policy=policy, subtasks=conn.subtasks)

    # -- the Connector interface ------------------------------------------------------------------------------
    def check(self) -> None:
        """Read `users/me`: proves the URL and the token."""
        self._call("the credentials check", lambda: self.users_api.get_user("me", {"opt_fields": "name"},
                                                                             **self._kw()))

    def pull(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        """Per configured project, in order: batches of one listing page each (its tasks, their hidden subtasks
        on a full walk, stories, links, assignees), then one batch with the changed hidden subtasks that closes
        the project and commits its events token. The first batch carries the projects."""
        state = PullCursor.read(cursor)
        if state.project is not None and state.project not in self.projects:
            state.project, state.offset, state.pending_token = None, "", ""
        start = self.projects.index(state.project) if state.project is not None else 0
        # The projects' own reads (their names, for the first batch) go out first, side by side with the heads.
        projects = self.project_reads()
        first = True
        # A full walk from the first project sees every task and subtask: the census after it needs no listing.
        walked: list[str] | None = [] if cursor is None else None
        self._walked = None
        self._scope_vouched = False
        # Only a pull that reads every project's events from its stored token can vouch that nothing left them.
        from_tokens = cursor is not None and state.project is None
        # Each project's events feed is a chain of pages (one sync token after another); the projects' chains are
        # read side by side up front rather than one project after another, each followed by the first pages of
        # the project's listing of changes (unless the pull resumes within that listing).
        since = None if state.committed.at is None else state.committed.at - self.overlap
        events = {gid: self.pool().submit(
            self._project_head, gid, state.pending_token if gid == state.project else "", dict(state.tokens),
            since, not (gid == state.project and state.offset)) for gid in self.projects[start:]}
        for k in range(start, len(self.projects)):
            gid = self.projects[k]
            if state.project != gid:
                state.project, state.offset, state.pending_token = gid, "", ""
            for batch in self._project_batches(gid, state, events[gid].result(), last=k == len(self.projects) - 1):
                if first:
                    batch.projects, first = [read.result() for read in projects], False
                if walked is not None:
                    walked.extend(str(record["gid"]) for record in batch.records if isinstance(record, dict)
                                  and record.get("gid"))
                yield batch
        self._walked = walked
        self._scope_vouched = from_tokens and all(
            not feed.walk and not feed.may_leave_scope for feed in (events[gid].result() for gid in self.projects))

    def census(self) -> Iterator[str]:
        """Every task gid of the configured projects (ids-only listings), then the hidden subtasks: one
        subtasks request per parent whose `num_subtasks` exceeds its children seen in the listings. After a full
        walk by this connector, the gids it saw."""
        if self._walked is not None:
            yield from self._walked
            return
        expected: dict[str, int] = {}
        listed_children: dict[str, int] = {}
        for project in self.projects:
            for page, _ in self._listing_pages(project, None, "", CENSUS_FIELDS):
                for task in page:
                    yield task["gid"]
                    parent = (task.get("parent") or {}).get("gid")
                    if parent:
                        listed_children[parent] = listed_children.get(parent, 0) + 1
                    if (task.get("num_subtasks") or 0) > 0:
                        expected[task["gid"]] = task["num_subtasks"]
        hidden = [gid for gid, count in expected.items() if listed_children.get(gid, 0) < count]
        if not self.subtasks:
            return
        listed = set(listed_children)  # parents only: the subtasks below are found by walking
        while hidden:
            deeper = []
            for children in self.pool().map(lambda gid: self._subtasks(gid, CENSUS_FIELDS), hidden):
                for child in children:
                    if child["gid"] in listed:
                        continue
                    yield child["gid"]
                    if (child.get("num_subtasks") or 0) > 0:
                        deeper.append(child["gid"])
            hidden = deeper

    def census_needed(self) -> bool:
        """False after an incremental pull that read every project's events from its stored token and met no event
        that can take a task out of the projects (a deletion, a removal from a project, a new parent or new
        memberships): the census (an ids listing per project and a subtasks listing per hidden parent, most of an
        incremental sync's requests) would find nothing. A deletion the events report brings the census back."""
        return not self._scope_vouched

    def census_scope(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "projects": sorted(self.projects), "subtasks": self.subtasks}

    def has_changes(self, cursor: dict[str, Any] | None) -> bool:
        """One events request per project from its stored sync token: any event, an expired token (412, whose
        fresh token is kept for the next pull) or an unfinished pull means yes."""
        state = PullCursor.read(cursor)
        if not cursor or state.project is not None:
            return True
        for project in self.projects:
            token = state.tokens.get(project)
            if not token:
                return True
            try:
                body = self._events_page(project, token)
            except _TokenExpired as expired:
                self._fresh_tokens[project] = expired.fresh
                return True
            if body.get("data"):
                return True
        return False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.client.rest_client.pool_manager.clear()
        pool = getattr(self.client, "pool", None)
        if pool is not None:  # the SDK makes a ThreadPool per client for async calls it never gets here
            pool.close()
            pool.join()
            del self.client.pool

    # -- write-back -------------------------------------------------------------------------------------------
    def setup_writeback(self, containers: list[str]) -> list[str]:
        """Create pmsync's three workspace custom fields (once: reused by name, missing state options added)
        and add them to each project in `containers`; one line per thing created."""
        created: list[str] = []
        fields = self._ensure_workspace_fields(created)
        for project in containers:
            present = self._project_field_gids(project)
            for meaning, spec in PMSYNC_FIELDS.items():
                if fields[meaning].gid in present:
                    continue
                body = {"data": {"custom_field": fields[meaning].gid, "is_important": True}}
                self._call(f"adding custom field {spec.name!r} to project {project}",
                           lambda body=body, project=project: self.projects_api.add_custom_field_setting_for_project(
                               body, project, {"opt_fields": "gid"}, **self._kw()))
                created.append(f"asana project {project}: added custom field {spec.name!r}")
            self._project_fields.pop(project, None)
        self._task_projects = None
        return created

    def write(self, write: Write) -> WriteResult:
        """Put one pmsync value in Asana (targets: see `write_targets`). Custom fields go only where the task's
        project has pmsync's fields; anything else of the task is left alone."""
        if write.target == "asana.custom_fields":
            return self._write_custom_fields(write)
        if write.target == "asana.status_update":
            return self._write_status_update(write)
        if write.target == "portfolio.item":
            return self._write_portfolio_item(write)
        if write.target == "portfolio.archive":
            return self._archive_portfolio_item(write)
        return super().write(write)

    def _write_custom_fields(self, write: Write) -> WriteResult:
        project = self._project_of_task(write.native_id)
        values = self._field_values(write.payload, project) if project else {}
        if not values:  # a subtask, or a project without pmsync's fields: nothing pmsync may write there
            return WriteResult(write.remote_ref, skipped="the task is in no project with pmsync's custom fields "
                                                         "(subtasks are in none; for projects run `pmsync push --setup`)")
        body = {"data": {"custom_fields": values}}
        try:
            answer = self._call(
                f"writing pmsync's custom fields on task {write.native_id}",
                lambda: self.tasks_api.update_task(body, write.native_id, {"opt_fields": "gid,modified_at"},
                                                   **self._kw()),
                missing_ok=True)
        except _Missing:
            log.info("task %s is gone; its custom fields are not written", write.native_id)
            return WriteResult(write.remote_ref)
        modified_at = (answer.get("data") or {}).get("modified_at") if isinstance(answer, dict) else None
        return WriteResult(write.remote_ref,
                           version=own_version(modified_at, values) if isinstance(modified_at, str) else None)

    def _write_status_update(self, write: Write) -> WriteResult:
        """A new status update on the project (status updates are a timeline: each health change adds one)."""
        status_type = HEALTH_STATUS.get(str(write.payload.get("health") or ""))
        if status_type is None:
            return WriteResult(write.remote_ref)
        text = str(write.payload.get("text") or f"Project health is {write.payload['health']}.")
        body = {"data": {"parent": write.native_id, "status_type": status_type,
                         "title": f"pmsync: schedule health {write.payload['health']}", "text": text}}
        created = self._call(f"posting a status update on project {write.native_id}",
                             lambda: self.status_api.create_status_for_object(body, {"opt_fields": "gid"},
                                                                               **self._kw()))
        return WriteResult((created.get("data") or {}).get("gid"))

    def _write_portfolio_item(self, write: Write) -> WriteResult:
        """The item's task in the container project, updated in place (found by remote_ref, else by the
        source link in the notes of a task pmsync made), else created."""
        container = write.native_id
        fields = {"name": str(write.payload.get("title") or "(untitled)"), "notes": portfolio_notes(write.payload),
                  "completed": False}
        values = self._field_values(write.payload, container)
        if values:
            fields["custom_fields"] = values
        gid = write.remote_ref or self._portfolio_tasks(container).get(item_identity(write.payload))
        if gid is not None:
            try:
                self._call(f"updating portfolio task {gid}", lambda: self.tasks_api.update_task(
                    {"data": fields}, gid, {"opt_fields": "gid"}, **self._kw()), missing_ok=True)
                return WriteResult(gid)
            except _Missing:
                log.info("portfolio task %s was deleted; creating it again", gid)
        body = {"data": {**fields, "projects": [container]}}
        created = self._call(f"creating a portfolio task in project {container}",
                             lambda: self.tasks_api.create_task(body, {"opt_fields": "gid"}, **self._kw()))
        gid = (created.get("data") or {}).get("gid")
        self._portfolio_tasks(container)[item_identity(write.payload)] = gid
        return WriteResult(gid)

    def _archive_portfolio_item(self, write: Write) -> WriteResult:
        """Mark the item's task completed (it stays in the project's history; the planner names it in the
        payload's `item`); a task already gone is fine."""
        gid = write.remote_ref or write.payload.get("item")
        if not gid:
            return WriteResult(None)
        try:
            self._call(f"archiving portfolio task {gid}", lambda: self.tasks_api.update_task(
                {"data": {"completed": True}}, gid, {"opt_fields": "gid"}, **self._kw()), missing_ok=True)
        except _Missing:
            pass
        return WriteResult(gid)

    # -- write-back lookups (each read once per connector, i.e. once per push) --------------------------------
    def _ensure_workspace_fields(self, created: list[str]) -> dict[str, FieldDefinition]:
        found = self._workspace_fields()
        before = len(created)
        for meaning, spec in PMSYNC_FIELDS.items():
            if meaning not in found:
                data: dict[str, Any] = {"workspace": self._workspace_gid(), "name": spec.name,
                                        "resource_subtype": spec.subtype, "description": spec.description}
                if spec.subtype == "number":
                    data["precision"] = 0
                if spec.subtype == "enum":
                    data["enum_options"] = [{"name": state} for state in STATES]
                self._call(f"creating custom field {spec.name!r}", lambda data=data: self.fields_api.create_custom_field(
                    {"data": data}, {"opt_fields": "gid"}, **self._kw()))
                created.append(f"asana workspace {self._workspace_gid()}: created custom field {spec.name!r}")
        state = self._workspace_fields(refresh=len(created) > before).get("state")
        for name in STATES:
            if state is not None and state.subtype == "enum" and name not in state.options:
                self._call(f"adding option {name!r} to {state.name!r}", lambda name=name: (
                    self.fields_api.create_enum_option_for_custom_field(
                        state.gid, {"body": {"data": {"name": name}}, "opt_fields": "gid"}, **self._kw())))
                created.append(f"asana custom field {state.name!r}: added option {name!r}")
        return self._workspace_fields(refresh=len(created) > before)

    def _workspace_fields(self, refresh: bool = False) -> dict[str, FieldDefinition]:
        """pmsync's custom fields in the workspace, by meaning (slip_days, forecast_finish, state)."""
        with self._lookups:
            return self._workspace_fields_locked(refresh)

    def _workspace_fields_locked(self, refresh: bool) -> dict[str, FieldDefinition]:
        if self._pmsync_fields is None or refresh:
            def fetch(opts: dict[str, Any]) -> Any:
                return self.fields_api.get_custom_fields_for_workspace(self._workspace_gid(), opts, **self._kw())
            listed = self._all_pages("listing the workspace's custom fields", fetch,
                                     {"opt_fields": "name,resource_subtype,enum_options.name"})
            self._pmsync_fields = pmsync_fields(listed)
        return self._pmsync_fields

    def _project_field_gids(self, project: str) -> set[str]:
        """The custom field gids a project has (its custom field settings)."""
        with self._lookups:
            return self._project_field_gids_locked(project)

    def _project_field_gids_locked(self, project: str) -> set[str]:
        if project not in self._project_fields:
            def fetch(opts: dict[str, Any]) -> Any:
                return self.field_settings_api.get_custom_field_settings_for_project(project, opts, **self._kw())
            settings = self._all_pages(f"reading the custom fields of project {project}", fetch,
                                       {"opt_fields": "custom_field.gid"})
            self._project_fields[project] = {str((s.get("custom_field") or {}).get("gid")) for s in settings}
        return self._project_fields[project]

    def _field_values(self, payload: dict[str, Any], project: str) -> dict[str, Any]:
        """`custom_fields` of a task update: pmsync's fields the project has, with the payload's values."""
        present = self._project_field_gids(project)
        values = {}
        for meaning, definition in self._workspace_fields().items():
            if meaning in payload and definition.gid in present:
                values[definition.gid] = field_value(definition, payload[meaning])
        return values

    def _project_of_task(self, gid: str) -> str | None:
        """The configured project a task is listed in (subtasks are in none). The listings are read once, and
        only for projects that have at least one pmsync field."""
        with self._lookups:
            return self._project_of_task_locked(gid)

    def _project_of_task_locked(self, gid: str) -> str | None:
        if self._task_projects is None:
            wanted = {d.gid for d in self._workspace_fields().values()}
            self._task_projects = {}
            for project in self.projects:
                if not wanted & self._project_field_gids(project):
                    continue
                for page, _ in self._listing_pages(project, None, "", ("gid",)):
                    self._task_projects.update((task["gid"], project) for task in page)
        return self._task_projects.get(gid)

    def _portfolio_tasks(self, container: str) -> dict[str, str]:
        """The tasks pmsync made in a portfolio container, by the source they show (read once)."""
        with self._lookups:
            return self._portfolio_tasks_locked(container)

    def _portfolio_tasks_locked(self, container: str) -> dict[str, str]:
        if container not in self._portfolio:
            mine: dict[str, str] = {}
            for page, _ in self._listing_pages(container, None, "", ("notes",)):
                for task in page:
                    identity = identity_in_notes(task.get("notes") or "")
                    if identity:
                        mine.setdefault(identity, task["gid"])
            self._portfolio[container] = mine
        return self._portfolio[container]

    def _workspace_gid(self) -> str:
        if not self.workspace:
            raise ConnectionFailed(f"Asana connection {self.name} names no workspace; set workspace to its gid.")
        return self.workspace

    # -- a project's batches ----------------------------------------------------------------------------------
    def _project_batches(self, project: str, state: PullCursor, events: ProjectEvents, last: bool,
                         ) -> Iterator[Batch]:
        walk, token, changed = events.walk, events.token, events.changed
        since = None if walk or state.committed.at is None else state.committed.at - self.overlap
        keep_all = walk and state.committed.at is None
        delivered: set[str] = set()
        if state.offset != LISTING_DONE:
            for page, next_offset in self._listing_pages(project, since, state.offset, TASK_FIELDS,
                                                         [] if state.offset else events.head):
                tasks = [t for t in page if keep_all or t["gid"] in changed or self._fresh(t, state.committed)]
                # Tasks left out as pmsync's own edits count as delivered: they need no read by gid below.
                delivered.update(t["gid"] for t in tasks)
                if walk and self.subtasks:
                    tasks += self._hidden_subtasks(page, keep_all, state.committed)
                else:
                    tasks = self.without_own_edits(tasks, state.high)
                batch = self._batch(tasks, project, state.high)
                delivered.update(t["gid"] for t in tasks)
                state.offset = next_offset or LISTING_DONE
                state.pending_token = token if walk else ""
                batch.cursor = state.write()
                yield batch
        missing = self._tasks_by_gid([gid for gid in changed if gid not in delivered])
        if not self.subtasks:  # a changed task no project lists is a hidden subtask
            missing = [task for task in missing if is_project_member(task, set(self.projects))]
        batch = self._batch(self.without_own_edits(missing, state.high), project, state.high)
        state.tokens[project] = token
        if last:
            state.committed = state.committed.merged(state.high)
            state.project, state.offset, state.pending_token, state.high = None, "", "", Watermark()
        else:
            state.project = self.projects[self.projects.index(project) + 1]
            state.offset, state.pending_token = "", ""
        batch.cursor = state.write()
        yield batch

    def _project_head(self, project: str, pending_token: str, tokens: dict[str, str], since: datetime | None,
                      read_ahead: bool) -> ProjectEvents:
        """The project's events (`_project_events`) and, when the project is not walked and `read_ahead`, the
        first HEAD_PAGES pages of its listing of tasks modified since `since`.

        Where a stored token should let the events stand, the listing is read on a thread of its own alongside the
        events (each is a chain of pages, one after another): either may come first, since a change the listing
        misses is in the events, and a change after the events read is in the next pull's. When the token turns out
        to have expired (the project is walked), the listing is dropped, up to HEAD_PAGES requests spent for
        nothing."""
        if not (read_ahead and since is not None):
            return self._project_events(project, pending_token, tokens)
        pages = itertools.islice(self._listing_pages(project, since, "", TASK_FIELDS), HEAD_PAGES)  # lazy
        head = None
        if not pending_token and tokens.get(project) and project not in self._fresh_tokens:
            head = read_ahead_now(pages, f"asana-{self.name}-head", HEAD_PAGES)
        try:
            feed = self._project_events(project, pending_token, tokens)
            if not feed.walk:
                feed.head = list(head if head is not None else pages)
        finally:
            if head is not None:
                head.close()
        return feed

    def _project_events(self, project: str, pending_token: str, tokens: dict[str, str]) -> ProjectEvents:
        """Walk the whole project?, the sync token to commit when it is done, the gids changed since the stored
        token, and whether an event may have taken a task out of the project. A project walks when it has no usable
        token (first pull, or expired) or resumes such a walk (`pending_token`, the cursor's for the project it
        stopped in). Which tasks' events are pmsync's own
        custom-field writes is noted on the way (`_sort_events`). Safe to run for several projects at once."""
        if pending_token:
            return ProjectEvents(True, pending_token)
        stored = tokens.get(project)
        noted = self._fresh_tokens.pop(project, None)  # has_changes found the stored token expired
        if not stored or noted:
            return ProjectEvents(True, noted or self._fresh_token(project))
        feed = ProjectEvents(False, stored)
        while True:
            try:
                body = self._events_page(project, feed.token)
            except _TokenExpired as expired:
                log.info("events token of project %s expired; walking the project", project)
                return ProjectEvents(True, expired.fresh)
            events = body.get("data") or ()
            feed.changed.update(_changed_gids(events))
            feed.may_leave_scope = feed.may_leave_scope or any(map(_may_leave_scope, events))
            self._sort_events(events)
            feed.token = body.get("sync") or feed.token
            if not body.get("has_more"):
                return feed

    # -- pmsync's own edits (the push echo) ------------------------------------------------------------------
    def _sort_events(self, events: Iterable[dict[str, Any]]) -> None:
        """Note, per task, whether an event is pmsync's own custom-field write or anything else."""
        versions = self.own_edits.versions
        if not versions:
            return
        for event in events:
            gid = _event_task(event)
            if gid is None:
                continue
            change = event.get("change") or {}
            written = (change.get("new_value") or {}).get("gid") if isinstance(change.get("new_value"), dict) else None
            by_me = (event.get("user") or {}).get("gid") == self._me_gid()
            field_change = (event.get("action") == "changed" and change.get("field") == "custom_fields"
                            and written is not None and any(written in fields for _, fields in
                                                            map(read_own_version, versions.get(gid, ()))))
            # Asana also adds a story ("changed Slip days to 3") for each custom-field change, by the same user.
            field_story = (event.get("action") == "added"
                           and (event.get("resource") or {}).get("resource_type") == "story"
                           and str((event.get("resource") or {}).get("resource_subtype") or "").endswith(
                               "_custom_field_changed"))
            own = by_me and (field_change or field_story)
            (self._own_events if own else self._other_events).add(gid)

    def without_own_edits(self, tasks: list[dict[str, Any]], high: Watermark) -> list[dict[str, Any]]:
        """The tasks someone other than pmsync changed: a task whose every event since the stored token is pmsync's
        own custom-field write, and whose `modified_at` is the one pmsync's last write answered with, changed only
        by pmsync (the push echo): it is left out, its stories not read, and the watermark moves past it."""
        versions = self.own_edits.versions
        if not versions:
            return tasks
        kept = []
        for task in tasks:
            gid = str(task.get("gid"))
            echo = (gid in self._own_events and gid not in self._other_events
                    and task.get("modified_at") in {at for at, _ in map(read_own_version, versions.get(gid, ()))})
            if echo:
                high.advance(gid, parse_time(task.get("modified_at")))
                self.echoes_skipped += 1
            else:
                kept.append(task)
        return kept

    def _me_gid(self) -> str | None:
        """The token's own user (one `users/me` read, however many projects' events ask at once), whose events may
        be pmsync's own writes."""
        with self._me_lock:
            if self._me is None:
                body = self._call("reading the token's user", lambda: self.users_api.get_user(
                    "me", {"opt_fields": "gid"}, **self._kw()))
                self._me = str((body.get("data") or {}).get("gid") or "")
        return self._me or None

    def _fresh(self, task: dict[str, Any], committed: Watermark) -> bool:
        return not committed.covers(task["gid"], parse_time(task.get("modified_at")))

    def _hidden_subtasks(self, page: list[dict[str, Any]], keep_all: bool, committed: Watermark,
                         ) -> list[dict[str, Any]]:
        """The subtasks below a page's tasks that no project lists (recursively), fresh ones only unless all."""
        projects = set(self.projects)
        found: list[dict[str, Any]] = []
        parents = [t for t in page if (t.get("num_subtasks") or 0) > 0]
        while parents:
            deeper = []
            for children in self.pool().map(lambda t: self._subtasks(t["gid"], TASK_FIELDS), parents):
                for child in children:
                    if is_project_member(child, projects):
                        continue
                    if keep_all or self._fresh(child, committed):
                        found.append(child)
                    if (child.get("num_subtasks") or 0) > 0:
                        deeper.append(child)
            parents = deeper
        return found

    def _batch(self, tasks: list[dict[str, Any]], project: str, high: Watermark) -> Batch:
        """A batch of tasks with their `_pmsync` context, due-date history (one stories read each), dependencies
        and assignees; the run's high watermark advances past them."""
        histories = list(self.pool().map(self._stories, [t["gid"] for t in tasks]))
        batch = Batch(people=assignees(tasks))
        for task, stories in zip(tasks, histories):
            annotate(task, project, self.projects)
            batch.records.append(task)
            batch.due_changes.extend(due_changes(task["gid"], stories))
            batch.links.extend(dependency_links(task))
            batch.covers_links_of.append(task["gid"])
            high.advance(task["gid"], parse_time(task.get("modified_at")))
        return batch

    # -- reads ------------------------------------------------------------------------------------------------
    def project_reads(self) -> list[Future[ProjectRecord]]:
        """The configured projects as Asana names them: their reads, started now on the pool (one request each,
        side by side), in configured order."""
        return [self.pool().submit(self._project_record, gid) for gid in self.projects]

    def _project_record(self, gid: str) -> ProjectRecord:
        body = self._call(f"reading project {gid}", lambda: self.projects_api.get_project(
            gid, {"opt_fields": "name,permalink_url"}, **self._kw()))
        data = body.get("data") or {}
        return ProjectRecord(native_id=gid, name=data.get("name") or gid, url=data.get("permalink_url"))

    def _listing_pages(self, project: str, since: datetime | None, offset: str, fields: Iterable[str],
                       read: list[tuple[list[dict[str, Any]], str | None]] | None = None,
                       ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """`GET /tasks?project=` (modified since `since`, when given) one page at a time from `offset`, with the
        offset of the next page (None after the last); `read` are the first pages, read already."""
        base: dict[str, Any] = {"project": project, "limit": PAGE, "opt_fields": ",".join(fields)}
        if since is not None:
            base["modified_since"] = asana_time(since)
        if read:
            yield from read
            if read[-1][1] is None:
                return
            offset = read[-1][1] or ""
        while True:
            opts = {**base, **({"offset": offset} if offset else {})}
            try:
                body = self._call(f"listing the tasks of project {project}",
                                  lambda opts=opts: self.tasks_api.get_tasks(dict(opts), **self._kw()))
            except ConnectionFailed:
                if not offset:
                    raise
                # An offset from an interrupted pull may have expired: read the project again from its start.
                log.info("offset of project %s refused; listing it again from the start", project)
                offset = ""
                continue
            next_page = body.get("next_page") or {}
            offset = next_page.get("offset") or ""
            yield list(body.get("data") or []), offset or None
            if not offset:
                return

    def _subtasks(self, gid: str, fields: Iterable[str]) -> list[dict[str, Any]]:
        """Every subtask of a task (all pages)."""
        def fetch(opts: dict[str, Any]) -> Any:
            return self.tasks_api.get_subtasks_for_task(gid, opts, **self._kw())
        return self._all_pages(f"listing the subtasks of task {gid}", fetch, {"opt_fields": ",".join(fields)})

    def _stories(self, gid: str) -> list[dict[str, Any]]:
        """Every story of a task with the fields due-date history needs (all pages)."""
        def fetch(opts: dict[str, Any]) -> Any:
            return self.stories_api.get_stories_for_task(gid, opts, **self._kw())
        return self._all_pages(f"reading the stories of task {gid}", fetch, {"opt_fields": ",".join(STORY_FIELDS)})

    def _tasks_by_gid(self, gids: list[str]) -> list[dict[str, Any]]:
        """Tasks read one by one (those deleted meanwhile are skipped: the census sees them go)."""
        def read(gid: str) -> dict[str, Any] | None:
            try:
                body = self._call(f"reading task {gid}", lambda: self.tasks_api.get_task(
                    gid, {"opt_fields": ",".join(TASK_FIELDS)}, **self._kw()), missing_ok=True)
            except _Missing:
                return None
            return body.get("data")
        return [task for task in self.pool().map(read, gids) if task]

    def _all_pages(self, doing: str, fetch: Callable[[dict[str, Any]], Any], base: dict[str, Any],
                   ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = ""
        while True:
            opts = {**base, "limit": PAGE, **({"offset": offset} if offset else {})}
            body = self._call(doing, lambda opts=opts: fetch(dict(opts)))
            out.extend(body.get("data") or [])
            offset = (body.get("next_page") or {}).get("offset") or ""
            if not offset:
                return out

    def _fresh_token(self, project: str) -> str:
        """A new sync token for a project's events (Asana answers 412 with one when none is sent)."""
        try:
            body = self._events_page(project, None)
        except _TokenExpired as expired:
            return expired.fresh
        return body.get("sync") or ""

    def _events_page(self, project: str, token: str | None) -> dict[str, Any]:
        """One `GET /events?resource=<project>&sync=<token>`; raises _TokenExpired on 412."""
        opts = {"sync": token} if token else {}
        return self._call(f"reading the events of project {project}",
                          lambda: self.events_api.get_events(project, dict(opts), **self._kw()), sync_ok=True)

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"asana-{self.name}")
        return self._pool

    @staticmethod
    def _kw() -> dict[str, Any]:
        return {"full_payload": True, "_return_http_data_only": True, "_request_timeout": TIMEOUT_S}

    # -- the wire ---------------------------------------------------------------------------------------------
    def _call(self, doing: str, send: Callable[[], Any], *, sync_ok: bool = False, missing_ok: bool = False,
              ) -> dict[str, Any]:
        """One SDK call with the shared retry policy: 429 and 5xx (Retry-After honoured), dropped connections and
        unreadable bodies are retried; every attempt is counted. Failures become one ConnectionFailed sentence."""
        policy = self.policy
        for attempt in range(policy.max_attempts):
            last = attempt == policy.max_attempts - 1
            self.stats.add(requests=1)
            try:
                body = send()
            except ApiException as exc:
                status = exc.status or 0
                if status in policy.retry_statuses and not last:
                    self.stats.add(throttled=1) if status == 429 else self.stats.add(server_errors=1)
                    retry_after = parse_retry_after((exc.headers or {}).get("Retry-After"))
                    self._wait(attempt, retry_after, f"{status} during {doing}")
                    continue
                if status == 412 and sync_ok:
                    raise _TokenExpired(_sync_of(exc.body)) from None
                if status == 404 and missing_ok:
                    raise _Missing() from None
                raise self._failure(status, exc, doing) from None
            except urllib3.exceptions.HTTPError as exc:
                self.stats.add(connection_errors=1)
                if last:
                    raise ConnectionFailed(
                        f"Asana at {self.base_url} could not be reached ({type(exc).__name__}) during {doing}; "
                        "check base_url and the network.") from None
                self._wait(attempt, None, f"{type(exc).__name__} during {doing}")
                continue
            if not isinstance(body, dict):  # the SDK hands back the raw text of a body that is not JSON
                self.stats.add(bad_bodies=1)
                if last:
                    raise ConnectionFailed(f"Asana at {self.base_url} kept answering {doing} with unreadable "
                                           "JSON; try again later.")
                self._wait(attempt, None, f"unreadable JSON during {doing}")
                continue
            return body
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        self.sleep(retry_delay(self.policy, self.stats, attempt, retry_after, why))

    def _failure(self, status: int, exc: ApiException, doing: str) -> ConnectionFailed:
        if status == 0:
            return ConnectionFailed(
                f"Asana at {self.base_url} failed TLS verification; set ca_bundle to your CA's PEM file, "
                "or check base_url.")
        if status == 401:
            return ConnectionFailed(
                f"Asana at {self.base_url} refused the token of connection {self.name}; check auth.token "
                "(a personal access token).")
        if status in (402, 403):
            return ConnectionFailed(f"Asana at {self.base_url} denied {doing} (HTTP {status}); give the token's "
                                    "user access to the configured projects.")
        detail = _messages(exc.body)
        if status in (400, 404):
            return ConnectionFailed(f"Asana at {self.base_url} rejected {doing}: {detail or f'HTTP {status}'}; "
                                    "check the connection's projects.")
        return ConnectionFailed(f"Asana at {self.base_url} answered HTTP {status} to {doing} after "
                                f"{self.policy.max_attempts} attempts; try again later.")


class _TokenExpired(Exception):
    def __init__(self, fresh: str) -> None:
        super().__init__("sync token expired")
        self.fresh = fresh


class _Missing(Exception):
    pass


def own_version(modified_at: str, field_gids: Iterable[str]) -> str:
    """A custom-field write's version: the `modified_at` the write answered with, and the fields it set."""
    return f"{modified_at}{VERSION_SEPARATOR}{','.join(sorted(field_gids))}"


def read_own_version(version: str) -> tuple[str, frozenset[str]]:
    """(modified_at, field gids) of a version written by `own_version`."""
    modified_at, _, fields = version.partition(VERSION_SEPARATOR)
    return modified_at, frozenset(gid for gid in fields.split(",") if gid)


def _event_task(event: dict[str, Any]) -> str | None:
    """The task an event is about: its resource, or a story's parent task."""
    resource = event.get("resource") or {}
    if resource.get("resource_type") == "task" and resource.get("gid"):
        return str(resource["gid"])
    parent = event.get("parent") or {}
    if resource.get("resource_type") == "story" and parent.get("resource_type") == "task" and parent.get("gid"):
        return str(parent["gid"])
    return None


@dataclass
class ProjectEvents:
    """What a project's events feed said since its stored sync token (or that the project must be walked)."""

    walk: bool  # no usable token: list the whole project
    token: str  # the sync token to commit once the project is done
    changed: set[str] = field(default_factory=set)  # tasks added or changed
    may_leave_scope: bool = False  # an event that can take a task out of the project (see `_may_leave_scope`)
    # The first listing pages of an incremental pull (tasks, next offset), read right after the events.
    head: list[tuple[list[dict[str, Any]], str | None]] = field(default_factory=list)


# Task fields whose change can move a task (or a subtask, with its own subtasks) out of the configured projects.
MEMBERSHIP_FIELDS = frozenset({"parent", "memberships", "projects"})


def _may_leave_scope(event: dict[str, Any]) -> bool:
    """True for an event after which a task may no longer be in the project: deleted, removed (from the project or
    from its parent), undeleted (a state the census settles), or a change of parent or memberships; also an event
    too vague to tell. Changes of other fields, added tasks and stories cannot."""
    if (event.get("resource") or {}).get("resource_type") != "task":
        return False
    action = event.get("action")
    if action == "added":
        return False
    if action != "changed":
        return True
    change = event.get("change")
    return not isinstance(change, dict) or change.get("field") in MEMBERSHIP_FIELDS or not change.get("field")


def _changed_gids(events: Iterable[dict[str, Any]]) -> set[str]:
    """Tasks an events page says were added or changed (a story's event names its task as parent)."""
    gids = set()
    for event in events:
        resource = event.get("resource") or {}
        if event.get("action") == "deleted" and resource.get("resource_type") == "task":
            continue
        if resource.get("resource_type") == "task" and resource.get("gid"):
            gids.add(str(resource["gid"]))
        elif resource.get("resource_type") == "story":
            parent = event.get("parent") or {}
            if parent.get("resource_type") == "task" and parent.get("gid"):
                gids.add(str(parent["gid"]))
    return gids


def _body(raw: Any) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except (orjson.JSONDecodeError, TypeError):
        return None


def _sync_of(raw: Any) -> str:
    body = _body(raw)
    return str(body.get("sync") or "") if isinstance(body, dict) else ""


def _messages(raw: Any) -> str:
    """Asana's own error messages (they name fields and values, never the token)."""
    body = _body(raw)
    if not isinstance(body, dict):
        return ""
    return " ".join(str(e.get("message")) for e in body.get("errors") or () if isinstance(e, dict)).rstrip(".")
