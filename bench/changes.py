"""Change a share of the sandbox's tasks the way their users would: through each vendor's own write API over HTTP.

The sandbox's admin routes have no mutation route, and the benchmark adds nothing to the sandbox: a due date is
moved a week with Jira's `PUT /rest/api/3/issue/{id}` (`fields.duedate`), Asana's `PUT /tasks/{gid}` (`due_on`),
Trello's `PUT /cards/{id}` (`due`) and Graph's `PATCH /planner/tasks/{id}` (`dueDateTime`, with the task's
`@odata.etag` in If-Match). MS Project files change by uploading a new file, which no coordinator does for 1% of
tasks, so they are left unchanged. The tasks are chosen from the warehouse of the full sync, with a fixed seed.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import duckdb
import httpx
import numpy as np

CHANGED_TOOLS = ("jira", "asana", "trello", "planner")
WORKERS = 4
MAX_ATTEMPTS = 10


def pick_tasks(duckdb_path: str, share: float, seed: int) -> dict[str, list[tuple[str, Any]]]:
    """Per connection of a changed tool: (native id, due date) of `share` of its live tasks, at least one."""
    with duckdb.connect(duckdb_path, read_only=True) as db:
        rows = db.execute(
            "SELECT connection, tool, native_id, due_date FROM tasks WHERE deleted_at IS NULL ORDER BY task_uid"
        ).fetchall()
    rng = np.random.default_rng(seed)
    by_connection: dict[str, list[tuple[str, Any]]] = {}
    tools = {}
    for connection, tool, native_id, due in rows:
        if tool in CHANGED_TOOLS:
            by_connection.setdefault(connection, []).append((native_id, due))
            tools[connection] = tool
    chosen = {}
    for connection, tasks in by_connection.items():
        count = max(1, round(len(tasks) * share))
        picks = rng.choice(len(tasks), size=count, replace=False)
        chosen[connection] = [tasks[int(k)] for k in sorted(picks)]
    return chosen


def new_due(due: Any, as_of: date) -> date:
    """A week after the current due date (two weeks after the as-of date for a task without one)."""
    if due is None:
        return as_of + timedelta(days=14)
    return date(due.year, due.month, due.day) + timedelta(days=7)


def change_due_dates(config: dict[str, Any], chosen: dict[str, list[tuple[str, Any]]], as_of: date) -> dict[str, int]:
    """Move the due date of every chosen task through its vendor's API; returns the changes made per connection."""
    connections = {c["name"]: c for c in config["connections"]}
    made = {}
    for name, tasks in chosen.items():
        connection = connections[name]
        with _client(connection) as client:
            change = _CHANGERS[connection["tool"]]
            with ThreadPoolExecutor(WORKERS) as pool:
                made[name] = sum(pool.map(lambda task: change(client, connection, task[0], new_due(task[1], as_of)),
                                          tasks))
    return made


def _client(connection: dict[str, Any]) -> httpx.Client:
    auth = connection["auth"]
    if connection["tool"] == "jira":
        return httpx.Client(base_url=connection["url"], auth=(auth["email"], auth["token"]), timeout=60)
    if connection["tool"] == "trello":
        return httpx.Client(base_url=connection["base_url"], params=auth, timeout=60)
    return httpx.Client(base_url=connection["base_url"], headers={"Authorization": f"Bearer {auth['token']}"},
                        timeout=60)


def _send(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request, waiting out the vendor's 429s (Retry-After where sent, else a second)."""
    for _ in range(MAX_ATTEMPTS):
        response = client.request(method, url, **kwargs)
        if response.status_code != 429:
            response.raise_for_status()
            return response
        time.sleep(float(response.headers.get("Retry-After") or 1.0))
    raise RuntimeError(f"{method} {url} was refused with 429 {MAX_ATTEMPTS} times")


def _jira(client: httpx.Client, connection: dict, native_id: str, due: date) -> int:
    _send(client, "PUT", f"/rest/api/3/issue/{native_id}", json={"fields": {"duedate": due.isoformat()}})
    return 1


def _asana(client: httpx.Client, connection: dict, native_id: str, due: date) -> int:
    _send(client, "PUT", f"/tasks/{native_id}", json={"data": {"due_on": due.isoformat()}})
    return 1


def _trello(client: httpx.Client, connection: dict, native_id: str, due: date) -> int:
    _send(client, "PUT", f"/cards/{native_id}", params={"due": f"{due.isoformat()}T12:00:00.000Z"})
    return 1


def _planner(client: httpx.Client, connection: dict, native_id: str, due: date) -> int:
    etag = _send(client, "GET", f"/planner/tasks/{native_id}").json()["@odata.etag"]
    _send(client, "PATCH", f"/planner/tasks/{native_id}", headers={"If-Match": etag},
          json={"dueDateTime": f"{due.isoformat()}T12:00:00Z"})
    return 1


_CHANGERS = {"jira": _jira, "asana": _asana, "trello": _trello, "planner": _planner}
