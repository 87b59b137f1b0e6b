"""The benchmark's own arithmetic: minimum pages from the sandbox's data, lower bounds, targets, the doc."""
from __future__ import annotations

import math
from datetime import date

import pytest

from bench import run
from bench.minimum import minimum_pages
from sandbox.generator import JIRA, PLANNER, generate

AS_OF = date(2025, 6, 2)


@pytest.fixture(scope="module")
def minimum():
    return minimum_pages(300, 7, AS_OF)


def test_jira_minimum_counts_one_remote_link_read_per_issue_apart(minimum):
    issues = generate(7, 300, AS_OF).task_indexes(JIRA).size
    jira = minimum["eng-jira"]
    assert jira.per_task_reads == issues == jira.parts["remote-link reads"]
    assert jira.parts["search pages"] == math.ceil(issues / 100)
    assert jira.pages == sum(jira.parts.values())


def test_planner_minimum_reads_each_distinct_assignee_once(minimum):
    p = generate(7, 300, AS_OF)
    assignees = {int(a) for a in p.tasks.assignee[p.task_indexes(PLANNER)] if a >= 0}
    assert minimum["pmo-planner"].parts["user reads"] == len(assignees)


def test_msproject_minimum_is_three_requests_per_file(minimum):
    files = minimum["pmo-files"]
    assert files.pages == 3 * len(generate(7, 300, AS_OF).projects_of(4))


def test_lower_bound_is_latency_over_concurrency_when_the_budget_is_ample():
    assert run.lower_bound_s(400, 4, {"limit": 1000, "window_s": 1.0}) == pytest.approx(400 * 0.05 / 4)


def test_lower_bound_counts_the_fixed_windows_a_tight_budget_needs():
    # Asana: 3,000 requests at 1,500 a minute need a second window.
    assert run.lower_bound_s(3000, 4, {"limit": 1500, "window_s": 60.0}) == pytest.approx(60.05)


def test_result_meets_a_ceiling_a_floor_and_an_exact_target():
    assert run.result("x", 1.04, "x", 1.05)["met"] is True
    assert run.result("x", 1.06, "x", 1.05)["met"] is False
    assert run.result("x", 90_000.0, "tasks/s", 100_000, higher_is_better=True)["met"] is False
    assert run.result("x", 3, "writes", 0, equal=True)["met"] is False
    assert run.result("x", 3, "requests", None)["met"] is None


def test_write_doc_keeps_the_hand_written_analysis(tmp_path, monkeypatch):
    doc = tmp_path / "performance.md"
    doc.write_text(f"old\n{run.ANALYSIS_START}\nJira remote links dominate.\n{run.ANALYSIS_END}\nold tail\n")
    monkeypatch.setattr(run, "DOC", doc)
    rows = [run.result("10000 tasks: schedule", 12.0, "s", 10.0)]
    run.write_doc(rows, (10_000,), 60.0, "make bench")
    text = doc.read_text()
    assert "Jira remote links dominate." in text
    assert "10000 tasks: schedule: 12.0 s against a target of 10.0" in text
    assert "old tail" not in text


def test_the_push_after_a_change_is_held_to_one_request_per_value_the_tools_can_take():
    push = {"seconds": 1.0, "emulator_writes": 0, "failed": 0, "written": 0, "skipped": 0}
    figures = {"full": {"schedule": {}, "push_first": push, "push_second": push},
               "incremental": {"push_planned": 12, "push_after_change": {**push, "emulator_writes": 9,
                                                                         "written": 9, "skipped": 3}}}
    rows = {row["name"]: row for row in run.push_results("10000 tasks", figures)}
    requests = rows["10000 tasks: push after 1% changed: write requests (9 values changed)"]
    assert requests["target"] == 9 and requests["met"] is True
    figures["incremental"]["push_after_change"]["emulator_writes"] = 12
    rows = {row["name"]: row for row in run.push_results("10000 tasks", figures)}
    assert rows["10000 tasks: push after 1% changed: write requests (9 values changed)"]["met"] is False
