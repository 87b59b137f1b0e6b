"""Jira Cloud through the `jira` SDK: issues page by page from `/search/jql`, with due-date history and links.

The SDK's client carries authentication, TLS and URL building; its own retry is switched off (it crashes on a
Retry-After given as an HTTP date) and the shared `RetryingAdapter` is mounted on its session instead, so every
attempt is counted in `stats`. Paging stays here, one `nextPageToken` page at a time, so a pull holds at most a
few pages of the instance (SEARCH_AHEAD per search, fetched ahead of the one in use).

Incremental pulls filter on `updated`. JQL compares minutes in the user's own time zone, so the lower bound is
written in that zone, rounded down to the minute; what that minute lists again is dropped on (id, updated) against
the cursor, which names the latest `updated` committed and the ids seen at it. An overlap window
(`overlap_minutes`, none by default, as Airbyte's `lookback_window_minutes`) lists that much more before the
cursor, for changes the search indexed late: the cursor then also keeps the (id, updated) pairs delivered in the
window, and an issue listed there at any other `updated` is delivered.

Costs per pull: `myself` once per connector (the time zone), `project/{key}` per configured project (read
concurrently, alongside the first search page), one search page per 100 issues, one `remotelink` request per
pulled issue (Jira has no bulk read for remote links; adding or removing one touches the issue's `updated`, so
incremental pulls only ask for changed issues), and the `/changelog` pages of issues with more history than the 20
entries a search expands.

A pull of several projects splits them into up to SEARCH_CHAINS searches that page side by side (each
`nextPageToken` chain is sequential by nature) and merges their issues back into the single search's order,
`updated` then id: the cursor after each page means what it means for one search, so a crash resumes alike. An
incremental pull pays a search request per chain even when one page would hold every change.
"""
from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jira
import orjson
import requests
from jira.exceptions import JIRAError

from connectors.ahead import read_ahead_now
from connectors.base import Batch, Connector, DueChange, Link, PersonRecord, ProjectRecord, Write, WriteResult
from connectors.http import Pacer, RetryPolicy, mount_retrying, pacer_for, policy_for
from mappings.mapping import load_mapping
from pmsync.config import JiraConnection
from pmsync.errors import ConnectionFailed
from writeback.targets import AT_RISK_LABEL, LATE_LABEL

log = logging.getLogger("pmsync.connectors.jira")

SEARCH_PAGE = 100  # Jira caps pages with fields at about 100 anyway
CENSUS_PAGE = 5000  # the id-only search's largest page
CHANGELOG_PAGE = 100
REMOTE_LINK_WORKERS = 4
SEARCH_CHAINS = 4  # a pull's searches paging side by side, each over a share of the projects
# Pages a search fetches ahead of its reader. A merge of searches reads one of them for as long as its issues sort
# first (after a push, a whole project's): the others go on paging meanwhile instead of waiting their turn.
SEARCH_AHEAD = 4
TIMEOUT_S = 60.0
BLOCKS = "Blocks"
# Remote-link relationships that make the linked object a predecessor of the issue.
BLOCKING_RELATIONSHIPS = frozenset({"is blocked by", "blocked by", "depends on", "is dependent on"})
# Fields the connector reads itself, whatever the mapping asks for.
CONNECTOR_FIELDS = ("issuelinks", "updated", "assignee")
JIRA_TIME = "%Y-%m-%dT%H:%M:%S.%f%z"
JQL_TIME = "%Y/%m/%d %H:%M"
SCHEDULE_PROPERTY = "pmsync.schedule"
PMSYNC_LABELS = frozenset({LATE_LABEL, AT_RISK_LABEL})


# -- pure helpers ---------------------------------------------------------------------------------------------

def parse_jira_time(text: str) -> datetime:
    """A Jira timestamp (`2021-01-17T12:34:00.000+0000`) as an aware datetime. `fromisoformat` reads Jira's form
    (Python 3.11 takes the offset without a colon) some 40 times faster than `strptime`, which matters: a page of
    issues with their changelogs holds about 2,000 timestamps. `strptime` still reads what it alone accepts."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.strptime(text, JIRA_TIME)


def updated_of(issue: dict[str, Any]) -> datetime | None:
    """An issue's `fields.updated` as a datetime; None when absent or unreadable."""
    value = (issue.get("fields") or {}).get("updated")
    try:
        return parse_jira_time(value) if isinstance(value, str) else None
    except ValueError:
        return None


def parse_day(value: Any) -> date | None:
    """A changelog date value (`2024-01-05` or `2024-01-05 00:00:00.0`) as a date; None when empty."""
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def jql_time(instant: datetime, zone: ZoneInfo) -> str:
    """An instant as JQL reads dates: `yyyy/MM/dd HH:mm` in the user's time zone, rounded down to the minute."""
    return instant.astimezone(zone).strftime(JQL_TIME)


def quoted_keys(projects: Iterable[str]) -> str:
    return ", ".join(f'"{key}"' for key in projects)


def pull_jql(projects: Iterable[str], since: datetime | None, zone: ZoneInfo) -> str:
    """The pull's JQL: the projects' issues updated at or after `since` (all when None), oldest change first."""
    where = f"project in ({quoted_keys(projects)})"
    if since is not None:
        where += f' AND updated >= "{jql_time(since, zone)}"'
    return f"{where} ORDER BY updated ASC, id ASC"


def census_jql(projects: Iterable[str]) -> str:
    """The census's JQL: every issue of the projects, by id."""
    return f"project in ({quoted_keys(projects)}) ORDER BY id ASC"


def requested_fields(custom_fields: dict[str, str] | None = None) -> list[str]:
    """The issue fields a pull asks for: those the Jira mapping reads, the connection's custom fields, and the
    ones the connector reads itself (links, `updated`, the assignee)."""
    names = {path.split(".")[1] for path, _ in load_mapping("jira").paths().values() if path.startswith("fields.")}
    names.update((custom_fields or {}).values())
    names.update(CONNECTOR_FIELDS)
    return sorted(names)


@dataclass
class Watermark:
    """The latest `updated` committed and the ids seen at exactly that instant: a resumable position in the
    `updated ASC, id ASC` order. With an overlap window, also the issues delivered within `window` before it, at
    their latest `updated`: an issue the search lists in the window at any other `updated` was indexed late and
    is delivered (without a window, whatever sorts before the position counts as delivered)."""

    updated: datetime | None = None
    ids: set[str] = field(default_factory=set)
    window: timedelta = timedelta(0)
    recent: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def from_cursor(cls, cursor: dict[str, str] | None, window: timedelta = timedelta(0)) -> Watermark:
        if not cursor or not cursor.get("updated"):
            return cls(window=window)
        ids = {i for i in cursor.get("ids_at_updated", "").split(",") if i}
        recent = {}
        if window:
            for pair in (cursor.get("recent") or "").split(","):
                issue_id, _, at = pair.partition("@")
                if issue_id and at:
                    recent[issue_id] = datetime.fromisoformat(at)
        return cls(datetime.fromisoformat(cursor["updated"]), ids, window, recent)

    def to_cursor(self) -> dict[str, str] | None:
        if self.updated is None:
            return None
        cursor = {"updated": self.updated.isoformat(),
                  "ids_at_updated": ",".join(sorted(self.ids, key=_id_order))}
        if self.window:
            horizon = self.updated - self.window
            self.recent = {k: v for k, v in self.recent.items() if v >= horizon}
            cursor["recent"] = ",".join(f"{k}@{v.isoformat()}" for k, v in sorted(self.recent.items()))
        return cursor

    def covers(self, issue_id: str, updated: datetime) -> bool:
        """True when this (id, updated) was committed already: before the window, in the window at the `updated`
        it was delivered at (or a later one), or at the watermark with its id."""
        if self.updated is None or updated > self.updated:
            return False
        if updated == self.updated:
            return issue_id in self.ids
        if updated < self.updated - self.window:
            return True
        delivered = self.recent.get(issue_id)
        return delivered is not None and delivered >= updated

    def advance(self, issue_id: str, updated: datetime) -> None:
        if self.updated is None or updated > self.updated:
            self.updated, self.ids = updated, {issue_id}
        elif updated == self.updated:
            self.ids.add(issue_id)
        if self.window and updated >= self.updated - self.window:
            self.recent[issue_id] = max(updated, self.recent.get(issue_id, updated))


# How far back a pull keeps the (id, updated) pairs it delivered, to drop one its search lists twice (an issue
# deleted or moved during the pull shifts the next page back onto the last one's tail).
RUN_HORIZON = timedelta(minutes=5)


class RunFilter:
    """Drops what a pull has already delivered: issues the committed cursor covers (what the overlap window lists
    again, see `Watermark`) and (id, updated) pairs seen earlier in the run; tracks the position to commit next."""

    def __init__(self, committed: Watermark) -> None:
        self.committed = committed
        self.position = Watermark(committed.updated, set(committed.ids), committed.window, dict(committed.recent))
        self.seen: set[tuple[str, datetime]] = set()

    def fresh(self, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The page's issues not delivered yet, in page order; the position advances past them."""
        out = []
        for issue in page:
            updated = updated_of(issue)
            if updated is None:  # unreadable: passed on for the engine to quarantine
                out.append(issue)
                continue
            key = (str(issue["id"]), updated)
            if self.committed.covers(*key) or key in self.seen:
                continue
            self.seen.add(key)
            self.position.advance(*key)
            out.append(issue)
        if self.position.updated is not None:
            # Only pairs near the position can come again (an ascending order re-reads only its tail).
            horizon = self.position.updated - max(RUN_HORIZON, self.position.window)
            self.seen = {key for key in self.seen if key[1] >= horizon}
        return out


def _id_order(issue_id: str) -> tuple[int, str]:
    return (int(issue_id), "") if issue_id.isdigit() else (0, issue_id)


EARLIEST = datetime.min.replace(tzinfo=ZoneInfo("UTC"))


def search_order(issue: dict[str, Any]) -> tuple[datetime, tuple[int, str]]:
    """An issue's place in the pull's `ORDER BY updated ASC, id ASC` (unreadable `updated` first: it is passed on
    for the engine to quarantine and moves no cursor)."""
    return updated_of(issue) or EARLIEST, _id_order(str(issue.get("id", "")))


def project_shares(projects: list[str], chains: int) -> list[list[str]]:
    """The projects dealt into at most `chains` groups, one search each."""
    count = max(1, min(chains, len(projects)))
    return [projects[k::count] for k in range(count)]


def merged_pages(streams: list[Iterator[list[dict[str, Any]]]], size: int) -> Iterator[list[dict[str, Any]]]:
    """The issues of several searches, each in `search_order`, as one stream in that order, `size` to a page. An
    issue is handed on only once every search has shown one that sorts after it (or ended), so what comes out is
    exactly what one search over all the projects would have listed."""
    issues = heapq.merge(*(itertools.chain.from_iterable(stream) for stream in streams), key=search_order)
    try:
        while page := list(itertools.islice(issues, size)):
            yield page
    finally:
        for stream in streams:
            close = getattr(stream, "close", None)
            if close is not None:
                close()


def due_changes(issue_id: str, histories: Iterable[dict[str, Any]]) -> list[DueChange]:
    """The due-date changes in changelog histories, in the order given."""
    out = []
    for history in histories:
        for item in history.get("items") or ():
            if "duedate" in (item.get("fieldId"), item.get("field")):
                out.append(DueChange(
                    native_id=issue_id, changed_at=parse_jira_time(history["created"]),
                    old_due=parse_day(item.get("from") or item.get("fromString")),
                    new_due=parse_day(item.get("to") or item.get("toString")),
                ))
    return out


def owned_item(item: dict[str, Any], own_fields: frozenset[str]) -> bool:
    """True when a changelog item changed only what pmsync writes: its custom fields, or its own labels (the
    label sets before and after differ in pmsync's labels alone)."""
    if str(item.get("fieldId") or "") in own_fields:
        return True
    if (item.get("fieldId") or item.get("field")) == "labels":
        before = set(str(item.get("fromString") or "").split())
        after = set(str(item.get("toString") or "").split())
        return bool(before ^ after) and (before ^ after) <= PMSYNC_LABELS
    return False


def own_edit_only(issue: dict[str, Any], since: datetime, own_fields: frozenset[str],
                  own_versions: Iterable[str]) -> bool:
    """True when every change to the issue at or after `since` (the committed cursor) is pmsync's own write-back.

    The search's changelog expansion (newest first, at most 20 entries) must reach back to `since`; every entry
    from `since` on must change only pmsync's labels or custom fields; and the issue's `updated` must be the
    instant of one of those entries or of pmsync's own comment (`own_versions`, the comment's `updated` from the
    write's response). A change Jira records without a changelog entry (a link, a remote link) that comes after
    pmsync's last write moves `updated` past it and is read; anything that cannot be attributed is read.
    """
    updated = updated_of(issue)
    expanded = issue.get("changelog")
    if updated is None or updated < since or not isinstance(expanded, dict):
        return False
    histories = expanded.get("histories") or []
    try:
        stamped = [(parse_jira_time(h["created"]), h) for h in histories]
        bumps = {parse_jira_time(v) for v in own_versions}
    except (KeyError, TypeError, ValueError):
        return False
    complete = expanded.get("total", len(histories)) <= len(histories) or any(at < since for at, _ in stamped)
    if not complete:
        return False
    for at, history in stamped:
        if at < since:
            continue
        items = history.get("items") or ()
        if not items or not all(owned_item(item, own_fields) for item in items):
            return False
        bumps.add(at)
    return updated in bumps


def blocking_links(issue: dict[str, Any]) -> list[Link]:
    """The issue's predecessors through native Blocks links, read from its own side ("is blocked by") only, so
    each link is emitted once although both of its issues show it."""
    links = []
    for entry in (issue.get("fields") or {}).get("issuelinks") or ():
        other = entry.get("inwardIssue")
        if (entry.get("type") or {}).get("name") == BLOCKS and other and other.get("id"):
            links.append(Link(successor_native_id=issue["id"], predecessor_native_id=str(other["id"])))
    return links


def remote_blocking_links(issue_id: str, remote_links: Iterable[dict[str, Any]]) -> list[Link]:
    """Predecessors in other tools: remote links whose relationship says they block the issue."""
    links = []
    for remote in remote_links:
        target = (remote.get("object") or {}).get("url")
        relationship = str(remote.get("relationship") or "").strip().lower()
        if target and relationship in BLOCKING_RELATIONSHIPS:
            links.append(Link(successor_native_id=issue_id, predecessor_url=target, origin="remote_link"))
    return links


def assignees(issues: Iterable[dict[str, Any]]) -> list[PersonRecord]:
    """The distinct assignees of a page of issues."""
    people: dict[str, PersonRecord] = {}
    for issue in issues:
        who = (issue.get("fields") or {}).get("assignee")
        if isinstance(who, dict) and who.get("accountId"):
            people[who["accountId"]] = PersonRecord(who["accountId"], who.get("displayName"), who.get("emailAddress"))
    return list(people.values())


# -- the connector --------------------------------------------------------------------------------------------

class JiraConnector(Connector):
    """One Jira Cloud site and its configured projects."""

    tool = "jira"

    def __init__(
        self,
        name: str,
        url: str,
        email: str,
        token: str,
        projects: list[str],
        *,
        api_version: int = 3,
        verify: bool | str = True,
        policy: RetryPolicy | None = None,
        custom_fields: dict[str, str] | None = None,
        overlap: timedelta = timedelta(0),
        page_size: int = SEARCH_PAGE,
        pacer: Pacer | None = None,
        read_remote_links: bool = True,
    ) -> None:
        super().__init__(name)
        self.url = url.rstrip("/")
        self.email = email
        self.projects = list(projects)
        self.api_version = api_version
        self.fields = requested_fields(custom_fields)
        self.overlap = overlap
        self.page_size = page_size
        self.read_remote_links = read_remote_links
        # No request leaves here: server info is not fetched (the connector needs none of what it says).
        self.client = jira.JIRA(
            server=self.url, basic_auth=(email, token), max_retries=0, timeout=TIMEOUT_S, get_server_info=False,
            options={"verify": verify, "rest_api_version": str(api_version)},
        )
        self.policy = policy or RetryPolicy()
        mount_retrying(self.client._session, self.policy, self.stats, pacer=pacer, verify=verify)
        self._zone: ZoneInfo | None = None
        self._pool: ThreadPoolExecutor | None = None
        # Issue ids of the last full pull that ran to its end: the census after it needs no second listing.
        self._listed: list[str] | None = None

    @classmethod
    def from_config(cls, conn: JiraConnection) -> JiraConnector:
        """The connector for a configured Jira connection (no request is made until it is used)."""
        return cls(
            conn.name, conn.url, conn.auth.email, conn.auth.token.get_secret_value(), conn.projects,
            api_version=conn.api_version, verify=conn.tls_verify, policy=policy_for(conn.rate_limit),
            custom_fields=conn.custom_fields, pacer=pacer_for(conn.rate_limit.requests_per_second),
            read_remote_links=conn.remote_links, overlap=timedelta(minutes=conn.overlap_minutes or 0),
        )

    # -- the Connector interface ------------------------------------------------------------------------------
    def check(self) -> None:
        """Read `myself`: proves the URL and the credentials, and learns the user's time zone for JQL dates."""
        me = self._get("myself", None, "the credentials check")
        self._zone = _zone_of(me)

    def pull(self, cursor: dict[str, str] | None) -> Iterator[Batch]:
        """One batch per search page of issues updated since `cursor` (all when None), oldest change first; the
        first batch also carries the configured projects."""
        committed = Watermark.from_cursor(cursor, self.overlap)
        since = committed.updated - self.overlap if committed.updated is not None else None
        projects = self.pool().submit(self.project_records)  # alongside the first search page
        run = RunFilter(committed)
        self._listed = None
        listed: list[str] | None = [] if cursor is None else None
        first = True
        for page in self._pull_pages(since):
            if listed is not None:
                listed.extend(str(issue["id"]) for issue in page if isinstance(issue, dict) and "id" in issue)
            fresh = run.fresh(page)
            if committed.updated is not None:
                fresh = self.without_own_edits(fresh, committed.updated)
            if fresh or first:
                batch = self.page_batch(fresh)
                batch.cursor = run.position.to_cursor() or cursor
                if first:
                    batch.projects = projects.result()
                first = False
                yield batch
        # A full pull lists every issue of the projects (ordered by `updated`, an issue changed meanwhile moves
        # later and is read there), so its ids are the census; one deleted during the pull is seen next time.
        self._listed = listed

    def without_own_edits(self, issues: list[dict[str, Any]], since: datetime) -> list[dict[str, Any]]:
        """The issues changed by someone other than pmsync since `since`: those whose only changes are pmsync's
        own write-back (the push echo) are left out, so the pull reads neither their remote links nor their
        changelog again."""
        own = self.own_edits
        kept = [issue for issue in issues
                if not own_edit_only(issue, since, own.fields, own.versions.get(str(issue.get("id")), ()))]
        self.echoes_skipped += len(issues) - len(kept)
        return kept

    def census(self) -> Iterator[str]:
        """Every issue id of the configured projects: those a full pull just listed, else from the id-only search
        (up to 5000 per request)."""
        if self._listed is not None:
            yield from self._listed
            return
        for page in self._search_pages(census_jql(self.projects), CENSUS_PAGE, "id"):
            for issue in page:
                yield str(issue["id"])

    def has_changes(self, cursor: dict[str, str] | None) -> bool:
        """One search for the newest issues at or after the cursor's minute: True if any is past the cursor."""
        committed = Watermark.from_cursor(cursor)
        if committed.updated is None:
            return True
        where = (f"project in ({quoted_keys(self.projects)}) "
                 f'AND updated >= "{jql_time(committed.updated, self.zone())}"')
        page = self._get("search/jql", {
            "jql": f"{where} ORDER BY updated DESC, id DESC", "fields": "updated",
            "maxResults": len(committed.ids) + 1,
        }, "the change probe")
        return any(updated_of(issue) is None or not committed.covers(str(issue["id"]), updated_of(issue))
                   for issue in page.get("issues", ()))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.client.close()

    # -- write-back -------------------------------------------------------------------------------------------
    write_targets = ("jira.property", "jira.labels", "jira.comment", "jira.custom_fields")
    writeback_fields: dict[str, str] = {}  # meaning -> custom field id, from `use_writeback`

    def use_writeback(self, settings: Any) -> None:
        """Take the connection's write-back settings: the custom field ids `setup_writeback` checks."""
        fields = getattr(settings, "custom_fields", None)
        self.writeback_fields = dict(fields) if isinstance(fields, dict) else {}

    def write(self, write: Write) -> WriteResult:
        """Put one pmsync-owned value on an issue (see writeback/targets.py); raises ConnectionFailed on failure.
        Only pmsync's property, its own labels, its own comment and the configured custom fields are touched."""
        writers = {"jira.property": self._write_property, "jira.labels": self._write_labels,
                   "jira.comment": self._write_comment, "jira.custom_fields": self._write_custom_fields}
        if write.target not in writers:
            raise NotImplementedError(f"jira cannot write {write.target}")
        return writers[write.target](write)

    def setup_writeback(self, containers: list[str]) -> list[str]:
        """Jira needs nothing created: the issue property, labels and comments need no setup. Configured custom
        fields must exist already (Jira admins create them); `GET /field` checks they do."""
        fields = self.writeback_fields
        if not fields:
            return ["Jira needs nothing created for write-back (issue property, labels and comments need no setup)."]
        known = {f.get("id"): f.get("name") for f in self._get("field", None, "reading the field list") or ()}
        missing = [f"{meaning} ({field_id})" for meaning, field_id in fields.items() if field_id not in known]
        if missing:
            raise ConnectionFailed(
                f"Jira at {self.url} has no custom field for {', '.join(missing)}; create it in Jira's admin "
                "settings, or fix writeback.custom_fields in pmsync.yaml."
            )
        return [f"Jira field {field_id} ({known[field_id]}) takes {meaning}; nothing to create."
                for meaning, field_id in fields.items()]

    def _write_property(self, write: Write) -> WriteResult:
        self._send("PUT", f"issue/{write.native_id}/properties/{SCHEDULE_PROPERTY}", write.payload,
                   f"writing the {SCHEDULE_PROPERTY} property of issue {write.native_id}")
        return WriteResult()

    def _write_labels(self, write: Write) -> WriteResult:
        # Add/remove operations touch only these labels, whatever else the issue carries.
        operations = ([{"add": label} for label in write.payload.get("add", ())]
                      + [{"remove": label} for label in write.payload.get("remove", ())])
        self._send("PUT", f"issue/{write.native_id}", {"update": {"labels": operations}},
                   f"updating the pmsync labels of issue {write.native_id}")
        return WriteResult()

    def _write_custom_fields(self, write: Write) -> WriteResult:
        field_ids = write.payload.get("field_ids") or {}
        fields = {field_id: write.payload.get(meaning) for meaning, field_id in field_ids.items()}
        self._send("PUT", f"issue/{write.native_id}", {"fields": fields},
                   f"writing the pmsync custom fields of issue {write.native_id}")
        return WriteResult()

    def _write_comment(self, write: Write) -> WriteResult:
        """Edit pmsync's comment in place; post it when there is none yet or a user deleted it."""
        body = {"body": self.comment_body(str(write.payload.get("text") or ""))}
        if write.remote_ref:
            edited = self._send("PUT", f"issue/{write.native_id}/comment/{write.remote_ref}", body,
                                f"editing pmsync's comment on issue {write.native_id}", missing_ok=True)
            if edited is not None:
                return WriteResult(remote_ref=write.remote_ref, version=_comment_updated(edited))
        posted = self._send("POST", f"issue/{write.native_id}/comment", body,
                            f"commenting on issue {write.native_id}")
        assert posted is not None
        return WriteResult(remote_ref=str(posted.json()["id"]), version=_comment_updated(posted))

    def comment_body(self, text: str) -> Any:
        """A comment body as this API version takes it: ADF for v3, a plain string for v2."""
        if self.api_version == 2:
            return text
        return {"type": "doc", "version": 1,
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]}

    def _send(self, method: str, path: str, body: Any, doing: str,
              missing_ok: bool = False) -> requests.Response | None:
        """Send one write; None when `missing_ok` and Jira answers 404. Failures become one sentence."""
        with self._speaking(doing):
            try:
                return self.client._session.request(method, self.client._get_url(path), data=orjson.dumps(body))
            except JIRAError as exc:
                if exc.status_code == 404 and missing_ok:
                    return None
                if exc.status_code in (400, 404):
                    raise ConnectionFailed(
                        f"Jira at {self.url} rejected {doing}: {_messages(exc.response) or f'HTTP {exc.status_code}'}"
                        "; check the connection's write-back settings."
                    ) from None
                raise

    # -- pieces -----------------------------------------------------------------------------------------------
    def zone(self) -> ZoneInfo:
        """The Jira user's time zone, in which JQL reads dates (from `myself`, asked once)."""
        if self._zone is None:
            self.check()
        assert self._zone is not None
        return self._zone

    def project_records(self) -> list[ProjectRecord]:
        """The configured projects as Jira names them (one `project/{key}` request each)."""
        def record(key: str) -> ProjectRecord:
            project = self._get(f"project/{key}", None, f"reading project {key}")
            return ProjectRecord(native_id=project["key"], name=project.get("name") or key,
                                 url=f"{self.url}/browse/{project['key']}")

        if len(self.projects) == 1:
            return [record(self.projects[0])]
        with ThreadPoolExecutor(min(REMOTE_LINK_WORKERS, len(self.projects))) as lookups:
            return list(lookups.map(record, self.projects))

    def page_batch(self, issues: list[dict[str, Any]]) -> Batch:
        """A page of issues with their complete due-date history, their links (native and remote) and
        assignees. The `changelog` expansion is consumed here and left out of the raw records."""
        histories = list(self.pool().map(self.issue_history, issues))
        remote = list(self.pool().map(self.remote_links, issues)) if self.read_remote_links else [[]] * len(issues)
        batch = Batch(people=assignees(issues))
        for issue, history, remote_links in zip(issues, histories, remote):
            issue.pop("changelog", None)
            issue_id = str(issue["id"])
            batch.records.append(issue)
            batch.due_changes.extend(history)
            batch.links.extend(blocking_links(issue))
            batch.links.extend(remote_blocking_links(issue_id, remote_links))
            batch.covers_links_of.append(issue_id)
        return batch

    def issue_history(self, issue: dict[str, Any]) -> list[DueChange]:
        """The issue's due-date changes, oldest first: from the search's changelog expansion when it is complete
        (it holds at most the 20 newest entries), else from every page of `/issue/{id}/changelog`."""
        issue_id = str(issue["id"])
        expanded = issue.get("changelog") or {}
        histories = expanded.get("histories") or []
        if expanded and expanded.get("total", len(histories)) <= len(histories):
            return due_changes(issue_id, reversed(histories))
        return due_changes(issue_id, self._changelog(issue_id))

    def remote_links(self, issue: dict[str, Any]) -> list[dict[str, Any]]:
        """The issue's remote links (one request)."""
        issue_id = str(issue["id"])
        return self._get(f"issue/{issue_id}/remotelink", None, f"reading the remote links of issue {issue_id}") or []

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(REMOTE_LINK_WORKERS, thread_name_prefix=f"jira-{self.name}")
        return self._pool

    def _changelog(self, issue_id: str) -> Iterator[dict[str, Any]]:
        start = 0
        while True:
            page = self._get(f"issue/{issue_id}/changelog", {"startAt": start, "maxResults": CHANGELOG_PAGE},
                             f"reading the changelog of issue {issue_id}")
            values = page.get("values") or []
            yield from values
            start += len(values)
            if page.get("isLast", True) or not values or start >= page.get("total", start):
                return

    def _pull_pages(self, since: datetime | None) -> Iterator[list[dict[str, Any]]]:
        """The pull's search pages, of the issues updated at or after `since` (all when None): the projects'
        searches side by side (`SEARCH_CHAINS`, one search for a single project), merged back into one order. It
        matters for an incremental pull too after a mass update (a first push, a bulk edit), when the overlap
        window holds thousands of issues to page through again."""
        fields = ",".join(self.fields)
        zone = self.zone() if since is not None else ZoneInfo("UTC")
        streams = [self._search_pages(pull_jql(share, since, zone), self.page_size, fields, expand="changelog",
                                      start=True)
                   for share in project_shares(self.projects, SEARCH_CHAINS)]
        return merged_pages(streams, self.page_size)

    def _search_pages(
        self, jql: str, max_results: int, fields: str, expand: str | None = None, start: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        """The issues of a JQL search, one page at a time, following `nextPageToken`. The pages are fetched on a
        thread of their own up to SEARCH_AHEAD ahead of the caller, so they travel while the caller works (its
        remote links, the load, another search's pages in a merge). With `start`, the fetching starts now rather
        than when the pages are first read (searches meant to run side by side)."""

        def fetch(token: str | None) -> dict[str, Any]:
            params: dict[str, Any] = {"jql": jql, "fields": fields, "maxResults": max_results}
            if expand:
                params["expand"] = expand
            if token:
                params["nextPageToken"] = token
            return self._get("search/jql", params, "the issue search")

        def chain() -> Iterator[list[dict[str, Any]]]:
            page = fetch(None)
            while True:
                yield page.get("issues") or []
                token = page.get("nextPageToken")
                if not token or page.get("isLast"):
                    return
                page = fetch(token)

        return read_ahead_now(chain(), f"jira-{self.name}-search", SEARCH_AHEAD, start=start)

    def _get(self, path: str, params: dict[str, Any] | None, doing: str) -> Any:
        """GET a REST resource as JSON; every failure becomes one sentence naming the site, never a secret."""
        with self._speaking(doing):
            return self.client._get_json(path, params=params)

    @contextmanager
    def _speaking(self, doing: str) -> Iterator[None]:
        try:
            yield
        except JIRAError as exc:
            # `from None`: the SDK's error text carries the request headers, Authorization included.
            raise self._failure(exc.status_code, exc.response, doing) from None
        except requests.exceptions.SSLError:
            raise ConnectionFailed(
                f"Jira at {self.url} failed TLS verification; set ca_bundle to your CA's PEM file, or check the url."
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ConnectionFailed(
                f"Jira at {self.url} could not be reached ({type(exc).__name__}); check the url and the network."
            ) from None
        except ValueError:
            raise ConnectionFailed(
                f"Jira at {self.url} kept answering {doing} with unreadable JSON; try again later."
            ) from None

    def _failure(self, status: int | None, response: requests.Response | None, doing: str) -> ConnectionFailed:
        if status == 401:
            return ConnectionFailed(
                f"Jira at {self.url} refused the credentials for {self.email}; check auth.token "
                "(an API token of that Atlassian account) and auth.email."
            )
        if status == 403:
            return ConnectionFailed(
                f"Jira at {self.url} denied {self.email} access during {doing}; give that account "
                "Browse permission on the configured projects."
            )
        if status == 404 and doing == "the credentials check":
            return ConnectionFailed(
                f"Jira at {self.url} has no REST API at /rest/api/{self.api_version}; check the connection's url "
                "(the site, like https://acme.atlassian.net)."
            )
        detail = _messages(response)
        if status in (400, 404):
            return ConnectionFailed(f"Jira at {self.url} rejected {doing}: {detail or f'HTTP {status}'}; "
                                    "check the connection's projects.")
        return ConnectionFailed(f"Jira at {self.url} answered HTTP {status} to {doing} after "
                                f"{self.policy.max_attempts} attempts; "
                                "try again later.")


def _comment_updated(response: requests.Response) -> str | None:
    """The `updated` instant of the comment a write answered with: the issue's own `updated` after it."""
    try:
        value = response.json().get("updated")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _messages(response: requests.Response | None) -> str:
    """Jira's own error messages from an ErrorCollection body (they name fields and values, not secrets)."""
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(m) for m in body.get("errorMessages") or ()]
    parts += [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
    return " ".join(parts).rstrip(".")


def _zone_of(me: dict[str, Any]) -> ZoneInfo:
    try:
        return ZoneInfo(me.get("timeZone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("Jira user time zone %r is unknown; reading JQL dates as UTC", me.get("timeZone"))
        return ZoneInfo("UTC")

