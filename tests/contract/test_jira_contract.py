"""Every exchange the jira SDK (and a raw client) has with the Jira emulator conforms to Jira's OpenAPI description."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from jira import JIRA

from sandbox import ids
from sandbox.core import CREDENTIALS
from sandbox.generator import JIRA as JIRA_TOOL
from sandbox.generator import LINK_REMOTE
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox
from tests.contract.specs import Exchange, assert_conforms, require_specs

EMAIL, TOKEN = CREDENTIALS["jira"]["email"], CREDENTIALS["jira"]["token"]
# Where Jira itself departs from its description, the emulator follows Jira (../shared/VENDORS.md section 1):
KNOWN_DEPARTURES = (
    # the jira SDK sends `null` for the optional members it was not given; Jira accepts them
    "POST /rest/api/*/search/jql -> 200: request body at $.expand: None",
    "POST /rest/api/*/search/jql -> 200: request body at $.properties: None",
    "POST /rest/api/*/issueLink -> 201: request body at $.comment: None",
    # Jira answers these writes with an empty body (VENDORS.md 1.6 and 1.8)
    "POST /rest/api/*/issueLink -> 201: response body is empty",
    "PUT /rest/api/*/issue/*/properties/* -> 20?: response body is empty",
    # a change from or to nothing carries `"from": null` / `"to": null`, as Jira's changelogs do
    "GET /rest/api/*/changelog -> 200: response body at $.values*.items*: None is not of type 'string'",
    "GET /rest/api/*/issue/* -> 200: response body at $.changelog.histories*.items*: None is not of type",
    "GET /rest/api/*/search/jql -> 200: response body at $.issues*.changelog.histories*.items*: None is not",
)


@pytest.fixture
def recording_box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    require_specs()
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("jira",)) as box:
        box.emulators["jira"].settings.record = True
        yield box



def drive_sdk(box: Sandbox, version: str) -> None:
    """A connector's whole conversation: discovery, search, reads, writes, links, properties, comments."""
    p = box.portfolio
    client = JIRA(server=box.urls["jira"], basic_auth=(EMAIL, TOKEN), max_retries=0,
                  options={"rest_api_version": version})
    client.myself()
    client.fields()
    client.projects()
    jira = p.task_indexes(JIRA_TOOL)
    page = client.enhanced_search_issues("project = PLA ORDER BY updated DESC", maxResults=20,
                                         fields="summary,duedate,status,issuelinks", expand="changelog",
                                         json_result=True)
    client.enhanced_search_issues("project = PLA ORDER BY updated DESC", nextPageToken=page["nextPageToken"],
                                  maxResults=20,
                                  json_result=True, use_post=True)
    key = ids.jira_key(p, int(jira[4]))
    issue = client.issue(key, expand="changelog,names")
    issue.update(fields={"duedate": "2027-03-01", "customfield_10051": "2027-03-04"})
    client.add_issue_property(key, "pmsync.state", {"synced": True})
    client.issue_property(key, "pmsync.state")
    client.issue_properties(key)
    body = "Moved" if version == "2" else {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "Moved"}]}]}
    comment = client.add_comment(key, "Moved") if version == "2" else None
    remote = p.link_succ[p.links_of(LINK_REMOTE)]
    client.remote_links(ids.jira_key(p, int(remote[0])))
    client.add_simple_link(key, {"url": "https://app.asana.com/0/1/2", "title": "Upstream"})
    client.create_issue_link("Blocks", key, ids.jira_key(p, int(jira[9])))
    created = client.create_issue(project={"key": "PLA"}, summary="Contract check", issuetype={"name": "Task"},
                                  duedate="2027-01-02")
    with httpx.Client(base_url=box.urls["jira"], auth=(EMAIL, TOKEN)) as raw:
        base = f"/rest/api/{version}"
        raw.get(f"{base}/issue/{key}/changelog")
        raw.get(f"{base}/label")
        raw.get(f"{base}/issueLinkType")
        raw.get(f"{base}/project/search")
        raw.get(f"{base}/issue/{key}/comment")
        posted = raw.post(f"{base}/issue/{key}/comment", json={"body": body}).json()
        raw.put(f"{base}/issue/{key}/comment/{posted['id']}", json={"body": body})
        raw.delete(f"{base}/issue/{key}/properties/pmsync.state")
        raw.delete(f"{base}/issue/{created.id}")
        raw.get(f"{base}/issue/{created.id}")
    assert comment is None or comment.body == "Moved"


@pytest.mark.parametrize("version", ["2", "3"])
def test_every_exchange_conforms_to_the_jira_spec(recording_box: Sandbox, version: str) -> None:
    drive_sdk(recording_box, version)
    recorded = list(recording_box.emulators["jira"].recorded)
    assert len(recorded) >= 25 and all(r.status < 500 for r in recorded)
    assert_conforms("jira", [Exchange.from_recorded(r) for r in recorded], allow=KNOWN_DEPARTURES)
