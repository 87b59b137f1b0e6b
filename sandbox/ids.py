"""Native identifiers and URLs of portfolio tasks in each vendor's own format, and their inverses.

Every emulator needs the other tools' ids too (a Jira remote link points at an Asana task), so they live here.
Ids encode the task index so that a lookup needs no table, yet look like the vendor's: Jira numeric strings and
PROJ-123 keys, Asana 16-digit gids, Trello 24-hex ObjectIds whose first 8 digits are the creation time, Graph's
28-character opaque ids.
"""
from __future__ import annotations

import uuid

from sandbox.generator import BASE62, GRAPH_ID_ALPHABET, Portfolio, mix

JIRA_ID_BASE = 10_000
ASANA_TASK_BASE = 1_208_000_000_000_000
ASANA_PROJECT_BASE = 1_207_000_000_000_000
ASANA_USER_BASE = 1_206_000_000_000_000
ASANA_WORKSPACE_GID = "1201000000000001"


def jira_issue_id(i: int) -> str:
    return str(JIRA_ID_BASE + i)


def jira_issue_index(issue_id: str) -> int | None:
    return int(issue_id) - JIRA_ID_BASE if issue_id.isdigit() and int(issue_id) >= JIRA_ID_BASE else None


def jira_project_id(project: int) -> str:
    return str(JIRA_ID_BASE + project)


def jira_key(p: Portfolio, i: int) -> str:
    return f"{p.projects[int(p.tasks.project[i])].key}-{int(p.tasks.seq[i])}"


def jira_account_id(person: int) -> str:
    return f"5b10a2844c2016{person:010x}"


def asana_gid(i: int) -> str:
    return str(ASANA_TASK_BASE + i)


def asana_index(gid: str) -> int | None:
    return int(gid) - ASANA_TASK_BASE if gid.isdigit() and int(gid) >= ASANA_TASK_BASE else None


def asana_project_gid(project: int) -> str:
    return str(ASANA_PROJECT_BASE + project)


def asana_user_gid(person: int) -> str:
    return str(ASANA_USER_BASE + person)


def trello_id(p: Portfolio, i: int) -> str:
    """24 hex: creation seconds, 8 hash digits, then the task index."""
    return f"{int(p.tasks.created[i]):08x}{mix(p.seed, i, 7) & 0xFFFFFFFF:08x}{i:08x}"


def trello_index(card_id: str) -> int | None:
    if len(card_id) != 24:
        return None
    try:
        return int(card_id[16:], 16)
    except ValueError:
        return None


def trello_object_id(p: Portfolio, kind: int, n: int, created: float | None = None) -> str:
    """A 24-hex id for a board (kind 1), list (2), member (3), label (4), custom field (5) or action (6+)."""
    seconds = int(created) if created is not None else int(p.clock_anchor) - 400 * 86_400
    return f"{seconds:08x}{kind:02x}{mix(p.seed, kind, n) & 0xFFFFFF:06x}{n:08x}"


def trello_short_link(p: Portfolio, i: int) -> str:
    return _encode(mix(p.seed, i, 8), BASE62, 8)


def graph_id(p: Portfolio, kind: str, n: int) -> str:
    """28 opaque characters: 22 from a hash, 6 encoding n (so ids invert without a table)."""
    head = _encode(mix(p.seed, hash_kind(kind), n), GRAPH_ID_ALPHABET, 11) + _encode(
        mix(p.seed, hash_kind(kind), n, 1), GRAPH_ID_ALPHABET, 11
    )
    return head + _encode(n, BASE62, 6, fixed=True)


def graph_index(graph_id_: str) -> int | None:
    if len(graph_id_) != 28:
        return None
    n = 0
    for ch in graph_id_[22:]:
        pos = BASE62.find(ch)
        if pos < 0:
            return None
        n = n * 62 + pos
    return n


def graph_user_id(p: Portfolio, person: int) -> str:
    return str(uuid.UUID(int=(mix(p.seed, 31, person) << 64) | mix(p.seed, 37, person), version=4))


def hash_kind(kind: str) -> int:
    return sum((k + 1) * ord(c) for k, c in enumerate(kind))


def _encode(value: int, alphabet: str, length: int, fixed: bool = False) -> str:
    base = len(alphabet)
    out = []
    for _ in range(length):
        value, r = divmod(value, base)
        out.append(alphabet[r])
    return "".join(reversed(out)) if fixed else "".join(out)


def task_url(p: Portfolio, i: int) -> str:
    """The URL a person would paste to point at task i in its own tool (what cross-tool links hold)."""
    from sandbox.generator import ASANA, JIRA, MSPROJECT, PLANNER, TRELLO

    tool = int(p.tasks.tool[i])
    project = int(p.tasks.project[i])
    if tool == JIRA:
        return f"{p.urls.get('jira', 'https://acme.atlassian.net')}/browse/{jira_key(p, i)}"
    if tool == ASANA:
        return f"https://app.asana.com/0/{asana_project_gid(project)}/{asana_gid(i)}"
    if tool == TRELLO:
        return f"https://trello.com/c/{trello_short_link(p, i)}"
    if tool == PLANNER:
        plan = graph_id(p, "plan", project)
        return f"https://planner.cloud.microsoft/webui/plan/{plan}/view/board/task/{graph_id(p, 'task', i)}"
    if tool == MSPROJECT:
        return f"msproject://{p.projects[project].key}/{int(p.tasks.seq[i])}"
    raise ValueError(f"task {i} has no tool")


def graph_drive_id(p: Portfolio) -> str:
    """The emulated OneDrive/SharePoint document library that holds the MS Project plans."""
    return "b!" + graph_id(p, "drive", 0) + graph_id(p, "drive", 1)[:20]


def graph_item_id(p: Portfolio, n: int) -> str:
    """A driveItem id (`01` + 32 upper-case characters, as OneDrive's look); n encoded in the last 8."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "01" + _encode(mix(p.seed, 41, n), alphabet, 13) + _encode(mix(p.seed, 43, n), alphabet, 11) + \
        _encode(n, alphabet, 8, fixed=True)


def graph_item_index(item_id: str) -> int | None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    if len(item_id) != 34 or not item_id.startswith("01"):
        return None
    n = 0
    for ch in item_id[26:]:
        pos = alphabet.find(ch)
        if pos < 0:
            return None
        n = n * 32 + pos
    return n
