"""The Asana emulator driven over HTTP by the `asana` SDK and raw httpx, checked against the portfolio."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asana
import httpx
import numpy as np
import orjson
import pytest
from asana.rest import ApiException
from urllib3.util.retry import Retry

from sandbox import ids
from sandbox.asana import (
    ESTIMATE_FIELD_GID,
    PRIORITY_FIELD_GID,
    RATE_LIMIT_MESSAGE,
    SYNC_MESSAGE,
    default_rate_limit,
    iso,
)
from sandbox.core import CREDENTIALS, RateLimit
from sandbox.generator import (
    ASANA,
    CANCELLED,
    NO_DAY,
    SUBTASK,
    Portfolio,
    day_number,
    day_to_date,
)
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox

TOKEN = CREDENTIALS["asana"]["token"]


@pytest.fixture
def box(sandbox: Sandbox) -> Sandbox:
    """The per-test sandbox (rate limits off), which each test may change freely."""
    return sandbox


def sdk(box: Sandbox) -> asana.ApiClient:
    """The SDK as a connector sets it up: host pointed at the emulator, no silent retries."""
    configuration = asana.Configuration()
    configuration.host = box.api_url("asana")
    configuration.access_token = TOKEN
    configuration.retry_strategy = Retry(total=0, raise_on_status=False)
    return asana.ApiClient(configuration)


def raw(box: Sandbox, token: str = TOKEN) -> httpx.Client:
    return httpx.Client(
        base_url=box.api_url("asana"), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def first_project(box: Sandbox) -> int:
    return box.portfolio.projects_of(ASANA)[0].index


def listed_tasks(p: Portfolio, project: int) -> np.ndarray:
    """What Asana lists for a project: live tasks that are not project-less subtasks."""
    idx = p.task_indexes(ASANA, project)
    return idx[p.tasks.kind[idx] != SUBTASK]


def rescheduled_task(p: Portfolio, project: int, at_least: int = 2) -> int:
    idx = listed_tasks(p, project)
    return int(idx[(p.tasks.reschedules[idx] >= at_least) & (p.tasks.due[idx] != NO_DAY)][0])


def test_tasks_modified_since_pages_through_exactly_the_portfolios_changed_tasks(box: Sandbox) -> None:
    p = box.portfolio
    project = first_project(box)
    idx = listed_tasks(p, project)
    since = float(np.median(p.tasks.updated[idx]))
    opts = {
        "project": ids.asana_project_gid(project),
        "modified_since": iso(since),
        "limit": 7,
        "opt_fields": "name,modified_at,due_on",
    }
    tasks = list(asana.TasksApi(sdk(box)).get_tasks(opts))
    expected = idx[p.tasks.updated[idx] >= since]
    assert [t["gid"] for t in tasks] == [ids.asana_gid(int(i)) for i in expected]
    assert all(t["modified_at"] >= iso(since) for t in tasks)
    pages = box.emulators["asana"].stats.by_route["GET /api/1.0/tasks"]
    assert pages == -(-len(expected) // 7)
    by_gid = {t["gid"]: t for t in tasks}
    i = int(expected[0])
    assert by_gid[ids.asana_gid(i)]["name"] == p.title(i)
    assert by_gid[ids.asana_gid(i)]["due_on"] == (
        None if p.tasks.due[i] == NO_DAY else str(day_to_date(p.tasks.due[i]))
    )


def test_project_listings_leave_out_subtasks_which_only_subtasks_endpoint_shows(box: Sandbox) -> None:
    p = box.portfolio
    project = first_project(box)
    client = sdk(box)
    listed = {
        t["gid"] for t in asana.TasksApi(client).get_tasks_for_project(ids.asana_project_gid(project), {})
    }
    all_tasks = p.task_indexes(ASANA, project)
    subtask = int(all_tasks[p.tasks.kind[all_tasks] == SUBTASK][0])
    parent = int(p.tasks.parent[subtask])
    assert listed == {ids.asana_gid(int(i)) for i in listed_tasks(p, project)}
    assert ids.asana_gid(subtask) not in listed
    children = [t["gid"] for t in asana.TasksApi(client).get_subtasks_for_task(ids.asana_gid(parent), {})]
    assert ids.asana_gid(subtask) in children
    record = asana.TasksApi(client).get_task(ids.asana_gid(subtask), {})
    assert record["projects"] == [] and record["memberships"] == []
    assert record["parent"]["gid"] == ids.asana_gid(parent)


def test_task_record_carries_people_sections_and_custom_fields_as_asked(box: Sandbox) -> None:
    p = box.portfolio
    project = first_project(box)
    idx = listed_tasks(p, project)
    i = int(idx[(p.tasks.assignee[idx] >= 0) & ~np.isnan(p.tasks.estimate[idx])][0])
    fields = (
        "assignee.email,assignee.name,memberships.section.name,custom_fields.display_value,custom_fields.name"
    )
    record = asana.TasksApi(sdk(box)).get_task(ids.asana_gid(i), {"opt_fields": fields})
    person = p.people[int(p.tasks.assignee[i])]
    assert record["assignee"] == {
        "gid": ids.asana_user_gid(person.index),
        "email": person.email_in(ASANA),
        "name": person.display_name(ASANA),
    }
    section = record["memberships"][0]["section"]["name"]
    assert section == {0: "Backlog", 1: "In progress", 2: "Done", 3: "Cancelled"}[int(p.tasks.status[i])]
    by_name = {f["name"]: f for f in record["custom_fields"]}
    assert float(by_name["Estimate (h)"]["display_value"]) == pytest.approx(float(p.tasks.estimate[i]))
    assert set(by_name) == {"Estimate (h)", "Priority"}
    assert "notes" not in record


def test_listing_is_compact_unless_opt_fields_and_next_page_only_with_limit(box: Sandbox) -> None:
    project = ids.asana_project_gid(first_project(box))
    with raw(box) as client:
        unpaged = client.get("/tasks", params={"project": project}).json()
        last = client.get(f"/projects/{project}/sections", params={"limit": 10}).json()
        too_big = client.get("/tasks", params={"project": project, "limit": 101})
    assert "next_page" not in unpaged
    assert set(unpaged["data"][0]) == {"gid", "name", "resource_type", "resource_subtype"}
    assert last["next_page"] is None and [s["name"] for s in last["data"]] == [
        "Backlog",
        "In progress",
        "Done",
        "Cancelled",
    ]
    assert too_big.status_code == 400 and too_big.json()["errors"][0]["message"].startswith("limit")


def test_offset_from_another_listing_is_rejected(box: Sandbox) -> None:
    project = ids.asana_project_gid(first_project(box))
    with raw(box) as client:
        first = client.get("/tasks", params={"project": project, "limit": 2}).json()
        reused = client.get(
            f"/projects/{project}/tasks", params={"limit": 2, "offset": first["next_page"]["offset"]}
        )
        forged = client.get("/tasks", params={"project": project, "limit": 2, "offset": "not-a-token"})
    assert reused.status_code == 400 and forged.status_code == 400
    assert "offset" in forged.json()["errors"][0]["message"]


def test_cancelled_task_reads_as_completed_with_cancelled_tag_and_section(box: Sandbox) -> None:
    p = box.portfolio
    i = int(listed_tasks(p, first_project(box))[7])
    box.call(p.set_status, i, CANCELLED)
    record = asana.TasksApi(sdk(box)).get_task(ids.asana_gid(i), {})
    assert record["completed"] is True and record["completed_at"] == iso(p.tasks.updated[i])
    assert [t["name"] for t in record["tags"]] == ["Cancelled"]
    assert record["memberships"][0]["section"]["name"] == "Cancelled"


def test_create_task_answers_201_with_location_and_lands_in_the_portfolio(box: Sandbox) -> None:
    p = box.portfolio
    project = first_project(box)
    person = p.people[3]
    body = {
        "data": {
            "name": "Write launch FAQ",
            "projects": [ids.asana_project_gid(project)],
            "due_on": "2026-12-04",
            "start_on": "2026-12-01",
            "assignee": person.email_in(ASANA),
            "custom_fields": {ESTIMATE_FIELD_GID: 6},
        }
    }
    with raw(box) as client:
        created = client.post("/tasks", json=body)
        gid = created.json()["data"]["gid"]
        sub = client.post(f"/tasks/{gid}/subtasks", json={"data": {"name": "Draft questions"}})
    assert created.status_code == 201
    assert created.headers["location"].endswith(f"/api/1.0/tasks/{gid}")
    i = ids.asana_index(gid)
    assert p.title(i) == "Write launch FAQ" and p.tasks.due[i] == day_number(datetime(2026, 12, 4).date())
    assert p.tasks.assignee[i] == 3 and p.tasks.estimate[i] == 6
    assert created.json()["data"]["custom_fields"][0]["number_value"] == 6
    assert sub.status_code == 201 and sub.json()["data"]["parent"]["gid"] == gid
    assert p.tasks.kind[ids.asana_index(sub.json()["data"]["gid"])] == SUBTASK


def test_deleted_task_answers_404_unknown_object(box: Sandbox) -> None:
    p = box.portfolio
    i = int(listed_tasks(p, first_project(box))[5])
    tasks = asana.TasksApi(sdk(box))
    assert tasks.delete_task(ids.asana_gid(i)) == {}
    with pytest.raises(ApiException) as caught:
        tasks.get_task(ids.asana_gid(i), {})
    assert caught.value.status == 404
    assert (
        json.loads(caught.value.body)["errors"][0]["message"] == f"task: Unknown object: {ids.asana_gid(i)}"
    )
    assert p.tasks.deleted[i]


def test_stories_page_through_the_due_date_history(box: Sandbox) -> None:
    p = box.portfolio
    i = rescheduled_task(p, first_project(box))
    stories = list(
        asana.StoriesApi(sdk(box)).get_stories_for_task(
            ids.asana_gid(i),
            {"limit": 1, "opt_fields": "resource_subtype,text,old_dates,new_dates,created_at"},
        )
    )
    changes = p.due_changes(i)
    assert len(stories) == len(changes) >= 2
    for story, change in zip(stories, changes):
        assert story["resource_subtype"] == "due_date_changed"
        assert story["old_dates"]["due_on"] == str(day_to_date(change.old_day))
        assert story["new_dates"] == {
            "due_on": str(day_to_date(change.new_day)),
            "due_at": None,
            "start_on": None,
        }
        assert story["created_at"] == iso(change.at)
        moved_to = day_to_date(change.new_day)
        assert story["text"] == f"changed the due date to {moved_to:%B} {moved_to.day}"


def test_updating_the_due_date_records_a_story_and_moves_modified_at(box: Sandbox) -> None:
    p = box.portfolio
    i = rescheduled_task(p, first_project(box), at_least=0)
    gid = ids.asana_gid(i)
    old_due = str(day_to_date(p.tasks.due[i]))
    client = sdk(box)
    before = asana.TasksApi(client).get_task(gid, {"opt_fields": "modified_at"})["modified_at"]
    updated = asana.TasksApi(client).update_task(
        {"data": {"due_on": "2027-01-15"}}, gid, {"opt_fields": "due_on,modified_at"}
    )
    assert updated["due_on"] == "2027-01-15" and updated["modified_at"] > before
    assert p.tasks.due[i] == day_number(datetime(2027, 1, 15).date())
    stories = list(
        asana.StoriesApi(client).get_stories_for_task(
            gid, {"opt_fields": "resource_subtype,text,old_dates,new_dates"}
        )
    )
    assert stories[-1]["resource_subtype"] == "due_date_changed"
    assert stories[-1]["text"] == "changed the due date to January 15"
    assert (
        stories[-1]["old_dates"]["due_on"] == old_due and stories[-1]["new_dates"]["due_on"] == "2027-01-15"
    )


def test_comment_is_a_story_answered_201_with_location(box: Sandbox) -> None:
    p = box.portfolio
    i = int(listed_tasks(p, first_project(box))[3])
    with raw(box) as client:
        created = client.post(
            f"/tasks/{ids.asana_gid(i)}/stories", json={"data": {"text": "Vendor confirmed the date"}}
        )
    assert created.status_code == 201 and "/api/1.0/stories/" in created.headers["location"]
    story = created.json()["data"]
    assert (story["type"], story["resource_subtype"], story["text"]) == (
        "comment",
        "comment_added",
        "Vendor confirmed the date",
    )
    listed = list(asana.StoriesApi(sdk(box)).get_stories_for_task(ids.asana_gid(i), {}))
    assert listed[-1]["gid"] == story["gid"] and set(listed[-1]) >= {
        "gid",
        "created_at",
        "created_by",
        "text",
    }


def test_events_first_412_then_sync_token_then_the_changes_made_since(box: Sandbox) -> None:
    p = box.portfolio
    project = first_project(box)
    events = asana.EventsApi(sdk(box))
    resource = ids.asana_project_gid(project)
    with pytest.raises(ApiException) as caught:
        events.get_events(resource, {}, full_payload=True)
    assert caught.value.status == 412
    first = json.loads(caught.value.body)
    assert first["errors"][0]["message"] == SYNC_MESSAGE
    quiet = events.get_events(resource, {"sync": first["sync"]}, full_payload=True)
    assert quiet["data"] == [] and quiet["has_more"] is False
    i = int(listed_tasks(p, project)[4])
    box.call(p.set_due, i, int(p.tasks.due[i] if p.tasks.due[i] != NO_DAY else day_number(TEST_AS_OF)) + 3, 0)
    changed = events.get_events(resource, {"sync": quiet["sync"]}, full_payload=True)
    assert [(e["resource"]["gid"], e["action"]) for e in changed["data"]] == [(ids.asana_gid(i), "changed")]
    assert changed["data"][0]["change"]["field"] == "due_on"
    again = events.get_events(resource, {"sync": changed["sync"]}, full_payload=True)
    assert again["data"] == []


def test_events_with_an_unknown_token_answer_412_with_a_fresh_token(box: Sandbox) -> None:
    resource = ids.asana_project_gid(first_project(box))
    with raw(box) as client:
        stale = client.get(
            "/events", params={"resource": resource, "sync": "de4774f6915eae04714ca93bb2f5ee81"}
        )
        fresh = client.get("/events", params={"resource": resource, "sync": stale.json()["sync"]})
    assert stale.status_code == 412 and fresh.status_code == 200


def test_events_report_added_and_deleted_tasks_in_order(box: Sandbox) -> None:
    project = first_project(box)
    resource = ids.asana_project_gid(project)
    with raw(box) as client:
        token = client.get("/events", params={"resource": resource}).json()["sync"]
        created = client.post("/tasks", json={"data": {"name": "New", "projects": [resource]}}).json()["data"]
        victim = ids.asana_gid(int(listed_tasks(box.portfolio, project)[2]))
        client.delete(f"/tasks/{victim}")
        feed = client.get("/events", params={"resource": resource, "sync": token}).json()
    assert [(e["resource"]["gid"], e["action"]) for e in feed["data"]] == [
        (created["gid"], "added"),
        (victim, "deleted"),
    ]
    assert feed["data"][0]["parent"]["gid"] == resource


def test_custom_fields_created_added_to_a_project_and_set_on_a_task(box: Sandbox) -> None:
    p = box.portfolio
    project = first_project(box)
    client = sdk(box)
    fields = asana.CustomFieldsApi(client)
    risk = fields.create_custom_field(
        {
            "data": {
                "workspace": ids.ASANA_WORKSPACE_GID,
                "name": "Risk",
                "resource_subtype": "enum",
                "enum_options": [{"name": "Low"}, {"name": "High"}],
            }
        },
        {},
    )
    extra = fields.create_enum_option_for_custom_field(risk["gid"], {"body": {"data": {"name": "Blocked"}}})
    asana.ProjectsApi(client).add_custom_field_setting_for_project(
        {"data": {"custom_field": risk["gid"]}}, ids.asana_project_gid(project), {}
    )
    settings = list(
        asana.CustomFieldSettingsApi(client).get_custom_field_settings_for_project(
            ids.asana_project_gid(project), {"opt_fields": "custom_field.name"}
        )
    )
    assert [s["custom_field"]["name"] for s in settings] == ["Estimate (h)", "Priority", "Risk"]
    i = int(listed_tasks(p, project)[6])
    values = {risk["gid"]: extra["gid"], ESTIMATE_FIELD_GID: 12.5, PRIORITY_FIELD_GID: None}
    task = asana.TasksApi(client).update_task(
        {"data": {"custom_fields": values}},
        ids.asana_gid(i),
        {"opt_fields": "custom_fields.display_value,custom_fields.name"},
    )
    shown = {f["name"]: f["display_value"] for f in task["custom_fields"]}
    assert shown == {"Estimate (h)": "12.5", "Priority": None, "Risk": "Blocked"}
    assert p.tasks.estimate[i] == 12.5
    listed = {f["name"] for f in fields.get_custom_fields_for_workspace(ids.ASANA_WORKSPACE_GID, {})}
    assert listed == {"Estimate (h)", "Priority", "Risk"}


def test_custom_field_value_of_the_wrong_type_is_400(box: Sandbox) -> None:
    i = int(listed_tasks(box.portfolio, first_project(box))[1])
    with raw(box) as client:
        answer = client.put(
            f"/tasks/{ids.asana_gid(i)}", json={"data": {"custom_fields": {PRIORITY_FIELD_GID: "9"}}}
        )
    assert answer.status_code == 400 and "errors" in answer.json()


def test_dependencies_follow_the_portfolio_and_client_changes(box: Sandbox) -> None:
    p = box.portfolio
    tasks = asana.TasksApi(sdk(box))
    native = p.links_of(0)
    k = int(native[p.tasks.tool[p.link_succ[native]] == ASANA][0])
    pred, succ = int(p.link_pred[k]), int(p.link_succ[k])
    assert ids.asana_gid(pred) in [t["gid"] for t in tasks.get_dependencies_for_task(ids.asana_gid(succ), {})]
    assert ids.asana_gid(succ) in [t["gid"] for t in tasks.get_dependents_for_task(ids.asana_gid(pred), {})]
    other = int(listed_tasks(p, int(p.tasks.project[succ]))[-1])
    tasks.add_dependencies_for_task({"data": {"dependencies": [ids.asana_gid(other)]}}, ids.asana_gid(succ))
    tasks.remove_dependencies_for_task({"data": {"dependencies": [ids.asana_gid(pred)]}}, ids.asana_gid(succ))
    now = [t["gid"] for t in tasks.get_dependencies_for_task(ids.asana_gid(succ), {})]
    assert ids.asana_gid(other) in now and ids.asana_gid(pred) not in now


def test_status_updates_are_posted_and_listed_by_project(box: Sandbox) -> None:
    project = ids.asana_project_gid(first_project(box))
    api = asana.StatusUpdatesApi(sdk(box))
    posted = api.create_status_for_object(
        {
            "data": {
                "parent": project,
                "status_type": "at_risk",
                "text": "Two milestones slipped",
                "title": "Week 47",
            }
        },
        {},
    )
    listed = list(api.get_statuses_for_object(project, {"opt_fields": "status_type,text,title"}))
    assert listed == [
        {"gid": posted["gid"], "status_type": "at_risk", "text": "Two milestones slipped", "title": "Week 47"}
    ]
    with raw(box) as client:
        missing = client.post("/status_updates", json={"data": {"parent": project, "text": "x"}})
    assert (
        missing.status_code == 400 and missing.json()["errors"][0]["message"] == "status_type: Missing input"
    )


def test_users_show_asana_email_and_display_name(box: Sandbox) -> None:
    p = box.portfolio
    person = p.people[3]
    users = asana.UsersApi(sdk(box))
    record = users.get_user(ids.asana_user_gid(3), {"opt_fields": "email,name"})
    assert record == {
        "gid": ids.asana_user_gid(3),
        "email": person.email_in(ASANA),
        "name": person.display_name(ASANA),
    }
    assert users.get_user("me", {})["email"] == "coordinator@acme.example"


def test_missing_or_wrong_token_is_401_not_authorized(box: Sandbox) -> None:
    with raw(box, token="wrong") as client:
        wrong = client.get("/users/me")
    with httpx.Client(base_url=box.api_url("asana")) as client:
        missing = client.get("/users/me")
    for answer in (wrong, missing):
        assert answer.status_code == 401
        assert answer.json() == {"errors": [{"message": "Not Authorized"}]}


def test_rate_limit_burst_gets_asanas_429_with_retry_after(box: Sandbox) -> None:
    assert default_rate_limit().limit == 1500 and default_rate_limit().window_s == 60
    box.emulators["asana"].settings.rate_limit = RateLimit(limit=3, window_s=60)
    with raw(box) as client:
        answers = [client.get("/users/me") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].json() == {"errors": [{"message": RATE_LIMIT_MESSAGE}]}
    with pytest.raises(ApiException) as caught:
        asana.UsersApi(sdk(box)).get_user("me", {})
    assert caught.value.status == 429


def tasks_page(client: httpx.Client, box: Sandbox) -> httpx.Response:
    project = ids.asana_project_gid(first_project(box))
    return client.get("/tasks", params={"project": project, "limit": 5, "opt_fields": "name,due_on"})


def test_injected_server_error_has_asanas_500_body(box: Sandbox) -> None:
    box.emulators["asana"].inject("status", status=500, path="/tasks")
    with raw(box) as client:
        answer = tasks_page(client, box)
        after = tasks_page(client, box)
    assert answer.status_code == 500
    assert answer.json()["errors"][0]["message"] == "Server Error" and "phrase" in answer.json()["errors"][0]
    assert after.status_code == 200


def test_injected_body_faults_appear_as_configured(box: Sandbox) -> None:
    emulator = box.emulators["asana"]
    with raw(box) as client:
        emulator.inject("malformed_json", path="/tasks")
        with pytest.raises(json.JSONDecodeError):
            json.loads(tasks_page(client, box).content)
        emulator.inject("truncated", path="/tasks")
        truncated = tasks_page(client, box)
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(truncated.content)
        emulator.inject("invalid_record", path="/tasks")
        broken = tasks_page(client, box).json()
    assert broken["data"][0]["due_on"] == "next tuesday-ish"
    assert all(t["due_on"] != "next tuesday-ish" for t in broken["data"][1:])
    assert emulator.stats.faults == 3


def test_injected_timeout_and_reset_reach_the_client(box: Sandbox) -> None:
    emulator = box.emulators["asana"]
    emulator.inject("timeout", path="/users/me", delay_s=0.05)
    emulator.inject("reset", path="/workspaces")
    with raw(box) as client:
        timed_out = client.get("/users/me")
        try:
            reset: httpx.Response | None = client.get("/workspaces")
        except httpx.TransportError:
            reset = None
    assert timed_out.status_code == 504 and "errors" in timed_out.json()
    # The framework's reset aborts the response: uvicorn answers a bare text/plain 500 and closes.
    assert reset is None or (
        reset.status_code == 500 and reset.headers["content-type"].startswith("text/plain")
    )


def test_events_token_is_bound_to_its_resource(box: Sandbox) -> None:
    projects = [ids.asana_project_gid(pr.index) for pr in box.portfolio.projects_of(ASANA)]
    with raw(box) as client:
        token = client.get("/events", params={"resource": projects[0]}).json()["sync"]
        other = client.get("/events", params={"resource": projects[1], "sync": token})
    assert other.status_code == 412 and other.json()["sync"] != token


def test_iso_timestamps_have_millis_and_z() -> None:
    moment = datetime(2019, 9, 15, 2, 6, 58, 147000, tzinfo=UTC).timestamp()
    assert iso(moment) == "2019-09-15T02:06:58.147Z"
