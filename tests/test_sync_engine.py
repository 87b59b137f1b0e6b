"""The sync engine's grouping of pages into transactions."""
from __future__ import annotations

from connectors.base import Batch, Link
from pmsync.sync import grouped, merge_batches


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
