"""`pmsync report`: the HTML dashboard, the Excel workbook and the MS Project XML, built from a hand-made warehouse
(DuckDB, and PostgreSQL through `backend`) and from a real sync of the sandbox, and uploaded to the emulated drive.

MPXJ runs in a JVM that starts once per process: every MPXJ read of the report tests lives in this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pandas as pd
import pytest
import yaml
from report_portfolio import (
    AS_OF,
    DEPENDENCIES,
    FORMULA_TITLE,
    HEALTH,
    PROJECTS,
    SCRIPT_TITLE,
    TASKS,
    fill_warehouse,
)

import reports
from pmsync.config import load_config
from pmsync.errors import PmsyncError
from reports.xlsx import sheet_names
from warehouse import Warehouse, open_warehouse

SECRET = "s3cr3t-token-that-must-not-leak"
MPXJ_LINK_TYPES = {"finish_to_start": "FS", "blocks": "FS", "start_to_start": "SS", "finish_to_finish": "FF"}


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Warehouse]:
    """A DuckDB warehouse holding the hand-made portfolio."""
    with open_warehouse(f"duckdb:///{tmp_path / 'pmsync.duckdb'}") as warehouse:
        fill_warehouse(warehouse)
        yield warehouse


@pytest.fixture(scope="module")
def mpxj_reader() -> Any:
    """MPXJ's UniversalProjectReader, the JVM started the way the MS Project connector starts it."""
    pytest.importorskip("jpype")
    from connectors.msproject import start_jvm

    try:
        start_jvm()
    except (OSError, RuntimeError, ValueError) as exc:  # no Java runtime here
        pytest.skip(f"MPXJ needs a Java runtime: {exc}")
    from org.mpxj.reader import UniversalProjectReader  # type: ignore[import-not-found]

    return UniversalProjectReader


def read_mspdi(reader: Any, path: Path) -> dict[str, Any]:
    """The tasks MPXJ reads from a file, by pmsync task uid (Text1), plus the project summary rows by name."""
    project = reader().read(str(path))
    tasks, summaries = {}, {}
    for task in project.getTasks():
        if task.getSummary():
            summaries[str(task.getName())] = task
        else:
            tasks[str(task.getText(1))] = task
    return {"tasks": tasks, "summaries": summaries}


def as_day(value: Any) -> date | None:
    """A Java LocalDateTime (or None) as a date."""
    return None if value is None else date.fromisoformat(str(value)[:10])


def config_with(tmp_path: Path, warehouse_url: str, **extra: Any) -> Any:
    """A configuration whose Graph connection carries a distinctive secret (which no report may show)."""
    document = {
        "warehouse": warehouse_url,
        "connections": [
            {
                "name": "pmo-files",
                "tool": "msproject",
                "base_url": "http://127.0.0.1:9/v1.0",
                "auth": {"token": SECRET},
                "files": ["drive:b!x/items/01ABC"],
            },
        ],
        **extra,
    }
    path = tmp_path / "pmsync.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path)


# -- Excel --------------------------------------------------------------------------------------------------------


def test_workbook_holds_a_summary_worst_slip_first_and_one_sheet_per_project_with_its_tasks(
    filled: Warehouse, tmp_path: Path
) -> None:
    path = reports.build(filled, None, "xlsx", tmp_path / "schedule.xlsx")
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == [
        "Summary",
        "Platform rebuild",
        "Datacenter move",
        "Launch <b>campaign<_b>",
        "Ops_ office move _2026_",
    ]
    summary = list(book["Summary"].iter_rows(values_only=True))
    assert summary[0][:3] == ("Project", "Tool", "Health")
    assert [row[0] for row in summary[1:5]] == [
        "Platform rebuild",
        "Datacenter move",
        "Launch <b>campaign</b>",
        "Ops: office move [2026]",
    ]
    assert [row[10] for row in summary[1:5]] == [20, 15, 5, 0]
    figures = {row[0]: row[1] for row in summary[6:] if row and row[0]}
    assert figures["Projects"] == 4 and figures["Red"] == 2 and figures["Tasks"] == len(TASKS)
    for (uid, *_), name in zip([PROJECTS[0], PROJECTS[3], PROJECTS[1], PROJECTS[2]], book.sheetnames[1:]):
        sheet = book[name]
        rows = list(sheet.iter_rows(min_row=2, values_only=True))
        assert sorted(row[1] for row in rows) == sorted(
            t[3].replace("\x07", "") for t in TASKS if t[1] == uid
        )
        assert sheet.freeze_panes == "A2"
        assert sheet.auto_filter.ref == f"A1:K{len(rows) + 1}"


def test_workbook_types_dates_as_dates_and_never_turns_a_title_into_a_formula(
    filled: Warehouse, tmp_path: Path
) -> None:
    book = openpyxl.load_workbook(reports.build(filled, None, "xlsx", tmp_path / "schedule.xlsx"))
    rows = {row[1].value: row for row in book["Launch <b>campaign<_b>"].iter_rows(min_row=2)}
    formula_row = rows[FORMULA_TITLE]
    assert formula_row[1].data_type == "s"
    due, baseline, forecast = (cell.value for cell in formula_row[4:7])
    assert (due, baseline, forecast) == (datetime(2026, 3, 31), datetime(2026, 3, 25), datetime(2026, 4, 8))
    assert formula_row[4].is_date and formula_row[4].number_format == "yyyy-mm-dd"
    assert [cell.value for cell in formula_row[7:11]] == [
        14,
        "at_risk",
        True,
        "https://example.test/mkt-asana:11",
    ]


def test_sheet_names_are_at_most_31_characters_without_forbidden_ones_and_unique_ignoring_case() -> None:
    names = sheet_names(
        ["A" * 40, "a" * 40, "x[1]:*?/\\y", "Summary", "history", "'quoted'", "", "Same", "SAME"]
    )
    assert all(len(name) <= 31 for name in names)
    assert not any(re.search(r"[\[\]:*?/\\]", name) for name in names)
    assert len({name.lower() for name in names} | {"summary"}) == len(names) + 1
    assert names[2] == "x_1______y" and names[5] == "quoted"
    assert not any(name.startswith("'") or name.endswith("'") for name in names)


# -- MS Project XML -----------------------------------------------------------------------------------------------


def test_mpxj_reads_every_task_with_forecast_finish_baseline_and_project_summary(
    filled: Warehouse, tmp_path: Path, mpxj_reader: Any
) -> None:
    read = read_mspdi(mpxj_reader, reports.build(filled, None, "mspdi", tmp_path / "schedule.xml"))
    assert set(read["tasks"]) == {t[0] for t in TASKS}
    names = {name for name in read["summaries"]}
    assert {f"{name} ({tool})" for _, _, tool, name, _ in PROJECTS} <= names
    for uid, project, _, title, _, milestone, _, due, baseline, forecast, slip, state, critical in TASKS:
        task = read["tasks"][uid]
        assert str(task.getName()) == title.replace("\x07", "")
        assert as_day(task.getFinish()) == (date.fromisoformat(forecast) if forecast else None)
        assert as_day(task.getBaselineFinish()) == (date.fromisoformat(baseline) if baseline else None)
        assert bool(task.getMilestone()) == milestone
        assert str(task.getText(3)) == state
        parent = str(task.getParentTask().getName())
        assert parent.startswith(next(name for p, _, _, name, _ in PROJECTS if p == project))


def test_mpxj_reads_dependencies_across_tools_with_their_type_and_lag(
    filled: Warehouse, tmp_path: Path, mpxj_reader: Any
) -> None:
    read = read_mspdi(mpxj_reader, reports.build(filled, None, "mspdi", tmp_path / "schedule.xml"))
    by_unique_id = {int(task.getUniqueID()): uid for uid, task in read["tasks"].items()}
    found = set()
    for uid, task in read["tasks"].items():
        for relation in task.getPredecessors():
            lag = relation.getLag()
            found.add(
                (
                    by_unique_id[int(relation.getPredecessorTask().getUniqueID())],
                    uid,
                    str(relation.getType()),
                    float(lag.getDuration()),
                )
            )
    assert found == {(p, s, MPXJ_LINK_TYPES[k], lag) for p, s, k, lag in DEPENDENCIES}


def test_mspdi_task_keeps_its_span_before_the_forecast_and_done_tasks_show_actual_finish(
    filled: Warehouse, tmp_path: Path, mpxj_reader: Any
) -> None:
    read = read_mspdi(mpxj_reader, reports.build(filled, None, "mspdi", tmp_path / "schedule.xml"))
    late = read["tasks"]["eng-jira:2"]  # due - start is 28 days; forecast 2026-03-02
    assert as_day(late.getStart()) == date(2026, 2, 2)
    done = read["tasks"]["eng-jira:1"]
    assert as_day(done.getActualFinish()) == date(2026, 1, 22) and float(done.getPercentageComplete()) == 100
    assert read["tasks"]["ops-trello:c1"].getFinish() is None  # unscheduled: no dates invented


# -- HTML ---------------------------------------------------------------------------------------------------------


def test_dashboard_shows_every_project_worst_slip_first_the_critical_path_and_the_cycle(
    filled: Warehouse, tmp_path: Path
) -> None:
    page = reports.build(filled, None, "html", tmp_path / "dashboard.html").read_text(encoding="utf-8")
    table = page[
        page.index('id="projects-table"') : page.index("</table>", page.index('id="projects-table"'))
    ]
    positions = [
        table.index(name)
        for name in (
            "Platform rebuild",
            "Datacenter move",
            "Launch &lt;b&gt;campaign",
            "Ops: office move [2026]",
        )
    ]
    assert positions == sorted(positions)
    assert 'id="gantt"' in page and page.count('class="bar forecast"') >= len(HEALTH)
    assert 'class="as-of"' in page and "as of 2026-03-02" in page
    critical = page[page.index('id="critical-table"') :]
    assert critical.index("Design API") < critical.index("Rack servers")
    assert "pmo-planner:t3 (Loop A) → pmo-planner:t4 (Loop B)" in page
    assert 'id="slip-by-project"' in page and 'id="slip-by-tool"' in page


def test_dashboard_escapes_user_text_and_links_only_web_urls(filled: Warehouse, tmp_path: Path) -> None:
    page = reports.build(filled, None, "html", tmp_path / "dashboard.html").read_text(encoding="utf-8")
    assert SCRIPT_TITLE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>campaign</b>" not in page
    assert "javascript:" not in page
    assert page.count("<script>") == 1  # the dashboard's own filter script, nothing a user typed
    assert not re.search(r"\bsrc=|<link\b|@import|url\(", page)  # nothing is loaded from elsewhere


def test_no_report_holds_a_secret_of_the_configuration(filled: Warehouse, tmp_path: Path) -> None:
    config = config_with(tmp_path, "duckdb:///unused.duckdb")
    for fmt in reports.FORMATS:
        path = reports.build(filled, config, fmt, tmp_path / reports.FILE_NAMES[fmt])
        if fmt == "xlsx":
            book = openpyxl.load_workbook(path)
            text = " ".join(
                str(v) for sheet in book for row in sheet.iter_rows(values_only=True) for v in row
            )
        else:
            text = path.read_text(encoding="utf-8")
        assert SECRET not in text


def test_unknown_format_fails_with_one_sentence_before_reading(filled: Warehouse, tmp_path: Path) -> None:
    with pytest.raises(
        PmsyncError, match="--format 'pdf' is not a report format; use one of html, xlsx, mspdi"
    ):
        reports.build(filled, None, "pdf", tmp_path / "x.pdf")
    assert not (tmp_path / "x.pdf").exists()


def test_every_format_builds_from_either_backend(
    warehouse: Warehouse, tmp_path: Path, mpxj_reader: Any
) -> None:
    fill_warehouse(warehouse)
    written = {
        fmt: reports.build(warehouse, None, fmt, tmp_path / reports.FILE_NAMES[fmt])
        for fmt in reports.FORMATS
    }
    assert "Datacenter move" in written["html"].read_text(encoding="utf-8")
    assert len(openpyxl.load_workbook(written["xlsx"]).sheetnames) == len(PROJECTS) + 1
    assert set(read_mspdi(mpxj_reader, written["mspdi"])["tasks"]) == {t[0] for t in TASKS}


def test_as_of_date_is_the_reported_date_and_defaults_to_the_stored_schedule(filled: Warehouse) -> None:
    assert reports.load_report_data(filled).as_of == AS_OF
    assert reports.load_report_data(filled, None, date(2026, 3, 9)).as_of == date(2026, 3, 9)


# -- upload and the command line ----------------------------------------------------------------------------------


def drive_root(sandbox: Any) -> tuple[str, str]:
    """The emulated drive's id and its root folder's item id."""
    from sandbox import ids
    from sandbox.graph import ROOT_ITEM

    return ids.graph_drive_id(sandbox.portfolio), ids.graph_item_id(sandbox.portfolio, ROOT_ITEM)


def graph_get(sandbox: Any, path: str) -> httpx.Response:
    """GET a Graph path from the emulator with the sandbox's bearer token, redirects followed."""
    from sandbox.core import CREDENTIALS

    response = httpx.get(
        f"{sandbox.api_url('graph')}{path}",
        follow_redirects=True,
        headers={"Authorization": f"Bearer {CREDENTIALS['graph']['token']}"},
    )
    response.raise_for_status()
    return response


def test_reports_upload_to_the_drive_folder_the_configuration_names(
    filled: Warehouse, tmp_path: Path, sandbox: Any
) -> None:
    drive_id, root_id = drive_root(sandbox)
    document = sandbox.config(warehouse=f"duckdb:///{tmp_path / 'pmsync.duckdb'}")
    document["writeback"] = {"pmo-files": {"drive_folder": f"drive:{drive_id}/items/{root_id}"}}
    (tmp_path / "pmsync.yaml").write_text(yaml.safe_dump(document))
    config = load_config(tmp_path / "pmsync.yaml")
    filled.close()
    files = reports.write_reports(config, out_dir=tmp_path / "out")
    assert [path.name for path in files] == list(reports.FILE_NAMES.values())
    for path in files:
        content = graph_get(sandbox, f"/drives/{drive_id}/items/{root_id}:/{path.name}:/content").content
        assert content == path.read_bytes()
    reports.write_reports(config, out_dir=tmp_path / "out")  # a second upload replaces the files, never adds
    children = graph_get(sandbox, f"/drives/{drive_id}/items/{root_id}/children").json()["value"]
    names = [child["name"] for child in children]
    assert all(names.count(path.name) == 1 for path in files)


def test_report_command_writes_the_file_and_says_where(filled: Warehouse, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pmsync.cli import app

    filled.close()
    config = config_with(tmp_path, f"duckdb:///{tmp_path / 'pmsync.duckdb'}")
    out = tmp_path / "out" / "dashboard.html"
    result = CliRunner().invoke(
        app, ["report", "--format", "html", "--out", str(out), "--config", str(tmp_path / "pmsync.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert f"Wrote {out}" in result.output and out.is_file()
    assert config.writeback_for("pmo-files").drive_folder is None


# -- a real sync of the sandbox -----------------------------------------------------------------------------------


def test_real_sandbox_sync_then_schedule_then_every_report(
    sandbox: Any, tmp_path: Path, mpxj_reader: Any
) -> None:
    from pmsync.run import run_sync
    from schedule.compute import compute_and_store

    config = load_config(
        sandbox.write_config(tmp_path / "pmsync.yaml", warehouse=f"duckdb:///{tmp_path / 'pmsync.duckdb'}")
    )
    outcome = run_sync(config)
    synced = [result.connection for result in outcome.results] if outcome.results else []
    assert synced, f"no connection synced: {outcome.failures}"
    with open_warehouse(config.warehouse_url) as warehouse:
        compute_and_store(warehouse, config, sandbox.as_of)
        live = warehouse.read("tasks", "deleted_at IS NULL", columns=("task_uid",))["task_uid"]
        projects = reports.load_report_data(warehouse).projects
    files = {path.suffix: path for path in reports.write_reports(config, out_dir=tmp_path / "out")}
    page = files[".html"].read_text(encoding="utf-8")
    assert page.count('class="bar forecast"') > 0
    assert all(str(name) in page or len(str(name)) > 40 for name in projects["name"].head(20).map(_html_text))
    book = openpyxl.load_workbook(files[".xlsx"], read_only=True)
    assert len(book.sheetnames) == len(projects) + 1
    task_rows = sum(sum(1 for _ in book[name].iter_rows(min_row=2)) for name in book.sheetnames[1:])
    assert task_rows == len(live)
    assert set(read_mspdi(mpxj_reader, files[".xml"])["tasks"]) == set(live)


def _html_text(name: str) -> str:
    import html

    return html.escape(name, quote=True)


def test_projects_frame_has_one_row_per_project_even_without_health(filled: Warehouse) -> None:
    filled.delete("project_health", "project_uid = %s", ["ops-trello:b1"])
    projects = reports.load_report_data(filled).projects
    assert list(projects["project_uid"])[-1] == "ops-trello:b1"
    assert pd.isna(projects["health"].iloc[-1]) and projects["task_count"].iloc[-1] == 2
