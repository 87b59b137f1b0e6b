"""A deterministic, realistic portfolio of projects and tasks spread over five tools.

The portfolio is the sandbox's single source of truth: the four emulators render their vendors' JSON from it on
the fly and write clients' changes back into it, so nothing is held twice. Tasks live in numpy columns (about 60
bytes a task), which keeps a 1,000,000-task portfolio well inside the machine's memory; titles, native ids and
due-date histories are derived from (seed, task index) when asked for, not stored.

Same (seed, size, as-of date) gives the same portfolio; `fingerprint()` hashes it to prove so.
"""
from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np

SIZES = {"small": 300, "medium": 5_000, "large": 200_000}
MAX_TASKS = 1_000_000

TOOLS = ("jira", "asana", "trello", "planner", "msproject")
JIRA, ASANA, TRELLO, PLANNER, MSPROJECT = range(5)
STATUS_CATEGORIES = ("todo", "in_progress", "done", "cancelled")
TODO, IN_PROGRESS, DONE, CANCELLED = range(4)
KINDS = ("task", "epic", "subtask", "milestone")
TASK, EPIC, SUBTASK, MILESTONE = range(4)

NO_DAY = np.iinfo(np.int32).min
EPOCH = date(1970, 1, 1)

# Share of tasks per tool; MS Project plans are files, so they stay small whatever the size.
TOOL_SHARE = {JIRA: 0.38, ASANA: 0.24, TRELLO: 0.14, PLANNER: 0.14, MSPROJECT: 0.10}
MSPROJECT_MAX = 900
TASKS_PER_PROJECT = {JIRA: 400, ASANA: 300, TRELLO: 200, PLANNER: 250, MSPROJECT: 300}
MAX_PROJECTS = {JIRA: 1000, ASANA: 1000, TRELLO: 1000, PLANNER: 1000, MSPROJECT: 3}

# How a cross-tool dependency is recorded: in the successor's tool, or only in pmsync's configuration.
LINK_NATIVE, LINK_REMOTE, LINK_ATTACHMENT, LINK_CONFIG = range(4)
LINK_MECHANISMS = ("native", "remote_link", "url_attachment", "config")
# Link types as MS Project numbers them: 0=FF, 1=FS, 2=SF, 3=SS.
FF, FS, SF, SS = range(4)

FIRST_NAMES = (
    "Ada", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kavya", "Liam", "Maya",
    "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe",
)
LAST_NAMES = (
    "Abbott", "Baptiste", "Chen", "Dubois", "Eriksen", "Fontaine", "Gupta", "Hansen", "Ivanova", "Jensen", "Kowalski",
    "Lefebvre", "Moreau", "Nakamura", "Okafor", "Petrov", "Quintero", "Rossi", "Silva", "Tremblay", "Ueda", "Varga",
    "Weber", "Xu", "Yilmaz", "Zhang",
)
VERBS = (
    "Migrate", "Design", "Implement", "Review", "Test", "Document", "Deploy", "Refactor", "Audit", "Automate",
    "Integrate", "Validate", "Harden", "Plan", "Upgrade", "Decommission", "Benchmark", "Prototype",
)
OBJECTS = (
    "billing API", "login flow", "data warehouse", "release pipeline", "search index", "mobile onboarding",
    "VPN gateway", "backup policy", "payment provider", "customer portal", "SSO integration", "load balancer",
    "reporting dashboard", "email campaign", "vendor contract", "office network", "HR portal", "CRM export",
    "support macros", "pricing page", "event landing page", "datacenter rack", "firewall rules", "test harness",
)
PROJECT_THEMES = (
    "Platform", "Web", "Mobile", "Payments", "Identity", "Data", "Infra", "Security", "Growth", "Brand", "Events",
    "Support", "Datacenter", "Procurement", "Onboarding", "Compliance", "Analytics", "Partners",
)
JIRA_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# A Jira project key per theme (its first three letters, unique: Jira keys are). "Datacenter" would be "Data"'s DAT.
JIRA_THEME_KEYS = {theme: theme[:3].upper() for theme in PROJECT_THEMES} | {"Datacenter": "DCE"}
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
GRAPH_ID_ALPHABET = BASE62 + "-_"

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@functools.lru_cache(maxsize=1 << 17)
def mix(*parts: int) -> int:
    """A stable 64-bit hash of integers (splitmix64 over the parts): the per-task source of derived values. Kept
    for the most recent arguments: the emulators derive the same ids and titles at every page they render."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h


def mix_array(a: np.ndarray, *parts: int) -> np.ndarray:
    """`mix(p0, p1, ..., x)` for every x of an integer array, vectorized."""
    h = np.full(a.shape, 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for p in (*parts, None):
            v = a.astype(np.uint64) if p is None else np.uint64(int(p) & 0xFFFFFFFFFFFFFFFF)
            h = (h ^ v) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
            h = h * np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(29)
    return h


def day_number(d: date) -> int:
    """Days since 1970-01-01, the unit the portfolio stores dates in."""
    return (d - EPOCH).days


def day_to_date(n: int) -> date | None:
    """The date of a stored day number, or None for the 'no date' marker."""
    return None if n == NO_DAY else EPOCH + timedelta(days=int(n))


def epoch_to_datetime(seconds: float) -> datetime:
    """A stored UTC timestamp as an aware datetime."""
    return datetime.fromtimestamp(float(seconds), tz=UTC)


@dataclass
class Person:
    """Someone who works in several tools under one email and a different display name in each."""

    index: int
    first: str
    last: str
    email: str

    def display_name(self, tool: int) -> str:
        """The name each tool shows: vendors and users spell people differently."""
        if tool == ASANA:
            return f"{self.first} {self.last[0]}."
        if tool in (PLANNER, MSPROJECT):
            return f"{self.last}, {self.first}"
        return f"{self.first} {self.last}"

    def email_in(self, tool: int) -> str:
        """The email as that tool stores it (Asana keeps the capitals people typed)."""
        if tool == ASANA and self.index % 3 == 0:
            local, domain = self.email.split("@")
            return f"{local.title()}@{domain.title()}"
        return self.email


@dataclass
class Project:
    """A Jira project, Asana project, Trello board, Planner plan or MS Project file."""

    index: int
    tool: int
    name: str
    key: str  # Jira project key; a short code elsewhere
    first_task: int
    task_count: int


@dataclass
class DueChange:
    """One change of a task's due date, as the tool's own history records it."""

    at: float  # epoch seconds
    old_day: int  # NO_DAY when the task had no due date before
    new_day: int  # NO_DAY when the due date was removed
    person: int


class Columns:
    """Growable numpy columns: generated tasks fill them, tasks created through the APIs are appended."""

    SPEC = {
        "tool": np.uint8, "project": np.int32, "parent": np.int32, "kind": np.uint8, "assignee": np.int32,
        "status": np.uint8, "created": np.float64, "updated": np.float64, "start": np.int32, "due": np.int32,
        "completed": np.float64, "estimate": np.float32, "points": np.float32, "percent": np.uint8,
        "reschedules": np.uint8, "deleted": np.bool_, "seq": np.int32,
        # When the generated history ends: generated due changes are spread before it, and it does not move when
        # a client later touches the task (so the tools' history records keep their times and ids).
        "history_until": np.float64,
    }

    def __init__(self, n: int) -> None:
        self.size = n
        for name, dtype in self.SPEC.items():
            setattr(self, name, np.zeros(n, dtype=dtype))

    def append(self, **values: object) -> int:
        """Add one task and return its index; columns grow by half when full."""
        index = self.size
        capacity = len(self.tool)
        if index >= capacity:
            new_capacity = max(16, capacity + capacity // 2)
            for name, dtype in self.SPEC.items():
                old = getattr(self, name)
                grown = np.zeros(new_capacity, dtype=dtype)
                grown[:capacity] = old
                setattr(self, name, grown)
        for name in self.SPEC:
            getattr(self, name)[index] = values.get(name, 0)
        self.size += 1
        return index

    def view(self, name: str) -> np.ndarray:
        """The live part of a column."""
        return getattr(self, name)[: self.size]


@dataclass
class Portfolio:
    """The generated truth plus every change clients made through the emulators."""

    seed: int
    as_of: date
    people: list[Person]
    projects: list[Project]
    tasks: Columns
    # Dependencies: predecessor and successor task indexes, link type, lag in days, and how it is recorded.
    link_pred: np.ndarray
    link_succ: np.ndarray
    link_type: np.ndarray
    link_lag: np.ndarray
    link_mechanism: np.ndarray
    title_overrides: dict[int, str] = field(default_factory=dict)
    history_extra: dict[int, list[DueChange]] = field(default_factory=dict)
    tool_ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    clock_anchor: float = 0.0
    # Base URLs the emulators are served at, set by the server: links between tools are rendered with them.
    urls: dict[str, str] = field(default_factory=dict)
    added_by_seq: dict[tuple[int, int], int] = field(default_factory=dict)
    _clock_started: float = field(default_factory=time.monotonic)

    # -- time -----------------------------------------------------------------------------------------------
    def now(self) -> float:
        """The sandbox's clock in epoch seconds: it runs from the as-of date forward, after all generated data."""
        return self.clock_anchor + (time.monotonic() - self._clock_started)

    # -- reading tasks --------------------------------------------------------------------------------------
    def task_indexes(self, tool: int, project: int | None = None, include_deleted: bool = False) -> np.ndarray:
        """Indexes of a tool's tasks (optionally of one project), in creation order."""
        t = self.tasks
        mask = t.view("tool") == tool
        if project is not None:
            mask &= t.view("project") == project
        if not include_deleted:
            mask &= ~t.view("deleted")
        return np.flatnonzero(mask)

    def projects_of(self, tool: int) -> list[Project]:
        """The projects (boards, plans, files) of one tool."""
        return [p for p in self.projects if p.tool == tool]

    def title(self, i: int) -> str:
        """A task's title: generated from its index unless a client renamed it."""
        if i in self.title_overrides:
            return self.title_overrides[i]
        h = mix(self.seed, i, 1)
        kind = int(self.tasks.kind[i])
        obj = OBJECTS[(h >> 8) % len(OBJECTS)]
        if kind == MILESTONE:
            return f"Milestone: {obj} live (M{1 + h % 9})"
        if kind == EPIC:
            return f"{obj[0].upper()}{obj[1:]} programme"
        return f"{VERBS[h % len(VERBS)]} {obj} #{i}"

    def due_changes(self, i: int) -> list[DueChange]:
        """Every change of a task's due date after it was first set, oldest first (generated, then clients')."""
        t = self.tasks
        count = int(t.reschedules[i])
        changes: list[DueChange] = []
        extra = self.history_extra.get(i, ())
        # The generated history ends where clients' changes begin, not at today's due date.
        generated_due = extra[0].old_day if extra else int(t.due[i])
        if count and generated_due != NO_DAY:
            shifts = [due_shift(self.seed, i, k) for k in range(count)]
            day = generated_due - sum(shifts)
            created, updated = float(t.created[i]), float(t.history_until[i])
            for k, shift in enumerate(shifts):
                at = created + (updated - created) * (k + 1) / (count + 1)
                changes.append(DueChange(at=at, old_day=day, new_day=day + shift, person=int(t.assignee[i])))
                day += shift
        changes.extend(extra)
        return changes

    def original_due(self, i: int) -> int:
        """The first due date the task ever had (NO_DAY if never), as its tool's history shows."""
        changes = self.due_changes(i)
        return changes[0].old_day if changes else int(self.tasks.due[i])

    # -- writing tasks --------------------------------------------------------------------------------------
    def set_due(self, i: int, new_day: int, person: int = -1) -> None:
        """Change a due date the way a user would, recording it in the task's history."""
        t = self.tasks
        old = int(t.due[i])
        if old == new_day:
            return
        at = self.now()
        self.history_extra.setdefault(i, []).append(DueChange(at=at, old_day=old, new_day=new_day, person=person))
        t.due[i] = new_day
        t.updated[i] = at

    def touch(self, i: int) -> None:
        """Mark a task as modified now (any field a client changed)."""
        self.tasks.updated[i] = self.now()

    def set_status(self, i: int, status: int, percent: int | None = None) -> None:
        """Change a task's status category, keeping completion time and percent consistent."""
        t = self.tasks
        t.status[i] = status
        if status == DONE:
            t.completed[i] = self.now()
            t.percent[i] = 100
        else:
            t.completed[i] = 0
            t.percent[i] = percent if percent is not None else (0 if status == TODO else max(10, int(t.percent[i]) % 100))
        self.touch(i)

    def delete(self, i: int) -> None:
        """Delete a task (and nothing else): emulators stop listing it."""
        self.tasks.deleted[i] = True
        self.touch(i)

    def add_project(self, tool: int, name: str) -> int:
        """Create an empty project (a board, plan or project a client made through an API); returns its index."""
        index = len(self.projects)
        self.projects.append(Project(index=index, tool=tool, name=name, key=f"{TOOLS[tool][:2].upper()}{index + 1}",
                                     first_task=self.tasks_generated, task_count=0))
        return index

    def add_task(self, tool: int, project: int, title: str, **values: object) -> int:
        """Create a task through an emulator; returns its index."""
        now = self.now()
        seq = int(self.tasks.view("seq")[self.tasks.view("project") == project].max(initial=0)) + 1
        defaults = dict(
            tool=tool, project=project, parent=-1, kind=TASK, assignee=-1, status=TODO, created=now, updated=now,
            start=NO_DAY, due=NO_DAY, completed=0, estimate=np.nan, points=np.nan, percent=0, reschedules=0,
            deleted=False, seq=seq, history_until=now,
        )
        defaults.update(values)
        i = self.tasks.append(**defaults)
        self.title_overrides[i] = title
        self.added_by_seq[(project, seq)] = i
        self.projects[project].task_count += 1
        return i

    # -- identities -----------------------------------------------------------------------------------------
    @property
    def tasks_generated(self) -> int:
        """How many tasks the generator made (clients' new tasks come after them)."""
        return max(end for _, end in self.tool_ranges.values())

    def task_by_seq(self, project: int, seq: int) -> int | None:
        """The task numbered `seq` in a project (Jira's PROJ-123 number, Trello's idShort), if it exists."""
        p = self.projects[project]
        if 1 <= seq <= p.task_count and p.first_task + seq - 1 < self.tasks_generated:
            i = p.first_task + seq - 1
            if int(self.tasks.project[i]) == project and int(self.tasks.seq[i]) == seq:
                return i
        return self.added_by_seq.get((project, seq))

    def links_of(self, mechanism: int) -> np.ndarray:
        """Indexes into the link arrays of one recording mechanism."""
        return np.flatnonzero(self.link_mechanism == mechanism)

    def fingerprint(self) -> str:
        """A hash of everything generated: equal for equal (seed, size, as-of date)."""
        h = hashlib.sha256()
        h.update(f"{self.seed}|{self.as_of}|{len(self.people)}|{len(self.projects)}".encode())
        for p in self.projects:
            h.update(f"{p.tool}|{p.name}|{p.key}|{p.first_task}|{p.task_count}".encode())
        for name in Columns.SPEC:
            h.update(np.ascontiguousarray(self.tasks.view(name)).tobytes())
        for arr in (self.link_pred, self.link_succ, self.link_type, self.link_lag, self.link_mechanism):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def due_shift(seed: int, i: int, k: int) -> int:
    """How many days the k-th reschedule of task i moved its due date (mostly later, sometimes earlier)."""
    h = mix(seed, i, 100 + k)
    days = 1 + h % 14
    return -int(days // 2 + 1) if (h >> 20) % 6 == 0 else int(days)


def resolve_size(size: str | int) -> int:
    """A size name or an explicit task count, checked against the supported range."""
    if isinstance(size, int) or str(size).isdigit():
        n = int(size)
    elif size in SIZES:
        n = SIZES[size]
    else:
        raise ValueError(f"size {size!r} is not small, medium, large or a task count")
    if not 20 <= n <= MAX_TASKS:
        raise ValueError(f"a portfolio holds 20 to {MAX_TASKS:,} tasks, not {n:,}")
    return n


def generate(seed: int = 7, size: str | int = "small", as_of: date | None = None) -> Portfolio:
    """Build the portfolio for (seed, size, as-of date); the same arguments always give the same data."""
    n = resolve_size(size)
    as_of = as_of or datetime.now(UTC).date()
    rng = np.random.default_rng([seed, n, day_number(as_of)])
    people = _people(rng, max(8, min(5000, n // 40)))
    counts = _tool_counts(n)
    tasks = Columns(n)
    projects: list[Project] = []
    tool_ranges: dict[int, tuple[int, int]] = {}
    start = 0
    for tool in TOOLS_IN_LAYOUT_ORDER:
        count = counts[tool]
        tool_ranges[tool] = (start, start + count)
        n_projects = max(2 if tool != MSPROJECT else 3, min(MAX_PROJECTS[tool], count // TASKS_PER_PROJECT[tool]))
        if tool == MSPROJECT:
            n_projects = min(3, max(1, count // 10))
        bounds = np.linspace(start, start + count, n_projects + 1).astype(np.int64)
        for k in range(n_projects):
            p = _project(len(projects), tool, k, int(bounds[k]), int(bounds[k + 1] - bounds[k]), seed)
            projects.append(p)
            _fill_project(rng, tasks, p, tool, len(people), day_number(as_of))
        start += count
    link_parts = [_native_links(rng, tasks, p) for p in projects]
    link_parts.append(_cross_tool_links(rng, tasks, tool_ranges, n))
    pred, succ, ltype, lag, mech = (np.concatenate([part[k] for part in link_parts]) for k in range(5))
    as_of_seconds = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC).timestamp()
    wall = time.time()
    anchor = wall if wall > as_of_seconds and wall - as_of_seconds < 86_400 else as_of_seconds + 12 * 3600
    return Portfolio(
        seed=seed, as_of=as_of, people=people, projects=projects, tasks=tasks, link_pred=pred, link_succ=succ,
        link_type=ltype, link_lag=lag, link_mechanism=mech, tool_ranges=tool_ranges, clock_anchor=anchor,
    )


TOOLS_IN_LAYOUT_ORDER = (JIRA, ASANA, TRELLO, PLANNER, MSPROJECT)


def _tool_counts(n: int) -> dict[int, int]:
    msproject = min(MSPROJECT_MAX, max(30, int(n * TOOL_SHARE[MSPROJECT])))
    rest = n - msproject
    share_rest = 1 - TOOL_SHARE[MSPROJECT]
    counts = {t: int(rest * TOOL_SHARE[t] / share_rest) for t in (ASANA, TRELLO, PLANNER)}
    counts[MSPROJECT] = msproject
    counts[JIRA] = n - sum(counts.values())
    return counts


def _people(rng: np.random.Generator, count: int) -> list[Person]:
    people = []
    seen: set[str] = set()
    for index in range(count):
        first = FIRST_NAMES[index % len(FIRST_NAMES)]
        last = LAST_NAMES[(index // len(FIRST_NAMES) + index) % len(LAST_NAMES)]
        local = f"{first}.{last}".lower()
        if local in seen:
            local = f"{local}{index}"
        seen.add(local)
        people.append(Person(index=index, first=first, last=last, email=f"{local}@acme.example"))
    return people


def _project(index: int, tool: int, k: int, first: int, count: int, seed: int) -> Project:
    theme = PROJECT_THEMES[(k + tool * 5) % len(PROJECT_THEMES)]
    suffix = "" if k < len(PROJECT_THEMES) else f" {k // len(PROJECT_THEMES) + 1}"
    if tool == JIRA:
        key = JIRA_THEME_KEYS[theme] + ("" if k < len(PROJECT_THEMES) else _alpha(k // len(PROJECT_THEMES)))
        name = f"{theme}{suffix}"
    else:
        key = f"{TOOLS[tool][:2].upper()}{k + 1}"
        label = {ASANA: "launch", TRELLO: "board", PLANNER: "plan", MSPROJECT: "rollout"}[tool]
        name = f"{theme} {label}{suffix}"
    return Project(index=index, tool=tool, name=name, key=key, first_task=first, task_count=count)


def _alpha(n: int) -> str:
    out = ""
    while n:
        n, r = divmod(n - 1, 26)
        out = JIRA_KEY_ALPHABET[r] + out
    return out


def _fill_project(rng: np.random.Generator, t: Columns, p: Project, tool: int, n_people: int, as_of_day: int) -> None:
    """Generate one project's tasks: hierarchy, people, dates, progress and reschedules, vectorized."""
    s, n = p.first_task, p.task_count
    sl = slice(s, s + n)
    t.tool[sl] = tool
    t.project[sl] = p.index
    t.seq[sl] = np.arange(1, n + 1)
    u = rng.random((8, n))
    kind = np.full(n, TASK, dtype=np.uint8)
    parent = np.full(n, -1, dtype=np.int32)
    if tool in (JIRA, ASANA, MSPROJECT):
        n_epics = max(1, n // 12)
        kind[:n_epics] = EPIC
        has_parent = np.arange(n) >= n_epics
        parent[has_parent] = s + (u[0][has_parent] * n_epics).astype(np.int32)
        if tool != MSPROJECT:
            # Subtasks hang under an earlier story in the same project.
            sub = (u[1] < 0.2) & (np.arange(n) > n_epics + 1)
            j = np.flatnonzero(sub)
            cand = n_epics + (u[2][j] * (j - n_epics)).astype(np.int64)
            ok = (kind[cand] == TASK) & ~sub[cand]
            kind[j[ok]] = SUBTASK
            parent[j[ok]] = s + cand[ok]
    if tool in (JIRA, ASANA, MSPROJECT):
        kind[(kind == TASK) & (u[3] < 0.04)] = MILESTONE
    t.kind[sl] = kind
    t.parent[sl] = parent
    t.assignee[sl] = np.where(u[4] < 0.1, -1, (u[5] * n_people).astype(np.int32))

    now_s = as_of_day * 86_400
    created_day = as_of_day - 10 - (u[6] * 200).astype(np.int64)
    start = created_day + (u[7] * 60).astype(np.int64) - 10
    duration = np.where(kind == MILESTONE, 0, 1 + (rng.random(n) * 25).astype(np.int64))
    due = start + duration
    r = rng.random((6, n))
    has_due = r[0] >= 0.05
    has_start = (r[1] >= 0.2) & has_due
    has_start |= tool == MSPROJECT
    has_due |= tool == MSPROJECT

    status = np.full(n, TODO, dtype=np.uint8)
    started = start <= as_of_day
    status[started] = IN_PROGRESS
    past = due < as_of_day - 3
    done = (past & (r[2] < 0.75)) | (started & (r[2] < 0.2))
    status[done] = DONE
    status[(r[3] < 0.02) & (tool != MSPROJECT)] = CANCELLED
    completed_day = np.minimum(due + (r[4] * 12).astype(np.int64) - 4, as_of_day - 1)
    completed = np.where(status == DONE, completed_day * 86_400.0 + 61_200 + r[5] * 3600, 0.0)

    reschedule_draw = rng.random(n)
    reschedules = np.select([reschedule_draw < 0.6, reschedule_draw < 0.8, reschedule_draw < 0.92], [0, 1, 2], 3)
    reschedules = np.where(has_due & (kind != EPIC), reschedules, 0).astype(np.uint8)
    created = created_day * 86_400.0 + 32_400 + rng.random(n) * 28_800
    latest = np.maximum(created + 3600, np.where(status == DONE, completed, 0))
    updated = np.minimum(latest + rng.random(n) * (now_s - latest).clip(0), now_s - 60)
    updated = np.maximum(updated, created + 60)

    t.status[sl] = status
    t.created[sl] = created
    t.updated[sl] = updated
    t.history_until[sl] = updated
    t.completed[sl] = completed
    t.start[sl] = np.where(has_start, start, NO_DAY)
    t.due[sl] = np.where(has_due, due, NO_DAY)
    t.reschedules[sl] = reschedules
    percent = np.where(status == DONE, 100, np.where(status == IN_PROGRESS, 10 * (1 + (r[5] * 9).astype(np.int64)), 0))
    if tool == PLANNER:
        percent = np.where(status == DONE, 100, np.where(status == IN_PROGRESS, 50, 0))
    t.percent[sl] = percent
    estimate = rng.random(n)
    t.estimate[sl] = np.where(estimate < 0.6, np.round(4 + estimate * 120), np.nan)
    points = np.array([1, 2, 3, 5, 8, 13], dtype=np.float32)[(rng.random(n) * 6).astype(np.int64)]
    t.points[sl] = np.where((tool == JIRA) & (kind != EPIC) & (rng.random(n) < 0.7), points, np.nan)


def _native_links(rng: np.random.Generator, t: Columns, p: Project) -> tuple[np.ndarray, ...]:
    """Dependencies a tool records itself (Jira 'blocks', Asana dependencies, MS Project predecessors)."""
    empty = tuple(np.zeros(0, dtype=d) for d in (np.int32, np.int32, np.uint8, np.int16, np.uint8))
    if p.tool not in (JIRA, ASANA, MSPROJECT) or p.task_count < 4:
        return empty
    s, n = p.first_task, p.task_count
    kind = t.kind[s : s + n]
    j = np.flatnonzero((kind != EPIC) & (rng.random(n) < 0.4))
    j = j[j > 0]
    back = 1 + (rng.random(len(j)) * np.minimum(20, j)).astype(np.int64)
    pred = j - back
    ok = kind[pred] != EPIC
    pred, succ = s + pred[ok], s + j[ok]
    # Milestones wait on a second predecessor too.
    ms = np.flatnonzero(kind == MILESTONE)
    ms = ms[ms > 2]
    ms_pred = s + ms - 1 - (rng.random(len(ms)) * np.minimum(30, ms - 1)).astype(np.int64)
    pred = np.concatenate([pred, ms_pred]).astype(np.int32)
    succ = np.concatenate([succ, s + ms]).astype(np.int32)
    keep = (t.kind[pred] != EPIC) & (pred != succ)
    pred, succ = pred[keep], succ[keep]
    pairs = np.unique(np.stack([pred, succ]), axis=1)
    pred, succ = pairs[0], pairs[1]
    ltype = np.full(len(pred), FS, dtype=np.uint8)
    lag = np.zeros(len(pred), dtype=np.int16)
    if p.tool == MSPROJECT:
        draw = rng.random(len(pred))
        ltype[draw < 0.1] = SS
        ltype[(draw >= 0.1) & (draw < 0.15)] = FF
        lag = np.where(rng.random(len(pred)) < 0.2, 1 + (rng.random(len(pred)) * 3).astype(np.int16), 0).astype(np.int16)
    return pred, succ, ltype, lag, np.full(len(pred), LINK_NATIVE, dtype=np.uint8)


# Cross-tool links respect one order of tools, so they never close a cycle with the in-tool links:
# (Asana | MS Project) -> Jira -> Trello -> Planner. Each is recorded where its successor's tool can hold it.
CROSS_TOOL_ROUTES = (
    (ASANA, JIRA, LINK_REMOTE),
    (MSPROJECT, JIRA, LINK_CONFIG),  # a plan's tasks have no web address a Jira remote link could hold
    (JIRA, TRELLO, LINK_ATTACHMENT),
    (ASANA, TRELLO, LINK_ATTACHMENT),
    (JIRA, PLANNER, LINK_CONFIG),
    (TRELLO, PLANNER, LINK_CONFIG),
)


def _cross_tool_links(
    rng: np.random.Generator, t: Columns, ranges: dict[int, tuple[int, int]], n: int
) -> tuple[np.ndarray, ...]:
    per_route = max(4, n // 300)
    preds, succs, mechs = [], [], []
    for pred_tool, succ_tool, mechanism in CROSS_TOOL_ROUTES:
        pred = _pick_non_epic(rng, t, ranges[pred_tool], per_route)
        succ = _pick_non_epic(rng, t, ranges[succ_tool], per_route)
        m = min(len(pred), len(succ))
        preds.append(pred[:m])
        succs.append(succ[:m])
        mechs.append(np.full(m, mechanism, dtype=np.uint8))
    pred = np.concatenate(preds).astype(np.int32)
    succ = np.concatenate(succs).astype(np.int32)
    mech = np.concatenate(mechs)
    pairs, first = np.unique(np.stack([pred, succ]), axis=1, return_index=True)
    mech = mech[first]
    return (pairs[0], pairs[1], np.full(len(mech), FS, dtype=np.uint8), np.zeros(len(mech), dtype=np.int16), mech)


def _pick_non_epic(rng: np.random.Generator, t: Columns, span: tuple[int, int], k: int) -> np.ndarray:
    first, end = span
    candidates = first + rng.choice(end - first, size=min(end - first, k * 2), replace=False)
    candidates = candidates[t.kind[candidates] != EPIC]
    return np.sort(candidates[:k])
