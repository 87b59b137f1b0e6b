"""What a connector promises the sync engine: pages of raw records with the cursor that covers them.

A connector talks to one tool through its vendor SDK and knows nothing of the warehouse or Dagster. The sync
engine asks it for batches, normalizes each batch's raw task records through the tool's mapping, and commits the
rows together with the batch's cursor in one transaction, so a sync killed mid-way resumes from the last
committed batch with neither duplicates nor gaps. Everything a batch carries besides raw task records is small
and already canonical (projects, due-date history, dependencies, people).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from connectors.http import RequestStats


@dataclass(frozen=True)
class DueChange:
    """One due-date change from the tool's own history (Jira changelog, Asana story, Trello action...)."""

    native_id: str
    changed_at: datetime
    old_due: date | None
    new_due: date | None


@dataclass(frozen=True)
class Link:
    """A dependency as the tool records it. The predecessor is a native id of this connection, or a URL that
    points at a task in another tool (resolved to a task uid by the sync engine; unresolved ones are kept)."""

    successor_native_id: str
    predecessor_native_id: str | None = None
    predecessor_url: str | None = None
    kind: str = "finish_to_start"
    lag_days: float = 0.0
    origin: str = "native"  # native | remote_link


@dataclass(frozen=True)
class ProjectRecord:
    """A Jira project, Asana project, Trello board, Planner plan or MS Project file."""

    native_id: str
    name: str
    url: str | None = None


@dataclass(frozen=True)
class PersonRecord:
    """Someone a tool knows, with the email that unifies them across tools where the tool gives it."""

    native_id: str
    display_name: str | None
    email: str | None


@dataclass
class Batch:
    """One page of work: raw task records and what came with them, plus the cursor to commit with them.

    `covers_links_of` names the tasks whose complete link set this batch carries, so that links removed in the
    tool are removed in the warehouse too. `due_changes` holds the complete due-date history of the batch's tasks.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    projects: list[ProjectRecord] = field(default_factory=list)
    due_changes: list[DueChange] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    covers_links_of: list[str] = field(default_factory=list)
    people: list[PersonRecord] = field(default_factory=list)
    # Whole records the connector could not even turn into raw records (an unreadable plan file):
    # (native id, payload, reason), kept in quarantine like a record that fails to normalize.
    rejected: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    cursor: dict[str, str] | None = None


@dataclass(frozen=True)
class Write:
    """One value pmsync owns, to be put in a tool (see `writeback/targets.py` for every target's payload).

    `native_id` is where it goes: the task, or for project-level and portfolio targets the project or container.
    `previous` is what pmsync last wrote there (from the ledger) and `remote_ref` the id of what pmsync created
    there last time (a comment, a portfolio card), so a write can edit in place instead of adding.
    """

    target: str
    native_id: str
    payload: dict[str, Any]
    previous: dict[str, Any] | None = None
    remote_ref: str | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a write left behind: the id of anything it created, to edit in place next time. `skipped` says why
    nothing could be written yet (e.g. the project lacks pmsync's custom fields): the write is tried again next
    push instead of being recorded as done. `version` is the task's version marker as the tool reported it right
    after this write (a timestamp or an ETag), where the tool reports one: it lets the next incremental pull
    recognise the change as pmsync's own (see `OwnEdits`)."""

    remote_ref: str | None = None
    skipped: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class OwnEdits:
    """What pmsync itself last wrote into one connection's tool, read from the write-back ledger.

    pmsync's write-back moves the `updated`/`modified_at`/ETag of every task it writes, so without this the next
    incremental pull would read back everything the last push touched (the push echo). A connector uses it to drop
    a changed task only when it can prove that every change since its cursor is pmsync's own: a change it cannot
    attribute is always read.
    """

    # native task id -> version markers the tool reported right after pmsync's writes (WriteResult.version)
    versions: dict[str, frozenset[str]] = field(default_factory=dict)
    # tool field ids pmsync writes (Jira custom field ids, Asana custom field gids, Trello custom field ids)
    fields: frozenset[str] = frozenset()


class Connector(ABC):
    """One configured connection to one tool."""

    tool: str
    # The write-back targets this connector can write (names from writeback/targets.py).
    write_targets: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = RequestStats()

    @abstractmethod
    def check(self) -> None:
        """Reach the tool and prove the credentials work; raise pmsync's ConnectionFailed with one sentence if not."""

    @abstractmethod
    def pull(self, cursor: dict[str, str] | None) -> Iterator[Batch]:
        """Batches of tasks changed since `cursor` (everything when None), oldest change first."""

    @abstractmethod
    def census(self) -> Iterable[str]:
        """Every native id the tool still has in the configured scope (the cheapest full listing), for deletions."""

    # What pmsync last wrote here (set by the sync engine before an incremental pull) and how many changed tasks
    # the last pull left out as pmsync's own edits.
    own_edits: OwnEdits = OwnEdits()
    echoes_skipped: int = 0

    def recognise_own_edits(self, edits: OwnEdits) -> None:
        """Take what pmsync last wrote into this tool, so that a pull can leave out its own edits."""
        self.own_edits = edits

    def census_needed(self) -> bool:
        """After a pull: must the census run to see deletions? True unless the pull's own change feed showed that
        nothing can have left the scope (no deletion, no move out); the engine then also checks `census_scope`."""
        return True

    def census_scope(self) -> Any:
        """What a census of this connector covers (its containers and what decides membership), as JSON-able
        data: a census of another scope cannot stand in for this one. None: never skip the census."""
        return None

    def has_changes(self, cursor: dict[str, str] | None) -> bool:
        """A cheap probe: may anything have changed since `cursor`? (True when unsure.)"""
        return True

    def write(self, write: Write) -> WriteResult:
        """Put one owned value in the tool, idempotently; raise on failure (the caller records it and retries
        next push). Never changes a user's own fields."""
        raise NotImplementedError(f"{self.tool} cannot write {write.target}")

    def setup_writeback(self, containers: list[str]) -> list[str]:
        """Create what write-back needs in these projects or boards (custom fields, categories); returns one line
        per thing created. Existing ones are reused, so running it twice creates nothing the second time."""
        return []

    def close(self) -> None:
        """Release sessions and event loops."""
