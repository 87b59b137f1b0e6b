"""Trello REST API 1 emulator: boards, lists, cards, custom fields, comments, attachments and actions under `/1`.

Cards are the portfolio's Trello tasks, rendered on the fly from its numpy columns; lists stand for status
categories. What only Trello keeps (comments, descriptions, custom-field values set by clients, URL attachments,
archive flags, card positions) lives in `TrelloState`, keyed by task index. Actions (Trello's history) are derived
from the portfolio: `createCard` at creation, `updateCard` with `data.old.due` for every due change, `updateCard`
with `data.old.idList` for status moves, archives and link attachments; clients' writes add their own.

Trello's habits kept here: errors are text/plain, parameters come in the query string (py-trello sends them as a
JSON body, which Trello also accepts), paths may carry `//` and singular aliases (`/1/card/...`), DELETE answers
`{"_value": null}`, a 429 has a JSON body and no Retry-After, and timestamps are ISO with millis and `Z`.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route, Router

from sandbox.core import CREDENTIALS, Emulator, EmulatorSettings, JSONBody, RateLimit, VendorProfile
from sandbox.generator import (
    BASE62,
    CANCELLED,
    DONE,
    IN_PROGRESS,
    LINK_ATTACHMENT,
    NO_DAY,
    TODO,
    TRELLO,
    DueChange,
    Portfolio,
    day_number,
    day_to_date,
    due_shift,
    mix,
)
from sandbox.ids import task_url, trello_id, trello_index, trello_object_id, trello_short_link

API_ROOT = "/1"
NOT_FOUND = "The requested resource was not found."
LIST_NAMES = ("Backlog", "To Do", "Doing", "Review", "Done", "Won't do")
BACKLOG, TO_DO, DOING, REVIEW, DONE_LIST, WONT_DO = range(6)
LIST_STATUS = (TODO, TODO, IN_PROGRESS, IN_PROGRESS, DONE, CANCELLED)
LABELS = (("green", "Quick win"), ("yellow", "Needs review"), ("orange", "Blocked"), ("red", "Urgent"),
          ("purple", "Customer"), ("blue", "Internal"))
CARD_FILTERS = ("all", "open", "closed", "visible")
CUSTOM_FIELD_TYPES = ("checkbox", "list", "number", "text", "date")
ITEM_VALUE_KEYS = {"number": "number", "text": "text", "date": "date", "checkbox": "checked"}
PRIORITY_OPTIONS = (("High", "red"), ("Medium", "yellow"), ("Low", "green"))
POS_STEP = 16384
DUE_HOUR, START_HOUR = 17, 9
MAX_LIMIT = 1000
LATEST_ACTIONS = 1000
ACTIONS_DEFAULT_LIMIT = 50
CARD_ACTIONS_DEFAULT_FILTER = "commentCard,updateCard:idList"
SINGULAR_ALIASES = {"board": "boards", "card": "cards", "member": "members", "list": "lists", "action": "actions",
                    "label": "labels", "customField": "customFields", "checklist": "checklists"}
HEX24 = re.compile(r"^[0-9a-fA-F]{24}$")
SHORT_LINK = re.compile(r"^[0-9A-Za-z]{8}$")

# trello_object_id kinds (1-5 are fixed by sandbox.ids; the rest are this emulator's own).
K_BOARD, K_LIST, K_MEMBER, K_LABEL, K_FIELD = 1, 2, 3, 4, 5
K_CREATE, K_DUE, K_MOVE, K_ARCHIVE, K_LINK_ACTION, K_LINK_ATTACHMENT = 6, 7, 8, 9, 10, 11
K_ITEM, K_OPTION, K_CLIENT, K_ORG = 12, 13, 14, 15
ME = -1  # the token's owner: the coordinator, not one of the generated people
ME_N = 0xFFFFFF
DUE_CHANGES_PER_CARD = 256  # room in an action id for one card's due changes
GENERATED_FIELDS = (("Estimate (h)", "number"), ("Priority", "list"), ("Approved", "checkbox"))


class TrelloError(Exception):
    """An error Trello answers in text/plain."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _not_found() -> TrelloError:
    return TrelloError(404, NOT_FOUND)


def _invalid(name: str) -> TrelloError:
    return TrelloError(400, f"invalid value for {name}")


# -- time ---------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1 << 18)
def iso_ms(seconds: float) -> str:
    """Epoch seconds as Trello writes timestamps: `2019-09-16T16:19:17.156Z` (kept: a board's listing renders
    the same actions' and cards' times at every request, and formatting one costs more than the rest of them)."""
    moment = datetime.fromtimestamp(float(seconds), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@functools.lru_cache(maxsize=65_536)
def day_iso(day: int, hour: int) -> str | None:
    """A stored day number as a Trello due/start timestamp at a fixed hour (None for no date)."""
    d = day_to_date(day)
    return None if d is None else f"{d.isoformat()}T{hour:02d}:00:00.000Z"


def parse_moment(value: str) -> datetime:
    """A client's date or date-time (ISO 8601, `Z` allowed) as an aware UTC datetime; ValueError if not one."""
    text = value.strip()
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _hex_seconds(seconds: float) -> str:
    return f"{max(0, int(seconds)):08x}"


def _bound_id(value: str, name: str, upper: bool) -> str:
    """A `since`/`before` value (an object id or a date) as an id to compare ids against."""
    if HEX24.match(value):
        return value.lower()
    try:
        seconds = parse_moment(value).timestamp()
    except ValueError:
        raise _invalid(name) from None
    return _hex_seconds(math.ceil(seconds) if upper else seconds) + ("0" * 16 if upper else "f" * 16)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def _encode62(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, r = divmod(value, 62)
        out.append(BASE62[r])
    return "".join(out)


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _invalid(name)


def _int_param(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise _invalid(name) from None
    if not low <= value <= high:
        raise _invalid(name)
    return value


def _fields(args: dict[str, Any], name: str = "fields") -> set[str] | None:
    """The `fields` a client asked for (None = all)."""
    raw = args.get(name)
    if raw in (None, "", "all"):
        return None
    return {f for f in str(raw).split(",") if f} | {"id"}


def _select(document: dict[str, Any], fields: set[str] | None) -> dict[str, Any]:
    return document if fields is None else {k: v for k, v in document.items() if k in fields}


# -- state --------------------------------------------------------------------------------------------------------
@dataclass
class CustomFieldDef:
    """A board's custom field (generated or created through `POST /customFields`)."""

    id: str
    board: int
    name: str
    type: str
    pos: float
    options: list[dict[str, Any]] = field(default_factory=list)
    card_front: bool = True
    generated_slot: int = -1  # which generated value it shows; -1 for clients' fields


@dataclass
class ClientAction:
    """An action recorded because a client wrote something (comments, moves, archives, deletions, attachments,
    custom-field items)."""

    id: str
    type: str
    task: int
    at: float
    member: int
    changed: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    edited_at: float | None = None


@dataclass
class ActionRef:
    """One action of a card's history before it is rendered: enough to filter, sort and page."""

    id: str
    type: str
    changed: str
    task: int
    at: float
    member: int
    detail: Any = None


@dataclass
class TrelloState:
    """Trello-only facts about cards, keyed by task index, plus the board furniture (lists, labels, fields)."""

    list_override: dict[int, tuple[int, int]] = field(default_factory=dict)  # task -> (list, status when set)
    closed: dict[int, bool] = field(default_factory=dict)
    due_complete: dict[int, bool] = field(default_factory=dict)
    desc: dict[int, str] = field(default_factory=dict)
    pos: dict[int, float] = field(default_factory=dict)
    members: dict[int, list[int]] = field(default_factory=dict)
    due_exact: dict[int, tuple[int, str]] = field(default_factory=dict)
    start_exact: dict[int, tuple[int, str]] = field(default_factory=dict)
    fields: dict[str, CustomFieldDef] = field(default_factory=dict)
    board_fields: dict[int, list[str]] = field(default_factory=dict)
    values: dict[tuple[int, str], dict[str, Any] | None] = field(default_factory=dict)
    attachments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    actions: dict[str, ClientAction] = field(default_factory=dict)
    actions_by_task: dict[int, list[str]] = field(default_factory=dict)
    lists: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # board -> clients' (list id, name)
    counter: int = 0


class TrelloWorld:
    """The Trello view of the portfolio: ids, boards, cards, custom fields and actions, read and written."""

    def __init__(self, portfolio: Portfolio) -> None:
        p = portfolio
        self.p = p
        self.state = TrelloState()
        self._ids: dict[tuple[str, int], str] = {}
        self._creators: dict[int, dict[str, Any]] = {}
        self.boards = [pr.index for pr in p.projects_of(TRELLO)]
        self.board_by_id = {trello_object_id(p, K_BOARD, b): b for b in self.boards}
        self.list_by_id = {self.list_id(b, k): (b, k) for b in self.boards for k in range(len(LIST_NAMES))}
        self.label_by_id = {self.label_id(b, k): (b, k) for b in self.boards for k in range(len(LABELS))}
        self.person_by_member = {self.member_id(n): n for n in range(len(p.people))}
        self.person_by_member[self.member_id(ME)] = ME
        self.person_by_username = {self.username(n): n for n in range(len(p.people))}
        self.person_by_username[self.username(ME)] = ME
        lo, hi = p.tool_ranges[TRELLO]
        self.lo, self.hi = lo, min(hi, p.tasks_generated)
        # Generated history must not move when clients change a card later, so it is computed from a snapshot.
        t = p.tasks
        self.gen_status = t.status[lo:hi].copy()
        self.gen_due = t.due[lo:hi].copy()
        self.gen_updated = t.updated[lo:hi].copy()
        self.gen_completed = t.completed[lo:hi].copy()
        self.gen_span = {b: (p.projects[b].first_task, p.projects[b].first_task + p.projects[b].task_count)
                         for b in self.boards}
        self.attachment_links: dict[int, list[int]] = {}
        for k in p.links_of(LINK_ATTACHMENT):
            self.attachment_links.setdefault(int(p.link_succ[k]), []).append(int(k))
        self._short_links: dict[str, int] | None = None
        for b in self.boards:
            self._add_generated_fields(b)

    def add_board(self, name: str) -> int:
        """A new, empty board (`POST /1/boards`), with the default lists and the generated custom fields."""
        p = self.p
        b = p.add_project(TRELLO, name)
        self.boards.append(b)
        self.board_by_id[trello_object_id(p, K_BOARD, b)] = b
        self.list_by_id.update({self.list_id(b, k): (b, k) for k in range(len(LIST_NAMES))})
        self.label_by_id.update({self.label_id(b, k): (b, k) for k in range(len(LABELS))})
        self.gen_span[b] = (self.hi, self.hi)
        self._add_generated_fields(b)
        return b

    # -- ids (cached: every card and action names its board, list and members) -----------------------------
    def board_id(self, board: int) -> str:
        return self._ids.get(("board", board)) or self._cache(("board", board), trello_object_id(self.p, K_BOARD, board))

    def list_id(self, board: int, k: int) -> str:
        if k >= len(LIST_NAMES):
            return self.state.lists[board][k - len(LIST_NAMES)][0]
        key = ("list", board * 8 + k)
        return self._ids.get(key) or self._cache(key, trello_object_id(self.p, K_LIST, board * 8 + k))

    def list_name(self, board: int, k: int) -> str:
        return LIST_NAMES[k] if k < len(LIST_NAMES) else self.state.lists[board][k - len(LIST_NAMES)][1]

    def list_indexes(self, board: int) -> range:
        """The board's lists: the six generated ones, then those clients created."""
        return range(len(LIST_NAMES) + len(self.state.lists.get(board, ())))

    def label_id(self, board: int, k: int) -> str:
        key = ("label", board * 8 + k)
        return self._ids.get(key) or self._cache(key, trello_object_id(self.p, K_LABEL, board * 8 + k))

    def member_id(self, person: int) -> str:
        key = ("member", person)
        return self._ids.get(key) or self._cache(
            key, trello_object_id(self.p, K_MEMBER, ME_N if person == ME else person))

    def _cache(self, key: tuple[str, int], value: str) -> str:
        self._ids[key] = value
        return value

    def username(self, person: int) -> str:
        if person == ME:
            return "coordinator"
        who = self.p.people[person]
        return f"{who.first}{who.last}{person}".lower()

    def board_short_link(self, board: int) -> str:
        key = ("short", board)
        return self._ids.get(key) or self._cache(key, _encode62(mix(self.p.seed, board, 21), 8))

    def next_id(self, at: float | None = None) -> str:
        """A fresh 24-hex id for something a client created now."""
        self.state.counter += 1
        return trello_object_id(self.p, K_CLIENT, self.state.counter, created=self.p.now() if at is None else at)

    # -- lookups ----------------------------------------------------------------------------------------------
    def board(self, board_id: str) -> int:
        if board_id in self.board_by_id:
            return self.board_by_id[board_id]
        for b in self.boards:
            if board_id == self.board_short_link(b):
                return b
        if not HEX24.match(board_id) and not SHORT_LINK.match(board_id):
            raise TrelloError(400, "invalid id")
        raise _not_found()

    def card(self, card_id: str, include_deleted: bool = False) -> int:
        """The task index of a card id or shortLink; 400 for a malformed id, 404 for an unknown or deleted card."""
        p = self.p
        if HEX24.match(card_id):
            i = trello_index(card_id.lower())
            if i is None or i >= p.tasks.size or int(p.tasks.tool[i]) != TRELLO or trello_id(p, i) != card_id.lower():
                raise _not_found()
        elif SHORT_LINK.match(card_id):
            i = self._card_by_short_link(card_id)
        else:
            raise TrelloError(400, "invalid id")
        if p.tasks.deleted[i] and not include_deleted:
            raise _not_found()
        return i

    def _card_by_short_link(self, short_link: str) -> int:
        p = self.p
        if self._short_links is None:
            self._short_links = {trello_short_link(p, int(i)): int(i) for i in p.task_indexes(TRELLO, None, True)}
        i = self._short_links.get(short_link)
        if i is None:
            for j in range(self.hi, p.tasks.size):
                if int(p.tasks.tool[j]) == TRELLO and trello_short_link(p, j) == short_link:
                    self._short_links[short_link] = j
                    return j
            raise _not_found()
        return i

    def member(self, member_id: str) -> int:
        if member_id == "me":
            return ME
        if member_id in self.person_by_member:
            return self.person_by_member[member_id]
        if member_id in self.person_by_username:
            return self.person_by_username[member_id]
        raise _not_found()

    def board_tasks(self, board: int, include_deleted: bool = False) -> np.ndarray:
        """A board's task indexes in creation order: its generated span plus cards clients added."""
        p = self.p
        first, end = self.gen_span[board]
        parts = [np.arange(first, min(end, self.hi), dtype=np.int64)]
        if p.tasks.size > self.hi:
            added = np.flatnonzero((p.tasks.project[self.hi : p.tasks.size] == board)
                                   & (p.tasks.tool[self.hi : p.tasks.size] == TRELLO))
            parts.append(added + self.hi)
        idx = np.concatenate(parts)
        if not include_deleted:
            idx = idx[~p.tasks.deleted[idx]]
        return idx

    # -- card facts -----------------------------------------------------------------------------------------
    def _hash(self, i: int, salt: int) -> int:
        return mix(self.p.seed, i, salt)

    def creation_list(self, i: int) -> int:
        return BACKLOG if self._hash(i, 22) % 3 == 0 else TO_DO

    def status_list(self, i: int, status: int) -> int:
        """The list a card with this status sits in when nobody chose one."""
        if status == TODO:
            return self.creation_list(i)
        if status == IN_PROGRESS:
            return REVIEW if self._hash(i, 23) % 4 == 0 else DOING
        return DONE_LIST if status == DONE else WONT_DO

    def list_of(self, i: int) -> int:
        status = int(self.p.tasks.status[i])
        chosen = self.state.list_override.get(i)
        if chosen is not None and chosen[1] == status:
            return chosen[0]
        return self.status_list(i, status)

    def is_closed(self, i: int) -> bool:
        if i in self.state.closed:
            return self.state.closed[i]
        return self._generated_archive_at(i) is not None

    def is_due_complete(self, i: int) -> bool:
        if i in self.state.due_complete:
            return self.state.due_complete[i]
        return int(self.p.tasks.status[i]) == DONE

    def due(self, i: int) -> str | None:
        day = int(self.p.tasks.due[i])
        exact = self.state.due_exact.get(i)
        return exact[1] if exact and exact[0] == day else day_iso(day, DUE_HOUR)

    def start(self, i: int) -> str | None:
        day = int(self.p.tasks.start[i])
        exact = self.state.start_exact.get(i)
        return exact[1] if exact and exact[0] == day else day_iso(day, START_HOUR)

    def card_members(self, i: int) -> list[int]:
        if i in self.state.members:
            return self.state.members[i]
        assignee = int(self.p.tasks.assignee[i])
        return [assignee] if assignee >= 0 else []

    def card_labels(self, i: int) -> list[dict[str, Any]]:
        h = self._hash(i, 24)
        if h % 4:
            return []
        board = int(self.p.tasks.project[i])
        return [self.label_json(board, (h >> 8) % len(LABELS))]

    def comment_count(self, i: int) -> int:
        return sum(1 for a in self.state.actions_by_task.get(i, ()) if self.state.actions[a].type == "commentCard")

    # -- rendering ------------------------------------------------------------------------------------------
    def board_json(self, board: int, fields: set[str] | None = None) -> dict[str, Any]:
        p = self.p
        pr = p.projects[board]
        short = self.board_short_link(board)
        tasks = self.board_tasks(board)
        last = float(p.tasks.updated[tasks].max()) if len(tasks) else p.clock_anchor
        document = {
            "id": self.board_id(board), "name": pr.name, "desc": f"{pr.name}: {pr.key} work tracked by the team.",
            "closed": False, "idMemberCreator": self.member_id(ME),
            "idOrganization": trello_object_id(p, K_ORG, 0), "idEnterprise": None, "pinned": False,
            "url": f"https://trello.com/b/{short}/{_slug(pr.name)}", "shortUrl": f"https://trello.com/b/{short}",
            "shortLink": short,
            "prefs": {"permissionLevel": "org", "hideVotes": False, "voting": "disabled", "comments": "members",
                      "invitations": "members", "selfJoin": True, "cardCovers": True, "isTemplate": False,
                      "cardAging": "regular", "calendarFeedEnabled": False, "backgroundBrightness": "dark",
                      "backgroundTopColor": "#0079bf", "backgroundBottomColor": "#0079bf", "canBePublic": True,
                      "canBeEnterprise": True, "canBeOrg": True, "canBePrivate": True, "canInvite": True},
            "labelNames": {color: name for color, name in LABELS},
            "dateLastActivity": iso_ms(last), "dateLastView": iso_ms(p.clock_anchor), "starred": False,
            "subscribed": False, "creationMethod": None, "enterpriseOwned": False,
        }
        return _select(document, fields)

    def list_json(self, board: int, k: int) -> dict[str, Any]:
        return {"id": self.list_id(board, k), "name": self.list_name(board, k), "closed": False, "color": None,
                "idBoard": self.board_id(board), "pos": POS_STEP * (k + 1), "subscribed": False,
                "limits": {}, "status": None}

    def label_json(self, board: int, k: int) -> dict[str, Any]:
        color, name = LABELS[k]
        return {"id": self.label_id(board, k), "idBoard": self.board_id(board), "name": name, "color": color}

    def member_json(self, person: int, me: bool = False) -> dict[str, Any]:
        p = self.p
        if person == ME:
            full, initials = "Sandbox Coordinator", "SC"
            email = CREDENTIALS["jira"]["email"]
        else:
            who = p.people[person]
            full, initials, email = who.display_name(TRELLO), who.first[0] + who.last[0], who.email_in(TRELLO)
        member_id = self.member_id(person)
        avatar = f"{mix(p.seed, 51, person):016x}{mix(p.seed, 52, person):016x}"
        document: dict[str, Any] = {
            "id": member_id, "activityBlocked": False, "avatarHash": avatar,
            "avatarUrl": f"https://trello-members.s3.amazonaws.com/{member_id}/{avatar}", "bio": "",
            "confirmed": True, "fullName": full, "idMemberReferrer": None, "initials": initials,
            "memberType": "normal", "status": "disconnected", "url": f"https://trello.com/{self.username(person)}",
            "username": self.username(person),
        }
        if me:
            # Trello shows the email only to its owner.
            document.update(email=email, idBoards=[self.board_id(b) for b in self.boards],
                            idOrganizations=[trello_object_id(p, K_ORG, 0)], avatarSource="gravatar")
        return document

    def member_creator(self, person: int) -> dict[str, Any]:
        """The compact member an action names (shared between renders: callers must not change it)."""
        if person not in self._creators:
            document = self.member_json(person)
            self._creators[person] = {k: document[k] for k in ("id", "activityBlocked", "avatarHash", "avatarUrl",
                                                                "fullName", "idMemberReferrer", "initials",
                                                                "username")}
        return self._creators[person]

    def card_json(self, i: int, fields: set[str] | None = None) -> dict[str, Any]:
        """A card as `GET /cards/{id}` renders it (all fields unless `fields` narrows them)."""
        p = self.p
        t = p.tasks
        board = int(t.project[i])
        short = trello_short_link(p, i)
        name = p.title(i)
        seq = int(t.seq[i])
        due, start, done = self.due(i), self.start(i), self.is_due_complete(i)
        labels = self.card_labels(i)
        desc = self.state.desc.get(i, "")
        badges = {
            "attachmentsByType": {"trello": {"board": 0, "card": 0}}, "location": False, "votes": 0,
            "viewingMemberVoted": False, "subscribed": False, "fogbugz": "", "checkItems": 0,
            "checkItemsChecked": 0, "checkItemsEarliestDue": None, "comments": self.comment_count(i),
            "attachments": len(self.attachments(i)), "description": bool(desc), "due": due, "dueComplete": done,
            "start": start,
        }
        document = {
            "id": trello_id(p, i), "badges": badges, "checkItemStates": [], "closed": self.is_closed(i),
            "dueComplete": done, "dateLastActivity": iso_ms(float(t.updated[i])), "desc": desc,
            "descData": {"emoji": {}}, "due": due, "dueReminder": None, "idBoard": self.board_id(board),
            "idChecklists": [], "idList": self.list_id(board, self.list_of(i)),
            "idMembers": [self.member_id(m) for m in self.card_members(i)], "idMembersVoted": [], "idShort": seq,
            "idAttachmentCover": None, "labels": labels, "idLabels": [label["id"] for label in labels],
            "manualCoverAttachment": False, "name": name, "pos": self.state.pos.get(i, float(POS_STEP * seq)),
            "shortLink": short, "shortUrl": f"https://trello.com/c/{short}", "start": start, "subscribed": False,
            "url": f"https://trello.com/c/{short}/{seq}-{_slug(name)}", "isTemplate": False, "cardRole": None,
            "cover": {"idAttachment": None, "color": None, "idUploadedBackground": None, "size": "normal",
                      "brightness": "dark", "idPlugin": None},
        }
        return _select(document, fields)

    def card_with_extras(self, i: int, args: dict[str, Any], fields: set[str] | None) -> dict[str, Any]:
        """A card plus what `customFieldItems=true`, `attachments=true`, `checklists=` and `actions=` add."""
        document = self.card_json(i, fields)
        if str(args.get("customFieldItems", "")).lower() == "true":
            document["customFieldItems"] = self.field_items(i, document.get("id"))
        if str(args.get("attachments", "")).lower() in ("true", "cover"):
            document["attachments"] = self.attachments(i)
        if args.get("checklists") not in (None, "", "none"):
            document["checklists"] = []
        if args.get("actions") not in (None, "", "none"):
            types = _action_filter(str(args["actions"]))
            refs = [r for r in self.task_action_refs(i) if _wanted(r, types)]
            refs.sort(key=lambda r: r.id, reverse=True)
            limit = _int_param(args, "actions_limit", ACTIONS_DEFAULT_LIMIT, 0, MAX_LIMIT)
            fields_ = _fields(args, "action_fields")
            creator = _bool(args.get("action_memberCreator", True), "action_memberCreator")
            document["actions"] = [self.action_json(r, fields_, creator) for r in refs[:limit]]
        return document

    # -- cards of a board -------------------------------------------------------------------------------------
    def cards(self, tasks: np.ndarray, args: dict[str, Any], card_filter: str = "") -> list[dict[str, Any]]:
        """Cards of `tasks` filtered (`filter` or the path's), paged by `limit`/`before`/`since`, rendered."""
        card_filter = card_filter or str(args.get("filter") or "visible")
        if card_filter not in CARD_FILTERS:
            raise _invalid("filter")
        limit = _int_param(args, "limit", 0, 0, MAX_LIMIT) if args.get("limit") not in (None, "") else None
        chosen = [int(i) for i in tasks if _filter_closed(card_filter, self.is_closed(int(i)))]
        if limit is not None or args.get("before") or args.get("since"):
            chosen = self._page_by_id(chosen, args, limit)
        else:
            chosen.sort(key=lambda i: (self.list_of(i), self.state.pos.get(i, float(POS_STEP * self.p.tasks.seq[i]))))
        fields = _fields(args)
        return [self.card_with_extras(i, args, fields) for i in chosen]

    def _page_by_id(self, chosen: list[int], args: dict[str, Any], limit: int | None) -> list[int]:
        keyed = [(trello_id(self.p, i), i) for i in chosen]
        if args.get("before"):
            bound = _bound_id(str(args["before"]), "before", upper=True)
            keyed = [pair for pair in keyed if pair[0] < bound]
        if args.get("since"):
            bound = _bound_id(str(args["since"]), "since", upper=False)
            keyed = [pair for pair in keyed if pair[0] > bound]
        keyed.sort(reverse=True)
        if limit is not None:
            keyed = keyed[:limit]
        return [i for _, i in keyed]

    # -- custom fields ------------------------------------------------------------------------------------------
    def _add_generated_fields(self, board: int) -> None:
        p = self.p
        ids = []
        for slot, (name, kind) in enumerate(GENERATED_FIELDS):
            field_id = trello_object_id(p, K_FIELD, board * 16 + slot)
            options = []
            if kind == "list":
                options = [{"id": trello_object_id(p, K_OPTION, board * 16 + j), "idCustomField": field_id,
                            "value": {"text": text}, "color": color, "pos": POS_STEP * (j + 1)}
                           for j, (text, color) in enumerate(PRIORITY_OPTIONS)]
            self.state.fields[field_id] = CustomFieldDef(field_id, board, name, kind, POS_STEP * (slot + 1),
                                                         options, generated_slot=slot)
            ids.append(field_id)
        self.state.board_fields[board] = ids

    def field_json(self, definition: CustomFieldDef) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": definition.id, "idModel": self.board_id(definition.board), "modelType": "board",
            "fieldGroup": f"{mix(self.p.seed, 61, int(definition.id[16:], 16)):016x}" * 4,
            "display": {"cardFront": definition.card_front, "name": definition.name},
            "name": definition.name, "pos": definition.pos, "type": definition.type,
            "limits": {"customFieldOptions": {"perField": {"status": "ok", "disableAt": 50, "warnAt": 45}}},
            "isSuggestedField": False,
        }
        if definition.type == "list":
            document["options"] = definition.options
        return document

    def custom_field(self, field_id: str) -> CustomFieldDef:
        if not HEX24.match(field_id):
            raise TrelloError(400, "invalid id")
        definition = self.state.fields.get(field_id)
        if definition is None:
            raise _not_found()
        return definition

    def _generated_value(self, i: int, definition: CustomFieldDef) -> dict[str, Any] | None:
        if i >= self.hi:
            return None
        if definition.generated_slot == 0:
            estimate = float(self.p.tasks.estimate[i])
            return None if math.isnan(estimate) else {"value": {"number": _number_text(estimate)}}
        if definition.generated_slot == 1:
            pick = self._hash(i, 25) % 4
            return None if pick == 0 else {"idValue": definition.options[pick - 1]["id"]}
        if definition.generated_slot == 2:
            approved = self.gen_status[i - self.lo] == DONE and self._hash(i, 26) % 2 == 0
            return {"value": {"checked": "true"}} if approved else None
        return None

    def item_id(self, i: int, definition: CustomFieldDef) -> str:
        """A card's item for a field: creation time, kind, the field's slot (or client field number), the card."""
        slot = definition.generated_slot if definition.generated_slot >= 0 else \
            0x100000 | (int(definition.id[16:], 16) & 0xFFFFF)
        return f"{int(self.p.tasks.created[i]):08x}{K_ITEM:02x}{slot:06x}{i:08x}"

    def field_items(self, i: int, card_id: str | None = None) -> list[dict[str, Any]]:
        """The card's custom-field items (values as strings), in field order; unset fields are absent."""
        board = int(self.p.tasks.project[i])
        card_id = card_id or trello_id(self.p, i)
        items = []
        for field_id in self.state.board_fields.get(board, ()):
            definition = self.state.fields[field_id]
            key = (i, field_id)
            value = self.state.values[key] if key in self.state.values else self._generated_value(i, definition)
            if value is not None:
                items.append(self.item_json(i, definition, value, card_id))
        return items

    def item_json(self, i: int, definition: CustomFieldDef, value: dict[str, Any],
                  card_id: str | None = None) -> dict[str, Any]:
        return {"id": self.item_id(i, definition), **value, "idCustomField": definition.id,
                "idModel": card_id or trello_id(self.p, i), "modelType": "card"}

    def set_item(self, i: int, definition: CustomFieldDef, body: dict[str, Any]) -> dict[str, Any]:
        """Store a custom-field item from `{"value": {...}}` or `{"idValue": ...}`; returns it as Trello does."""
        value = _item_value(definition, body)
        key = (i, definition.id)
        old = self.state.values[key] if key in self.state.values else self._generated_value(i, definition)
        self.state.values[key] = value
        self.p.touch(i)
        if value is None:
            item = {"id": self.item_id(i, definition), "idCustomField": definition.id,
                    "idModel": trello_id(self.p, i), "modelType": "card"}
        else:
            item = self.item_json(i, definition, value)
        # Trello records the change as an action by the member who made it, with the field and the old value.
        empty = {"idValue": None} if definition.type == "list" else {"value": None}
        self.record(i, "updateCustomFieldItem", data={
            "customField": {"id": definition.id, "name": definition.name, "type": definition.type},
            "customFieldItem": item, "old": old or empty})
        return item

    # -- attachments ----------------------------------------------------------------------------------------
    def attachments(self, i: int) -> list[dict[str, Any]]:
        """URL attachments: generated cross-tool links first, then clients'."""
        p = self.p
        out = []
        for j, k in enumerate(self.attachment_links.get(i, ())):
            pred = int(p.link_pred[k])
            url = task_url(p, pred)
            at = self._link_at(i, k)
            out.append({"id": trello_object_id(p, K_LINK_ATTACHMENT, k, created=at), "bytes": None,
                        "date": iso_ms(at), "edgeColor": None, "idMember": self.member_id(self._actor(i)),
                        "isUpload": False, "mimeType": "", "name": url, "previews": [], "url": url,
                        "pos": POS_STEP * (j + 1), "fileName": None})
        out.extend(self.state.attachments.get(i, ()))
        return out

    def _link_at(self, i: int, k: int) -> float:
        created = float(self.p.tasks.created[i])
        updated = float(self.gen_updated[i - self.lo]) if self.lo <= i < self.hi else created + 7200
        return created + max(60.0, (updated - created) * 0.1) + (k % 60)

    def add_attachment(self, i: int, args: dict[str, Any]) -> dict[str, Any]:
        url = str(args.get("url") or "")
        if not url:
            raise TrelloError(400, "Must provide either a file or url")
        if not url.startswith(("http://", "https://")):
            raise _invalid("url")
        name = str(args.get("name") or url)[:256]
        now = self.p.now()
        existing = self.attachments(i)
        attachment = {"id": self.next_id(now), "bytes": None, "date": iso_ms(now), "edgeColor": None,
                      "idMember": self.member_id(ME), "isUpload": False, "mimeType": str(args.get("mimeType") or ""),
                      "name": name, "previews": [], "url": url,
                      "pos": POS_STEP * (len(existing) + 1), "fileName": None}
        self.state.attachments.setdefault(i, []).append(attachment)
        self.record(i, "addAttachmentToCard", data={"attachment": {"id": attachment["id"], "name": name,
                                                                   "url": url}})
        self.p.touch(i)
        return attachment

    # -- history -------------------------------------------------------------------------------------------------
    def _actor(self, i: int) -> int:
        assignee = int(self.p.tasks.assignee[i])
        return assignee if assignee >= 0 else ME

    def due_history(self, i: int) -> list[DueChange]:
        """Every due change of a card, oldest first; the generated part as generated, whatever changed since."""
        p = self.p
        changes: list[DueChange] = []
        if self.lo <= i < self.hi:
            j = i - self.lo
            count, final = int(p.tasks.reschedules[i]), int(self.gen_due[j])
            if count and final != NO_DAY:
                shifts = [due_shift(p.seed, i, k) for k in range(count)]
                day = final - sum(shifts)
                created, updated = float(p.tasks.created[i]), float(self.gen_updated[j])
                for k, shift in enumerate(shifts):
                    at = created + (updated - created) * (k + 1) / (count + 1)
                    changes.append(DueChange(at=at, old_day=day, new_day=day + shift, person=int(p.tasks.assignee[i])))
                    day += shift
        changes.extend(p.history_extra.get(i, ()))
        return changes

    def _generated_moves(self, i: int) -> list[tuple[float, int, int]]:
        """(when, from list, to list) of the status moves the generated card went through."""
        if not self.lo <= i < self.hi:
            return []
        j = i - self.lo
        status = int(self.gen_status[j])
        created = float(self.p.tasks.created[i])
        first = self.creation_list(i)
        if status == TODO:
            return []
        end = float(self.gen_completed[j]) if status == DONE else float(self.gen_updated[j])
        started = created + max(60.0, (end - created) * 0.25)
        if status == IN_PROGRESS:
            return [(started, first, self.status_list(i, IN_PROGRESS))]
        if status == CANCELLED:
            return [(end, first, WONT_DO)]
        return [(started, first, DOING), (max(end, started + 60), DOING, DONE_LIST)]

    def _generated_archive_at(self, i: int) -> float | None:
        if not self.lo <= i < self.hi:
            return None
        j = i - self.lo
        if self.gen_status[j] != DONE or self._hash(i, 27) % 5:
            return None
        completed, updated = float(self.gen_completed[j]), float(self.gen_updated[j])
        return (completed + updated) / 2 if updated > completed + 120 else completed + 60

    def task_action_refs(self, i: int) -> list[ActionRef]:
        """Every action of one card (a deleted card keeps only its `deleteCard`)."""
        p = self.p
        client = [self.state.actions[a] for a in self.state.actions_by_task.get(i, ())]
        if p.tasks.deleted[i]:
            return [_client_ref(a) for a in client if a.type == "deleteCard"]
        created = float(p.tasks.created[i])
        actor = self._actor(i)
        refs = [ActionRef(trello_object_id(p, K_CREATE, i, created=created), "createCard", "", i, created, actor,
                          self.creation_list(i) if i < self.hi else None)]
        for n, (at, old, new) in enumerate(self._generated_moves(i)):
            refs.append(ActionRef(trello_object_id(p, K_MOVE, i * 4 + n, created=at), "updateCard", "idList", i, at,
                                  actor, (old, new)))
        archived = self._generated_archive_at(i)
        if archived is not None:
            refs.append(ActionRef(trello_object_id(p, K_ARCHIVE, i, created=archived), "updateCard", "closed", i,
                                  archived, actor, True))
        for k, change in enumerate(self.due_history(i)):
            member = change.person if change.person >= 0 else ME
            refs.append(ActionRef(trello_object_id(p, K_DUE, i * DUE_CHANGES_PER_CARD + k, created=change.at),
                                  "updateCard", "due", i, change.at, member, change))
        for k in self.attachment_links.get(i, ()):
            at = self._link_at(i, k)
            refs.append(ActionRef(trello_object_id(p, K_LINK_ACTION, k, created=at), "addAttachmentToCard", "", i,
                                  at, actor, k))
        refs.extend(_client_ref(a) for a in client)
        return refs

    def record(self, i: int, kind: str, field_name: str = "", data: dict[str, Any] | None = None) -> ClientAction:
        """Add an action a client's write caused, by the token's owner, now."""
        now = self.p.now()
        action = ClientAction(self.next_id(now), kind, i, now, ME, field_name, data or {})
        self.state.actions[action.id] = action
        self.state.actions_by_task.setdefault(i, []).append(action.id)
        return action

    def action_json(self, ref: ActionRef, fields: set[str] | None = None, member_creator: bool = True) -> dict[str, Any]:
        """One action as Trello renders it (data, display and the member who made it): only `fields` (None = all),
        and the `memberCreator` object unless `member_creator` is false, as the `fields` and `memberCreator`
        parameters of Trello's action listings ask. The display is built only when asked for."""
        document: dict[str, Any] = {"id": ref.id}
        wanted = (lambda name: True) if fields is None else fields.__contains__
        if wanted("idMemberCreator"):
            document["idMemberCreator"] = self.member_id(ref.member)
        if wanted("data") or wanted("display"):
            data, card, key = self._action_data(ref)
            if wanted("data"):
                document["data"] = data
        if wanted("appCreator"):
            document["appCreator"] = None
        if wanted("type"):
            document["type"] = ref.type
        if wanted("date"):
            document["date"] = iso_ms(ref.at)
        if wanted("limits"):
            document["limits"] = {"reactions": {
                "perAction": {"status": "ok", "disableAt": 900, "warnAt": 810},
                "uniquePerAction": {"status": "ok", "disableAt": 17, "warnAt": 16}}} if ref.type == "commentCard" else {}
        creator = self.member_creator(ref.member) if member_creator or wanted("display") else None
        if wanted("display") and creator is not None:
            document["display"] = {"translationKey": key, "entities": {
                "card": {"type": "card", "id": card["id"], "shortLink": card["shortLink"], "text": card["name"]},
                "memberCreator": {"type": "member", "id": creator["id"], "username": creator["username"],
                                  "text": creator["fullName"]}}}
        if member_creator:
            document["memberCreator"] = creator
        return document

    def _action_data(self, ref: ActionRef) -> tuple[dict[str, Any], dict[str, Any], str]:
        """An action's `data` (its board, list and card, and what its type carries), its card as the display names
        it (a type may put a slimmer card in `data`) and its display key."""
        p = self.p
        i = ref.task
        board = int(p.tasks.project[i])
        list_k = self.list_of(i)
        card = {"id": trello_id(p, i), "name": p.title(i), "idShort": int(p.tasks.seq[i]),
                "shortLink": trello_short_link(p, i)}
        data: dict[str, Any] = {
            "board": {"id": self.board_id(board), "name": p.projects[board].name, "shortLink": self.board_short_link(board)},
            "list": {"id": self.list_id(board, list_k), "name": self.list_name(board, list_k)},
            "card": card,
        }
        return data, card, _render_detail(self, ref, data, board)

    def actions_page(self, refs: list[ActionRef], args: dict[str, Any], default_filter: str) -> list[dict[str, Any]]:
        """Filter, bound by `since`/`before`, sort newest first, cap at the latest 1000, page and render."""
        types = _action_filter(str(args.get("filter") or default_filter))
        limit = _int_param(args, "limit", ACTIONS_DEFAULT_LIMIT, 0, MAX_LIMIT)
        page = _int_param(args, "page", 0, 0, 10**6)
        chosen = [r for r in refs if _wanted(r, types)]
        if args.get("before"):
            bound = _bound_id(str(args["before"]), "before", upper=True)
            chosen = [r for r in chosen if r.id < bound]
        if args.get("since"):
            bound = _bound_id(str(args["since"]), "since", upper=False)
            chosen = [r for r in chosen if r.id > bound]
        chosen.sort(key=lambda r: r.id, reverse=True)
        reachable = chosen[:LATEST_ACTIONS]
        fields = _fields(args)
        creator = _bool(args.get("memberCreator", True), "memberCreator")
        return [self.action_json(r, fields, creator) for r in reachable[page * limit : page * limit + limit]]

    def find_action(self, action_id: str) -> ActionRef:
        if not HEX24.match(action_id):
            raise TrelloError(400, "invalid id")
        action_id = action_id.lower()
        if action_id in self.state.actions:
            return _client_ref(self.state.actions[action_id])
        kind, n = int(action_id[8:10], 16), int(action_id[16:], 16)
        candidates = {K_CREATE: n, K_MOVE: n // 4, K_ARCHIVE: n, K_DUE: n // DUE_CHANGES_PER_CARD}
        if kind in candidates:
            i = candidates[kind]
        elif kind == K_LINK_ACTION and n < len(self.p.link_succ):
            i = int(self.p.link_succ[n])
        else:
            raise _not_found()
        if i >= self.p.tasks.size or int(self.p.tasks.tool[i]) != TRELLO:
            raise _not_found()
        for ref in self.task_action_refs(i):
            if ref.id == action_id:
                return ref
        raise _not_found()

    # -- writes ----------------------------------------------------------------------------------------------
    def create_card(self, args: dict[str, Any]) -> int:
        """`POST /cards`: a new task on the list's board, in the list's status."""
        list_id = str(args.get("idList") or "")
        if not HEX24.match(list_id):
            raise _invalid("idList")
        if list_id not in self.list_by_id:
            raise _not_found()
        board, k = self.list_by_id[list_id]
        due, start = _day_arg(args, "due"), _day_arg(args, "start")
        members = self._members_arg(args.get("idMembers"))
        i = self.p.add_task(TRELLO, board, str(args.get("name") or ""), status=list_status(k),
                            due=NO_DAY if due is None else due[0], start=NO_DAY if start is None else start[0],
                            assignee=members[0] if members else -1)
        if list_status(k) == DONE:
            self.p.set_status(i, DONE)
        self.state.list_override[i] = (k, list_status(k))
        self._remember_exact(i, due, start)
        if args.get("desc"):
            self.state.desc[i] = str(args["desc"])
        if args.get("pos") not in (None, "", "bottom", "top"):
            self.state.pos[i] = _pos(args["pos"])
        return i

    def update_card(self, i: int, args: dict[str, Any]) -> None:
        """`PUT /cards/{id}`: apply each field given, recording history as Trello does."""
        p = self.p
        if args.get("idList"):
            self.move_card(i, str(args["idList"]))
        if "dueComplete" in args:
            complete = _bool(args["dueComplete"], "dueComplete")
            self.state.due_complete[i] = complete
            if complete and int(p.tasks.status[i]) != DONE:
                self.move_card(i, self.list_id(int(p.tasks.project[i]), DONE_LIST))
            p.touch(i)
        if "closed" in args:
            closed = _bool(args["closed"], "closed")
            if closed != self.is_closed(i):
                self.state.closed[i] = closed
                self.record(i, "updateCard", "closed", {"old": {"closed": not closed}, "closed": closed})
                p.touch(i)
        if "due" in args:
            due = _day_arg(args, "due")
            p.set_due(i, NO_DAY if due is None else due[0], person=-1)
            self._remember_exact(i, due, None)
        if "start" in args:
            start = _day_arg(args, "start")
            p.tasks.start[i] = NO_DAY if start is None else start[0]
            self._remember_exact(i, None, start)
            p.touch(i)
        if args.get("name"):
            p.title_overrides[i] = str(args["name"])
            p.touch(i)
        if "desc" in args:
            self.state.desc[i] = str(args["desc"] or "")
            p.touch(i)
        if args.get("pos") not in (None, ""):
            self.state.pos[i] = _pos(args["pos"])
            p.touch(i)
        if "idMembers" in args:
            members = self._members_arg(args["idMembers"])
            self.state.members[i] = members
            p.tasks.assignee[i] = members[0] if members else -1
            p.touch(i)

    def move_card(self, i: int, list_id: str) -> None:
        p = self.p
        target = self.list_by_id.get(list_id)
        if target is None:
            raise _invalid("idList")
        board, k = target
        if board != int(p.tasks.project[i]):
            raise _invalid("idList")
        old = self.list_of(i)
        if old == k:
            return
        status = list_status(k)
        if status != int(p.tasks.status[i]):
            p.set_status(i, status)
        p.touch(i)
        self.state.list_override[i] = (k, status)
        self.record(i, "updateCard", "idList", {"old": {"idList": self.list_id(board, old)}, "from": old, "to": k})

    def create_list(self, board_id: str, args: dict[str, Any]) -> dict[str, Any]:
        """`POST /lists` (or `/boards/{id}/lists`): a new open list at the board's end."""
        board = self.board(board_id)
        name = str(args.get("name") or "")
        if not name:
            raise _invalid("name")
        list_id = self.next_id()
        self.state.lists.setdefault(board, []).append((list_id, name))
        k = len(LIST_NAMES) + len(self.state.lists[board]) - 1
        self.list_by_id[list_id] = (board, k)
        return self.list_json(board, k)

    def delete_card(self, i: int) -> None:
        self.record(i, "deleteCard")
        self.p.delete(i)

    def _remember_exact(self, i: int, due: tuple[int, str] | None, start: tuple[int, str] | None) -> None:
        if due is not None:
            self.state.due_exact[i] = due
        if start is not None:
            self.state.start_exact[i] = start

    def _members_arg(self, raw: Any) -> list[int]:
        if raw in (None, ""):
            return []
        items = raw if isinstance(raw, list) else str(raw).split(",")
        people = []
        for member_id in items:
            if member_id not in self.person_by_member:
                raise _invalid("idMembers")
            people.append(self.person_by_member[member_id])
        return people

    def add_comment(self, i: int, text: str) -> ClientAction:
        action = self.record(i, "commentCard", data={"text": text})
        self.p.touch(i)
        return action

    def comment(self, action_id: str) -> ClientAction:
        ref = self.find_action(action_id)
        action = self.state.actions.get(ref.id)
        if action is None or action.type != "commentCard":
            raise TrelloError(400, "Action is not a comment")
        return action

    def edit_comment(self, action_id: str, text: str) -> ClientAction:
        action = self.comment(action_id)
        action.data["text"] = text
        action.edited_at = self.p.now()
        return action

    def delete_comment(self, action_id: str) -> None:
        action = self.comment(action_id)
        del self.state.actions[action.id]
        self.state.actions_by_task[action.task].remove(action.id)

    def create_field(self, args: dict[str, Any]) -> CustomFieldDef:
        board = self.board(str(args.get("idModel") or ""))
        if args.get("modelType", "board") != "board":
            raise _invalid("modelType")
        kind = str(args.get("type") or "")
        if kind not in CUSTOM_FIELD_TYPES:
            raise _invalid("type")
        name = str(args.get("name") or "")
        if not name:
            raise _invalid("name")
        field_id = self.next_id()
        options = []
        for j, option in enumerate(args.get("options") or []):
            text = option.get("value", {}).get("text", "") if isinstance(option, dict) else str(option)
            options.append({"id": self.next_id(), "idCustomField": field_id, "value": {"text": text},
                            "color": (option.get("color") if isinstance(option, dict) else None) or "none",
                            "pos": POS_STEP * (j + 1)})
        pos = args.get("pos")
        definition = CustomFieldDef(field_id, board, name, kind,
                                    _pos(pos) if pos not in (None, "", "top", "bottom") else
                                    POS_STEP * (len(self.state.board_fields[board]) + 1), options,
                                    card_front=_bool(args.get("display_cardFront", True), "display_cardFront"))
        self.state.fields[field_id] = definition
        self.state.board_fields[board].append(field_id)
        return definition


# -- helpers over refs and values ---------------------------------------------------------------------------------
def _client_ref(action: ClientAction) -> ActionRef:
    return ActionRef(action.id, action.type, action.changed, action.task, action.at, action.member, action)


def _action_filter(raw: str) -> set[str] | None:
    names = {name.strip() for name in raw.split(",") if name.strip()}
    return None if not names or "all" in names else names


def _wanted(ref: ActionRef, types: set[str] | None) -> bool:
    if types is None:
        return True
    return ref.type in types or (bool(ref.changed) and f"{ref.type}:{ref.changed}" in types)


def _filter_closed(card_filter: str, closed: bool) -> bool:
    if card_filter == "all":
        return True
    return closed if card_filter == "closed" else not closed


def list_status(k: int) -> int:
    """The status a card takes in list k: the generated lists' own, open for lists clients created."""
    return LIST_STATUS[k] if k < len(LIST_STATUS) else TODO


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _pos(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _invalid("pos") from None


def _day_arg(args: dict[str, Any], name: str) -> tuple[int, str] | None:
    """A due/start parameter as (day number, timestamp as Trello echoes it); None when cleared."""
    raw = args.get(name)
    if raw in (None, "", "null"):
        return None
    try:
        moment = parse_moment(str(raw)).astimezone(UTC)
    except ValueError:
        raise _invalid(name) from None
    return day_number(moment.date()), iso_ms(moment.timestamp())


def _item_value(definition: CustomFieldDef, body: dict[str, Any]) -> dict[str, Any] | None:
    """The stored form of a custom-field item body (strings, as Trello keeps them); None clears it."""
    bad = TrelloError(400, "Invalid custom field item value.")
    if "idValue" in body:
        if definition.type != "list":
            raise bad
        if body["idValue"] in ("", None):
            return None
        if body["idValue"] not in {o["id"] for o in definition.options}:
            raise bad
        return {"idValue": body["idValue"]}
    value = body.get("value")
    if value in ("", None):
        return None
    key = ITEM_VALUE_KEYS.get(definition.type)
    if key is None or not isinstance(value, dict) or set(value) != {key}:
        raise bad
    raw = value[key]
    text = str(raw).lower() if isinstance(raw, bool) else str(raw)
    try:
        if key == "number":
            float(text)
        elif key == "date":
            text = iso_ms(parse_moment(text).timestamp())
        elif key == "checked" and text not in ("true", "false"):
            raise ValueError(text)
    except ValueError:
        raise bad from None
    return {"value": {key: text}}


def _render_detail(world: TrelloWorld, ref: ActionRef, data: dict[str, Any], board: int) -> str:
    """Fill `data` with what this action type carries; returns its display translation key."""
    if isinstance(ref.detail, ClientAction):
        return _render_client_detail(world, ref.detail, data, board)
    if ref.type == "createCard":
        if ref.detail is not None:
            data["list"] = {"id": world.list_id(board, ref.detail), "name": world.list_name(board, ref.detail)}
        return "action_create_card"
    if ref.type == "addAttachmentToCard":
        url = task_url(world.p, int(world.p.link_pred[ref.detail]))
        data["attachment"] = {"id": trello_object_id(world.p, K_LINK_ATTACHMENT, ref.detail, created=ref.at),
                              "name": url, "url": url}
        return "action_add_attachment_to_card"
    if ref.changed == "idList":
        old, new = ref.detail
        return _render_move(world, data, board, old, new)
    if ref.changed == "closed":
        data["card"]["closed"] = True
        data["old"] = {"closed": False}
        return "action_archived_card"
    change: DueChange = ref.detail
    data["card"]["due"] = day_iso(change.new_day, DUE_HOUR)
    data["old"] = {"due": day_iso(change.old_day, DUE_HOUR)}
    if change.old_day == NO_DAY:
        return "action_added_a_due_date"
    return "action_removed_a_due_date" if change.new_day == NO_DAY else "action_changed_a_due_date"


def _render_move(world: TrelloWorld, data: dict[str, Any], board: int, old: int, new: int) -> str:
    before = {"id": world.list_id(board, old), "name": world.list_name(board, old)}
    after = {"id": world.list_id(board, new), "name": world.list_name(board, new)}
    data["card"]["idList"] = after["id"]
    data["old"] = {"idList": before["id"]}
    data["listBefore"], data["listAfter"] = before, after
    data.pop("list", None)
    return "action_move_card_from_list_to_list"


def _render_client_detail(world: TrelloWorld, action: ClientAction, data: dict[str, Any], board: int) -> str:
    if action.type == "commentCard":
        data["text"] = action.data["text"]
        if action.edited_at is not None:
            data["dateLastEdited"] = iso_ms(action.edited_at)
        return "action_comment_on_card"
    if action.type == "deleteCard":
        data["card"] = {k: data["card"][k] for k in ("id", "idShort", "shortLink")}
        return "action_delete_card"
    if action.type == "addAttachmentToCard":
        data["attachment"] = action.data["attachment"]
        return "action_add_attachment_to_card"
    if action.type == "updateCustomFieldItem":
        data.update(action.data)
        return "action_update_custom_field_item"
    if action.changed == "idList":
        return _render_move(world, data, board, action.data["from"], action.data["to"])
    data["card"]["closed"] = action.data["closed"]
    data["old"] = {"closed": not action.data["closed"]}
    return "action_archived_card" if action.data["closed"] else "action_sent_card_to_board"


# -- HTTP ---------------------------------------------------------------------------------------------------------
OAUTH_KEY = re.compile(r'oauth_consumer_key="([^"]*)"')
OAUTH_TOKEN = re.compile(r'oauth_token="([^"]*)"')


def _credentials(request: Request) -> tuple[str | None, str | None]:
    """The key and token a request carries, in the query string or an `Authorization: OAuth ...` header."""
    key, token = request.query_params.get("key"), request.query_params.get("token")
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "oauth ":
        key_match, token_match = OAUTH_KEY.search(header), OAUTH_TOKEN.search(header)
        key = key or (key_match.group(1) if key_match else None)
        token = token or (token_match.group(1) if token_match else None)
    return key, token


class TrelloProfile(VendorProfile):
    """Trello's key-and-token authentication, text/plain errors and its JSON 429 without Retry-After."""

    name = "trello"

    def principal(self, request: Request) -> str | None:
        key, token = _credentials(request)
        expected = CREDENTIALS["trello"]
        return token if key == expected["key"] and token == expected["token"] else None

    def unauthorized(self, request: Request) -> Response:
        key, _ = _credentials(request)
        return PlainTextResponse("invalid key" if key != CREDENTIALS["trello"]["key"] else "invalid token", 401)

    def too_many_requests(self, retry_after_s: float) -> Response:
        return JSONBody({"error": "API_TOKEN_LIMIT_EXCEEDED", "message": "Rate limit exceeded"}, status_code=429)

    def error(self, status: int, message: str) -> Response:
        return PlainTextResponse(message, status)

    def rate_limit_headers(self, limit: RateLimit, remaining: int, reset_at: float) -> dict[str, str]:
        return {"x-rate-limit-api-token-interval-ms": str(int(limit.window_s * 1000)),
                "x-rate-limit-api-token-max": str(limit.limit),
                "x-rate-limit-api-token-remaining": str(remaining)}


class TrelloPaths(BaseRoute):
    """Everything under `/1`: collapses `//`, maps singular aliases (`/1/card/`), then routes."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.router = Router(routes=routes, default=_not_found_response)

    def matches(self, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == API_ROOT or path.startswith(API_ROOT + "/")):
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        inner = dict(scope, path=normalize_path(scope["path"]))
        await self.router(inner, receive, send)
        if "route" in inner:
            scope["route"] = inner["route"]


def normalize_path(path: str) -> str:
    """`/1//card/abc/` -> `/1/cards/abc`: the forms clients send, as routed."""
    parts = [part for part in path.split("/") if part]
    if len(parts) > 1:
        parts[1] = SINGULAR_ALIASES.get(parts[1], parts[1])
    return "/" + "/".join(parts)


async def _not_found_response(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await PlainTextResponse(NOT_FOUND, 404)(scope, receive, send)


async def request_args(request: Request) -> dict[str, Any]:
    """Query parameters merged with a JSON or form body (py-trello sends writes as JSON bodies)."""
    args: dict[str, Any] = dict(request.query_params)
    if request.method in ("POST", "PUT", "DELETE"):
        body = await request.body()
        if body:
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                args.update(parse_qsl(body.decode(), keep_blank_values=True))
            else:
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise TrelloError(400, "invalid json") from None
                if isinstance(parsed, dict):
                    args.update(parsed)
    return args


Handler = Callable[[Request, dict[str, Any]], Any]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler taking (request, args) and returning JSON data, so TrelloErrors answer text/plain."""

    async def serve(request: Request) -> Response:
        try:
            args = await request_args(request)
            result = handler(request, args)
            return result if isinstance(result, Response) else JSONBody(result)
        except TrelloError as error:
            return PlainTextResponse(error.text, error.status)

    serve.__name__ = handler.__name__
    return serve


def build_routes(world: TrelloWorld) -> list[BaseRoute]:
    """The `/1/...` routes over one Trello world."""
    p = world.p

    def card_of(request: Request) -> int:
        return world.card(request.path_params["id"])

    def me_boards(request: Request, args: dict[str, Any]) -> Any:
        person = world.member(request.path_params["member"])
        if args.get("filter") == "closed":
            return []
        boards = world.boards if person == ME else [
            b for b in world.boards if (p.tasks.assignee[world.board_tasks(b)] == person).any()]
        fields = _fields(args)
        out = []
        for b in boards:
            document = world.board_json(b, fields)
            if args.get("lists") in ("open", "all"):
                document["lists"] = [world.list_json(b, k) for k in world.list_indexes(b)]
            out.append(document)
        return out

    def member(request: Request, args: dict[str, Any]) -> Any:
        person = world.member(request.path_params["member"])
        return _select(world.member_json(person, me=person == ME), _fields(args))

    def board(request: Request, args: dict[str, Any]) -> Any:
        b = world.board(request.path_params["id"])
        document = world.board_json(b, _fields(args))
        if args.get("lists") not in (None, "", "none"):
            document["lists"] = [world.list_json(b, k) for k in world.list_indexes(b)]
        if args.get("cards") not in (None, "", "none"):
            nested = {"filter": args["cards"], "fields": args.get("card_fields"),
                      "customFieldItems": args.get("card_customFieldItems"),
                      "attachments": args.get("card_attachments")}
            document["cards"] = world.cards(world.board_tasks(b), nested, str(args["cards"]))
        if str(args.get("customFields", "")).lower() == "true":
            document["customFields"] = [world.field_json(world.state.fields[f]) for f in world.state.board_fields[b]]
        if args.get("labels") not in (None, "", "none"):
            document["labels"] = [world.label_json(b, k) for k in range(len(LABELS))]
        if args.get("members") not in (None, "", "none"):
            document["members"] = board_members_of(b)
        return document

    def board_members_of(b: int) -> list[dict[str, Any]]:
        people = np.unique(p.tasks.assignee[world.board_tasks(b)])
        return [world.member_json(int(n)) for n in [ME, *people[people >= 0].tolist()]]

    def board_lists(request: Request, args: dict[str, Any]) -> Any:
        b = world.board(request.path_params["id"])
        if args.get("filter") == "closed":
            return []
        lists = [world.list_json(b, k) for k in world.list_indexes(b)]
        if args.get("cards") not in (None, "", "none"):
            for document, k in zip(lists, world.list_indexes(b)):
                tasks = [i for i in world.board_tasks(b) if world.list_of(int(i)) == k]
                document["cards"] = world.cards(np.array(tasks, dtype=np.int64), {"filter": args["cards"]})
        return lists

    def board_cards(request: Request, args: dict[str, Any]) -> Any:
        b = world.board(request.path_params["id"])
        card_filter = request.path_params.get("filter", "")
        if card_filter and card_filter not in CARD_FILTERS:
            i = world.card(card_filter)
            if int(p.tasks.project[i]) != b:
                raise _not_found()
            return world.card_with_extras(i, args, _fields(args))
        return world.cards(world.board_tasks(b), args, card_filter)

    def board_fields(request: Request, args: dict[str, Any]) -> Any:
        b = world.board(request.path_params["id"])
        return [world.field_json(world.state.fields[f]) for f in world.state.board_fields[b]]

    def board_labels(request: Request, args: dict[str, Any]) -> Any:
        b = world.board(request.path_params["id"])
        return [_select(world.label_json(b, k), _fields(args)) for k in range(len(LABELS))]

    def board_members(request: Request, args: dict[str, Any]) -> Any:
        return board_members_of(world.board(request.path_params["id"]))

    def board_actions(request: Request, args: dict[str, Any]) -> Any:
        b = world.board(request.path_params["id"])
        refs = [r for i in world.board_tasks(b, include_deleted=True) for r in world.task_action_refs(int(i))]
        return world.actions_page(refs, args, "all")

    def board_checklists(request: Request, args: dict[str, Any]) -> Any:
        world.board(request.path_params["id"])
        return []

    def get_list(request: Request, args: dict[str, Any]) -> Any:
        found = world.list_by_id.get(request.path_params["id"])
        if found is None:
            raise _not_found() if HEX24.match(request.path_params["id"]) else TrelloError(400, "invalid id")
        return _select(world.list_json(*found), _fields(args))

    def post_list(request: Request, args: dict[str, Any]) -> Any:
        return world.create_list(str(args.get("idBoard") or ""), args)

    def create_board(request: Request, args: dict[str, Any]) -> Any:
        name = str(args.get("name") or "").strip()
        if not name:
            raise TrelloError(400, "invalid value for name")
        return world.board_json(world.add_board(name))

    def post_board_list(request: Request, args: dict[str, Any]) -> Any:
        return world.create_list(request.path_params["id"], args)

    def list_cards(request: Request, args: dict[str, Any]) -> Any:
        found = world.list_by_id.get(request.path_params["id"])
        if found is None:
            raise _not_found()
        b, k = found
        tasks = np.array([i for i in world.board_tasks(b) if world.list_of(int(i)) == k], dtype=np.int64)
        return world.cards(tasks, {"filter": "open", **args})

    def create_card(request: Request, args: dict[str, Any]) -> Any:
        i = world.create_card(args)
        return world.card_json(i)

    def get_card(request: Request, args: dict[str, Any]) -> Any:
        return world.card_with_extras(card_of(request), args, _fields(args))

    def put_card(request: Request, args: dict[str, Any]) -> Any:
        i = card_of(request)
        world.update_card(i, args)
        return world.card_json(i)

    def put_card_field(request: Request, args: dict[str, Any]) -> Any:
        i = card_of(request)
        name = request.path_params["field"]
        if name not in ("name", "desc", "due", "start", "dueComplete", "closed", "idList", "pos", "idMembers"):
            raise _not_found()
        world.update_card(i, {name: args.get("value")})
        return world.card_json(i)

    def delete_card(request: Request, args: dict[str, Any]) -> Any:
        world.delete_card(card_of(request))
        return {"_value": None}

    def card_field_items(request: Request, args: dict[str, Any]) -> Any:
        return world.field_items(card_of(request))

    def put_field_item(request: Request, args: dict[str, Any]) -> Any:
        i = world.card(request.path_params["id"])
        definition = world.custom_field(request.path_params["field_id"])
        if definition.board != int(p.tasks.project[i]):
            raise TrelloError(400, "Invalid custom field item value.")
        return world.set_item(i, definition, args)

    def put_field_items(request: Request, args: dict[str, Any]) -> Any:
        """`PUT /cards/{id}/customFields`: several items at once, all checked before any is set."""
        i = world.card(request.path_params["id"])
        items = args.get("customFieldItems")
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise _invalid("customFieldItems")
        chosen = []
        for item in items:
            definition = world.custom_field(str(item.get("idCustomField") or ""))
            if definition.board != int(p.tasks.project[i]):
                raise TrelloError(400, "Invalid custom field item value.")
            body = {key: item[key] for key in ("value", "idValue") if key in item}
            _item_value(definition, body)  # raises on a value the field cannot take
            chosen.append((definition, body))
        for definition, body in chosen:
            world.set_item(i, definition, body)
        return {}  # the spec documents a 200 without a body

    def card_actions(request: Request, args: dict[str, Any]) -> Any:
        i = card_of(request)
        return world.actions_page(world.task_action_refs(i), args, CARD_ACTIONS_DEFAULT_FILTER)

    def add_comment(request: Request, args: dict[str, Any]) -> Any:
        i = card_of(request)
        text = args.get("text")
        if not text:
            raise _invalid("text")
        return world.action_json(_client_ref(world.add_comment(i, str(text))))

    def get_action(request: Request, args: dict[str, Any]) -> Any:
        return world.action_json(world.find_action(request.path_params["action_id"]))

    def put_action(request: Request, args: dict[str, Any]) -> Any:
        text = args.get("text")
        if not text:
            raise _invalid("text")
        return world.action_json(_client_ref(world.edit_comment(request.path_params["action_id"], str(text))))

    def put_action_text(request: Request, args: dict[str, Any]) -> Any:
        value = args.get("value")
        if not value:
            raise _invalid("value")
        return world.action_json(_client_ref(world.edit_comment(request.path_params["action_id"], str(value))))

    def put_card_comment(request: Request, args: dict[str, Any]) -> Any:
        card_of(request)
        return put_action(request, args)

    def delete_action(request: Request, args: dict[str, Any]) -> Any:
        world.delete_comment(request.path_params["action_id"])
        return {"_value": None}

    def delete_card_comment(request: Request, args: dict[str, Any]) -> Any:
        card_of(request)
        return delete_action(request, args)

    def get_attachments(request: Request, args: dict[str, Any]) -> Any:
        return [_select(a, _fields(args)) for a in world.attachments(card_of(request))]

    def get_attachment(request: Request, args: dict[str, Any]) -> Any:
        for attachment in world.attachments(card_of(request)):
            if attachment["id"] == request.path_params["attachment_id"]:
                return attachment
        raise _not_found()

    def delete_attachment(request: Request, args: dict[str, Any]) -> Any:
        i = card_of(request)
        attachments = world.state.attachments.get(i, [])
        for attachment in attachments:
            if attachment["id"] == request.path_params["attachment_id"]:
                attachments.remove(attachment)
                p.touch(i)
                return {"_value": None}
        raise _not_found()

    def post_attachment(request: Request, args: dict[str, Any]) -> Any:
        return world.add_attachment(card_of(request), args)

    def card_checklists(request: Request, args: dict[str, Any]) -> Any:
        """Checklists and plugin data: the sandbox's cards have none."""
        card_of(request)
        return []

    def post_field(request: Request, args: dict[str, Any]) -> Any:
        return world.field_json(world.create_field(args))

    def get_field(request: Request, args: dict[str, Any]) -> Any:
        return world.field_json(world.custom_field(request.path_params["field_id"]))

    def put_field(request: Request, args: dict[str, Any]) -> Any:
        definition = world.custom_field(request.path_params["field_id"])
        if args.get("name"):
            definition.name = str(args["name"])
        if args.get("pos") not in (None, "", "top", "bottom"):
            definition.pos = _pos(args["pos"])
        if "display/cardFront" in args:
            definition.card_front = _bool(args["display/cardFront"], "display/cardFront")
        return world.field_json(definition)

    def delete_field(request: Request, args: dict[str, Any]) -> Any:
        definition = world.custom_field(request.path_params["field_id"])
        del world.state.fields[definition.id]
        world.state.board_fields[definition.board].remove(definition.id)
        return {"_value": None}

    def field_options(request: Request, args: dict[str, Any]) -> Any:
        return world.custom_field(request.path_params["field_id"]).options

    table: list[tuple[str, Handler, list[str]]] = [
        ("/1/members/{member}", member, ["GET"]),
        ("/1/members/{member}/boards", me_boards, ["GET"]),
        ("/1/boards", create_board, ["POST"]),
        ("/1/boards/{id}", board, ["GET"]),
        ("/1/boards/{id}/lists", board_lists, ["GET"]),
        ("/1/boards/{id}/lists", post_board_list, ["POST"]),
        ("/1/lists", post_list, ["POST"]),
        ("/1/boards/{id}/cards", board_cards, ["GET"]),
        ("/1/boards/{id}/cards/{filter}", board_cards, ["GET"]),
        ("/1/boards/{id}/customFields", board_fields, ["GET"]),
        ("/1/boards/{id}/labels", board_labels, ["GET"]),
        ("/1/boards/{id}/members", board_members, ["GET"]),
        ("/1/boards/{id}/actions", board_actions, ["GET"]),
        ("/1/boards/{id}/checklists", board_checklists, ["GET"]),
        ("/1/lists/{id}", get_list, ["GET"]),
        ("/1/lists/{id}/cards", list_cards, ["GET"]),
        ("/1/cards", create_card, ["POST"]),
        ("/1/cards/{id}", get_card, ["GET"]),
        ("/1/cards/{id}", put_card, ["PUT"]),
        ("/1/cards/{id}", delete_card, ["DELETE"]),
        ("/1/cards/{id}/customFieldItems", card_field_items, ["GET"]),
        ("/1/cards/{id}/customField/{field_id}/item", put_field_item, ["PUT"]),
        ("/1/cards/{id}/customFields", put_field_items, ["PUT"]),
        ("/1/cards/{id}/actions", card_actions, ["GET"]),
        ("/1/cards/{id}/actions/comments", add_comment, ["POST"]),
        ("/1/cards/{id}/actions/{action_id}/comments", put_card_comment, ["PUT"]),
        ("/1/cards/{id}/actions/{action_id}/comments", delete_card_comment, ["DELETE"]),
        ("/1/cards/{id}/attachments", get_attachments, ["GET"]),
        ("/1/cards/{id}/attachments", post_attachment, ["POST"]),
        ("/1/cards/{id}/attachments/{attachment_id}", get_attachment, ["GET"]),
        ("/1/cards/{id}/attachments/{attachment_id}", delete_attachment, ["DELETE"]),
        ("/1/cards/{id}/checklists", card_checklists, ["GET"]),
        ("/1/cards/{id}/pluginData", card_checklists, ["GET"]),
        ("/1/cards/{id}/{field}", put_card_field, ["PUT"]),
        ("/1/actions/{action_id}", get_action, ["GET"]),
        ("/1/actions/{action_id}", put_action, ["PUT"]),
        ("/1/actions/{action_id}", delete_action, ["DELETE"]),
        ("/1/actions/{action_id}/text", put_action_text, ["PUT"]),
        ("/1/customFields", post_field, ["POST"]),
        ("/1/customFields/{field_id}", get_field, ["GET"]),
        ("/1/customFields/{field_id}", put_field, ["PUT"]),
        ("/1/customFields/{field_id}", delete_field, ["DELETE"]),
        ("/1/customFields/{field_id}/options", field_options, ["GET"]),
    ]
    return [Route(path, endpoint(handler), methods=methods) for path, handler, methods in table]


def default_rate_limit() -> RateLimit:
    """Trello's per-token budget: 100 requests per 10 seconds, 429 without Retry-After."""
    return RateLimit(limit=100, window_s=10.0, send_retry_after=False)


def create(portfolio: Portfolio, settings: EmulatorSettings | None = None) -> Emulator:
    """The Trello emulator over `portfolio`, served under `/1`."""
    world = TrelloWorld(portfolio)
    emulator = Emulator(TrelloProfile(), [TrelloPaths(build_routes(world))], settings)
    emulator.world = world  # type: ignore[attr-defined]
    return emulator

