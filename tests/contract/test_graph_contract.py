"""Every exchange the msgraph SDK has with the Graph emulator conforms to Microsoft's Planner OpenAPI description.

The spec in ../shared/specs is Microsoft's Planner-only cut of Graph v1.0: it has no drive items, users or the
identity platform, so those exchanges are excused by path below, and checked here against the driveItem facts of
../shared/VENDORS.md instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.planner_plan_details import PlannerPlanDetails
from msgraph.generated.models.planner_task import PlannerTask
from msgraph.generated.models.planner_task_details import PlannerTaskDetails
from msgraph_core.authentication import AzureIdentityAuthenticationProvider

from sandbox import graph, ids
from sandbox.core import CREDENTIALS
from sandbox.generator import MSPROJECT, PLANNER
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox

from .specs import Exchange, assert_conforms, require_specs

OUTSIDE_THE_PLANNER_SPEC = ("GET /v1.0/drives/", "PUT /v1.0/drives/", "GET /v1.0/users/", "GET /_download/")


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A recording sandbox serving only the Graph emulator, with pages small enough to page a small plan."""
    require_specs()
    monkeypatch.setattr(graph, "PAGE_SIZE", 8)
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("graph",)) as sandbox_:
        sandbox_.emulators["graph"].settings.record = True
        yield sandbox_


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(CREDENTIALS["graph"]["token"], int(time.time()) + 3600)



def if_match(etag: str, representation: bool = False) -> RequestConfiguration:
    config = RequestConfiguration()
    config.headers.add("If-Match", etag)
    if representation:
        config.headers.add("Prefer", "return=representation")
    return config


async def drive_every_operation(box: Sandbox) -> None:
    """Call each endpoint the emulator serves, as the Planner and MS Project connectors would."""
    auth = AzureIdentityAuthenticationProvider(StaticToken(), allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = box.api_url("graph")
    client = GraphServiceClient(request_adapter=adapter)
    p = box.portfolio
    project = p.projects_of(PLANNER)[0].index
    plan_id = ids.graph_id(p, "plan", project)
    plan_builder = client.planner.plans.by_planner_plan_id(plan_id)
    plan = await plan_builder.get()
    await client.groups.by_group_id(plan.owner).planner.plans.get()
    page = await plan_builder.tasks.get()
    while page.odata_next_link:
        page = await plan_builder.tasks.with_url(page.odata_next_link).get()
    buckets = await plan_builder.buckets.get()
    await client.planner.buckets.by_planner_bucket_id(buckets.value[0].id).get()
    await client.planner.buckets.by_planner_bucket_id(buckets.value[1].id).tasks.get()
    plan_details = await plan_builder.details.get()
    categories = PlannerPlanDetails()
    categories.additional_data = {"categoryDescriptions": {"category7": "pmsync: late"}}
    await plan_builder.details.patch(categories, if_match(plan_details.additional_data["@odata.etag"], True))

    task_id = ids.graph_id(p, "task", int(p.task_indexes(PLANNER, project)[0]))
    task_builder = client.planner.tasks.by_planner_task_id(task_id)
    task = await task_builder.get()
    patched = await task_builder.patch(
        PlannerTask(percent_complete=50), if_match(task.additional_data["@odata.etag"], True)
    )
    await task_builder.patch(PlannerTask(priority=3), if_match(patched.additional_data["@odata.etag"]))
    with pytest.raises(ODataError):
        await task_builder.patch(PlannerTask(priority=1), if_match(task.additional_data["@odata.etag"]))
    details = await task_builder.details.get()
    body = PlannerTaskDetails(description="Schedule: on track")
    await task_builder.details.patch(body, if_match(details.additional_data["@odata.etag"], True))

    created = await client.planner.tasks.post(PlannerTask(plan_id=plan_id, title="Contract check"))
    await client.planner.tasks.by_planner_task_id(created.id).delete(
        if_match(created.additional_data["@odata.etag"])
    )

    drive = client.drives.by_drive_id(ids.graph_drive_id(p))
    item = ids.graph_item_id(p, p.projects_of(MSPROJECT)[0].index)
    await drive.items.by_drive_item_id(item).get()
    await drive.items.by_drive_item_id(item).content.get()
    await drive.items.by_drive_item_id("root:/contract.html:").content.put(b"<html/>")
    await client.users.by_user_id(ids.graph_user_id(p, 1)).get()


def test_every_planner_exchange_conforms_to_the_graph_spec(box: Sandbox) -> None:
    asyncio.run(drive_every_operation(box))
    recorded = list(box.emulators["graph"].recorded)
    statuses = {(r.method, r.status) for r in recorded}
    assert {
        ("GET", 200),
        ("PATCH", 200),
        ("PATCH", 204),
        ("PATCH", 412),
        ("POST", 201),
        ("DELETE", 204),
    } <= statuses
    assert sum(1 for r in recorded if r.path.endswith("/tasks") and r.method == "GET") >= 3
    assert_conforms("graph", map(Exchange.from_recorded, recorded), allow=OUTSIDE_THE_PLANNER_SPEC)


def test_drive_item_exchanges_carry_the_driveitem_facts(box: Sandbox) -> None:
    asyncio.run(drive_every_operation(box))
    items = [r for r in box.emulators["graph"].recorded if r.path.startswith("/v1.0/drives/")]
    redirect = next(r for r in items if r.path.endswith("/content") and r.method == "GET")
    assert redirect.status == 302 and "/_download/" in redirect.response_headers["location"]
    import orjson

    for record in (r for r in items if r.status in (200, 201)):
        item = orjson.loads(record.response_body)
        assert {
            "id",
            "name",
            "eTag",
            "cTag",
            "size",
            "lastModifiedDateTime",
            "parentReference",
        } <= item.keys()
        assert item["file"]["mimeType"] and item["@microsoft.graph.downloadUrl"].startswith(box.urls["graph"])
