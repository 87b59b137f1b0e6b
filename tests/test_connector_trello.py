"""The Trello connector against the Trello emulator over HTTP: what a pull yields, costs, and how it recovers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from connectors.base import Batch
from connectors.http import BudgetPacer as Pacer
from connectors.trello import TOKEN_BUDGET, CardHistory, TrelloConnector, attachment_links
from mappings.mapping import load_mapping
from pmsync.config import TrelloConnection
from pmsync.errors import ConnectionFailed
from pmsync.sync import sync_connection
from sandbox import ids
from sandbox.core import CREDENTIALS, RateLimit
from sandbox.generator import DONE, LINK_ATTACHMENT, NO_DAY, STATUS_CATEGORIES, TRELLO, day_to_date
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, native_id, task_uid
from sandbox.trello import DONE_LIST
from warehouse import open_warehouse

CONNECTION = "ops-trello"
KEY, TOKEN = CREDENTIALS["trello"]["key"], CREDENTIALS["trello"]["token"]
REPO = Path(__file__).resolve().parents[1]
# Columns that say when pmsync ran, not what the tool holds.
RUN_TIMES = {"tasks": ["first_seen_at", "last_synced_at"], "projects": ["first_seen_at", "last_synced_at"],
             "dependencies": ["last_seen_at"], "people": ["updated_at"], "task_history": [],
             "quarantine": ["run_id", "quarantined_at"]}


def _trello_only_sandbox() -> Sandbox:
    return Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("trello",))


@pytest.fixture(scope="module")
def shared_box() -> Iterator[Sandbox]:
    """A read-only sandbox serving only Trello, shared by the module."""
    with _trello_only_sandbox() as box:
        yield box


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """A sandbox serving only Trello that one test may change."""
    with _trello_only_sandbox() as sandbox_:
        yield sandbox_


def connection(box: Sandbox, **overrides: Any) -> TrelloConnection:
    p = box.portfolio
    raw = {"name": CONNECTION, "tool": "trello", "base_url": box.api_url("trello"),
           "auth": {"key": KEY, "token": TOKEN},
           "boards": [ids.trello_object_id(p, 1, pr.index) for pr in p.projects_of(TRELLO)], **overrides}
    return TrelloConnection.model_validate(raw)


@pytest.fixture
def connect() -> Iterator[Any]:
    """Build connectors for a sandbox and close them after the test."""
    made: list[TrelloConnector] = []

    def build(box: Sandbox, **overrides: Any) -> TrelloConnector:
        connector = TrelloConnector.from_config(connection(box, **overrides))
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


def cards(box: Sandbox) -> list[int]:
    return [int(i) for i in box.portfolio.task_indexes(TRELLO)]


def boards(box: Sandbox) -> int:
    return len(box.portfolio.projects_of(TRELLO))


def pulled_ids(batches: list[Batch]) -> list[str]:
    return [record["id"] for batch in batches for record in batch.records]


def world(box: Sandbox) -> Any:
    return box.emulators["trello"].world


def _day(value: Any) -> date | None:
    return None if pd.isna(value) else pd.Timestamp(value).date()


def _due(p: Any, i: int) -> date | None:
    return day_to_date(int(p.tasks.due[i])) if p.tasks.due[i] != NO_DAY else None


def sync(box: Sandbox, warehouse: Any, connector: TrelloConnector | None = None, **options: Any) -> Any:
    connector = connector or TrelloConnector.from_config(connection(box))
    try:
        return sync_connection(connector, load_mapping("trello"), warehouse, **options)
    finally:
        connector.close()


def last_run(warehouse: Any) -> pd.Series:
    runs = warehouse.read("sync_runs").sort_values("started_at")
    return runs.iloc[-1]


# -- a full pull ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_pull(shared_box: Sandbox) -> tuple[list[Batch], dict[str, float]]:
    connector = TrelloConnector.from_config(connection(shared_box))
    try:
        return list(connector.pull(None)), connector.stats.snapshot()
    finally:
        connector.close()


def test_full_pull_yields_every_card_once_archived_ones_included(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    pulled = pulled_ids(batches)
    assert sorted(pulled) == sorted(native_id(p, i) for i in cards(shared_box))
    assert len(pulled) == len(set(pulled))
    assert any(record["closed"] for batch in batches for record in batch.records)
    record = batches[0].records[0]
    assert {"customFieldItems", "attachments", "shortLink", "idList"} <= set(record) and "actions" not in record


def test_full_pull_costs_one_board_read_one_action_page_and_one_card_page_per_board(
    shared_box: Sandbox, full_pull,
) -> None:
    batches, stats = full_pull
    # members/me, then per board (each under 1000 cards and actions): the board, its actions, its cards.
    assert stats["requests"] == 1 + 3 * boards(shared_box)
    assert len(batches) == boards(shared_box)
    assert batches[-1].cursor is not None and set(batches[-1].cursor) == set(connection(shared_box).boards)


def test_due_date_history_equals_the_portfolios_changes(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    pulled: dict[str, list[tuple[float, Any, Any]]] = {}
    for batch in batches:
        in_batch = {record["id"] for record in batch.records}
        for change in batch.due_changes:
            assert change.native_id in in_batch  # history travels with its card
            pulled.setdefault(change.native_id, []).append(
                (change.changed_at.timestamp(), change.old_due, change.new_due))
    expected = {native_id(p, i): [(c.at, day_to_date(c.old_day), day_to_date(c.new_day)) for c in p.due_changes(i)]
                for i in cards(shared_box) if p.due_changes(i)}
    assert expected, "the sandbox should reschedule some Trello cards"
    assert pulled.keys() == expected.keys()
    for card_id, changes in expected.items():
        got = sorted(pulled[card_id])
        assert [(old, new) for _, old, new in got] == [(old, new) for _, old, new in changes]
        assert all(abs(a - b) <= 0.001 for (a, _, _), (b, _, _) in zip(got, changes))


def test_url_attachments_to_other_tools_become_remote_links(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    links = [link for batch in batches for link in batch.links]
    expected = sorted((native_id(p, int(p.link_succ[k])), ids.task_url(p, int(p.link_pred[k])))
                      for k in p.links_of(LINK_ATTACHMENT) if p.tasks.tool[p.link_succ[k]] == TRELLO)
    assert expected
    assert sorted((link.successor_native_id, link.predecessor_url) for link in links) == expected
    assert {link.origin for link in links} == {"remote_link"}
    assert {c for batch in batches for c in batch.covers_links_of} == set(pulled_ids(batches))


def test_completion_time_is_the_move_into_the_done_list(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    completed = {r["id"]: r["_pmsync"]["completed_at"] for batch in batches for r in batch.records}
    done = [i for i in cards(shared_box) if p.tasks.status[i] == DONE]
    assert done
    for i in done:
        got = pd.Timestamp(completed[native_id(p, i)]).timestamp()
        assert abs(got - float(p.tasks.completed[i])) <= 1.0, i
    assert all(completed[native_id(p, i)] is None for i in cards(shared_box) if p.tasks.status[i] != DONE)


def test_people_are_board_members_and_only_the_tokens_owner_has_an_email(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    people = {person.native_id: person for batch in batches for person in batch.people}
    assignees = {int(p.tasks.assignee[i]) for i in cards(shared_box) if p.tasks.assignee[i] >= 0}
    assert {world(shared_box).member_id(a) for a in assignees} <= set(people)
    with_email = [person for person in people.values() if person.email]
    assert [(person.display_name, person.email) for person in with_email] == [
        ("Sandbox Coordinator", CREDENTIALS["jira"]["email"])]
    some = next(iter(assignees))
    assert people[world(shared_box).member_id(some)].display_name == p.people[some].display_name(TRELLO)


def test_census_lists_every_card_in_one_request_per_board(shared_box: Sandbox, connect) -> None:
    connector = connect(shared_box)
    assert sorted(connector.census()) == sorted(native_id(shared_box.portfolio, i) for i in cards(shared_box))
    assert connector.stats.requests == boards(shared_box)


# -- syncs into the warehouse -----------------------------------------------------------------------------------

def test_full_sync_loads_every_card_with_the_portfolios_truth(box: Sandbox, warehouse) -> None:
    p = box.portfolio
    result = sync(box, warehouse, full=True)
    assert result.ok and result.quarantined == 0
    tasks = warehouse.read("tasks").set_index("task_uid")
    assert sorted(tasks.index) == sorted(task_uid(p, i) for i in cards(box))
    for i in cards(box):
        row = tasks.loc[task_uid(p, i)]
        assert _day(row["due_date"]) == _due(p, i), i
        start = day_to_date(int(p.tasks.start[i])) if p.tasks.start[i] != NO_DAY else None
        assert _day(row["start_date"]) == start, i
        assert row["status_category"] == STATUS_CATEGORIES[int(p.tasks.status[i])], i
        assert row["parent_uid"] is None or pd.isna(row["parent_uid"])
        assert row["key"] == ids.trello_short_link(p, i)
        assert row["project_uid"] == f"{CONNECTION}:{ids.trello_object_id(p, 1, int(p.tasks.project[i]))}"
    # members/me + 3 per board; the census reuses the cards the pull just listed.
    assert last_run(warehouse)["requests"] == 1 + 3 * boards(box)

    history = warehouse.query(
        "SELECT task_uid, valid_from, due_date FROM task_history WHERE source = 'tool_history'")
    rescheduled = [i for i in cards(box) if p.due_changes(i)]
    for i in rescheduled:
        rows = history[history["task_uid"] == task_uid(p, i)].sort_values("valid_from")
        assert [_day(d) for d in rows["due_date"]][-len(p.due_changes(i)):] == \
            [day_to_date(c.new_day) for c in p.due_changes(i)], i

    links = warehouse.read("dependencies")
    expected = sorted((f"url:{ids.task_url(p, int(p.link_pred[k]))}", task_uid(p, int(p.link_succ[k])))
                      for k in p.links_of(LINK_ATTACHMENT) if p.tasks.tool[p.link_succ[k]] == TRELLO)
    assert sorted(zip(links["predecessor_uid"], links["successor_uid"])) == expected


def test_incremental_sync_after_ten_changes_reads_only_those_cards(box: Sandbox, warehouse) -> None:
    p = box.portfolio
    sync(box, warehouse, full=True)
    before = warehouse.read("tasks").set_index("task_uid")
    open_cards = [i for i in cards(box) if p.tasks.status[i] != DONE]
    changed = open_cards[:10]
    for i in changed[:7]:
        box.call(p.set_due, i, int(p.tasks.due[i]) + 3 if p.tasks.due[i] != NO_DAY else 20_800)
    for i in changed[7:]:
        box.call(world(box).move_card, i, world(box).list_id(int(p.tasks.project[i]), DONE_LIST))
    touched_boards = len({int(p.tasks.project[i]) for i in changed})

    result = sync(box, warehouse)
    assert result.mode == "incremental" and result.pulled == len(changed)
    # members/me, per board its new actions, per board with changes the board itself, one read per changed card,
    # then the census.
    assert last_run(warehouse)["requests"] == 1 + boards(box) + touched_boards + len(changed) + boards(box)
    after = warehouse.read("tasks").set_index("task_uid")
    for i in changed[:7]:
        assert _day(after.loc[task_uid(p, i), "due_date"]) == _due(p, i)
    for i in changed[7:]:
        row = after.loc[task_uid(p, i)]
        assert row["status_category"] == "done" and row["status"] == "Done" and pd.notna(row["completed_at"])
    unchanged = [task_uid(p, i) for i in cards(box) if i not in changed]
    columns = [c for c in before.columns if c not in ("last_synced_at",)]
    pd.testing.assert_frame_equal(before.loc[unchanged, columns], after.loc[unchanged, columns])
    # The whole history came along: every due date the card had, in order (the newest one observed at the same
    # instant as the change, so the observed version holds it).
    history = warehouse.read("task_history")
    for i in changed[:7]:
        rows = history[history["task_uid"] == task_uid(p, i)].sort_values("valid_from")
        dues = [d for d in rows["due_date"].map(_day).tolist()]
        expected = [day_to_date(p.original_due(i))] + [day_to_date(c.new_day) for c in p.due_changes(i)]
        assert [d for k, d in enumerate(dues) if k == 0 or d != dues[k - 1]] == expected, i

    quiet = sync(box, warehouse)
    assert quiet.pulled == 0
    assert last_run(warehouse)["requests"] == boards(box) + boards(box)  # the action probes and the census


def test_a_deleted_card_gets_deleted_at_and_nothing_else_changes(box: Sandbox, warehouse) -> None:
    p = box.portfolio
    sync(box, warehouse, full=True)
    before = warehouse.read("tasks").set_index("task_uid")
    gone = cards(box)[5]
    box.call(world(box).delete_card, gone)
    result = sync(box, warehouse)
    assert result.deleted == 1 and result.pulled == 0
    after = warehouse.read("tasks").set_index("task_uid")
    assert pd.notna(after.loc[task_uid(p, gone), "deleted_at"])
    others = [uid for uid in before.index if uid != task_uid(p, gone)]
    columns = [c for c in before.columns if c != "last_synced_at"]
    pd.testing.assert_frame_equal(before.loc[others, columns], after.loc[others, columns])
    assert after.loc[others, "deleted_at"].isna().all()


def test_a_malformed_card_is_quarantined_while_the_rest_load(box: Sandbox, warehouse) -> None:
    p = box.portfolio
    fault = box.emulators["trello"].inject("invalid_record", path=r"/boards/[^/]+/cards$", times=1)
    result = sync(box, warehouse, full=True)
    assert fault.fired == 1 and result.quarantined == 1
    quarantine = warehouse.read("quarantine")
    assert len(quarantine) == 1
    row = quarantine.iloc[0]
    assert "next tuesday-ish" in row["raw_payload"] and "due" in row["reason"]
    loaded = set(warehouse.read("tasks")["native_id"])
    assert loaded | {row["native_id"]} == {native_id(p, i) for i in cards(box)}
    assert row["native_id"] not in loaded


def test_a_sync_killed_mid_way_then_resumed_leaves_what_an_uninterrupted_sync_leaves(
    box: Sandbox, backend, tmp_path: Path,
) -> None:
    box.emulators["trello"].settings.latency_s = 0.15
    settings = connection(box).model_dump(mode="json") | {"auth": {"key": KEY, "token": TOKEN}}
    script = textwrap.dedent(f"""
        from pmsync.config import TrelloConnection
        from connectors.trello import TrelloConnector
        from mappings.mapping import load_mapping
        from pmsync.sync import Progress, sync_connection
        from warehouse import open_warehouse
        connector = TrelloConnector.from_config(TrelloConnection.model_validate({settings!r}))
        connector.page_size = 10
        warehouse = open_warehouse({backend.url!r}, {str(backend.base_dir)!r}, schema={backend.schema!r})
        committed = Progress(advance=lambda name, records: print("committed", flush=True))
        sync_connection(connector, load_mapping("trello"), warehouse, full=True, progress=committed)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    stuck = threading.Timer(60, process.kill)  # a sync that never commits ends the wait (and fails the test)
    stuck.start()
    try:
        # The first batch is committed (boards are read ahead, so served card pages say nothing of commits); the
        # sync is far from done: every board has more pages, each 0.15 s away.
        assert process.stdout is not None and process.stdout.readline().strip() == "committed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        stuck.cancel()
    assert process.returncode == -signal.SIGKILL
    box.emulators["trello"].settings.latency_s = 0.0

    resumed = backend.open()
    try:
        partial = resumed.count("tasks")
        assert 10 <= partial < len(cards(box))  # the first batch committed, the last not
        assert set(orjson.loads(resumed.get_cursor(CONNECTION, "pull"))) < set(connection(box).boards)
        connector = TrelloConnector.from_config(connection(box))
        connector.page_size = 10
        result = sync(box, resumed, connector)
        assert result.ok and result.mode == "incremental"
        interrupted = snapshot(resumed)
    finally:
        resumed.close()
    expected = uninterrupted(backend, tmp_path, lambda reference: sync(box, reference, full=True))
    for table, frame in expected.items():
        pd.testing.assert_frame_equal(interrupted[table], frame, obj=table)


def uninterrupted(backend: Any, tmp_path: Path, full_sync: Callable[[Any], Any]) -> dict[str, pd.DataFrame]:
    """The snapshot of a warehouse that one uninterrupted full sync (`full_sync(warehouse)`) filled: what a crashed
    and resumed sync must leave."""
    reference = open_warehouse("duckdb:///reference/pmsync.duckdb", tmp_path) if backend.name == "duckdb" else \
        open_warehouse(backend.url, tmp_path, schema=f"{backend.schema}_ref")
    try:
        full_sync(reference)
        return snapshot(reference)
    finally:
        if backend.name == "postgres":
            reference.execute(f'DROP SCHEMA IF EXISTS "{backend.schema}_ref" CASCADE')
        reference.close()


def snapshot(warehouse: Any) -> dict[str, pd.DataFrame]:
    """The warehouse's tables without the columns that say when the sync ran, in a stable order."""
    out = {}
    for table, run_times in RUN_TIMES.items():
        frame = warehouse.read(table).drop(columns=run_times)
        out[table] = frame.sort_values(list(frame.columns[:2])).reset_index(drop=True)
    cursor = warehouse.get_cursor(CONNECTION, "pull")
    out["cursor"] = pd.DataFrame({"value": [cursor]})
    return out


# -- incremental pulls, cursors and probes --------------------------------------------------------------------

def test_resuming_from_any_batch_cursor_neither_repeats_nor_skips(box: Sandbox, connect) -> None:
    connector = connect(box)
    connector.page_size = 10
    batches = list(connector.pull(None))
    assert len(batches) > 3
    everything = sorted(pulled_ids(batches))
    for k, batch in enumerate(batches):
        resumed = connect(box)
        resumed.page_size = 10
        rest = pulled_ids(list(resumed.pull(batch.cursor)))
        done = pulled_ids(batches[: k + 1])
        # A board not finished when the cursor was written is pulled again whole; finished ones are not.
        finished = set(batch.cursor or {})
        assert not set(rest) & {r["id"] for b in batches[: k + 1] for r in b.records if r["idBoard"] in finished}
        assert sorted(set(done) | set(rest)) == everything, k


def test_has_changes_probes_one_action_per_board(box: Sandbox, connect) -> None:
    p = box.portfolio
    cursor = list(connect(box).pull(None))[-1].cursor
    probe = connect(box)
    emulator = box.emulators["trello"]
    emulator.settings.latency_s = 0.2  # long enough that requests sent together are seen together
    box.call(emulator.reset_stats)
    assert not probe.has_changes(cursor)
    assert probe.stats.requests == boards(box)
    # The boards are probed side by side, and listed side by side by a census after an incremental pull.
    assert boards(box) >= 2 and box.call(lambda: emulator.stats.peak_in_flight) == boards(box)
    box.call(emulator.reset_stats)
    assert len(list(probe.census())) == len(cards(box))
    assert box.call(lambda: emulator.stats.peak_in_flight) == boards(box)
    emulator.settings.latency_s = 0.0
    assert connect(box).has_changes(None)
    i = cards(box)[0]
    box.call(p.set_due, i, int(p.tasks.due[i]) + 1 if p.tasks.due[i] != NO_DAY else 20_800)
    assert connect(box).has_changes(cursor)


def test_an_incremental_pull_carries_each_changed_cards_whole_due_history(box: Sandbox, connect) -> None:
    p = box.portfolio
    cursor = list(connect(box).pull(None))[-1].cursor
    i = next(i for i in cards(box) if len(p.due_changes(i)) >= 2)
    box.call(p.set_due, i, int(p.tasks.due[i]) + 5)
    again = list(connect(box).pull(cursor))
    assert pulled_ids(again) == [native_id(p, i)]
    changes = [(c.old_due, c.new_due) for batch in again for c in batch.due_changes]
    assert changes == [(day_to_date(c.old_day), day_to_date(c.new_day)) for c in p.due_changes(i)]


def test_an_attachment_to_a_card_of_a_configured_board_is_a_native_link(box: Sandbox, connect) -> None:
    p = box.portfolio
    successor, predecessor = cards(box)[2], cards(box)[-1]
    target = f"https://trello.com/c/{ids.trello_short_link(p, predecessor)}"
    box.call(world(box).add_attachment, successor, {"url": target})
    box.call(world(box).add_attachment, successor, {"url": "https://docs.example.com/spec.pdf"})
    batches = list(connect(box).pull(None))
    links = [link for batch in batches for link in batch.links
             if link.successor_native_id == native_id(p, successor)]
    assert [(link.predecessor_native_id, link.origin) for link in links] == [(native_id(p, predecessor), "native")]


# -- throttling and failures ------------------------------------------------------------------------------------

def test_429s_without_retry_after_are_absorbed_and_counted(box: Sandbox, connect) -> None:
    box.emulators["trello"].settings.rate_limit = RateLimit(3, 1.0, send_retry_after=False)
    connector = connect(box)
    batches = list(connector.pull(None))
    assert sorted(pulled_ids(batches)) == sorted(native_id(box.portfolio, i) for i in cards(box))
    assert connector.stats.throttled > 0
    assert connector.stats.throttled == box.emulators["trello"].stats.rate_limited


def test_configured_rate_spaces_requests_and_the_default_stays_under_the_token_budget() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    paced = Pacer(1, 0.5, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        paced.wait()
    assert slept == [0.5, 0.5, 0.5]

    slept.clear()
    budget = Pacer.for_rate(None, TOKEN_BUDGET)
    budget.clock, budget.sleep = (lambda: now[0]), sleep
    start = now[0]
    for _ in range(200):
        budget.wait()
    sent = list(budget.sent)
    assert budget.limit <= 100 and now[0] - start >= 10.0
    assert all(b - a >= budget.window_s for a, b in zip(sent, sent[budget.limit:]))


def test_a_wrong_token_gives_one_sentence_without_the_secrets(box: Sandbox) -> None:
    wrong = "ATTA-not-the-sandbox-token-0123456789"
    connector = TrelloConnector.from_config(connection(box, auth={"key": KEY, "token": wrong}))
    try:
        with pytest.raises(ConnectionFailed) as failure:
            connector.check()
        with pytest.raises(ConnectionFailed):
            list(connector.pull(None))
    finally:
        connector.close()
    message = str(failure.value)
    assert box.api_url("trello") in message and "auth.token" in message and CONNECTION in message
    assert wrong not in message and KEY not in message and TOKEN not in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_an_unknown_board_is_named_in_the_failure(box: Sandbox, connect) -> None:
    connector = connect(box, boards=["0123456789abcdef01234567"])
    with pytest.raises(ConnectionFailed, match="0123456789abcdef01234567"):
        list(connector.pull(None))


# -- pure pieces ------------------------------------------------------------------------------------------------

def test_history_reads_due_changes_and_the_latest_move_in_order() -> None:
    from zoneinfo import ZoneInfo

    history = CardHistory(ZoneInfo("America/Toronto"))
    card = {"id": "c1", "idList": "done", "dueComplete": True, "dateLastActivity": "2026-01-09T00:00:00.000Z"}
    history.read([
        {"type": "createCard", "date": "2026-01-01T10:00:00.000Z",
         "data": {"card": {"id": "c1"}, "list": {"id": "todo"}}},
        {"type": "updateCard", "date": "2026-01-02T10:00:00.000Z",
         "data": {"card": {"id": "c1", "due": "2026-02-03T02:00:00.000Z"}, "old": {"due": None}}},
        {"type": "updateCard", "date": "2026-01-05T10:00:00.000Z",
         "data": {"card": {"id": "c1", "idList": "done"}, "old": {"idList": "todo"}, "listAfter": {"id": "done"}}},
    ])
    [change] = history.due_changes["c1"]
    assert (change.old_due, change.new_due) == (None, date(2026, 2, 2))  # 02:00Z is the evening before in Toronto
    assert history.completed_at(card, done=True) == "2026-01-05T10:00:00.000Z"
    assert history.completed_at({**card, "idList": "todo", "dueComplete": False}, done=False) is None


def test_only_task_urls_of_other_tools_are_dependencies() -> None:
    card = {"id": "c1", "attachments": [
        {"url": "https://acme.atlassian.net/browse/PLAT-7"}, {"url": "https://acme.atlassian.net/browse/PLAT-7"},
        {"url": "https://app.asana.com/0/1201/1209"}, {"url": "https://example.com/notes.pdf"},
        {"url": "https://trello.com/c/AbCdEfGh/12-elsewhere"},
    ]}
    links = attachment_links(card, lambda short: None)
    assert [(link.predecessor_url, link.origin) for link in links] == [
        ("https://acme.atlassian.net/browse/PLAT-7", "remote_link"),
        ("https://app.asana.com/0/1201/1209", "remote_link"),
        ("https://trello.com/c/AbCdEfGh/12-elsewhere", "remote_link")]


def test_actions_made_in_the_same_second_as_the_cursor_are_not_missed_and_seen_ones_are_skipped():
    from connectors.trello import OVERLAP_S, action_second, position_after, since_of

    newest = "6a5f861e" + "ff" * 8  # ids within one second are not ordered by time
    older_same_second = "6a5f861e" + "00" * 8
    position = position_after([{"id": newest}, {"id": older_same_second}], set())
    since, seen = since_of(position)
    assert seen == {newest, older_same_second}
    assert since.startswith("20") and since.endswith("Z")
    later = "6a5f861e" + "11" * 8  # arrives after the read, in the same second, with a lower id than `newest`
    assert later not in seen and later < newest
    assert action_second(later) - OVERLAP_S < action_second(newest)
