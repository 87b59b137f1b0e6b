"""Reading ahead: an iterator's items made on a worker thread into a bounded queue, handed over in order.

The sync engine pulls a connection's pages ahead of the load (`pmsync.sync.sync_connection`), the Trello
connector reads several boards at once, each ahead of its turn, and the Jira connector pages its searches ahead of
the merge that puts them in one order (`read_ahead_now`). All need the same three things: a worker that
stops making requests once its reader has gone (`offer` gives up when `stop` is set), a failure that reaches the
reader in its place, after what came before it (`Failed`), and an end mark (`END`).
"""
from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
END = object()  # in a queue: every item is before it
POLL_S = 0.1  # how often a blocked worker or reader looks at its stop event


@dataclass
class Failed:
    """In a queue: making the items failed here; the reader raises `error` when it gets this far."""

    error: BaseException


def offer(ready: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put `item` in the queue, waiting while it is full; False once the reader has gone (`stop`)."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def take(ready: queue.Queue, stop: threading.Event) -> Any:
    """The next item of the queue, waiting for its worker; once `stop` is set (the reading was abandoned from
    elsewhere, e.g. the connector closed) there are no more."""
    while True:
        try:
            return ready.get(timeout=POLL_S)
        except queue.Empty:
            if stop.is_set():
                raise RuntimeError("the read ahead was stopped: its connector was closed or read again") from None


def fill(items: Iterable[Any], ready: queue.Queue, stop: threading.Event) -> None:
    """On a worker: the items into the bounded queue, then END (or the failure); stops at the next item once the
    reader has gone, and closes the items' generator on this thread whatever happens."""
    source = iter(items)
    try:
        for item in source:
            if not offer(ready, item, stop):
                return
        offer(ready, END, stop)
    except BaseException as exc:  # any failure must reach the reader waiting on this queue
        offer(ready, Failed(exc), stop)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def drain(ready: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    """The items of a queue `fill` feeds, up to its END; its failure raised in its place."""
    while (item := take(ready, stop)) is not END:
        if isinstance(item, Failed):
            raise item.error
        yield item


def read_ahead(items: Iterable[T], thread_name: str, depth: int) -> Iterator[T]:
    """The items, made on a thread of their own up to `depth` ahead of the caller. The items' generator runs wholly
    on that thread and has ended (its last lines included) before this returns; a caller that stops early (an
    error of its own) has it closed at its next item, and the thread joined."""
    yield from _drained(*_filling(items, thread_name, depth))


def read_ahead_now(items: Iterable[T], thread_name: str, depth: int, *, start: bool = True) -> Iterator[T]:
    """`read_ahead`, but the worker starts now (with `start`; else at the first read), so that several iterators
    made one after another work side by side before any is read (Jira's searches merged into one order). The
    worker stops once the reader is done, closes the iterator, or drops it unread."""
    worker, ready, stop = _filling(items, thread_name, depth)
    if start:
        worker.start()
    out = _drained(worker, ready, stop)
    weakref.finalize(out, stop.set)  # an iterator dropped before its first read has no `finally` to run
    return out


def _filling(items: Iterable[Any], thread_name: str, depth: int,
             ) -> tuple[threading.Thread, queue.Queue, threading.Event]:
    """A worker (not started) that `fill`s a queue of `depth` with the items, the queue, and its stop event."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    return threading.Thread(target=fill, args=(items, ready, stop), name=thread_name, daemon=True), ready, stop


def _drained(worker: threading.Thread, ready: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    """The worker's items (started here unless it was already), then the worker stopped and joined."""
    if worker.ident is None:
        worker.start()
    try:
        yield from drain(ready, stop)
    finally:
        stop.set()
        worker.join()
