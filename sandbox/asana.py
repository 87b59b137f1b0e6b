"""The Asana API 1.0 emulator, served under `/api/1.0`, rendered on the fly from the shared portfolio.

What it shows of the portfolio, in Asana's own terms:
- Every Asana project of the portfolio is a project in one workspace; its sections are `Backlog`,
  `In progress`, `Done` and `Cancelled`, and a task's section follows its status.
- Asana has no cancelled status: a cancelled task is `completed: true` (completed at its last update), sits in
  the `Cancelled` section and carries the `Cancelled` tag.
- Epics are top-level tasks; the stories under an epic are subtasks of it that are also members of the project
  (multi-homed, so they are listed with the project); generated subtasks hang under a story and belong to no
  project, so neither `GET /projects/{gid}/tasks` nor `GET /tasks?project=` lists them: a connector must walk
  `/tasks/{gid}/subtasks`. Such subtasks have no custom fields, as in Asana.
- Each project carries two workspace custom fields: `Estimate (h)` (number, the portfolio's estimate) and
  `Priority` (enum High/Medium/Low, derived from the task index unless a client set it).
- Due-date history is `due_date_changed` system stories from `portfolio.due_changes(i)`; comments are stories
  too.
- Events are derived when asked: one event per task of the resource whose `updated` is past the sync token.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

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
    ASANA,
    CANCELLED,
    DONE,
    EPOCH,
    IN_PROGRESS,
    LINK_NATIVE,
    MILESTONE,
    NO_DAY,
    SUBTASK,
    TASK,
    TODO,
    Portfolio,
    day_number,
    mix,
)

API = "/api/1.0"
WORKSPACE_NAME = "Acme"
TEAM_GID = "1201000000000002"
TEAM_NAME = "Delivery"
# The user the sandbox's token belongs to: the coordinator, who is not one of the generated people.
COORDINATOR_GID = "1209999999999999"
COORDINATOR_NAME = "Sandbox Coordinator"
COORDINATOR_EMAIL = "coordinator@acme.example"

# gid ranges of the objects that are Asana's alone (tasks, projects and users come from sandbox.ids).
SECTION_BASE = 1_205_000_000_000_000
CUSTOM_FIELD_BASE = 1_204_000_000_000_000
ENUM_OPTION_BASE = 1_203_000_000_000_000
TAG_BASE = 1_202_000_000_000_000
SETTING_BASE = 1_213_000_000_000_000
STORY_BASE = 1_210_000_000_000_000
COMMENT_BASE = 1_211_000_000_000_000
STATUS_UPDATE_BASE = 1_212_000_000_000_000
STORIES_PER_TASK = 128

SECTION_NAMES = ("Backlog", "In progress", "Done", "Cancelled")
SECTION_OF_STATUS = {TODO: 0, IN_PROGRESS: 1, DONE: 2, CANCELLED: 3}
CANCELLED_TAG = {"gid": str(TAG_BASE + 1), "resource_type": "tag", "name": "Cancelled"}
ESTIMATE_FIELD_GID = str(CUSTOM_FIELD_BASE + 1)
PRIORITY_FIELD_GID = str(CUSTOM_FIELD_BASE + 2)
PRIORITY_OPTIONS = (("High", "red"), ("Medium", "yellow-orange"), ("Low", "green"))

MAX_UNPAGED = 1000
MAX_EVENTS = 100
SYNC_TOKEN_LIFETIME_S = 24 * 3600
MAX_DEPENDENCIES = 30
STATUS_TYPES = ("on_track", "at_risk", "off_track", "on_hold", "complete", "dropped")
CUSTOM_FIELD_TYPES = ("text", "enum", "number", "date")

RATE_LIMIT_MESSAGE = (
    "You've made too many requests and hit a rate limit. Please retry after the given amount of time."
)
SYNC_MESSAGE = (
    "Sync token invalid or too old. If you are attempting to keep resources in sync, you must fetch the full "
    "dataset for this query now and use the new sync token for the next sync."
)
TOO_LARGE_MESSAGE = "The result is too large. You should use pagination (may require specifying a workspace)!"
TOO_MANY_LINKS_MESSAGE = "Tasks can only have a combined total of 30 dependents and dependencies."
TASK_FILTER_MESSAGE = (
    "Must specify exactly one of project, tag, section, user task list, or assignee + workspace"
)

COMPACT_KEYS = {
    "task": ("gid", "resource_type", "name", "resource_subtype"),
    "user": ("gid", "resource_type", "name"),
    "project": ("gid", "resource_type", "name"),
    "section": ("gid", "resource_type", "name"),
    "tag": ("gid", "resource_type", "name"),
    "workspace": ("gid", "resource_type", "name"),
    "team": ("gid", "resource_type", "name"),
    "story": ("gid", "resource_type", "created_at", "created_by", "resource_subtype", "text", "type"),
    "status_update": ("gid", "resource_type", "title", "resource_subtype"),
    "custom_field_setting": ("gid", "resource_type", "project", "is_important", "parent", "custom_field"),
    "enum_option": ("gid", "resource_type", "name", "enabled", "color"),
    "custom_field": (
        "gid", "resource_type", "name", "resource_subtype", "type", "enum_options", "enabled",
        "representation_type", "id_prefix", "is_formula_field", "date_value", "enum_value",
        "multi_enum_values",
        "number_value",
        "text_value", "display_value",
    ),
}


class AsanaError(Exception):
    """An error answered in Asana's shape: `{"errors":[{"message": ...}]}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def default_rate_limit() -> RateLimit:
    """Asana's paid-plan budget: 1,500 requests a minute per token, 429 with Retry-After in seconds."""
    return RateLimit(limit=1500, window_s=60.0, send_retry_after=True)


def iso(seconds: float) -> str:
    """A UTC timestamp the way Asana writes it: `2012-02-22T02:06:58.147Z`."""
    millis = round(float(seconds) * 1000)
    whole, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


@functools.lru_cache(maxsize=65536)
def day_text(day: int) -> str | None:
    """A stored day number as `YYYY-MM-DD`, None for no date."""
    return None if day == NO_DAY else (EPOCH + timedelta(days=int(day))).isoformat()


def parse_day(value: Any, name: str) -> int:
    """A `YYYY-MM-DD` (or null) from a request body as a day number."""
    if value is None:
        return NO_DAY
    try:
        return day_number(date.fromisoformat(str(value)[:10]))
    except ValueError:
        raise AsanaError(400, f"{name}: Invalid date value: {value}") from None


def parse_time(value: str, name: str) -> float:
    """An ISO 8601 date or date-time query value (UTC unless it says otherwise) as epoch seconds."""
    try:
        moment = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError:
        raise AsanaError(400, f"{name}: Not a valid ISO 8601 date/time: {value}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_opt_fields(value: str | None) -> dict[str, dict] | None:
    """`opt_fields=name,assignee.email,memberships.section.name` as a tree of requested paths."""
    if not value:
        return None
    tree: dict[str, dict] = {}
    for path in value.split(","):
        node = tree
        for part in path.strip().split("."):
            if part:
                node = node.setdefault(part, {})
    return tree


def compact(value: Any) -> Any:
    """An object as Asana writes it when nothing more was asked: compact fields, nested ones compact too."""
    if isinstance(value, list):
        return [compact(v) for v in value]
    if not isinstance(value, dict):
        return value
    keys = COMPACT_KEYS.get(value.get("resource_type", ""))
    items = value.items() if keys is None else ((k, value[k]) for k in keys if k in value)
    return {k: compact(v) for k, v in items}


def project_fields(value: Any, tree: dict[str, dict]) -> Any:
    """Keep what `opt_fields` asked for below this point (gid always), compact where it named no sub-field."""
    if isinstance(value, list):
        return [project_fields(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    if not tree:
        return compact(value)
    out = {"gid": value["gid"]} if "gid" in value else {}
    for key, sub in tree.items():
        if key in value:
            out[key] = project_fields(value[key], sub)
    return out


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs the sandbox's opaque offsets and sync tokens so a client can only send back what it was given."""

    def __init__(self, seed: int) -> None:
        self.key = hashlib.sha256(f"pmsync-sandbox-asana-{seed}".encode()).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()

    def offset(self, scope: str, after: int, issued: float) -> str:
        """A JWT-looking offset (as Asana's are) naming the last item of the page in this listing."""
        header = _b64(b'{"typ":"JWT","alg":"HS256"}')
        body = _b64(orjson.dumps({"scope": scope, "after": after, "iat": int(issued)}))
        signature = _b64(self._mac(f"{header}.{body}".encode())[:24])
        return f"{header}.{body}.{signature}"

    def read_offset(self, scope: str, token: str) -> int:
        """The position an offset encodes, or a 400 when it was not issued for this listing."""
        try:
            header, body, signature = token.split(".")
            ok = hmac.compare_digest(_unb64(signature), self._mac(f"{header}.{body}".encode())[:24])
            claims = orjson.loads(_unb64(body)) if ok else None
        except (ValueError, orjson.JSONDecodeError):
            claims = None
        if not claims or claims.get("scope") != scope:
            raise AsanaError(400, "offset: Your pagination token is invalid or has expired.")
        return int(claims["after"])

    def sync(self, resource: int, since: float, last: int) -> str:
        """A sync token: the resource, and the (time, task index) of the last event delivered."""
        payload = struct.pack(">qdq", resource, since, last)
        return (payload + self._mac(payload)[:8]).hex()

    def read_sync(self, token: str) -> tuple[int, float, int] | None:
        """(resource, since, last) of a token this sandbox issued, else None."""
        try:
            raw = bytes.fromhex(token)
        except ValueError:
            return None
        if len(raw) != 32 or not hmac.compare_digest(raw[24:], self._mac(raw[:24])[:8]):
            return None
        return struct.unpack(">qdq", raw[:24])


@dataclass
class EnumOption:
    gid: str
    name: str
    color: str = "none"
    enabled: bool = True

    def render(self) -> dict[str, Any]:
        return {"gid": self.gid, "resource_type": "enum_option", "name": self.name, "enabled": self.enabled,
                "color": self.color}


@dataclass
class CustomField:
    """A workspace custom field definition (values live on tasks)."""

    gid: str
    name: str
    subtype: str
    precision: int = 0
    description: str = ""
    enum_options: list[EnumOption] = field(default_factory=list)
    _rendered: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    _options_seen: int = field(default=0, repr=False, compare=False)
    _on_task: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def render(self) -> dict[str, Any]:
        """The definition in full; built once per set of options, callers must not mutate it."""
        if self._rendered is not None and self._options_seen == len(self.enum_options):
            return self._rendered
        out: dict[str, Any] = {
            "gid": self.gid, "resource_type": "custom_field", "name": self.name,
            "resource_subtype": self.subtype,
            "type": self.subtype, "representation_type": self.subtype, "description": self.description,
            "enabled": True, "is_formula_field": False, "is_value_read_only": False, "id_prefix": None,
            "is_global_to_workspace": True, "has_notifications_enabled": True, "asana_created_field": None,
            "privacy_setting": "public_with_guests", "default_access_level": "editor",
            "created_by": {"gid": COORDINATOR_GID, "resource_type": "user", "name": COORDINATOR_NAME},
        }
        if self.subtype == "number":
            out.update(precision=self.precision, format="none", currency_code=None, custom_label=None,
                       custom_label_position=None)
        if self.subtype == "enum":
            out["enum_options"] = [o.render() for o in self.enum_options]
        self._rendered, self._options_seen = out, len(self.enum_options)
        return out

    def with_value(self, raw: Any) -> dict[str, Any]:
        """The field as a task shows it, holding `raw` (a number, text, option gid or day number)."""
        if self._on_task is None or self._rendered is not self.render():
            self._on_task = {k: v for k, v in self.render().items() if k != "created_by"}
        out = dict(self._on_task)
        if self.subtype == "number":
            out["number_value"] = raw
            out["display_value"] = None if raw is None else f"{raw:.{self.precision}f}"
        elif self.subtype == "text":
            out["text_value"] = raw
            out["display_value"] = raw
        elif self.subtype == "enum":
            option = next((o for o in self.enum_options if o.gid == raw), None)
            out["enum_value"] = option.render() if option else None
            out["display_value"] = option.name if option else None
        elif self.subtype == "date":
            text = None if raw is None else day_text(raw)
            out["date_value"] = None if text is None else {"date": text, "date_time": None}
            out["display_value"] = text
        return out


@dataclass
class Comment:
    gid: str
    text: str
    at: float


@dataclass
class StatusUpdate:
    gid: str
    parent: int
    status_type: str
    title: str
    text: str
    at: float


@dataclass
class FieldSetting:
    gid: str
    field_gid: str
    is_important: bool


class AsanaState:
    """Asana's own state over the portfolio: custom fields, comments, notes, clients' links, indexes."""

    def __init__(self, portfolio: Portfolio) -> None:
        p = portfolio
        self.p = p
        self.signer = Signer(p.seed)
        self.projects = {pr.index: pr for pr in p.projects_of(ASANA)}
        # Generated spans, before clients append tasks (add_task bumps task_count).
        self.spans = {pr.index: (pr.first_task, pr.task_count) for pr in self.projects.values()}
        self.generated = p.tasks.size
        self.range = p.tool_ranges[ASANA]
        self.people_by_email = {person.email_in(ASANA).lower(): person.index for person in p.people}
        self.fields: dict[str, CustomField] = {}
        self.next_field = 3
        self.next_option = 10
        self._generate_fields()
        self.settings = {k: [FieldSetting(str(SETTING_BASE + k * 64), ESTIMATE_FIELD_GID, True),
                             FieldSetting(str(SETTING_BASE + k * 64 + 1), PRIORITY_FIELD_GID, True)]
                         for k in self.projects}
        self.values: dict[tuple[int, str], Any] = {}
        self.notes: dict[int, str] = {}
        self.comments: dict[int, list[Comment]] = {}
        self.next_comment = 1
        self.status_updates: list[StatusUpdate] = []
        self.added_links: set[tuple[int, int]] = set()
        self.removed_links: set[tuple[int, int]] = set()
        self.last_change: dict[int, tuple[float, str, Any]] = {}
        # Every change a client made, per task: (instant, field, new value), oldest first, for the events feed.
        self.changes: dict[int, list[tuple[float, str, Any]]] = {}
        # Rendered records that never change (users, project compacts, sections), shared read-only.
        self.cache: dict[tuple, dict[str, Any]] = {}
        self._index_children()
        self._index_links()

    def _generate_fields(self) -> None:
        self.fields[ESTIMATE_FIELD_GID] = CustomField(
            ESTIMATE_FIELD_GID, "Estimate (h)", "number", precision=1,
                                                      description="Estimated effort in hours")
        options = [EnumOption(str(ENUM_OPTION_BASE + k + 1), name, color)
                   for k, (name, color) in enumerate(PRIORITY_OPTIONS)]
        self.fields[PRIORITY_FIELD_GID] = CustomField(
            PRIORITY_FIELD_GID, "Priority", "enum", enum_options=options)

    def _index_children(self) -> None:
        first, end = self.range
        parents = self.p.tasks.parent[first:end]
        self.child_order = first + np.argsort(parents, kind="stable").astype(np.int64)
        self.child_parents = parents[self.child_order - first]

    def _index_links(self) -> None:
        p = self.p
        native = (p.link_mechanism == LINK_NATIVE) & (p.tasks.tool[p.link_succ] == ASANA)
        pred, succ = p.link_pred[native].astype(np.int64), p.link_succ[native].astype(np.int64)
        by_succ, by_pred = np.argsort(succ, kind="stable"), np.argsort(pred, kind="stable")
        self.succ_sorted, self.pred_of_succ = succ[by_succ], pred[by_succ]
        self.pred_sorted, self.succ_of_pred = pred[by_pred], succ[by_pred]

    def task(self, gid: str, what: str = "task") -> int:
        """The index of a live Asana task, else Asana's 400/404."""
        if not gid.isdigit():
            raise AsanaError(400, f"{what}: Not a Long: {gid}")
        i = ids.asana_index(gid)
        t = self.p.tasks
        if i is None or i >= t.size or t.tool[i] != ASANA or t.deleted[i]:
            raise AsanaError(404, f"{what}: Unknown object: {gid}")
        return i

    def project(self, gid: str, what: str = "project") -> int:
        if not gid.isdigit():
            raise AsanaError(400, f"{what}: Not a Long: {gid}")
        index = int(gid) - ids.ASANA_PROJECT_BASE
        if index not in self.projects:
            raise AsanaError(404, f"{what}: Unknown object: {gid}")
        return index

    def custom_field(self, gid: str) -> CustomField:
        if gid not in self.fields:
            raise AsanaError(404, f"custom_field: Unknown object: {gid}")
        return self.fields[gid]

    def person(self, value: Any) -> int:
        """A user named by gid, email or `me` (-1 is the coordinator); None clears."""
        text = str(value)
        if text in ("me", COORDINATOR_GID) or text.lower() == COORDINATOR_EMAIL:
            return -1
        if text.lower() in self.people_by_email:
            return self.people_by_email[text.lower()]
        index = int(text) - ids.ASANA_USER_BASE if text.isdigit() else -1
        if not 0 <= index < len(self.p.people):
            raise AsanaError(404, f"assignee: Unknown object: {text}")
        return index

    def project_tasks(self, project: int, include_hidden: bool = False) -> np.ndarray:
        """Indexes of the tasks a project lists, in creation order: no subtasks, no deleted (unless asked)."""
        first, count = self.spans[project]
        t = self.p.tasks
        added = self.generated + np.flatnonzero(
            (t.view("project")[self.generated:] == project) & (t.view("tool")[self.generated:] == ASANA)
        )
        idx = np.concatenate([np.arange(first, first + count, dtype=np.int64), added])
        if include_hidden:
            return idx
        return idx[(t.kind[idx] != SUBTASK) & ~t.deleted[idx]]

    def children(self, i: int) -> np.ndarray:
        """Live subtasks of a task, in creation order."""
        lo, hi = np.searchsorted(self.child_parents, [i, i + 1])
        t = self.p.tasks
        added = self.generated + np.flatnonzero(t.view("parent")[self.generated:] == i)
        idx = np.concatenate([np.sort(self.child_order[lo:hi]), added])
        return idx[~t.deleted[idx]]

    def dependencies(self, i: int) -> list[int]:
        lo, hi = np.searchsorted(self.succ_sorted, [i, i + 1])
        found = [int(k) for k in self.pred_of_succ[lo:hi] if (int(k), i) not in self.removed_links]
        found += [pred for pred, succ in self.added_links if succ == i and pred not in found]
        return [k for k in sorted(found) if not self.p.tasks.deleted[k]]

    def dependents(self, i: int) -> list[int]:
        lo, hi = np.searchsorted(self.pred_sorted, [i, i + 1])
        found = [int(k) for k in self.succ_of_pred[lo:hi] if (i, int(k)) not in self.removed_links]
        found += [succ for pred, succ in self.added_links if pred == i and succ not in found]
        return [k for k in sorted(found) if not self.p.tasks.deleted[k]]

    def record_change(self, i: int, field_name: str, value: Any) -> None:
        """Note a change a client made to a task, for the events feed (one event per change, as Asana sends)."""
        at = float(self.p.tasks.updated[i])
        self.last_change[i] = (at, field_name, value)
        self.changes.setdefault(i, []).append((at, field_name, value))

    def field_value(self, i: int, gid: str) -> Any:
        if gid == ESTIMATE_FIELD_GID:
            estimate = float(self.p.tasks.estimate[i])
            return None if np.isnan(estimate) else estimate
        if (i, gid) in self.values:
            return self.values[(i, gid)]
        if gid == PRIORITY_FIELD_GID:
            pick = mix(self.p.seed, i, 71) % 4
            return None if pick == 3 else self.fields[gid].enum_options[pick].gid
        return None

    def set_field_value(self, i: int, gid: str, value: Any) -> None:
        """Store a value sent in a task's `custom_fields`, checked against the field's type."""
        definition = self.custom_field(gid)
        raw: Any = value
        if value is not None:
            if definition.subtype == "number":
                if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                    raise AsanaError(400, f"custom_fields: Number value expected for {gid}")
                try:
                    raw = float(value)
                except ValueError:
                    raise AsanaError(400, f"custom_fields: Number value expected for {gid}") from None
            elif definition.subtype == "text":
                raw = str(value)
            elif definition.subtype == "enum":
                if str(value) not in {o.gid for o in definition.enum_options}:
                    raise AsanaError(400, f"custom_fields: enum option {value} is not an option of {gid}")
                raw = str(value)
            elif definition.subtype == "date":
                raw = parse_day(value.get("date") if isinstance(value, dict) else value, "custom_fields")
        if gid == ESTIMATE_FIELD_GID:
            self.p.tasks.estimate[i] = np.nan if raw is None else raw
        else:
            self.values[(i, gid)] = raw


def user_record(state: AsanaState, person: int) -> dict[str, Any]:
    """A user in full (-1 is the coordinator the token belongs to); cached, callers must not mutate it."""
    cached = state.cache.get(("user", person))
    if cached is None:
        cached = state.cache[("user", person)] = _user_record(state, person)
    return cached


def _user_record(state: AsanaState, person: int) -> dict[str, Any]:
    workspace = [{"gid": ids.ASANA_WORKSPACE_GID, "resource_type": "workspace", "name": WORKSPACE_NAME}]
    if person < 0:
        return {"gid": COORDINATOR_GID, "resource_type": "user", "name": COORDINATOR_NAME,
                "email": COORDINATOR_EMAIL, "photo": None, "workspaces": workspace}
    who = state.p.people[person]
    return {"gid": ids.asana_user_gid(person), "resource_type": "user", "name": who.display_name(ASANA),
            "email": who.email_in(ASANA), "photo": None, "workspaces": workspace}


def project_compact(state: AsanaState, project: int) -> dict[str, Any]:
    cached = state.cache.get(("project", project))
    if cached is None:
        cached = state.cache[("project", project)] = {
            "gid": ids.asana_project_gid(project), "resource_type": "project",
            "name": state.projects[project].name}
    return cached


def section_record(state: AsanaState, project: int, k: int) -> dict[str, Any]:
    cached = state.cache.get(("section", project, k))
    if cached is None:
        cached = state.cache[("section", project, k)] = _section_record(state, project, k)
    return cached


def _section_record(state: AsanaState, project: int, k: int) -> dict[str, Any]:
    return {"gid": str(SECTION_BASE + project * 8 + k), "resource_type": "section", "name": SECTION_NAMES[k],
            "project": project_compact(state, project),
            "created_at": iso(state.p.tasks.created[state.spans[project][0]] - 86_400)}


def project_record(state: AsanaState, project: int) -> dict[str, Any]:
    first, count = state.spans[project]
    t = state.p.tasks
    return {
        **project_compact(state, project), "archived": False, "color": "light-green", "icon": "list",
        "created_at": iso(float(t.created[first]) - 86_400),
        "modified_at": iso(float(t.updated[first:first + count].max())),
        "current_status": None, "current_status_update": None, "default_view": "list", "due_on": None,
        "start_on": None, "notes": "", "public": True, "privacy_setting": "public_to_workspace",
        "completed": False, "completed_at": None, "completed_by": None, "owner": None,
        "team": {"gid": TEAM_GID, "resource_type": "team", "name": TEAM_NAME},
        "members": [], "followers": [], "custom_fields": [], "custom_field_settings": [
            setting_record(state, project, s) for s in state.settings[project]],
        "workspace": {"gid": ids.ASANA_WORKSPACE_GID, "resource_type": "workspace", "name": WORKSPACE_NAME},
        "permalink_url": f"https://app.asana.com/0/{ids.asana_project_gid(project)}/list",
    }


def setting_record(state: AsanaState, project: int, setting: FieldSetting) -> dict[str, Any]:
    project_ref = project_compact(state, project)
    return {"gid": setting.gid, "resource_type": "custom_field_setting", "is_important": setting.is_important,
            "project": project_ref, "parent": project_ref,
            "custom_field": state.fields[setting.field_gid].render()}


def task_compact(state: AsanaState, i: int) -> dict[str, Any]:
    return {"gid": ids.asana_gid(i), "resource_type": "task", "name": state.p.title(i),
            "resource_subtype": "milestone" if state.p.tasks.kind[i] == MILESTONE else "default_task"}


def _in_project(state: AsanaState, i: int) -> bool:
    return state.p.tasks.kind[i] != SUBTASK


def _completed_at(state: AsanaState, i: int) -> str | None:
    t = state.p.tasks
    status = int(t.status[i])
    if status == DONE:
        return iso(t.completed[i] or t.updated[i])
    if status == CANCELLED:
        return iso(t.updated[i])
    return None


def _assignee(state: AsanaState, i: int) -> dict[str, Any] | None:
    person = int(state.p.tasks.assignee[i])
    return None if person < 0 else user_record(state, person)


def _parent(state: AsanaState, i: int) -> dict[str, Any] | None:
    parent = int(state.p.tasks.parent[i])
    return None if parent < 0 else task_compact(state, parent)


def _projects(state: AsanaState, i: int) -> list[dict[str, Any]]:
    return [project_compact(state, int(state.p.tasks.project[i]))] if _in_project(state, i) else []


def _memberships(state: AsanaState, i: int) -> list[dict[str, Any]]:
    if not _in_project(state, i):
        return []
    t = state.p.tasks
    project = int(t.project[i])
    section = section_record(state, project, SECTION_OF_STATUS[int(t.status[i])])
    return [{"project": project_compact(state, project), "section": section}]


def _custom_fields(state: AsanaState, i: int) -> list[dict[str, Any]]:
    if not _in_project(state, i):
        return []
    project = int(state.p.tasks.project[i])
    settings = state.settings[project]
    return [state.fields[s.field_gid].with_value(state.field_value(i, s.field_gid)) for s in settings]


def _permalink(state: AsanaState, i: int) -> str:
    project = ids.asana_project_gid(int(state.p.tasks.project[i]))
    return f"https://app.asana.com/0/{project}/{ids.asana_gid(i)}"


def _resources(indexes: list[int]) -> list[dict[str, Any]]:
    return [{"gid": ids.asana_gid(k), "resource_type": "task"} for k in indexes]


def _T(state: AsanaState) -> Any:
    return state.p.tasks


TASK_FIELDS: dict[str, Callable[[AsanaState, int], Any]] = {
    "resource_type": lambda s, i: "task",
    "name": lambda s, i: s.p.title(i),
    "resource_subtype": lambda s, i: "milestone" if _T(s).kind[i] == MILESTONE else "default_task",
    "created_by": lambda s, i: {"gid": COORDINATOR_GID, "resource_type": "user"},
    "completed": lambda s, i: int(_T(s).status[i]) in (DONE, CANCELLED),
    "completed_at": _completed_at,
    "completed_by": lambda s, i: None,
    "created_at": lambda s, i: iso(_T(s).created[i]),
    "modified_at": lambda s, i: iso(_T(s).updated[i]),
    "due_on": lambda s, i: day_text(int(_T(s).due[i])),
    "due_at": lambda s, i: None,
    "start_on": lambda s, i: day_text(int(_T(s).start[i])) if _T(s).due[i] != NO_DAY else None,
    "start_at": lambda s, i: None,
    "assignee": _assignee,
    "assignee_status": lambda s, i: "upcoming",
    "parent": _parent,
    "projects": _projects,
    "memberships": _memberships,
    "custom_fields": _custom_fields,
    "num_subtasks": lambda s, i: len(s.children(i)),
    "permalink_url": _permalink,
    "notes": lambda s, i: s.notes.get(i, ""),
    "html_notes": lambda s, i: f"<body>{s.notes.get(i, '')}</body>",
    "tags": lambda s, i: [CANCELLED_TAG] if _T(s).status[i] == CANCELLED else [],
    "followers": lambda s, i: [],
    "dependencies": lambda s, i: _resources(s.dependencies(i)),
    "dependents": lambda s, i: _resources(s.dependents(i)),
    "workspace": lambda s, i: {"gid": ids.ASANA_WORKSPACE_GID, "resource_type": "workspace",
                               "name": WORKSPACE_NAME},
    "liked": lambda s, i: False, "likes": lambda s, i: [], "num_likes": lambda s, i: 0,
    "hearted": lambda s, i: False, "hearts": lambda s, i: [], "num_hearts": lambda s, i: 0,
    "is_rendered_as_separator": lambda s, i: False,
    "actual_time_minutes": lambda s, i: None,
}
FULL_TASK_FIELDS = tuple(k for k in TASK_FIELDS if k not in ("html_notes",))


def render_task(state: AsanaState, i: int, tree: dict[str, dict] | None, full: bool) -> dict[str, Any]:
    """One task: everything (a single-task read) or compact (a listing) unless `opt_fields` chose fields."""
    if tree is None and not full:
        return task_compact(state, i)
    out: dict[str, Any] = {"gid": ids.asana_gid(i)}
    if tree is None:
        for name in FULL_TASK_FIELDS:
            out[name] = compact(TASK_FIELDS[name](state, i))
        return out
    for name, sub in tree.items():
        render = TASK_FIELDS.get(name)
        if render is not None:
            out[name] = project_fields(render(state, i), sub)
    return out


def render(value: dict[str, Any], tree: dict[str, dict] | None, full: bool) -> dict[str, Any]:
    """A non-task record: in full, compact, or as `opt_fields` chose."""
    if tree is not None:
        return project_fields(value, tree)
    return {k: compact(v) for k, v in value.items()} if full else compact(value)


def _date_words(day: int) -> str:
    moment = EPOCH + timedelta(days=int(day))
    return f"{moment.strftime('%B')} {moment.day}"


def stories_of(state: AsanaState, i: int) -> list[dict[str, Any]]:
    """A task's stories, oldest first: due-date changes from the portfolio's history, and comments."""
    task = task_compact(state, i)
    stories = []
    for k, change in enumerate(state.p.due_changes(i)[:STORIES_PER_TASK]):
        if change.new_day == NO_DAY:
            text = "removed the due date"
        else:
            text = f"changed the due date to {_date_words(change.new_day)}"
        story: dict[str, Any] = {
            "gid": str(STORY_BASE + i * STORIES_PER_TASK + k), "resource_type": "story",
            "created_at": iso(change.at), "created_by": compact(user_record(state, change.person)),
            "resource_subtype": "due_date_changed", "type": "system", "text": text,
            "html_text": f"<body>{text}</body>", "is_editable": False, "is_edited": False, "is_pinned": False,
            "source": "web" if change.person >= 0 else "api", "target": task,
            "liked": False, "likes": [], "num_likes": 0, "hearted": False, "hearts": [], "num_hearts": 0,
            "previews": [], "reaction_summary": [],
        }
        # The spec gives no null due_on in story dates: a date that was not there is left out.
        if change.old_day != NO_DAY:
            story["old_dates"] = {"start_on": None, "due_at": None, "due_on": day_text(change.old_day)}
        if change.new_day != NO_DAY:
            story["new_dates"] = {"start_on": None, "due_at": None, "due_on": day_text(change.new_day)}
        stories.append(story)
    stories.extend(comment_story(state, i, c) for c in state.comments.get(i, ()))
    stories.sort(key=lambda s: s["created_at"])
    return stories


def comment_story(state: AsanaState, i: int, comment: Comment) -> dict[str, Any]:
    return {
        "gid": comment.gid, "resource_type": "story", "created_at": iso(comment.at),
        "created_by": compact(user_record(state, -1)), "resource_subtype": "comment_added", "type": "comment",
        "text": comment.text, "html_text": f"<body>{comment.text}</body>", "is_editable": True,
        "is_edited": False, "is_pinned": False, "source": "api", "target": task_compact(state, i),
        "liked": False, "likes": [],
        "num_likes": 0, "hearted": False, "hearts": [], "num_hearts": 0, "previews": [],
        "reaction_summary": [],
    }


def status_update_record(state: AsanaState, update: StatusUpdate) -> dict[str, Any]:
    author = compact(user_record(state, -1))
    return {
        "gid": update.gid, "resource_type": "status_update", "resource_subtype": "project_status_update",
        "title": update.title, "text": update.text, "html_text": f"<body>{update.text}</body>",
        "status_type": update.status_type, "author": author, "created_by": author,
        "created_at": iso(update.at),
        "modified_at": iso(update.at), "parent": project_compact(state, update.parent), "liked": False,
        "likes": [], "num_likes": 0, "hearted": False, "hearts": [], "num_hearts": 0, "reaction_summary": [],
    }


Handler = Callable[[Request], Awaitable[Response]]


def asana_route(handler: Callable[[Request], Awaitable[Response]]) -> Handler:
    """Answer an AsanaError raised inside a handler in Asana's error shape."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except AsanaError as exc:
            return JSONBody({"errors": [{"message": exc.message}]}, status_code=exc.status)

    return wrapped


async def read_data(request: Request) -> dict[str, Any]:
    """The `data` object of a write body (Asana wraps request bodies too)."""
    raw = await request.body()
    if not raw:
        raise AsanaError(400, "data: Missing input")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AsanaError(400, "Could not parse request data, invalid JSON") from None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        raise AsanaError(400, "data: Missing input")
    return data


def require(data: dict[str, Any], name: str) -> Any:
    if data.get(name) in (None, ""):
        raise AsanaError(400, f"{name}: Missing input")
    return data[name]


def page_limit(request: Request) -> int | None:
    """The `limit` sent (1..100), None when absent."""
    value = request.query_params.get("limit")
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise AsanaError(400, "limit: The limit must be between 1 and 100")
    return int(value)


def page(state: AsanaState, request: Request, keys: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The slice of ascending `keys` this request asks for, and the `next_page` part of the reply.

    Offsets name the last key served, so a page stays right when items are added or deleted meanwhile.
    """
    limit = page_limit(request)
    scope = request.url.path
    offset = request.query_params.get("offset")
    start = 0
    if offset:
        start = int(np.searchsorted(keys, state.signer.read_offset(scope, offset), side="right"))
    if limit is None:
        if len(keys) - start > MAX_UNPAGED:
            raise AsanaError(400, TOO_LARGE_MESSAGE)
        return keys[start:], {}
    chosen = keys[start:start + limit]
    if start + limit >= len(keys):
        return chosen, {"next_page": None}
    token = state.signer.offset(scope, int(chosen[-1]), state.p.now())
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "offset"] + [("offset", token)]
    relative = f"{scope[len(API):]}?{urlencode(query)}"
    # Asana's `uri` is absolute on its own host; the sandbox's is absolute on the host the client called.
    root = f"{request.url.scheme}://{request.url.netloc}{API}"
    return chosen, {"next_page": {"offset": token, "path": relative, "uri": f"{root}{relative}"}}


def listing(state: AsanaState, request: Request, records: list[dict[str, Any]]) -> Response:
    """A paged listing of ready records (small lists: stories, projects, fields...)."""
    chosen, extra = page(state, request, np.arange(len(records), dtype=np.int64))
    tree = parse_opt_fields(request.query_params.get("opt_fields"))
    return JSONBody({"data": [render(records[int(k)], tree, False) for k in chosen], **extra})


def task_listing(state: AsanaState, request: Request, indexes: np.ndarray) -> Response:
    chosen, extra = page(state, request, indexes)
    tree = parse_opt_fields(request.query_params.get("opt_fields"))
    return JSONBody({"data": [render_task(state, int(i), tree, False) for i in chosen], **extra})


def one(data: dict[str, Any], request: Request, status: int = 200, location: str | None = None) -> Response:
    tree = parse_opt_fields(request.query_params.get("opt_fields"))
    headers = {"Location": f"{str(request.base_url).rstrip('/')}{API}{location}"} if location else None
    return JSONBody({"data": render(data, tree, True)}, status_code=status, headers=headers)


def one_task(state: AsanaState, request: Request, i: int, status: int = 200) -> Response:
    tree = parse_opt_fields(request.query_params.get("opt_fields"))
    headers = None
    if status == 201:
        headers = {"Location": f"{str(request.base_url).rstrip('/')}{API}/tasks/{ids.asana_gid(i)}"}
    return JSONBody({"data": render_task(state, i, tree, True)}, status_code=status, headers=headers)


def filter_tasks(state: AsanaState, request: Request, indexes: np.ndarray) -> np.ndarray:
    """Apply `modified_since` and `completed_since` to task indexes, vectorized over the portfolio."""
    t = state.p.tasks
    query = request.query_params
    if query.get("modified_since"):
        since = parse_time(query["modified_since"], "modified_since")
        indexes = indexes[t.updated[indexes] >= since]
    if query.get("completed_since"):
        value = query["completed_since"]
        since = state.p.now() if value == "now" else parse_time(value, "completed_since")
        status = t.status[indexes]
        finished_at = np.where(status == CANCELLED, t.updated[indexes], t.completed[indexes])
        open_ = (status != DONE) & (status != CANCELLED)
        indexes = indexes[open_ | (finished_at >= since)]
    return indexes


def section_tasks(state: AsanaState, section_gid: str) -> np.ndarray:
    """Tasks of a project section (a section is a status bucket)."""
    number = int(section_gid) - SECTION_BASE if section_gid.isdigit() else -1
    project, k = divmod(number, 8)
    if project not in state.projects or not 0 <= k < len(SECTION_NAMES):
        raise AsanaError(404, f"section: Unknown object: {section_gid}")
    idx = state.project_tasks(project)
    wanted = [status for status, section in SECTION_OF_STATUS.items() if section == k]
    return idx[np.isin(state.p.tasks.status[idx], wanted)]


def apply_task_changes(state: AsanaState, i: int, data: dict[str, Any]) -> None:
    """Apply a PUT body to task i through the portfolio, so history and `modified_at` follow."""
    p, t = state.p, state.p.tasks
    if "due_on" in data and "due_at" in data and data["due_on"] and data["due_at"]:
        raise AsanaError(400, "You may only provide one of due_on or due_at!")
    changed: list[tuple[str, Any]] = []
    if "name" in data:
        p.title_overrides[i] = str(data["name"])
        p.touch(i)
        changed.append(("name", data["name"]))
    if "notes" in data or "html_notes" in data:
        state.notes[i] = str(data.get("notes", data.get("html_notes", "")))
        p.touch(i)
        changed.append(("notes", state.notes[i]))
    if data.get("due_at"):
        data = {**data, "due_on": str(data["due_at"])[:10]}
    if "due_on" in data:
        p.set_due(i, parse_day(data["due_on"], "due_on"), person=-1)
        changed.append(("due_on", day_text(int(t.due[i]))))
    if "start_on" in data:
        start = parse_day(data["start_on"], "start_on")
        if start != NO_DAY and t.due[i] == NO_DAY:
            raise AsanaError(400, "start_on: Start date must be accompanied by a due date")
        t.start[i] = start
        p.touch(i)
        changed.append(("start_on", data["start_on"]))
    if "completed" in data:
        done = bool(data["completed"])
        if done != (int(t.status[i]) in (DONE, CANCELLED)):
            p.set_status(i, DONE if done else TODO)
        changed.append(("completed", done))
    if "assignee" in data:
        t.assignee[i] = -1 if data["assignee"] is None else max(state.person(data["assignee"]), -1)
        p.touch(i)
        changed.append(("assignee", data["assignee"]))
    if "resource_subtype" in data:
        if data["resource_subtype"] not in ("default_task", "milestone"):
            raise AsanaError(400, f"resource_subtype: Invalid value: {data['resource_subtype']}")
        if data["resource_subtype"] == "milestone":
            t.kind[i] = MILESTONE
        elif t.kind[i] == MILESTONE:
            t.kind[i] = TASK
        p.touch(i)
        changed.append(("resource_subtype", data["resource_subtype"]))
    for gid, value in (data.get("custom_fields") or {}).items():
        state.set_field_value(i, str(gid), value)
        p.touch(i)
        changed.append(("custom_fields", {"gid": gid}))
    for field_name, value in changed:
        state.record_change(i, field_name, value)


def create_task(state: AsanaState, data: dict[str, Any], parent: int = -1) -> int:
    """POST /tasks (or /tasks/{gid}/subtasks): a new task in a project, or a subtask outside any project."""
    p, t = state.p, state.p.tasks
    if parent < 0 and data.get("parent"):
        parent = state.task(str(data["parent"]), "parent")
    projects = [state.project(str(g), "projects") for g in data.get("projects") or []]
    if not projects and parent < 0:
        if not data.get("workspace"):
            raise AsanaError(400, "workspace: Missing input")
        raise AsanaError(400, "projects: A task must be created in a project or under a parent")
    project = projects[0] if projects else int(t.project[parent])
    kind = SUBTASK if not projects else (MILESTONE if data.get("resource_subtype") == "milestone" else 0)
    due_at = str(data["due_at"])[:10] if data.get("due_at") else None
    due = parse_day(data.get("due_on") or due_at, "due_on")
    start = parse_day(data.get("start_on"), "start_on")
    assignee = -1 if data.get("assignee") is None else max(state.person(data["assignee"]), -1)
    i = p.add_task(ASANA, project, str(data.get("name") or ""), parent=parent, kind=kind, assignee=assignee,
                   due=due, start=start)
    if data.get("notes"):
        state.notes[i] = str(data["notes"])
    if data.get("completed"):
        p.set_status(i, DONE)
    for gid, value in (data.get("custom_fields") or {}).items():
        state.set_field_value(i, str(gid), value)
    return i


def build_routes(state: AsanaState) -> list[Route]:
    """Every Asana endpoint the emulator serves, under /api/1.0."""
    p = state.p

    @asana_route
    async def get_me(request: Request) -> Response:
        return one(user_record(state, -1), request)

    @asana_route
    async def get_user(request: Request) -> Response:
        return one(user_record(state, state.person(request.path_params["gid"])), request)

    @asana_route
    async def get_workspaces(request: Request) -> Response:
        return listing(state, request, [workspace_record()])

    @asana_route
    async def get_workspace(request: Request) -> Response:
        if request.path_params["gid"] != ids.ASANA_WORKSPACE_GID:
            raise AsanaError(404, f"workspace: Unknown object: {request.path_params['gid']}")
        return one(workspace_record(), request)

    def workspace_projects(workspace: str | None, request: Request) -> Response:
        if workspace is None:
            raise AsanaError(400, "workspace: Missing input")
        if workspace != ids.ASANA_WORKSPACE_GID:
            raise AsanaError(404, f"workspace: Unknown object: {workspace}")
        return listing(state, request, [project_record(state, k) for k in sorted(state.projects)])

    @asana_route
    async def get_projects(request: Request) -> Response:
        return workspace_projects(request.query_params.get("workspace"), request)

    @asana_route
    async def get_workspace_projects(request: Request) -> Response:
        return workspace_projects(request.path_params["gid"], request)

    @asana_route
    async def get_project(request: Request) -> Response:
        return one(project_record(state, state.project(request.path_params["gid"])), request)

    @asana_route
    async def get_sections(request: Request) -> Response:
        project = state.project(request.path_params["gid"])
        return listing(state, request, [section_record(state, project, k) for k in range(len(SECTION_NAMES))])

    @asana_route
    async def get_section(request: Request) -> Response:
        gid = request.path_params["gid"]
        section_tasks(state, gid)
        project, k = divmod(int(gid) - SECTION_BASE, 8)
        return one(section_record(state, project, k), request)

    @asana_route
    async def get_section_tasks(request: Request) -> Response:
        indexes = section_tasks(state, request.path_params["gid"])
        return task_listing(state, request, filter_tasks(state, request, indexes))

    @asana_route
    async def get_field_settings(request: Request) -> Response:
        project = state.project(request.path_params["gid"])
        return listing(state, request, [setting_record(state, project, s) for s in state.settings[project]])

    @asana_route
    async def add_field_setting(request: Request) -> Response:
        project = state.project(request.path_params["gid"])
        data = await read_data(request)
        spec = require(data, "custom_field")
        if isinstance(spec, dict):
            definition = new_custom_field(state, spec)
        else:
            definition = state.custom_field(str(spec))
        settings = state.settings[project]
        existing = next((s for s in settings if s.field_gid == definition.gid), None)
        if existing is None:
            existing = FieldSetting(str(SETTING_BASE + project * 64 + len(settings)), definition.gid,
                                    bool(data.get("is_important", False)))
            settings.append(existing)
        return one(setting_record(state, project, existing), request)

    @asana_route
    async def get_workspace_fields(request: Request) -> Response:
        if request.path_params["gid"] != ids.ASANA_WORKSPACE_GID:
            raise AsanaError(404, f"workspace: Unknown object: {request.path_params['gid']}")
        return listing(state, request, [f.render() for f in state.fields.values()])

    @asana_route
    async def post_custom_field(request: Request) -> Response:
        data = await read_data(request)
        if require(data, "workspace") != ids.ASANA_WORKSPACE_GID:
            raise AsanaError(404, f"workspace: Unknown object: {data['workspace']}")
        definition = new_custom_field(state, data)
        return one(definition.render(), request, 201, f"/custom_fields/{definition.gid}")

    @asana_route
    async def get_custom_field(request: Request) -> Response:
        return one(state.custom_field(request.path_params["gid"]).render(), request)

    @asana_route
    async def post_enum_option(request: Request) -> Response:
        definition = state.custom_field(request.path_params["gid"])
        if definition.subtype != "enum":
            raise AsanaError(400, "custom_field: Only enum custom fields have enum options")
        data = await read_data(request)
        option = new_enum_option(state, data)
        definition.enum_options.append(option)
        return one(option.render(), request, 201, f"/enum_options/{option.gid}")

    @asana_route
    async def get_tasks(request: Request) -> Response:
        query = request.query_params
        if query.get("project"):
            indexes = state.project_tasks(state.project(query["project"]))
        elif query.get("section"):
            indexes = section_tasks(state, query["section"])
        else:
            raise AsanaError(400, TASK_FILTER_MESSAGE)
        return task_listing(state, request, filter_tasks(state, request, indexes))

    @asana_route
    async def get_project_tasks(request: Request) -> Response:
        indexes = state.project_tasks(state.project(request.path_params["gid"]))
        return task_listing(state, request, filter_tasks(state, request, indexes))

    @asana_route
    async def post_task(request: Request) -> Response:
        i = create_task(state, await read_data(request))
        return one_task(state, request, i, 201)

    @asana_route
    async def get_task(request: Request) -> Response:
        return one_task(state, request, state.task(request.path_params["gid"]))

    @asana_route
    async def put_task(request: Request) -> Response:
        i = state.task(request.path_params["gid"])
        apply_task_changes(state, i, await read_data(request))
        return one_task(state, request, i)

    @asana_route
    async def delete_task(request: Request) -> Response:
        i = state.task(request.path_params["gid"])
        p.delete(i)
        state.record_change(i, "deleted", None)
        return JSONBody({"data": {}})

    @asana_route
    async def get_subtasks(request: Request) -> Response:
        return task_listing(state, request, state.children(state.task(request.path_params["gid"])))

    @asana_route
    async def post_subtask(request: Request) -> Response:
        parent = state.task(request.path_params["gid"])
        i = create_task(state, await read_data(request), parent=parent)
        return one_task(state, request, i, 201)

    @asana_route
    async def get_dependencies(request: Request) -> Response:
        i = state.task(request.path_params["gid"])
        return task_listing(state, request, np.array(state.dependencies(i), dtype=np.int64))

    @asana_route
    async def get_dependents(request: Request) -> Response:
        i = state.task(request.path_params["gid"])
        return task_listing(state, request, np.array(state.dependents(i), dtype=np.int64))

    def change_links(key: str, add: bool, outgoing: bool) -> Handler:
        @asana_route
        async def handler(request: Request) -> Response:
            i = state.task(request.path_params["gid"])
            data = await read_data(request)
            others = [state.task(str(g), key) for g in require(data, key)]
            for k in others:
                link = (i, k) if outgoing else (k, i)
                if add:
                    state.removed_links.discard(link)
                    state.added_links.add(link)
                else:
                    state.added_links.discard(link)
                    state.removed_links.add(link)
            if add and len(state.dependencies(i)) + len(state.dependents(i)) > MAX_DEPENDENCIES:
                raise AsanaError(400, TOO_MANY_LINKS_MESSAGE)
            return JSONBody({"data": {}})

        return handler

    @asana_route
    async def get_stories(request: Request) -> Response:
        return listing(state, request, stories_of(state, state.task(request.path_params["gid"])))

    @asana_route
    async def post_story(request: Request) -> Response:
        i = state.task(request.path_params["gid"])
        data = await read_data(request)
        text = data.get("text") or _strip_body(data.get("html_text"))
        if not text:
            raise AsanaError(400, "text: Missing input")
        comment = Comment(str(COMMENT_BASE + state.next_comment), str(text), p.now())
        state.next_comment += 1
        state.comments.setdefault(i, []).append(comment)
        p.touch(i)
        state.record_change(i, "stories", comment.gid)
        return one(comment_story(state, i, comment), request, 201, f"/stories/{comment.gid}")

    @asana_route
    async def post_status_update(request: Request) -> Response:
        data = await read_data(request)
        project = state.project(str(require(data, "parent")), "parent")
        status_type = require(data, "status_type")
        if status_type not in STATUS_TYPES:
            raise AsanaError(400, f"status_type: Invalid value for a project: {status_type}")
        text = require(data, "text")
        update = StatusUpdate(str(STATUS_UPDATE_BASE + len(state.status_updates) + 1), project, status_type,
                              str(data.get("title") or ""), str(text), p.now())
        state.status_updates.append(update)
        return one(status_update_record(state, update), request, 201, f"/status_updates/{update.gid}")

    @asana_route
    async def get_status_updates(request: Request) -> Response:
        project = state.project(str(require(dict(request.query_params), "parent")), "parent")
        newest_first = reversed(state.status_updates)
        updates = [status_update_record(state, u) for u in newest_first if u.parent == project]
        return listing(state, request, updates)

    @asana_route
    async def get_events(request: Request) -> Response:
        return events_response(state, request)

    @asana_route
    async def unknown_route(request: Request) -> Response:
        raise AsanaError(404, "Not Found")

    gid = "{gid}"
    return [
        Route(f"{API}/users/me", get_me, methods=["GET"]),
        Route(f"{API}/users/{gid}", get_user, methods=["GET"]),
        Route(f"{API}/workspaces", get_workspaces, methods=["GET"]),
        Route(f"{API}/workspaces/{gid}", get_workspace, methods=["GET"]),
        Route(f"{API}/workspaces/{gid}/projects", get_workspace_projects, methods=["GET"]),
        Route(f"{API}/workspaces/{gid}/custom_fields", get_workspace_fields, methods=["GET"]),
        Route(f"{API}/projects", get_projects, methods=["GET"]),
        Route(f"{API}/projects/{gid}", get_project, methods=["GET"]),
        Route(f"{API}/projects/{gid}/sections", get_sections, methods=["GET"]),
        Route(f"{API}/projects/{gid}/tasks", get_project_tasks, methods=["GET"]),
        Route(f"{API}/projects/{gid}/custom_field_settings", get_field_settings, methods=["GET"]),
        Route(f"{API}/projects/{gid}/addCustomFieldSetting", add_field_setting, methods=["POST"]),
        Route(f"{API}/sections/{gid}", get_section, methods=["GET"]),
        Route(f"{API}/sections/{gid}/tasks", get_section_tasks, methods=["GET"]),
        Route(f"{API}/custom_fields", post_custom_field, methods=["POST"]),
        Route(f"{API}/custom_fields/{gid}", get_custom_field, methods=["GET"]),
        Route(f"{API}/custom_fields/{gid}/enum_options", post_enum_option, methods=["POST"]),
        Route(f"{API}/tasks", get_tasks, methods=["GET"]),
        Route(f"{API}/tasks", post_task, methods=["POST"]),
        Route(f"{API}/tasks/{gid}", get_task, methods=["GET"]),
        Route(f"{API}/tasks/{gid}", put_task, methods=["PUT"]),
        Route(f"{API}/tasks/{gid}", delete_task, methods=["DELETE"]),
        Route(f"{API}/tasks/{gid}/subtasks", get_subtasks, methods=["GET"]),
        Route(f"{API}/tasks/{gid}/subtasks", post_subtask, methods=["POST"]),
        Route(f"{API}/tasks/{gid}/dependencies", get_dependencies, methods=["GET"]),
        Route(f"{API}/tasks/{gid}/dependents", get_dependents, methods=["GET"]),
        *(
            Route(f"{API}/tasks/{gid}/{action}", change_links(key, add, outgoing), methods=["POST"])
            for action, key, add, outgoing in (
                ("addDependencies", "dependencies", True, False),
                ("removeDependencies", "dependencies", False, False),
                ("addDependents", "dependents", True, True),
                ("removeDependents", "dependents", False, True),
            )
        ),
        Route(f"{API}/tasks/{gid}/stories", get_stories, methods=["GET"]),
        Route(f"{API}/tasks/{gid}/stories", post_story, methods=["POST"]),
        Route(f"{API}/status_updates", get_status_updates, methods=["GET"]),
        Route(f"{API}/status_updates", post_status_update, methods=["POST"]),
        Route(f"{API}/events", get_events, methods=["GET"]),
        Route("/{path:path}", unknown_route, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]


def workspace_record() -> dict[str, Any]:
    return {"gid": ids.ASANA_WORKSPACE_GID, "resource_type": "workspace", "name": WORKSPACE_NAME,
            "email_domains": ["acme.example"], "is_organization": True}


def _strip_body(html: Any) -> str:
    text = str(html or "")
    return text.removeprefix("<body>").removesuffix("</body>")


def new_enum_option(state: AsanaState, data: dict[str, Any]) -> EnumOption:
    name = require(data, "name")
    gid = str(ENUM_OPTION_BASE + state.next_option)
    option = EnumOption(gid, str(name), str(data.get("color") or "none"),
                        bool(data.get("enabled", True)))
    state.next_option += 1
    return option


def new_custom_field(state: AsanaState, data: dict[str, Any]) -> CustomField:
    """POST /custom_fields: a number, text, enum (with its options) or date field in the workspace."""
    subtype = require(data, "resource_subtype") if "type" not in data else data["type"]
    if subtype not in CUSTOM_FIELD_TYPES:
        served = ", ".join(CUSTOM_FIELD_TYPES)
        raise AsanaError(400, f"resource_subtype: Invalid value (the sandbox serves {served})")
    name = str(require(data, "name"))
    if any(f.name.lower() == name.lower() for f in state.fields.values()):
        raise AsanaError(400, f"name: Custom field with name {name} already exists in this workspace")
    gid = str(CUSTOM_FIELD_BASE + state.next_field)
    state.next_field += 1
    precision = int(data.get("precision", 0) or 0)
    if not 0 <= precision <= 6:
        raise AsanaError(400, "precision: Must be between 0 and 6")
    definition = CustomField(gid, name, subtype, precision, str(data.get("description") or ""))
    if subtype == "enum":
        definition.enum_options = [new_enum_option(state, o) for o in data.get("enum_options") or []]
    state.fields[gid] = definition
    return definition


def events_response(state: AsanaState, request: Request) -> Response:
    """GET /events: 412 with a fresh token unless a valid one came; else the changes since it, 100 at most."""
    query = request.query_params
    resource_gid = str(require(dict(query), "resource"))
    resource, indexes = event_resource(state, resource_gid)
    token = state.signer.read_sync(query.get("sync", "")) if query.get("sync") else None
    now = state.p.now()
    if token is None or token[0] != resource or now - token[1] > SYNC_TOKEN_LIFETIME_S:
        fresh = state.signer.sync(resource, now, -1)
        return JSONBody({"errors": [{"message": SYNC_MESSAGE}], "sync": fresh}, status_code=412)
    _, since, last = token
    t = state.p.tasks
    updated = t.updated[indexes]
    newer = (updated > since) | ((updated == since) & (indexes > last))
    changed, when = indexes[newer], updated[newer]
    order = np.lexsort((changed, when))
    chosen = changed[order[:MAX_EVENTS]]
    if len(chosen):
        next_token = state.signer.sync(resource, float(t.updated[chosen[-1]]), int(chosen[-1]))
    else:
        next_token = state.signer.sync(resource, since, last)
    events = [event for i in chosen for event in task_events(state, int(i), since, resource)]
    return JSONBody({"data": events, "sync": next_token, "has_more": bool(len(changed) > MAX_EVENTS)})


def event_resource(state: AsanaState, gid: str) -> tuple[int, np.ndarray]:
    """The tasks whose changes an events resource (a project or a task) reports."""
    if not gid.isdigit():
        raise AsanaError(400, f"resource: Not a Long: {gid}")
    number = int(gid)
    if number - ids.ASANA_PROJECT_BASE in state.projects:
        return number, state.project_tasks(number - ids.ASANA_PROJECT_BASE, include_hidden=True)
    i = ids.asana_index(gid)
    if i is not None and i < state.p.tasks.size and state.p.tasks.tool[i] == ASANA:
        return number, np.array([i], dtype=np.int64)
    raise AsanaError(404, f"resource: Unknown object: {gid}")


def event_record(state: AsanaState, i: int, since: float, resource: int) -> dict[str, Any]:
    """What happened to task i after `since`: deleted, added to the project, or changed ."""
    t = state.p.tasks
    at = float(t.updated[i])
    user = compact(user_record(state, -1))
    # Asana sends `parent: null` here, but its spec gives no null parent, so an unset parent is left out.
    event: dict[str, Any] = {"user": user, "resource": task_compact(state, i), "type": "task",
                             "created_at": iso(at)}
    if t.deleted[i]:
        event["action"] = "deleted"
        return event
    if float(t.created[i]) > since and t.kind[i] != SUBTASK:
        event["action"] = "added"
        event["parent"] = project_compact(state, int(t.project[i]))
        return event
    event["action"] = "changed"
    event["change"] = latest_change(state, i, at)
    return event


def task_events(state: AsanaState, i: int, since: float, resource: int) -> list[dict[str, Any]]:
    """The events of task i after `since`: one per change a client made to a live, not newly added task (as Asana
    sends one per change, each with its field), else the one event `event_record` derives."""
    first = event_record(state, i, since, resource)
    logged = [change for change in state.changes.get(i, ()) if change[0] > since]
    if first["action"] != "changed" or not logged:
        return [first]
    # Due-date changes made on the portfolio itself (not through the API) are changes too.
    seen = {at for at, field_name, _ in logged if field_name == "due_on"}
    logged += [(due.at, "due_on", day_text(due.new_day)) for due in state.p.history_extra.get(i, ())
               if due.at > since and due.at not in seen]
    if float(state.p.tasks.updated[i]) > max(at for at, _, _ in logged):
        logged.append((float(state.p.tasks.updated[i]), "modified_at", iso(float(state.p.tasks.updated[i]))))
    return [{**first, "created_at": iso(at), "change": {"field": field_name, "action": "changed",
                                                         "new_value": value}}
            for at, field_name, value in sorted(logged, key=lambda change: change[0])]


def latest_change(state: AsanaState, i: int, at: float) -> dict[str, Any]:
    """The change an event reports: what a client changed last, or the portfolio's own due-date change."""
    logged = state.last_change.get(i)
    due = state.p.history_extra.get(i)
    if due and (logged is None or due[-1].at > logged[0]):
        return {"field": "due_on", "action": "changed", "new_value": day_text(due[-1].new_day)}
    if logged is not None:
        _, field_name, value = logged
        return {"field": field_name, "action": "changed", "new_value": value}
    return {"field": "modified_at", "action": "changed", "new_value": iso(at)}


class AsanaProfile(VendorProfile):
    """Asana's authentication (a personal access token as a Bearer credential) and error shapes."""

    name = "asana"

    def __init__(self) -> None:
        self.token = CREDENTIALS["asana"]["token"]

    def principal(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        return credential if scheme.lower() == "bearer" and credential == self.token else None

    def unauthorized(self, request: Request) -> Response:
        return JSONBody({"errors": [{"message": "Not Authorized"}]}, status_code=401)

    def too_many_requests(self, retry_after_s: float) -> Response:
        return JSONBody({"errors": [{"message": RATE_LIMIT_MESSAGE}]}, status_code=429,
                        headers={"Retry-After": retry_after_seconds(retry_after_s)})

    def error(self, status: int, message: str) -> Response:
        if status >= 500:
            body = {"errors": [{"message": "Server Error", "phrase": "6 sad squid snuggle softly"}]}
        else:
            body = {"errors": [{"message": message}]}
        return JSONBody(body, status_code=status)

    def corrupt_record(self, document: Any) -> bool:
        """Break the first task's `due_on` in a page or a single task (it gets a value that is not a date)."""
        data = document.get("data") if isinstance(document, dict) else None
        record = data[0] if isinstance(data, list) and data else data
        if not isinstance(record, dict):
            return False
        record["due_on"] = "next tuesday-ish"
        return True


def create(portfolio: Portfolio, settings: EmulatorSettings | None = None) -> Emulator:
    """The Asana emulator over a portfolio; its state is reachable as `emulator.state` for tests."""
    state = AsanaState(portfolio)
    emulator = Emulator(AsanaProfile(), build_routes(state), settings)
    emulator.state = state  # type: ignore[attr-defined]
    return emulator
