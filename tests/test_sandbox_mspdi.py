"""MS Project XML rendered by `sandbox.mspdi`, read back with MPXJ (the `mpxj` package over JPype), and MPXJ's own
reading of real .mpp files.

A JVM starts only once per process, so every MPXJ test lives in this module and shares `mpxj_reader`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from sandbox.generator import (
    DONE,
    EPIC,
    LINK_NATIVE,
    MILESTONE,
    MSPROJECT,
    NO_DAY,
    Portfolio,
    day_to_date,
    generate,
)
from sandbox.mspdi import NAMESPACE, item_version, render_project, working_days

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "msproject"
LINK_TYPES = {0: "FF", 1: "FS", 2: "SF", 3: "SS"}
AS_OF = date(2026, 11, 22)


@pytest.fixture(scope="module")
def portfolio() -> Portfolio:
    """Large enough for three 300-task MS Project plans with every feature (summaries, lags, link types)."""
    return generate(seed=7, size=20_000, as_of=AS_OF)


@pytest.fixture(scope="module")
def mpxj_reader() -> Iterator[Any]:
    """MPXJ's UniversalProjectReader class, with the JVM started once for this module (skip without Java)."""
    from connectors.msproject import start_jvm
    from pmsync.errors import ConnectionFailed

    try:
        start_jvm()
    except ConnectionFailed as exc:  # no Java runtime on this machine
        pytest.skip(str(exc))
    from org.mpxj.reader import UniversalProjectReader  # type: ignore[import-not-found]

    yield UniversalProjectReader


def read_rendered(reader: Any, portfolio: Portfolio, project: int, tmp_path: Path) -> Any:
    path = tmp_path / f"plan-{project}.xml"
    path.write_bytes(render_project(portfolio, project))
    return reader().read(str(path))


def java_date(value: Any) -> str | None:
    return None if value is None else str(value.toLocalDate())


def test_mpxj_reads_every_task_with_its_dates_progress_and_baseline(
    mpxj_reader: Any, portfolio: Portfolio, tmp_path: Path
) -> None:
    p, t = portfolio, portfolio.tasks
    for project in p.projects_of(MSPROJECT):
        read = read_rendered(mpxj_reader, p, project.index, tmp_path)
        tasks = {int(task.getUniqueID()): task for task in read.getTasks() if int(task.getUniqueID()) > 0}
        indexes = p.task_indexes(MSPROJECT, project.index)
        assert sorted(tasks) == sorted(int(t.seq[i]) for i in indexes)
        for i in map(int, indexes):
            task = tasks[int(t.seq[i])]
            assert task.getName() == p.title(i)
            assert java_date(task.getFinish()) == day_to_date(int(t.due[i])).isoformat()
            assert str(task.getFinish().toLocalTime()) == "17:00"
            assert bool(task.getMilestone()) == (int(t.kind[i]) == MILESTONE)
            assert int(task.getPercentageComplete()) == int(t.percent[i])
            assert java_date(task.getBaselineFinish()) == day_to_date(p.original_due(i)).isoformat()
            if int(t.status[i]) == DONE:
                assert task.getActualFinish() is not None
            if int(t.kind[i]) not in (MILESTONE,):
                assert java_date(task.getStart()) == day_to_date(int(t.start[i])).isoformat()


def test_mpxj_sees_summary_hierarchy_of_epics_and_their_children(
    mpxj_reader: Any, portfolio: Portfolio, tmp_path: Path
) -> None:
    p, t = portfolio, portfolio.tasks
    project = p.projects_of(MSPROJECT)[0].index
    read = read_rendered(mpxj_reader, p, project, tmp_path)
    tasks = {int(task.getUniqueID()): task for task in read.getTasks() if int(task.getUniqueID()) > 0}
    indexes = [int(i) for i in p.task_indexes(MSPROJECT, project)]
    parents_with_children = {int(t.parent[i]) for i in indexes if t.parent[i] >= 0}
    for i in indexes:
        task = tasks[int(t.seq[i])]
        assert bool(task.getSummary()) == (i in parents_with_children)
        parent = task.getParentTask()
        if t.parent[i] >= 0:
            assert int(parent.getUniqueID()) == int(t.seq[int(t.parent[i])])
            assert int(task.getOutlineLevel()) == 2
        else:
            assert int(t.kind[i]) == EPIC and int(task.getOutlineLevel()) == 1
    assert parents_with_children, "the plan must have summary tasks"


def test_mpxj_reads_predecessors_with_type_and_lag(
    mpxj_reader: Any, portfolio: Portfolio, tmp_path: Path
) -> None:
    p, t = portfolio, portfolio.tasks
    expected: set[tuple[int, int, str, float]] = set()
    project = p.projects_of(MSPROJECT)[0].index
    for k in p.links_of(LINK_NATIVE):
        pred, succ = int(p.link_pred[k]), int(p.link_succ[k])
        if int(t.project[succ]) == project:
            expected.add(
                (int(t.seq[succ]), int(t.seq[pred]), LINK_TYPES[int(p.link_type[k])], float(p.link_lag[k]))
            )
    read = read_rendered(mpxj_reader, p, project, tmp_path)
    found = set()
    for task in read.getTasks():
        for link in task.getPredecessors():
            lag = link.getLag()
            assert str(lag.getUnits()) in ("d", "DAYS")
            found.add(
                (
                    int(task.getUniqueID()),
                    int(link.getPredecessorTask().getUniqueID()),
                    str(link.getType()),
                    float(lag.getDuration()),
                )
            )
    assert found == expected
    assert {kind for _, _, kind, _ in found} >= {"FS", "SS", "FF"}
    assert any(lag for *_, lag in found)


def test_mpxj_reads_resources_and_assignments_of_assignees(
    mpxj_reader: Any, portfolio: Portfolio, tmp_path: Path
) -> None:
    p, t = portfolio, portfolio.tasks
    project = p.projects_of(MSPROJECT)[0].index
    read = read_rendered(mpxj_reader, p, project, tmp_path)
    emails = {
        str(a.getTask().getUniqueID()): str(a.getResource().getEmailAddress())
        for a in read.getResourceAssignments()
        if a.getResource() is not None
    }
    for i in map(int, p.task_indexes(MSPROJECT, project)):
        person = int(t.assignee[i])
        if person >= 0 and str(int(t.seq[i])) in emails:
            assert emails[str(int(t.seq[i]))] == p.people[person].email_in(MSPROJECT)
    names = {str(r.getName()) for r in read.getResources() if r.getName() is not None}
    assert any(
        name == p.people[int(t.assignee[i])].display_name(MSPROJECT)
        for i in p.task_indexes(MSPROJECT, project)
        if t.assignee[i] >= 0
        for name in names
    )
    assert emails


def test_rendered_file_follows_a_due_change_while_baseline_keeps_the_original(
    mpxj_reader: Any, tmp_path: Path
) -> None:
    p = generate(seed=11, size="small", as_of=AS_OF)
    project = p.projects_of(MSPROJECT)[0].index
    i = next(int(i) for i in p.task_indexes(MSPROJECT, project) if int(p.tasks.kind[i]) != EPIC)
    original = p.original_due(i)
    version = item_version(p, project)
    p.set_due(i, int(p.tasks.due[i]) + 12)
    read = read_rendered(mpxj_reader, p, project, tmp_path)
    task = next(task for task in read.getTasks() if int(task.getUniqueID()) == int(p.tasks.seq[i]))
    assert java_date(task.getFinish()) == day_to_date(int(p.tasks.due[i])).isoformat()
    assert java_date(task.getBaselineFinish()) == day_to_date(original).isoformat()
    assert item_version(p, project) != version


@pytest.mark.parametrize(
    ("name", "tasks", "summaries", "milestones", "links", "resources", "baselines"),
    [
        ("construction-software-plan-2014.mpp", 54, 9, 7, 47, 9, True),
        ("software-plan-2020.mpp", 36, 6, None, 26, 15, False),
    ],
)
def test_mpxj_reads_real_mpp_files_as_their_sources_describe(
    mpxj_reader: Any,
    name: str,
    tasks: int,
    summaries: int,
    milestones: int | None,
    links: int,
    resources: int,
    baselines: bool,
) -> None:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (as on a user's machine)")
    read = mpxj_reader().read(str(path))
    # SOURCES.md counts as MPXJ lists them, the project summary row (UID 0) included.
    named = [task for task in read.getTasks() if task.getName() is not None]
    assert len(named) == tasks
    assert sum(1 for task in named if task.getSummary()) == summaries
    if milestones is not None:
        assert sum(1 for task in named if task.getMilestone()) == milestones
    assert sum(len(task.getPredecessors()) for task in named) == links
    assert len([r for r in read.getResources() if r.getName() is not None]) == resources
    assert all(task.getBaselineFinish() is not None for task in named) == baselines


def test_document_is_namespaced_mspdi_with_unique_uids_and_a_standard_calendar(portfolio: Portfolio) -> None:
    project = portfolio.projects_of(MSPROJECT)[1].index
    root = ET.fromstring(render_project(portfolio, project))
    ns = {"m": NAMESPACE}
    assert root.tag == f"{{{NAMESPACE}}}Project"
    assert root.findtext("m:Title", namespaces=ns) == portfolio.projects[project].name
    uids = [int(e.text) for e in root.findall("m:Tasks/m:Task/m:UID", ns)]
    assert len(uids) == len(set(uids)) == len(portfolio.task_indexes(MSPROJECT, project)) + 1
    assert root.findtext("m:Calendars/m:Calendar/m:Name", namespaces=ns) == "Standard"
    lags = {e.text for e in root.findall("m:Tasks/m:Task/m:PredecessorLink/m:LinkLag", ns)}
    assert lags <= {str(days * 4800) for days in range(4)}


def test_non_msproject_project_is_refused(portfolio: Portfolio) -> None:
    with pytest.raises(ValueError):
        render_project(portfolio, 0)


def test_working_days_count_monday_to_friday_inclusive() -> None:
    monday = (date(2026, 11, 23) - date(1970, 1, 1)).days
    assert working_days(monday, monday + 4) == 5
    assert working_days(monday, monday + 6) == 5
    assert working_days(monday + 5, monday + 5) == 1
    assert working_days(NO_DAY, monday) == 1
