"""The Microsoft Graph emulator, driven through the real `msgraph-sdk` and raw httpx, checked against the portfolio."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import orjson
import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.planner_task import PlannerTask
from msgraph.generated.models.planner_task_details import PlannerTaskDetails
from msgraph_core.authentication import AzureIdentityAuthenticationProvider

from sandbox import graph, ids
from sandbox.core import CREDENTIALS, RateLimit
from sandbox.generator import DONE, MSPROJECT, NO_DAY, PLANNER, day_number, day_to_date
from sandbox.mspdi import render_project
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox

TOKEN = CREDENTIALS["graph"]["token"]


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A small sandbox serving only the Graph emulator, so these tests do not depend on the other vendors."""
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",)) as sandbox_:
        yield sandbox_


class StaticToken:
    """An azure.core TokenCredential that hands out the sandbox's literal bearer token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(TOKEN, int(time.time()) + 3600)


def run(box: Sandbox, scenario: Callable[[GraphServiceClient], Awaitable[Any]]) -> Any:
    """Run `scenario` with an SDK client pointed at the emulator, on one event loop made for it."""

    async def main() -> Any:
        auth = AzureIdentityAuthenticationProvider(StaticToken(), allowed_hosts=["127.0.0.1"])
        adapter = GraphRequestAdapter(auth)
        adapter.base_url = box.api_url("graph")
        return await scenario(GraphServiceClient(request_adapter=adapter))

    return asyncio.run(main())


def raw(box: Sandbox, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=box.api_url("graph"), headers=headers, timeout=10)


def headers(**values: str) -> RequestConfiguration:
    config = RequestConfiguration()
    for name, value in values.items():
        config.headers.add(name.replace("_", "-"), value)
    return config


def first_plan(box: Sandbox) -> tuple[int, str]:
    project = box.portfolio.projects_of(PLANNER)[0].index
    return project, ids.graph_id(box.portfolio, "plan", project)


def first_task(box: Sandbox) -> tuple[int, str]:
    project, _ = first_plan(box)
    i = int(box.portfolio.task_indexes(PLANNER, project)[0])
    return i, ids.graph_id(box.portfolio, "task", i)


def etag_of(entity: Any) -> str:
    return entity.additional_data["@odata.etag"]


# -- plans and paging -------------------------------------------------------------------------------------------------


def test_sdk_reads_plan_with_its_four_buckets(box: Sandbox) -> None:
    project, plan_id = first_plan(box)

    async def scenario(client: GraphServiceClient) -> Any:
        plan = await client.planner.plans.by_planner_plan_id(plan_id).get()
        buckets = await client.planner.plans.by_planner_plan_id(plan_id).buckets.get()
        group_plans = await client.groups.by_group_id(plan.owner).planner.plans.get()
        return plan, buckets, group_plans

    plan, buckets, group_plans = run(box, scenario)
    assert plan.title == box.portfolio.projects[project].name
    assert etag_of(plan).startswith('W/"')
    assert [b.name for b in buckets.value] == ["Backlog", "In progress", "Review", "Done"]
    assert {b.plan_id for b in buckets.value} == {plan_id}
    assert plan_id in [p.id for p in group_plans.value]


def test_plan_tasks_page_across_several_pages_by_following_next_link(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graph, "PAGE_SIZE", 7)
    project, plan_id = first_plan(box)
    expected = [
        ids.graph_id(box.portfolio, "task", int(i)) for i in box.portfolio.task_indexes(PLANNER, project)
    ]
    assert len(expected) > 14, "the plan must span at least three pages"

    async def scenario(client: GraphServiceClient) -> tuple[list[str], list[str | None]]:
        tasks = client.planner.plans.by_planner_plan_id(plan_id).tasks
        page = await tasks.get()
        seen, links = [t.id for t in page.value], [page.odata_next_link]
        while page.odata_next_link:
            page = await tasks.with_url(page.odata_next_link).get()
            seen += [t.id for t in page.value]
            links.append(page.odata_next_link)
        return seen, links

    seen, links = run(box, scenario)
    assert seen == expected
    assert len(links) == -(-len(expected) // 7)
    assert all(link.startswith(box.api_url("graph") + "/planner/plans/") for link in links[:-1])
    assert links[-1] is None


def test_top_is_ignored_and_pages_stay_at_the_fixed_size(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graph, "PAGE_SIZE", 5)
    _, plan_id = first_plan(box)
    with raw(box) as client:
        body = client.get(f"/planner/plans/{plan_id}/tasks", params={"$top": "2"}).json()
    assert len(body["value"]) == 5
    assert body["@odata.context"].endswith(f"$metadata#planner/plans('{plan_id}')/tasks")
    assert "@odata.nextLink" in body


def test_unfiltered_plans_collection_is_refused_as_graph_does(box: Sandbox) -> None:
    with raw(box) as client:
        response = client.get("/planner/plans")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "This entity set must be queried with a filter."


def test_task_record_follows_the_portfolio_in_graph_formats(box: Sandbox) -> None:
    p = box.portfolio
    project, plan_id = first_plan(box)
    with raw(box) as client:
        tasks = client.get(f"/planner/plans/{plan_id}/tasks").json()["value"]
    by_id = {t["id"]: t for t in tasks}
    for i in p.task_indexes(PLANNER, project):
        record = by_id[ids.graph_id(p, "task", int(i))]
        due = int(p.tasks.due[i])
        assert record["dueDateTime"] == (
            None if due == NO_DAY else f"{day_to_date(due).isoformat()}T00:00:00Z"
        )
        assert record["percentComplete"] == int(p.tasks.percent[i]) and record["percentComplete"] in (
            0,
            50,
            100,
        )
        assert record["title"] == p.title(int(i))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", record["createdDateTime"])
        assert (record["completedDateTime"] is not None) == (int(p.tasks.status[i]) == DONE)
        assignee = int(p.tasks.assignee[i])
        if assignee >= 0:
            assignment = record["assignments"][ids.graph_user_id(p, assignee)]
            assert assignment["@odata.type"] == "#microsoft.graph.plannerAssignment"
        else:
            assert record["assignments"] == {}
        assert not any("modified" in key.lower() for key in record)
    assert len({t["@odata.etag"] for t in tasks}) == len(tasks)


def test_bucket_tasks_are_the_plans_tasks_in_that_bucket(box: Sandbox) -> None:
    _, plan_id = first_plan(box)
    with raw(box) as client:
        tasks = client.get(f"/planner/plans/{plan_id}/tasks").json()["value"]
        buckets = client.get(f"/planner/plans/{plan_id}/buckets").json()["value"]
        per_bucket = {
            b["id"]: client.get(f"/planner/buckets/{b['id']}/tasks").json()["value"] for b in buckets
        }
    for bucket_id, listed in per_bucket.items():
        assert [t["id"] for t in listed] == [t["id"] for t in tasks if t["bucketId"] == bucket_id]
    assert sum(len(v) for v in per_bucket.values()) == len(tasks)


# -- writes with etags ------------------------------------------------------------------------------------------------


def test_patch_with_if_match_moves_the_due_date_through_the_portfolio_history(box: Sandbox) -> None:
    i, task_id = first_task(box)
    p = box.portfolio
    history_before = len(p.due_changes(i))

    async def scenario(client: GraphServiceClient) -> tuple[Any, Any, Any]:
        task = client.planner.tasks.by_planner_task_id(task_id)
        before = await task.get()
        answered = await task.patch(
            PlannerTask(due_date_time=_dt("2027-01-15")), headers(If_Match=etag_of(before))
        )
        return before, answered, await task.get()

    before, answered, after = run(box, scenario)
    assert answered is None  # 204 without Prefer: return=representation
    assert int(p.tasks.due[i]) == day_number(date(2027, 1, 15))
    assert len(p.due_changes(i)) == history_before + 1
    assert after.due_date_time.isoformat() == "2027-01-15T00:00:00+00:00"
    assert etag_of(after) != etag_of(before)


def test_patch_with_prefer_representation_answers_200_with_the_new_etag(box: Sandbox) -> None:
    i, task_id = first_task(box)

    async def scenario(client: GraphServiceClient) -> tuple[Any, Any]:
        task = client.planner.tasks.by_planner_task_id(task_id)
        before = await task.get()
        config = headers(If_Match=etag_of(before), Prefer="return=representation")
        return before, await task.patch(PlannerTask(percent_complete=100, title="Renamed by test"), config)

    before, answered = run(box, scenario)
    assert answered.percent_complete == 100 and answered.completed_date_time is not None
    assert answered.title == "Renamed by test" == box.portfolio.title(i)
    assert int(box.portfolio.tasks.status[i]) == DONE
    assert etag_of(answered) != etag_of(before)


def test_patch_with_a_stale_etag_is_412_and_changes_nothing(box: Sandbox) -> None:
    i, task_id = first_task(box)
    p = box.portfolio

    async def scenario(client: GraphServiceClient) -> ODataError:
        task = client.planner.tasks.by_planner_task_id(task_id)
        stale = etag_of(await task.get())
        await task.patch(PlannerTask(priority=1), headers(If_Match=stale))
        with pytest.raises(ODataError) as caught:
            await task.patch(PlannerTask(due_date_time=_dt("2030-01-01")), headers(If_Match=stale))
        return caught.value

    due_before = int(p.tasks.due[i])
    error = run(box, scenario)
    assert error.response_status_code == 412
    assert error.error.code == "resourceModified"
    assert int(p.tasks.due[i]) == due_before


def test_patch_or_delete_without_if_match_is_refused_with_graphs_message(box: Sandbox) -> None:
    _, task_id = first_task(box)
    with raw(box) as client:
        patched = client.patch(f"/planner/tasks/{task_id}", json={"priority": 1})
        deleted = client.delete(f"/planner/tasks/{task_id}")
    for response in (patched, deleted):
        assert response.status_code == 412
        error = response.json()["error"]
        assert error["message"] == "The If-Match header must be specified for this kind of request."
        assert {"date", "request-id"} <= error["innerError"].keys()


def test_details_have_their_own_etag_and_patch_them_with_it(box: Sandbox) -> None:
    _, task_id = first_task(box)
    url = "https://acme.atlassian.net/browse/PLA-7"
    encoded = (
        url.replace("%", "%25")
        .replace(".", "%2E")
        .replace(":", "%3A")
        .replace("@", "%40")
        .replace("#", "%23")
    )

    async def scenario(client: GraphServiceClient) -> tuple[Any, Any, Any, Any, ODataError]:
        task = client.planner.tasks.by_planner_task_id(task_id)
        task_before, details_before = await task.get(), await task.details.get()
        body = PlannerTaskDetails(description="Schedule: forecast 2027-01-20, slip 3 days")
        body.additional_data = {
            "references": {
                encoded: {
                    "@odata.type": "microsoft.graph.externalReference",
                    "alias": "PLA-7",
                    "type": "Other",
                }
            },
            "checklist": {
                "a1b2c": {"@odata.type": "microsoft.graph.plannerChecklistItem", "title": "Check slip"}
            },
        }
        details_after = await task.details.patch(
            body, headers(If_Match=etag_of(details_before), Prefer="return=representation")
        )
        with pytest.raises(ODataError) as caught:
            await task.details.patch(
                PlannerTaskDetails(description="x"), headers(If_Match=etag_of(task_before))
            )
        return task_before, details_before, details_after, await task.get(), caught.value

    task_before, details_before, details_after, task_after, stale = run(box, scenario)
    assert etag_of(details_before) != etag_of(task_before)
    assert etag_of(details_after) != etag_of(details_before)
    assert details_after.description.startswith("Schedule:")
    assert details_after.references.additional_data[encoded]["alias"] == "PLA-7"
    assert "a1b2c" in details_after.checklist.additional_data
    assert task_after.has_description and task_after.reference_count == 1
    assert stale.response_status_code == 412


def test_open_type_value_without_odata_type_is_400(box: Sandbox) -> None:
    _, task_id = first_task(box)
    with raw(box) as client:
        details = client.get(f"/planner/tasks/{task_id}/details").json()
        response = client.patch(
            f"/planner/tasks/{task_id}/details",
            headers={"If-Match": details["@odata.etag"]},
            json={"references": {"https%3A//x%2Eexample": {"alias": "x"}}},
        )
    assert response.status_code == 400


def test_create_then_delete_task_with_its_etag(box: Sandbox) -> None:
    project, plan_id = first_plan(box)
    p = box.portfolio
    user = ids.graph_user_id(p, 2)
    body = {
        "planId": plan_id,
        "title": "Prepare cutover",
        "dueDateTime": "2027-02-01T00:00:00Z",
        "assignments": {user: {"@odata.type": "#microsoft.graph.plannerAssignment", "orderHint": " !"}},
    }
    with raw(box) as client:
        created = client.post("/planner/tasks", json=body)
        record = created.json()
        deleted = client.delete(f"/planner/tasks/{record['id']}", headers={"If-Match": record["@odata.etag"]})
        gone = client.get(f"/planner/tasks/{record['id']}")
    assert created.status_code == 201
    i = ids.graph_index(record["id"])
    assert p.title(i) == "Prepare cutover" and int(p.tasks.project[i]) == project
    assert int(p.tasks.assignee[i]) == 2 and list(record["assignments"]) == [user]
    assert record["dueDateTime"] == "2027-02-01T00:00:00Z"
    assert deleted.status_code == 204 and bool(p.tasks.deleted[i])
    assert gone.status_code == 404


def test_plan_details_category_descriptions_patch_with_etag(box: Sandbox) -> None:
    _, plan_id = first_plan(box)
    with raw(box) as client:
        before = client.get(f"/planner/plans/{plan_id}/details").json()
        patched = client.patch(
            f"/planner/plans/{plan_id}/details",
            headers={"If-Match": before["@odata.etag"], "Prefer": "return=representation"},
            json={"categoryDescriptions": {"category5": "pmsync: late", "category1": None}},
        )
    after = patched.json()
    assert len(before["categoryDescriptions"]) == 25
    assert after["categoryDescriptions"]["category5"] == "pmsync: late"
    assert after["categoryDescriptions"]["category1"] is None
    assert after["@odata.etag"] != before["@odata.etag"]


def test_users_resolve_assignee_ids_to_email_and_planner_name(box: Sandbox) -> None:
    p = box.portfolio
    with raw(box) as client:
        user = client.get(f"/users/{ids.graph_user_id(p, 4)}").json()
        missing = client.get("/users/00000000-0000-4000-8000-000000000000")
    assert user["mail"] == p.people[4].email
    assert user["displayName"] == p.people[4].display_name(PLANNER)
    assert missing.status_code == 404


# -- drive items ------------------------------------------------------------------------------------------------------


def test_msproject_file_downloads_through_a_302_to_the_current_mspdi(box: Sandbox) -> None:
    p = box.portfolio
    project = p.projects_of(MSPROJECT)[0].index
    drive, item = ids.graph_drive_id(p), ids.graph_item_id(p, project)

    async def scenario(client: GraphServiceClient) -> tuple[Any, bytes]:
        items = client.drives.by_drive_id(drive).items.by_drive_item_id(item)
        return await items.get(), await items.content.get()

    meta, content = run(box, scenario)
    assert meta.name == f"{p.projects[project].name}.xml"
    assert content == render_project(p, project)
    assert meta.size == len(content)
    with raw(box) as client:
        redirect = client.get(f"/drives/{drive}/items/{item}/content")
    assert redirect.status_code == 302
    unauthenticated = httpx.get(redirect.headers["location"])
    assert unauthenticated.status_code == 200 and unauthenticated.content == content


def test_file_etag_changes_when_one_of_its_tasks_changes(box: Sandbox) -> None:
    p = box.portfolio
    project = p.projects_of(MSPROJECT)[0].index
    drive, item = ids.graph_drive_id(p), ids.graph_item_id(p, project)
    i = int(p.task_indexes(MSPROJECT, project)[-1])
    with raw(box) as client:
        before = client.get(f"/drives/{drive}/items/{item}").json()
        not_modified = client.get(
            f"/drives/{drive}/items/{item}/content", headers={"If-None-Match": before["eTag"]}
        )
        box.call(p.set_due, i, int(p.tasks.due[i]) + 9)
        after = client.get(f"/drives/{drive}/items/{item}").json()
        content = httpx.get(after["@microsoft.graph.downloadUrl"]).content
    assert not_modified.status_code == 304
    assert after["eTag"] != before["eTag"] and after["cTag"] != before["cTag"]
    finish = f"<Finish>{day_to_date(int(p.tasks.due[i])).isoformat()}T17:00:00</Finish>"
    assert finish.encode() in content


def test_upload_creates_then_replaces_and_serves_the_bytes_back(box: Sandbox) -> None:
    drive = ids.graph_drive_id(box.portfolio)

    async def scenario(client: GraphServiceClient) -> tuple[Any, Any, bytes, list[str]]:
        root = client.drives.by_drive_id(drive).items
        created = await root.by_drive_item_id("root:/portfolio.xml:").content.put(b"<Project/>")
        replaced = await root.by_drive_item_id(created.id).content.put(b"<Project>v2</Project>")
        content = await root.by_drive_item_id(created.id).content.get()
        children = await root.by_drive_item_id("root").children.get()
        return created, replaced, content, [c.name for c in children.value]

    created, replaced, content, names = run(box, scenario)
    assert created.name == "portfolio.xml" and created.size == len(b"<Project/>")
    assert replaced.id == created.id and replaced.e_tag != created.e_tag
    assert content == b"<Project>v2</Project>"
    assert "portfolio.xml" in names
    with raw(box) as client:
        status = client.put(f"/drives/{drive}/items/root:/other.html:/content", content=b"<p/>").status_code
        again = client.put(
            f"/drives/{drive}/items/root:/other.html:/content", content=b"<p>2</p>"
        ).status_code
    assert (status, again) == (201, 200)


def test_upload_into_a_folder_made_through_children(box: Sandbox) -> None:
    drive = ids.graph_drive_id(box.portfolio)
    with raw(box) as client:
        folder = client.post(f"/drives/{drive}/root/children", json={"name": "Reports", "folder": {}}).json()
        uploaded = client.put(
            f"/drives/{drive}/items/{folder['id']}:/dashboard.html:/content", content=b"<html/>"
        )
        listed = client.get(f"/drives/{drive}/items/{folder['id']}/children").json()["value"]
    assert uploaded.status_code == 201
    assert uploaded.json()["parentReference"]["id"] == folder["id"]
    assert [c["name"] for c in listed] == ["dashboard.html"]


# -- authentication, rate limit, faults -------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401_invalid_authentication_token(box: Sandbox) -> None:
    _, plan_id = first_plan(box)
    for token in (None, "not-the-token"):
        with raw(box, token) as client:
            response = client.get(f"/planner/plans/{plan_id}")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert box.emulators["graph"].stats.unauthorized == 2


def test_client_credentials_token_from_the_sandbox_authority_is_accepted(box: Sandbox) -> None:
    creds = CREDENTIALS["graph"]
    _, plan_id = first_plan(box)
    form = {
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "scope": "https://graph.microsoft.com/.default",
        "grant_type": "client_credentials",
    }
    token_url = f"{box.urls['graph']}/{creds['tenant_id']}/oauth2/v2.0/token"
    issued = httpx.post(token_url, data=form).json()
    refused = httpx.post(token_url, data={**form, "client_secret": "wrong"})
    assert issued["token_type"] == "Bearer" and issued["expires_in"] == 3599
    with raw(box, issued["access_token"]) as client:
        assert client.get(f"/planner/plans/{plan_id}").status_code == 200
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def test_azure_identity_client_secret_credential_uses_the_sandbox_as_authority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.identity import ClientSecretCredential

    creds = CREDENTIALS["graph"]
    # azure-identity insists on an https authority, so this sandbox serves TLS from its throwaway CA.
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",), tls=True) as secure:
        assert secure.tls_files is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(secure.tls_files.ca_bundle))
        credential = ClientSecretCredential(
            creds["tenant_id"],
            creds["client_id"],
            creds["client_secret"],
            authority=secure.urls["graph"],
            disable_instance_discovery=True,
        )
        token = credential.get_token("https://graph.microsoft.com/.default")
        _, plan_id = first_plan(secure)
        response = httpx.get(
            f"{secure.api_url('graph')}/planner/plans/{plan_id}",
            headers={"Authorization": f"Bearer {token.token}"},
            verify=str(secure.tls_files.ca_bundle),
        )
    assert response.status_code == 200
    assert token.expires_on > time.time() + 3000


def test_rate_limit_burst_gets_429_with_retry_after_in_graphs_shape(box: Sandbox) -> None:
    assert graph.default_rate_limit().limit > 0
    emulator = box.emulators["graph"]
    emulator.settings.rate_limit = RateLimit(limit=5, window_s=60)
    _, plan_id = first_plan(box)
    with raw(box) as client:
        responses = [client.get(f"/planner/plans/{plan_id}") for _ in range(8)]
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
    throttled = responses[-1]
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    error = throttled.json()["error"]
    assert error["code"] == "TooManyRequests"
    assert {"date", "request-id", "code", "status"} <= error["innerError"].keys()
    assert emulator.stats.rate_limited == 3


@pytest.mark.parametrize("status", [500, 503])
def test_injected_status_fault_has_graphs_error_body(box: Sandbox, status: int) -> None:
    _, plan_id = first_plan(box)
    box.emulators["graph"].inject("status", status=status, path="/tasks$")
    with raw(box) as client:
        response = client.get(f"/planner/plans/{plan_id}/tasks")
        healthy = client.get(f"/planner/plans/{plan_id}/tasks")
    assert response.status_code == status
    assert {"code", "message", "innerError"} <= response.json()["error"].keys()
    assert healthy.status_code == 200


@pytest.mark.parametrize("kind", ["malformed_json", "truncated"])
def test_injected_body_faults_break_the_page(box: Sandbox, kind: str) -> None:
    _, plan_id = first_plan(box)
    fault = box.emulators["graph"].inject(kind, path="/tasks$")
    with raw(box) as client:
        response = client.get(f"/planner/plans/{plan_id}/tasks")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)
    assert fault.fired == 1


def test_invalid_record_fault_breaks_one_tasks_due_date(box: Sandbox) -> None:
    _, plan_id = first_plan(box)
    box.emulators["graph"].inject("invalid_record", path="/tasks$")
    with raw(box) as client:
        broken = client.get(f"/planner/plans/{plan_id}/tasks").json()["value"]
        clean = client.get(f"/planner/plans/{plan_id}/tasks").json()["value"]
    differing = [(a["dueDateTime"], b["dueDateTime"]) for a, b in zip(broken, clean) if a != b]
    assert len(differing) == 1
    with pytest.raises(ValueError):
        graph.parse_day(differing[0][0])


def test_injected_timeout_and_reset_reach_the_client(box: Sandbox) -> None:
    _, plan_id = first_plan(box)
    emulator = box.emulators["graph"]
    emulator.inject("timeout", delay_s=0.05, path="/tasks$")
    with raw(box) as client:
        assert client.get(f"/planner/plans/{plan_id}/tasks").status_code == 504
        emulator.inject("reset", path="/buckets$")
        try:
            reset: httpx.Response | None = client.get(f"/planner/plans/{plan_id}/buckets")
        except httpx.TransportError:
            reset = None
    # The framework's reset aborts the response; uvicorn then closes the connection after a bare text/plain 500.
    assert reset is None or (
        reset.status_code == 500 and reset.headers["content-type"].startswith("text/plain")
    )
    assert emulator.stats.faults == 2


# -- formats ----------------------------------------------------------------------------------------------------------


def test_planner_etags_are_weak_base64_and_sort_by_version() -> None:
    older, newer = (
        graph.planner_etag("Task", 1_700_000_000_000_000),
        graph.planner_etag("Task", 1_700_000_000_000_001),
    )
    assert re.fullmatch(r'W/"JzEt[A-Za-z0-9+/=]+"', older)
    assert older < newer


def test_timestamps_have_seven_fraction_digits_and_dates_parse_from_any_offset() -> None:
    assert graph.timestamp7(1_700_000_000.25) == "2023-11-14T22:13:20.2500000Z"
    assert graph.parse_day("2023-10-30T23:30:00-02:00") == day_number(date(2023, 10, 31))
    assert graph.parse_day("2023-10-30T00:00:00.0000000Z") == day_number(date(2023, 10, 30))
    assert graph.parse_day(None) == NO_DAY


def _dt(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)
