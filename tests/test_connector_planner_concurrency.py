"""The Planner pull's concurrent reads, seen from the Graph emulator's side of the wire: several plans listed at
once, buckets and users read at once, never more than `WORKERS` in flight and no request more than a serial pull
makes; and a pull stopped after its first batch resumes from that batch's cursor with neither gap nor duplicate.
"""
from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.base import Batch
from connectors.planner import USERS_KEY, WORKERS, PlannerConnector, unpack
from pmsync.config import PlannerConnection
from pmsync.errors import ConnectionFailed
from sandbox import graph, ids
from sandbox.core import CREDENTIALS, EmulatorSettings
from sandbox.generator import PLANNER, Portfolio, generate
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, native_id, serve_app

LATENCY_S = 0.05
HOLD_S = 10.0  # how long a plan's listing waits for the others' before it gives up (a serial pull waits this once)


class InFlight:
    """ASGI around an emulator that counts the requests in flight, overall and by kind, and holds each plan's
    task listing until `plans` plans' listings are in flight at once (or HOLD_S passed): a pull that lists plans
    one at a time can never get there, a concurrent one always does, however loaded the machine is."""

    def __init__(self, app: Any, plans: int) -> None:
        self.app = app
        self.plans = plans
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self._all_listing: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = self.kind(scope["path"])
        for key in ("all", kind):
            self.now[key] += 1
            self.most[key] = max(self.most[key], self.now[key])
        try:
            if kind == "tasks":
                await self._hold_until_all_listing()
            await self.app(scope, receive, send)
        finally:
            self.now["all"] -= 1
            self.now[kind] -= 1

    async def _hold_until_all_listing(self) -> None:
        if self._all_listing is None:
            self._all_listing = asyncio.Event()
        if self.now["tasks"] >= self.plans:
            self._all_listing.set()
        try:
            await asyncio.wait_for(self._all_listing.wait(), HOLD_S)
        except TimeoutError:
            pass

    @staticmethod
    def kind(path: str) -> str:
        for kind in ("tasks", "buckets", "users"):
            if f"/{kind}" in path:
                return kind
        return "other"


def connection(url: str, p: Portfolio) -> PlannerConnection:
    return PlannerConnection.model_validate({
        "name": "pmo-planner", "tool": "planner", "base_url": url, "auth": {"token": CREDENTIALS["graph"]["token"]},
        "plans": [ids.graph_id(p, "plan", pr.index) for pr in p.projects_of(PLANNER)],
    })


def pulled_ids(batches: list[Batch]) -> list[str]:
    return [str(record["id"]) for batch in batches for record in batch.records]


@pytest.fixture
def connect() -> Iterator[Any]:
    made: list[PlannerConnector] = []

    def build(url: str, p: Portfolio) -> PlannerConnector:
        made.append(PlannerConnector.from_config(connection(url, p)))
        return made[-1]

    yield build
    for connector in made:
        connector.close()


def test_plans_buckets_and_users_are_read_at_once_within_workers_and_no_request_is_added(connect) -> None:
    p = generate(7, 1000, TEST_AS_OF)
    plans = p.projects_of(PLANNER)
    assert len(plans) >= 2
    emulator = graph.create(p, EmulatorSettings(latency_s=LATENCY_S))
    counted = InFlight(emulator, plans=len(plans))
    with serve_app(counted) as url:
        connector = connect(url + "/v1.0", p)
        batches = list(connector.pull(None))
    indexes = [int(i) for i in p.task_indexes(PLANNER)]
    assert sorted(pulled_ids(batches)) == sorted(native_id(p, i) for i in indexes)
    # Every plan's listing was in flight at once (held for it), and so were the reads of buckets and users...
    assert counted.most["tasks"] == len(plans)
    assert counted.most["users"] > 1
    # ... never more than WORKERS, and the same requests as one at a time: plans, pages, buckets, users.
    assert counted.most["all"] <= WORKERS
    pages = sum(-(-len(p.task_indexes(PLANNER, pr.index)) // graph.PAGE_SIZE) for pr in plans)
    users = len({int(p.tasks.assignee[i]) for i in indexes if p.tasks.assignee[i] >= 0})
    assert connector.stats.requests == emulator.stats.requests == len(plans) * 2 + pages + users
    # Batches come plan by plan in the configured order, each plan's pages in Graph's order.
    order = [pr.native_id for batch in batches for pr in batch.projects]
    assert order == [ids.graph_id(p, "plan", pr.index) for pr in plans]


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A Graph-only sandbox with pages of 5 tasks (several per plan, so later pages are read ahead) and latency
    (reads are in flight when the pull is stopped)."""
    monkeypatch.setattr(graph, "PAGE_SIZE", 5)
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",),
                 latency_s=0.02) as sandbox:
        yield sandbox


def test_a_pull_stopped_after_its_first_batch_resumes_without_gap_or_duplicate(
    box: Sandbox, connect, caplog: pytest.LogCaptureFixture,
) -> None:
    url, p = box.api_url("graph"), box.portfolio
    everything = pulled_ids(list(connect(url, p).pull(None)))
    stopped = connect(url, p)
    pull = stopped.pull(None)
    first = next(pull)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        pull.close()  # reads of later pages and plans are in flight: they are cancelled, not left on the loop
        gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"]
    # The first batch's cursor claims exactly its own tasks, none of the pages read ahead (besides the plans'
    # digests it holds the assignees read, under USERS_KEY).
    claimed = sum(len(unpack(packed)) for plan, packed in first.cursor.items() if plan != USERS_KEY)
    assert claimed == len(first.records) > 0
    rest = pulled_ids(list(connect(url, p).pull(first.cursor)))
    assert pulled_ids([first]) + rest == everything
    # The stopped connector's loop is left clean: it pulls again, the same tasks in the same order.
    assert pulled_ids(list(stopped.pull(None))) == everything


def test_a_failing_plan_fails_the_pull_after_the_plans_before_it(box: Sandbox, connect) -> None:
    url, p = box.api_url("graph"), box.portfolio
    first_plan, second_plan = (ids.graph_id(p, "plan", pr.index) for pr in p.projects_of(PLANNER)[:2])
    box.emulators["graph"].inject("status", status=403, path=f"/planner/plans/{second_plan}/tasks", times=-1)
    batches: list[Batch] = []
    with pytest.raises(ConnectionFailed, match=second_plan):
        for batch in connect(url, p).pull(None):
            batches.append(batch)
    # The second plan is listed alongside the first, but its failure comes in its place: after all of the first.
    assert sorted(pulled_ids(batches)) == sorted(
        native_id(p, int(i)) for i in p.task_indexes(PLANNER, p.projects_of(PLANNER)[0].index))
    assert [pr.native_id for batch in batches for pr in batch.projects] == [first_plan]
