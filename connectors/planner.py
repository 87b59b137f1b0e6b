"""Microsoft Planner through `msgraph-sdk`: plans, buckets and tasks, with changes found by comparing ETags.

Graph v1.0 has no Planner delta and no last-modified field, but every task carries a weak `@odata.etag` that
changes with every change of the task. A pull lists each plan's tasks (`/planner/plans/{id}/tasks`, pages of
about 400 chained by `@odata.nextLink`, one Batch per page) and emits only tasks whose ETag differs from the one
committed in the cursor; on a full pull every task is emitted. The plan's own ETag does not move when a task
changes (in Planner, and in the sandbox), so there is no cheaper probe: `has_changes` lists the tasks too.

The cursor is {plan id: packed digests}: per task 16 characters, 10 of a hash of the task id and 6 of a hash of
its ETag, about 160 KB per 10,000 tasks. Tasks are not ordered by change (Graph offers no such order), so a
batch's cursor holds the digests of every task committed so far; a resumed pull skips those.

Raw records stay as Graph sent them, plus `_pmsync`: `bucket_name`, `progress` (notStarted, inProgress,
completed from percentComplete), `assignee_id`, `assignee_email` and `assignee_name` (the first assignee,
resolved once per user through `/users/{id}`), `categories` (the applied category keys) and `url` (the task in
Planner's web app).

Costs per pull: one request per configured plan (or per configured group, listing its plans), one for the
buckets of each plan that has emitted tasks, one per page of tasks, and one `/users/{id}` per distinct assignee
of emitted tasks not yet resolved by this connector. The census reuses the ids of a pull's complete listing, so
it costs nothing after a pull. Task details (description, checklist, references) are one request per task and
are not read: references that point at another tool's task are therefore not turned into links.
"""
from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Batch, Connector, PersonRecord, ProjectRecord
from connectors.graph import GraphNotFound, GraphSession
from connectors.http import RequestStats
from pmsync.config import PlannerConnection

log = logging.getLogger("pmsync.connectors.planner")

TOOL_LABEL = "Microsoft Planner"
KEY_CHARS = 10
DIGEST_CHARS = 6
ENTRY_CHARS = KEY_CHARS + DIGEST_CHARS
PLANNER_WEB = "https://planner.cloud.microsoft/webui/plan/{plan}/view/board/task/{task}"


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


@dataclass
class PlanCursor:
    """The committed digests of every plan, updated task by task as a pull commits them."""

    plans: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_cursor(cls, cursor: dict[str, str] | None) -> PlanCursor:
        return cls({plan: unpack(packed) for plan, packed in (cursor or {}).items()})

    def to_cursor(self) -> dict[str, str]:
        return {plan: pack(digests) for plan, digests in sorted(self.plans.items())}

    def changed(self, plan_id: str, task: dict[str, Any]) -> bool:
        """True when the task's ETag is not the one committed (new tasks and unreadable ones included)."""
        task_id = task.get("id")
        if not isinstance(task_id, str):
            return True
        return self.plans.get(plan_id, {}).get(task_key(task_id)) != etag_digest(task.get("@odata.etag"))

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


# -- the connector --------------------------------------------------------------------------------------------

class PlannerConnector(Connector):
    """The configured Planner plans (and every plan of the configured groups) of one tenant."""

    tool = "planner"

    def __init__(self, name: str, session: GraphSession, plans: list[str], groups: list[str] | None = None) -> None:
        super().__init__(name)
        self.session = session
        self.stats = session.stats  # the session's transport counts every attempt there
        self.plan_ids = list(plans)
        self.groups = list(groups or [])
        self._plans: list[dict[str, Any]] | None = None
        self._users: dict[str, PersonRecord] = {}
        self._listed: set[str] | None = None

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
        plans = self.plans()
        committed.retain_plans(plan["id"] for plan in plans)
        listed: set[str] = set()
        for n, plan in enumerate(plans):
            yield from self._pull_plan(plan, committed, listed, last_plan=n == len(plans) - 1)
        self._listed = listed

    def census(self) -> Iterator[str]:
        """Every task id of the plans: from the listing of this connector's last complete pull, else listed now."""
        if self._listed is not None:
            yield from sorted(self._listed)
            return
        for plan in self.plans():
            for page in self._task_pages(plan["id"]):
                for task in page:
                    yield str(task["id"])

    def has_changes(self, cursor: dict[str, str] | None) -> bool:
        """List the plans' tasks and compare ETags with `cursor` (v1.0 offers nothing cheaper: a plan's ETag does
        not change with its tasks). True at the first difference, added or deleted tasks included."""
        if not cursor:
            return True
        committed = PlanCursor.from_cursor(cursor)
        plans = self.plans()
        if {plan["id"] for plan in plans} != set(committed.plans):
            return True
        for plan in plans:
            seen = 0
            for page in self._task_pages(plan["id"]):
                seen += len(page)
                if any(committed.changed(plan["id"], task) for task in page):
                    return True
            if seen != len(committed.plans[plan["id"]]):
                return True
        return False

    def close(self) -> None:
        self.session.close()

    # -- pieces -----------------------------------------------------------------------------------------------
    def plans(self) -> list[dict[str, Any]]:
        """The plans to pull, as Graph describes them: the configured ones, then each configured group's (one
        request per plan or group, asked once per connector)."""
        if self._plans is None:
            found: dict[str, dict[str, Any]] = {}
            plans_api = self.session.client.planner.plans
            for plan_id in self.plan_ids:
                found[plan_id] = self.session.get_json(plans_api.by_planner_plan_id(plan_id), f"reading plan {plan_id}")
            for group in self.groups:
                listing = self.session.get_json(self.session.client.groups.by_group_id(group).planner.plans,
                                                f"listing the plans of group {group}")
                for plan in listing.get("value") or ():
                    found.setdefault(plan["id"], plan)
            self._plans = list(found.values())
        return self._plans

    def _pull_plan(self, plan: dict[str, Any], committed: PlanCursor, listed: set[str],
                   last_plan: bool) -> Iterator[Batch]:
        plan_id = plan["id"]
        project = ProjectRecord(native_id=plan_id, name=plan.get("title") or plan_id,
                                url=f"https://planner.cloud.microsoft/webui/plan/{plan_id}")
        buckets: dict[str, str] | None = None
        plan_ids: list[str] = []
        pages = self._task_pages(plan_id)
        page = next(pages, [])
        first = True
        while True:
            following = next(pages, None)
            plan_ids.extend(str(task.get("id")) for task in page)
            fresh = [task for task in page if committed.changed(plan_id, task)]
            if fresh and buckets is None:
                buckets = self.bucket_names(plan_id)
            committed.commit(plan_id, fresh)
            final = following is None
            if final:
                committed.keep_only(plan_id, plan_ids)
            if fresh or first or (final and last_plan):
                batch = self.page_batch(plan_id, fresh, buckets or {})
                batch.cursor = committed.to_cursor()
                if first:
                    batch.projects = [project]
                yield batch
            first = False
            if final:
                break
            page = following
        listed.update(plan_ids)

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

    def bucket_names(self, plan_id: str) -> dict[str, str]:
        """{bucket id: name} of a plan (one request)."""
        listing = self.session.get_json(self.session.client.planner.plans.by_planner_plan_id(plan_id).buckets,
                                        f"reading the buckets of plan {plan_id}")
        return {b["id"]: b.get("name") for b in listing.get("value") or ()}

    def user(self, user_id: str) -> PersonRecord | None:
        """A user by id (mail and display name), asked once per connector; None if Graph does not know them."""
        if user_id not in self._users:
            try:
                found = self.session.get_json(self.session.client.users.by_user_id(user_id),
                                              f"reading user {user_id}")
            except GraphNotFound:  # a removed user must not stop the pull
                log.info("Planner user %s is unknown to Graph; the assignee stays unnamed", user_id)
                found = None
            self._users[user_id] = PersonRecord(
                native_id=user_id,
                display_name=(found or {}).get("displayName"),
                email=(found or {}).get("mail") or (found or {}).get("userPrincipalName"),
            )
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
