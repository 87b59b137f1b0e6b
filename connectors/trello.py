"""Trello through py-trello: the cards of configured boards (archived ones too), due-date history from actions.

py-trello builds URLs on a fixed base (`https://api.trello.com/1`) and sends every request through the session
it is given; that session carries the shared `RetryingAdapter` (which also points the fixed base at the
configured `base_url`), TLS settings, a timeout and a pacer that keeps the connection under Trello's per-token
budget (100 requests / 10 s, answered with 429s that carry no Retry-After). Raw JSON is read with the SDK's
`fetch_json`, so records stay as Trello sent them; the connector adds only a `_pmsync` key with what a card
lacks (its list's name, assignee's name, custom fields by name, label names, creation and completion times).

A board is pulled whole by walking its actions (newest first, paged with `before`) for due-date history,
completion moves and the newest action id, then listing its cards (`filter=all`, 1000 per page, paged with
`before`). The cursor is `{board id: newest action id}`, written once a board's last page is committed. An
incremental pull asks each board for the actions since its cursor and re-reads only the cards they touched,
each with its own action history nested (`/cards/{id}?actions=...`), so the due-date history a batch carries is
always complete. Deleted cards are found by the census.

Costs: full pull = per board 1 (lists, members, custom fields) + action pages + card pages, plus `members/me`.
Incremental pull = per board 1 actions request, then for boards with changes 1 board request + 1 per touched
card, plus `members/me`.

Overlap: a pull reads up to BOARD_WORKERS boards at once, each on its own worker into a short queue (LOOKAHEAD
batches, so a huge board read ahead of its turn holds only a few pages), and yields their batches board after
board in the configured order. A worker done with its board takes the next one at once (up to BOARDS_QUEUED
boards are handed out ahead of their turn), not when the caller has yielded it. Within a board only what does not
depend on order overlaps: the board and `members/me` are read while its actions are walked; its cards are listed
after the actions, never with them.
Each batch's cursor is composed in yield order (see `pull`), so a board read ahead never lends its position to an
earlier board's batch. Every request still goes through the one session and its pacer, so the token budget (and
a configured `requests_per_second`) holds however many threads ask.

Write-back: pmsync's custom fields are found by name on each board, and a card's board from one id listing per
board (both read once per push). Writes are one `PUT /cards/{id}/customFields` per card (all its pmsync items at
once), one comment posted once and then edited, and on a portfolio board one card per item in its health's list,
plus its field items.

The push echo: each field write adds an `updateCustomFieldItem` action, which an incremental pull watches, so the
pull after a push would re-read every card pmsync wrote. A card whose every new watched action is an
`updateCustomFieldItem` by the token's member on one of pmsync's fields of its board (found by name in the
board's definitions) changed only in what pmsync wrote: it is not re-read. Any other action on it (by anyone),
or a pmsync field changed by another member, and it is read. Comments are not watched, so pmsync's comment edits
make no echo.
"""
from __future__ import annotations

import logging
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import requests
from trello import TrelloClient
from trello.exceptions import ResourceUnavailable, Unauthorized

from connectors.ahead import drain, fill
from connectors.base import Batch, Connector, DueChange, Link, PersonRecord, ProjectRecord, Write, WriteResult
from connectors.http import BudgetPacer, RetryPolicy, mount_retrying
from mappings.mapping import load_mapping
from mappings.urls import URL_PATTERNS
from pmsync.config import TrelloConnection
from pmsync.errors import ConnectionFailed

log = logging.getLogger("pmsync.connectors.trello")

TRELLO_API = "https://api.trello.com/1"
PAGE = 1000  # Trello's largest page of cards or actions
NESTED_ACTIONS = 1000  # the most actions a card read nests
CARD_WORKERS = 4  # threads for single requests (card reads, a board's furniture, members/me); none waits on another
# Boards read at once; their batches are still yielded board after board, in the configured order. Eight were
# tried (2026-11-23): no faster at 10,000 tasks, where the emulator renders the boards' pages one at a time, and
# each board read at once holds its whole action history until its cards are listed.
BOARD_WORKERS = 4
LOOKAHEAD = 2  # batches a board may hold ready before its turn: what reading ahead keeps in memory per board
BOARDS_QUEUED = 2 * BOARD_WORKERS  # boards handed to the workers ahead of their turn (read or waiting to be)
REPULL_AT = 250  # touched cards on one board from which re-listing the whole board is cheaper than reading each
TIMEOUT_S = 60.0
TOKEN_BUDGET = (90, 10.0)  # requests per seconds: under Trello's 100 / 10 s per token, leaving room for others
NO_ACTION = "0" * 24  # a cursor for a board with no actions yet: every action id is after it
# Action ids begin with their creation second, but ids made within one second (or by different servers) are not
# ordered by time: a board is re-asked for this much before its newest action, and the actions already seen in
# that window are remembered in the cursor and skipped.
OVERLAP_S = 120


def action_second(action_id: str) -> int:
    """The creation time of an action (or any Trello object) from its id, in epoch seconds."""
    return int(action_id[:8], 16)


def since_of(position: str) -> tuple[str, set[str]]:
    """What to ask a board for (`since`, an id or a date) and which action ids in that window were seen."""
    newest, _, recent = position.partition(";")
    if newest == NO_ACTION:
        return NO_ACTION, set()
    start = datetime.fromtimestamp(max(0, action_second(newest) - OVERLAP_S), tz=UTC)
    return start.strftime("%Y-%m-%dT%H:%M:%S.000Z"), {newest, *filter(None, recent.split(","))}


def position_after(actions: list[dict[str, Any]], seen: set[str]) -> str:
    """The cursor after reading `actions` (newest first): the newest id and the ids within the overlap window."""
    ids = {a["id"] for a in actions} | seen
    newest = max(ids, key=lambda i: (action_second(i), i))
    window = sorted(i for i in ids if action_second(i) >= action_second(newest) - OVERLAP_S and i != newest)
    return ";".join([newest, ",".join(window)]) if window else newest
# Actions that change what pmsync reads of a card; an incremental pull re-reads the cards they touch.
WATCHED_ACTIONS = (
    "createCard,updateCard,deleteCard,copyCard,moveCardToBoard,moveCardFromBoard,convertToCardFromCheckItem,"
    "addAttachmentToCard,deleteAttachmentFromCard,addMemberToCard,removeMemberFromCard,addLabelToCard,"
    "removeLabelFromCard,updateCustomFieldItem"
)
# The actions a card's own history needs: due changes, list moves, completions.
HISTORY_ACTIONS = "createCard,updateCard,copyCard,moveCardToBoard,convertToCardFromCheckItem"
CARD_ARRIVALS = frozenset({"createCard", "copyCard", "moveCardToBoard", "convertToCardFromCheckItem"})
ACTION_FIELDS = "id,type,date,data"
FEED_FIELDS = ACTION_FIELDS + ",idMemberCreator"  # the board feed also says who made each action
FIELD_ITEM_ACTION = "updateCustomFieldItem"
BOARD_PARAMS = {
    "fields": "id,name,url,shortUrl,shortLink,closed", "lists": "all", "list_fields": "id,name,closed",
    "customFields": "true", "members": "all", "member_fields": "id,fullName,username",
}
CARD_EXTRAS = {"customFieldItems": "true", "attachments": "true"}
TRELLO_CARD_URL = re.compile(r"trello\.com/c/(?P<short>[A-Za-z0-9]{8})")
OTHER_TOOL_URLS = [re.compile(pattern) for tool, _, pattern in URL_PATTERNS if tool != "trello"]


# -- pure helpers ---------------------------------------------------------------------------------------------

def parse_time(text: str) -> datetime:
    """A Trello timestamp (`2017-12-12T17:00:00.000Z`) as an aware UTC datetime."""
    return datetime.fromisoformat(text)


def iso(moment: datetime) -> str:
    """An instant as Trello writes them (millis, `Z`)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def created_at(object_id: str) -> str | None:
    """When a Trello object was created: the Unix seconds in its id's first 8 hex digits."""
    try:
        return iso(datetime.fromtimestamp(int(object_id[:8], 16), tz=UTC))
    except (ValueError, TypeError):
        return None


def local_day(value: Any, zone: ZoneInfo) -> date | None:
    """A due/start value (a date or an instant) as the day it falls on in `zone`; None when empty or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return parse_time(value).astimezone(zone).date()
    except ValueError:
        return None


def card_of(action: dict[str, Any]) -> str | None:
    """The id of the card an action is about."""
    card = (action.get("data") or {}).get("card") or {}
    return card.get("id")


def own_field_action(action: dict[str, Any], me: str, own_fields: frozenset[str]) -> bool:
    """True when an action is pmsync's own write: a custom-field item update by the token's member on one of
    pmsync's fields."""
    field_id = ((action.get("data") or {}).get("customField") or {}).get("id")
    return (action.get("type") == FIELD_ITEM_ACTION and action.get("idMemberCreator") == me
            and field_id in own_fields)


def own_edits_only(actions: Iterable[dict[str, Any]], me: str, own_fields: frozenset[str]) -> set[str]:
    """The cards among `actions` whose every action is pmsync's own custom-field write (`own_field_action`)."""
    own: set[str] = set()
    other: set[str] = set()
    for action in actions:
        card_id = card_of(action)
        if card_id:
            (own if own_field_action(action, me, own_fields) else other).add(card_id)
    return own - other


@dataclass
class CardHistory:
    """What actions say about cards, read oldest first: due changes, when each entered its current list, and when
    its due date was marked complete."""

    zone: ZoneInfo
    due_changes: dict[str, list[DueChange]] = field(default_factory=dict)
    entered_list: dict[str, tuple[str, str]] = field(default_factory=dict)  # card -> (list id, when)
    due_completed: dict[str, str | None] = field(default_factory=dict)

    def read(self, actions: Iterable[dict[str, Any]]) -> None:
        """Take in actions, oldest first."""
        for action in actions:
            card_id = card_of(action)
            if not card_id:
                continue
            data = action.get("data") or {}
            old = data.get("old") or {}
            card = data.get("card") or {}
            when = action.get("date")
            if action.get("type") == "updateCard" and "due" in old:
                self.due_changes.setdefault(card_id, []).append(DueChange(
                    native_id=card_id, changed_at=parse_time(when),
                    old_due=local_day(old.get("due"), self.zone), new_due=local_day(card.get("due"), self.zone),
                ))
            if action.get("type") == "updateCard" and "dueComplete" in old:
                self.due_completed[card_id] = when if card.get("dueComplete") else None
            list_id = (data.get("listAfter") or {}).get("id") if "idList" in old else None
            if action.get("type") in CARD_ARRIVALS:
                list_id = (data.get("list") or {}).get("id")
            if list_id and when:
                self.entered_list[card_id] = (list_id, when)

    def completed_at(self, card: dict[str, Any], done: bool) -> str | None:
        """When a card was completed: the action that put it in its (done) list or marked its due complete, else
        its last activity; None when it is not done."""
        card_id = card.get("id")
        entered = self.entered_list.get(card_id)
        if done and entered and entered[0] == card.get("idList"):
            return entered[1]
        if card.get("dueComplete") is True and self.due_completed.get(card_id):
            return self.due_completed[card_id]
        if done or card.get("dueComplete") is True:
            return card.get("dateLastActivity")
        return None


@dataclass
class BoardFurniture:
    """A board's name, lists, members and custom fields: what its cards refer to by id."""

    board: dict[str, Any]
    lists: dict[str, str]
    members: dict[str, str | None]
    fields: dict[str, dict[str, Any]]

    @classmethod
    def from_json(cls, board: dict[str, Any]) -> BoardFurniture:
        return cls(
            board=board,
            lists={item["id"]: item.get("name") for item in board.get("lists") or ()},
            members={item["id"]: item.get("fullName") for item in board.get("members") or ()},
            fields={item["id"]: item for item in board.get("customFields") or ()},
        )

    def project(self) -> ProjectRecord:
        return ProjectRecord(native_id=self.board["id"], name=self.board.get("name") or self.board["id"],
                             url=self.board.get("url") or self.board.get("shortUrl"))

    def custom_values(self, items: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """A card's custom-field items by field name, typed (Trello stores every value as a string)."""
        values: dict[str, Any] = {}
        for item in items or ():
            definition = self.fields.get(item.get("idCustomField"))
            if definition is None:
                continue
            values[definition.get("name") or definition["id"]] = field_value(definition, item)
        return values


def field_value(definition: dict[str, Any], item: dict[str, Any]) -> Any:
    """One custom-field item's value as its type says: numbers as numbers, checkboxes as booleans, list options
    as their text; a value that does not read as its type is kept as Trello sent it (the mapping quarantines)."""
    if definition.get("type") == "list":
        options = {o.get("id"): (o.get("value") or {}).get("text") for o in definition.get("options") or ()}
        return options.get(item.get("idValue"))
    value = item.get("value") or {}
    if "number" in value:
        try:
            return float(value["number"])
        except (TypeError, ValueError):
            return value["number"]
    if "checked" in value:
        return str(value["checked"]).lower() == "true"
    return value.get("text", value.get("date"))


def enrich(card: dict[str, Any], furniture: BoardFurniture, history: CardHistory, done_lists: set[str]) -> None:
    """Add `_pmsync` to a card in place: what the mapping needs that the card names only by id."""
    members = card.get("idMembers") or []
    list_name = furniture.lists.get(card.get("idList"))
    card["_pmsync"] = {
        "list_name": list_name,
        "assignee_id": members[0] if members else None,
        "assignee": furniture.members.get(members[0]) if members else None,
        "labels": [label.get("name") or label.get("color") for label in card.get("labels") or ()],
        "custom_fields": furniture.custom_values(card.get("customFieldItems") or ()),
        "created_at": created_at(str(card.get("id", ""))),
        "completed_at": history.completed_at(card, list_name in done_lists),
    }


def attachment_links(card: dict[str, Any], resolve: Callable[[str], str | None]) -> list[Link]:
    """The card's predecessors named by URL attachments: a Trello card of a configured board (native, by id,
    through `resolve(shortLink)`), or a task of another tool (by URL, resolved later). Other URLs are documents,
    not dependencies."""
    links: dict[tuple[str | None, str | None], Link] = {}
    successor = card["id"]
    for attachment in card.get("attachments") or ():
        url = attachment.get("url") or ""
        trello = TRELLO_CARD_URL.search(url)
        if trello:
            target = resolve(trello["short"])
            if target == successor:
                continue
            link = (Link(successor_native_id=successor, predecessor_native_id=target) if target
                    else Link(successor_native_id=successor, predecessor_url=url, origin="remote_link"))
        elif any(pattern.search(url) for pattern in OTHER_TOOL_URLS):
            link = Link(successor_native_id=successor, predecessor_url=url, origin="remote_link")
        else:
            continue
        links[(link.predecessor_native_id, link.predecessor_url)] = link
    return list(links.values())


def people(furniture: BoardFurniture, me: dict[str, Any] | None) -> list[PersonRecord]:
    """The board's members. Trello shows an email only to its owner, so only the token's owner carries one (and
    is unified with the same person in other tools); the others are known by member id within the connection."""
    out = []
    for member_id, name in furniture.members.items():
        email = me.get("email") if me and me.get("id") == member_id else None
        out.append(PersonRecord(native_id=member_id, display_name=name, email=email))
    return out


# -- write-back helpers (pure) --------------------------------------------------------------------------------

STATES = ("done_on_time", "done_late", "late", "at_risk", "on_track", "unscheduled")
# pmsync's board custom fields: (name, Trello type, payload key).
PMSYNC_FIELDS = (
    ("pmsync slip days", "number", "slip_days"),
    ("pmsync forecast finish", "date", "forecast_finish"),
    ("pmsync state", "list", "state"),
)
HEALTH_LISTS = {"green": "Green", "amber": "Amber", "red": "Red"}
NO_HEALTH_LIST = "No health yet"
ITEM_MARK = "pmsync portfolio item"
SOURCE_LINE = "Source: "
FORECAST_HOUR = "T12:00:00.000Z"  # a day as an instant at noon UTC reads as that day in every office's zone


def pmsync_board_fields(definitions: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """pmsync's custom fields among a board's definitions, by payload key; matched by name."""
    by_name = {name.lower(): key for name, _, key in PMSYNC_FIELDS}
    found: dict[str, dict[str, Any]] = {}
    for definition in definitions:
        key = by_name.get(str(definition.get("name") or "").lower())
        if key is not None and key not in found:
            found[key] = definition
    return found


def item_body(definition: dict[str, Any], value: Any) -> dict[str, Any]:
    """The JSON body that sets a card's item for this field to `value` (Trello keeps values as strings; a list
    field takes the option's id); an empty value clears the item."""
    if value is None or (isinstance(value, float) and value != value):
        return {"idValue": ""} if definition.get("type") == "list" else {"value": ""}
    kind = definition.get("type")
    if kind == "list":
        options = {(o.get("value") or {}).get("text"): o.get("id") for o in definition.get("options") or ()}
        return {"idValue": options.get(str(value)) or ""}
    if kind == "number":
        number = float(value)
        return {"value": {"number": str(int(number)) if number.is_integer() else repr(number)}}
    if kind == "date":
        return {"value": {"date": str(value)[:10] + FORECAST_HOUR}}
    return {"value": {"text": str(value)}}


def item_identity(payload: dict[str, Any]) -> str:
    """What names a portfolio item's source in its card: the source's link, else its title."""
    return str(payload.get("url") or payload.get("title") or "")


def portfolio_desc(payload: dict[str, Any]) -> str:
    """A portfolio card's description: health, forecast, slip and the link to the source, then pmsync's mark."""
    def shown(key: str) -> str:
        value = payload.get(key)
        return "—" if value is None else str(value)
    return "\n".join([
        f"**Health:** {shown('health')}  ",
        f"**State:** {shown('state')}  ",
        f"**Forecast finish:** {shown('forecast_finish')} (baseline {shown('baseline_due')})  ",
        f"**Slip days:** {shown('slip_days')}",
        "",
        f"{SOURCE_LINE}{item_identity(payload)}",
        "",
        f"_{ITEM_MARK} ({payload.get('kind') or 'item'} in {payload.get('tool') or 'a tool'}): kept up to date "
        "by pmsync; edits here are overwritten._",
    ])


def identity_in_desc(desc: str) -> str | None:
    """The source a card's description names, when pmsync wrote it (it carries pmsync's mark); else None."""
    if ITEM_MARK not in desc:
        return None
    for line in desc.splitlines():
        if line.startswith(SOURCE_LINE):
            return line[len(SOURCE_LINE):].strip() or None
    return None


def health_list_name(health: Any) -> str:
    return HEALTH_LISTS.get(str(health or "").lower(), NO_HEALTH_LIST)


class TrelloSession(requests.Session):
    """The session py-trello sends through: a timeout on every request, and pacing before each."""

    def __init__(self, pacer: BudgetPacer, verify: bool | str = True) -> None:
        super().__init__()
        self.pacer = pacer
        self.verify = verify

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT_S)
        self.pacer.wait()
        return super().request(method, url, *args, **kwargs)


# -- the connector --------------------------------------------------------------------------------------------

class TrelloConnector(Connector):
    """The configured boards of one Trello account."""

    tool = "trello"
    write_targets = ("trello.custom_fields", "trello.comment", "portfolio.item", "portfolio.archive")

    def __init__(
        self,
        name: str,
        key: str,
        token: str,
        boards: list[str],
        *,
        base_url: str = TRELLO_API,
        verify: bool | str = True,
        policy: RetryPolicy | None = None,
        requests_per_second: float | None = None,
        timezone_name: str = "UTC",
        page_size: int = PAGE,
    ) -> None:
        super().__init__(name)
        self.base_url = base_url.rstrip("/")
        self.boards = list(boards)
        self.page_size = page_size
        self.zone = ZoneInfo(timezone_name)
        self.policy = policy or RetryPolicy()
        self.session = TrelloSession(BudgetPacer.for_rate(requests_per_second, TOKEN_BUDGET), verify)
        mount_retrying(self.session, self.policy, self.stats, rewrite=(TRELLO_API, self.base_url), verify=verify)
        self.client = TrelloClient(key, api_secret=token, http_service=self.session)
        status = load_mapping("trello").status_category
        self.done_lists = {name for name, category in status.map.items() if category == "done"}
        self._me: dict[str, Any] | None = None
        # Card ids of the boards the current pull listed whole: the census after it needs no second listing.
        self._listed: dict[str, list[str]] = {}
        self._short_links: dict[str, str | None] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._board_pool: ThreadPoolExecutor | None = None
        # A pull's boards are read on several threads: what they share is asked or counted under these locks.
        self._pools_lock = threading.Lock()
        self._me_lock = threading.Lock()
        self._short_links_lock = threading.Lock()
        self._counting = threading.Lock()
        self._abandon: threading.Event | None = None  # set to stop the running pull's board workers
        # What write-back looked up, once per connector (a push builds its own connector); a push writes from
        # several threads, so lookups (and the lists they create) are made under one lock.
        self._lookups = threading.RLock()
        self._fields_by_board: dict[str, list[dict[str, Any]]] = {}
        self._lists_by_board: dict[str, dict[str, str]] = {}
        self._card_boards: dict[str, str | None] | None = None
        self._portfolio: dict[str, dict[str, str]] = {}

    @classmethod
    def from_config(cls, conn: TrelloConnection, timezone_name: str = "UTC") -> TrelloConnector:
        """The connector for a configured Trello connection (no request is made until it is used); due dates
        are read as days in `timezone_name`, the configuration's zone."""
        limits = conn.rate_limit
        defaults = RetryPolicy()
        policy = RetryPolicy(
            max_attempts=(limits.max_retries + 1) if limits.max_retries is not None else defaults.max_attempts,
            max_delay_s=limits.max_wait_seconds or defaults.max_delay_s,
        )
        return cls(
            conn.name, conn.auth.key.get_secret_value(), conn.auth.token.get_secret_value(), conn.boards,
            base_url=conn.api_url, verify=conn.tls_verify, policy=policy,
            requests_per_second=limits.requests_per_second, timezone_name=timezone_name,
        )

    # -- the Connector interface ------------------------------------------------------------------------------
    def check(self) -> None:
        """Read the token's owner: proves the URL, the key and the token."""
        self.me()

    def pull(self, cursor: dict[str, str] | None) -> Iterator[Batch]:
        """Batches of cards changed since `cursor` (every card of every board when None), board by board in the
        configured order; a board missing from the cursor is pulled whole.

        Boards are read several at once (`in_turn`), each batch carrying only its own board's position; the
        cursor is composed here, in yield order: the boards yielded before, this board's position, and the old
        cursor's entries for the boards after it. So a batch never names an action of a board read ahead whose
        cards are not committed yet (a crash after it would skip them)."""
        start = dict(cursor or {})
        position = dict(start)
        self._listed = {}
        if any(board_id not in start for board_id in self.boards):
            self.pool().submit(self.me)  # needed by the first batch: asked while the first actions are read
        for board_id, batch in self.in_turn(lambda board_id: self._board(board_id, start.get(board_id))):
            position.pop(board_id, None)
            position.update(batch.cursor or {})
            batch.cursor = dict(position)
            yield batch

    def in_turn(self, read: Callable[[str], Iterator[Batch]]) -> Iterator[tuple[str, Batch]]:
        """`read(board)`'s batches, board after board in the configured order, while up to BOARD_WORKERS boards
        are read at once, each at most LOOKAHEAD batches ahead of its turn. A board's failure is raised in its
        turn; abandoning the iteration stops the workers after their current request."""
        if self._abandon is not None:
            self._abandon.set()  # a pull left unfinished (and not yet collected) must not keep board workers
        stop = self._abandon = threading.Event()
        upcoming = iter(self.boards)
        running: deque[tuple[str, queue.Queue, Future]] = deque()

        def start_next() -> None:
            board_id = next(upcoming, None)
            if board_id is not None:
                ready: queue.Queue = queue.Queue(LOOKAHEAD)
                running.append((board_id, ready, self.board_pool().submit(fill, read(board_id), ready, stop)))

        try:
            # Twice as many boards as workers are queued, so that a worker whose board is read (its last batches
            # waiting in their queue for their turn) starts the next board at once, not when the caller gets there.
            for _ in range(BOARDS_QUEUED):
                start_next()
            while running:
                board_id, ready, _ = running.popleft()
                for batch in drain(ready, stop):
                    yield board_id, batch
                start_next()
        finally:
            stop.set()
            for _, _, queued in running:
                queued.cancel()  # boards not started yet are not started

    def _board(self, board_id: str, start: str | None) -> Iterator[Batch]:
        """One board's batches (whole when it has no position yet), each with only this board's position as its
        cursor: `{board id: position}`, or `{}` while a board read whole is not finished."""
        position = {} if start is None else {board_id: start}
        if start is None:
            return self._whole_board(board_id, position)
        return self._board_changes(board_id, position)

    def census(self) -> Iterator[str]:
        """Every card id of the configured boards, archived ones included (1000 ids per request); a board whose
        every card this connector's pull just listed is not listed again."""
        unlisted = [board_id for board_id in self.boards if board_id not in self._listed]
        # The boards not just listed are listed side by side (a board's pages still follow one another).
        listings = {board_id: self.board_pool().submit(self._card_ids, board_id) for board_id in unlisted}
        for board_id in self.boards:
            yield from self._listed[board_id] if board_id in self._listed else listings[board_id].result()

    def _card_ids(self, board_id: str) -> list[str]:
        """Every card id of a board, archived ones included (1000 ids per request)."""
        return [card["id"] for page in self._pages(f"boards/{board_id}/cards/all", {"fields": "id"},
                                                   f"listing board {board_id}") for card in page]

    def has_changes(self, cursor: dict[str, str] | None) -> bool:
        """True when any board has an action after its cursor (one request per board), or is not in it."""
        if not cursor:
            return True
        if any(board_id not in cursor for board_id in self.boards):
            return True

        def changed(board_id: str) -> bool:
            since, seen = since_of(cursor[board_id])
            newest = self._get(f"boards/{board_id}/actions", {
                "filter": WATCHED_ACTIONS, "since": since, "limit": len(seen) + 1, "fields": "id",
                "memberCreator": "false"}, f"probing board {board_id} for changes")
            return any(action["id"] not in seen for action in newest or [])

        return any(self.board_pool().map(changed, self.boards))  # the boards probed side by side

    def close(self) -> None:
        if self._abandon is not None:
            self._abandon.set()
        for pool in (self._board_pool, self._pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._board_pool = self._pool = None
        self.session.close()

    # -- write-back -------------------------------------------------------------------------------------------
    def setup_writeback(self, containers: list[str]) -> list[str]:
        """Create pmsync's three custom fields on each board in `containers` (reused by name, so a second run
        creates nothing); one line per field created."""
        created = []
        for board_id in containers:
            present = pmsync_board_fields(self._board_fields(board_id, refresh=True))
            for name, kind, key in PMSYNC_FIELDS:
                if key in present:
                    continue
                body: dict[str, Any] = {"idModel": board_id, "modelType": "board", "name": name, "type": kind,
                                        "display_cardFront": True, "pos": "bottom"}
                if kind == "list":
                    body["options"] = [{"value": {"text": state}, "color": "none"} for state in STATES]
                self._send("POST", "customFields", f"creating custom field {name!r} on board {board_id}", body=body)
                created.append(f"trello board {board_id}: created custom field {name!r}")
            self._fields_by_board.pop(board_id, None)
        return created

    def write(self, write: Write) -> WriteResult:
        """Put one pmsync value in Trello (targets: see `write_targets`); nothing else of a card is changed."""
        if write.target == "trello.custom_fields":
            return self._write_card_fields(write)
        if write.target == "trello.comment":
            return self._write_comment(write)
        if write.target == "portfolio.item":
            return self._write_portfolio_card(write)
        if write.target == "portfolio.archive":
            return self._archive_portfolio_card(write)
        return super().write(write)

    def _write_card_fields(self, write: Write) -> WriteResult:
        """One item per pmsync field the card's board has (a board without them is skipped: run --setup)."""
        board_id = self._board_of_card(write.native_id)
        if board_id is None or not pmsync_board_fields(self._board_fields(board_id)):
            return WriteResult(write.remote_ref, skipped="its board has no pmsync custom fields "
                                                         "(run `pmsync push --setup`)")
        self._put_items(write.native_id, board_id, write.payload)
        return WriteResult(write.remote_ref)

    def _put_items(self, card_id: str, board_id: str, payload: dict[str, Any]) -> None:
        """pmsync's field items on a card: one `PUT /cards/{id}/customFields` for all of them (one request per
        card, not per field); a single item goes to its own item endpoint."""
        items = [(definition, item_body(definition, payload[key]))
                 for key, definition in pmsync_board_fields(self._board_fields(board_id)).items() if key in payload]
        if len(items) == 1:
            (definition, body), = items
            self._send("PUT", f"cards/{card_id}/customField/{definition['id']}/item",
                       f"setting {definition.get('name')!r} on card {card_id}", body=body)
        elif items:
            self._send("PUT", f"cards/{card_id}/customFields", f"setting pmsync's fields on card {card_id}",
                       body={"customFieldItems": [{"idCustomField": definition["id"], **body}
                                                  for definition, body in items]})

    def _write_comment(self, write: Write) -> WriteResult:
        """pmsync's one comment on the card: edited in place, or posted (again, if someone deleted it)."""
        text = str(write.payload.get("text") or f"pmsync: schedule state {write.payload.get('state')}")
        if write.remote_ref:
            edited = self._send("PUT", f"actions/{write.remote_ref}", f"editing pmsync's comment on card "
                                f"{write.native_id}", query={"text": text}, missing_ok=True)
            if edited is not None:
                return WriteResult(write.remote_ref)
        posted = self._send("POST", f"cards/{write.native_id}/actions/comments",
                            f"commenting on card {write.native_id}", query={"text": text})
        return WriteResult(posted["id"])

    def _write_portfolio_card(self, write: Write) -> WriteResult:
        """The item's card on the portfolio board, in the list of its health: updated in place (found by
        remote_ref, else by the source link in a card pmsync made), else created; then its pmsync fields."""
        board_id = write.native_id
        fields = {"name": str(write.payload.get("title") or "(untitled)"), "desc": portfolio_desc(write.payload),
                  "idList": self._health_list(board_id, write.payload.get("health")), "closed": False}
        card_id = write.remote_ref or self._portfolio_cards(board_id).get(item_identity(write.payload))
        updated = None
        if card_id is not None:
            updated = self._send("PUT", f"cards/{card_id}", f"updating portfolio card {card_id}", body=fields,
                                 missing_ok=True)
        if updated is None:
            created = self._send("POST", "cards", f"creating a portfolio card on board {board_id}",
                                 body={**fields, "pos": "bottom"})
            card_id = created["id"]
            self._portfolio_cards(board_id)[item_identity(write.payload)] = card_id
        self._put_items(card_id, board_id, write.payload)
        return WriteResult(card_id)

    def _archive_portfolio_card(self, write: Write) -> WriteResult:
        """Archive the item's card (`closed`; the planner names it in the payload's `item`); a card already
        gone is fine."""
        card_id = write.remote_ref or write.payload.get("item")
        if card_id:
            self._send("PUT", f"cards/{card_id}", f"archiving portfolio card {card_id}", body={"closed": True},
                       missing_ok=True)
        return WriteResult(card_id)

    # -- write-back lookups (each read once per connector, i.e. once per push) --------------------------------
    def _board_fields(self, board_id: str, refresh: bool = False) -> list[dict[str, Any]]:
        """A board's custom-field definitions (one request)."""
        with self._lookups:
            if refresh or board_id not in self._fields_by_board:
                self._fields_by_board[board_id] = self._get(f"boards/{board_id}/customFields", {},
                                                            f"reading the custom fields of board {board_id}") or []
            return self._fields_by_board[board_id]

    def _board_of_card(self, card_id: str) -> str | None:
        """The configured board a card is on (card ids of every board listed once), else its own board read
        once; None when the card is gone."""
        with self._lookups:
            return self._board_of_card_locked(card_id)

    def _board_of_card_locked(self, card_id: str) -> str | None:
        if self._card_boards is None:
            self._card_boards = {}
            for board_id in self.boards:
                for page in self._pages(f"boards/{board_id}/cards/all", {"fields": "id"},
                                        f"listing board {board_id}"):
                    self._card_boards.update((card["id"], board_id) for card in page)
        if card_id not in self._card_boards:
            card = self._get(f"cards/{card_id}", {"fields": "id,idBoard"}, f"reading card {card_id}",
                             missing_ok=True)
            self._card_boards[card_id] = card.get("idBoard") if card else None
        return self._card_boards[card_id]

    def _health_list(self, board_id: str, health: Any) -> str:
        """The id of the board's open list for a health (Green, Amber, Red), created when missing."""
        with self._lookups:
            return self._health_list_locked(board_id, health)

    def _health_list_locked(self, board_id: str, health: Any) -> str:
        lists = self._lists_by_board.get(board_id)
        if lists is None:
            found = self._get(f"boards/{board_id}/lists", {"filter": "open", "fields": "id,name"},
                              f"reading the lists of board {board_id}") or []
            lists = self._lists_by_board[board_id] = {item["name"]: item["id"] for item in found}
        name = health_list_name(health)
        if name not in lists:
            made = self._send("POST", "lists", f"creating list {name!r} on board {board_id}",
                              body={"name": name, "idBoard": board_id, "pos": "bottom"})
            lists[name] = made["id"]
        return lists[name]

    def _portfolio_cards(self, board_id: str) -> dict[str, str]:
        """The cards pmsync made on a portfolio board (archived ones too), by the source they show (read once)."""
        with self._lookups:
            return self._portfolio_cards_locked(board_id)

    def _portfolio_cards_locked(self, board_id: str) -> dict[str, str]:
        if board_id not in self._portfolio:
            mine: dict[str, str] = {}
            for page in self._pages(f"boards/{board_id}/cards/all", {"fields": "id,desc"},
                                    f"listing the cards of board {board_id}"):
                for card in page:
                    identity = identity_in_desc(card.get("desc") or "")
                    if identity:
                        mine.setdefault(identity, card["id"])
            self._portfolio[board_id] = mine
        return self._portfolio[board_id]

    def _send(self, method: str, path: str, doing: str, *, query: dict[str, Any] | None = None,
              body: dict[str, Any] | None = None, missing_ok: bool = False) -> Any:
        """A write through the SDK's session (paced, retried, counted); with `missing_ok`, a 404 answers None."""
        with self._speaking(doing):
            try:
                return self.client.fetch_json(path, http_method=method, query_params=dict(query or {}),
                                              post_args=body)
            except ResourceUnavailable as exc:
                if missing_ok and exc._status == 404 and not isinstance(exc, Unauthorized):
                    return None
                raise

    # -- whole boards -------------------------------------------------------------------------------------------
    def _whole_board(self, board_id: str, position: dict[str, str]) -> Iterator[Batch]:
        """A board's cards page by page; its history is read first, so the cursor it commits names no action
        that the cards listed after it do not show. The board itself is read meanwhile (its cards need it, its
        actions do not). `position` is the board's own (see `_board`)."""
        furnished = self.pool().submit(self.furniture, board_id)
        history = CardHistory(self.zone)
        newest: str | None = None
        pages = list(self._pages(f"boards/{board_id}/actions", {
            "filter": WATCHED_ACTIONS, "fields": ACTION_FIELDS, "memberCreator": "false"},
            f"reading the actions of board {board_id}"))
        if pages and pages[0]:
            newest = pages[0][0]["id"]
        for page in reversed(pages):
            history.read(reversed(page))
        del pages
        furniture = furnished.result()
        first = True
        card_pages = self._pages(f"boards/{board_id}/cards", {"filter": "all", **CARD_EXTRAS},
                                 f"listing the cards of board {board_id}")
        page = next(card_pages, [])
        listed: list[str] = []
        while True:
            listed.extend(card["id"] for card in page)
            following = next(card_pages, None)
            if following is None:
                self._listed[board_id] = listed
            batch = self.card_batch(page, furniture, history)
            if first:
                batch.projects = [furniture.project()]
                batch.people = people(furniture, self.me())
                first = False
            if following is None:
                position[board_id] = newest or NO_ACTION
            batch.cursor = dict(position)
            yield batch
            if following is None:
                return
            page = following

    # -- changes since the cursor ---------------------------------------------------------------------------
    def _board_changes(self, board_id: str, position: dict[str, str]) -> Iterator[Batch]:
        """The cards the board's actions since its cursor touched, re-read one by one with their history, in the
        order of their latest action; each batch's cursor is the latest action of the cards it holds. The board
        (when the echo check did not need it first) and `members/me` are read alongside the first cards.
        `position` is the board's own (see `_board`)."""
        since, seen = since_of(position[board_id])
        window = [action for page in self._pages(f"boards/{board_id}/actions", {
            "filter": WATCHED_ACTIONS, "since": since, "fields": FEED_FIELDS,
            "memberCreator": "false"}, f"reading the new actions of board {board_id}") for action in page]
        actions = [action for action in window if action["id"] not in seen]
        if not actions:
            return
        furniture: BoardFurniture | None = None
        echo: set[str] = set()
        if any(action.get("type") == FIELD_ITEM_ACTION for action in actions):
            furniture = self.furniture(board_id)
            own_fields = frozenset(str(d["id"]) for d in pmsync_board_fields(furniture.fields.values()).values())
            echo = own_edits_only(actions, str(self.me().get("id")), own_fields)
            with self._counting:
                self.echoes_skipped += len(echo)
        latest: dict[str, str] = {}
        gone: set[str] = set()
        for action in reversed(actions):
            card_id = card_of(action)
            if card_id:
                latest[card_id] = action["id"]
                if action.get("type") in ("deleteCard", "moveCardFromBoard"):
                    gone.add(card_id)
                elif action.get("type") in ("createCard", "moveCardToBoard", "copyCard"):
                    gone.discard(card_id)
        touched = sorted((card_id for card_id in latest if card_id not in gone and card_id not in echo),
                         key=latest.__getitem__)
        if len(touched) >= REPULL_AT:
            del position[board_id]
            yield from self._whole_board(board_id, position)
            return
        furnished = self.pool().submit(self.furniture, board_id) if furniture is None else None
        me = self.pool().submit(self.me)
        first = True
        step = max(1, min(self.page_size, 100))
        for start in range(0, max(1, len(touched)), step):
            chunk = touched[start : start + step]
            cards = [card for card in self.pool().map(self.card_with_history, chunk)
                     if card is not None and card.get("idBoard") == board_id]
            furniture = furniture or furnished.result()
            history = CardHistory(self.zone)
            for card in cards:
                history.read(reversed(card.pop("actions", None) or []))
            batch = self.card_batch(cards, furniture, history)
            if first:
                batch.projects = [furniture.project()]
                batch.people = people(furniture, me.result())
                first = False
            last = start + step >= len(touched)
            position[board_id] = position_after(window, seen) if last else latest[chunk[-1]]
            batch.cursor = dict(position)
            yield batch

    def card_with_history(self, card_id: str) -> dict[str, Any] | None:
        """One card with its extras and its own history nested under `actions`; None when it is gone."""
        params = {**CARD_EXTRAS, "actions": HISTORY_ACTIONS, "actions_limit": NESTED_ACTIONS,
                  "action_fields": ACTION_FIELDS, "action_memberCreator": "false"}
        card = self._get(f"cards/{card_id}", params, f"reading card {card_id}", missing_ok=True)
        if card is None:
            return None
        nested = card.get("actions") or []
        if len(nested) >= NESTED_ACTIONS:  # more history than a card read nests: page the rest
            older = self._pages(f"cards/{card_id}/actions", {"filter": HISTORY_ACTIONS, "fields": ACTION_FIELDS,
                                                              "before": nested[-1]["id"]},
                                f"reading the history of card {card_id}")
            card["actions"] = nested + [action for page in older for action in page]
        return card

    # -- pieces -----------------------------------------------------------------------------------------------
    def furniture(self, board_id: str) -> BoardFurniture:
        """The board with its lists, members and custom-field definitions (one request)."""
        return BoardFurniture.from_json(self._get(f"boards/{board_id}", BOARD_PARAMS, f"reading board {board_id}"))

    def me(self) -> dict[str, Any]:
        """The token's owner (asked once per connector, whichever board's thread asks first): the one member whose
        email Trello shows."""
        with self._me_lock:
            if self._me is None:
                self._me = self._get("members/me", {"fields": "id,fullName,username,email"},
                                     "the credentials check")
            return self._me

    def card_batch(self, cards: list[dict[str, Any]], furniture: BoardFurniture, history: CardHistory) -> Batch:
        """A page of cards with their `_pmsync` context, complete due-date history and attachment links."""
        batch = Batch()
        for card in cards:
            enrich(card, furniture, history, self.done_lists)
            card_id = card["id"]
            batch.records.append(card)
            batch.due_changes.extend(history.due_changes.get(card_id, ()))
            batch.links.extend(attachment_links(card, self.resolve_short_link))
            batch.covers_links_of.append(card_id)
        return batch

    def resolve_short_link(self, short_link: str) -> str | None:
        """The id of the card a shortLink names when it is on a configured board, else None (asked once each,
        under a lock: boards read at once may name the same card)."""
        with self._short_links_lock:
            if short_link not in self._short_links:
                card = self._get(f"cards/{short_link}", {"fields": "id,idBoard"}, f"resolving card {short_link}",
                                 missing_ok=True)
                on_board = card is not None and card.get("idBoard") in self.boards
                self._short_links[short_link] = card["id"] if on_board else None
            return self._short_links[short_link]

    def pool(self) -> ThreadPoolExecutor:
        """Threads for single requests: a task here never waits for one queued behind it (only, for members/me,
        on the one already asking), so this pool cannot starve itself."""
        with self._pools_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(CARD_WORKERS, thread_name_prefix=f"trello-{self.name}")
            return self._pool

    def board_pool(self) -> ThreadPoolExecutor:
        """Threads that each read one board (waiting on `pool()`'s requests and on their turn to be yielded), kept
        apart from `pool()` so that a board waiting can never hold up the requests it waits for."""
        with self._pools_lock:
            if self._board_pool is None:
                self._board_pool = ThreadPoolExecutor(BOARD_WORKERS, thread_name_prefix=f"trello-{self.name}-board")
            return self._board_pool

    def _pages(self, path: str, params: dict[str, Any], doing: str) -> Iterator[list[dict[str, Any]]]:
        """A listing newest first, page by page: `limit` per page, the next page `before` the last id seen."""
        before: str | None = None
        while True:
            query = {**params, "limit": self.page_size}
            if before:
                query["before"] = before
            page = self._get(path, query, doing) or []
            yield page
            if len(page) < self.page_size:
                return
            before = page[-1]["id"]

    def _get(self, path: str, params: dict[str, Any], doing: str, missing_ok: bool = False) -> Any:
        """GET a resource as JSON through the SDK; a failure becomes one sentence naming the URL, never a secret.
        With `missing_ok`, a 404 answers None."""
        with self._speaking(doing):
            try:
                return self.client.fetch_json(path, query_params=dict(params))
            except ResourceUnavailable as exc:
                if missing_ok and exc._status == 404 and not isinstance(exc, Unauthorized):
                    return None
                raise

    @contextmanager
    def _speaking(self, doing: str) -> Iterator[None]:
        try:
            yield
        except Unauthorized:
            raise ConnectionFailed(
                f"Trello at {self.base_url} refused the connection's key and token during {doing}; check auth.key "
                f"and auth.token of connection {self.name} (a token that can read the configured boards)."
            ) from None
        except ResourceUnavailable as exc:
            raise self._failure(exc._status, str(exc._msg).split(" at ")[0], doing) from None
        except requests.exceptions.SSLError:
            raise ConnectionFailed(
                f"Trello at {self.base_url} failed TLS verification; set ca_bundle to your CA's PEM file, "
                "or check base_url."
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ConnectionFailed(
                f"Trello at {self.base_url} could not be reached ({type(exc).__name__}); check base_url and the "
                "network."
            ) from None
        except ValueError:
            raise ConnectionFailed(
                f"Trello at {self.base_url} kept answering {doing} with unreadable JSON; try again later."
            ) from None

    def _failure(self, status: int, text: str, doing: str) -> ConnectionFailed:
        detail = text.strip()[:200] or f"HTTP {status}"
        if status in (400, 403, 404):
            return ConnectionFailed(f"Trello at {self.base_url} rejected {doing}: {detail}; check the boards of "
                                    f"connection {self.name} and that the token can read them.")
        return ConnectionFailed(f"Trello at {self.base_url} answered HTTP {status} to {doing} after "
                                f"{self.policy.max_attempts} attempts; try again later.")
