"""The fewest requests each tool's API needs to hand over the sandbox's data, and the time its limits allow.

Computed from the sandbox's own data: the benchmark regenerates the same portfolio (same seed, size and as-of
date) in its own process and asks the emulators' state objects what they would serve, so the minimum follows the
data, not pmsync's behaviour. A "page" is one request a client cannot avoid:

- Jira: search pages of 100 issues with fields, project names (50 per `project/search` page), changelog pages for
  issues whose history exceeds the 20 entries a search expands, and one `remotelink` read per issue: Jira has no
  bulk read for remote links, so those are counted separately as well as in the total.
- Asana: project names (100 per page), listing pages of 100 per project, one subtasks listing per task that has
  subtasks, and one stories read per task (Asana has no bulk history read: due-date history is per task).
- Trello: one board read (lists, members and custom fields nested) per board, card pages of 1000 (archived cards
  included), and action pages of 1000 of the history-bearing action types.
- Planner: one plan read and one buckets read per plan, task pages of 400, one `/users/{id}` per distinct assignee.
- MS Project files: three per file (metadata, `/content`, the download it redirects to).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from sandbox.generator import ASANA, JIRA, MSPROJECT, PLANNER, TRELLO, Portfolio, generate

JIRA_SEARCH_PAGE = 100
JIRA_PROJECT_PAGE = 50
JIRA_EXPANDED_HISTORIES = 20
JIRA_CHANGELOG_PAGE = 100
ASANA_PAGE = 100
TRELLO_PAGE = 1000
PLANNER_PAGE = 400
MSPROJECT_REQUESTS_PER_FILE = 3
TRELLO_HISTORY_ACTIONS = frozenset({"createCard", "updateCard", "copyCard", "moveCardToBoard",
                                    "convertToCardFromCheckItem"})


@dataclass
class ToolMinimum:
    """The unavoidable requests of one tool's full pull, with the part no bulk API can avoid named apart."""

    tool: str
    tasks: int
    pages: int
    per_task_reads: int = 0  # included in `pages`: Jira remote links, Asana stories
    parts: dict[str, int] = field(default_factory=dict)


def minimum_pages(size: int, seed: int, as_of: date) -> dict[str, ToolMinimum]:
    """Per connection name (as the sandbox's configuration names them), the minimum requests of a full pull."""
    portfolio = generate(seed, size, as_of)
    return {
        "eng-jira": _jira(portfolio),
        "mkt-asana": _asana(portfolio),
        "ops-trello": _trello(portfolio),
        "pmo-planner": _planner(portfolio),
        "pmo-files": _msproject(portfolio),
    }


def _pages(count: int, page: int) -> int:
    return math.ceil(count / page)


def _jira(p: Portfolio) -> ToolMinimum:
    from sandbox.jira import JiraApi

    api = JiraApi(p)
    issues = p.task_indexes(JIRA)
    changelog = sum(_pages(n, JIRA_CHANGELOG_PAGE) for n in (len(api.histories(int(i))) for i in issues)
                    if n > JIRA_EXPANDED_HISTORIES)
    parts = {"search pages": _pages(len(issues), JIRA_SEARCH_PAGE),
             "project pages": _pages(len(p.projects_of(JIRA)), JIRA_PROJECT_PAGE),
             "changelog pages": changelog, "remote-link reads": len(issues)}
    return ToolMinimum("jira", len(issues), sum(parts.values()), len(issues), parts)


def _asana(p: Portfolio) -> ToolMinimum:
    from sandbox.asana import AsanaState, stories_of

    state = AsanaState(p)
    projects = p.projects_of(ASANA)
    listing = sum(_pages(len(state.project_tasks(pr.index)), ASANA_PAGE) for pr in projects)
    every = p.task_indexes(ASANA)
    subtask_pages = 0
    for i in every:
        children = len(state.children(int(i)))
        if children:
            subtask_pages += _pages(children, ASANA_PAGE)
    stories = sum(max(1, _pages(len(stories_of(state, int(i))), ASANA_PAGE)) for i in every)
    parts = {"project pages": _pages(len(projects), ASANA_PAGE), "listing pages": listing,
             "subtask listings": subtask_pages, "stories reads": stories}
    return ToolMinimum("asana", len(every), sum(parts.values()), stories, parts)


def _trello(p: Portfolio) -> ToolMinimum:
    from sandbox.trello import TrelloWorld

    world = TrelloWorld(p)
    boards = p.projects_of(TRELLO)
    card_pages = action_pages = cards = 0
    for pr in boards:
        tasks = world.board_tasks(pr.index, include_deleted=True)
        live = [int(i) for i in tasks if not p.tasks.deleted[int(i)]]
        cards += len(live)
        card_pages += max(1, _pages(len(live), TRELLO_PAGE))
        actions = sum(1 for i in tasks for ref in world.task_action_refs(int(i)) if ref.type in TRELLO_HISTORY_ACTIONS)
        action_pages += max(1, _pages(actions, TRELLO_PAGE))
    parts = {"board reads": len(boards), "card pages": card_pages, "action pages": action_pages}
    return ToolMinimum("trello", cards, sum(parts.values()), 0, parts)


def _planner(p: Portfolio) -> ToolMinimum:
    plans = p.projects_of(PLANNER)
    tasks = p.task_indexes(PLANNER)
    task_pages = sum(max(1, _pages(len(p.task_indexes(PLANNER, pr.index)), PLANNER_PAGE)) for pr in plans)
    assignees = p.tasks.assignee[tasks]
    users = int(np.unique(assignees[assignees >= 0]).size)
    parts = {"plan reads": len(plans), "bucket reads": len(plans), "task pages": task_pages, "user reads": users}
    return ToolMinimum("planner", len(tasks), sum(parts.values()), 0, parts)


def _msproject(p: Portfolio) -> ToolMinimum:
    files = len(p.projects_of(MSPROJECT))
    parts = {"file requests": MSPROJECT_REQUESTS_PER_FILE * files}
    return ToolMinimum("msproject", len(p.task_indexes(MSPROJECT)), parts["file requests"], 0, parts)
