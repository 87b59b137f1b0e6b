"""The pure-Python MSPDI reader (`connectors.mspdi_reader`) against MPXJ: for the real .mpp files of
../shared/fixtures/msproject saved as MSPDI by MPXJ's own writer, for the sandbox's plan files, for pmsync's MSPDI
report and for hand-made documents that probe MPXJ's rules, the records and title are MPXJ's exactly, or the reader
declines and MPXJ reads the file. And the connector: a pull of MSPDI files never starts the JVM, one with an .mpp
(or an MSPDI file the reader declines) still reads it with MPXJ.

MPXJ runs in a JVM that starts once per process; the test that needs a process without it runs a subprocess.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors import msproject
from connectors.mspdi_reader import NAMESPACE, Unsupported, looks_like_mspdi, parse, read_mspdi
from connectors.msproject import MsProjectConnector, project_records, project_title, read_project
from pmsync.config import MsProjectConnection
from pmsync.errors import ConnectionFailed
from sandbox.generator import MSPROJECT, generate
from sandbox.mspdi import render_project
from sandbox.pytest_plugin import TEST_AS_OF

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "msproject"
FIXTURE_FILES = ("construction-software-plan-2014.mpp", "software-plan-2020.mpp")


@pytest.fixture(scope="module")
def jvm() -> None:
    """MPXJ's JVM, started once for this module (the tests that compare with MPXJ skip without Java)."""
    pytest.importorskip("mpxj")
    try:
        msproject.start_jvm()
    except ConnectionFailed as exc:
        pytest.skip(str(exc))


def mpxj_read(content: bytes, prefix: str = "plan") -> tuple[str | None, list[dict[str, Any]]]:
    """What the connector gets from MPXJ for these bytes: the title (None when the file has none) and the records."""
    project = read_project(content)
    return project_title(project, "") or None, project_records(project, prefix)


def mspdi_of(project: Any) -> bytes:
    """An MPXJ project saved as MSPDI by MPXJ's own writer."""
    import jpype

    out = jpype.JClass("java.io.ByteArrayOutputStream")()
    jpype.JClass("org.mpxj.mspdi.MSPDIWriter")().write(project, out)
    return bytes(out.toByteArray())


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared fixtures are not checked out next to the repository)")
    return path


def assert_same_as_mpxj(content: bytes, prefix: str = "plan") -> list[dict[str, Any]]:
    """The reader reads the bytes (does not decline them) into MPXJ's title and records; the records."""
    title, records = parse(content, prefix)
    expected_title, expected = mpxj_read(content, prefix)
    assert title == expected_title
    assert len(records) == len(expected)
    for got, want in zip(records, expected, strict=True):
        assert got == want, got["uid"]
    return records


def features(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many records carry each feature the comparison must have seen."""
    return {
        "lagged links": sum(1 for r in records for p in r["predecessors"] if p["lag_days"]),
        "link types": len({p["type"] for r in records for p in r["predecessors"]}),
        "assignments": sum(len(r["resources"]) for r in records),
        "emails": sum(1 for r in records for x in r["resources"] if x["email"]),
        "baselines": sum(1 for r in records if r["baseline_finish"]),
        "baselines moved": sum(1 for r in records if r["baseline_finish_date"] not in (None, r["finish_date"])),
        "summaries": sum(r["summary"] for r in records),
        "children": sum(1 for r in records if r["parent_uid"] is not None),
        "milestones": sum(r["milestone"] for r in records),
        "in progress": sum(1 for r in records if r["_pmsync"]["progress"] == "inProgress"),
        "actual finishes": sum(1 for r in records if r["actual_finish"]),
    }


# -- the same records as MPXJ ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_a_real_plan_saved_as_mspdi_by_mpxj_reads_as_mpxj_reads_it(jvm: None, name: str) -> None:
    content = mspdi_of(read_project(fixture(name).read_bytes()))
    records = assert_same_as_mpxj(content, "real")
    seen = features(records)
    assert len(records) > 30 and seen["assignments"] > 20 and seen["summaries"] and seen["children"]
    if name.startswith("construction"):  # SOURCES.md: links with negative lags, baselines and progress
        assert seen["lagged links"] >= 3 and seen["baselines"] == len(records) and seen["baselines moved"]
        assert seen["milestones"] == 7 and seen["actual finishes"]


@pytest.mark.parametrize("seed, size", [(7, "small"), (11, "medium"), (7, 10_000), (3, 20_000)])
def test_the_sandboxs_plan_files_read_as_mpxj_reads_them(jvm: None, seed: int, size: str | int) -> None:
    portfolio = generate(seed=seed, size=size, as_of=TEST_AS_OF)
    records: list[dict[str, Any]] = []
    for project in portfolio.projects_of(MSPROJECT):
        records += assert_same_as_mpxj(render_project(portfolio, project.index), f"p{project.index}")
    if size != "small":  # the small sandbox's three 10-task plans have no lagged links
        seen = features(records)
        assert all(seen.values()), seen
        assert seen["link types"] >= 2


def test_a_plan_the_sandbox_changed_reads_as_mpxj_reads_it(jvm: None) -> None:
    portfolio = generate(seed=5, size="medium", as_of=TEST_AS_OF)
    project = portfolio.projects_of(MSPROJECT)[0]
    tasks = [int(i) for i in portfolio.task_indexes(MSPROJECT, project.index)]
    for i in tasks[:20]:
        portfolio.set_due(i, int(portfolio.tasks.due[i]) + 3)
    portfolio.delete(tasks[25])
    assert_same_as_mpxj(render_project(portfolio, project.index))


def test_pmsyncs_own_mspdi_report_reads_as_mpxj_reads_it(jvm: None, tmp_path: Path) -> None:
    from report_portfolio import fill_warehouse

    import reports
    from warehouse import open_warehouse

    with open_warehouse(f"duckdb:///{tmp_path / 'pmsync.duckdb'}") as warehouse:
        fill_warehouse(warehouse)
        path = reports.build(warehouse, None, "mspdi", tmp_path / "schedule.xml")
    content = path.read_bytes()
    # The report numbers its project rows 1..P ahead of their tasks, so IDs fall back in row order: MPXJ renumbers
    # them (rules of its own), and the reader leaves such a file to it.
    with pytest.raises(Unsupported, match="task IDs do not rise"):
        parse(content, "plan")
    rows = iter(range(1_000_000))
    renumbered = re.sub(rb"(<Task><UID>\d+</UID><ID>)\d+(</ID>)",
                        lambda m: m.group(1) + str(next(rows)).encode() + m.group(2), content)
    records = assert_same_as_mpxj(renumbered)
    seen = features(records)
    assert seen["lagged links"] and seen["baselines"] and seen["summaries"] and seen["milestones"]
    assert all(r["wbs"] for r in records)  # the report writes no WBS: MPXJ's generated codes


# -- hand-made documents: MPXJ's rules, or MPXJ reads them ----------------------------------------------------

PAD = "<!--" + "x" * 600 + "-->"  # UniversalProjectReader wants 512 bytes before it looks


def doc(*tasks: str, header: str = "<Title>Plan</Title>", resources: str = "", assignments: str = "",
        root: str = f' xmlns="{NAMESPACE}"', prolog: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n{prolog}<Project{root}>'
            f"<SaveVersion>14</SaveVersion>{header}<Tasks>{''.join(tasks)}</Tasks><Resources>{resources}</Resources>"
            f"<Assignments>{assignments}</Assignments>{PAD}</Project>").encode()


def task(uid: int, row: int | None = None, level: int | None = 1, extra: str = "", name: str | None = None,
         dates: bool = True) -> str:
    parts = [f"<UID>{uid}</UID><ID>{uid if row is None else row}</ID><Name>{name or f'Task {uid}'}</Name>"]
    if level is not None:
        parts.append(f"<OutlineLevel>{level}</OutlineLevel>")
    if dates:
        parts.append("<Start>2026-01-05T08:00:00</Start><Finish>2026-01-09T17:00:00</Finish>")
    return "<Task>" + "".join(parts) + extra + "</Task>"


SUMMARY_ROW = "<Task><UID>0</UID><ID>0</ID><Name>Plan</Name><OutlineLevel>0</OutlineLevel></Task>"


def null_row(uid: int, row: int) -> str:
    return f"<Task><UID>{uid}</UID><ID>{row}</ID><IsNull>1</IsNull></Task>"


def link(predecessor: int, kind: int | None = 1, lag: int | None = 0, lag_format: int | None = 7,
         extra: str = "") -> str:
    parts = [f"<PredecessorUID>{predecessor}</PredecessorUID>"]
    if kind is not None:
        parts.append(f"<Type>{kind}</Type>")
    if lag is not None:
        parts.append(f"<LinkLag>{lag}</LinkLag>")
    if lag_format is not None:
        parts.append(f"<LagFormat>{lag_format}</LagFormat>")
    return "<PredecessorLink>" + "".join(parts) + extra + "</PredecessorLink>"


RESOURCES = ("<Resource><UID>1</UID><ID>1</ID><Name>Ann Lee</Name><EmailAddress>ann@example.com</EmailAddress>"
             "</Resource><Resource><UID>2</UID><ID>2</ID><Name></Name></Resource><Resource><UID>0</UID><ID>0</ID>"
             "</Resource>")
ASSIGNMENTS = "".join(
    f"<Assignment><UID>{k}</UID><TaskUID>{t}</TaskUID><ResourceUID>{r}</ResourceUID></Assignment>"
    for k, (t, r) in enumerate([(1, 1), (1, 1), (1, -65535), (2, 9), (2, 2), (3, 0), (2, 1), (77, 1)])
)
LAGS = [(4800, None), (-12345, 3), (777, 4), (4800, 5), (1, 6), (99999, 7), (123, 8), (4800, 9), (10, 10),
        (4800, 11), (31, 12), (4800, 19), (-7, 20), (5, 35), (6, 39), (4800, 40), (4800, 53), (3, 44)]

READ = {  # documents the reader reads: MPXJ's records exactly
    "a Summary flag without children is not a summary": doc(
        SUMMARY_ROW, task(1, extra="<Summary>1</Summary>"), task(2, extra="<Summary>0</Summary>")),
    "IDs with gaps": doc(SUMMARY_ROW, task(1, 5), task(2, 9), task(3, 20, level=2)),
    "missing WBS codes are generated": doc(
        SUMMARY_ROW, task(1), task(2, level=2), task(3, level=2), task(4, level=3), task(5),
        task(6, level=2, extra="<WBS>X.Y</WBS>"), task(7, level=3), task(8, level=2, extra="<WBS></WBS>"),
        task(9, level=3)),
    "the outline from levels that jump and fall": doc(
        SUMMARY_ROW, task(1), task(2, level=3), task(3, level=2), task(4, level=5), task(5), task(6, level=0),
        task(7, level=2), task(8, level=-1), task(9, level=None), task(10, level=2)),
    "null rows in the outline, linked to": doc(
        SUMMARY_ROW, task(1), null_row(9, 2), task(2, 3, level=2), null_row(8, 4), task(3, 5, level=2),
        task(4, 6, extra=link(9) + link(8) + link(77))),
    "no project summary row, null rows at the top": doc(
        null_row(9, 1), task(1, 2), task(2, 3, level=2), null_row(8, 4), task(3, 5)),
    "UIDs not in row order": doc(SUMMARY_ROW, task(5, 1), task(4, 2, level=2), task(3, 3)),
    "a single row has no outline": doc(task(1, level=2)),
    "no title, an empty title": doc(SUMMARY_ROW, task(1), header="<Name>plan.xml</Name><Title></Title>"),
    "a repeated element counts once, the last": doc(SUMMARY_ROW, task(1, extra="<Name>second</Name>")),
    "names: blank, empty, escaped, non-ASCII": doc(
        SUMMARY_ROW, task(1, name=" "), task(2, name="caf\u00e9 \u2603 &amp; &lt;x&gt;"),
        task(3, extra="<Name/>")),
    "empty dates, a milestone without Finish": doc(
        SUMMARY_ROW, task(1, dates=False, extra="<Start></Start><Finish/>"),
        task(2, dates=False, extra="<Start>2026-01-05T08:00:00</Start>"),
        task(3, dates=False, extra="<Start>2026-01-05T08:00:00</Start><Milestone>1</Milestone>")),
    "baselines: Number 0 or none, the last one": doc(
        SUMMARY_ROW, task(1, extra="<Baseline><Finish>2026-02-02T17:00:00</Finish></Baseline>"),
        task(2, extra="<Baseline><Number>0</Number><Finish>2026-02-02T17:00:00</Finish></Baseline>"
                      "<Baseline><Number>0</Number></Baseline>"),
        task(3, extra="<Baseline><Number>1</Number><Finish>2026-02-02T17:00:00</Finish></Baseline>")),
    "percent complete, progress and notes": doc(
        SUMMARY_ROW, task(1, extra="<PercentComplete>50.5</PercentComplete><Notes>a\r\nb &amp; c</Notes>"),
        task(2, extra="<PercentComplete>100</PercentComplete><Notes></Notes>"),
        task(3, extra="<PercentComplete>0</PercentComplete><Notes><![CDATA[<cdata>]]></Notes>")),
    "assignments: repeated, unknown and no resource": doc(
        SUMMARY_ROW, task(1), task(2), task(3), resources=RESOURCES, assignments=ASSIGNMENTS),
    "lags in every format, with MinutesPerDay and DaysPerMonth": doc(
        SUMMARY_ROW, task(1), task(2),
        task(3, extra="".join(link(1 + k % 2, k % 5, lag, fmt) for k, (lag, fmt) in enumerate(LAGS))),
        header="<Title>Plan</Title><MinutesPerDay>450</MinutesPerDay><DaysPerMonth>21</DaysPerMonth>"),
    "lags with no minutes in a day or week": doc(
        SUMMARY_ROW, task(1), task(2, extra=link(1, 1, 4800, 7) + link(1, 3, 4800, 11)),
        task(3, extra=link(1, 1, 4800, 9)), header="<MinutesPerDay>0</MinutesPerDay>"),
    "link types, none and out of range": doc(
        SUMMARY_ROW, task(1), task(2), task(3), task(4, extra=link(1, 0) + link(2, 2) + link(3, 7)),
        task(5, extra=link(1, None, None, None) + link(2, -1) + link(5))),
    "repeated links: equal ones dropped, compared with the first to the same task": doc(
        SUMMARY_ROW, task(1), task(2),
        task(3, extra=link(1) + link(2, 3) + link(1) + link(1, 3) + link(1, 3) + link(2, 3, 1, 7)
             + link(2, 3, 4800, 7) + link(2, 3, 1, 41)),
        task(4, extra=link(1, 1, 4800, 7) + link(1, 1, 4800, 5) + link(1, 1, 4801, 7)),
        task(5, extra=link(1, 1, 1, 11) + link(1, 1, 2, 11) + link(1, 1, 3, 12))),
    "a UTF-8 byte order mark": b"\xef\xbb\xbf" + doc(SUMMARY_ROW, task(1)),
}

DECLINED = {  # MSPDI the reader leaves to MPXJ (which reads it, or gives its own error)
    "Milestone written as true": doc(SUMMARY_ROW, task(1, extra="<Milestone>true</Milestone>")),
    "IDs out of row order (MPXJ renumbers)": doc(SUMMARY_ROW, task(1, 3), task(2, 1), task(3, 2, level=2)),
    "negative IDs (MPXJ renumbers)": doc(task(1, -5), task(2, -3, level=2), task(3, 1)),
    "a row without ID": doc(SUMMARY_ROW, "<Task><UID>1</UID><Name>x</Name></Task>", task(2)),
    "two rows with one UID": doc(SUMMARY_ROW, task(1), task(1, 2)),
    "an integer with spaces": doc(SUMMARY_ROW, task(1), "<Task><UID> 5 </UID><ID>2</ID></Task>"),
    "fractions of seconds": doc(SUMMARY_ROW, task(1, dates=False, extra="<Start>2026-01-05T08:00:00.5</Start>")),
    "February 30th (MPXJ moves it)": doc(
        SUMMARY_ROW, task(1, dates=False, extra="<Finish>2026-02-30T17:00:00</Finish>")),
    "a Finish MPXJ computes from the calendar": doc(
        SUMMARY_ROW, task(1, dates=False, extra="<Start>2026-01-05T08:00:00</Start><Duration>PT16H</Duration>")),
    "an unknown LagFormat": doc(SUMMARY_ROW, task(1), task(2, extra=link(1, 1, 4800, 99))),
    "a cross-project link": doc(SUMMARY_ROW, task(1), task(2, extra=link(1, extra="<CrossProject>1</CrossProject>"))),
    "an element of another namespace": doc(SUMMARY_ROW, task(1, extra='<x:Name xmlns:x="urn:x">other</x:Name>')),
    "markup in a name": doc(SUMMARY_ROW, task(1, name="a<b/>c")),
    "a resource UID given twice": doc(
        SUMMARY_ROW, task(1), resources="<Resource><UID>1</UID></Resource><Resource><UID>1</UID></Resource>"),
    "another declared encoding": doc(SUMMARY_ROW, task(1, name="caf\u00e9")).replace(b"UTF-8", b"ISO-8859-1"),
    "a DOCTYPE": doc(SUMMARY_ROW, task(1), prolog='<!DOCTYPE Project [<!ENTITY e "x">]>'),
    "truncated": doc(SUMMARY_ROW, task(1), task(2))[:-40],
    "shorter than 512 bytes": doc(SUMMARY_ROW, task(1)).replace(PAD.encode(), b""),
}

NOT_MSPDI = {
    "empty": b"",
    "garbage": bytes(range(256)) * 4,
    "JSON": b'{"Project": {"Title": "x"}}' + b" " * 600,
    "other XML": b'<?xml version="1.0"?><plan><task id="1"/>' + PAD.encode() + b"</plan>",
    "Project in another namespace": doc(SUMMARY_ROW, task(1), root=' xmlns="http://example.com/project"'),
    "Project in no namespace": doc(SUMMARY_ROW, task(1), root=""),
    "MSPDI root inside another element": (
        f'<?xml version="1.0"?><root xmlns="{NAMESPACE}"><Project><SaveVersion>14</SaveVersion></Project>{PAD}'
        "</root>").encode(),
}


@pytest.mark.parametrize("name", list(READ))
def test_a_hand_made_document_reads_as_mpxj_reads_it(jvm: None, name: str) -> None:
    assert_same_as_mpxj(READ[name])


@pytest.mark.parametrize("name", list(DECLINED))
def test_a_document_the_reader_cannot_reproduce_is_left_to_mpxj(name: str) -> None:
    content = DECLINED[name]
    with pytest.raises(Unsupported):
        parse(content, "plan")
    assert read_mspdi(content, "plan") is None


@pytest.mark.parametrize("name", list(NOT_MSPDI))
def test_bytes_that_are_not_mspdi_give_none(name: str) -> None:
    assert read_mspdi(NOT_MSPDI[name], "plan") is None


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_an_mpp_file_gives_none(name: str) -> None:
    content = fixture(name).read_bytes()
    assert not looks_like_mspdi(content) and read_mspdi(content, "plan") is None


def test_the_documents_declined_and_read_cover_what_mpxj_reads_differently(jvm: None) -> None:
    """The declined documents are ones MPXJ reads into something the reader would get wrong, or fails on."""
    renumbered = mpxj_read(DECLINED["IDs out of row order (MPXJ renumbers)"])[1]
    assert [r["id"] for r in renumbered] == [3, 4, 5]
    assert mpxj_read(DECLINED["Milestone written as true"])[1][0]["milestone"] is False
    assert mpxj_read(DECLINED["February 30th (MPXJ moves it)"])[1][0]["finish"] == "2026-02-28T17:00:00"
    assert mpxj_read(DECLINED["a Finish MPXJ computes from the calendar"])[1][0]["finish"] is not None
    assert mpxj_read(DECLINED["another declared encoding"])[1][0]["name"] == "caf\u00e9"
    for name in ("truncated", "a DOCTYPE"):
        with pytest.raises(ValueError, match="MPXJ could not read the file"):
            read_project(DECLINED[name])
    with pytest.raises(ValueError, match="does not recognise"):
        read_project(DECLINED["shorter than 512 bytes"])


# -- the connector --------------------------------------------------------------------------------------------

def connector(paths: list[Path]) -> MsProjectConnector:
    raw = {"name": "pmo-files", "tool": "msproject", "files": [f"file:{p}" for p in paths]}
    return MsProjectConnector.from_config(MsProjectConnection.model_validate(raw))


@pytest.fixture(scope="module")
def plan_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The three 300-task plan files of a 10,000-task sandbox, as local MSPDI files."""
    portfolio = generate(seed=7, size=10_000, as_of=TEST_AS_OF)
    folder = tmp_path_factory.mktemp("plans")
    paths = []
    for project in portfolio.projects_of(MSPROJECT):
        path = folder / f"plan-{project.index}.xml"
        path.write_bytes(render_project(portfolio, project.index))
        paths.append(path)
    return paths


PULL_SCRIPT = """
import json, sys
import jpype
from connectors import msproject
from connectors.msproject import MsProjectConnector
from pmsync.config import MsProjectConnection

raw = {"name": "pmo-files", "tool": "msproject", "files": [f"file:{p}" for p in sys.argv[1:]]}
batches = list(MsProjectConnector.from_config(MsProjectConnection.model_validate(raw)).pull(None))
print(json.dumps({"records": sum(len(b.records) for b in batches), "rejected": sum(len(b.rejected) for b in batches),
                  "jvm_started": bool(jpype.isJVMStarted()), "starter": msproject._JVM_STARTER is not None,
                  "projects": [p.name for b in batches for p in b.projects]}))
"""


def test_a_pull_of_mspdi_files_does_not_start_the_jvm(plan_files: list[Path]) -> None:
    done = subprocess.run([sys.executable, "-c", PULL_SCRIPT, *map(str, plan_files)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["records"] == 900 and result["rejected"] == 0 and len(result["projects"]) == 3
    assert not result["jvm_started"] and not result["starter"]


@pytest.fixture
def jvm_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The connector's calls to start the JVM (in the background, or when MPXJ reads), let through."""
    calls: list[str] = []
    start, background = msproject.start_jvm, msproject.start_jvm_in_background

    def spy_start() -> None:
        calls.append("start_jvm")
        start()

    def spy_background() -> None:
        calls.append("start_jvm_in_background")
        background()

    monkeypatch.setattr(msproject, "start_jvm", spy_start)
    monkeypatch.setattr(msproject, "start_jvm_in_background", spy_background)
    yield calls


def test_a_pull_of_drive_mspdi_files_never_asks_for_the_jvm(jvm_calls: list[str]) -> None:
    from sandbox import ids
    from sandbox.core import CREDENTIALS
    from sandbox.server import Sandbox, native_id

    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",)) as box:
        p = box.portfolio
        files = [f"drive:{ids.graph_drive_id(p)}/items/{ids.graph_item_id(p, pr.index)}"
                 for pr in p.projects_of(MSPROJECT)]
        raw = {"name": "pmo-files", "tool": "msproject", "files": files, "base_url": box.api_url("graph"),
               "auth": {"token": CREDENTIALS["graph"]["token"]}}
        drive = MsProjectConnector.from_config(MsProjectConnection.model_validate(raw))
        try:
            pulled = [r["_pmsync"]["native_id"] for b in drive.pull(None) for r in b.records]
        finally:
            drive.close()
        assert sorted(pulled) == sorted(native_id(p, int(i)) for i in p.task_indexes(MSPROJECT))
    assert jvm_calls == []


def test_a_pull_with_an_mpp_file_reads_it_with_mpxj(jvm: None, jvm_calls: list[str], plan_files: list[Path],
                                                     tmp_path: Path) -> None:
    mpp = fixture("construction-software-plan-2014.mpp")
    batches = list(connector([plan_files[0], mpp]).pull(None))
    by_file: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        assert not batch.rejected
        for record in batch.records:
            by_file.setdefault(record["_pmsync"]["project_native_id"], []).append(record)
    assert by_file[mpp.stem] == mpxj_read(mpp.read_bytes(), mpp.stem)[1]
    assert by_file[plan_files[0].stem] == parse(plan_files[0].read_bytes(), plan_files[0].stem)[1]
    titles = [parse(plan_files[0].read_bytes(), "x")[0], mpxj_read(mpp.read_bytes())[0]]
    assert [p.name for b in batches for p in b.projects] == titles
    assert "start_jvm_in_background" in jvm_calls  # started as soon as the .mpp's bytes were in


def test_an_mspdi_file_the_reader_declines_is_read_by_mpxj(jvm: None, jvm_calls: list[str], tmp_path: Path) -> None:
    path = tmp_path / "computed.xml"
    path.write_bytes(DECLINED["a Finish MPXJ computes from the calendar"])
    batches = list(connector([path]).pull(None))
    records = [r for b in batches for r in b.records]
    assert records == mpxj_read(path.read_bytes(), "computed")[1] and records[0]["finish"]
    assert "start_jvm" in jvm_calls and "start_jvm_in_background" not in jvm_calls  # it looked like MSPDI


def test_a_truncated_mspdi_file_is_quarantined_with_mpxjs_error_not_read_in_part(
    jvm: None, plan_files: list[Path], tmp_path: Path
) -> None:
    path = tmp_path / "cut.xml"
    path.write_bytes(plan_files[0].read_bytes()[: 100_000])
    batches = list(connector([path, plan_files[1]]).pull(None))
    assert not [r for r in batches[0].records]
    ((native_id, payload, reason),) = batches[0].rejected
    assert native_id == "cut" and payload["file"] == "cut.xml"
    assert "not a project MPXJ can read: MPXJ could not read the file" in reason
    assert len(batches[1].records) == 300
