"""The Trello connector reads boards at once and a board's furniture alongside its actions, yet yields board after
board with cursors composed in that order: proven from the emulator's side, never by timing.

A `Gate` wraps the emulator's routes: it logs, in the order the server saw them, each request's arrival and
finish, and it can hold a request until others it must overlap with have arrived. A client that asked one request
after another would leave a held request waiting for its partner until the gate's patience ran out, which the
gate records as a miss; counts and orders are asserted, never durations.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_connector_trello import snapshot, uninterrupted

from connectors.base import Batch
from connectors.trello import BOARD_WORKERS, LOOKAHEAD, TrelloConnector
from mappings.mapping import load_mapping
from pmsync.config import TrelloConnection
from pmsync.errors import ConnectionFailed
from pmsync.sync import Progress, sync_connection
from sandbox import ids
from sandbox.core import CREDENTIALS
from sandbox.generator import DONE, NO_DAY, TRELLO
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, native_id

CONNECTION = "ops-trello"
KEY, TOKEN = CREDENTIALS["trello"]["key"], CREDENTIALS["trello"]["token"]
PATIENCE_S = 10.0  # how long the gate holds a request for partners a concurrent client sends at once
ME = "/1/members/me"


class Gate:
    """The emulator's routes, wrapped: a log of arrivals and finishes in server order, and holds.

    `holds` maps (path, n) — the n-th arrival (from 1) of a path — to a condition on the gate; that request waits
    until the condition holds (or PATIENCE_S passes, a miss) before it is served. `met` records each hold's fate.
    """

    def __init__(self, app: Any, holds: dict[tuple[str, int], Callable[[Gate], bool]] | None = None,
                 patience_s: float = PATIENCE_S) -> None:
        self.app = app
        self.holds = holds or {}
        self.patience_s = patience_s
        self.log: list[tuple[str, str]] = []  # ("arrived" | "finished", path), in the order the server saw them
        self.met: dict[tuple[str, int], bool] = {}
        self._changed: asyncio.Condition | None = None

    def arrived(self, path: str) -> int:
        return sum(1 for event, p in self.log if event == "arrived" and p == path)

    def finished(self, path: str) -> int:
        return sum(1 for event, p in self.log if event == "finished" and p == path)

    def index(self, event: str, path: str, last: bool = False) -> int:
        found = [k for k, (e, p) in enumerate(self.log) if e == event and p == path]
        assert found, f"the server never saw {path} {event}"
        return found[-1] if last else found[0]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if scope["type"] != "http" or path.startswith("/_sandbox/"):
            await self.app(scope, receive, send)
            return
        self._changed = self._changed or asyncio.Condition()
        self.log.append(("arrived", path))
        key = (path, self.arrived(path))
        async with self._changed:
            self._changed.notify_all()
            if key in self.holds:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: self.holds[key](self)), self.patience_s)
                    self.met[key] = True
                except TimeoutError:
                    self.met[key] = False
        try:
            await self.app(scope, receive, send)
        finally:
            self.log.append(("finished", path))
            async with self._changed:
                self._changed.notify_all()


def gate(box: Sandbox, holds: dict[tuple[str, int], Callable[[Gate], bool]] | None = None,
         patience_s: float = PATIENCE_S) -> Gate:
    emulator = box.emulators["trello"]
    wrapped = Gate(emulator._inner, holds, patience_s)
    emulator._inner = wrapped
    return wrapped


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("trello",)) as sandbox_:
        yield sandbox_


def board_ids(box: Sandbox) -> list[str]:
    p = box.portfolio
    return [ids.trello_object_id(p, 1, pr.index) for pr in p.projects_of(TRELLO)]


@pytest.fixture
def connect() -> Iterator[Any]:
    made: list[TrelloConnector] = []

    def build(box: Sandbox, page_size: int | None = None, **overrides: Any) -> TrelloConnector:
        raw = {"name": CONNECTION, "tool": "trello", "base_url": box.api_url("trello"),
               "auth": {"key": KEY, "token": TOKEN}, "boards": board_ids(box), **overrides}
        connector = TrelloConnector.from_config(TrelloConnection.model_validate(raw))
        if page_size:
            connector.page_size = page_size
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


def paths(board: str) -> tuple[str, str, str]:
    """A board's furniture, actions and cards paths as the server sees them."""
    return f"/1/boards/{board}", f"/1/boards/{board}/actions", f"/1/boards/{board}/cards"


def board_of(batch: Batch) -> set[str]:
    return {record["idBoard"] for record in batch.records}


def ids_of(batches: list[Batch]) -> list[str]:
    return [record["id"] for batch in batches for record in batch.records]


def on_board(box: Sandbox, board: str) -> list[int]:
    """The portfolio's tasks that are cards of `board`."""
    p = box.portfolio
    return [int(i) for i in p.task_indexes(TRELLO) if ids.trello_object_id(p, 1, int(p.tasks.project[i])) == board]


def cards_of(box: Sandbox, board: str | None = None) -> list[str]:
    indexes = on_board(box, board) if board else [int(i) for i in box.portfolio.task_indexes(TRELLO)]
    return [native_id(box.portfolio, i) for i in indexes]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll the server's log until `condition` (the client works on its own threads meanwhile)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"the server never saw {what}"
        time.sleep(0.01)


# -- overlap ----------------------------------------------------------------------------------------------------

def test_a_full_pull_reads_the_board_and_members_me_during_the_actions_and_both_boards_at_once(
    box: Sandbox, connect,
) -> None:
    first, second = board_ids(box)
    (board_1, actions_1, cards_1), (board_2, actions_2, cards_2) = paths(first), paths(second)
    served = gate(box, {
        # Board 1's actions are held until its board, members/me and board 2's actions have arrived: only a
        # client with all four in flight at once lets them through.
        (actions_1, 1): lambda g: all(g.arrived(p) for p in (board_1, ME, actions_2)),
        (actions_2, 1): lambda g: g.arrived(board_2) > 0,
    })
    batches = list(connect(box).pull(None))

    assert served.met == {(actions_1, 1): True, (actions_2, 1): True}
    # The same requests as one after another: members/me, and per board its board, actions and cards.
    stats = box.emulators["trello"].stats
    assert stats.requests == 7 and stats.by_route["GET /1/members/{member}"] == 1
    assert {route: n for route, n in stats.by_route.items() if "boards" in route} == {
        "GET /1/boards/{id}": 2, "GET /1/boards/{id}/actions": 2, "GET /1/boards/{id}/cards": 2}
    # Within a board, its cards are asked only once its actions are all read.
    for actions, cards in ((actions_1, cards_1), (actions_2, cards_2)):
        assert served.index("finished", actions, last=True) < served.index("arrived", cards)
    # Yielded board after board; a batch's cursor names only the boards yielded up to it.
    assert [board_of(batch) for batch in batches] == [{first}, {second}]
    assert [set(batch.cursor) for batch in batches] == [{first}, {first, second}]
    assert sorted(ids_of(batches)) == sorted(cards_of(box))


def test_a_board_read_ahead_of_its_turn_holds_a_bounded_number_of_pages(box: Sandbox, connect) -> None:
    first, second = board_ids(box)
    cards_1, cards_2 = paths(first)[2], paths(second)[2]
    bound = LOOKAHEAD + 2  # queued batches, one waiting to be queued, and the page read to know it is not last
    # Board 1's second card page is held (for 2 s: a client reading ahead without bound passes the bound at once),
    # so board 1 cannot go on, and board 2 must stop reading ahead.
    served = gate(box, {(cards_1, 2): lambda g: g.arrived(cards_2) > bound}, patience_s=2.0)
    batches = list(connect(box, page_size=2).pull(None))

    assert served.met == {(cards_1, 2): False}  # board 2 never went past the bound while board 1 waited
    assert served.arrived(cards_2) == 11  # 21 cards, 2 a page: every page once, none asked twice
    assert [min(board_of(batch)) for batch in batches] == [first] * 11 + [second] * 11


def test_a_worker_done_with_its_board_starts_the_next_board_before_the_caller_reaches_it(box: Sandbox, connect) -> None:
    for n in range(BOARD_WORKERS):
        box.call(box.emulators["trello"].world.add_board, f"Extra board {n}")
    boards = board_ids(box)
    assert len(boards) == BOARD_WORKERS + 2
    first_cards = paths(boards[0])[2]
    beyond = paths(boards[BOARD_WORKERS])[1]  # the actions of the first board no worker takes at the start
    # Board 1's cards are held until that board's actions arrive. Board 1's worker is waiting and the caller waits
    # for board 1, so only a worker that moves on from a board read ahead of its turn can ask for them.
    served = gate(box, {(first_cards, 1): lambda g: g.arrived(beyond) > 0}, patience_s=5.0)
    batches = list(connect(box).pull(None))

    assert served.met == {(first_cards, 1): True}
    assert [batch.projects[0].native_id for batch in batches if batch.projects] == boards
    assert sorted(ids_of(batches)) == sorted(cards_of(box))


def test_an_incremental_pull_asks_every_board_for_its_new_actions_at_once(box: Sandbox, connect) -> None:
    first, second = board_ids(box)
    cursor = list(connect(box).pull(None))[-1].cursor
    p = box.portfolio
    changed = [next(i for i in on_board(box, board) if p.tasks.status[i] != DONE and p.tasks.due[i] != NO_DAY)
               for board in (first, second)]
    for i in changed:
        box.call(p.set_due, i, int(p.tasks.due[i]) + 2)
    actions_1, actions_2 = paths(first)[1], paths(second)[1]
    box.emulators["trello"].reset_stats()
    served = gate(box, {(actions_1, 1): lambda g: g.arrived(actions_2) > 0})
    batches = list(connect(box).pull(cursor))

    assert served.met == {(actions_1, 1): True}
    assert ids_of(batches) == [native_id(p, i) for i in changed]
    # members/me, per board its new actions, its board and its one changed card: as when asked one by one.
    assert box.emulators["trello"].stats.requests == 1 + 3 * 2


# -- cursors and turns --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stop_after", [1, 11], ids=["board-1-first-batch", "board-1-last-batch"])
def test_a_pull_stopped_after_a_batch_of_board_one_resumes_without_gap_or_repeat_though_board_two_was_read(
    box: Sandbox, connect, stop_after: int,
) -> None:
    first, second = board_ids(box)
    for i in on_board(box, second)[3:]:
        box.call(box.emulators["trello"].world.delete_card, i)  # board 2 keeps 3 cards: 2 pages of 2
    everything = sorted(ids_of(list(connect(box, page_size=2).pull(None))))
    cards_1, cards_2 = paths(first)[2], paths(second)[2]
    # Board 1 (21 cards, 11 batches of 2) waits at its 4th page until board 2 is read whole: every batch of board 1
    # from its 3rd on is made after board 2 knows its position.
    served = gate(box, {(cards_1, 4): lambda g: g.finished(cards_2) == 2})
    pulling = connect(box, page_size=2).pull(None)
    batches = [next(pulling)]
    wait_until(lambda: served.arrived(cards_2) == 2, "board 2's card pages")
    batches += [next(pulling) for _ in range(10)]
    pulling.close()  # the crash: board 2's batches were read but never yielded

    assert served.met == {(cards_1, 4): True}
    assert [board_of(batch) for batch in batches] == [{first}] * 11
    assert [batch.cursor for batch in batches[:-1]] == [{}] * 10  # board 1 unfinished, board 2 not yielded
    assert set(batches[-1].cursor) == {first}
    done = batches[:stop_after]
    rest = ids_of(list(connect(box, page_size=2).pull(done[-1].cursor)))
    assert sorted(set(ids_of(done)) | set(rest)) == everything  # no gap
    assert len(rest) == len(set(rest))
    if stop_after == 11:  # board 1 finished: only board 2 is read again, nothing of board 1 is repeated
        assert sorted(rest) == sorted(set(everything) - set(ids_of(done)))


def test_an_incremental_pull_stopped_after_board_ones_first_batch_keeps_board_twos_old_position(
    box: Sandbox, connect,
) -> None:
    first, second = board_ids(box)
    cursor = list(connect(box).pull(None))[-1].cursor
    p = box.portfolio
    changed = {board: [i for i in on_board(box, board) if p.tasks.due[i] != NO_DAY][:12]  # 2 batches of 10 each
               for board in (first, second)}
    assert all(len(indexes) == 12 for indexes in changed.values())
    for indexes in changed.values():
        for i in indexes:
            box.call(p.set_due, i, int(p.tasks.due[i]) + 4)
    reads_2 = {f"/1/cards/{native_id(p, i)}" for i in changed[second]}
    served = gate(box)
    pulling = connect(box, page_size=10).pull(cursor)
    batch = next(pulling)
    wait_until(lambda: all(served.arrived(path) for path in reads_2), "board 2's changed cards read")
    pulling.close()

    assert board_of(batch) == {first} and len(batch.records) == 10
    # Board 1 at the last action of its batch; board 2 where it was, though its new position was known.
    assert batch.cursor[second] == cursor[second] and batch.cursor[first] != cursor[first]
    rest = list(connect(box, page_size=10).pull(batch.cursor))
    resumed = ids_of(rest)
    expected = {native_id(p, i) for indexes in changed.values() for i in indexes}
    assert set(ids_of([batch])) | set(resumed) == expected
    assert {native_id(p, i) for i in changed[second]} <= set(resumed)
    assert len(resumed) == len(set(resumed))


def test_a_sync_crashing_after_its_first_commit_while_board_two_was_read_resumes_to_what_one_sync_leaves(
    box: Sandbox, connect, backend, tmp_path: Path,
) -> None:
    cards_2 = paths(board_ids(box)[1])[2]
    served = gate(box)

    class Crash(Exception):
        pass

    def crash(connection: str, records: int) -> None:
        wait_until(lambda: served.arrived(cards_2) == 3, "board 2's three card pages")
        raise Crash

    interrupted = backend.open()
    try:
        with pytest.raises(Crash):
            sync_connection(connect(box, page_size=10), load_mapping("trello"), interrupted, full=True,
                            progress=Progress(advance=crash))
        assert interrupted.count("tasks") == 10
        resumed = sync_connection(connect(box, page_size=10), load_mapping("trello"), interrupted)
        assert resumed.ok
        got = snapshot(interrupted)
    finally:
        interrupted.close()
    expected = uninterrupted(backend, tmp_path, lambda reference: sync_connection(
        connect(box), load_mapping("trello"), reference, full=True))
    for table, frame in expected.items():
        pd.testing.assert_frame_equal(got[table], frame, obj=table)


def test_a_failing_board_fails_in_its_turn_after_the_boards_before_it(box: Sandbox, connect) -> None:
    first = board_ids(box)[0]
    missing = "0123456789abcdef01234567"
    pulling = connect(box, boards=[first, missing]).pull(None)
    yielded: list[Batch] = []
    with pytest.raises(ConnectionFailed, match=missing):
        for batch in pulling:
            yielded.append(batch)
    assert sorted(ids_of(yielded)) == sorted(cards_of(box, first))
    assert yielded[-1].cursor is not None and set(yielded[-1].cursor) == {first}
