"""Microsoft Planner through `msgraph-sdk`: plans, buckets and tasks, with changes found by comparing ETags.

Graph v1.0 has no Planner delta and no last-modified field, but every task carries a weak `@odata.etag` that
changes with every change of the task. A pull lists each plan's tasks (`/planner/plans/{id}/tasks`, pages of
about 400 chained by `@odata.nextLink`, one Batch per page) and emits only tasks whose ETag differs from the one
committed in the cursor; on a full pull every task is emitted. The plan's own ETag does not move when a task
changes (in Planner, and in the sandbox), so there is no cheaper probe: `has_changes` lists the tasks too.

The cursor is {plan id: packed digests}: per task 16 characters, 10 of a hash of the task id and 6 of a hash of
its ETag, about 160 KB per 10,000 tasks. Tasks are not ordered by change (Graph offers no such order), so a
batch's cursor holds the digests of every task committed so far; a resumed pull skips those. The cursor also keeps
the assignees read (`USERS_KEY`: id, mail, name), which later pulls use until they are USERS_MAX_AGE old.

Raw records stay as Graph sent them, plus `_pmsync`: `bucket_name`, `progress` (notStarted, inProgress,
completed from percentComplete), `assignee_id`, `assignee_email` and `assignee_name` (the first assignee,
resolved once per user through `/users/{id}`), `categories` (the applied category keys) and `url` (the task in
Planner's web app).

Costs per pull: one request per configured plan (or per configured group, listing its plans), one for the buckets of
each plan that has emitted tasks, one per page of tasks, and one `/users/{id}` per distinct assignee of emitted
tasks not yet resolved (by this connector, or by a pull of the last USERS_MAX_AGE, through the cursor). The census
reuses the ids of a pull's complete listing, so it costs nothing after a pull. Task details (description, checklist,
references) are one request per task and are not read: references that point at another tool's task are therefore
not turned into links.

Concurrency changes when those requests are made, never which: a pull's reads run as coroutines on the session's
own loop, at most WORKERS in flight and TOKEN_BUDGET per window (Graph throttles per token; a 429 is a request
spent). The configured plans and groups are read at once; PLANS_AHEAD plans are listed at once, each plan's
pages still one after the other (chained by `@odata.nextLink`) and at most PAGES_AHEAD ahead of the batch being
yielded, so memory stays bounded; as a page arrives, its plan's buckets and the unknown assignees of the tasks it
will emit are read alongside. Batches still come plan by plan and page by page, and only the pull's own thread
commits a page's digests to the cursor, when it makes that page's batch: a batch's cursor never claims a task read
ahead. The loop runs only while the pull waits for a page; what is in flight when a pull stops early is cancelled.
The census (without a pull before it) and `has_changes` list the plans the same way.

Write-back (`write`, `setup_writeback`): two of the plan's 25 category slots are named "pmsync: late" and
"pmsync: at risk" (category20 and category21 unless taken) and applied or cleared on each task; the task details'
description gets a pmsync block between BLOCK_START and BLOCK_END lines, the rest of the description left as the
user wrote it. A Planner plan as portfolio view gets one task per project and milestone (remote_ref = its id),
archived as percentComplete 100 plus the title prefix "[archived] " (Planner has no archive). Every PATCH reads
the resource first and sends its ETag in If-Match; on 412 it reads again and retries (STALE_RETRIES times). A
write whose values are already there sends no PATCH.

The push echo: a categories PATCH moves the task's ETag, so the next pull would read back every task pmsync
wrote. The write reports as its version the pair "If-Match ETag -> ETag of the answer" (`Prefer:
return=representation`): the If-Match proves the task was at the first ETag when pmsync's change was applied,
atomically. A pull leaves a changed task out only when the cursor's digest is that first ETag's (nothing changed
between the last pull and the write) and the task now carries the second (nothing changed since). Anything else,
a 412 retry after someone's edit included, is read. A details write that fills an empty description moves the
task's ETag too (`hasDescription`), without telling pmsync the new ETag: such tasks are read once more.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from connectors.base import Batch, Connector, PersonRecord, ProjectRecord, Write, WriteResult
from connectors.graph import GraphNotFound, GraphPreconditionFailed, GraphSession, RequestBuilder
from connectors.http import BudgetPacer, RequestStats
from pmsync.config import PlannerConnection
from pmsync.errors import ConnectionFailed

log = logging.getLogger("pmsync.connectors.planner")

TOOL_LABEL = "Microsoft Planner"
KEY_CHARS = 10
DIGEST_CHARS = 6
ENTRY_CHARS = KEY_CHARS + DIGEST_CHARS
PLANNER_WEB = "https://planner.cloud.microsoft/webui/plan/{plan}/view/board/task/{task}"
VERSION_ARROW = " -> "

LATE_CATEGORY = "pmsync: late"
AT_RISK_CATEGORY = "pmsync: at risk"
PREFERRED_SLOTS = {LATE_CATEGORY: "category20", AT_RISK_CATEGORY: "category21"}
CATEGORY_SLOTS = tuple(f"category{n}" for n in range(1, 26))
BLOCK_START = "— pmsync schedule —"
BLOCK_END = "— end pmsync —"
ARCHIVED_PREFIX = "[archived] "
SOURCE_LABEL = "Source"
STALE_RETRIES = 2

WORKERS = 8  # a pull's reads in flight at once (the plans' listings, buckets and users together)
PLANS_AHEAD = WORKERS  # plans listed at once: the one being yielded and the next ones
PAGES_AHEAD = 2  # pages of a plan read ahead of the batch being yielded (memory stays bounded)
# The assignees read by earlier pulls ride in the cursor under this key (no plan id holds an "@"), and are read
# again once they are this old: an incremental pull reads only users it has not met, a rename shows within a day.
USERS_KEY = "users@"
USERS_MAX_AGE = timedelta(hours=24)
TOKEN_BUDGET = (540, 10.0)  # reads per seconds: under Graph's 600 / 10 s per token, leaving room for others


# -- pure helpers ---------------------------------------------------------------------------------------------

def _short_hash(text: str, chars: int) -> str:
    digest = hashlib.blake2b(text.encode(), digest_size=12).digest()
    return base64.urlsafe_b64encode(digest).decode()[:chars]


def task_key(task_id: str) -> str:
    """The 10-character stand-in of a task id in the cursor (60 bits: no collision in any real plan)."""
    return _short_hash(task_id, KEY_CHARS)


def etag_digest(etag: str | None) -> str:
    """The 6-character digest of a task's ETag: different whenever the ETag is (but for 1 in 2^36)."""
    return _short_hash(etag or "", DIGEST_CHARS)


def unpack(packed: str | None) -> dict[str, str]:
    """A plan's cursor entry as {task key: etag digest}."""
    packed = packed or ""
    return {packed[k:k + KEY_CHARS]: packed[k + KEY_CHARS:k + ENTRY_CHARS] for k in range(0, len(packed), ENTRY_CHARS)}


def pack(digests: dict[str, str]) -> str:
    """{task key: etag digest} as one string of fixed-width entries, sorted so equal maps pack equally."""
    return "".join(key + digest for key, digest in sorted(digests.items()))


def progress_of(percent: Any) -> str:
    """Planner's three progress states from percentComplete: 0 not started, 100 completed, else in progress."""
    if not isinstance(percent, (int, float)) or isinstance(percent, bool):
        return "notStarted"
    if percent >= 100:
        return "completed"
    return "inProgress" if percent > 0 else "notStarted"


def assignee_ids(task: dict[str, Any]) -> list[str]:
    """The user ids of the task's assignees, in Graph's order (assignments are keyed by user id)."""
    assignments = task.get("assignments")
    if not isinstance(assignments, dict):
        return []
    return [user_id for user_id, entry in assignments.items() if not user_id.startswith("@odata.") and entry]


def first_assignee(task: dict[str, Any]) -> str | None:
    """The user id of the task's first assignee."""
    found = assignee_ids(task)
    return found[0] if found else None


def own_version(if_match: str, answered: str) -> str:
    """A write's version: the ETag it was applied to (its If-Match) and the ETag it left."""
    return f"{if_match}{VERSION_ARROW}{answered}"


def own_edit_only(task: dict[str, Any], committed_digest: str | None, own_versions: Iterable[str]) -> bool:
    """True when the task's only change since the committed pull is pmsync's own write: one of pmsync's writes
    was applied to the ETag the pull committed (`committed_digest`) and left the ETag the task carries now."""
    etag = task.get("@odata.etag")
    if not isinstance(etag, str) or committed_digest is None:
        return False
    for version in own_versions:
        before, arrow, after = version.partition(VERSION_ARROW)
        if arrow and after == etag and etag_digest(before) == committed_digest:
            return True
    return False


@dataclass(frozen=True)
class CategoryKeys:
    """The plan's category slots that mean late and at risk (e.g. category20, category21)."""

    late: str
    at_risk: str

    def applied(self, late: bool, at_risk: bool) -> dict[str, bool]:
        return {self.late: bool(late), self.at_risk: bool(at_risk)}


def pick_category_slots(descriptions: dict[str, Any]) -> tuple[CategoryKeys, dict[str, str]]:
    """The slots for pmsync's categories, and the categoryDescriptions PATCH that names them ({} when they are
    already named). A slot already named so is reused; else the preferred slot when unnamed, else the highest
    unnamed one. ValueError when all 25 are taken."""
    named = {label: key for key, label in descriptions.items() if key in CATEGORY_SLOTS and label}
    taken = set(named.values())
    chosen: dict[str, str] = {}
    patch: dict[str, str] = {}
    for label in (LATE_CATEGORY, AT_RISK_CATEGORY):
        key = named.get(label)
        if key is None:
            free = [slot for slot in reversed(CATEGORY_SLOTS) if slot not in taken]
            if not free:
                raise ValueError(f"all 25 categories are named; clear one for {label!r}")
            key = PREFERRED_SLOTS[label] if PREFERRED_SLOTS[label] not in taken else free[0]
            patch[key] = label
            taken.add(key)
        chosen[label] = key
    return CategoryKeys(chosen[LATE_CATEGORY], chosen[AT_RISK_CATEGORY]), patch


def applied_categories(task: dict[str, Any]) -> dict[str, bool]:
    """The categories applied on a task, as {slot: True}."""
    return {key: True for key, on in (task.get("appliedCategories") or {}).items()
            if on and not key.startswith("@odata.")}


def categories_patch(task: dict[str, Any], wanted: dict[str, bool]) -> dict[str, bool]:
    """The appliedCategories entries that differ from `wanted` (only pmsync's slots are ever named)."""
    current = applied_categories(task)
    return {key: on for key, on in wanted.items() if bool(current.get(key)) != on}


def with_schedule_block(description: str | None, text: str) -> str:
    """The description with pmsync's block (BLOCK_START ... BLOCK_END) replaced by `text`, or appended after a
    blank line when there is none. Everything outside the block stays exactly as it was."""
    description = description or ""
    block = f"{BLOCK_START}\n{text.strip()}\n{BLOCK_END}"
    start = description.find(BLOCK_START)
    end = description.find(BLOCK_END, start) if start >= 0 else -1
    if start >= 0 and end >= 0:
        return description[:start] + block + description[end + len(BLOCK_END):]
    if not description.strip():
        return block
    return description.rstrip("\n") + "\n\n" + block


def outside_block(description: str | None) -> str:
    """The user's part of a description: everything but pmsync's block and the blank line before it."""
    description = description or ""
    start = description.find(BLOCK_START)
    end = description.find(BLOCK_END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        return description
    before = description[:start]
    if before.endswith("\n\n"):
        before = before[:-2]
    return before + description[end + len(BLOCK_END):]


def schedule_text(payload: dict[str, Any]) -> str:
    """The block's lines for a payload: its `text` when the planner wrote one, else its schedule values."""
    if payload.get("text"):
        return str(payload["text"])
    labels = (("state", "State"), ("health", "Health"), ("forecast_finish", "Forecast finish"),
              ("baseline_due", "Baseline due"), ("slip_days", "Slip (days)"), ("url", SOURCE_LABEL))
    return "\n".join(f"{label}: {payload[key]}" for key, label in labels if payload.get(key) is not None)


def due_date_time(day: str | None) -> str | None:
    """A YYYY-MM-DD day as Planner's dueDateTime (midnight UTC); None stays None."""
    return f"{day[:10]}T00:00:00Z" if day else None


def item_fields(task: dict[str, Any] | None, payload: dict[str, Any], keys: CategoryKeys) -> dict[str, Any]:
    """The fields of a portfolio item task that differ from what `payload` asks ({} when it is up to date);
    every field when `task` is None (a new item). An archived item that comes back is reopened."""
    title = str(payload.get("title") or "pmsync item")
    due = due_date_time(payload.get("forecast_finish"))
    health = payload.get("health")
    wanted = keys.applied(health == "red", health == "amber")
    if task is None:
        return {"title": title, "dueDateTime": due, "appliedCategories": wanted}
    fields: dict[str, Any] = {}
    if task.get("title") != title:
        fields["title"] = title
    if (task.get("dueDateTime") or "")[:10] != (due or "")[:10]:
        fields["dueDateTime"] = due
    categories = categories_patch(task, wanted)
    if categories:
        fields["appliedCategories"] = categories
    if str(task.get("title") or "").startswith(ARCHIVED_PREFIX) and task.get("percentComplete") == 100:
        fields["percentComplete"] = 0
    return fields


def archive_fields(task: dict[str, Any]) -> dict[str, Any]:
    """The fields that archive a portfolio item task ({} when it is archived already)."""
    fields: dict[str, Any] = {}
    title = str(task.get("title") or "")
    if not title.startswith(ARCHIVED_PREFIX):
        fields["title"] = ARCHIVED_PREFIX + title
    if task.get("percentComplete") != 100:
        fields["percentComplete"] = 100
    return fields


@dataclass
class PlanCursor:
    """The committed digests of every plan, updated task by task as a pull commits them."""

    plans: dict[str, dict[str, str]] = field(default_factory=dict)
    users: dict[str, PersonRecord] = field(default_factory=dict)  # the assignees read, by user id
    users_at: datetime | None = None  # when the oldest of them was read

    @classmethod
    def from_cursor(cls, cursor: dict[str, str] | None) -> PlanCursor:
        plans = dict(cursor or {})
        people = plans.pop(USERS_KEY, None)
        out = cls({plan: unpack(packed) for plan, packed in plans.items()})
        if people:
            doc = orjson.loads(people)
            out.users_at = datetime.fromisoformat(doc["at"])
            out.users = {user_id: PersonRecord(native_id=user_id, display_name=name, email=email)
                         for user_id, (email, name) in doc["people"].items()}
        return out

    def to_cursor(self) -> dict[str, str]:
        out = {plan: pack(digests) for plan, digests in sorted(self.plans.items())}
        if self.users and self.users_at is not None:
            people = {user_id: [person.email, person.display_name] for user_id, person in sorted(self.users.items())}
            out[USERS_KEY] = orjson.dumps({"at": self.users_at.isoformat(), "people": people}).decode()
        return out

    def users_fresh(self, now: datetime) -> bool:
        """True while the users the cursor holds are younger than USERS_MAX_AGE."""
        return self.users_at is not None and now - self.users_at < USERS_MAX_AGE

    def changed(self, plan_id: str, task: dict[str, Any]) -> bool:
        """True when the task's ETag is not the one committed (new tasks and unreadable ones included)."""
        task_id = task.get("id")
        if not isinstance(task_id, str):
            return True
        return self.digest(plan_id, task_id) != etag_digest(task.get("@odata.etag"))

    def digest(self, plan_id: str, task_id: str) -> str | None:
        """The committed digest of a task's ETag (None for a task the cursor does not hold)."""
        return self.plans.get(plan_id, {}).get(task_key(task_id))

    def commit(self, plan_id: str, tasks: Iterable[dict[str, Any]]) -> None:
        digests = self.plans.setdefault(plan_id, {})
        for task in tasks:
            if isinstance(task.get("id"), str):
                digests[task_key(task["id"])] = etag_digest(task.get("@odata.etag"))

    def keep_only(self, plan_id: str, task_ids: Iterable[str]) -> None:
        """Forget the digests of a plan's tasks that were not listed (deleted ones)."""
        listed = {task_key(task_id) for task_id in task_ids}
        digests = self.plans.get(plan_id, {})
        self.plans[plan_id] = {key: value for key, value in digests.items() if key in listed}

    def retain_plans(self, plan_ids: Iterable[str]) -> None:
        wanted = set(plan_ids)
        self.plans = {plan: digests for plan, digests in self.plans.items() if plan in wanted}


# -- reading ahead --------------------------------------------------------------------------------------------

@dataclass
class PlanPage:
    """One page of a plan's task listing, and whether it is the plan's last (it came without `@odata.nextLink`)."""

    tasks: list[dict[str, Any]]
    final: bool


async def gather_in_order(awaitables: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await all at once and return their results in order. The first failure in order is raised, once all have
    ended: nothing is left running on the loop, and which sentence the user reads does not depend on timing."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class PlanListing:
    """The task pages of some plans, read ahead on the session's loop and handed over in plan order.

    Up to PLANS_AHEAD plans are listed at once (the one being handed over and the next ones), each at most
    PAGES_AHEAD pages ahead: a plan's pages chain by `@odata.nextLink` so they stay sequential, but different
    plans' overlap. The loop runs only inside `session.run`, i.e. while the caller waits for a page; reads in
    flight meanwhile wait on the wire. With `committed` (a pull), as soon as a page arrives the plan's buckets and
    the unknown assignees of the tasks the page will emit are read too, so that handing it over costs nothing
    more. A failure is handed over in its place, after everything before it; `close()` cancels what is in flight.
    """

    def __init__(self, connector: PlannerConnector, plan_ids: list[str], committed: PlanCursor | None = None) -> None:
        self.connector = connector
        self.plan_ids = plan_ids
        self.committed = committed
        self._queues: dict[int, asyncio.Queue[Any]] = {}
        self._started = 0
        self._running: set[asyncio.Task[Any]] = set()
        self._buckets: dict[str, asyncio.Task[dict[str, str]]] = {}
        self._users: dict[str, asyncio.Task[PersonRecord]] = {}

    def pages(self, n: int) -> Iterator[PlanPage]:
        """The pages of the n-th plan, in Graph's order."""
        while True:
            page = self.connector.session.run(self._next_page(n))
            yield page
            if page.final:
                self._queues.pop(n, None)
                self._buckets.pop(self.plan_ids[n], None)
                return

    def buckets(self, plan_id: str) -> dict[str, str]:
        """{bucket id: name} of a plan, read once per listing (normally ahead, with the plan's first page)."""
        return self.connector.session.run(self._bucket_names(plan_id))

    def close(self) -> None:
        """Cancel the reads still in flight (the caller stopped early, or failed) and let them end on the loop."""
        pending = set(self._running)
        self._queues.clear()
        if not pending:
            return
        for task in pending:
            task.cancel()
        settled = asyncio.wait(pending)
        try:
            self.connector.session.run(settled)
        except RuntimeError:  # the session's loop is closed: its tasks went with it
            settled.close()

    # -- on the loop ------------------------------------------------------------------------------------------
    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._running.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # marked as seen: whoever awaits the task still gets it raised

    async def _next_page(self, n: int) -> PlanPage:
        while self._started < min(n + PLANS_AHEAD, len(self.plan_ids)):
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=PAGES_AHEAD)
            self._queues[self._started] = queue
            self._spawn(self._list(self.plan_ids[self._started], queue))
            self._started += 1
        item = await self._queues[n].get()
        if isinstance(item, BaseException):
            raise item
        page, ready = item
        if ready is not None:
            await ready
        return page

    async def _list(self, plan_id: str, queue: asyncio.Queue[Any]) -> None:
        """Read a plan's pages one after the other into its queue (which holds PAGES_AHEAD), then stop."""
        builder = self.connector.session.client.planner.plans.by_planner_plan_id(plan_id).tasks
        url: str | None = None
        try:
            while True:
                body = await self.connector.read(builder, f"listing the tasks of plan {plan_id}", url)
                url = body.get("@odata.nextLink")
                page = PlanPage(body.get("value") or [], final=not url)
                ready = self._spawn(self._prepare(plan_id, page.tasks)) if self.committed is not None else None
                await queue.put((page, ready))
                if page.final:
                    return
        except Exception as exc:  # handed over in its place
            await queue.put(exc)

    async def _prepare(self, plan_id: str, tasks: list[dict[str, Any]]) -> None:
        """Read what the page's batch will need: the plan's buckets and the assignees not known yet, when the page
        has tasks to emit (as the pull will find them: nothing before this page in the plan shares their ids)."""
        assert self.committed is not None
        emitted = self.connector.to_emit(plan_id, tasks, self.committed)
        if not emitted:
            return
        known = self.connector.known_users
        wanted = dict.fromkeys(user for task in emitted for user in assignee_ids(task) if user not in known)
        await gather_in_order([self._bucket_read(plan_id), *(self._user_read(user) for user in wanted)])

    def _bucket_read(self, plan_id: str) -> asyncio.Task[dict[str, str]]:
        if plan_id not in self._buckets:
            self._buckets[plan_id] = self._spawn(self.connector.read_buckets(plan_id))
        return self._buckets[plan_id]

    async def _bucket_names(self, plan_id: str) -> dict[str, str]:
        return await self._bucket_read(plan_id)

    def _user_read(self, user_id: str) -> asyncio.Task[PersonRecord]:
        if user_id not in self._users:
            self._users[user_id] = self._spawn(self.connector.read_user(user_id))
        return self._users[user_id]


# -- the connector --------------------------------------------------------------------------------------------

class PlannerConnector(Connector):
    """The configured Planner plans (and every plan of the configured groups) of one tenant."""

    tool = "planner"
    write_targets = ("planner.categories", "planner.details", "portfolio.item", "portfolio.archive")

    def __init__(self, name: str, session: GraphSession, plans: list[str], groups: list[str] | None = None) -> None:
        super().__init__(name)
        self.session = session
        self.stats = session.stats  # the session's transport counts every attempt there
        self.plan_ids = list(plans)
        self.groups = list(groups or [])
        self._plans: list[dict[str, Any]] | None = None
        self._users: dict[str, PersonRecord] = {}
        self._listed: set[str] | None = None
        self._category_keys: dict[str, CategoryKeys] = {}
        self._categories_lock = threading.Lock()
        self._container_titles: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._items_lock = threading.Lock()
        self._slots = asyncio.Semaphore(WORKERS)  # bound to the session's loop on first use
        self._budget = BudgetPacer(*TOKEN_BUDGET)
        self._listings: set[PlanListing] = set()

    @classmethod
    def from_config(cls, conn: PlannerConnection) -> PlannerConnector:
        """The connector for a configured Planner connection (no request is made until it is used)."""
        session = GraphSession.from_config(TOOL_LABEL, conn, RequestStats())
        return cls(conn.name, session, conn.plans, conn.groups)

    # -- the Connector interface ------------------------------------------------------------------------------
    def check(self) -> None:
        """Read the configured plans (and the groups' plan lists): proves the URL, credentials and scope."""
        self._plans = None
        self.plans()

    def pull(self, cursor: dict[str, str] | None) -> Iterator[Batch]:
        """One batch per page of each plan's tasks, holding the tasks whose ETag changed since `cursor` (all
        when None); each plan's first batch carries the plan as a project, the last batch drops deleted tasks
        from the cursor."""
        committed = PlanCursor.from_cursor(cursor)
        now = datetime.now(UTC)
        if committed.users_fresh(now):
            for user_id, person in committed.users.items():
                self._users.setdefault(user_id, person)
        else:
            committed.users_at = now
        committed.users = self._users  # every batch's cursor carries the users read so far
        plans = self.plans()
        committed.retain_plans(plan["id"] for plan in plans)
        listed: set[str] = set()
        with self._listing(plans, committed) as listing:
            for n, plan in enumerate(plans):
                yield from self._pull_plan(plan, listing, n, committed, listed, last_plan=n == len(plans) - 1)
        self._listed = listed

    def census(self) -> Iterator[str]:
        """Every task id of the plans: from the listing of this connector's last complete pull, else listed now."""
        if self._listed is not None:
            yield from sorted(self._listed)
            return
        plans = self.plans()
        with self._listing(plans) as listing:
            for n in range(len(plans)):
                for page in listing.pages(n):
                    for task in page.tasks:
                        yield str(task["id"])

    def has_changes(self, cursor: dict[str, str] | None) -> bool:
        """List the plans' tasks and compare ETags with `cursor` (v1.0 offers nothing cheaper: a plan's ETag does
        not change with its tasks). True at the first difference, added or deleted tasks included (the pages
        read ahead of it by then are a few requests more than a plan-by-plan listing made)."""
        if not cursor:
            return True
        committed = PlanCursor.from_cursor(cursor)
        plans = self.plans()
        if {plan["id"] for plan in plans} != set(committed.plans):
            return True
        with self._listing(plans) as listing:
            for n, plan in enumerate(plans):
                seen = 0
                for page in listing.pages(n):
                    seen += len(page.tasks)
                    if any(committed.changed(plan["id"], task) for task in page.tasks):
                        return True
                if seen != len(committed.plans[plan["id"]]):
                    return True
        return False

    def close(self) -> None:
        for listing in list(self._listings):
            listing.close()
        self.session.close()

    # -- write-back -------------------------------------------------------------------------------------------
    def write(self, write: Write) -> WriteResult:
        """Put one owned value in Planner (targets in `write_targets`), with If-Match ETags read just before;
        nothing is sent when the value is already there. Raises ConnectionFailed on failure."""
        writers: dict[str, Callable[[Write], WriteResult]] = {
            "planner.categories": self._write_categories,
            "planner.details": self._write_details,
            "portfolio.item": self._write_item,
            "portfolio.archive": self._archive_item,
        }
        if write.target not in writers:
            raise NotImplementedError(f"planner cannot write {write.target}")
        return writers[write.target](write)

    def setup_writeback(self, containers: list[str]) -> list[str]:
        """Name pmsync's two categories in each plan (the configured plans when `containers` is empty); one line
        per category named, none for categories already named so."""
        lines: list[str] = []
        for plan_id in containers or [plan["id"] for plan in self.plans()]:
            self._category_keys.pop(plan_id, None)
            lines.extend(self.ensure_categories(plan_id))
        return lines

    def ensure_categories(self, plan_id: str) -> list[str]:
        """Find (or name) the plan's pmsync categories and remember them; one line per category named."""
        found: dict[str, Any] = {}

        def change(details: dict[str, Any]) -> dict[str, Any] | None:
            try:
                keys, patch = pick_category_slots(details.get("categoryDescriptions") or {})
            except ValueError as exc:
                raise ConnectionFailed(f"{TOOL_LABEL} plan {plan_id}: {exc}.") from None
            found["keys"], found["patch"] = keys, patch
            return {"categoryDescriptions": patch} if patch else None

        builder = self.session.client.planner.plans.by_planner_plan_id(plan_id).details
        self.patch_fresh(builder, f"the details of plan {plan_id}", change, representation=False)
        self._category_keys[plan_id] = found["keys"]
        return [f"plan {plan_id}: named {key} {label!r}" for key, label in found["patch"].items()]

    def category_keys(self, plan_id: str) -> CategoryKeys:
        """The plan's pmsync category slots, named on first use if `--setup` has not named them."""
        with self._categories_lock:  # writes run on several threads; name a plan's categories once
            if plan_id not in self._category_keys:
                self.ensure_categories(plan_id)
            return self._category_keys[plan_id]

    def patch_fresh(self, builder: RequestBuilder, what: str, change: Callable[[dict[str, Any]], dict[str, Any] | None],
                    representation: bool = True, read: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET a resource (or take `read`, just read), ask `change` for the PATCH body it needs (None: nothing to
        do) and PATCH it with the ETag read; on 412 read again and retry, STALE_RETRIES times. Returns the resource
        as it now is (as read, when nothing was sent)."""
        for attempt in range(STALE_RETRIES + 1):
            current = read if read is not None and attempt == 0 else self.session.get_json(builder, f"reading {what}")
            body = change(current)
            if not body:
                return current
            headers = {"If-Match": current["@odata.etag"]}
            if representation:
                headers["Prefer"] = "return=representation"
            try:
                return self.session.send_json("PATCH", builder, f"updating {what}", body, headers) or current
            except GraphPreconditionFailed:
                if attempt == STALE_RETRIES:
                    raise
                log.info("%s changed since it was read (412); reading it again", what)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _task_builder(self, task_id: str) -> RequestBuilder:
        return self.session.client.planner.tasks.by_planner_task_id(task_id)

    def _write_categories(self, write: Write) -> WriteResult:
        """Apply or clear pmsync's categories on the task; the version is the If-Match ETag the PATCH was applied
        to and the ETag of its answer (none when nothing was sent, or the answer had no representation)."""
        sent: dict[str, Any] = {}

        def change(task: dict[str, Any]) -> dict[str, Any] | None:
            keys = self.category_keys(task["planId"])
            wanted = keys.applied(bool(write.payload.get("late")), bool(write.payload.get("at_risk")))
            patch = categories_patch(task, wanted)
            sent["if_match"] = task.get("@odata.etag") if patch else None
            return {"appliedCategories": patch} if patch else None

        now = self.patch_fresh(self._task_builder(write.native_id), f"task {write.native_id}", change)
        before, after = sent.get("if_match"), now.get("@odata.etag")
        if isinstance(before, str) and isinstance(after, str) and after != before:
            return WriteResult(version=own_version(before, after))
        return WriteResult()

    def _write_details(self, write: Write) -> WriteResult:
        self._write_block(write.native_id, schedule_text(write.payload))
        return WriteResult()

    def _write_block(self, task_id: str, text: str) -> None:
        def change(details: dict[str, Any]) -> dict[str, Any] | None:
            description = with_schedule_block(details.get("description"), text)
            return {"description": description} if description != (details.get("description") or "") else None

        self.patch_fresh(self._task_builder(task_id).details, f"the details of task {task_id}", change,
                         representation=False)

    def _own_item(self, task_id: str | None, plan_id: str) -> dict[str, Any] | None:
        """The task `task_id` when it is a live task of the container plan (an item pmsync made there)."""
        if not task_id:
            return None
        try:
            task = self.session.get_json(self._task_builder(task_id), f"reading portfolio item {task_id}")
        except GraphNotFound:
            return None
        return task if task.get("planId") == plan_id else None

    def _write_item(self, write: Write) -> WriteResult:
        plan_id, payload = write.native_id, write.payload
        keys = self.category_keys(plan_id)
        task = self._own_item(write.remote_ref, plan_id) or self._unrecorded_item(plan_id, payload)
        if task is not None:
            task_id = task["id"]
            self.patch_fresh(self._task_builder(task_id), f"portfolio item {task_id}",
                             lambda task: item_fields(task, payload, keys) or None, read=task)
        else:  # new, or deleted by a user: make it (again)
            body = {"planId": plan_id, **item_fields(None, payload, keys)}
            task_id = self.session.send_json("POST", self.session.client.planner.tasks,
                                             f"creating a portfolio item in plan {plan_id}", body)["id"]
        self._write_block(task_id, schedule_text(payload))
        return WriteResult(remote_ref=task_id)

    def _unrecorded_item(self, plan_id: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """An item pmsync made in the container whose id the ledger never got (a push stopped between the create
        and its ledger row): a task with the item's title whose pmsync block names the item's source link. Each
        is taken once. The container is listed once per connector, on the first item that has no live task."""
        title, url = str(payload.get("title") or ""), payload.get("url")
        if not url:
            return None  # nothing tells two same-named items apart
        with self._items_lock:
            if plan_id not in self._container_titles:
                listing: dict[str, list[dict[str, Any]]] = {}
                for page in self._task_pages(plan_id):
                    for task in page:
                        listing.setdefault(str(task.get("title") or ""), []).append(task)
                self._container_titles[plan_id] = listing
            candidates = self._container_titles[plan_id].get(title, [])
            for task in list(candidates):
                details = self.session.get_json(self._task_builder(task["id"]).details,
                                                f"reading the details of task {task['id']}")
                block = (details.get("description") or "").partition(BLOCK_START)[2]
                if f"{SOURCE_LABEL}: {url}\n" in block:
                    candidates.remove(task)
                    return task
        return None

    def _archive_item(self, write: Write) -> WriteResult:
        item_id = write.remote_ref or write.payload.get("item")
        task = self._own_item(item_id, write.native_id)
        if task is None:
            return WriteResult(remote_ref=item_id)  # gone already: nothing of pmsync's is left to archive
        self.patch_fresh(self._task_builder(task["id"]), f"portfolio item {task['id']}",
                         lambda task: archive_fields(task) or None, read=task)
        return WriteResult(remote_ref=task["id"])

    # -- pieces -----------------------------------------------------------------------------------------------
    def plans(self) -> list[dict[str, Any]]:
        """The plans to pull, as Graph describes them: the configured ones, then each configured group's (one
        request per plan or group, asked once per connector)."""
        if self._plans is None:
            self._plans = self.session.run(self._read_plans())
        return self._plans

    async def _read_plans(self) -> list[dict[str, Any]]:
        plans_api, groups_api = self.session.client.planner.plans, self.session.client.groups
        read = await gather_in_order([
            *(self.read(plans_api.by_planner_plan_id(plan_id), f"reading plan {plan_id}") for plan_id in self.plan_ids),
            *(self.read(groups_api.by_group_id(group).planner.plans, f"listing the plans of group {group}")
              for group in self.groups),
        ])
        found: dict[str, dict[str, Any]] = dict(zip(self.plan_ids, read))
        for listing in read[len(self.plan_ids):]:
            for plan in listing.get("value") or ():
                found.setdefault(plan["id"], plan)
        return list(found.values())

    @contextmanager
    def _listing(self, plans: list[dict[str, Any]], committed: PlanCursor | None = None) -> Iterator[PlanListing]:
        """The plans' pages read ahead for the length of the block; what is still in flight at its end (a caller
        that stopped early or failed) is cancelled, and so it is when the connector closes first."""
        listing = PlanListing(self, [plan["id"] for plan in plans], committed)
        self._listings.add(listing)
        try:
            yield listing
        finally:
            self._listings.discard(listing)
            listing.close()

    def _pull_plan(self, plan: dict[str, Any], listing: PlanListing, n: int, committed: PlanCursor,
                   listed: set[str], last_plan: bool) -> Iterator[Batch]:
        """The batches of the n-th plan: its pages' tasks are committed in Graph's order, one page at a time, so a
        batch's cursor never holds a task of a page that is not yet in a yielded batch."""
        plan_id = plan["id"]
        project = ProjectRecord(native_id=plan_id, name=plan.get("title") or plan_id,
                                url=f"https://planner.cloud.microsoft/webui/plan/{plan_id}")
        buckets: dict[str, str] | None = None
        plan_ids: list[str] = []
        first = True
        for page in listing.pages(n):
            plan_ids.extend(str(task.get("id")) for task in page.tasks)
            changed = [task for task in page.tasks if committed.changed(plan_id, task)]
            fresh = self.without_own_edits(plan_id, changed, committed)
            if fresh and buckets is None:
                buckets = listing.buckets(plan_id)
            committed.commit(plan_id, changed)
            if page.final:
                committed.keep_only(plan_id, plan_ids)
            if fresh or first or (page.final and last_plan):
                batch = self.page_batch(plan_id, fresh, buckets or {})
                batch.cursor = committed.to_cursor()
                if first:
                    batch.projects = [project]
                yield batch
            first = False
        listed.update(plan_ids)

    def to_emit(self, plan_id: str, tasks: list[dict[str, Any]], committed: PlanCursor) -> list[dict[str, Any]]:
        """The tasks of a page a pull from `committed` emits (read ahead for: nothing is counted or committed)."""
        changed = [task for task in tasks if committed.changed(plan_id, task)]
        return self._others_edits(plan_id, changed, committed)

    def without_own_edits(self, plan_id: str, tasks: list[dict[str, Any]], committed: PlanCursor,
                          ) -> list[dict[str, Any]]:
        """The changed tasks someone other than pmsync changed: those changed only by pmsync's own write since the
        committed pull (the push echo) are left out; their new ETags are committed all the same."""
        kept = self._others_edits(plan_id, tasks, committed)
        self.echoes_skipped += len(tasks) - len(kept)
        return kept

    def _others_edits(self, plan_id: str, tasks: list[dict[str, Any]], committed: PlanCursor,
                      ) -> list[dict[str, Any]]:
        own = self.own_edits.versions
        if not own:
            return tasks
        return [task for task in tasks if not isinstance(task.get("id"), str) or not own_edit_only(
            task, committed.digest(plan_id, task["id"]), own.get(task["id"], ()))]

    def page_batch(self, plan_id: str, tasks: list[dict[str, Any]], buckets: dict[str, str]) -> Batch:
        """The tasks of a page with their `_pmsync` context, and their assignees as people."""
        batch = Batch()
        for task in tasks:
            for other in assignee_ids(task):
                batch.people.append(self.user(other))
            user_id = first_assignee(task)
            person = self.user(user_id) if user_id else None
            task["_pmsync"] = {
                "bucket_name": buckets.get(str(task.get("bucketId"))),
                "progress": progress_of(task.get("percentComplete")),
                "assignee_id": user_id,
                "assignee_email": person.email if person else None,
                "assignee_name": person.display_name if person else None,
                "categories": sorted(k for k, on in (task.get("appliedCategories") or {}).items()
                                     if on and not k.startswith("@odata.")),
                "url": PLANNER_WEB.format(plan=plan_id, task=task.get("id")),
            }
            batch.records.append(task)
        batch.people = list({p.native_id: p for p in batch.people}.values())
        return batch

    async def read(self, builder: RequestBuilder, doing: str, url: str | None = None) -> Any:
        """GET a resource's JSON through an SDK request builder (or the absolute `url`) on the session's loop, as
        `GraphSession.get_json` does, with at most WORKERS reads in flight and within TOKEN_BUDGET."""
        async with self._slots:
            await asyncio.sleep(self._budget.reserve())
            body = await self.session.fetch_bytes(builder, doing, url)
        return orjson.loads(body) if body else None

    async def read_buckets(self, plan_id: str) -> dict[str, str]:
        """{bucket id: name} of a plan (one request)."""
        listing = await self.read(self.session.client.planner.plans.by_planner_plan_id(plan_id).buckets,
                                  f"reading the buckets of plan {plan_id}")
        return {b["id"]: b.get("name") for b in listing.get("value") or ()}

    @property
    def known_users(self) -> dict[str, PersonRecord]:
        """The users read so far by this connector, by id."""
        return self._users

    async def read_user(self, user_id: str) -> PersonRecord:
        """A user by id (mail and display name), asked once per connector; unnamed if Graph does not know them."""
        if user_id not in self._users:
            try:
                found = await self.read(self.session.client.users.by_user_id(user_id), f"reading user {user_id}")
            except GraphNotFound:  # a removed user must not stop the pull
                log.info("Planner user %s is unknown to Graph; the assignee stays unnamed", user_id)
                found = None
            self._users[user_id] = PersonRecord(
                native_id=user_id,
                display_name=(found or {}).get("displayName"),
                email=(found or {}).get("mail") or (found or {}).get("userPrincipalName"),
            )
        return self._users[user_id]

    def user(self, user_id: str) -> PersonRecord | None:
        """A user by id, asked once per connector (a pull has read its page's users ahead, all at once)."""
        if user_id not in self._users:
            self.session.run(self.read_user(user_id))
        return self._users[user_id]

    def _task_pages(self, plan_id: str) -> Iterator[list[dict[str, Any]]]:
        """A plan's tasks, one page at a time, following `@odata.nextLink`."""
        builder = self.session.client.planner.plans.by_planner_plan_id(plan_id).tasks
        url: str | None = None
        while True:
            page = self.session.get_json(builder, f"listing the tasks of plan {plan_id}", url)
            yield page.get("value") or []
            url = page.get("@odata.nextLink")
            if not url:
                return
