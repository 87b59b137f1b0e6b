"""The portfolio generator: deterministic, realistic, and small enough in memory for a million tasks."""
from __future__ import annotations

from collections import Counter
from datetime import date

import numpy as np
import pytest

from sandbox import ids
from sandbox.generator import (
    ASANA,
    DONE,
    EPIC,
    JIRA,
    LINK_ATTACHMENT,
    LINK_CONFIG,
    LINK_NATIVE,
    LINK_REMOTE,
    MILESTONE,
    MSPROJECT,
    NO_DAY,
    PLANNER,
    SUBTASK,
    TOOLS,
    TRELLO,
    generate,
    resolve_size,
)

AS_OF = date(2026, 11, 22)


def test_same_seed_size_and_date_give_the_same_portfolio_hash():
    assert generate(7, "small", AS_OF).fingerprint() == generate(7, "small", AS_OF).fingerprint()


@pytest.mark.parametrize("other", [(8, "small", AS_OF), (7, "medium", AS_OF), (7, "small", date(2026, 11, 23))])
def test_a_different_seed_size_or_date_gives_a_different_portfolio(other):
    assert generate(*other).fingerprint() != generate(7, "small", AS_OF).fingerprint()


def test_named_sizes_hold_about_the_promised_task_counts():
    assert resolve_size("small") == 300 and resolve_size("medium") == 5000 and resolve_size("large") == 200_000
    assert generate(7, "small", AS_OF).tasks.size == 300
    with pytest.raises(ValueError, match="1,000,000"):
        resolve_size(1_000_001)


def test_every_tool_has_several_projects_and_tasks():
    p = generate(7, "medium", AS_OF)
    for tool in range(len(TOOLS)):
        assert len(p.projects_of(tool)) >= (3 if tool == MSPROJECT else 2), TOOLS[tool]
        assert len(p.task_indexes(tool)) > 0


def test_every_project_key_is_unique_at_the_largest_size_a_bench_uses():
    # 100,000 tasks hold about a hundred Jira projects: themes repeat with a letter suffix, and "Data" and
    # "Datacenter" once both made DAT, which hid one project's issues behind the other's key.
    keys = [pr.key for pr in generate(7, 100_000, AS_OF).projects_of(JIRA)]
    assert len(keys) > 90 and len(set(keys)) == len(keys)


def test_hierarchy_has_epics_subtasks_and_milestones_with_parents_in_the_same_project():
    p = generate(7, "medium", AS_OF)
    t = p.tasks
    kinds = Counter(t.view("kind").tolist())
    assert kinds[EPIC] and kinds[SUBTASK] and kinds[MILESTONE]
    children = np.flatnonzero(t.view("parent") >= 0)
    assert (t.project[t.parent[children]] == t.project[children]).all()
    assert (t.kind[t.parent[children]] != SUBTASK).all()


def test_status_mix_includes_done_in_progress_not_started_and_overdue():
    p = generate(7, "medium", AS_OF)
    t = p.tasks
    as_of_day = (AS_OF - date(1970, 1, 1)).days
    status = t.view("status")
    due = t.view("due")
    overdue = (status != DONE) & (status != 3) & (due != NO_DAY) & (due < as_of_day)
    assert Counter(status.tolist()).keys() >= {0, 1, 2}
    assert overdue.sum() > 0
    assert ((due == NO_DAY).sum()) > 0, "some tasks have no due date"


def test_due_date_history_ends_at_the_current_due_date_and_starts_at_the_original():
    p = generate(7, "medium", AS_OF)
    moved = np.flatnonzero(p.tasks.view("reschedules") >= 2)
    assert len(moved) > 10
    for i in moved[:50]:
        changes = p.due_changes(int(i))
        assert changes[-1].new_day == p.tasks.due[i]
        assert p.original_due(int(i)) == changes[0].old_day
        assert all(a.new_day == b.old_day for a, b in zip(changes, changes[1:]))
        assert all(p.tasks.created[i] <= c.at <= p.tasks.updated[i] for c in changes)


def test_set_due_records_a_history_entry_and_bumps_updated():
    p = generate(7, "small", AS_OF)
    i = int(p.task_indexes(JIRA)[5])
    before = len(p.due_changes(i))
    p.set_due(i, int(p.tasks.due[i]) + 7 if p.tasks.due[i] != NO_DAY else 20_000)
    assert len(p.due_changes(i)) == before + 1
    assert p.tasks.updated[i] >= p.clock_anchor


def test_people_share_emails_across_tools_under_different_display_names():
    p = generate(7, "small", AS_OF)
    person = p.people[3]
    names = {person.display_name(tool) for tool in range(len(TOOLS))}
    assert len(names) >= 3
    assert person.email_in(ASANA).lower() == person.email_in(JIRA)


def test_cross_tool_links_connect_different_tools_and_never_close_a_cycle():
    p = generate(7, "medium", AS_OF)
    for mechanism in (LINK_REMOTE, LINK_ATTACHMENT, LINK_CONFIG):
        k = p.links_of(mechanism)
        assert len(k) >= 4
        assert (p.tasks.tool[p.link_pred[k]] != p.tasks.tool[p.link_succ[k]]).all()
    assert (p.tasks.tool[p.link_succ[p.links_of(LINK_REMOTE)]] == JIRA).all()
    assert (p.tasks.tool[p.link_succ[p.links_of(LINK_ATTACHMENT)]] == TRELLO).all()
    native = p.links_of(LINK_NATIVE)
    assert (p.tasks.project[p.link_pred[native]] == p.tasks.project[p.link_succ[native]]).all()
    assert _is_acyclic(p.link_pred, p.link_succ, p.tasks.size)


def _is_acyclic(pred: np.ndarray, succ: np.ndarray, n: int) -> bool:
    indegree = np.bincount(succ, minlength=n)
    out: dict[int, list[int]] = {}
    for a, b in zip(pred.tolist(), succ.tolist()):
        out.setdefault(a, []).append(b)
    ready = [v for v in range(n) if indegree[v] == 0]
    seen = 0
    while ready:
        v = ready.pop()
        seen += 1
        for w in out.get(v, ()):
            indegree[w] -= 1
            if indegree[w] == 0:
                ready.append(w)
    return seen == n


def test_native_ids_look_like_each_vendors_and_invert_without_a_table():
    p = generate(7, "small", AS_OF)
    jira_i, asana_i, trello_i, planner_i = (int(p.task_indexes(t)[3]) for t in (JIRA, ASANA, TRELLO, PLANNER))
    assert ids.jira_issue_index(ids.jira_issue_id(jira_i)) == jira_i
    assert ids.jira_key(p, jira_i).split("-")[1].isdigit()
    gid = ids.asana_gid(asana_i)
    assert gid.isdigit() and len(gid) == 16 and ids.asana_index(gid) == asana_i
    card = ids.trello_id(p, trello_i)
    assert len(card) == 24 and int(card, 16) >= 0 and ids.trello_index(card) == trello_i
    assert int(card[:8], 16) == int(p.tasks.created[trello_i])
    task = ids.graph_id(p, "task", planner_i)
    assert len(task) == 28 and ids.graph_index(task) == planner_i
    item = ids.graph_item_id(p, 9)
    assert len(item) == 34 and ids.graph_item_index(item) == 9
    assert p.task_by_seq(int(p.tasks.project[jira_i]), int(p.tasks.seq[jira_i])) == jira_i


def test_tasks_added_through_an_api_are_numbered_after_the_project_and_found_by_number():
    p = generate(7, "small", AS_OF)
    project = p.projects_of(JIRA)[0]
    i = p.add_task(JIRA, project.index, "New work")
    assert p.title(i) == "New work"
    assert p.task_by_seq(project.index, int(p.tasks.seq[i])) == i
    assert int(p.tasks.seq[i]) == project.task_count
