"""MS Project XML (MSPDI) files for the portfolio's MSPROJECT projects, rendered from the current portfolio state.

Each MSPROJECT project is one plan file in the emulated drive. The file says what Microsoft Project would save:
a Standard calendar (Monday to Friday, 08:00-12:00 and 13:00-17:00), summary tasks (epics) with their children
indented below them, milestones, progress, the main baseline (Number 0) holding each task's ORIGINAL due date (so
the file carries the due-date history the way MS Project does), predecessor links with their type and lag, and
resources with their assignments. Task UID is the task's number in its project (`seq`); ID is its row.

Dates are local times without a zone, as MSPDI stores them: starts at 08:00, finishes at 17:00. Summary rows keep
the portfolio's own dates for the epic rather than a roll-up of their children, so that every tool shows the same
truth for the same task.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from xml.sax.saxutils import escape

import numpy as np

from sandbox.generator import (
    DONE,
    IN_PROGRESS,
    LINK_NATIVE,
    MILESTONE,
    MSPROJECT,
    NO_DAY,
    Portfolio,
    day_number,
    day_to_date,
)

NAMESPACE = "http://schemas.microsoft.com/project"
MINUTES_PER_DAY = 480
# MSPDI LinkLag counts tenths of a minute; LagFormat 7 shows the lag in (8-hour) days.
LAG_UNITS_PER_DAY = MINUTES_PER_DAY * 10
LAG_FORMAT_DAYS = 7
DURATION_FORMAT_DAYS = 7
CALENDAR_UID = 1
START_TIME = "08:00:00"
FINISH_TIME = "17:00:00"

_WORKING_TIMES = (
    "<WorkingTimes><WorkingTime><FromTime>08:00:00</FromTime><ToTime>12:00:00</ToTime></WorkingTime>"
    "<WorkingTime><FromTime>13:00:00</FromTime><ToTime>17:00:00</ToTime></WorkingTime></WorkingTimes>"
)
_STANDARD_CALENDAR = (
    "<Calendars><Calendar><UID>1</UID><Name>Standard</Name><IsBaseCalendar>1</IsBaseCalendar>"
    "<IsBaselineCalendar>0</IsBaselineCalendar><BaseCalendarUID>-1</BaseCalendarUID><WeekDays>"
    + "".join(
        f"<WeekDay><DayType>{day}</DayType><DayWorking>{int(1 < day < 7)}</DayWorking>"
        + (_WORKING_TIMES if 1 < day < 7 else "")
        + "</WeekDay>"
        for day in range(1, 8)
    )
    + "</WeekDays></Calendar></Calendars>"
)


def render_project(portfolio: Portfolio, project_index: int) -> bytes:
    """The MSPDI document (UTF-8 bytes) of one MSPROJECT project as it stands now: a file MPXJ and MS Project read."""
    project = portfolio.projects[project_index]
    if project.tool != MSPROJECT:
        raise ValueError(f"project {project_index} ({project.name}) is not an MS Project file")
    rows, summaries = outline_rows(portfolio, project_index)
    parts: list[str] = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n',
        f'<Project xmlns="{NAMESPACE}">',
        *_header(portfolio, project_index, [i for i, _, _ in rows]),
        _STANDARD_CALENDAR,
        "<Tasks>",
        _project_summary_task(project.name),
    ]
    predecessors = _predecessors_by_successor(portfolio, project_index)
    for row, (i, number, level) in enumerate(rows, start=1):
        parts.append(_task(portfolio, i, row, number, level, i in summaries, predecessors.get(i, ())))
    parts.append("</Tasks>")
    parts.extend(_resources_and_assignments(portfolio, [i for i, _, _ in rows], summaries))
    parts.append("</Project>")
    return "".join(parts).encode("utf-8")


def outline_rows(portfolio: Portfolio, project_index: int) -> tuple[list[tuple[int, str, int]], set[int]]:
    """The project's live tasks in outline order as (task index, outline number, outline level), and the summaries.

    Top-level tasks (epics and tasks without a parent) come in `seq` order, each followed by its children; a
    summary task is one with children.
    """
    t = portfolio.tasks
    indexes = project_task_indexes(portfolio, project_index)
    indexes = indexes[~t.deleted[indexes]]
    indexes = indexes[np.argsort(t.seq[indexes], kind="stable")]
    live = {int(i) for i in indexes}
    children: dict[int, list[int]] = {}
    top: list[int] = []
    for i in map(int, indexes):
        parent = int(t.parent[i])
        if parent >= 0 and parent in live:
            children.setdefault(parent, []).append(i)
        else:
            top.append(i)
    rows: list[tuple[int, str, int]] = []

    def visit(i: int, number: str, level: int) -> None:
        rows.append((i, number, level))
        for k, child in enumerate(children.get(i, ()), start=1):
            visit(child, f"{number}.{k}", level + 1)

    for k, i in enumerate(top, start=1):
        visit(i, str(k), 1)
    return rows, set(children)


def project_task_indexes(portfolio: Portfolio, project_index: int) -> np.ndarray:
    """Every task index of a project, deleted ones included, in creation order, without scanning the portfolio.

    Generated tasks of a project are one contiguous span; tasks clients created later are appended at the end.
    """
    p = portfolio.projects[project_index]
    added = sorted(i for (project, _), i in portfolio.added_by_seq.items() if project == project_index)
    generated = np.arange(p.first_task, p.first_task + p.task_count - len(added), dtype=np.int64)
    return np.concatenate([generated, np.asarray(added, dtype=np.int64)]) if added else generated


def _header(portfolio: Portfolio, project_index: int, indexes: list[int]) -> list[str]:
    t = portfolio.tasks
    project = portfolio.projects[project_index]
    starts = [int(t.start[i]) for i in indexes if t.start[i] != NO_DAY]
    finishes = [int(t.due[i]) for i in indexes if t.due[i] != NO_DAY]
    as_of = portfolio.as_of.isoformat()
    start_day = min(starts, default=day_number(portfolio.as_of))
    finish_day = max(finishes, default=start_day)
    created = min((float(t.created[i]) for i in indexes), default=portfolio.now())
    saved = max((float(t.updated[i]) for i in indexes), default=created)
    return [
        "<SaveVersion>14</SaveVersion>",
        f"<Name>{escape(project.name)}.xml</Name>",
        f"<Title>{escape(project.name)}</Title>",
        "<ScheduleFromStart>1</ScheduleFromStart>",
        f"<StartDate>{_at(start_day, START_TIME)}</StartDate>",
        f"<FinishDate>{_at(finish_day, FINISH_TIME)}</FinishDate>",
        (
            "<FYStartDate>1</FYStartDate><CriticalSlackLimit>0</CriticalSlackLimit><CurrencyDigits>2</CurrencyDigits>"
            "<CurrencySymbol>$</CurrencySymbol><CurrencySymbolPosition>0</CurrencySymbolPosition>"
        ),
        f"<CreationDate>{_timestamp(created)}</CreationDate>",
        f"<LastSaved>{_timestamp(saved)}</LastSaved>",
        f"<CalendarUID>{CALENDAR_UID}</CalendarUID>",
        f"<DefaultStartTime>{START_TIME}</DefaultStartTime>",
        f"<DefaultFinishTime>{FINISH_TIME}</DefaultFinishTime>",
        f"<MinutesPerDay>{MINUTES_PER_DAY}</MinutesPerDay><MinutesPerWeek>{MINUTES_PER_DAY * 5}</MinutesPerWeek>",
        "<DaysPerMonth>20</DaysPerMonth>",
        f"<DurationFormat>{DURATION_FORMAT_DAYS}</DurationFormat><WorkFormat>2</WorkFormat>",
        "<WeekStartDay>1</WeekStartDay>",
        f"<CurrentDate>{as_of}T{START_TIME}</CurrentDate>",
        f"<StatusDate>{as_of}T{FINISH_TIME}</StatusDate>",
    ]


def _project_summary_task(name: str) -> str:
    # MS Project always saves the project summary row as UID 0, outline level 0.
    return (
        f"<Task><UID>0</UID><ID>0</ID><Name>{escape(name)}</Name><Type>1</Type><IsNull>0</IsNull><WBS>0</WBS>"
        "<OutlineNumber>0</OutlineNumber><OutlineLevel>0</OutlineLevel><Milestone>0</Milestone><Summary>1</Summary>"
        "</Task>"
    )


def _task(
    portfolio: Portfolio,
    i: int,
    row: int,
    number: str,
    level: int,
    summary: bool,
    predecessors: tuple[tuple[int, int, int], ...],
) -> str:
    t = portfolio.tasks
    milestone = int(t.kind[i]) == MILESTONE
    start_day, due_day = int(t.start[i]), int(t.due[i])
    if start_day == NO_DAY:
        start_day = due_day
    if due_day == NO_DAY:
        due_day = start_day
    start = _at(due_day, FINISH_TIME) if milestone else _at(start_day, START_TIME)
    finish = _at(due_day, FINISH_TIME)
    days = 0 if milestone else working_days(start_day, due_day)
    status = int(t.status[i])
    out = [
        f"<Task><UID>{int(t.seq[i])}</UID><ID>{row}</ID><Name>{escape(portfolio.title(i))}</Name>",
        f"<Active>1</Active><Manual>0</Manual><Type>{1 if summary else 0}</Type><IsNull>0</IsNull>",
        f"<CreateDate>{_timestamp(float(t.created[i]))}</CreateDate>",
        f"<WBS>{number}</WBS><OutlineNumber>{number}</OutlineNumber><OutlineLevel>{level}</OutlineLevel>",
        "<Priority>500</Priority>",
    ]
    if start_day != NO_DAY:
        out.append(f"<Start>{start}</Start><Finish>{finish}</Finish>")
    out.append(
        f"<Duration>{duration(days)}</Duration><DurationFormat>{DURATION_FORMAT_DAYS}</DurationFormat>"
    )
    out.append(f"<Milestone>{int(milestone)}</Milestone><Summary>{int(summary)}</Summary>")
    out.append(f"<PercentComplete>{int(t.percent[i])}</PercentComplete>")
    if status in (IN_PROGRESS, DONE) and start_day != NO_DAY:
        out.append(f"<ActualStart>{start}</ActualStart>")
    if status == DONE:
        done_day = int(float(t.completed[i]) // 86_400) if t.completed[i] else due_day
        out.append(f"<ActualFinish>{_at(done_day, FINISH_TIME)}</ActualFinish>")
    out.append("<CalendarUID>-1</CalendarUID>")
    for pred_uid, link_type, lag_days in predecessors:
        out.append(
            f"<PredecessorLink><PredecessorUID>{pred_uid}</PredecessorUID><Type>{link_type}</Type>"
            f"<CrossProject>0</CrossProject><LinkLag>{lag_days * LAG_UNITS_PER_DAY}</LinkLag>"
            f"<LagFormat>{LAG_FORMAT_DAYS}</LagFormat></PredecessorLink>"
        )
    out.append(_baseline(portfolio, i, start_day, milestone))
    out.append("</Task>")
    return "".join(out)


def _baseline(portfolio: Portfolio, i: int, start_day: int, milestone: bool) -> str:
    """Baseline 0: what the plan promised when it was first saved, i.e. the task's original due date."""
    original = portfolio.original_due(i)
    if original == NO_DAY or start_day == NO_DAY:
        return ""
    start = _at(original, FINISH_TIME) if milestone else _at(min(start_day, original), START_TIME)
    days = 0 if milestone else working_days(min(start_day, original), original)
    return (
        f"<Baseline><Number>0</Number><Start>{start}</Start><Finish>{_at(original, FINISH_TIME)}</Finish>"
        f"<Duration>{duration(days)}</Duration><DurationFormat>{DURATION_FORMAT_DAYS}</DurationFormat></Baseline>"
    )


def _predecessors_by_successor(
    portfolio: Portfolio, project_index: int
) -> dict[int, tuple[tuple[int, int, int], ...]]:
    """For each successor task in the project: (predecessor UID, MS Project link type, lag days) of its native links."""
    p = portfolio
    if not len(p.link_succ):
        return {}
    mask = (p.link_mechanism == LINK_NATIVE) & (p.tasks.project[p.link_succ] == project_index)
    mask &= p.tasks.project[p.link_pred] == project_index
    found: dict[int, list[tuple[int, int, int]]] = {}
    deleted = p.tasks.deleted
    for k in np.flatnonzero(mask):
        pred, succ = int(p.link_pred[k]), int(p.link_succ[k])
        if deleted[pred] or deleted[succ]:
            continue
        found.setdefault(succ, []).append((int(p.tasks.seq[pred]), int(p.link_type[k]), int(p.link_lag[k])))
    return {succ: tuple(links) for succ, links in found.items()}


def _resources_and_assignments(portfolio: Portfolio, indexes: list[int], summaries: set[int]) -> list[str]:
    t = portfolio.tasks
    assigned = [(i, int(t.assignee[i])) for i in indexes if int(t.assignee[i]) >= 0 and i not in summaries]
    people = sorted({person for _, person in assigned})
    resources = ["<Resources>"]
    for row, person in enumerate(people, start=1):
        who = portfolio.people[person]
        initials = "".join(part[0] for part in (who.first, who.last))
        resources.append(
            f"<Resource><UID>{person + 1}</UID><ID>{row}</ID><Name>{escape(who.display_name(MSPROJECT))}</Name>"
            f"<Type>1</Type><IsNull>0</IsNull><Initials>{initials}</Initials>"
            f"<EmailAddress>{escape(who.email_in(MSPROJECT))}</EmailAddress><MaxUnits>1</MaxUnits></Resource>"
        )
    resources.append("</Resources>")
    assignments = ["<Assignments>"]
    for uid, (i, person) in enumerate(assigned, start=1):
        start_day, due_day = int(t.start[i]), int(t.due[i])
        if start_day == NO_DAY or due_day == NO_DAY:
            continue
        milestone = int(t.kind[i]) == MILESTONE
        work = duration(0 if milestone else working_days(start_day, due_day))
        start = _at(due_day, FINISH_TIME) if milestone else _at(start_day, START_TIME)
        assignments.append(
            f"<Assignment><UID>{uid}</UID><TaskUID>{int(t.seq[i])}</TaskUID><ResourceUID>{person + 1}</ResourceUID>"
            f"<Finish>{_at(due_day, FINISH_TIME)}</Finish><PercentWorkComplete>{int(t.percent[i])}"
            f"</PercentWorkComplete><Start>{start}</Start><Units>1</Units><Work>{work}</Work></Assignment>"
        )
    assignments.append("</Assignments>")
    return resources + assignments


def working_days(start_day: int, finish_day: int) -> int:
    """Working days (Monday to Friday) from start to finish, both included; at least 1 for a task with a span."""
    if start_day == NO_DAY or finish_day == NO_DAY or finish_day < start_day:
        return 1
    begin = np.datetime64(int(start_day), "D")
    end = np.datetime64(int(finish_day) + 1, "D")
    return max(1, int(np.busday_count(begin, end)))


def duration(working_days_: int) -> str:
    """An MSPDI duration (xsd:duration in hours) of that many 8-hour working days."""
    return f"PT{working_days_ * MINUTES_PER_DAY // 60}H0M0S"


def _at(day: int, clock: str) -> str:
    d = day_to_date(day)
    return f"{d.isoformat()}T{clock}" if d else ""


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None, microsecond=0).isoformat()


def item_version(portfolio: Portfolio, project_index: int) -> str:
    """A token that changes whenever any task of the file changes (the drive item's eTag is built from it)."""
    t = portfolio.tasks
    indexes = project_task_indexes(portfolio, project_index)
    digest = hashlib.blake2b(t.updated[indexes].tobytes(), digest_size=8)
    digest.update(t.deleted[indexes].tobytes())
    return digest.hexdigest().upper()
