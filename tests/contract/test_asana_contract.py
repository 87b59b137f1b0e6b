"""Every exchange the Asana SDK has with the emulator conforms to Asana's own OpenAPI description."""

from __future__ import annotations

import asana
import httpx
import pytest
from asana.rest import ApiException
from urllib3.util.retry import Retry

from sandbox import ids
from sandbox.asana import ESTIMATE_FIELD_GID
from sandbox.core import CREDENTIALS
from sandbox.generator import ASANA, SUBTASK
from sandbox.server import Sandbox

from .specs import Exchange, assert_conforms, require_specs


@pytest.fixture
def box(sandbox: Sandbox) -> Sandbox:
    """The per-test sandbox, recording what the Asana emulator exchanges."""
    require_specs()
    sandbox.emulators["asana"].settings.record = True
    return sandbox



def drive_every_operation(box: Sandbox) -> None:
    """Call each endpoint the emulator serves, as a connector and a scenario script would."""
    configuration = asana.Configuration()
    configuration.host = box.api_url("asana")
    configuration.access_token = CREDENTIALS["asana"]["token"]
    configuration.retry_strategy = Retry(total=0, raise_on_status=False)
    client = asana.ApiClient(configuration)
    tasks, stories = asana.TasksApi(client), asana.StoriesApi(client)
    p = box.portfolio
    project = p.projects_of(ASANA)[0].index
    project_gid = ids.asana_project_gid(project)
    idx = p.task_indexes(ASANA, project)
    task_gid = ids.asana_gid(int(idx[(p.tasks.kind[idx] != SUBTASK) & (p.tasks.reschedules[idx] > 0)][0]))
    events = asana.EventsApi(client)
    with pytest.raises(ApiException) as first_call:
        events.get_events(project_gid, {}, full_payload=True)
    sync = httpx.Response(412, content=first_call.value.body).json()["sync"]
    asana.UsersApi(client).get_user("me", {})
    asana.UsersApi(client).get_user(ids.asana_user_gid(2), {})
    list(asana.WorkspacesApi(client).get_workspaces({}))
    list(asana.ProjectsApi(client).get_projects({"workspace": ids.ASANA_WORKSPACE_GID}))
    list(asana.ProjectsApi(client).get_projects_for_workspace(ids.ASANA_WORKSPACE_GID, {}))
    asana.ProjectsApi(client).get_project(project_gid, {})
    list(asana.SectionsApi(client).get_sections_for_project(project_gid, {}))
    list(asana.CustomFieldSettingsApi(client).get_custom_field_settings_for_project(project_gid, {}))
    list(asana.CustomFieldsApi(client).get_custom_fields_for_workspace(ids.ASANA_WORKSPACE_GID, {}))
    field = asana.CustomFieldsApi(client).create_custom_field(
        {
            "data": {
                "workspace": ids.ASANA_WORKSPACE_GID,
                "name": "Stage",
                "resource_subtype": "enum",
                "enum_options": [{"name": "Build"}],
            }
        },
        {},
    )
    asana.CustomFieldsApi(client).get_custom_field(field["gid"], {})
    option = asana.CustomFieldsApi(client).create_enum_option_for_custom_field(
        field["gid"], {"body": {"data": {"name": "Ship"}}}
    )
    asana.ProjectsApi(client).add_custom_field_setting_for_project(
        {"data": {"custom_field": field["gid"]}}, project_gid, {}
    )
    fields = "name,assignee.email,memberships.section.name,custom_fields.display_value,due_on,start_on,parent"
    list(
        tasks.get_tasks(
            {
                "project": project_gid,
                "modified_since": "2026-09-01T00:00:00Z",
                "limit": 50,
                "opt_fields": fields,
            }
        )
    )
    list(tasks.get_tasks_for_project(project_gid, {"completed_since": "now", "limit": 100}))
    tasks.get_task(task_gid, {})
    tasks.update_task(
        {
            "data": {
                "due_on": "2027-02-01",
                "custom_fields": {ESTIMATE_FIELD_GID: "3", field["gid"]: option["gid"]},
            }
        },
        task_gid,
        {},
    )
    created = tasks.create_task(
        {"data": {"name": "Contract check", "projects": [project_gid], "due_on": "2027-01-01"}}, {}
    )
    tasks.create_subtask_for_task({"data": {"name": "Sub"}}, created["gid"], {})
    list(tasks.get_subtasks_for_task(created["gid"], {}))
    tasks.add_dependencies_for_task({"data": {"dependencies": [task_gid]}}, created["gid"])
    list(tasks.get_dependencies_for_task(created["gid"], {}))
    list(tasks.get_dependents_for_task(task_gid, {}))
    tasks.remove_dependencies_for_task({"data": {"dependencies": [task_gid]}}, created["gid"])
    list(stories.get_stories_for_task(task_gid, {"limit": 2}))
    list(
        stories.get_stories_for_task(
            task_gid, {"opt_fields": "old_dates,new_dates,text,resource_subtype,created_by"}
        )
    )
    stories.create_story_for_task({"data": {"text": "Checked"}}, task_gid, {})
    status = asana.StatusUpdatesApi(client)
    status.create_status_for_object(
        {"data": {"parent": project_gid, "status_type": "on_track", "text": "Fine"}}, {}
    )
    list(status.get_statuses_for_object(project_gid, {}))
    tasks.delete_task(created["gid"])
    with pytest.raises(ApiException):
        tasks.get_task(created["gid"], {})
    feed = events.get_events(project_gid, {"sync": sync}, full_payload=True)
    assert {e["action"] for e in feed["data"]} == {"changed", "deleted"}


def test_every_sdk_exchange_conforms_to_asanas_spec(box: Sandbox) -> None:
    drive_every_operation(box)
    recorded = [Exchange.from_recorded(r) for r in box.emulators["asana"].recorded]
    assert len(recorded) >= 30
    assert_conforms("asana", recorded)


def test_error_replies_conform_to_asanas_spec(box: Sandbox) -> None:
    with httpx.Client(base_url=box.api_url("asana"), headers={"Authorization": "Bearer nope"}) as client:
        client.get("/users/me")
    headers = {"Authorization": f"Bearer {CREDENTIALS['asana']['token']}"}
    with httpx.Client(base_url=box.api_url("asana"), headers=headers) as client:
        project = box.portfolio.projects_of(ASANA)[0].index
        client.get("/tasks", params={"project": ids.asana_project_gid(project), "limit": 500})
        client.get("/tasks/1208000000999999")
        client.post("/tasks", json={"data": {"name": "no home"}})
        # The emulator records an exchange after sending it: one more request makes sure the POST's is recorded.
        client.get("/users/me")
    recorded = [Exchange.from_recorded(r) for r in box.emulators["asana"].recorded if r.status != 200]
    assert [r.status for r in recorded] == [401, 400, 404, 400]
    assert_conforms("asana", recorded)
