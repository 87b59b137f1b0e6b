"""The Jira connector against the Jira emulator over HTTP: what a pull yields, what it costs, how it recovers."""
from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import connectors.jira as jira_module
from connectors.ahead import read_ahead_now
from connectors.base import Batch
from connectors.jira import (
    REMOTE_LINK_WORKERS,
    JiraConnector,
    Watermark,
    census_jql,
    parse_jira_time,
    pull_jql,
    requested_fields,
)
from mappings.mapping import load_mapping
from mappings.normalize import normalize_tasks
from pmsync.config import JiraConnection
from pmsync.errors import ConnectionFailed
from sandbox import ids
from sandbox.core import CREDENTIALS, RateLimit
from sandbox.generator import JIRA, LINK_NATIVE, LINK_REMOTE, NO_DAY, STATUS_CATEGORIES, day_to_date
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, native_id, serve_app

CONNECTION = "eng-jira"
EMAIL, TOKEN = CREDENTIALS["jira"]["email"], CREDENTIALS["jira"]["token"]


def _jira_only_sandbox() -> Sandbox:
    return Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("jira",))


@pytest.fixture(scope="module")
def shared_box() -> Iterator[Sandbox]:
    """A read-only sandbox serving only Jira, shared by the module."""
    with _jira_only_sandbox() as box:
        yield box


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """A sandbox serving only Jira that one test may change."""
    with _jira_only_sandbox() as sandbox_:
        yield sandbox_


def connection(box: Sandbox, **overrides: Any) -> JiraConnection:
    p = box.portfolio
    assert p is not None
    raw = {"name": CONNECTION, "tool": "jira", "url": box.urls["jira"], "auth": {"email": EMAIL, "token": TOKEN},
           "projects": [pr.key for pr in p.projects_of(JIRA)], **overrides}
    return JiraConnection.model_validate(raw)


@pytest.fixture
def connect() -> Iterator[Any]:
    """Build connectors for a sandbox and close them after the test."""
    made: list[JiraConnector] = []

    def build(box: Sandbox, **overrides: Any) -> JiraConnector:
        connector = JiraConnector.from_config(connection(box, **overrides))
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


def jira_tasks(box: Sandbox) -> list[int]:
    assert box.portfolio is not None
    return [int(i) for i in box.portfolio.task_indexes(JIRA)]


def pulled_ids(batches: list[Batch]) -> list[str]:
    return [str(record["id"]) for batch in batches for record in batch.records]


def search_requests(box: Sandbox) -> int:
    return box.emulators["jira"].stats.by_route["GET /rest/api/{version}/search/jql"]


# -- a full pull ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_pull(shared_box: Sandbox) -> tuple[list[Batch], dict[str, float]]:
    connector = JiraConnector.from_config(connection(shared_box))
    try:
        batches = list(connector.pull(None))
        return batches, connector.stats.snapshot()
    finally:
        connector.close()


def test_full_pull_yields_every_issue_once_with_the_portfolios_fields(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    pulled = pulled_ids(batches)
    assert sorted(pulled) == sorted(native_id(p, i) for i in jira_tasks(shared_box))
    assert len(pulled) == len(set(pulled))

    records = [record for batch in batches for record in batch.records]
    page = normalize_tasks(records, load_mapping("jira"), CONNECTION)
    assert page.quarantine.empty
    tasks = page.tasks.set_index("native_id")
    t = p.tasks
    for i in jira_tasks(shared_box):
        row = tasks.loc[native_id(p, i)]
        due = day_to_date(int(t.due[i])) if t.due[i] != NO_DAY else None
        assert _day(row["due_date"]) == due, i
        parent = int(t.parent[i])
        expected_parent = f"{CONNECTION}:{native_id(p, parent)}" if parent >= 0 and t.tool[parent] == JIRA else None
        assert (None if pd.isna(row["parent_uid"]) else row["parent_uid"]) == expected_parent, i
        assert row["status_category"] == STATUS_CATEGORIES[int(t.status[i])], i
        assert row["key"] == ids.jira_key(p, i)


def _day(value: Any) -> date | None:
    return None if pd.isna(value) else pd.Timestamp(value).date()


def test_due_date_history_equals_the_portfolios_changes(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    pulled: dict[str, list[tuple[float, Any, Any]]] = {}
    for batch in batches:
        for change in batch.due_changes:
            pulled.setdefault(change.native_id, []).append(
                (change.changed_at.timestamp(), change.old_due, change.new_due))
    expected = {}
    for i in jira_tasks(shared_box):
        changes = [(c.at, day_to_date(c.old_day), day_to_date(c.new_day)) for c in p.due_changes(i)]
        if changes:
            expected[native_id(p, i)] = changes
    assert expected, "the sandbox should reschedule some Jira issues"
    assert pulled.keys() == expected.keys()
    for issue_id, changes in expected.items():
        got = pulled[issue_id]
        assert [(old, new) for _, old, new in got] == [(old, new) for _, old, new in changes]
        assert all(abs(a - b) <= 0.001 for (a, _, _), (b, _, _) in zip(got, changes))


def test_blocks_links_are_emitted_once_from_the_successors_side(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    native = [link for batch in batches for link in batch.links if link.origin == "native"]
    tool = p.tasks.tool
    expected = sorted(
        (native_id(p, int(p.link_succ[k])), native_id(p, int(p.link_pred[k])))
        for k in p.links_of(LINK_NATIVE)
        if tool[p.link_pred[k]] == JIRA and tool[p.link_succ[k]] == JIRA
    )
    assert expected
    assert sorted((link.successor_native_id, link.predecessor_native_id) for link in native) == expected


def test_remote_links_point_at_the_predecessors_in_other_tools(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    remote = [link for batch in batches for link in batch.links if link.origin == "remote_link"]
    expected = sorted(
        (native_id(p, int(p.link_succ[k])), ids.task_url(p, int(p.link_pred[k])))
        for k in p.links_of(LINK_REMOTE) if p.tasks.tool[p.link_succ[k]] == JIRA
    )
    assert expected
    assert sorted((link.successor_native_id, link.predecessor_url) for link in remote) == expected
    assert all(link.predecessor_native_id is None for link in remote)
    covered = {issue_id for batch in batches for issue_id in batch.covers_links_of}
    assert covered == set(pulled_ids(batches))


def test_first_batch_carries_the_projects_and_batches_carry_assignees(shared_box: Sandbox, full_pull) -> None:
    p = shared_box.portfolio
    batches, _ = full_pull
    assert [(pr.native_id, pr.name) for pr in batches[0].projects] == [(pr.key, pr.name)
                                                                       for pr in p.projects_of(JIRA)]
    assert all(not batch.projects for batch in batches[1:])
    people = {person.native_id: person for batch in batches for person in batch.people}
    assignees = {int(p.tasks.assignee[i]) for i in jira_tasks(shared_box) if p.tasks.assignee[i] >= 0}
    assert set(people) == {ids.jira_account_id(a) for a in assignees}
    some = next(iter(assignees))
    assert people[ids.jira_account_id(some)].email == p.people[some].email_in(JIRA)


def test_raw_records_keep_jiras_shape_without_the_changelog_expansion(full_pull) -> None:
    batches, _ = full_pull
    record = batches[0].records[0]
    assert set(record) >= {"id", "key", "self", "fields"} and "changelog" not in record
    assert set(record["fields"]) <= set(requested_fields())


def test_full_pull_costs_pages_plus_one_remote_link_read_per_issue(shared_box: Sandbox, full_pull) -> None:
    batches, stats = full_pull
    issues = len(jira_tasks(shared_box))
    pages = -(-issues // 100)
    projects = len(shared_box.portfolio.projects_of(JIRA))
    # Each project + the search pages + one remotelink read per issue; a full pull's JQL has no date, so it
    # needs no time zone (`myself`).
    assert stats["requests"] == projects + pages + issues
    assert len(batches) == pages


# -- incremental pulls and resuming ---------------------------------------------------------------------------

def test_incremental_pull_after_ten_due_changes_fetches_only_those(box: Sandbox, connect) -> None:
    p = box.portfolio
    batches = list(connect(box).pull(None))
    cursor = batches[-1].cursor
    assert cursor is not None and not connect(box).has_changes(cursor)

    changed = jira_tasks(box)[5:15]
    for i in changed:
        box.call(p.set_due, i, int(p.tasks.due[i]) + 3 if p.tasks.due[i] != NO_DAY else 20_000)
    probe = connect(box)
    assert probe.has_changes(cursor)

    connector = connect(box)
    again = list(connector.pull(cursor))
    assert sorted(pulled_ids(again)) == sorted(native_id(p, i) for i in changed)
    projects = len(p.projects_of(JIRA))
    # myself + projects + one search page per project (side by side) + one remotelink read per changed issue.
    assert connector.stats.requests == 1 + projects + min(projects, jira_module.SEARCH_CHAINS) + len(changed)
    latest = {c.native_id: c for batch in again for c in batch.due_changes}
    for i in changed:
        assert latest[native_id(p, i)].new_due == day_to_date(int(p.tasks.due[i]))
    final = again[-1].cursor
    assert final is not None and not connect(box).has_changes(final)
    assert [batch.records for batch in connect(box).pull(final)] == [[]]


def test_an_overlap_window_delivers_a_change_the_search_listed_late(box: Sandbox, connect) -> None:
    p = box.portfolio
    start = list(connect(box, overlap_minutes=5).pull(None))[-1].cursor
    known, late = jira_tasks(box)[5], jira_tasks(box)[6]
    box.call(p.set_due, known, int(p.tasks.due[known]) + 3 if p.tasks.due[known] != NO_DAY else 20_000)
    delivered = list(connect(box, overlap_minutes=5).pull(start))
    assert pulled_ids(delivered) == [native_id(p, known)]
    cursor = delivered[-1].cursor
    # An issue changed two minutes before that pull's position, which its search did not list yet.
    position = datetime.fromisoformat(cursor["updated"]).timestamp()
    box.call(p.tasks.updated.__setitem__, late, position - 120)
    with_window = list(connect(box, overlap_minutes=5).pull(cursor))
    assert pulled_ids(with_window) == [native_id(p, late)]
    # Without a window, what sorts before the position counts as delivered (the default, as the JQL reads).
    assert pulled_ids(list(connect(box).pull(cursor))) == []
    assert pulled_ids(list(connect(box, overlap_minutes=5).pull(with_window[-1].cursor))) == []


def test_resuming_from_any_batch_cursor_neither_repeats_nor_skips(box: Sandbox, connect) -> None:
    p = box.portfolio
    # Several issues share one `updated` instant so that page boundaries split a tie.
    tied = jira_tasks(box)[:7]
    box.call(_touch_all_at_once, p, tied)
    connector = connect(box)
    connector.page_size = 10
    batches = list(connector.pull(None))
    assert len(batches) > 5
    assert any(len(b.cursor["ids_at_updated"].split(",")) > 1 for b in batches if b.cursor)
    everything = pulled_ids(batches)
    for k, batch in enumerate(batches):
        resumed = connect(box)
        resumed.page_size = 10
        rest = pulled_ids(list(resumed.pull(batch.cursor)))
        assert rest == everything[len(pulled_ids(batches[: k + 1])):], k


def _touch_all_at_once(p: Any, indexes: list[int]) -> None:
    now = p.now()
    for i in indexes:
        p.tasks.updated[i] = now


def test_overlap_rereads_are_dropped_against_the_cursor() -> None:
    at = datetime(2026, 11, 21, 19, 30, 10, 578000, tzinfo=UTC)
    mark = Watermark.from_cursor({"updated": at.isoformat(), "ids_at_updated": "10071,10003"})
    assert mark.covers("10071", at) and mark.covers("10003", at)
    assert mark.covers("10500", at - timedelta(minutes=2))
    assert not mark.covers("10500", at)
    assert not mark.covers("10071", at + timedelta(milliseconds=1))
    assert Watermark.from_cursor(mark.to_cursor()) == mark


def test_a_window_covers_only_the_pairs_it_delivered() -> None:
    at = datetime(2026, 11, 21, 19, 30, 10, 578000, tzinfo=UTC)
    window = timedelta(minutes=5)
    mark = Watermark(window=window)
    for issue_id, updated in (("10500", at - timedelta(minutes=9)), ("10501", at - timedelta(minutes=2)),
                              ("10071", at)):
        mark.advance(issue_id, updated)
    mark.advance("10502", at - timedelta(minutes=1))  # a late arrival, delivered behind the position
    again = Watermark.from_cursor(mark.to_cursor(), window)
    assert again == mark and set(again.recent) == {"10501", "10502", "10071"}  # 10500 is before the window
    assert again.covers("10501", at - timedelta(minutes=2)) and again.covers("10502", at - timedelta(minutes=1))
    assert again.covers("10501", at - timedelta(minutes=3))  # an older state of an issue delivered since
    assert again.covers("10999", at - timedelta(minutes=6))  # before the window
    assert not again.covers("10999", at - timedelta(minutes=4))  # listed late, in the window
    assert not again.covers("10501", at - timedelta(minutes=1))  # changed again, listed late
    assert "recent" not in Watermark.from_cursor(mark.to_cursor()).to_cursor()  # without a window, no pairs


def test_changelog_beyond_the_searchs_twenty_entries_is_paged(box: Sandbox, connect) -> None:
    p = box.portfolio
    i = jira_tasks(box)[3]
    start = int(p.tasks.due[i]) if p.tasks.due[i] != NO_DAY else 20_000
    for k in range(130):
        box.call(p.set_due, i, start + 1 + k)
    batches = list(connect(box).pull(None))
    changes = [c for batch in batches for c in batch.due_changes if c.native_id == native_id(p, i)]
    expected = p.due_changes(i)
    assert len(expected) > 100
    assert [(c.old_due, c.new_due) for c in changes] == [(day_to_date(e.old_day), day_to_date(e.new_day))
                                                         for e in expected]
    # More than 100 history entries in all: two pages of /changelog for that issue alone.
    assert box.emulators["jira"].stats.by_route["GET /rest/api/{version}/issue/{issue}/changelog"] == 2


# -- the JQL sent ---------------------------------------------------------------------------------------------

def test_pull_jql_for_a_cursor_is_written_in_the_users_time_zone() -> None:
    since = datetime(2026, 11, 21, 19, 30, 10, 578000, tzinfo=UTC) - timedelta(minutes=5)
    assert pull_jql(["PLA", "WEB"], since, ZoneInfo("Europe/Paris")) == (
        'project in ("PLA", "WEB") AND updated >= "2026/11/21 20:25" ORDER BY updated ASC, id ASC'
    )
    assert pull_jql(["PLA"], None, ZoneInfo("UTC")) == 'project in ("PLA") ORDER BY updated ASC, id ASC'
    assert census_jql(["PLA", "WEB"]) == 'project in ("PLA", "WEB") ORDER BY id ASC'


def test_pull_sends_the_jql_and_only_the_mappings_fields(box: Sandbox, connect) -> None:
    emulator = box.emulators["jira"]
    emulator.settings.record = True
    cursor = {"updated": "2026-11-21T19:30:10.578000+00:00", "ids_at_updated": "10071"}
    connector = connect(box)
    list(connector.pull(cursor))
    # The emulator records an exchange after sending it: one more request makes sure the pull's is recorded.
    list(connector.census())
    searches = box.call(lambda: [r for r in emulator.recorded if r.path.endswith("/search/jql")])
    assert len(searches) == 3  # a search per project, side by side, and the census
    queries = [parse_qs(search.query) for search in searches[:2]]
    assert sorted(query["jql"][0] for query in queries) == [
        f'project in ("{key}") AND updated >= "2026/11/21 19:30" ORDER BY updated ASC, id ASC'
        for key in ("PLA", "WEB")]
    read = {path.split(".")[1] for path, _ in load_mapping("jira").paths().values() if path.startswith("fields.")}
    for query in queries:
        sent = set(query["fields"][0].split(","))
        assert read <= sent and sent - read <= {"issuelinks", "updated", "assignee"}
        assert query["expand"] == ["changelog"]


# -- deletions ------------------------------------------------------------------------------------------------

def test_census_lists_every_issue_and_misses_a_deleted_one(box: Sandbox, connect) -> None:
    p = box.portfolio
    every = {native_id(p, i) for i in jira_tasks(box)}
    connector = connect(box)
    assert set(connector.census()) == every
    assert search_requests(box) == 1  # up to 5000 ids per page
    gone = jira_tasks(box)[10]
    box.call(p.delete, gone)
    assert set(connector.census()) == every - {native_id(p, gone)}


def test_the_next_search_page_travels_while_the_remote_links_of_this_one_are_read(box: Sandbox, connect,
                                                                                  monkeypatch) -> None:
    assert len(jira_tasks(box)) > 100  # at least two search pages
    monkeypatch.setattr(jira_module, "SEARCH_CHAINS", 1)  # one search over both projects: a chain of pages
    emulator = box.emulators["jira"]
    connector = connect(box)
    emulator.settings.latency_s = 0.2  # long enough that requests sent together are seen together
    box.call(emulator.reset_stats)
    pulled = [record for batch in connector.pull(None) for record in batch.records]
    assert len(pulled) == len(jira_tasks(box))
    # The remote-link reads of the first page (REMOTE_LINK_WORKERS at a time) and the second page's search.
    assert box.call(lambda: emulator.stats.peak_in_flight) == REMOTE_LINK_WORKERS + 1


def test_a_full_pull_searches_the_projects_side_by_side_and_merges_them_into_one_order(box: Sandbox, connect,
                                                                                       monkeypatch) -> None:
    """Two projects, two searches in flight together; the issues, their pages and every batch's cursor are those
    of the one search over both projects."""
    emulator = box.emulators["jira"]

    def full_pull(chains: int) -> tuple[list[list[str]], list[Any], int]:
        monkeypatch.setattr(jira_module, "SEARCH_CHAINS", chains)
        connector = connect(box, remote_links=False)
        emulator.settings.latency_s = 0.2
        box.call(emulator.reset_stats)
        batches = list(connector.pull(None))
        emulator.settings.latency_s = 0.0
        searches = box.call(lambda: emulator.stats.by_route["GET /rest/api/{version}/search/jql"])
        return [[r["id"] for r in b.records] for b in batches], [b.cursor for b in batches], searches

    chains = jira_module.SEARCH_CHAINS
    one_ids, one_cursors, one_searches = full_pull(1)
    ids_side_by_side, cursors, searches = full_pull(chains)
    assert len(connection(box).projects) == 2
    assert box.call(lambda: emulator.stats.peak_in_flight) >= 2 + 2  # both searches' first pages, the projects
    assert ids_side_by_side == one_ids and cursors == one_cursors
    assert sum(map(len, one_ids)) == len(jira_tasks(box))
    assert searches <= one_searches + 1  # a page more at most: one chain's last page may be short


def test_merged_pages_hold_back_an_issue_until_every_search_has_passed_it() -> None:
    def issue(issue_id: str, minute: int) -> dict[str, Any]:
        return {"id": issue_id, "fields": {"updated": f"2026-11-01T10:{minute:02d}:00.000+0000"}}

    first = iter([[issue("10", 1), issue("12", 5)], [issue("13", 9)]])
    second = iter([[issue("11", 1), issue("20", 2)], [issue("21", 5), issue("22", 7)]])
    pages = list(jira_module.merged_pages([first, second], 3))
    assert [[i["id"] for i in page] for page in pages] == [["10", "11", "20"], ["12", "21", "22"], ["13"]]


def _counted_pages(made: list[int], produced: threading.Event, closed: threading.Event) -> Iterator[list[int]]:
    try:
        for k in range(10):
            made.append(k)
            if len(made) == 1 + 4:
                produced.set()
            yield [k]
    finally:
        closed.set()


def test_a_search_pages_ahead_of_its_reader_up_to_its_depth_and_stops_with_it() -> None:
    made: list[int] = []
    produced, closed = threading.Event(), threading.Event()
    pages = read_ahead_now(_counted_pages(made, produced, closed), "test-search", 4, start=True)
    # Started now, unread: four pages wait in the queue and a fifth for room (a merge reading another search).
    assert produced.wait(10)
    assert list(pages) == [[k] for k in range(10)] and closed.is_set()

    made, produced, closed = [], threading.Event(), threading.Event()
    pages = read_ahead_now(_counted_pages(made, produced, closed), "test-search", 4, start=True)
    assert produced.wait(10)
    del pages  # dropped unread (a pull abandoned before its first page): the worker stops and closes the pages
    gc.collect()
    assert closed.wait(10) and len(made) == 5

    made, produced, closed = [], threading.Event(), threading.Event()
    lazy = read_ahead_now(_counted_pages(made, produced, closed), "test-search", 4, start=False)
    assert made == []  # not started: nothing fetched until the first read
    assert next(lazy) == [0]
    lazy.close()
    assert closed.is_set()


def test_census_after_a_full_pull_reuses_its_listing_and_after_an_incremental_one_searches(box: Sandbox,
                                                                                           connect) -> None:
    p = box.portfolio
    every = {native_id(p, i) for i in jira_tasks(box)}
    connector = connect(box)
    pulled = {str(record["id"]) for batch in connector.pull(None) for record in batch.records}
    searches = search_requests(box)
    assert set(connector.census()) == pulled == every
    assert search_requests(box) == searches  # no id search: the full pull listed them all
    gone = jira_tasks(box)[10]
    box.call(p.delete, gone)
    list(connector.pull({"updated": "2026-11-21T19:30:10.578000+00:00", "ids_at_updated": "10071"}))
    searches = search_requests(box)
    assert set(connector.census()) == every - {native_id(p, gone)}
    assert search_requests(box) == searches + 1


# -- throttling, faults and failures --------------------------------------------------------------------------

def test_a_429_burst_is_absorbed_and_counted(box: Sandbox, connect) -> None:
    box.emulators["jira"].settings.rate_limit = RateLimit(5, 1.0)
    first = box.portfolio.projects_of(JIRA)[0]
    connector = connect(box, projects=[first.key])
    batches = list(connector.pull(None))
    assert sorted(pulled_ids(batches)) == sorted(native_id(box.portfolio, i) for i in jira_tasks(box)
                                                 if box.portfolio.tasks.project[i] == first.index)
    assert connector.stats.throttled > 0
    assert connector.stats.throttled == box.emulators["jira"].stats.rate_limited


def test_an_injected_503_and_a_truncated_page_are_retried(box: Sandbox, connect) -> None:
    emulator = box.emulators["jira"]
    unavailable = emulator.inject("status", status=503, path="/search/jql", times=1)
    truncated = emulator.inject("truncated", path="/search/jql", times=1)
    connector = connect(box)
    batches = list(connector.pull(None))
    assert sorted(pulled_ids(batches)) == sorted(native_id(box.portfolio, i) for i in jira_tasks(box))
    assert unavailable.fired == 1 and truncated.fired == 1
    assert connector.stats.server_errors == 1 and connector.stats.bad_bodies == 1


def test_retry_after_as_an_http_date_is_honoured() -> None:
    calls = {"myself": 0}

    async def myself(request: Request) -> JSONResponse:
        calls["myself"] += 1
        if calls["myself"] == 1:
            when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
            return JSONResponse({"errorMessages": ["Rate limit exceeded."], "errors": {}}, status_code=429,
                                headers={"Retry-After": when})
        return JSONResponse({"accountId": "x", "timeZone": "Asia/Tokyo", "emailAddress": EMAIL})

    app = Starlette(routes=[Route("/rest/api/3/myself", myself)])
    with serve_app(app) as url:
        connector = JiraConnector(CONNECTION, url, EMAIL, TOKEN, ["PLA"])
        try:
            connector.check()
        finally:
            connector.close()
    assert calls["myself"] == 2
    assert connector.stats.throttled == 1 and connector.stats.retries == 1
    assert connector.stats.waited_s > 0
    assert connector.zone() == ZoneInfo("Asia/Tokyo")


def test_a_wrong_token_gives_one_sentence_without_the_token(box: Sandbox) -> None:
    wrong = "not-the-sandbox-token-123"
    connector = JiraConnector.from_config(connection(box, auth={"email": EMAIL, "token": wrong}))
    try:
        with pytest.raises(ConnectionFailed) as failure:
            connector.check()
        with pytest.raises(ConnectionFailed):
            list(connector.census())
    finally:
        connector.close()
    message = str(failure.value)
    assert box.urls["jira"] in message and EMAIL in message and "auth.token" in message
    assert wrong not in message and TOKEN not in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_an_unreachable_url_gives_one_sentence_naming_it() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    conn = JiraConnection.model_validate({
        "name": CONNECTION, "tool": "jira", "url": url, "auth": {"email": EMAIL, "token": TOKEN},
        "projects": ["PLA"], "rate_limit": {"max_retries": 0},
    })
    connector = JiraConnector.from_config(conn)
    try:
        with pytest.raises(ConnectionFailed, match="could not be reached") as failure:
            connector.check()
    finally:
        connector.close()
    assert url in str(failure.value) and TOKEN not in str(failure.value)


def test_an_unknown_project_is_named_in_the_failure(box: Sandbox, connect) -> None:
    connector = connect(box, projects=["NOPE"])
    with pytest.raises(ConnectionFailed, match="NOPE"):
        list(connector.pull(None))


def test_rest_api_v2_pulls_the_same_issues(shared_box: Sandbox, full_pull, connect) -> None:
    batches, _ = full_pull
    v2 = list(connect(shared_box, api_version=2).pull(None))
    assert pulled_ids(v2) == pulled_ids(batches)
    assert all(record["self"].split("/rest/api/")[1].startswith("2/") for batch in v2 for record in batch.records)


def test_tls_is_verified_against_the_configured_ca_bundle() -> None:
    with Sandbox(size=40, seed=7, as_of=TEST_AS_OF, rate_limits=False, tls=True, vendors=("jira",)) as box:
        assert box.tls_files is not None
        trusted = JiraConnector.from_config(connection(box, ca_bundle=str(box.tls_files.ca_bundle)))
        untrusted = JiraConnector.from_config(connection(box, rate_limit={"max_retries": 0}))
        try:
            assert sorted(trusted.census()) == sorted(native_id(box.portfolio, i) for i in jira_tasks(box))
            with pytest.raises(ConnectionFailed, match="TLS verification"):
                untrusted.check()
        finally:  # before the sandbox stops: it waits for open connections
            trusted.close()
            untrusted.close()


def test_with_remote_links_off_a_full_pull_costs_only_the_search_pages(shared_box: Sandbox, connect) -> None:
    connector = connect(shared_box)
    connector.read_remote_links = False
    batches = list(connector.pull(None))
    issues = sum(len(b.records) for b in batches)
    assert issues == len(shared_box.portfolio.task_indexes(JIRA))
    assert not [link for b in batches for link in b.links if link.origin == "remote_link"]
    pages = -(-issues // 100)
    assert connector.stats.requests <= pages + 1 + len(connector.projects)


@pytest.mark.parametrize("text, expected", [
    ("2021-01-17T12:34:00.000+0000", datetime(2021, 1, 17, 12, 34, tzinfo=UTC)),
    ("2021-01-17T12:34:00.123+0530", datetime(2021, 1, 17, 7, 4, 0, 123000, tzinfo=UTC)),
    ("2021-01-17T12:34:00.5-0700", datetime(2021, 1, 17, 19, 34, 0, 500000, tzinfo=UTC)),
    ("2021-01-17T12:34:00.000Z", datetime(2021, 1, 17, 12, 34, tzinfo=UTC)),
    ("2021-1-7T12:34:00.000+0000", datetime(2021, 1, 7, 12, 34, tzinfo=UTC)),  # read by strptime alone
])
def test_jira_timestamps_are_read_as_aware_instants(text: str, expected: datetime) -> None:
    parsed = parse_jira_time(text)
    assert parsed.tzinfo is not None and parsed == expected


def test_an_unreadable_jira_timestamp_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_jira_time("17/01/2021 12:34")
