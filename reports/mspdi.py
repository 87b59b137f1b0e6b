"""The consolidated schedule as MS Project XML (MSPDI), one file for the whole portfolio (`write_mspdi`).

The file holds one summary task per project with that project's tasks under it, whatever tool they live in, so
that links across tools are ordinary predecessor links. Each task's Finish is pmsync's forecast finish and its
Start keeps the task's own span (due − start) before it; Baseline 0 finishes at the baseline due date. Tasks are
manually scheduled so that MS Project shows pmsync's dates rather than rescheduling them. Extended attributes
carry the pmsync task uid (Text1), the tool (Text2), the schedule state (Text3) and the slip days (Number1).

The text is streamed out row by row with precomputed columns, so 200,000 tasks take seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from reports.data import ReportData

NAMESPACE = "http://schemas.microsoft.com/project"
MINUTES_PER_DAY = 480
LAG_UNITS_PER_DAY = MINUTES_PER_DAY * 10  # LinkLag counts tenths of a minute
DAYS_FORMAT = 7  # durations and lags shown in days
START_TIME = "T08:00:00"
FINISH_TIME = "T17:00:00"
# MSPDI link types: 0 finish-to-finish, 1 finish-to-start, 2 start-to-finish, 3 start-to-start.
LINK_TYPES = {
    "finish_to_finish": 0,
    "ff": 0,
    "finish_to_start": 1,
    "fs": 1,
    "blocks": 1,
    "start_to_finish": 2,
    "sf": 2,
    "start_to_start": 3,
    "ss": 3,
}
EXTENDED_ATTRIBUTES = (
    ("188743731", "Text1", "pmsync task uid"),
    ("188743734", "Text2", "Tool"),
    ("188743737", "Text3", "Schedule state"),
    ("188743767", "Number1", "Slip days"),
)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_STANDARD_CALENDAR = (
    "<Calendars><Calendar><UID>1</UID><Name>Standard</Name><IsBaseCalendar>1</IsBaseCalendar>"
    "<BaseCalendarUID>-1</BaseCalendarUID><WeekDays>"
    + "".join(
        f"<WeekDay><DayType>{day}</DayType><DayWorking>{int(1 < day < 7)}</DayWorking>"
        + (
            "<WorkingTimes><WorkingTime><FromTime>08:00:00</FromTime><ToTime>12:00:00</ToTime></WorkingTime>"
            "<WorkingTime><FromTime>13:00:00</FromTime><ToTime>17:00:00</ToTime></WorkingTime></WorkingTimes>"
            if 1 < day < 7
            else ""
        )
        + "</WeekDay>"
        for day in range(1, 8)
    )
    + "</WeekDays></Calendar></Calendars>"
)


def write_mspdi(data: ReportData, out_path: Path) -> Path:
    """Write the portfolio of `data` as one MSPDI file at `out_path` (UTF-8) and return the path."""
    with out_path.open("w", encoding="utf-8", newline="\n") as out:
        for chunk in mspdi_chunks(data):
            out.write(chunk)
    return out_path


def mspdi_chunks(data: ReportData) -> Iterator[str]:
    """The MSPDI document in pieces, in document order."""
    tasks = _task_columns(data)
    first = tasks["start"].min() if len(tasks) else pd.Timestamp(data.as_of)
    last = tasks["finish"].max() if len(tasks) else pd.Timestamp(data.as_of)
    yield '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    yield f'<Project xmlns="{NAMESPACE}">'
    yield from _header(data.as_of, _or(first, data.as_of), _or(last, data.as_of))
    yield "<Tasks>"
    yield _summary_task(0, 0, "0", 0, f"Portfolio as of {data.as_of.isoformat()}", first, last)
    yield from _project_rows(data, tasks, _predecessor_links(data))
    yield "</Tasks></Project>\n"


def _or(value: object, fallback: date) -> pd.Timestamp:
    return pd.Timestamp(fallback) if value is None or pd.isna(value) else pd.Timestamp(value)


def _header(as_of: date, first: pd.Timestamp, last: pd.Timestamp) -> Iterator[str]:
    yield "<SaveVersion>14</SaveVersion><Name>pmsync portfolio.xml</Name>"
    yield f"<Title>Portfolio schedule as of {as_of.isoformat()}</Title><Author>pmsync</Author>"
    yield "<ScheduleFromStart>1</ScheduleFromStart>"
    yield f"<StartDate>{first.date().isoformat()}{START_TIME}</StartDate>"
    yield f"<FinishDate>{last.date().isoformat()}{FINISH_TIME}</FinishDate>"
    yield "<CalendarUID>1</CalendarUID><DefaultStartTime>08:00:00</DefaultStartTime>"
    yield "<DefaultFinishTime>17:00:00</DefaultFinishTime>"
    yield f"<MinutesPerDay>{MINUTES_PER_DAY}</MinutesPerDay><MinutesPerWeek>{MINUTES_PER_DAY * 5}</MinutesPerWeek>"
    yield f"<DaysPerMonth>20</DaysPerMonth><DurationFormat>{DAYS_FORMAT}</DurationFormat><WeekStartDay>1</WeekStartDay>"
    yield f"<CurrentDate>{as_of.isoformat()}{START_TIME}</CurrentDate>"
    yield f"<StatusDate>{as_of.isoformat()}{FINISH_TIME}</StatusDate>"
    yield (
        "<ExtendedAttributes>"
        + "".join(
            f"<ExtendedAttribute><FieldID>{field_id}</FieldID><FieldName>{name}</FieldName><Alias>{alias}</Alias>"
            "</ExtendedAttribute>"
            for field_id, name, alias in EXTENDED_ATTRIBUTES
        )
        + "</ExtendedAttributes>"
    )
    yield _STANDARD_CALENDAR


def xml_text(values: pd.Series) -> pd.Series:
    """Text escaped for XML element content, with the characters XML 1.0 cannot hold removed."""
    text = values.astype("str").fillna("")
    text = text.str.replace(_NOT_XML, "", regex=True)
    return (
        text.str.replace("&", "&amp;", regex=False)
        .str.replace("<", "&lt;", regex=False)
        .str.replace(">", "&gt;", regex=False)
    )


def _task_columns(data: ReportData) -> pd.DataFrame:
    """Every task with its MSPDI fields precomputed as text, whole columns at a time."""
    tasks = data.tasks
    finish = tasks["forecast_finish"].fillna(tasks["due_date"])
    span = (tasks["due_date"] - tasks["start_date"]).dt.days.clip(lower=0).fillna(0)
    span = span.where(~tasks["is_milestone"], 0)
    start = finish - pd.to_timedelta(span, unit="D")
    baseline_start = tasks["baseline_due"] - pd.to_timedelta(span, unit="D")
    frame = pd.DataFrame(
        {
            "task_uid": tasks["task_uid"],
            "project_uid": tasks["project_uid"],
            "name": xml_text(tasks["title"].fillna(tasks["key"]).fillna(tasks["task_uid"])),
            "start": start,
            "finish": finish,
            "milestone": tasks["is_milestone"].to_numpy(),
            "critical": tasks["on_critical_path"].to_numpy(),
            "done": (tasks["status_category"] == "done").to_numpy(),
            "percent": tasks["percent_complete"].fillna(0).clip(0, 100).round().astype(int),
            "duration": _hours(start, finish, tasks["is_milestone"]),
            "baseline_start": np.where(tasks["is_milestone"], tasks["baseline_due"], baseline_start),
            "baseline_finish": tasks["baseline_due"],
            "baseline_duration": _hours(baseline_start, tasks["baseline_due"], tasks["is_milestone"]),
            "url": xml_text(tasks["url"].where(tasks["url"].notna(), "")),
            "tool": xml_text(tasks["tool"]),
            "uid_text": xml_text(tasks["task_uid"]),
            "state": xml_text(tasks["state"].where(tasks["state"].notna(), "")),
            "slip": tasks["slip_days"],
        }
    )
    frame["baseline_start"] = pd.to_datetime(frame["baseline_start"])
    return frame


def _hours(start: pd.Series, finish: pd.Series, milestone: pd.Series) -> pd.Series:
    """MSPDI durations: the working days (Monday to Friday) from start to finish, 8 hours each, at least one day
    for a task that is not a milestone."""
    known = start.notna() & finish.notna()
    days = np.zeros(len(start), dtype=np.int64)
    if known.any():
        begin = start[known].to_numpy().astype("datetime64[D]")
        end = finish[known].to_numpy().astype("datetime64[D]") + np.timedelta64(1, "D")
        days[known.to_numpy()] = np.busday_count(begin, np.maximum(end, begin))
    days = np.where(milestone.to_numpy(), 0, np.maximum(days, 1))
    return pd.Series([f"PT{d * 8}H0M0S" for d in days], index=start.index)


def _predecessor_links(data: ReportData) -> dict[str, str]:
    """For each successor task uid, its PredecessorLink elements (predecessor UIDs assigned in `_uids`)."""
    links = data.dependencies
    if links.empty:
        return {}
    uids = _uids(data)
    types = links["kind"].str.lower().map(LINK_TYPES).fillna(1).astype(int)
    lags = (links["lag_days"].fillna(0) * LAG_UNITS_PER_DAY).round().astype(int)
    elements: dict[str, list[str]] = {}
    for predecessor, successor, link_type, lag in zip(
        links["predecessor_uid"], links["successor_uid"], types, lags
    ):
        if predecessor == successor:
            continue
        elements.setdefault(successor, []).append(
            f"<PredecessorLink><PredecessorUID>{uids[predecessor]}</PredecessorUID><Type>{link_type}</Type>"
            f"<LinkLag>{lag}</LinkLag><LagFormat>{DAYS_FORMAT}</LagFormat></PredecessorLink>"
        )
    return {successor: "".join(parts) for successor, parts in elements.items()}


def _uids(data: ReportData) -> dict[str, int]:
    """The MSPDI UID of every task: project summaries take 1..P, tasks follow in project then schedule order."""
    order = _ordered_tasks(data)
    first = len(data.projects) + 1
    return dict(zip(order["task_uid"], range(first, first + len(order))))


def _ordered_tasks(data: ReportData) -> pd.DataFrame:
    rank = pd.Series(range(len(data.projects)), index=data.projects["project_uid"])
    position = data.tasks["project_uid"].map(rank)
    return data.tasks.assign(_rank=position.to_numpy()).sort_values("_rank", kind="stable")


def _project_rows(data: ReportData, tasks: pd.DataFrame, predecessors: dict[str, str]) -> Iterator[str]:
    uids = _uids(data)
    ordered = tasks.loc[_ordered_tasks(data).index]
    groups = {uid: group for uid, group in ordered.groupby("project_uid", sort=False)}
    row = len(data.projects)
    for outline, project in enumerate(data.projects.itertuples(index=False), start=1):
        members = groups.get(project.project_uid)
        first = members["start"].min() if members is not None else None
        last = members["finish"].max() if members is not None else None
        name = xml_text(pd.Series([f"{project.name} ({project.tool})"])).iloc[0]
        yield _summary_task(outline, outline, str(outline), 1, name, first, last, escaped=True)
        if members is None:
            continue
        for number, task in enumerate(members.itertuples(index=False), start=1):
            row += 1
            yield _task(
                uids[task.task_uid], row, f"{outline}.{number}", task, predecessors.get(task.task_uid, "")
            )


def _summary_task(
    uid: int,
    row: int,
    outline: str,
    level: int,
    name: str,
    first: object,
    last: object,
    escaped: bool = False,
) -> str:
    text = name if escaped else xml_text(pd.Series([name])).iloc[0]
    dates = ""
    if first is not None and not pd.isna(first) and last is not None and not pd.isna(last):
        dates = f"<Start>{_day(first)}{START_TIME}</Start><Finish>{_day(last)}{FINISH_TIME}</Finish>"
    return (
        f"<Task><UID>{uid}</UID><ID>{row}</ID><Name>{text}</Name><Active>1</Active><Manual>0</Manual><Type>1</Type>"
        f"<IsNull>0</IsNull><WBS>{outline}</WBS><OutlineNumber>{outline}</OutlineNumber>"
        f"<OutlineLevel>{level}</OutlineLevel>{dates}<Milestone>0</Milestone><Summary>1</Summary></Task>"
    )


def _day(value: object) -> str:
    return pd.Timestamp(value).date().isoformat()


def _task(uid: int, row: int, outline: str, task: object, links: str) -> str:
    milestone = bool(task.milestone)
    parts = [
        (
            f"<Task><UID>{uid}</UID><ID>{row}</ID><Name>{task.name}</Name><Manual>1</Manual>"
            f"<OutlineNumber>{outline}</OutlineNumber><OutlineLevel>2</OutlineLevel>"
        )
    ]
    has_dates = not pd.isna(task.finish)
    if has_dates:
        start = f"{_day(task.finish)}{FINISH_TIME}" if milestone else f"{_day(task.start)}{START_TIME}"
        finish = f"{_day(task.finish)}{FINISH_TIME}"
        parts.append(f"<Start>{start}</Start><Finish>{finish}</Finish><Duration>{task.duration}</Duration>")
        parts.append(f"<ManualStart>{start}</ManualStart><ManualFinish>{finish}</ManualFinish>")
        parts.append(f"<ManualDuration>{task.duration}</ManualDuration>")
    parts.append(f"<DurationFormat>{DAYS_FORMAT}</DurationFormat>")
    parts.append(
        f"<Milestone>{int(milestone)}</Milestone><Critical>{int(bool(task.critical))}</Critical>"
        f"<PercentComplete>{100 if task.done else task.percent}</PercentComplete>"
    )
    if task.done and has_dates:
        parts.append(f"<ActualStart>{start}</ActualStart><ActualFinish>{finish}</ActualFinish>")
    if task.url:
        parts.append(f"<HyperlinkAddress>{task.url}</HyperlinkAddress>")
    parts.append(links)
    parts.append(_extended(task))
    if not pd.isna(task.baseline_finish):
        b_start = (
            f"{_day(task.baseline_finish)}{FINISH_TIME}"
            if milestone
            else f"{_day(task.baseline_start)}{START_TIME}"
        )
        parts.append(
            f"<Baseline><Number>0</Number><Start>{b_start}</Start>"
            f"<Finish>{_day(task.baseline_finish)}{FINISH_TIME}</Finish><Duration>{task.baseline_duration}</Duration>"
            "</Baseline>"
        )
    parts.append("</Task>")
    return "".join(parts)


def _extended(task: object) -> str:
    values = [("188743731", task.uid_text), ("188743734", task.tool), ("188743737", task.state)]
    if not pd.isna(task.slip):
        values.append(("188743767", str(int(task.slip))))
    return "".join(
        f"<ExtendedAttribute><FieldID>{field_id}</FieldID><Value>{value}</Value></ExtendedAttribute>"
        for field_id, value in values
        if value
    )
