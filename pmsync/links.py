"""Cross-tool dependencies: links found as URLs in one tool resolved to task uids, and the configuration's links.

A Jira remote link or a Trello URL attachment names its predecessor by URL. Those are stored as `url:<URL>` until
every connection has synced, then resolved here in one vectorized pass against the tasks table. Links whose target
pmsync does not know are kept as they are and reported (`dangling_links`), never dropped.
"""
from __future__ import annotations

import pandas as pd

from mappings.urls import URL_PATTERNS
from warehouse.base import Warehouse


def resolve_url_links(warehouse: Warehouse) -> int:
    """Replace `url:` predecessors that name a known task by that task's uid; returns how many were resolved."""
    pending = warehouse.query("SELECT * FROM dependencies WHERE predecessor_uid LIKE 'url:%'")
    if pending.empty:
        return 0
    urls = pending["predecessor_uid"].str.slice(4)
    resolved = pd.Series([None] * len(pending), index=pending.index, dtype=object)
    for tool, column, pattern in URL_PATTERNS:
        refs = urls.str.extract(pattern)["ref"]
        wanted = refs.dropna()
        if wanted.empty:
            continue
        known = warehouse.query(
            f"SELECT task_uid, {column} AS ref FROM tasks WHERE tool = %s AND {column} = ANY(%s)",
            [tool, wanted.unique().tolist()],
        ).drop_duplicates("ref")
        uid_by_ref = dict(zip(known["ref"], known["task_uid"]))
        resolved = resolved.where(resolved.notna(), refs.map(uid_by_ref))
    hits = resolved.notna()
    if not hits.any():
        return 0
    old = pending.loc[hits]
    new = old.assign(predecessor_uid=resolved[hits].to_numpy())
    with warehouse.transaction():
        warehouse.delete(
            "dependencies", "predecessor_uid || ' ' || successor_uid || ' ' || kind = ANY(%s)",
            [(old["predecessor_uid"] + " " + old["successor_uid"] + " " + old["kind"]).tolist()],
        )
        warehouse.upsert("dependencies", new)
    return int(hits.sum())


def replace_config_links(warehouse: Warehouse, links: list) -> int:
    """Make the `config` links in the warehouse exactly the configuration's `links`; returns how many."""
    rows = pd.DataFrame([
        {"predecessor_uid": link.predecessor, "successor_uid": link.successor, "kind": link.kind, "origin": "config",
         "connection": None, "lag_days": float(link.lag_days), "last_seen_at": pd.Timestamp.now(tz="UTC")}
        for link in links
    ])
    with warehouse.transaction():
        warehouse.delete("dependencies", "origin = 'config'")
        if not rows.empty:
            warehouse.upsert("dependencies", rows)
    return len(rows)


def dangling_links(warehouse: Warehouse) -> pd.DataFrame:
    """Links whose predecessor or successor is not a live task pmsync knows (URLs it could not resolve too)."""
    return warehouse.query(
        "SELECT d.* FROM dependencies d"
        " LEFT JOIN tasks p ON p.task_uid = d.predecessor_uid AND p.deleted_at IS NULL"
        " LEFT JOIN tasks s ON s.task_uid = d.successor_uid AND s.deleted_at IS NULL"
        " WHERE p.task_uid IS NULL OR s.task_uid IS NULL"
    )
