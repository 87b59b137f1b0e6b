"""Jira Cloud REST v2 and v3, emulated over the shared portfolio.

Paths, status codes and JSON shapes follow ../shared/specs/jira-platform-v3.json and ../shared/VENDORS.md (section 1).
v2 and v3 share every path and shape except rich text: v3 description and comment bodies are Atlassian Document
Format documents (a plain string gets Jira's 400), v2 ones are plain strings.

Choices where Jira documents nothing exact (stated here so tests and connectors can rely on them):
- Burst rate limit: 100 requests per 1-second window per credential, answered with 429, `Retry-After` in whole
  seconds, `X-RateLimit-*` and `RateLimit-Reason: jira-burst-based`.
- `/search/jql` caps `maxResults` at 100 when any field is asked, at 5000 for id/key only; without ORDER BY it
  sorts by key, descending; its `nextPageToken` encodes the last (sort key, id) seen, so pages stay consistent
  while data changes (an issue edited mid-paging moves, as it does in Jira).
- The sandbox user's time zone is UTC: JQL dates are read in UTC.
- `POST /issueLink` with type Blocks: the `inwardIssue` blocks the `outwardIssue`.
"""
from __future__ import annotations

import base64
import functools
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox import ids
from sandbox.core import (
    CREDENTIALS,
    Emulator,
    EmulatorSettings,
    JSONBody,
    RateLimit,
    VendorProfile,
    retry_after_seconds,
)
from sandbox.generator import (
    CANCELLED,
    DONE,
    EPIC,
    IN_PROGRESS,
    JIRA,
    LINK_NATIVE,
    LINK_REMOTE,
    MILESTONE,
    NO_DAY,
    SUBTASK,
    TODO,
    TOOLS,
    Portfolio,
    day_number,
    day_to_date,
    mix,
    mix_array,
)

API_VERSIONS = frozenset({"2", "3", "latest"})
MYSELF_ACCOUNT_ID = ids.jira_account_id(0xC0FFEE00)
MYSELF_NAME = "Sandbox Coordinator"
SEARCH_DEFAULT_MAX = 50
SEARCH_CAP_FIELDS = 100
SEARCH_CAP_IDS = 5000
SEARCH_CHANGELOG_HISTORIES = 20
CREATED_LINK_BASE = 1 << 30

MSG_NOT_FOUND = "Issue does not exist or you do not have permission to see it."
MSG_UNAUTHORIZED = "Client must be authenticated to access this resource."
MSG_UNBOUNDED = "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
MSG_ADF = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"

# Native statuses: (name, id, category key). Codes index this table.
STATUSES = (
    ("To Do", "10000", "new"), ("Backlog", "10004", "new"), ("In Progress", "3", "indeterminate"),
    ("In Review", "10001", "indeterminate"), ("Done", "10002", "done"), ("Won't Do", "10003", "done"),
)
TO_DO, BACKLOG, S_IN_PROGRESS, IN_REVIEW, S_DONE, WONT_DO = range(6)
CATEGORIES = {"new": ("2", "To Do", "blue-gray"), "indeterminate": ("4", "In Progress", "yellow"),
              "done": ("3", "Done", "green")}
# Issue types: (name, id, subtask, hierarchyLevel). Codes index this table.
ISSUE_TYPES = (
    ("Epic", "10000", False, 1), ("Story", "10001", False, 0), ("Task", "10002", False, 0),
    ("Sub-task", "10003", True, -1), ("Milestone", "10004", False, 0),
)
T_EPIC, T_STORY, T_TASK, T_SUBTASK, T_MILESTONE = range(5)
TYPE_KIND = {T_EPIC: EPIC, T_STORY: 0, T_TASK: 0, T_SUBTASK: SUBTASK, T_MILESTONE: MILESTONE}
RESOLUTIONS = {S_DONE: ("10000", "Done", "Work has been completed on this issue."),
               WONT_DO: ("10001", "Won't Do", "This issue won't be actioned.")}
LABEL_POOL = ("backend", "frontend", "customer-facing", "tech-debt", "compliance", "quarterly-goal")
TIME_ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/London", "America/Los_Angeles", "UTC")
BLOCKS = {"id": "10000", "name": "Blocks", "inward": "is blocked by", "outward": "blocks"}
LINK_TYPES = (
    BLOCKS,
    {"id": "10001", "name": "Cloners", "inward": "is cloned by", "outward": "clones"},
    {"id": "10002", "name": "Duplicate", "inward": "is duplicated by", "outward": "duplicates"},
    {"id": "10003", "name": "Relates", "inward": "relates to", "outward": "relates to"},
)
AVATAR = "https://avatar-management.services.atlassian.com/default/{size}"

START_DATE, STORY_POINTS, EPIC_LINK = "customfield_10015", "customfield_10016", "customfield_10014"
SLIP_DAYS, FORECAST_FINISH = "customfield_10050", "customfield_10051"


# -- fields -----------------------------------------------------------------------------------------------------

def _system(fid: str, name: str, type_: str, clauses: tuple[str, ...] = (), navigable: bool = True,
            orderable: bool = True, items: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": type_, "system": fid}
    if items:
        schema["items"] = items
    return {"id": fid, "key": fid, "name": name, "custom": False, "orderable": orderable, "navigable": navigable,
            "searchable": True, "clauseNames": list(clauses or (fid,)), "schema": schema}


def _custom(number: int, name: str, type_: str, plugin: str) -> dict[str, Any]:
    fid = f"customfield_{number}"
    return {"id": fid, "key": fid, "name": name, "custom": True, "orderable": True, "navigable": True,
            "searchable": True, "clauseNames": [f"cf[{number}]", name],
            "schema": {"type": type_, "custom": plugin, "customId": number}}


FIELDS = (
    _system("summary", "Summary", "string"),
    _system("status", "Status", "status"),
    _system("issuetype", "Issue Type", "issuetype", ("issuetype", "type")),
    _system("parent", "Parent", "issuelink", ("parent",)),
    _system("project", "Project", "project"),
    _system("assignee", "Assignee", "user"),
    _system("priority", "Priority", "priority"),
    _system("duedate", "Due date", "date", ("due", "duedate")),
    _system("created", "Created", "datetime", ("created", "createdDate"), orderable=False),
    _system("updated", "Updated", "datetime", ("updated", "updatedDate"), orderable=False),
    _system("resolutiondate", "Resolved", "datetime", ("resolutiondate", "resolved"), orderable=False),
    _system("resolution", "Resolution", "resolution"),
    _system("labels", "Labels", "array", items="string"),
    _system("issuelinks", "Linked Issues", "array", ("issueLink",), items="issuelinks"),
    _system("description", "Description", "string"),
    _system("timeoriginalestimate", "Original estimate", "number", ("originalEstimate", "timeoriginalestimate")),
    _system("comment", "Comment", "comments-page", navigable=False),
    _custom(10014, "Epic Link", "any", "com.pyxis.greenhopper.jira:gh-epic-link"),
    _custom(10015, "Start date", "date", "com.atlassian.jira.plugin.system.customfieldtypes:datepicker"),
    _custom(10016, "Story point estimate", "number", "com.pyxis.greenhopper.jira:jsw-story-points"),
    _custom(10050, "Slip days", "number", "com.atlassian.jira.plugin.system.customfieldtypes:float"),
    _custom(10051, "Forecast finish", "date", "com.atlassian.jira.plugin.system.customfieldtypes:datepicker"),
)
FIELD_IDS = tuple(f["id"] for f in FIELDS)
FIELD_NAMES = {f["id"]: f["name"] for f in FIELDS}
NAVIGABLE = tuple(f["id"] for f in FIELDS if f["navigable"])
WRITABLE = frozenset({"summary", "duedate", "description", "labels", "assignee", "timeoriginalestimate",
                      START_DATE, STORY_POINTS, SLIP_DAYS, FORECAST_FINISH, "priority"})
ADF_FIELDS = frozenset({"description"})


class JiraError(Exception):
    """An answer other than success, in Jira's ErrorCollection shape."""

    def __init__(self, status: int, messages: list[str] | None = None, errors: dict[str, str] | None = None):
        super().__init__(status, messages, errors)
        self.status = status
        self.messages = messages or []
        self.errors = errors or {}

    def response(self) -> Response:
        return JSONBody({"errorMessages": self.messages, "errors": self.errors}, status_code=self.status)


def not_found() -> JiraError:
    return JiraError(404, [MSG_NOT_FOUND])


# -- formats ----------------------------------------------------------------------------------------------------

def jira_datetime(seconds: float) -> str:
    """Jira's timestamp format: `2021-01-17T12:34:00.000+0000` (millis, +0000, UTC for the sandbox user)."""
    whole = int(seconds)
    millis = round((seconds - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    return (datetime(1970, 1, 1) + timedelta(seconds=whole)).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}+0000"


def day_string(day: int) -> str | None:
    d = day_to_date(int(day))
    return d.isoformat() if d is not None else None


def parse_day(value: Any, field_id: str) -> int:
    """A `YYYY-MM-DD` field value as a day number (NO_DAY for null), or Jira's 400."""
    if value is None or value == "":
        return NO_DAY
    try:
        return day_number(date.fromisoformat(str(value)[:10]))
    except ValueError:
        raise JiraError(400, errors={field_id: "Date value is invalid. Use the format yyyy-MM-dd."}) from None


def adf(text: str) -> dict[str, Any]:
    """A one-paragraph Atlassian Document."""
    return {"type": "doc", "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}] if text else []}


def adf_text(document: Any) -> str:
    """The plain text of an Atlassian Document (paragraphs joined by newlines), as v2 shows it."""
    if isinstance(document, dict):
        if document.get("type") == "text":
            return str(document.get("text", ""))
        parts = [adf_text(child) for child in document.get("content", [])]
        return ("\n" if document.get("type") == "doc" else "").join(parts)
    return ""


def is_adf(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "doc" and isinstance(value.get("content", []), list)


@dataclass
class RichText:
    """A description or comment body as the client sent it: text for v2, the document too when sent in v3."""

    text: str
    document: dict[str, Any] | None = None

    def render(self, version: str) -> Any:
        if version == "3":
            return self.document if self.document is not None else adf(self.text)
        return self.text


def rich_text(value: Any, version: str, field_id: str) -> RichText | None:
    """Read a rich-text value in the API version's own format, or Jira's 400."""
    if value is None:
        return None
    if version == "3":
        if not is_adf(value):
            raise JiraError(400, errors={field_id: MSG_ADF})
        return RichText(adf_text(value), value)
    if not isinstance(value, str):
        raise JiraError(400, errors={field_id: "Operation value must be a string"})
    return RichText(value)


# -- vendor-only state ------------------------------------------------------------------------------------------

@dataclass
class Comment:
    id: int
    author: int  # person index, -1 = the sandbox user
    body: RichText
    created: float
    updated: float


@dataclass
class History:
    at: float
    author: int
    items: list[dict[str, Any]]


@dataclass
class JiraState:
    """What Jira keeps that the portfolio does not: comments, properties, labels, custom values, links, history."""

    comments: dict[int, list[Comment]] = field(default_factory=dict)
    properties: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: dict[int, list[str]] = field(default_factory=dict)
    descriptions: dict[int, RichText | None] = field(default_factory=dict)
    custom: dict[int, dict[str, Any]] = field(default_factory=dict)
    priorities: dict[int, str] = field(default_factory=dict)
    types: dict[int, int] = field(default_factory=dict)  # issue type codes chosen at creation
    history: dict[int, list[History]] = field(default_factory=dict)
    created_links: list[tuple[int, int, str, int]] = field(default_factory=list)  # (inward, outward, type id, id)
    remote_links: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    removed_remote: set[int] = field(default_factory=set)
    next_comment: int = 10_000
    next_link: int = CREATED_LINK_BASE
    next_remote: int = CREATED_LINK_BASE


# -- the emulator -----------------------------------------------------------------------------------------------

class JiraProfile(VendorProfile):
    """Basic auth with the sandbox's email and API token; Jira's 401, 429 and ErrorCollection bodies."""

    name = "jira"

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        creds = CREDENTIALS["jira"]
        self._expected = "Basic " + base64.b64encode(f"{creds['email']}:{creds['token']}".encode()).decode()
        self._email = creds["email"]

    def principal(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        return self._email if header == self._expected else None

    def unauthorized(self, request: Request) -> Response:
        return JSONBody({"errorMessages": [MSG_UNAUTHORIZED], "errors": {}}, status_code=401,
                        headers={"WWW-Authenticate": 'Basic realm="protected-area"'})

    def too_many_requests(self, retry_after_s: float) -> Response:
        limit = self.settings.rate_limit
        headers = {"Retry-After": retry_after_seconds(retry_after_s), "RateLimit-Reason": "jira-burst-based",
                   "X-RateLimit-Remaining": "0", "X-RateLimit-NearLimit": "true",
                   "X-RateLimit-Reset": _reset_header(datetime.now(UTC).timestamp() + retry_after_s)}
        if limit is not None:
            headers["X-RateLimit-Limit"] = str(limit.limit)
        return JSONBody({"errorMessages": ["Rate limit exceeded."], "errors": {}}, status_code=429, headers=headers)

    def error(self, status: int, message: str) -> Response:
        return JiraError(status, [message]).response()

    def rate_limit_headers(self, limit: RateLimit, remaining: int, reset_at: float) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": str(limit.limit), "X-RateLimit-Remaining": str(remaining)}
        if remaining < limit.limit * 0.2:
            headers["X-RateLimit-NearLimit"] = "true"
        return headers

    def corrupt_record(self, document: Any) -> bool:
        """Break the first issue's `fields.duedate` (or `fields.created` when it has no due date)."""
        issue = _first_issue(document)
        if issue is None:
            return super().corrupt_record(document)
        fields = issue["fields"]
        key = "duedate" if fields.get("duedate") else "created" if "created" in fields else "duedate"
        fields[key] = "next tuesday-ish" if key == "duedate" else 1_610_886_840
        return True


def _first_issue(document: Any) -> dict[str, Any] | None:
    if isinstance(document, dict):
        if isinstance(document.get("fields"), dict) and "key" in document:
            return document
        for issue in document.get("issues", ()):
            if isinstance(issue, dict) and isinstance(issue.get("fields"), dict) and issue["fields"]:
                return issue
    return None


def _reset_header(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def default_rate_limit() -> RateLimit:
    """Jira's burst limit as the sandbox applies it: 100 requests per second per credential."""
    return RateLimit(limit=100, window_s=1.0, send_retry_after=True)


def create(portfolio: Portfolio, settings: EmulatorSettings) -> Emulator:
    """The Jira emulator over `portfolio`, serving /rest/api/2 and /rest/api/3."""
    api = JiraApi(portfolio)
    return Emulator(JiraProfile(settings), api.routes(), settings)


class JiraApi:
    """Jira's REST resources rendered from the portfolio columns plus `JiraState`."""

    def __init__(self, portfolio: Portfolio) -> None:
        self.p = portfolio
        self.state = JiraState()
        self.project_by_key = {pr.key.upper(): pr.index for pr in portfolio.projects if pr.tool == JIRA}
        self.project_by_id = {ids.jira_project_id(pr.index): pr.index for pr in portfolio.projects
                              if pr.tool == JIRA}
        self.project_by_name = {pr.name.lower(): pr.index for pr in portfolio.projects if pr.tool == JIRA}
        ranked = sorted(self.project_by_key.items())
        self.key_rank = np.zeros(len(portfolio.projects), dtype=np.float64)
        for rank, (_, project) in enumerate(ranked):
            self.key_rank[project] = rank
        self._index_links()
        self._universe_size = -1
        self._universe = np.zeros(0, dtype=np.int64)
        self._variety_cache = np.zeros(0, dtype=np.uint64)
        self.clause_codes: dict[tuple[Any, ...], np.ndarray] = {}

    def _index_links(self) -> None:
        p = self.p
        tool = p.tasks.tool
        native = p.links_of(LINK_NATIVE)
        native = native[(tool[p.link_pred[native]] == JIRA) & (tool[p.link_succ[native]] == JIRA)]
        self.native_by_pred = native[np.argsort(p.link_pred[native], kind="stable")]
        self.native_by_succ = native[np.argsort(p.link_succ[native], kind="stable")]
        remote = p.links_of(LINK_REMOTE)
        remote = remote[tool[p.link_succ[remote]] == JIRA]
        self.remote_by_succ = remote[np.argsort(p.link_succ[remote], kind="stable")]

    # -- columns derived for every issue ------------------------------------------------------------------------
    def universe(self) -> np.ndarray:
        """Indexes of every Jira task (deleted ones too), generated first then those created through the API."""
        t = self.p.tasks
        if self._universe_size != t.size:
            first, end = self.p.tool_ranges[JIRA]
            generated = self.p.tasks_generated
            added = generated + np.flatnonzero(t.view("tool")[generated:] == JIRA)
            self._universe = np.concatenate([np.arange(first, end, dtype=np.int64), added.astype(np.int64)])
            self._universe_size = t.size
        return self._universe

    def variety(self, indexes: np.ndarray) -> np.ndarray:
        """A stable per-task hash that picks between equivalent renderings (Story or Task, To Do or Backlog)."""
        size = self.p.tasks.size
        if len(self._variety_cache) < size:
            self._variety_cache = mix_array(np.arange(size, dtype=np.int64), self.p.seed, 71)
        return self._variety_cache[indexes]

    def status_codes(self, indexes: np.ndarray) -> np.ndarray:
        t = self.p.tasks
        status = t.status[indexes]
        v = (self.variety(indexes) >> np.uint64(8)) % np.uint64(20)
        return np.select(
            [status == TODO, status == IN_PROGRESS, status == DONE],
            [np.where(v % 5 == 0, BACKLOG, TO_DO), np.where(v % 4 == 0, IN_REVIEW, S_IN_PROGRESS), S_DONE],
            WONT_DO,
        ).astype(np.int64)

    def status_code(self, i: int) -> int:
        """`status_codes` for one task, without numpy's per-call overhead (links and parents embed many)."""
        status = int(self.p.tasks.status[i])
        v = (int(self.variety(np.array([i]))[0]) >> 8) % 20 if status in (TODO, IN_PROGRESS) else 0
        if status == TODO:
            return BACKLOG if v % 5 == 0 else TO_DO
        if status == IN_PROGRESS:
            return IN_REVIEW if v % 4 == 0 else S_IN_PROGRESS
        return S_DONE if status == DONE else WONT_DO

    def type_code(self, i: int) -> int:
        """`type_codes` for one task."""
        if i in self.state.types:
            return self.state.types[i]
        kind = int(self.p.tasks.kind[i])
        if kind in (EPIC, SUBTASK, MILESTONE):
            return {EPIC: T_EPIC, SUBTASK: T_SUBTASK, MILESTONE: T_MILESTONE}[kind]
        return T_STORY if (int(self.variety(np.array([i]))[0]) >> 16) % 3 == 0 else T_TASK

    def type_codes(self, indexes: np.ndarray) -> np.ndarray:
        kind = self.p.tasks.kind[indexes]
        v = (self.variety(indexes) >> np.uint64(16)) % np.uint64(3)
        codes = np.select([kind == EPIC, kind == SUBTASK, kind == MILESTONE], [T_EPIC, T_SUBTASK, T_MILESTONE],
                          np.where(v == 0, T_STORY, T_TASK)).astype(np.int64)
        if self.state.types:
            chosen = np.fromiter(self.state.types, dtype=np.int64)
            at = np.flatnonzero(np.isin(indexes, chosen))
            codes[at] = [self.state.types[int(k)] for k in indexes[at]]
        return codes

    # -- lookups -----------------------------------------------------------------------------------------------
    def issue_index(self, id_or_key: str) -> int:
        """The task behind an issue id or key (case-insensitive), or Jira's 404."""
        p = self.p
        i: int | None
        if id_or_key.isdigit():
            i = ids.jira_issue_index(id_or_key)
        else:
            prefix, _, number = id_or_key.upper().rpartition("-")
            project = self.project_by_key.get(prefix)
            i = p.task_by_seq(project, int(number)) if project is not None and number.isdigit() else None
        if i is None or i >= p.tasks.size or p.tasks.tool[i] != JIRA or p.tasks.deleted[i]:
            raise not_found()
        return int(i)

    def project_index(self, ref: Any) -> int | None:
        """A project by key, id or name."""
        if isinstance(ref, dict):
            ref = ref.get("key") or ref.get("id")
        text = str(ref)
        if text in self.project_by_id:
            return self.project_by_id[text]
        return self.project_by_key.get(text.upper(), self.project_by_name.get(text.lower()))

    # -- rendering ---------------------------------------------------------------------------------------------
    def user(self, person: int, base: str, version: str) -> dict[str, Any] | None:
        if person == -2:
            return None
        if person < 0:
            email, name, account, zone = CREDENTIALS["jira"]["email"], MYSELF_NAME, MYSELF_ACCOUNT_ID, "UTC"
        else:
            who = self.p.people[person]
            email, name = who.email_in(JIRA), who.display_name(JIRA)
            account, zone = ids.jira_account_id(person), TIME_ZONES[person % len(TIME_ZONES)]
        return {"self": f"{base}/rest/api/{version}/user?accountId={account}", "accountId": account,
                "emailAddress": email, "avatarUrls": _avatars(), "displayName": name, "active": True,
                "timeZone": zone, "accountType": "atlassian"}

    def project_summary(self, project: int, base: str, version: str) -> dict[str, Any]:
        pr = self.p.projects[project]
        pid = ids.jira_project_id(project)
        return {"self": f"{base}/rest/api/{version}/project/{pid}", "id": pid, "key": pr.key, "name": pr.name,
                "projectTypeKey": "software", "simplified": False, "avatarUrls": _avatars()}

    def status(self, code: int, base: str, version: str) -> dict[str, Any]:
        name, sid, category = STATUSES[code]
        cid, cname, colour = CATEGORIES[category]
        return {"self": f"{base}/rest/api/{version}/status/{sid}", "description": "", "iconUrl": f"{base}/images/icons/statuses/generic.png",
                "name": name, "id": sid,
                "statusCategory": {"self": f"{base}/rest/api/{version}/statuscategory/{cid}", "id": int(cid),
                                   "key": category, "colorName": colour, "name": cname}}

    def issue_type(self, code: int, base: str, version: str) -> dict[str, Any]:
        name, tid, subtask, level = ISSUE_TYPES[code]
        return {"self": f"{base}/rest/api/{version}/issuetype/{tid}", "id": tid, "description": f"{'An' if name[0] in 'AEIOU' else 'A'} {name.lower()}.",
                "iconUrl": f"{base}/images/icons/issuetypes/{name.lower()}.svg", "name": name, "subtask": subtask,
                "avatarId": 10300 + int(tid) % 100, "hierarchyLevel": level}

    def issue_ref(self, i: int, base: str, version: str, with_fields: bool = True) -> dict[str, Any]:
        """The short form of an issue that links and parents embed."""
        iid = ids.jira_issue_id(i)
        ref: dict[str, Any] = {"id": iid, "key": ids.jira_key(self.p, i),
                               "self": f"{base}/rest/api/{version}/issue/{iid}"}
        if with_fields:
            ref["fields"] = {"summary": self.p.title(i), "status": self.status(self.status_code(i), base, version),
                             "priority": self.priority(i, base, version),
                             "issuetype": self.issue_type(self.type_code(i), base, version)}
        return ref

    def priority(self, i: int, base: str, version: str) -> dict[str, Any]:
        name = self.state.priorities.get(i) or ("High" if mix(self.p.seed, i, 79) % 4 == 0 else "Medium")
        pid = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}.get(name, "3")
        return {"self": f"{base}/rest/api/{version}/priority/{pid}",
                "iconUrl": f"{base}/images/icons/priorities/{name.lower()}.svg", "name": name, "id": pid}

    def labels(self, i: int) -> list[str]:
        if i in self.state.labels:
            return self.state.labels[i]
        if int(self.p.tasks.kind[i]) == MILESTONE:
            return ["milestone"]
        h = mix(self.p.seed, i, 73)
        if h % 4:
            return []
        first = LABEL_POOL[(h >> 8) % len(LABEL_POOL)]
        second = LABEL_POOL[(h >> 16) % len(LABEL_POOL)]
        return sorted({first, second}) if h % 12 == 0 else [first]

    def description(self, i: int) -> RichText | None:
        if i in self.state.descriptions:
            return self.state.descriptions[i]
        if mix(self.p.seed, i, 83) % 3 == 0:
            return None
        project = self.p.projects[int(self.p.tasks.project[i])]
        return RichText(f"{self.p.title(i)}. Part of the {project.name} project.")

    def issue_links(self, i: int, base: str, version: str) -> list[dict[str, Any]]:
        """Native 'Blocks' links as Jira shows them on both ends, generated then created ones."""
        p = self.p
        links: list[dict[str, Any]] = []
        deleted = p.tasks.deleted

        def entry(link_id: int, type_: dict[str, str], other: int, direction: str) -> dict[str, Any]:
            return {"id": str(link_id), "self": f"{base}/rest/api/{version}/issueLink/{link_id}",
                    "type": {**type_, "self": f"{base}/rest/api/{version}/issueLinkType/{type_['id']}"},
                    direction: self.issue_ref(other, base, version)}

        for order, column, direction, other_column in (
            (self.native_by_pred, p.link_pred, "outwardIssue", p.link_succ),
            (self.native_by_succ, p.link_succ, "inwardIssue", p.link_pred),
        ):
            keys = column[order]
            lo, hi = np.searchsorted(keys, i, side="left"), np.searchsorted(keys, i, side="right")
            for k in order[lo:hi]:
                other = int(other_column[k])
                if not deleted[other]:
                    links.append(entry(10_000 + int(k), BLOCKS, other, direction))
        types = {t["id"]: t for t in LINK_TYPES}
        for inward, outward, type_id, link_id in self.state.created_links:
            if i == inward and not deleted[outward]:
                links.append(entry(link_id, types[type_id], outward, "outwardIssue"))
            elif i == outward and not deleted[inward]:
                links.append(entry(link_id, types[type_id], inward, "inwardIssue"))
        return links

    def render_issue(self, i: int, status_code: int, type_code: int, wanted: tuple[str, ...], base: str,
                     version: str) -> dict[str, Any]:
        """One issue with the wanted fields, straight from the columns."""
        p = self.p
        iid = ids.jira_issue_id(i)
        fields: dict[str, Any] = {}
        for name in wanted:
            fields[name] = self._field(name, i, status_code, type_code, base, version)
        return {"expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
                "id": iid, "self": f"{base}/rest/api/{version}/issue/{iid}", "key": ids.jira_key(p, i),
                "fields": fields} if wanted else {"id": iid, "key": ids.jira_key(p, i),
                                                  "self": f"{base}/rest/api/{version}/issue/{iid}"}

    def _field(self, name: str, i: int, status_code: int, type_code: int, base: str, version: str) -> Any:
        t = self.p.tasks
        if name == "summary":
            return self.p.title(i)
        if name == "status":
            return self.status(status_code, base, version)
        if name == "issuetype":
            return self.issue_type(type_code, base, version)
        if name == "parent":
            parent = int(t.parent[i])
            return self.issue_ref(parent, base, version) if parent >= 0 and t.tool[parent] == JIRA else None
        if name == EPIC_LINK:
            parent = int(t.parent[i])
            return ids.jira_key(self.p, parent) if parent >= 0 and t.kind[parent] == EPIC else None
        if name == "project":
            return self.project_summary(int(t.project[i]), base, version)
        if name == "assignee":
            person = int(t.assignee[i])
            return self.user(person, base, version) if person >= 0 else None
        if name == "priority":
            return self.priority(i, base, version)
        if name == "duedate":
            return day_string(t.due[i])
        if name == START_DATE:
            return day_string(t.start[i])
        if name == STORY_POINTS:
            points = float(t.points[i])
            return None if np.isnan(points) else points
        if name == "timeoriginalestimate":
            hours = float(t.estimate[i])
            return None if np.isnan(hours) else int(hours * 3600)
        if name == "created":
            return jira_datetime(float(t.created[i]))
        if name == "updated":
            return jira_datetime(float(t.updated[i]))
        if name == "resolutiondate":
            return self._resolved_at(i, status_code)
        if name == "resolution":
            return self._resolution(status_code, base, version)
        if name == "labels":
            return list(self.labels(i))
        if name == "issuelinks":
            return self.issue_links(i, base, version)
        if name == "description":
            text = self.description(i)
            return text.render(version) if text is not None else None
        if name == "comment":
            comments = [self.comment(i, c, base, version) for c in self.state.comments.get(i, ())]
            return {"comments": comments, "self": f"{base}/rest/api/{version}/issue/{ids.jira_issue_id(i)}/comment",
                    "maxResults": len(comments), "total": len(comments), "startAt": 0}
        if name in (SLIP_DAYS, FORECAST_FINISH):
            return self.state.custom.get(i, {}).get(name)
        return None

    def _resolved_at(self, i: int, status_code: int) -> str | None:
        t = self.p.tasks
        if status_code == S_DONE and t.completed[i]:
            return jira_datetime(float(t.completed[i]))
        if status_code == WONT_DO:
            return jira_datetime(float(t.updated[i]))
        return None

    def _resolution(self, status_code: int, base: str, version: str) -> dict[str, Any] | None:
        if status_code not in RESOLUTIONS:
            return None
        rid, name, text = RESOLUTIONS[status_code]
        return {"self": f"{base}/rest/api/{version}/resolution/{rid}", "id": rid, "description": text, "name": name}

    def render_issues(self, indexes: np.ndarray, wanted: tuple[str, ...], base: str, version: str,
                      changelog_limit: int | None = None) -> list[dict[str, Any]]:
        """A page of issues; status and type codes computed once for the page, vectorized."""
        statuses = self.status_codes(indexes).tolist()
        types = self.type_codes(indexes).tolist()
        out = []
        for i, s, ty in zip(indexes.tolist(), statuses, types):
            issue = self.render_issue(i, s, ty, wanted, base, version)
            if changelog_limit is not None:
                issue["changelog"] = self.changelog_expansion(i, changelog_limit, base, version)
            out.append(issue)
        return out

    # -- history -------------------------------------------------------------------------------------------------
    def histories(self, i: int) -> list[History]:
        """The issue's history, oldest first: generated status moves, due-date changes, clients' edits."""
        p = self.p
        events: list[History] = list(self._status_history(i))
        by_time: dict[float, History] = {}
        for change in p.due_changes(i):
            item = {"field": "duedate", "fieldtype": "jira", "fieldId": "duedate",
                    "from": day_string(change.old_day), "fromString": _due_string(change.old_day),
                    "to": day_string(change.new_day), "toString": _due_string(change.new_day)}
            entry = History(change.at, change.person, [item])
            by_time[change.at] = entry
            events.append(entry)
        for extra in self.state.history.get(i, ()):
            if extra.at in by_time:
                by_time[extra.at].items.extend(extra.items)
            else:
                events.append(extra)
        events.sort(key=lambda h: h.at)
        return events

    def _status_history(self, i: int) -> list[History]:
        t = self.p.tasks
        if i >= self.p.tasks_generated:
            return []
        code = self.status_code(i)
        created, updated = float(t.created[i]), float(t.updated[i])
        end = float(t.completed[i]) if code == S_DONE and t.completed[i] else updated
        person = int(t.assignee[i])
        moves: list[tuple[float, int, int]] = []
        if code in (S_IN_PROGRESS, IN_REVIEW, S_DONE):
            moves.append((created + (end - created) * 0.1, TO_DO, S_IN_PROGRESS))
        if code == IN_REVIEW:
            moves.append((created + (end - created) * 0.7, S_IN_PROGRESS, IN_REVIEW))
        if code == S_DONE:
            moves.append((end, S_IN_PROGRESS, S_DONE))
        if code == WONT_DO:
            moves.append((updated, TO_DO, WONT_DO))
        return [History(at, person, [{"field": "status", "fieldtype": "jira", "fieldId": "status",
                                      "from": STATUSES[a][1], "fromString": STATUSES[a][0],
                                      "to": STATUSES[b][1], "toString": STATUSES[b][0]}])
                for at, a, b in moves]

    def render_history(self, i: int, k: int, h: History, base: str, version: str) -> dict[str, Any]:
        return {"id": str(10_000 + i * 1000 + k), "author": self.user(h.author, base, version),
                "created": jira_datetime(h.at), "items": h.items}

    def changelog_expansion(self, i: int, limit: int, base: str, version: str) -> dict[str, Any]:
        """`expand=changelog`: the most recent histories first, at most `limit`."""
        histories = self.histories(i)
        newest = [self.render_history(i, k, h, base, version) for k, h in enumerate(histories)][::-1][:limit]
        return {"startAt": 0, "maxResults": len(newest), "total": len(histories), "histories": newest}

    def comment(self, i: int, c: Comment, base: str, version: str) -> dict[str, Any]:
        author = self.user(c.author, base, version)
        return {"self": f"{base}/rest/api/{version}/issue/{ids.jira_issue_id(i)}/comment/{c.id}", "id": str(c.id),
                "author": author, "body": c.body.render(version), "updateAuthor": author,
                "created": jira_datetime(c.created), "updated": jira_datetime(c.updated), "jsdPublic": True}

    def remote_links(self, i: int, base: str) -> list[dict[str, Any]]:
        """Generated cross-tool remote links (the predecessor in another tool blocks this issue), then created ones."""
        p = self.p
        keys = p.link_succ[self.remote_by_succ]
        lo, hi = np.searchsorted(keys, i, side="left"), np.searchsorted(keys, i, side="right")
        out = []
        for k in self.remote_by_succ[lo:hi].tolist():
            link_id = 10_000 + k
            if link_id in self.state.removed_remote:
                continue
            pred = int(p.link_pred[k])
            url = ids.task_url(p, pred)
            tool = TOOLS[int(p.tasks.tool[pred])]
            out.append({"id": link_id, "self": f"{base}/rest/api/issue/{ids.jira_key(p, i)}/remotelink/{link_id}",
                        "globalId": f"system={tool}&id={url}",
                        "application": {"type": f"com.pmsync.{tool}", "name": _tool_label(tool)},
                        "relationship": "is blocked by",
                        "object": {"url": url, "title": p.title(pred), "summary": f"{_tool_label(tool)} task",
                                   "icon": {"url16x16": f"{base}/images/icons/generic_link_16.png",
                                            "title": _tool_label(tool)},
                                   "status": {"resolved": bool(p.tasks.status[pred] in (DONE, CANCELLED)),
                                              "icon": {}}}})
        out.extend(self.state.remote_links.get(i, ()))
        return out

    # -- routes ---------------------------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        """Every resource under both /rest/api/2 and /rest/api/3 (and `latest`, which the SDK uses at times)."""
        return JiraRoutes(self).routes()


def _due_string(day: int) -> str | None:
    text = day_string(day)
    return f"{text} 00:00:00.0" if text else None


def _tool_label(tool: str) -> str:
    return {"asana": "Asana", "trello": "Trello", "planner": "Microsoft Planner", "msproject": "Microsoft Project",
            "jira": "Jira"}[tool]


_AVATARS = {size: AVATAR.format(size=size.split("x")[0]) for size in ("48x48", "24x24", "16x16", "32x32")}


def _avatars() -> dict[str, str]:
    return _AVATARS


# -- JQL --------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>!=|>=|<=|!~|=|>|<|~)
  | (?P<punct>[(),])
  | (?P<word>[^\s"'(),=!<>~]+)
""", re.VERBOSE)
_RELATIVE = re.compile(r"([+-]?)(\d+)([wdhm])")
_DATE_FORMATS = ("%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d", "%Y-%m-%d")
_UNITS = {"w": 7 * 86_400, "d": 86_400, "h": 3600, "m": 60}
_BIG = 1e18
FIELD_ALIASES = {
    "project": "project", "key": "key", "issuekey": "key", "id": "key", "updated": "updated",
    "updateddate": "updated", "created": "created", "createddate": "created", "resolved": "resolutiondate",
    "resolutiondate": "resolutiondate", "due": "duedate", "duedate": "duedate", "status": "status",
    "statuscategory": "statuscategory", "issuetype": "issuetype", "type": "issuetype", "parent": "parent",
    "assignee": "assignee", "cf[10015]": START_DATE, "start date": START_DATE,
}
SORTABLE = {"updated": "updated", "updateddate": "updated", "created": "created", "createddate": "created",
            "key": "key", "issuekey": "key", "id": "key", "duedate": "duedate", "due": "duedate",
            "resolved": "resolutiondate", "resolutiondate": "resolutiondate", "project": "project"}


@dataclass
class Token:
    kind: str
    text: str
    pos: int


@dataclass
class Clause:
    field: str
    op: str
    values: list[Any]
    pos: int


@dataclass
class Combined:
    op: str  # "and" | "or"
    parts: list[Any]


@dataclass
class Negated:
    part: Any


@dataclass
class Query:
    where: Any
    order: list[tuple[str, bool]]  # (canonical field, descending)


def jql_error(detail: str, pos: int) -> JiraError:
    return JiraError(400, [f"Error in the JQL Query: {detail} (line 1, character {pos + 1})"])


def tokenize(jql: str) -> list[Token]:
    """Split JQL into strings, operators, punctuation and words."""
    tokens, pos = [], 0
    while pos < len(jql):
        if jql[pos].isspace():
            pos += 1
            continue
        match = _TOKEN.match(jql, pos)
        if match is None:
            raise jql_error(f"The character '{jql[pos]}' is a reserved JQL character.", pos)
        kind = match.lastgroup or "word"
        text = match.group(kind)
        if kind == "string":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        tokens.append(Token(kind, text, pos))
        pos = match.end()
    return tokens


class JqlParser:
    """Recursive descent over the JQL clients send: clauses joined by AND/OR/NOT, parentheses, ORDER BY."""

    def __init__(self, jql: str) -> None:
        self.tokens = tokenize(jql)
        self.k = 0
        self.length = len(jql)

    def parse(self) -> Query:
        where = None
        if not self._at_end() and not self._is_word("order"):
            where = self._or()
        order: list[tuple[str, bool]] = []
        if self._is_word("order"):
            self.k += 1
            self._expect_word("by")
            order = self._order_items()
        if not self._at_end():
            token = self.tokens[self.k]
            raise jql_error(f"Expecting either 'OR' or 'AND' but got '{token.text}'.", token.pos)
        return Query(where, order)

    def _at_end(self) -> bool:
        return self.k >= len(self.tokens)

    def _peek(self) -> Token | None:
        return None if self._at_end() else self.tokens[self.k]

    def _is_word(self, *words: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "word" and token.text.lower() in words

    def _is_punct(self, text: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "punct" and token.text == text

    def _next(self, what: str) -> Token:
        token = self._peek()
        if token is None:
            raise jql_error(f"Expecting {what} but reached the end of the query.", self.length)
        self.k += 1
        return token

    def _expect_word(self, word: str) -> None:
        token = self._next(f"'{word}'")
        if token.kind != "word" or token.text.lower() != word:
            raise jql_error(f"Expecting '{word}' but got '{token.text}'.", token.pos)

    def _expect_punct(self, text: str) -> None:
        token = self._next(f"'{text}'")
        if token.kind != "punct" or token.text != text:
            raise jql_error(f"Expecting '{text}' but got '{token.text}'.", token.pos)

    def _or(self) -> Any:
        parts = [self._and()]
        while self._is_word("or"):
            self.k += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else Combined("or", parts)

    def _and(self) -> Any:
        parts = [self._unary()]
        while self._is_word("and"):
            self.k += 1
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else Combined("and", parts)

    def _unary(self) -> Any:
        if self._is_word("not"):
            self.k += 1
            return Negated(self._unary())
        if self._is_punct("("):
            self.k += 1
            inner = self._or()
            self._expect_punct(")")
            return inner
        return self._clause()

    def _clause(self) -> Clause:
        token = self._next("a field name")
        if token.kind not in ("word", "string"):
            raise jql_error(f"Expecting a field name but got '{token.text}'.", token.pos)
        op = self._operator()
        if op in ("in", "not in"):
            self._expect_punct("(")
            values = [self._value()]
            while self._is_punct(","):
                self.k += 1
                values.append(self._value())
            self._expect_punct(")")
        else:
            values = [self._value()]
        return Clause(token.text, op, values, token.pos)

    def _operator(self) -> str:
        token = self._next("an operator")
        word = token.text.lower() if token.kind == "word" else ""
        if token.kind == "op":
            return token.text
        if word == "in":
            return "in"
        if word == "not" and self._is_word("in"):
            self.k += 1
            return "not in"
        if word == "is":
            if self._is_word("not"):
                self.k += 1
                return "is not"
            return "is"
        raise jql_error(f"Expecting operator but got '{token.text}'. Valid operators are '=', '!=', '<', '>', "
                        "'<=', '>=', 'in', 'not in', 'is' and 'is not'.", token.pos)

    def _value(self) -> Any:
        token = self._next("a value")
        if token.kind == "string":
            return token.text
        if token.kind != "word":
            raise jql_error(f"Expecting a value but got '{token.text}'.", token.pos)
        if self._is_punct("("):
            self.k += 1
            self._expect_punct(")")
            return ("function", token.text.lower())
        return token.text

    def _order_items(self) -> list[tuple[str, bool]]:
        items = []
        while True:
            token = self._next("a field to order by")
            name = SORTABLE.get(token.text.lower())
            if name is None:
                raise JiraError(400, [f"Not able to sort using field '{token.text}'."])
            descending = False
            if self._is_word("asc", "desc"):
                descending = self._next("a direction").text.lower() == "desc"
            items.append((name, descending))
            if not self._is_punct(","):
                return items
            self.k += 1


@functools.lru_cache(maxsize=256)
def parse_jql(jql: str) -> Query:
    """The parsed query (cached: pagers send the same JQL for every page; the result is never mutated)."""
    return JqlParser(jql).parse()


def _member(column: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """`np.isin` for small non-negative integer codes (project, type, status) by a lookup table, which is several
    times faster over a million rows; any other column falls back to `np.isin`."""
    if column.dtype.kind in "iu" and len(column) and len(targets) and targets.min() >= 0 \
            and targets.max() < 1 << 20 and -1 <= column.min() and column.max() < 1 << 20:
        table = np.zeros(max(int(targets.max()), int(column.max())) + 2, dtype=bool)
        table[targets] = True
        return table[column]  # -1 (none) reads the last slot, which is never a target
    return np.isin(column, targets)


class JqlCompiler:
    """Turns a parsed JQL condition into a boolean mask over the Jira tasks `indexes`, column by column."""

    def __init__(self, api: JiraApi, indexes: np.ndarray) -> None:
        self.api = api
        self.idx = indexes
        self.now = api.p.now()
        self._columns: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            if name == "status":
                values = self.api.status_codes(self.idx)
            elif name == "issuetype":
                values = self.api.type_codes(self.idx)
            elif name == "key":
                values = self.idx
            elif name == "resolutiondate":
                values = np.where(self.api.p.tasks.completed[self.idx] > 0, self.api.p.tasks.completed[self.idx],
                                  np.nan)
            elif name == START_DATE:
                values = self.api.p.tasks.start[self.idx]
            elif name == "duedate":
                values = self.api.p.tasks.due[self.idx]
            else:
                values = getattr(self.api.p.tasks, name)[self.idx]
            self._columns[name] = values
        return self._columns[name]

    def mask(self, node: Any) -> np.ndarray:
        if isinstance(node, Combined):
            masks = [self.mask(part) for part in node.parts]
            out = masks[0].copy()
            for m in masks[1:]:
                out = (out & m) if node.op == "and" else (out | m)
            return out
        if isinstance(node, Negated):
            return ~self.mask(node.part)
        return self.clause(node)

    def clause(self, c: Clause) -> np.ndarray:
        name = FIELD_ALIASES.get(c.field.lower())
        if name is None:
            raise JiraError(400, [f"Field '{c.field}' does not exist or you do not have permission to view it."])
        if name in ("updated", "created", "resolutiondate"):
            return self._instant_clause(name, c)
        if name in ("duedate", START_DATE):
            return self._day_clause(name, c)
        return self._membership_clause(name, c)

    def _membership_clause(self, name: str, c: Clause) -> np.ndarray:
        if c.op in ("is", "is not"):
            empty = self._empty_mask(name, c)
            return empty if c.op == "is" else ~empty
        if c.op not in ("=", "!=", "in", "not in"):
            raise JiraError(400, [f"The operator '{c.op}' is not supported by the '{c.field}' field."])
        column_name = {"statuscategory": "status", "project": "project", "parent": "parent",
                       "assignee": "assignee"}.get(name, name)
        targets = self._targets(name, c)
        hit = _member(self.column(column_name), targets)
        if c.op in ("=", "in"):
            return hit
        not_empty = ~self._empty_mask(name, c) if name in ("parent", "assignee") else np.ones(len(hit), bool)
        return ~hit & not_empty

    def _targets(self, name: str, c: Clause) -> np.ndarray:
        """The codes a membership clause names, sorted. A search pages through one JQL many times: the codes of
        a clause (about 1,000 project keys at 1M tasks) are kept per API for as long as its projects are the same."""
        api = self.api
        key = (name, c.field, tuple(v if isinstance(v, str) else repr(v) for v in c.values), len(api.project_by_key))
        cached = api.clause_codes.get(key)
        if cached is None or name not in ("project", "issuetype", "statuscategory"):
            cached = np.array(sorted({code for v in c.values for code in self._codes(name, v, c.field)}),
                              dtype=np.int64)
            if name in ("project", "issuetype", "statuscategory"):
                if len(api.clause_codes) > 64:
                    api.clause_codes.clear()
                api.clause_codes[key] = cached
        return cached

    def _empty_mask(self, name: str, c: Clause) -> np.ndarray:
        value = c.values[0]
        if not (isinstance(value, str) and value.lower() in ("empty", "null")):
            raise jql_error(f"Expecting 'EMPTY' or 'NULL' after '{c.op}'.", c.pos)
        if name in ("parent", "assignee"):
            return self.column(name) < 0
        return np.zeros(len(self.idx), dtype=bool)

    def _codes(self, name: str, value: Any, field_name: str) -> list[int]:
        api = self.api
        text = value[1] + "()" if isinstance(value, tuple) else str(value)
        unknown = JiraError(400, [f"The value '{text}' does not exist for the field '{field_name}'."])
        if name == "project":
            project = api.project_index(text)
            if project is None:
                raise unknown
            return [project]
        if name in ("key", "parent"):
            return self._issue_codes(text, field_name)
        if name == "status":
            codes = [k for k, (sname, sid, _) in enumerate(STATUSES) if text.lower() in (sname.lower(), sid)]
        elif name == "statuscategory":
            codes = [k for k, (_, _, cat) in enumerate(STATUSES)
                     if text.lower() in (cat, CATEGORIES[cat][0], CATEGORIES[cat][1].lower())]
        elif name == "issuetype":
            codes = [k for k, (tname, tid, _, _) in enumerate(ISSUE_TYPES) if text.lower() in (tname.lower(), tid)]
        elif name == "assignee":
            if text.lower() == "currentuser()":
                return [-3]
            codes = [int(text[-10:], 16)] if re.fullmatch(r"5b10a2844c2016[0-9a-f]{10}", text) else []
        else:
            codes = []
        if not codes:
            raise unknown
        return codes

    def _issue_codes(self, text: str, field_name: str) -> list[int]:
        if not (text.isdigit() or re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*-\d+", text)):
            raise JiraError(400, [f"The issue key '{text}' for field '{field_name}' is invalid."])
        try:
            return [self.api.issue_index(text)]
        except JiraError:
            return []

    def _instant_clause(self, name: str, c: Clause) -> np.ndarray:
        column = self.column(name)
        if c.op in ("is", "is not"):
            empty = np.isnan(column) if name == "resolutiondate" else np.zeros(len(column), bool)
            self._empty_mask("created", c)
            return empty if c.op == "is" else ~empty
        return self._compare(column, c, [self.instant(v, c.field) for v in c.values])

    def _day_clause(self, name: str, c: Clause) -> np.ndarray:
        column = self.column(name)
        present = column != NO_DAY
        if c.op in ("is", "is not"):
            self._empty_mask("created", c)
            return ~present if c.op == "is" else present
        days = [float(np.floor(self.instant(v, c.field) / 86_400)) for v in c.values]
        return self._compare(column, c, days) & present

    def _compare(self, column: np.ndarray, c: Clause, values: list[float]) -> np.ndarray:
        value = values[0]
        ops: dict[str, Callable[[], np.ndarray]] = {
            "=": lambda: column == value, "!=": lambda: column != value, ">": lambda: column > value,
            ">=": lambda: column >= value, "<": lambda: column < value, "<=": lambda: column <= value,
            "in": lambda: np.isin(column, values), "not in": lambda: ~np.isin(column, values),
        }
        if c.op not in ops:
            raise JiraError(400, [f"The operator '{c.op}' is not supported by the '{c.field}' field."])
        return ops[c.op]()

    def instant(self, value: Any, field_name: str) -> float:
        """A JQL date value in epoch seconds, read in the sandbox user's time zone (UTC)."""
        if isinstance(value, tuple):
            day_start = np.floor(self.now / 86_400) * 86_400
            functions = {"now": self.now, "startofday": day_start, "endofday": day_start + 86_399,
                         "startofweek": day_start - ((day_start // 86_400 + 4) % 7) * 86_400}
            if value[1] in functions:
                return float(functions[value[1]])
            raise JiraError(400, [f"Unable to find JQL function '{value[1]}()'."])
        text = str(value).strip()
        relative = _RELATIVE.fullmatch(text)
        if relative:
            sign = -1 if relative.group(1) == "-" else 1
            return self.now + sign * int(relative.group(2)) * _UNITS[relative.group(3)]
        for fmt in _DATE_FORMATS:
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue
        raise JiraError(400, [(f"Date value '{text}' for field '{field_name}' is invalid. Valid formats include: "
                               "'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period "
                               "format e.g. '-5d', '4w 2d'.")])


# -- search -----------------------------------------------------------------------------------------------------

def wanted_fields(values: list[str], default: tuple[str, ...]) -> tuple[str, ...]:
    """The fields a `fields` parameter asks for: ids, `*all`, `*navigable`, `-field` exclusions; others ignored."""
    items = [item.strip() for value in values for item in str(value).split(",") if item.strip()] or list(default)
    include: list[str] = []
    exclude = set()
    for item in items:
        if item.startswith("-"):
            exclude.add(item[1:])
        elif item == "*all":
            include.extend(FIELD_IDS)
        elif item == "*navigable":
            include.extend(NAVIGABLE)
        elif item in FIELD_NAMES:
            include.append(item)
    return tuple(dict.fromkeys(f for f in include if f not in exclude))


@dataclass
class SearchPage:
    issues: np.ndarray
    next_token: str | None


class Searcher:
    """`/search/jql`: filter with a compiled JQL mask, sort, and resume after the last (sort key, id) seen."""

    def __init__(self, api: JiraApi) -> None:
        self.api = api

    def page(self, jql: str, max_results: int, token: str | None) -> SearchPage:
        query = parse_jql(jql)
        if query.where is None:
            raise JiraError(400, [MSG_UNBOUNDED])
        universe = self.api.universe()
        compiler = JqlCompiler(self.api, universe)
        mask = compiler.mask(query.where) & ~self.api.p.tasks.deleted[universe]
        hits = universe[mask]
        order = query.order or [("key", True)]
        keys = [self.sort_key(name, descending, hits) for name, descending in order]
        if order[-1][0] != "key":
            keys.append(hits.astype(np.float64))
        signature = zlib.crc32(jql.strip().encode())
        if token:
            after = self._after(keys, self._decode(token, signature, len(keys)))
            hits, keys = hits[after], [k[after] for k in keys]
        chosen = self._first(keys, max_results)
        page = hits[chosen]
        if len(hits) <= max_results:
            return SearchPage(page, None)
        last = [float(k[chosen[-1]]) for k in keys]
        return SearchPage(page, self._encode(signature, last))

    def sort_key(self, name: str, descending: bool, hits: np.ndarray) -> np.ndarray:
        """One ORDER BY column as floats, ascending; empty values sort last ascending, first descending."""
        t, api = self.api.p.tasks, self.api
        if name == "key":
            values = api.key_rank[t.project[hits]] * 2.0**31 + t.seq[hits]
        elif name == "project":
            values = api.key_rank[t.project[hits]].astype(np.float64)
        elif name == "duedate":
            due = t.due[hits]
            values = np.where(due == NO_DAY, _BIG, due.astype(np.float64))
        elif name == "resolutiondate":
            done = t.completed[hits]
            values = np.where(done > 0, done, _BIG)
        else:
            values = getattr(t, name)[hits].astype(np.float64)
        return -values if descending else values

    @staticmethod
    def _first(keys: list[np.ndarray], count: int) -> np.ndarray:
        """Positions of the first `count` rows in lexicographic key order, without sorting everything."""
        n = len(keys[0])
        candidates = np.arange(n)
        if n > 4 * count and count > 0:
            threshold = np.partition(keys[0], count - 1)[count - 1]
            candidates = np.flatnonzero(keys[0] <= threshold)
        order = np.lexsort([k[candidates] for k in reversed(keys)])
        return candidates[order[:count]]

    @staticmethod
    def _after(keys: list[np.ndarray], last: list[float]) -> np.ndarray:
        after = np.zeros(len(keys[0]), dtype=bool)
        tie = np.ones(len(keys[0]), dtype=bool)
        for column, value in zip(keys, last):
            after |= tie & (column > value)
            tie &= column == value
        return after

    @staticmethod
    def _encode(signature: int, last: list[float]) -> str:
        raw = orjson.dumps({"q": signature, "k": last})
        return base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")

    @staticmethod
    def _decode(token: str, signature: int, width: int) -> list[float]:
        try:
            data = orjson.loads(zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))
            if data["q"] != signature or len(data["k"]) != width:
                raise ValueError("token of another query")
            return [float(v) for v in data["k"]]
        except (ValueError, KeyError, TypeError, zlib.error):
            raise JiraError(400, ["The provided next page token is invalid or expired."]) from None


# -- routes -----------------------------------------------------------------------------------------------------

@dataclass
class Call:
    """One request as a handler sees it: the caller's base URL, the API version, the parsed query."""

    request: Request
    base: str
    version: str

    def param(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)

    def int_param(self, name: str, default: int) -> int:
        raw = self.param(name)
        if raw in (None, ""):
            return default
        try:
            return int(raw)
        except ValueError:
            raise JiraError(400, [f"The '{name}' parameter must be an integer."]) from None

    async def body(self) -> Any:
        raw = await self.request.body()
        if not raw:
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise JiraError(400, ["Unexpected character in the request body: it is not valid JSON."]) from None

    def path(self, name: str) -> str:
        return self.request.path_params[name]


def page_bean(call: Call, path: str, values: list[Any], start_at: int, max_results: int, total: int
              ) -> dict[str, Any]:
    """Jira's offset page (`PageBean*`): self, nextPage (unless last), maxResults, startAt, total, isLast."""
    is_last = start_at + len(values) >= total
    url = f"{call.base}/rest/api/{call.version}/{path}"
    out: dict[str, Any] = {"self": f"{url}?maxResults={max_results}&startAt={start_at}", "maxResults": max_results,
                           "startAt": start_at, "total": total, "isLast": is_last, "values": values}
    if not is_last:
        out["nextPage"] = f"{url}?maxResults={max_results}&startAt={start_at + max_results}"
    return out


class JiraRoutes:
    """The HTTP handlers over a `JiraApi`."""

    def __init__(self, api: JiraApi) -> None:
        self.api = api
        self.p = api.p
        self.state = api.state
        self.searcher = Searcher(api)

    def routes(self) -> list[Route]:
        table: list[tuple[str, Callable[[Call], Any], list[str]]] = [
            ("serverInfo", self.server_info, ["GET"]),
            ("myself", self.myself, ["GET"]),
            ("field", self.fields, ["GET"]),
            ("issuetype", self.issue_types, ["GET"]),
            ("project/search", self.project_search, ["GET"]),
            ("project", self.project_list, ["GET"]),
            ("project/{project}", self.project, ["GET"]),
            ("search/jql", self.search, ["GET", "POST"]),
            ("issue", self.create_issue, ["POST"]),
            ("issue/{issue}", self.issue, ["GET", "PUT", "DELETE"]),
            ("issue/{issue}/changelog", self.changelog, ["GET"]),
            ("issue/{issue}/comment", self.comments, ["GET", "POST"]),
            ("issue/{issue}/comment/{comment}", self.comment, ["GET", "PUT"]),
            ("issue/{issue}/properties", self.property_keys, ["GET"]),
            ("issue/{issue}/properties/{key}", self.property, ["GET", "PUT", "DELETE"]),
            ("issue/{issue}/remotelink", self.remote_links, ["GET", "POST"]),
            ("issue/{issue}/remotelink/{link}", self.remote_link, ["GET", "DELETE"]),
            ("issueLink", self.create_link, ["POST"]),
            ("issueLinkType", self.link_types, ["GET"]),
            ("label", self.labels, ["GET"]),
        ]
        return [Route(f"/rest/api/{{version}}/{path}", self._endpoint(handler), methods=methods)
                for path, handler, methods in table]

    @staticmethod
    def _endpoint(handler: Callable[[Call], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            version = request.path_params["version"]
            if version not in API_VERSIONS:
                return JiraError(404, ["null for uri: " + str(request.url)]).response()
            call = Call(request, str(request.base_url).rstrip("/"), "2" if version == "latest" else version)
            try:
                result = await handler(call)
            except JiraError as error:
                return error.response()
            return result if isinstance(result, Response) else JSONBody(result)

        return endpoint

    # -- instance -------------------------------------------------------------------------------------------------
    async def server_info(self, call: Call) -> Any:
        return {"baseUrl": call.base, "displayUrl": call.base, "version": "1001.0.0-SNAPSHOT",
                "versionNumbers": [1001, 0, 0], "deploymentType": "Cloud", "buildNumber": 100_284,
                "buildDate": "2026-01-12T00:00:00.000+0000", "serverTime": jira_datetime(self.p.now()),
                "scmInfo": "8a3f3c0f6d0b7e2a9c1d5f4e3b2a1908f7e6d5c4", "serverTitle": "Jira"}

    async def myself(self, call: Call) -> Any:
        me = self.api.user(-1, call.base, call.version) or {}
        return {**me, "locale": "en_US", "groups": {"size": 1, "items": []},
                "applicationRoles": {"size": 1, "items": []}, "expand": "groups,applicationRoles"}

    async def fields(self, call: Call) -> Any:
        return list(FIELDS)

    async def issue_types(self, call: Call) -> Any:
        return [self.api.issue_type(code, call.base, call.version) for code in range(len(ISSUE_TYPES))]

    # -- projects -------------------------------------------------------------------------------------------------
    def _project_row(self, project: int, call: Call) -> dict[str, Any]:
        return {"expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
                **self.api.project_summary(project, call.base, call.version), "style": "classic",
                "isPrivate": False, "properties": {}}

    async def project_search(self, call: Call) -> Any:
        start, limit = max(0, call.int_param("startAt", 0)), min(100, max(1, call.int_param("maxResults", 50)))
        query = (call.param("query") or "").lower()
        keys = {k.strip().upper() for k in (call.param("keys") or "").split(",") if k.strip()}
        projects = [pr.index for pr in self.p.projects_of(JIRA)
                    if (not query or query in pr.key.lower() or query in pr.name.lower())
                    and (not keys or pr.key in keys)]
        rows = [self._project_row(k, call) for k in projects[start:start + limit]]
        return page_bean(call, "project/search", rows, start, limit, len(projects))

    async def project_list(self, call: Call) -> Any:
        return [self._project_row(pr.index, call) for pr in self.p.projects_of(JIRA)]

    async def project(self, call: Call) -> Any:
        project = self.api.project_index(call.path("project"))
        if project is None:
            raise JiraError(404, [f"No project could be found with key '{call.path('project')}'."])
        lead = project % len(self.p.people)
        return {**self._project_row(project, call), "description": f"{self.p.projects[project].name} work.",
                "lead": self.api.user(lead, call.base, call.version), "components": [], "versions": [],
                "issueTypes": [self.api.issue_type(c, call.base, call.version) for c in range(len(ISSUE_TYPES))],
                "assigneeType": "UNASSIGNED", "roles": {}}

    # -- search ---------------------------------------------------------------------------------------------------
    async def search(self, call: Call) -> Any:
        if call.request.method == "POST":
            body = await call.body()
            jql, token = str(body.get("jql") or ""), body.get("nextPageToken")
            requested = body.get("maxResults")
            fields = body.get("fields") or []
            fields = [fields] if isinstance(fields, str) else list(fields)
            expand = body.get("expand") or ""
            expand = ",".join(expand) if isinstance(expand, list) else str(expand)
        else:
            jql, token = call.param("jql") or "", call.param("nextPageToken")
            requested = call.int_param("maxResults", SEARCH_DEFAULT_MAX) if call.param("maxResults") else None
            fields = call.request.query_params.getlist("fields")
            expand = call.param("expand") or ""
        wanted = wanted_fields(fields, ("id",))
        expands = {e.strip() for e in expand.split(",")}
        cap = SEARCH_CAP_FIELDS if wanted or "changelog" in expands else SEARCH_CAP_IDS
        max_results = min(cap, max(1, int(requested))) if requested not in (None, "") else SEARCH_DEFAULT_MAX
        page = self.searcher.page(jql, max_results, token or None)
        limit = SEARCH_CHANGELOG_HISTORIES if "changelog" in expands else None
        out: dict[str, Any] = {"issues": self.api.render_issues(page.issues, wanted, call.base, call.version, limit)}
        if page.next_token:
            out["nextPageToken"] = page.next_token
        out["isLast"] = page.next_token is None
        if "names" in expands:
            out["names"] = {f: FIELD_NAMES[f] for f in wanted}
        return out

    # -- issues ---------------------------------------------------------------------------------------------------
    async def issue(self, call: Call) -> Any:
        i = self.api.issue_index(call.path("issue"))
        if call.request.method == "PUT":
            return await self._edit(call, i)
        if call.request.method == "DELETE":
            return self._delete(call, i)
        return self._issue_json(call, i)

    def _issue_json(self, call: Call, i: int) -> dict[str, Any]:
        wanted = wanted_fields(call.request.query_params.getlist("fields"), ("*all",))
        expands = {e.strip() for e in (call.param("expand") or "").split(",")}
        limit = 100 if "changelog" in expands else None
        issue = self.api.render_issues(np.array([i]), wanted, call.base, call.version, limit)[0]
        issue.setdefault("fields", {})
        if "names" in expands:
            issue["names"] = {f: FIELD_NAMES[f] for f in wanted}
        wanted_properties = {k.strip() for k in (call.param("properties") or "").split(",") if k.strip()}
        if wanted_properties:
            stored = self.state.properties.get(i, {})
            issue["properties"] = {k: v for k, v in stored.items() if "*all" in wanted_properties or k in wanted_properties}
        return issue

    async def create_issue(self, call: Call) -> Any:
        body = await call.body()
        fields = body.get("fields") or {}
        errors: dict[str, str] = {}
        project = self.api.project_index(fields["project"]) if fields.get("project") else None
        if project is None:
            errors["project"] = "Specify a valid project ID or key"
        summary = fields.get("summary")
        if not summary:
            errors["summary"] = "You must specify a summary of the issue."
        type_code = self._type_code(fields.get("issuetype"))
        if type_code is None:
            errors["issuetype"] = "Specify a valid issue type"
        parent = -1
        if fields.get("parent"):
            ref = fields["parent"]
            try:
                parent = self.api.issue_index(str(ref.get("key") or ref.get("id")) if isinstance(ref, dict) else str(ref))
            except JiraError:
                errors["parent"] = "Could not find issue by id or key."
        if type_code == T_SUBTASK and parent < 0 and "parent" not in errors:
            errors["parent"] = "Given parent issue does not belong to appropriate hierarchy."
        unknown = set(fields) - WRITABLE - {"project", "summary", "issuetype", "parent", "reporter", EPIC_LINK}
        errors.update({name: f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                       for name in sorted(unknown)})
        if errors:
            raise JiraError(400, errors=errors)
        assert project is not None and type_code is not None
        i = self.p.add_task(JIRA, project, str(summary), kind=TYPE_KIND[type_code], parent=parent)
        self.state.types[i] = type_code
        self._apply_fields(call, i, {k: v for k, v in fields.items() if k in WRITABLE and k != "summary"},
                           record=False)
        iid = ids.jira_issue_id(i)
        return JSONBody({"id": iid, "key": ids.jira_key(self.p, i),
                         "self": f"{call.base}/rest/api/{call.version}/issue/{iid}"}, status_code=201)

    def _type_code(self, ref: Any) -> int | None:
        if not isinstance(ref, dict):
            return None
        for code, (name, tid, _, _) in enumerate(ISSUE_TYPES):
            if str(ref.get("id", "")) == tid or str(ref.get("name", "")).lower() == name.lower():
                return code
        return None

    async def _edit(self, call: Call, i: int) -> Any:
        body = await call.body()
        fields = dict(body.get("fields") or {})
        for name, operations in (body.get("update") or {}).items():
            if name in fields:
                raise JiraError(400, errors={name: f"Field '{name}' can't be set and updated in the same request."})
            if name == "comment":
                for operation in operations:
                    if "add" in operation:
                        self._add_comment(call, i, (operation["add"] or {}).get("body"))
                continue
            fields[name] = self._updated_value(i, name, operations)
        unknown = sorted(set(fields) - WRITABLE)
        if unknown:
            raise JiraError(400, errors={name: f"Field '{name}' cannot be set. It is not on the appropriate "
                                               "screen, or unknown." for name in unknown})
        self._apply_fields(call, i, fields, record=True)
        if call.param("returnIssue") == "true":
            return self._issue_json(call, i)
        return Response(status_code=204)

    def _updated_value(self, i: int, name: str, operations: list[dict[str, Any]]) -> Any:
        """The value `update` operations leave (labels: add/remove/set; other fields: set)."""
        value: Any = list(self.api.labels(i)) if name == "labels" else None
        for operation in operations:
            for verb, argument in operation.items():
                if verb == "set":
                    value = argument
                elif name == "labels" and verb == "add" and argument not in value:
                    value.append(argument)
                elif name == "labels" and verb == "remove":
                    value = [label for label in value if label != argument]
                elif verb not in ("add", "remove"):
                    raise JiraError(400, errors={name: f"Operation '{verb}' is not supported for field '{name}'."})
        return value

    def _apply_fields(self, call: Call, i: int, fields: dict[str, Any], record: bool) -> None:
        """Write fields into the portfolio (due dates through set_due, so history is kept) and the Jira state."""
        t = self.p.tasks
        if "duedate" in fields:
            self.p.set_due(i, parse_day(fields["duedate"], "duedate"))
        at = self.p.now()
        items = [item for name, value in fields.items() if name != "duedate"
                 for item in [self._apply_field(call, i, name, value)] if item is not None]
        if record and items:
            if "duedate" in fields and t.updated[i] > at - 1:
                at = float(t.updated[i])
            self.state.history.setdefault(i, []).append(History(at, -1, items))
        if record:
            t.updated[i] = max(float(t.updated[i]), at)

    def _apply_field(self, call: Call, i: int, name: str, value: Any) -> dict[str, Any] | None:
        t, state = self.p.tasks, self.state
        if name == "summary":
            old = self.p.title(i)
            if not value:
                raise JiraError(400, errors={"summary": "You must specify a summary of the issue."})
            self.p.title_overrides[i] = str(value)
            return _item("summary", "jira", "summary", None, old, None, str(value))
        if name in (START_DATE, FORECAST_FINISH):
            day = parse_day(value, name)
            if name == START_DATE:
                old, t.start[i] = day_string(t.start[i]), day
            else:
                old = state.custom.setdefault(i, {}).get(name)
                state.custom[i][name] = day_string(day)
            return _item(FIELD_NAMES[name], "custom", name, old, old, day_string(day), day_string(day))
        if name in (STORY_POINTS, SLIP_DAYS, "timeoriginalestimate"):
            if value is not None and not isinstance(value, (int, float)):
                raise JiraError(400, errors={name: "Operation value must be a number"})
            return self._apply_number(i, name, value)
        if name == "labels":
            if not isinstance(value, list) or not all(isinstance(v, str) and " " not in v for v in value):
                raise JiraError(400, errors={"labels": "The label can't contain spaces."})
            old = " ".join(self.api.labels(i))
            state.labels[i] = list(dict.fromkeys(value))
            return _item("labels", "jira", "labels", None, old, None, " ".join(state.labels[i]))
        if name == "description":
            old_text = self.api.description(i)
            state.descriptions[i] = rich_text(value, call.version, "description")
            new_text = state.descriptions[i]
            return _item("description", "jira", "description", None, old_text.text if old_text else None, None,
                         new_text.text if new_text else None)
        if name == "assignee":
            return self._apply_assignee(i, value)
        if name == "priority":
            state.priorities[i] = str((value or {}).get("name") or "Medium")
            return None
        return None

    def _apply_number(self, i: int, name: str, value: Any) -> dict[str, Any]:
        t = self.p.tasks
        if name == STORY_POINTS:
            old = None if np.isnan(t.points[i]) else float(t.points[i])
            t.points[i] = np.nan if value is None else float(value)
        elif name == "timeoriginalestimate":
            old = None if np.isnan(t.estimate[i]) else int(t.estimate[i] * 3600)
            t.estimate[i] = np.nan if value is None else float(value) / 3600
        else:
            old = self.state.custom.setdefault(i, {}).get(name)
            self.state.custom[i][name] = value
        fieldtype = "jira" if name == "timeoriginalestimate" else "custom"
        text = lambda v: None if v is None else str(v)
        return _item(FIELD_NAMES[name] if fieldtype == "custom" else name, fieldtype, name, text(old), text(old),
                     text(value), text(value))

    def _apply_assignee(self, i: int, value: Any) -> dict[str, Any]:
        t = self.p.tasks
        account = (value or {}).get("accountId") if isinstance(value, dict) else None
        person = -1
        if account:
            if not re.fullmatch(r"5b10a2844c2016[0-9a-f]{10}", account) or int(account[-10:], 16) >= len(self.p.people):
                raise JiraError(400, errors={"assignee": f"User '{account}' cannot be assigned issues."})
            person = int(account[-10:], 16)
        old = int(t.assignee[i])
        t.assignee[i] = person
        name = lambda k: None if k < 0 else self.p.people[k].display_name(JIRA)
        account_of = lambda k: None if k < 0 else ids.jira_account_id(k)
        return _item("assignee", "jira", "assignee", account_of(old), name(old), account_of(person), name(person))

    def _delete(self, call: Call, i: int) -> Response:
        t = self.p.tasks
        subtasks = np.flatnonzero((t.view("parent") == i) & (t.view("kind") == SUBTASK) & ~t.view("deleted"))
        if len(subtasks) and call.param("deleteSubtasks") != "true":
            raise JiraError(400, ["The issue has subtasks; set deleteSubtasks to true to delete them with it."])
        for k in subtasks.tolist():
            self.p.delete(k)
        self.p.delete(i)
        return Response(status_code=204)

    async def changelog(self, call: Call) -> Any:
        i = self.api.issue_index(call.path("issue"))
        start, limit = max(0, call.int_param("startAt", 0)), min(100, max(1, call.int_param("maxResults", 100)))
        histories = self.api.histories(i)
        values = [self.api.render_history(i, k, h, call.base, call.version)
                  for k, h in enumerate(histories)][start:start + limit]
        return page_bean(call, f"issue/{call.path('issue')}/changelog", values, start, limit, len(histories))

    # -- comments -------------------------------------------------------------------------------------------------
    def _add_comment(self, call: Call, i: int, body: Any) -> Comment:
        if body in (None, "") or (isinstance(body, dict) and not adf_text(body).strip() and call.version != "3"):
            raise JiraError(400, errors={"comment": "Comment body can not be empty!"})
        text = rich_text(body, call.version, "comment")
        assert text is not None
        now = self.p.now()
        comment = Comment(self.state.next_comment, -1, text, now, now)
        self.state.next_comment += 1
        self.state.comments.setdefault(i, []).append(comment)
        self.p.tasks.updated[i] = now  # the issue is updated at the comment's own instant
        return comment

    async def comments(self, call: Call) -> Any:
        i = self.api.issue_index(call.path("issue"))
        if call.request.method == "POST":
            comment = self._add_comment(call, i, (await call.body()).get("body"))
            return JSONBody(self.api.comment(i, comment, call.base, call.version), status_code=201)
        start, limit = max(0, call.int_param("startAt", 0)), min(5000, max(1, call.int_param("maxResults", 100)))
        stored = list(self.state.comments.get(i, ()))
        if (call.param("orderBy") or "").startswith("-"):
            stored.reverse()
        rows = [self.api.comment(i, c, call.base, call.version) for c in stored[start:start + limit]]
        return {"comments": rows, "maxResults": limit, "total": len(stored), "startAt": start}

    async def comment(self, call: Call) -> Any:
        i = self.api.issue_index(call.path("issue"))
        wanted = call.path("comment")
        found = next((c for c in self.state.comments.get(i, ()) if str(c.id) == wanted), None)
        if found is None:
            raise JiraError(404, [f"Can not find a comment for the id: {wanted}."])
        if call.request.method == "PUT":
            body = (await call.body()).get("body")
            if body in (None, ""):
                raise JiraError(400, errors={"comment": "Comment body can not be empty!"})
            found.body = rich_text(body, call.version, "comment") or found.body
            found.updated = self.p.now()
            self.p.tasks.updated[i] = found.updated  # the issue is updated at the edit's own instant
        return self.api.comment(i, found, call.base, call.version)

    # -- properties -----------------------------------------------------------------------------------------------
    async def property_keys(self, call: Call) -> Any:
        i = self.api.issue_index(call.path("issue"))
        url = f"{call.base}/rest/api/{call.version}/issue/{ids.jira_issue_id(i)}/properties"
        return {"keys": [{"self": f"{url}/{key}", "key": key} for key in self.state.properties.get(i, {})]}

    async def property(self, call: Call) -> Any:
        i = self.api.issue_index(call.path("issue"))
        key = call.path("key")
        stored = self.state.properties.setdefault(i, {})
        if call.request.method == "PUT":
            raw = await call.request.body()
            if len(key) > 255 or not raw or len(raw) > 32_768:
                raise JiraError(400, [("The property value must be non-empty JSON of at most 32768 bytes, and "
                                       "the key at most 255 characters.")])
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise JiraError(400, ["The property value must be valid JSON."]) from None
            existed = key in stored
            stored[key] = value
            return Response(status_code=200 if existed else 201)
        if key not in stored:
            raise JiraError(404, [f"The property with key '{key}' does not exist."])
        if call.request.method == "DELETE":
            del stored[key]
            return Response(status_code=204)
        return {"key": key, "value": stored[key]}

    # -- links ----------------------------------------------------------------------------------------------------
    async def create_link(self, call: Call) -> Any:
        body = await call.body()
        ref = body.get("type") or {}
        link_type = next((t for t in LINK_TYPES if t["name"].lower() == str(ref.get("name", "")).lower()
                          or t["id"] == str(ref.get("id", ""))), None)
        if link_type is None:
            raise JiraError(404, [f"No issue link type with name '{ref.get('name') or ref.get('id')}' found."])
        ends = []
        for side in ("inwardIssue", "outwardIssue"):
            issue_ref = body.get(side) or {}
            ends.append(self.api.issue_index(str(issue_ref.get("key") or issue_ref.get("id") or "")))
        inward, outward = ends
        self.state.created_links.append((inward, outward, link_type["id"], self.state.next_link))
        self.state.next_link += 1
        self.p.touch(inward)
        self.p.touch(outward)
        return Response(status_code=201)

    async def link_types(self, call: Call) -> Any:
        url = f"{call.base}/rest/api/{call.version}/issueLinkType"
        return {"issueLinkTypes": [{**t, "self": f"{url}/{t['id']}"} for t in LINK_TYPES]}

    async def remote_links(self, call: Call) -> Any:
        i = self.api.issue_index(call.path("issue"))
        if call.request.method == "POST":
            return await self._save_remote_link(call, i)
        links = self.api.remote_links(i, call.base)
        global_id = call.param("globalId")
        if global_id is not None:
            found = next((link for link in links if link.get("globalId") == global_id), None)
            if found is None:
                raise JiraError(404, [f"No remote link with global id '{global_id}' found."])
            return found
        return links

    async def _save_remote_link(self, call: Call, i: int) -> Any:
        body = await call.body()
        target = body.get("object") or {}
        errors = {name: f"'{name}' is required." for name in ("url", "title") if not target.get(name)}
        if errors:
            raise JiraError(400, errors=errors)
        global_id = body.get("globalId")
        existing = next((link for link in self.api.remote_links(i, call.base)
                         if global_id and link.get("globalId") == global_id), None)
        link_id = existing["id"] if existing else self.state.next_remote
        key = ids.jira_key(self.p, i)
        link = {"id": link_id, "self": f"{call.base}/rest/api/issue/{key}/remotelink/{link_id}",
                **{k: body[k] for k in ("globalId", "application", "relationship") if body.get(k) is not None},
                "object": target}
        own = self.state.remote_links.setdefault(i, [])
        if existing:
            if link_id < CREATED_LINK_BASE:
                self.state.removed_remote.add(link_id)
            own[:] = [other for other in own if other["id"] != link_id]
        else:
            self.state.next_remote += 1
        own.append(link)
        self.p.touch(i)
        return JSONBody({"id": link_id, "self": link["self"]}, status_code=200 if existing else 201)

    async def remote_link(self, call: Call) -> Any:
        i = self.api.issue_index(call.path("issue"))
        wanted = call.path("link")
        found = next((link for link in self.api.remote_links(i, call.base) if str(link["id"]) == wanted), None)
        if found is None:
            raise JiraError(404, [f"No remote link with id '{wanted}' found."])
        if call.request.method == "DELETE":
            own = self.state.remote_links.get(i, [])
            own[:] = [link for link in own if link is not found]
            if found["id"] < CREATED_LINK_BASE:
                self.state.removed_remote.add(found["id"])
            self.p.touch(i)
            return Response(status_code=204)
        return found

    async def labels(self, call: Call) -> Any:
        start, limit = max(0, call.int_param("startAt", 0)), min(1000, max(1, call.int_param("maxResults", 1000)))
        known = set(LABEL_POOL) | {"milestone"} | {label for labels in self.state.labels.values() for label in labels}
        values = sorted(known)
        return page_bean(call, "label", values[start:start + limit], start, limit, len(values))


def _item(field_name: str, fieldtype: str, field_id: str, from_: Any, from_string: Any, to: Any,
          to_string: Any) -> dict[str, Any]:
    return {"field": field_name, "fieldtype": fieldtype, "fieldId": field_id, "from": from_,
            "fromString": from_string, "to": to, "toString": to_string}
