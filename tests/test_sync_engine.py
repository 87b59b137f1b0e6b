"""The sync engine's grouping of pages into transactions, and its pull running ahead of the load."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from connectors.base import Batch, Link, PersonRecord
from mappings.mapping import load_mapping
from pmsync.sync import TurnLock, _RunState, grouped, merge_batches, prepare_batch, pulled_ahead


def page(ids: list[str], cursor: str | None, links: list[Link] = ()) -> Batch:
    return Batch(records=[{"id": i} for i in ids], links=list(links), covers_links_of=list(ids),
                 cursor={"at": cursor} if cursor else None)


def test_pages_are_grouped_up_to_the_record_limit_with_the_last_pages_cursor():
    pages = [page([f"{k}a", f"{k}b"], str(k)) for k in range(5)]
    groups = list(grouped(pages, records=4, seconds=3600))
    assert [len(g.records) for g in groups] == [4, 4, 2]
    assert [g.cursor for g in groups] == [{"at": "1"}, {"at": "3"}, {"at": "4"}]


def test_a_task_seen_twice_keeps_only_the_links_of_its_later_page():
    old = page(["t1"], "1", [Link("t1", predecessor_native_id="gone")])
    new = page(["t1", "t2"], "2", [Link("t1", predecessor_native_id="kept"), Link("t2", predecessor_native_id="x")])
    merged = merge_batches([old, new])
    assert sorted(link.predecessor_native_id for link in merged.links) == ["kept", "x"]
    assert sorted(merged.covers_links_of) == ["t1", "t2"] and merged.cursor == {"at": "2"}


def test_a_page_without_a_cursor_keeps_the_cursor_before_it():
    merged = merge_batches([page(["a"], "1"), page(["b"], None)])
    assert merged.cursor == {"at": "1"} and len(merged.records) == 2


# -- the pull running ahead of the load ---------------------------------------------------------------------------

def test_the_pull_runs_ahead_of_the_load_in_its_own_thread_and_keeps_the_order():
    produced: list[tuple[int, str]] = []
    second_pulled = threading.Event()

    def pull() -> Iterator[Batch]:
        for k in range(5):
            produced.append((k, threading.current_thread().name))
            if k == 1:
                second_pulled.set()
            yield page([str(k)], str(k))

    received = []
    for batch in pulled_ahead(pull(), "pull-test", depth=2):
        if not received:
            # The first batch is still being "loaded" here, and the second has been pulled meanwhile.
            assert second_pulled.wait(timeout=30)
        received.append(batch.cursor["at"])
    assert received == ["0", "1", "2", "3", "4"]
    assert {name for _, name in produced} == {"pull-test"}


def test_a_failing_pull_raises_in_the_caller_after_the_batches_before_it():
    def pull() -> Iterator[Batch]:
        yield page(["a"], "1")
        raise RuntimeError("the tool went away")

    received = []
    with pytest.raises(RuntimeError, match="the tool went away"):
        for batch in pulled_ahead(pull(), "pull-test"):
            received.append(batch.cursor["at"])
    assert received == ["1"]


def test_a_load_that_fails_stops_and_closes_the_pull_before_returning():
    closed = threading.Event()
    pulled = []

    def pull() -> Iterator[Batch]:
        try:
            for k in range(1000):
                pulled.append(k)
                yield page([str(k)], str(k))
        finally:
            closed.set()

    with pytest.raises(ValueError):
        for _ in pulled_ahead(pull(), "pull-test", depth=2):
            raise ValueError("the load failed")
    assert closed.is_set()  # the pull's generator was closed (its thread joined) before the error reached here
    assert len(pulled) <= 4  # at most depth ahead, plus the one handed over and the one waiting to be queued


def test_a_run_prepares_each_person_once_and_again_when_their_name_or_email_changes():
    state = _RunState()
    mapping = load_mapping("jira")
    ada, bob = PersonRecord("u1", "Ada", "ada@example.com"), PersonRecord("u2", "Bob", None)

    def people(*persons: PersonRecord) -> list[PersonRecord]:
        batch = Batch(records=[], people=list(persons))
        return prepare_batch("eng-jira", "jira", batch, mapping, "UTC", state).people

    assert people(ada, bob, ada) == [ada, bob]
    assert people(bob, ada) == []
    renamed, moved = PersonRecord("u1", "Ada L.", "ada@example.com"), PersonRecord("u2", "Bob", "bob@example.com")
    assert people(renamed, moved, bob) == [renamed, moved]
    # Another connection's people are its own, whatever their ids (the bench's replay shares one state).
    other = prepare_batch("ops-trello", "trello", Batch(records=[], people=[ada]), mapping, "UTC", state).people
    assert other == [ada]
    # Without a run state (a lone batch), every person is written.
    lone = prepare_batch("eng-jira", "jira", Batch(records=[], people=[ada, ada]), mapping, "UTC").people
    assert lone == [ada, ada]


def test_the_warehouse_write_lock_goes_to_whoever_asked_for_it_first() -> None:
    """A connection that releases DuckDB's writer and asks again at once (its next group is ready) waits behind a
    connection that was already waiting; with `threading.Lock` it would take the writer straight back."""
    lock = TurnLock()
    order: list[str] = []

    def other_connection() -> None:
        with lock:
            order.append("waiting connection")

    lock.acquire()
    waiter = threading.Thread(target=other_connection)
    waiter.start()
    deadline = time.monotonic() + 10
    while lock.waiting() < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lock.waiting() == 1
    lock.release()
    with lock:  # asked again at once, as a connection with a backlog does
        order.append("releasing connection")
    waiter.join(10)
    assert order == ["waiting connection", "releasing connection"]
    assert lock.waiting() == 0
