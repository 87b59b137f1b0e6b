"""Microsoft Graph v1.0 emulator: Planner plans, buckets and tasks, users, and the drive holding the MS Project files.

Served under `/v1.0` in Graph's own shapes (../shared/specs/graph-planner-v1.0.yaml, ../shared/VENDORS.md section
4). Planner tasks are the portfolio's PLANNER tasks, one plan per PLANNER project, four buckets per plan. Every
entity carries Planner's weak `@odata.etag`; a task's etag and its details' etag are separate and each changes
with every change of its resource. PATCH and DELETE need `If-Match` equal to the current etag (exact match: the
emulator never accepts an older etag, which real Planner sometimes does when the change does not conflict).
Plan tasks come in fixed pages of `PAGE_SIZE` (Graph ignores `$top`), chained by an opaque absolute
`@odata.nextLink`.

The drive holds one MSPDI file per MSPROJECT project, rendered by `sandbox.mspdi` from the current portfolio, and
whatever clients upload. `/content` answers 302 to a pre-authenticated `/_download/<token>` URL on the same server.

Authentication: the static bearer token `CREDENTIALS["graph"]["token"]`, or a token issued by the emulated
Microsoft identity platform at `POST /{tenant}/oauth2/v2.0/token` (client credentials), so azure-identity's
ClientSecretCredential can use the sandbox as its authority host.

Rate limit: Microsoft publishes no Planner budget; the sandbox defaults to `DEFAULT_RATE_LIMIT` (600 requests per
10 seconds per token), answering 429 with `Retry-After` in whole seconds and Graph's `TooManyRequests` body.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, quote

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from sandbox import ids
from sandbox.core import (
    CREDENTIALS,
    Emulator,
    EmulatorSettings,
    JSONBody,
    RateLimit,
    VendorProfile,
    _corrupt_first_date,
    retry_after_seconds,
)
from sandbox.generator import (
    DONE,
    IN_PROGRESS,
    MSPROJECT,
    NO_DAY,
    PLANNER,
    TODO,
    Portfolio,
    day_number,
    mix,
    mix_array,
)
from sandbox.mspdi import item_version, project_task_indexes, render_project

API = "/v1.0"
# Planner serves plan tasks in pages of about 400 whatever `$top` says; tests may lower this to page small plans.
PAGE_SIZE = 400
DEFAULT_RATE_LIMIT = RateLimit(limit=600, window_s=10.0)
BUCKET_NAMES = ("Backlog", "In progress", "Review", "Done")
BACKLOG, BUCKET_IN_PROGRESS, REVIEW, BUCKET_DONE = range(4)
PLANS_PER_GROUP = 4
TOKEN_LIFETIME_S = 3599
DOWNLOAD_URL_LIFETIME_S = 3600
MAX_UPLOAD_BYTES = 250 * 1024 * 1024
ROOT_ITEM = 1_000_000_000  # driveItem numbers from here on are the root folder and uploaded items
CATEGORY_COUNT = 25
TASK_ID_CACHE = 1_000_000
PLANNER_APP_ID = "09abbdfd-ed23-44ee-a2d9-a627aa1c90f3"

MIME_TYPES = {
    ".xml": "application/xml",
    ".mpp": "application/vnd.ms-project",
    ".html": "text/html",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".json": "application/json",
    ".csv": "text/csv",
    ".txt": "text/plain",
}
TASK_FIELDS_WRITABLE = frozenset(
    {
        "title",
        "bucketId",
        "percentComplete",
        "priority",
        "startDateTime",
        "dueDateTime",
        "assignments",
        "appliedCategories",
        "orderHint",
        "assigneePriority",
        "conversationThreadId",
        "previewType",
    }
)
DETAILS_FIELDS_WRITABLE = frozenset({"description", "checklist", "references", "previewType"})
PREVIEW_TYPES = frozenset({"automatic", "noPreview", "checklist", "description", "reference"})


def default_rate_limit() -> RateLimit:
    """Graph's budget in the sandbox: 600 requests per 10 seconds per token (Planner publishes no number)."""
    return RateLimit(limit=DEFAULT_RATE_LIMIT.limit, window_s=DEFAULT_RATE_LIMIT.window_s)


def create(portfolio: Portfolio, settings: EmulatorSettings) -> Emulator:
    """The Graph emulator over `portfolio`."""
    api = GraphApi(portfolio)
    return Emulator(GraphProfile(api), api.routes(), settings)


# -- formats -------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=65_536)
def day_iso(day: int) -> str | None:
    """A stored day as Planner's UTC date-time (`2023-10-30T00:00:00Z`), None for no date."""
    if day == NO_DAY:
        return None
    return np.datetime_as_string(np.datetime64(int(day), "D")) + "T00:00:00Z"


def timestamp7(seconds: float) -> str:
    """A UTC timestamp with the 7 fractional digits Planner writes (`2024-01-13T08:21:11.5507897Z`)."""
    whole = int(seconds)
    fraction = round((seconds - whole) * 10_000_000)
    if fraction >= 10_000_000:
        whole, fraction = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{fraction:07d}Z"


def timestamp_z(seconds: float) -> str:
    """A UTC timestamp to the second with `Z`, as OneDrive writes driveItem times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def parse_day(value: Any) -> int:
    """A client's date-time (ISO 8601, any offset, or null) as the UTC day it falls on; ValueError if malformed."""
    if value is None:
        return NO_DAY
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date-time")  # noqa: TRY004 - callers catch ValueError for any bad value
    text = value.strip()
    if "T" not in text:
        raise ValueError(f"{value!r} is not a date-time")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return day_number(moment.astimezone(UTC).date())


_ETAG_DIGITS = "@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_"


def planner_etag(label: str, version: int) -> str:
    """Planner's weak etag: base64 of `'1-<label> <version digits>'`, digits chosen so etags sort by version."""
    digits = []
    for _ in range(16):
        version, r = divmod(version, 32)
        digits.append(_ETAG_DIGITS[r])
    payload = f"'1-{label} {''.join(reversed(digits))}'"
    return f'W/"{base64.b64encode(payload.encode()).decode()}"'


# -- state -----------------------------------------------------------------------------------------------------------


@dataclass
class TaskDetails:
    """What a task's details resource holds once a client changed it (unchanged tasks derive theirs)."""

    description: str
    preview_type: str
    references: dict[str, dict[str, Any]]
    checklist: dict[str, dict[str, Any]]
    version: int


@dataclass
class DriveFile:
    """A driveItem: a generated MS Project plan (content None = rendered live), an upload, or a folder."""

    item_id: str
    name: str
    parent_id: str | None
    created: float
    modified: float
    content: bytes | None = None
    project: int | None = None
    folder: bool = False
    version: int = 1
    seen_version: str = ""


@dataclass
class GraphState:
    """Graph-only state, keyed by task index: what the portfolio columns do not hold."""

    bumps: dict[int, int] = field(default_factory=dict)
    details: dict[int, TaskDetails] = field(default_factory=dict)
    categories: dict[int, dict[str, bool]] = field(default_factory=dict)
    priority: dict[int, int] = field(default_factory=dict)
    order_hint: dict[int, str] = field(default_factory=dict)
    assignee_priority: dict[int, str] = field(default_factory=dict)
    conversation: dict[int, str] = field(default_factory=dict)
    preview_type: dict[int, str] = field(default_factory=dict)
    bucket: dict[int, int] = field(default_factory=dict)
    plan_details: dict[int, tuple[int, dict[str, str | None]]] = field(default_factory=dict)
    files: dict[str, DriveFile] = field(default_factory=dict)
    render_cache: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    issued_tokens: set[str] = field(default_factory=set)
    next_item: int = ROOT_ITEM + 1


class GraphError(Exception):
    """An error to answer in Graph's shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(
    status: int,
    code: str,
    message: str,
    extra_inner: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONBody:
    """Graph's error body: `{"error": {"code", "message", "innerError": {"date", "request-id", ...}}}`."""
    request_id = str(uuid.uuid4())
    inner = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "request-id": request_id,
        "client-request-id": request_id,
        **(extra_inner or {}),
    }
    return JSONBody(
        {"error": {"code": code, "message": message, "innerError": inner}},
        status_code=status,
        headers={"request-id": request_id, "client-request-id": request_id, **(headers or {})},
    )


_STATUS_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "accessDenied",
    404: "itemNotFound",
    405: "MethodNotAllowed",
    409: "conflict",
    412: "PreconditionFailed",
    429: "TooManyRequests",
    500: "generalException",
    502: "BadGateway",
    503: "serviceNotAvailable",
    504: "gatewayTimeout",
}


class GraphProfile(VendorProfile):
    """Graph's bearer-token authentication and error shapes."""

    name = "graph"

    def __init__(self, api: GraphApi) -> None:
        self.api = api
        self.static_token = CREDENTIALS["graph"]["token"]

    def principal(self, request: Request) -> str | None:
        path = request.url.path
        if path.startswith("/_download/"):
            return "download"
        if path.endswith("/oauth2/v2.0/token") or "/.well-known/openid-configuration" in path:
            return "identity-platform"
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        if token == self.static_token or token in self.api.state.issued_tokens:
            return token
        return None

    def unauthorized(self, request: Request) -> Response:
        empty = not request.headers.get("authorization", "").partition(" ")[2]
        message = "Access token is empty." if empty else "Access token validation failure. Invalid audience."
        challenge = (
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
            'client_id="00000003-0000-0000-c000-000000000000"'
        )
        return error_response(
            401, "InvalidAuthenticationToken", message, headers={"WWW-Authenticate": challenge}
        )

    def too_many_requests(self, retry_after_s: float) -> Response:
        return error_response(
            429,
            "TooManyRequests",
            "Please retry again later.",
            extra_inner={"code": "429", "message": "Please retry after", "status": "429"},
            headers={"Retry-After": retry_after_seconds(retry_after_s)},
        )

    def error(self, status: int, message: str) -> Response:
        return error_response(status, _STATUS_CODES.get(status, "generalException"), message)

    def corrupt_record(self, document: Any) -> bool:
        """Break one task's `dueDateTime` (what a connector must survive); other documents as the framework does."""
        tasks = document.get("value") if isinstance(document, dict) else None
        candidates = tasks if isinstance(tasks, list) else [document]
        for record in candidates:
            if isinstance(record, dict) and "dueDateTime" in record:
                record["dueDateTime"] = "2023-02-30T25:61:00Z"
                return True
        return _corrupt_first_date(document)


# -- the API ---------------------------------------------------------------------------------------------------------


Handler = Callable[[Request], Any]


class GraphApi:
    """Route handlers over the portfolio and the Graph-only state."""

    def __init__(self, portfolio: Portfolio) -> None:
        self.p = portfolio
        self.state = GraphState()
        self.plans = {pr.index: pr for pr in portfolio.projects_of(PLANNER)}
        self._plan_ids = {n: ids.graph_id(portfolio, "plan", n) for n in self.plans}
        self._plan_rank = {n: rank for rank, n in enumerate(sorted(self.plans))}
        self._bucket_ids: dict[int, str] = {}
        self._task_ids: dict[int, str] = {}
        self.files_projects = [pr.index for pr in portfolio.projects_of(MSPROJECT)]
        self.user_ids = [ids.graph_user_id(portfolio, person.index) for person in portfolio.people]
        self.person_by_user = {uid: k for k, uid in enumerate(self.user_ids)}
        self.person_by_mail = {person.email.lower(): person.index for person in portfolio.people}
        self.drive_id = ids.graph_drive_id(portfolio)
        self.root_id = ids.graph_item_id(portfolio, ROOT_ITEM)
        self._seed_drive()

    def routes(self) -> list[Route]:
        """The Starlette routes, each wrapped to answer `GraphError` in Graph's shape."""
        table: list[tuple[str, Handler, list[str]]] = [
            ("/groups/{group}/planner/plans", self.group_plans, ["GET"]),
            ("/planner/plans", self.plans_unfiltered, ["GET"]),
            ("/planner/plans/{plan}", self.plan, ["GET"]),
            ("/planner/plans/{plan}/tasks", self.plan_tasks, ["GET"]),
            ("/planner/plans/{plan}/buckets", self.plan_buckets, ["GET"]),
            ("/planner/plans/{plan}/details", self.plan_details, ["GET", "PATCH"]),
            ("/planner/buckets/{bucket}", self.bucket, ["GET"]),
            ("/planner/buckets/{bucket}/tasks", self.bucket_tasks, ["GET"]),
            ("/planner/tasks", self.create_task, ["POST"]),
            ("/planner/tasks/{task}", self.task, ["GET", "PATCH", "DELETE"]),
            ("/planner/tasks/{task}/details", self.task_details, ["GET", "PATCH"]),
            ("/users/{user}", self.user, ["GET"]),
            ("/drives/{drive}", self.drive, ["GET"]),
            ("/drives/{drive}/{rest:path}", self.drive_path, ["GET", "PUT", "POST"]),
        ]
        routes = [Route(API + path, _guard(handler), methods=methods) for path, handler, methods in table]
        routes += [
            Route("/_download/{token}", _guard(self.download), methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/token", self.issue_token, methods=["POST"]),
            Route(
                "/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration, methods=["GET"]
            ),
        ]
        return routes

    # -- ids ---------------------------------------------------------------------------------------------------------
    def plan_index(self, plan_id: str) -> int:
        n = ids.graph_index(plan_id)
        if n is None or n not in self.plans or self.plan_id(n) != plan_id:
            raise GraphError(404, "NotFound", "The requested item is not found.")
        return n

    def task_index(self, task_id: str) -> int:
        i = ids.graph_index(task_id)
        t = self.p.tasks
        if i is None or i >= t.size or t.tool[i] != PLANNER or t.deleted[i] or self.task_id(i) != task_id:
            raise GraphError(404, "NotFound", "The requested item is not found.")
        return i

    def bucket_of_id(self, bucket_id: str) -> tuple[int, int]:
        n = ids.graph_index(bucket_id)
        if n is None or n // 4 not in self.plans or self.bucket_id(n // 4, n % 4) != bucket_id:
            raise GraphError(404, "NotFound", "The requested item is not found.")
        return n // 4, n % 4

    def bucket_id(self, plan: int, bucket: int) -> str:
        key = plan * 4 + bucket
        found = self._bucket_ids.get(key)
        if found is None:
            found = self._bucket_ids[key] = ids.graph_id(self.p, "bucket", key)
        return found

    def plan_id(self, plan: int) -> str:
        return self._plan_ids[plan]

    def task_id(self, i: int) -> str:
        """The task's Graph id, remembered: deriving one costs more than rendering the rest of the task."""
        found = self._task_ids.get(i)
        if found is None:
            if len(self._task_ids) >= TASK_ID_CACHE:
                self._task_ids.clear()
            found = self._task_ids[i] = ids.graph_id(self.p, "task", i)
        return found

    def group_id(self, plan: int) -> str:
        k = self._plan_rank[plan] // PLANS_PER_GROUP
        return str(uuid.UUID(int=(mix(self.p.seed, 47, k) << 64) | mix(self.p.seed, 53, k), version=4))

    # -- plans -------------------------------------------------------------------------------------------------------
    async def group_plans(self, request: Request) -> Response:
        group = request.path_params["group"]
        plans = [n for n in self.plans if self.group_id(n) == group]
        if not plans:
            raise GraphError(404, "NotFound", "The requested item is not found.")
        base = _base(request)
        return _ok(
            {
                "@odata.context": f"{base}{API}/$metadata#groups('{group}')/planner/plans",
                "value": [self.plan_json(n) for n in plans],
            }
        )

    async def plans_unfiltered(self, request: Request) -> Response:
        match = re.fullmatch(r"\s*owner\s+eq\s+'([^']+)'\s*", request.query_params.get("$filter", ""))
        if match is None:
            raise GraphError(400, "BadRequest", "This entity set must be queried with a filter.")
        plans = [n for n in self.plans if self.group_id(n) == match.group(1)]
        return _ok(
            {
                "@odata.context": f"{_base(request)}{API}/$metadata#planner/plans",
                "value": [self.plan_json(n) for n in plans],
            }
        )

    async def plan(self, request: Request) -> Response:
        n = self.plan_index(request.path_params["plan"])
        return _ok(
            {"@odata.context": f"{_base(request)}{API}/$metadata#planner/plans/$entity", **self.plan_json(n)}
        )

    def plan_json(self, n: int) -> dict[str, Any]:
        pr = self.plans[n]
        created = (
            float(self.p.tasks.created[pr.first_task]) - 86_400 if pr.task_count else self.p.clock_anchor
        )
        group = self.group_id(n)
        owner = self.user_ids[mix(self.p.seed, 59, n) % len(self.user_ids)]
        return {
            "@odata.etag": planner_etag("Plan", int(created * 1e6)),
            "id": self.plan_id(n),
            "title": pr.name,
            "owner": group,
            "createdDateTime": timestamp7(created),
            "createdBy": {
                "user": {"displayName": None, "id": owner},
                "application": {"displayName": None, "id": PLANNER_APP_ID},
            },
            "container": {
                "containerId": group,
                "type": "group",
                "url": f"https://graph.microsoft.com/v1.0/groups/{group}",
            },
        }

    async def plan_buckets(self, request: Request) -> Response:
        n = self.plan_index(request.path_params["plan"])
        plan_id = request.path_params["plan"]
        return _ok(
            {
                "@odata.context": f"{_base(request)}{API}/$metadata#planner/plans('{plan_id}')/buckets",
                "value": [self.bucket_json(n, k) for k in range(len(BUCKET_NAMES))],
            }
        )

    async def bucket(self, request: Request) -> Response:
        plan, k = self.bucket_of_id(request.path_params["bucket"])
        return _ok(
            {
                "@odata.context": f"{_base(request)}{API}/$metadata#planner/buckets/$entity",
                **self.bucket_json(plan, k),
            }
        )

    def bucket_json(self, plan: int, k: int) -> dict[str, Any]:
        return {
            "@odata.etag": planner_etag("Bucket", mix(self.p.seed, 61, plan, k) >> 20),
            "id": self.bucket_id(plan, k),
            "name": BUCKET_NAMES[k],
            "planId": self.plan_id(plan),
            "orderHint": f"8585{(len(BUCKET_NAMES) - k) * 10**10:015d}",
        }

    async def plan_details(self, request: Request) -> Response:
        n = self.plan_index(request.path_params["plan"])
        if request.method == "PATCH":
            body = await _json_body(request)
            self._require_etag(request, self.plan_details_json(n)["@odata.etag"])
            self._patch_plan_details(n, body)
            if not _wants_representation(request):
                return Response(status_code=204)
        return _ok(
            {
                "@odata.context": f"{_base(request)}{API}/$metadata#planner/plans('{request.path_params['plan']}')/details/$entity",
                **self.plan_details_json(n),
            }
        )

    def plan_details_json(self, n: int) -> dict[str, Any]:
        version, categories = self.state.plan_details.get(n, (1, _default_categories()))
        return {
            "@odata.etag": planner_etag("PlanDetails", version),
            "id": self.plan_id(n),
            "sharedWith": {},
            "categoryDescriptions": categories,
        }

    def _patch_plan_details(self, n: int, body: dict[str, Any]) -> None:
        version, categories = self.state.plan_details.get(n, (1, _default_categories()))
        categories = dict(categories)
        for key, value in body.items():
            if key.startswith("@odata."):
                continue
            if key == "sharedWith":
                continue
            if key != "categoryDescriptions" or not isinstance(value, dict):
                raise GraphError(400, "BadRequest", f"Invalid request. Property '{key}' cannot be updated.")
            for name, label in value.items():
                if name.startswith("@odata."):
                    continue
                if name not in categories or not (label is None or isinstance(label, str)):
                    raise GraphError(400, "BadRequest", f"Invalid value for category description '{name}'.")
                categories[name] = label
        self.state.plan_details[n] = (max(version + 1, int(self.p.now() * 1e6)), categories)

    # -- task listings -----------------------------------------------------------------------------------------------
    async def plan_tasks(self, request: Request) -> Response:
        plan_id = request.path_params["plan"]
        n = self.plan_index(plan_id)
        indexes = self.live_plan_tasks(n)
        context = f"{_base(request)}{API}/$metadata#planner/plans('{plan_id}')/tasks"
        return self._task_page(request, indexes, ("p", n), context)

    async def bucket_tasks(self, request: Request) -> Response:
        bucket_id = request.path_params["bucket"]
        plan, k = self.bucket_of_id(bucket_id)
        indexes = self.live_plan_tasks(plan)
        indexes = indexes[self.buckets_of(indexes) == k]
        context = f"{_base(request)}{API}/$metadata#planner/buckets('{bucket_id}')/tasks"
        return self._task_page(request, indexes, ("b", plan * 4 + k), context)

    def live_plan_tasks(self, plan: int) -> np.ndarray:
        """A plan's tasks that are not deleted, in creation order."""
        indexes = project_task_indexes(self.p, plan)
        return indexes[~self.p.tasks.deleted[indexes]]

    def _task_page(
        self, request: Request, indexes: np.ndarray, scope: tuple[str, int], context: str
    ) -> Response:
        token = request.query_params.get("$skiptoken")
        start = 0
        if token is not None:
            after = self._read_skiptoken(token, scope)
            start = int(np.searchsorted(indexes, after, side="right"))
        page = indexes[start : start + PAGE_SIZE]
        body: dict[str, Any] = {"@odata.context": context, "value": self.tasks_json(page)}
        if start + PAGE_SIZE < len(indexes):
            next_token = self._skiptoken(scope, int(page[-1]))
            body["@odata.nextLink"] = f"{_base(request)}{request.url.path}?$skiptoken={next_token}"
        return _ok(body)

    def _skiptoken(self, scope: tuple[str, int], after: int) -> str:
        check = mix(self.p.seed, ord(scope[0]), scope[1], after) & 0xFFFFFF
        raw = f"{scope[0]}{scope[1]}.{after}.{check}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _read_skiptoken(self, token: str, scope: tuple[str, int]) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            where, after, check = raw.split(".")
            if (
                where == f"{scope[0]}{scope[1]}"
                and int(check) == mix(self.p.seed, ord(scope[0]), scope[1], int(after)) & 0xFFFFFF
            ):
                return int(after)
        except (ValueError, UnicodeDecodeError):
            pass
        raise GraphError(400, "BadRequest", "The $skiptoken value is not valid.")

    def buckets_of(self, indexes: np.ndarray) -> np.ndarray:
        """Each task's bucket: by progress (some in-progress tasks in Review) unless a client moved it."""
        t = self.p.tasks
        status = t.status[indexes]
        review = (mix_array(indexes, self.p.seed, 50) % np.uint64(3)) == 0
        bucket = np.where(
            status == DONE,
            BUCKET_DONE,
            np.where(status == IN_PROGRESS, np.where(review, REVIEW, BUCKET_IN_PROGRESS), BACKLOG),
        )
        if self.state.bucket:
            for k, i in enumerate(indexes.tolist()):
                moved = self.state.bucket.get(i)
                if moved is not None:
                    bucket[k] = moved
        return bucket

    # -- task JSON ---------------------------------------------------------------------------------------------------
    def tasks_json(self, indexes: np.ndarray) -> list[dict[str, Any]]:
        """plannerTask records for the given tasks, built straight from the columns."""
        if not len(indexes):
            return []
        t = self.p.tasks
        buckets = self.buckets_of(indexes)
        columns = zip(
            indexes.tolist(),
            buckets.tolist(),
            t.project[indexes].tolist(),
            t.created[indexes].tolist(),
            t.completed[indexes].tolist(),
            t.start[indexes].tolist(),
            t.due[indexes].tolist(),
            t.percent[indexes].tolist(),
            t.assignee[indexes].tolist(),
            t.updated[indexes].tolist(),
            t.seq[indexes].tolist(),
        )
        return [self._task_record(*row) for row in columns]

    def task_json(self, i: int) -> dict[str, Any]:
        return self.tasks_json(np.array([i], dtype=np.int64))[0]

    def _task_record(
        self,
        i: int,
        bucket: int,
        plan: int,
        created: float,
        completed: float,
        start: int,
        due: int,
        percent: int,
        assignee: int,
        updated: float,
        seq: int,
    ) -> dict[str, Any]:
        p, state = self.p, self.state
        h = mix(p.seed, i, 70)
        creator = self.user_ids[(assignee if assignee >= 0 else h) % len(self.user_ids)]
        has_description, references, checklist, active = self.details_counts(i, h)
        assignments = {}
        if assignee >= 0:
            assignments[self.user_ids[assignee]] = {
                "@odata.type": "#microsoft.graph.plannerAssignment",
                "assignedDateTime": timestamp7(created + 1.5),
                "orderHint": "8585" + f"{h % 10**15:015d}",
                "assignedBy": {"user": {"displayName": None, "id": creator}},
            }
        record = {
            "@odata.etag": planner_etag("Task", self.task_version(i, updated)),
            "planId": self.plan_id(plan),
            "bucketId": self.bucket_id(plan, bucket),
            "title": p.title(i),
            "orderHint": state.order_hint.get(i, f"8585{seq * 100_000:015d}"),
            "assigneePriority": state.assignee_priority.get(i, ""),
            "percentComplete": percent,
            "startDateTime": day_iso(start),
            "createdDateTime": timestamp7(created),
            "dueDateTime": day_iso(due),
            "hasDescription": has_description,
            "previewType": state.preview_type.get(i, "automatic"),
            "completedDateTime": timestamp7(completed) if completed else None,
            "referenceCount": references,
            "checklistItemCount": checklist,
            "activeChecklistItemCount": active,
            "conversationThreadId": state.conversation.get(i),
            "priority": state.priority.get(i, (1, 3, 5, 5, 5, 9)[h % 6]),
            "id": self.task_id(i),
            "createdBy": {
                "user": {"displayName": None, "id": creator},
                "application": {"displayName": None, "id": PLANNER_APP_ID},
            },
            "appliedCategories": state.categories.get(i) or _default_applied_categories(h),
            "assignments": assignments,
        }
        if completed:
            record["completedBy"] = {"user": {"displayName": None, "id": creator}}
        return record

    def task_version(self, i: int, updated: float) -> int:
        """A number that grows with every change of the task: its `updated` time, plus a counter of our writes."""
        return (int(updated * 1e6) << 8) | (self.state.bumps.get(i, 0) & 0xFF)

    def details_counts(self, i: int, h: int) -> tuple[bool, int, int, int]:
        """(hasDescription, referenceCount, checklistItemCount, activeChecklistItemCount) without building details."""
        stored = self.state.details.get(i)
        if stored is not None:
            active = sum(1 for item in stored.checklist.values() if not item.get("isChecked"))
            return bool(stored.description), len(stored.references), len(stored.checklist), active
        count = _default_checklist_size(h)
        checked = count if self.p.tasks.status[i] == DONE else (h >> 16) % (count + 1)
        return _default_has_description(h), 0, count, count - checked

    # -- one task ----------------------------------------------------------------------------------------------------
    async def task(self, request: Request) -> Response:
        i = self.task_index(request.path_params["task"])
        context = f"{_base(request)}{API}/$metadata#planner/tasks/$entity"
        if request.method == "GET":
            return _ok({"@odata.context": context, **self.task_json(i)})
        body = await _json_body(request)
        self._require_etag(request, self.task_json(i)["@odata.etag"])
        if request.method == "DELETE":
            self.p.delete(i)
            self._bump(i)
            return Response(status_code=204)
        self._patch_task(i, body)
        if not _wants_representation(request):
            return Response(status_code=204)
        return _ok({"@odata.context": context, **self.task_json(i)})

    async def create_task(self, request: Request) -> Response:
        body = await _json_body(request)
        plan_id = body.get("planId")
        if not isinstance(plan_id, str):
            raise GraphError(400, "BadRequest", "The planId property is required.")
        n = self.plan_index(plan_id)
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise GraphError(400, "BadRequest", "The title property is required.")
        fields = {k: v for k, v in body.items() if k not in ("planId", "title")}
        self._validate_task_fields(n, fields)
        i = self.p.add_task(PLANNER, n, title)
        self._patch_task(i, fields, validated=True)
        return _ok(
            {"@odata.context": f"{_base(request)}{API}/$metadata#planner/tasks/$entity", **self.task_json(i)},
            status=201,
        )

    def _validate_task_fields(self, plan: int, body: dict[str, Any]) -> None:
        for key in body:
            if key.startswith("@odata."):
                continue
            if key not in TASK_FIELDS_WRITABLE:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Invalid request. Property '{key}' cannot be set on type 'microsoft.graph.plannerTask'.",
                )
        if "bucketId" in body:
            bucket_plan, _ = self.bucket_of_id(str(body["bucketId"]))
            if bucket_plan != plan:
                raise GraphError(400, "BadRequest", "The bucket is not in the plan of the task.")
        if "percentComplete" in body and not (
            isinstance(body["percentComplete"], int) and 0 <= body["percentComplete"] <= 100
        ):
            raise GraphError(400, "BadRequest", "percentComplete must be an integer from 0 to 100.")
        if "priority" in body and not (isinstance(body["priority"], int) and 0 <= body["priority"] <= 10):
            raise GraphError(400, "BadRequest", "priority must be an integer from 0 to 10.")
        if "previewType" in body and body["previewType"] not in PREVIEW_TYPES:
            raise GraphError(400, "BadRequest", f"Invalid previewType {body['previewType']!r}.")
        for key in ("startDateTime", "dueDateTime"):
            if key in body:
                try:
                    parse_day(body[key])
                except ValueError:
                    raise GraphError(
                        400,
                        "BadRequest",
                        f"Cannot convert the literal '{body[key]}' to the expected "
                        "type 'Edm.DateTimeOffset'.",
                    ) from None
        if "assignments" in body:
            self._validate_open_type(
                body["assignments"],
                "microsoft.graph.plannerAssignment",
                "assignments",
                known=self.person_by_user,
            )
        if "appliedCategories" in body:
            categories = body["appliedCategories"]
            if not isinstance(categories, dict) or any(
                not k.startswith("@odata.")
                and (
                    not re.fullmatch(r"category([1-9]|1\d|2[0-5])", k)
                    or not isinstance(v, (bool, type(None)))
                )
                for k, v in categories.items()
            ):
                raise GraphError(
                    400, "BadRequest", "appliedCategories takes category1..category25 set to true or false."
                )

    def _validate_open_type(
        self, value: Any, odata_type: str, what: str, known: dict[str, int] | None = None
    ) -> None:
        if not isinstance(value, dict):
            raise GraphError(400, "BadRequest", f"{what} must be an object.")
        for key, entry in value.items():
            if key.startswith("@odata."):
                continue
            if known is not None and key not in known:
                raise GraphError(400, "BadRequest", f"The user '{key}' in {what} does not exist.")
            if entry is None:
                continue
            if not isinstance(entry, dict) or entry.get("@odata.type", "").lstrip("#") != odata_type:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"The open type property '{key}' of {what} must specify '@odata.type' '#{odata_type}'.",
                )

    def _patch_task(self, i: int, body: dict[str, Any], validated: bool = False) -> None:
        p, t, state = self.p, self.p.tasks, self.state
        if not validated:
            self._validate_task_fields(int(t.project[i]), body)
        start = parse_day(body["startDateTime"]) if "startDateTime" in body else int(t.start[i])
        due = parse_day(body["dueDateTime"]) if "dueDateTime" in body else int(t.due[i])
        if start != NO_DAY and due != NO_DAY and start > due:
            raise GraphError(400, "BadRequest", "The start date of the task must be before its due date.")
        if "title" in body:
            p.title_overrides[i] = str(body["title"])
        if "startDateTime" in body:
            t.start[i] = start
        if "dueDateTime" in body:
            p.set_due(i, due)
        if "percentComplete" in body and int(body["percentComplete"]) != int(t.percent[i]):
            percent = int(body["percentComplete"])
            status = DONE if percent == 100 else TODO if percent == 0 else IN_PROGRESS
            p.set_status(i, status, percent)
        if "bucketId" in body:
            state.bucket[i] = self.bucket_of_id(str(body["bucketId"]))[1]
        if "assignments" in body:
            self._apply_assignments(i, body["assignments"])
        if "appliedCategories" in body:
            merged = dict(state.categories.get(i) or _default_applied_categories(mix(p.seed, i, 70)))
            for name, on in body["appliedCategories"].items():
                if name.startswith("@odata."):
                    continue
                if on:
                    merged[name] = True
                else:
                    merged.pop(name, None)
            state.categories[i] = merged
        for key, store in (
            ("priority", state.priority),
            ("orderHint", state.order_hint),
            ("assigneePriority", state.assignee_priority),
            ("conversationThreadId", state.conversation),
            ("previewType", state.preview_type),
        ):
            if key in body:
                store[i] = body[key]
        p.touch(i)
        self._bump(i)

    def _apply_assignments(self, i: int, assignments: dict[str, Any]) -> None:
        # The portfolio holds one assignee per task: the last user added wins, removing the current one clears it.
        t = self.p.tasks
        current = self.user_ids[int(t.assignee[i])] if t.assignee[i] >= 0 else None
        for user_id, entry in assignments.items():
            if user_id.startswith("@odata."):
                continue
            if entry is None:
                if user_id == current:
                    t.assignee[i] = -1
                    current = None
            else:
                t.assignee[i] = self.person_by_user[user_id]
                current = user_id

    def _bump(self, i: int) -> None:
        self.state.bumps[i] = self.state.bumps.get(i, 0) + 1

    def _require_etag(self, request: Request, current: str) -> None:
        sent = request.headers.get("if-match")
        if not sent:
            raise GraphError(412, "", "The If-Match header must be specified for this kind of request.")
        if sent.strip() != current:
            raise GraphError(
                412,
                "resourceModified",
                "The resource you are attempting to modify has been modified since the version "
                "specified in the If-Match header.",
            )

    # -- task details ------------------------------------------------------------------------------------------------
    async def task_details(self, request: Request) -> Response:
        i = self.task_index(request.path_params["task"])
        task_id = request.path_params["task"]
        context = f"{_base(request)}{API}/$metadata#planner/tasks('{task_id}')/details/$entity"
        if request.method == "PATCH":
            body = await _json_body(request)
            self._require_etag(request, self.details_json(i)["@odata.etag"])
            self._patch_details(i, body)
            if not _wants_representation(request):
                return Response(status_code=204)
        return _ok({"@odata.context": context, **self.details_json(i)})

    def details_of(self, i: int) -> TaskDetails:
        """The task's details: what a client wrote, or what the generator gives it."""
        stored = self.state.details.get(i)
        if stored is not None:
            return stored
        p = self.p
        h = mix(p.seed, i, 70)
        created = float(p.tasks.created[i])
        description = (
            f"{p.title(i)}. Scope, acceptance criteria and contacts are kept here."
            if _default_has_description(h)
            else ""
        )
        count = _default_checklist_size(h)
        checked = count if p.tasks.status[i] == DONE else (h >> 16) % (count + 1)
        checklist = {}
        for k in range(count):
            item_id = f"{mix(p.seed, i, 71, k) % 100_000:05d}"
            checklist[item_id] = {
                "@odata.type": "#microsoft.graph.plannerChecklistItem",
                "isChecked": k < checked,
                "title": ("Draft", "Review with owner", "Sign-off", "Announce")[k % 4],
                "orderHint": f"8585{(count - k) * 10**9:015d}",
                "lastModifiedDateTime": timestamp7(created + 3600 * (k + 1)),
                "lastModifiedBy": {
                    "user": {"displayName": None, "id": self.user_ids[h % len(self.user_ids)]}
                },
            }
        return TaskDetails(
            description=description,
            preview_type="automatic",
            references={},
            checklist=checklist,
            version=int(created * 1e6),
        )

    def details_json(self, i: int) -> dict[str, Any]:
        d = self.details_of(i)
        return {
            "@odata.etag": planner_etag("TaskDetails", d.version),
            "description": d.description,
            "previewType": d.preview_type,
            "id": self.task_id(i),
            "references": d.references,
            "checklist": d.checklist,
        }

    def _patch_details(self, i: int, body: dict[str, Any]) -> None:
        for key in body:
            if not key.startswith("@odata.") and key not in DETAILS_FIELDS_WRITABLE:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Invalid request. Property '{key}' cannot be set on type "
                    "'microsoft.graph.plannerTaskDetails'.",
                )
        before = self.details_of(i)
        details = TaskDetails(
            before.description,
            before.preview_type,
            dict(before.references),
            dict(before.checklist),
            before.version,
        )
        if "description" in body:
            if not isinstance(body["description"], (str, type(None))):
                raise GraphError(400, "BadRequest", "description must be a string.")
            details.description = body["description"] or ""
        if "previewType" in body:
            if body["previewType"] not in PREVIEW_TYPES:
                raise GraphError(400, "BadRequest", f"Invalid previewType {body['previewType']!r}.")
            details.preview_type = body["previewType"]
        if "references" in body:
            self._merge_open_type(
                details.references,
                body["references"],
                "microsoft.graph.externalReference",
                "references",
                ("alias", "type", "previewPriority"),
            )
        if "checklist" in body:
            self._merge_open_type(
                details.checklist,
                body["checklist"],
                "microsoft.graph.plannerChecklistItem",
                "checklist",
                ("title", "isChecked", "orderHint"),
            )
        details.version = max(before.version + 1, int(self.p.now() * 1e6))
        h = mix(self.p.seed, i, 70)
        counts_before = self.details_counts(i, h)
        self.state.details[i] = details
        if self.details_counts(i, h) != counts_before:
            # hasDescription and the counts live on the task, so the task changes (and its etag) too.
            self.p.touch(i)
            self._bump(i)

    def _merge_open_type(
        self,
        target: dict[str, dict[str, Any]],
        patch: Any,
        odata_type: str,
        what: str,
        fields: tuple[str, ...],
    ) -> None:
        if not isinstance(patch, dict):
            raise GraphError(400, "BadRequest", f"{what} must be an object.")
        now = timestamp7(self.p.now())
        for key, entry in patch.items():
            if key.startswith("@odata."):
                continue
            if entry is None:
                target.pop(key, None)
                continue
            if not isinstance(entry, dict):
                raise GraphError(400, "BadRequest", f"The value of '{key}' in {what} must be an object.")
            if key not in target and entry.get("@odata.type", "").lstrip("#") != odata_type:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"The open type property '{key}' of {what} must specify '@odata.type' '#{odata_type}'.",
                )
            merged = dict(target.get(key, {"@odata.type": f"#{odata_type}"}))
            merged.update({name: entry[name] for name in fields if name in entry})
            merged["lastModifiedDateTime"] = now
            merged["lastModifiedBy"] = {"user": {"displayName": None, "id": self.user_ids[0]}}
            target[key] = merged

    # -- users -------------------------------------------------------------------------------------------------------
    async def user(self, request: Request) -> Response:
        key = request.path_params["user"]
        person = self.person_by_user.get(key)
        if person is None:
            person = self.person_by_mail.get(key.lower())
        if person is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property objects "
                "are not present.",
            )
        who = self.p.people[person]
        return _ok(
            {
                "@odata.context": f"{_base(request)}{API}/$metadata#users/$entity",
                "businessPhones": [],
                "displayName": who.display_name(PLANNER),
                "givenName": who.first,
                "jobTitle": None,
                "mail": who.email_in(PLANNER),
                "mobilePhone": None,
                "officeLocation": None,
                "preferredLanguage": "en-US",
                "surname": who.last,
                "userPrincipalName": who.email,
                "id": self.user_ids[person],
            }
        )

    # -- drive -------------------------------------------------------------------------------------------------------
    def _seed_drive(self) -> None:
        anchor = self.p.clock_anchor - 400 * 86_400
        self.state.files[self.root_id] = DriveFile(self.root_id, "root", None, anchor, anchor, folder=True)
        for n in self.files_projects:
            item_id = ids.graph_item_id(self.p, n)
            name = f"{self.p.projects[n].name}.xml"
            self.state.files[item_id] = DriveFile(item_id, name, self.root_id, anchor, anchor, project=n)

    async def drive(self, request: Request) -> Response:
        self._check_drive(request.path_params["drive"])
        base = _base(request)
        return _ok(
            {
                "@odata.context": f"{base}{API}/$metadata#drives/$entity",
                "id": self.drive_id,
                "driveType": "documentLibrary",
                "name": "Documents",
                "description": "",
                "createdDateTime": timestamp_z(self.state.files[self.root_id].created),
                "lastModifiedDateTime": timestamp_z(self.p.now()),
                "webUrl": "https://acme.sharepoint.com/sites/pmo/Shared%20Documents",
                "owner": {
                    "group": {
                        "displayName": "PMO",
                        "id": self.group_id(min(self.plans)) if self.plans else "",
                    }
                },
            }
        )

    def _check_drive(self, drive_id: str) -> None:
        if drive_id != self.drive_id:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")

    _DRIVE_PATH = re.compile(
        r"(?:root|items/(?P<id>[^/:]+))(?::/(?P<name>[^:]+):?)?(?:/(?P<op>children|content))?"
    )

    async def drive_path(self, request: Request) -> Response:
        self._check_drive(request.path_params["drive"])
        match = self._DRIVE_PATH.fullmatch(request.path_params["rest"])
        if match is None:
            raise GraphError(400, "invalidRequest", "Invalid request.")
        item_id = match.group("id") or self.root_id
        if item_id == "root":
            item_id = self.root_id
        item = self._file(item_id)
        name, op = match.group("name"), match.group("op")
        if request.method == "PUT":
            if op != "content":
                raise GraphError(405, "invalidRequest", "PUT is only supported on /content.")
            return await self._upload(request, item, name)
        if request.method == "POST":
            if op != "children" or name:
                raise GraphError(405, "invalidRequest", "POST is only supported on /children.")
            return await self._create_folder(request, item)
        if name:
            item = self._child(item, name)
            if item is None:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
        if op == "children":
            return self._children(request, item)
        if op == "content":
            return self._content_redirect(request, item)
        return _ok(
            {
                "@odata.context": f"{_base(request)}{API}/$metadata#drives('{self.drive_id}')/items/$entity",
                **self.item_json(request, item),
            }
        )

    def _file(self, item_id: str) -> DriveFile:
        item = self.state.files.get(item_id)
        if item is None:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        return item

    def _child(self, folder: DriveFile, name: str) -> DriveFile | None:
        return next(
            (
                f
                for f in self.state.files.values()
                if f.parent_id == folder.item_id and f.name.lower() == name.lower()
            ),
            None,
        )

    def _children(self, request: Request, folder: DriveFile) -> Response:
        if not folder.folder:
            raise GraphError(400, "invalidRequest", "The item is not a folder.")
        children = [f for f in self.state.files.values() if f.parent_id == folder.item_id]
        context = (
            f"{_base(request)}{API}/$metadata#drives('{self.drive_id}')/items('{folder.item_id}')/children"
        )
        return _ok({"@odata.context": context, "value": [self.item_json(request, f) for f in children]})

    def file_bytes(self, item: DriveFile) -> bytes:
        """The file's content: uploaded bytes, or the MSPDI rendered from the portfolio now (cached per version)."""
        if item.content is not None or item.project is None:
            return item.content or b""
        version = item_version(self.p, item.project)
        cached = self.state.render_cache.get(item.project)
        if cached is None or cached[0] != version:
            cached = (version, render_project(self.p, item.project))
            self.state.render_cache[item.project] = cached
        return cached[1]

    def _refresh_version(self, item: DriveFile) -> None:
        """A generated plan's eTag follows its tasks: any change of them is a new version of the file."""
        if item.project is None or item.content is not None:
            return
        version = item_version(self.p, item.project)
        if version != item.seen_version:
            if item.seen_version:
                item.version += 1
            item.seen_version = version
            t = self.p.tasks
            indexes = project_task_indexes(self.p, item.project)
            item.modified = float(t.updated[indexes].max()) if len(indexes) else item.modified
            item.created = float(t.created[indexes].min()) if len(indexes) else item.created

    def item_json(self, request: Request, item: DriveFile) -> dict[str, Any]:
        self._refresh_version(item)
        # OneDrive's eTag and cTag are the item's own GUID and its version number.
        guid = str(uuid.UUID(bytes=hashlib.blake2b(item.item_id.encode(), digest_size=16).digest())).upper()
        record: dict[str, Any] = {
            "createdDateTime": timestamp_z(item.created),
            "eTag": f'"{{{guid}}},{item.version}"',
            "id": item.item_id,
            "lastModifiedDateTime": timestamp_z(item.modified),
            "name": item.name,
            "webUrl": f"https://acme.sharepoint.com/sites/pmo/Shared%20Documents/{quote(item.name)}",
            "cTag": f'"c:{{{guid}}},{item.version}"',
            "createdBy": {"user": {"displayName": "PMO", "id": self.user_ids[0]}},
            "lastModifiedBy": {"user": {"displayName": "PMO", "id": self.user_ids[0]}},
            "fileSystemInfo": {
                "createdDateTime": timestamp_z(item.created),
                "lastModifiedDateTime": timestamp_z(item.modified),
            },
        }
        if item.folder:
            record["size"] = sum(
                len(self.file_bytes(f))
                for f in self.state.files.values()
                if f.parent_id == item.item_id and not f.folder
            )
            record["folder"] = {
                "childCount": sum(1 for f in self.state.files.values() if f.parent_id == item.item_id)
            }
            if item.parent_id is None:
                record["root"] = {}
                record["name"] = "root"
            else:
                record["parentReference"] = self._parent_reference(item)
            return record
        content = self.file_bytes(item)
        record["size"] = len(content)
        record["@microsoft.graph.downloadUrl"] = self.download_url(request, item)
        record["file"] = {
            "mimeType": _mime_type(item.name),
            "hashes": {"sha256Hash": hashlib.sha256(content).hexdigest().upper()},
        }
        record["parentReference"] = self._parent_reference(item)
        return record

    def _parent_reference(self, item: DriveFile) -> dict[str, Any]:
        parent = self.state.files[item.parent_id] if item.parent_id else None
        path = f"/drives/{self.drive_id}/root:"
        if parent is not None and parent.parent_id is not None:
            path += "/" + quote(parent.name)
        return {"driveType": "documentLibrary", "driveId": self.drive_id, "id": item.parent_id, "path": path}

    def download_url(self, request: Request, item: DriveFile) -> str:
        """A pre-authenticated URL for the file's bytes, valid for an hour, on this same server."""
        expires = int(self.p.now()) + DOWNLOAD_URL_LIFETIME_S
        raw = f"{item.item_id}.{expires}.{self._signature(item.item_id, expires)}".encode()
        return f"{_base(request)}/_download/{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"

    def _signature(self, item_id: str, expires: int) -> str:
        key = f"{self.p.seed}:{CREDENTIALS['graph']['client_secret']}".encode()
        return hashlib.blake2b(f"{item_id}.{expires}".encode(), key=key, digest_size=12).hexdigest()

    def _content_redirect(self, request: Request, item: DriveFile) -> Response:
        if item.folder:
            raise GraphError(400, "invalidRequest", "A folder has no content.")
        record = self.item_json(request, item)
        if request.headers.get("if-none-match") in (record["eTag"], record["cTag"]):
            return Response(status_code=304)
        return RedirectResponse(record["@microsoft.graph.downloadUrl"], status_code=302)

    async def download(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            item_id, expires, signature = (
                base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(".")
            )
            valid = signature == self._signature(item_id, int(expires)) and int(expires) >= self.p.now()
        except (ValueError, UnicodeDecodeError):
            valid = False
        if not valid:
            raise GraphError(401, "unauthenticated", "The download link is not valid or has expired.")
        item = self._file(item_id)
        return Response(self.file_bytes(item), media_type=_mime_type(item.name))

    async def _upload(self, request: Request, target: DriveFile, name: str | None) -> Response:
        content = await request.body()
        if len(content) > MAX_UPLOAD_BYTES:
            raise GraphError(413, "invalidRequest", "The file exceeds the 250 MB limit of a simple upload.")
        now = self.p.now()
        status = 200
        if name:
            if not target.folder:
                raise GraphError(400, "invalidRequest", "The parent item is not a folder.")
            existing = self._child(target, name)
            if existing is None:
                item_id = ids.graph_item_id(self.p, self.state.next_item)
                self.state.next_item += 1
                existing = DriveFile(item_id, name, target.item_id, now, now, content=content)
                self.state.files[item_id] = existing
                status = 201
            target = existing
        if target.folder:
            raise GraphError(400, "invalidRequest", "Cannot upload content to a folder.")
        if status == 200:
            self._refresh_version(target)
            target.content = content
            target.modified = now
            target.version += 1
        base = _base(request)
        return _ok(
            {
                "@odata.context": f"{base}{API}/$metadata#drives('{self.drive_id}')/items/$entity",
                **self.item_json(request, target),
            },
            status=status,
        )

    async def _create_folder(self, request: Request, parent: DriveFile) -> Response:
        body = await _json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name or "folder" not in body:
            raise GraphError(400, "invalidRequest", "A folder needs a name and a folder facet.")
        if not parent.folder:
            raise GraphError(400, "invalidRequest", "The parent item is not a folder.")
        existing = self._child(parent, name)
        if existing is not None:
            if body.get("@microsoft.graph.conflictBehavior") == "fail" or not existing.folder:
                raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
            item = existing
        else:
            now = self.p.now()
            item_id = ids.graph_item_id(self.p, self.state.next_item)
            self.state.next_item += 1
            item = DriveFile(item_id, name, parent.item_id, now, now, folder=True)
            self.state.files[item_id] = item
        base = _base(request)
        return _ok(
            {
                "@odata.context": f"{base}{API}/$metadata#drives('{self.drive_id}')/items/$entity",
                **self.item_json(request, item),
            },
            status=201,
        )

    # -- identity platform -------------------------------------------------------------------------------------------
    async def issue_token(self, request: Request) -> Response:
        creds = CREDENTIALS["graph"]
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        tenant = request.path_params["tenant"]
        if tenant not in (creds["tenant_id"], "organizations"):
            return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return _aad_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        if form.get("client_id") != creds["client_id"]:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in the directory.",
            )
        if form.get("client_secret") != creds["client_secret"]:
            return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        token = self._new_token(tenant, str(form.get("client_id")))
        self.state.issued_tokens.add(token)
        return JSONBody(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_S,
                "ext_expires_in": TOKEN_LIFETIME_S,
                "access_token": token,
            }
        )

    def _new_token(self, tenant: str, client_id: str) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": "sandbox"}
        claims = {
            "aud": "https://graph.microsoft.com",
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_S,
            "appid": client_id,
            "tid": tenant,
            "roles": ["Tasks.ReadWrite.All", "Files.ReadWrite.All", "User.Read.All"],
            "jti": str(uuid.uuid4()),
        }
        encode = lambda part: base64.urlsafe_b64encode(orjson.dumps(part)).decode().rstrip("=")
        return f"{encode(header)}.{encode(claims)}.{base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip('=')}"

    async def openid_configuration(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        base = _base(request)
        return JSONBody(
            {
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "issuer": f"{base}/{tenant}/v2.0",
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "EU",
            }
        )


# -- helpers ---------------------------------------------------------------------------------------------------------


def _guard(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except GraphError as error:
            return error_response(error.status, error.code, error.message)

    guarded.__name__ = getattr(handler, "__name__", "graph")
    return guarded


def _ok(body: dict[str, Any], status: int = 200) -> JSONBody:
    request_id = str(uuid.uuid4())
    return JSONBody(
        body,
        status_code=status,
        headers={"request-id": request_id, "client-request-id": request_id, "OData-Version": "4.0"},
    )


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise GraphError(400, "BadRequest", "Invalid JSON in the request body.") from None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    return body


def _wants_representation(request: Request) -> bool:
    return "return=representation" in request.headers.get("prefer", "").replace(" ", "").lower()


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _mime_type(name: str) -> str:
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return MIME_TYPES.get(suffix, "application/octet-stream")


def _aad_error(status: int, error: str, code: int, description: str) -> JSONBody:
    trace = str(uuid.uuid4())
    return JSONBody(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace}",
            "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
        },
        status_code=status,
    )


def _default_categories() -> dict[str, str | None]:
    labels = {1: "Blocked", 2: "Customer facing", 3: "Needs review", 4: "External dependency"}
    return {f"category{k}": labels.get(k) for k in range(1, CATEGORY_COUNT + 1)}


def _default_applied_categories(h: int) -> dict[str, bool]:
    return {f"category{1 + (h >> 24) % 4}": True} if (h >> 20) % 4 == 0 else {}


def _default_has_description(h: int) -> bool:
    return h % 2 == 0


def _default_checklist_size(h: int) -> int:
    return int((h >> 4) % 4) if (h >> 8) % 3 == 0 else 0
