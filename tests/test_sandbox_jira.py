"""The Jira emulator driven by the real `jira` SDK (and raw httpx where the SDK hides the wire)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from jira import JIRA
from jira.exceptions import JIRAError

from sandbox import ids
from sandbox.core import CREDENTIALS, RateLimit
from sandbox.generator import JIRA as JIRA_TOOL
from sandbox.generator import LINK_NATIVE, LINK_REMOTE, day_number, day_to_date
from sandbox.jira import MSG_ADF, MSG_NOT_FOUND, MSG_UNBOUNDED
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox

EMAIL, TOKEN = CREDENTIALS["jira"]["email"], CREDENTIALS["jira"]["token"]


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A small sandbox serving only the Jira emulator, so these tests do not depend on the other vendors."""
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("jira",)) as sandbox_:
        yield sandbox_


def sdk(box: Sandbox) -> JIRA:
    return JIRA(server=box.urls["jira"], basic_auth=(EMAIL, TOKEN), max_retries=0)


def raw(box: Sandbox, token: str = TOKEN) -> httpx.Client:
    return httpx.Client(base_url=box.urls["jira"], auth=(EMAIL, token), timeout=10)


def jira_tasks(box: Sandbox) -> np.ndarray:
    assert box.portfolio is not None
    return box.portfolio.task_indexes(JIRA_TOOL)


def keys_of(box: Sandbox, indexes: np.ndarray) -> list[str]:
    return [ids.jira_key(box.portfolio, int(i)) for i in indexes]


def search_all(client: JIRA, jql: str, page_size: int, **options: object) -> tuple[list[dict], int]:
    """Every issue of a search, page by page with nextPageToken; also how many pages it took."""
    issues: list[dict] = []
    token, pages = None, 0
    while True:
        page = client.enhanced_search_issues(jql, nextPageToken=token, maxResults=page_size, json_result=True,
                                             **options)
        pages += 1
        issues.extend(page["issues"])
        token = page.get("nextPageToken")
        assert page["isLast"] is (token is None)
        if token is None:
            return issues, pages


def test_sdk_sees_a_cloud_server_at_the_callers_base_url(box: Sandbox) -> None:
    client = sdk(box)
    info = client.server_info()
    assert client._is_cloud and info["baseUrl"] == box.urls["jira"]
    assert client.myself()["timeZone"] == "UTC"


def test_enhanced_search_pages_through_every_issue_of_the_projects(box: Sandbox) -> None:
    p = box.portfolio
    projects = [pr.key for pr in p.projects_of(JIRA_TOOL)]
    issues, pages = search_all(sdk(box), f"project in ({', '.join(projects)}) ORDER BY key", 25, fields="")
    expected = jira_tasks(box)
    assert pages == -(-len(expected) // 25) and pages >= 3
    assert sorted(int(issue["id"]) for issue in issues) == [int(ids.jira_issue_id(int(i))) for i in expected]
    assert len({issue["id"] for issue in issues}) == len(issues)


def test_search_default_fields_are_id_only_and_page_size_is_capped(box: Sandbox) -> None:
    with raw(box) as client:
        bare = client.get("/rest/api/3/search/jql", params={"jql": "project = PLA", "maxResults": 6000}).json()
        full = client.get("/rest/api/3/search/jql",
                          params={"jql": "project = PLA", "maxResults": 6000, "fields": "*all"}).json()
    pla = box.portfolio.task_indexes(JIRA_TOOL, box.portfolio.projects[0].index)
    assert len(bare["issues"]) == len(pla) and "fields" not in bare["issues"][0]
    assert len(full["issues"]) == min(100, len(pla)) and "duedate" in full["issues"][0]["fields"]


def test_jql_updated_since_matches_the_portfolio(box: Sandbox) -> None:
    p = box.portfolio
    t = p.tasks
    jira = jira_tasks(box)
    cut = float(np.median(t.updated[jira]))
    minute = datetime.fromtimestamp(cut, tz=UTC).strftime("%Y/%m/%d %H:%M")
    since = datetime.strptime(minute, "%Y/%m/%d %H:%M").replace(tzinfo=UTC).timestamp()
    issues, _ = search_all(sdk(box), f'project = PLA AND updated >= "{minute}" ORDER BY updated ASC', 50,
                           fields=["updated"])
    pla = p.task_indexes(JIRA_TOOL, p.projects[0].index)
    expected = pla[t.updated[pla] >= since]
    assert [issue["key"] for issue in issues] == keys_of(box, expected[np.argsort(t.updated[expected])])


def test_jql_key_in_or_project_with_order_by_updated_desc(box: Sandbox) -> None:
    p = box.portfolio
    t = p.tasks
    second = p.projects_of(JIRA_TOOL)[1]
    picked = jira_tasks(box)[:3]
    jql = f"(key in ({', '.join(keys_of(box, picked))}) OR project = {second.key}) ORDER BY updated DESC"
    issues, _ = search_all(sdk(box), jql, 40, fields="updated")
    expected = np.concatenate([picked, p.task_indexes(JIRA_TOOL, second.index)])
    assert [i["key"] for i in issues] == keys_of(box, expected[np.argsort(-t.updated[expected], kind="stable")])


def test_unbounded_and_unknown_field_jql_are_rejected_as_jira_does(box: Sandbox) -> None:
    with raw(box) as client:
        unbounded = client.post("/rest/api/3/search/jql", json={"jql": "ORDER BY key"})
        unknown = client.get("/rest/api/2/search/jql", params={"jql": "flavour = vanilla"})
    assert unbounded.status_code == 400 and unbounded.json()["errorMessages"] == [MSG_UNBOUNDED]
    assert unknown.status_code == 400
    message = "Field 'flavour' does not exist or you do not have permission to view it."
    assert unknown.json() == {"errorMessages": [message], "errors": {}}


def rescheduled_issue(box: Sandbox) -> int:
    t = box.portfolio.tasks
    jira = jira_tasks(box)
    return int(jira[np.flatnonzero(t.reschedules[jira] >= 2)[0]])


def test_issue_changelog_shows_due_date_history_newest_first_and_paged_oldest_first(box: Sandbox) -> None:
    p = box.portfolio
    i = rescheduled_issue(box)
    changes = p.due_changes(i)
    issue = sdk(box).issue(ids.jira_key(p, i), expand="changelog")
    due_items = [item for h in issue.raw["changelog"]["histories"] for item in h["items"] if item["field"] == "duedate"]
    assert [item["to"] for item in due_items] == [day_to_date(c.new_day).isoformat() for c in reversed(changes)]
    with raw(box) as client:
        page = client.get(f"/rest/api/3/issue/{ids.jira_issue_id(i)}/changelog", params={"maxResults": 1}).json()
    assert page["startAt"] == 0 and page["total"] >= len(changes) and not page["isLast"] and "nextPage" in page
    assert issue.fields.duedate == day_to_date(int(p.tasks.due[i])).isoformat()


def test_create_issue_then_read_it_back(box: Sandbox) -> None:
    client = sdk(box)
    created = client.create_issue(project="PLA", summary="Wire the sandbox", issuetype={"name": "Story"},
                                  duedate="2026-12-24", customfield_10015="2026-12-01")
    p = box.portfolio
    i = ids.jira_issue_index(created.id)
    assert created.key == ids.jira_key(p, i) and created.fields.issuetype.name == "Story"
    assert p.tasks.due[i] == day_number(datetime(2026, 12, 24).date()) and p.title(i) == "Wire the sandbox"
    assert created.fields.customfield_10015 == "2026-12-01"


def test_due_date_update_is_recorded_in_the_changelog(box: Sandbox) -> None:
    p = box.portfolio
    i = int(jira_tasks(box)[5])
    client = sdk(box)
    issue = client.issue(ids.jira_key(p, i))
    old = issue.fields.duedate
    issue.update(fields={"duedate": "2027-01-15", "customfield_10050": 4}, update={"labels": [{"add": "slipping"}]})
    history = client.issue(issue.key, expand="changelog").raw["changelog"]["histories"][0]
    by_field = {item["fieldId"]: item for item in history["items"]}
    assert by_field["duedate"]["from"] == old and by_field["duedate"]["to"] == "2027-01-15"
    assert by_field["duedate"]["toString"] == "2027-01-15 00:00:00.0"
    assert by_field["customfield_10050"]["to"] == "4" and "slipping" in by_field["labels"]["toString"]
    assert p.due_changes(i)[-1].new_day == day_number(datetime(2027, 1, 15).date())
    assert client.issue(issue.key).fields.customfield_10050 == 4


def test_v3_rejects_a_plain_string_description_and_v2_accepts_it(box: Sandbox) -> None:
    key = ids.jira_key(box.portfolio, int(jira_tasks(box)[1]))
    with raw(box) as client:
        v3 = client.put(f"/rest/api/3/issue/{key}", json={"fields": {"description": "plain"}})
        v2 = client.put(f"/rest/api/2/issue/{key}", json={"fields": {"description": "plain"}})
        as_v3 = client.get(f"/rest/api/3/issue/{key}", params={"fields": "description"}).json()
    assert v3.status_code == 400 and v3.json()["errors"] == {"description": MSG_ADF}
    assert v2.status_code == 204 and v2.content == b""
    assert as_v3["fields"]["description"]["content"][0]["content"][0]["text"] == "plain"


def test_comment_add_and_edit(box: Sandbox) -> None:
    client = sdk(box)
    key = ids.jira_key(box.portfolio, int(jira_tasks(box)[2]))
    comment = client.add_comment(key, "Slipping two days")
    comment.update(body="Slipping three days")
    listed = client.comments(key)
    assert [c.body for c in listed] == ["Slipping three days"] and listed[0].id == comment.id


def test_issue_property_set_and_get(box: Sandbox) -> None:
    client = sdk(box)
    key = ids.jira_key(box.portfolio, int(jira_tasks(box)[3]))
    client.add_issue_property(key, "pmsync.forecast", {"finish": "2027-02-01", "slip_days": 3})
    assert client.issue_property(key, "pmsync.forecast").value.slip_days == 3
    assert [prop.key for prop in client.issue_properties(key)] == ["pmsync.forecast"]


def test_remote_links_point_at_the_predecessor_in_its_own_tool(box: Sandbox) -> None:
    p = box.portfolio
    k = int(p.links_of(LINK_REMOTE)[0])
    pred, succ = int(p.link_pred[k]), int(p.link_succ[k])
    links = sdk(box).remote_links(ids.jira_key(p, succ))
    urls = [link.object.url for link in links]
    assert ids.task_url(p, pred) in urls and {link.relationship for link in links} == {"is blocked by"}


def test_native_links_render_as_blocks_on_both_ends(box: Sandbox) -> None:
    p = box.portfolio
    native = p.links_of(LINK_NATIVE)
    k = int(native[p.tasks.tool[p.link_succ[native]] == JIRA_TOOL][0])
    pred, succ = int(p.link_pred[k]), int(p.link_succ[k])
    client = sdk(box)
    on_succ = client.issue(ids.jira_key(p, succ), fields="issuelinks").raw["fields"]["issuelinks"]
    on_pred = client.issue(ids.jira_key(p, pred), fields="issuelinks").raw["fields"]["issuelinks"]
    assert any(link.get("inwardIssue", {}).get("key") == ids.jira_key(p, pred) for link in on_succ)
    assert any(link.get("outwardIssue", {}).get("key") == ids.jira_key(p, succ)
               and link["type"]["name"] == "Blocks" for link in on_pred)


def test_deleted_issue_answers_jiras_404(box: Sandbox) -> None:
    p = box.portfolio
    leaf = next(int(i) for i in jira_tasks(box) if not np.any(p.tasks.view("parent") == i))
    with raw(box) as client:
        assert client.delete(f"/rest/api/3/issue/{ids.jira_issue_id(leaf)}").status_code == 204
        gone = client.get(f"/rest/api/3/issue/{ids.jira_issue_id(leaf)}")
    assert gone.status_code == 404 and gone.json()["errorMessages"] == [MSG_NOT_FOUND]
    assert p.tasks.deleted[leaf]


def test_wrong_token_gets_401(box: Sandbox) -> None:
    with raw(box, token="not-the-token") as client:
        response = client.get("/rest/api/3/myself")
    assert response.status_code == 401 and response.json()["errorMessages"]
    with pytest.raises(JIRAError) as failure:
        JIRA(server=box.urls["jira"], basic_auth=(EMAIL, "wrong"), max_retries=0)
    assert failure.value.status_code == 401


def test_burst_past_the_rate_limit_gets_429_with_retry_after(box: Sandbox) -> None:
    box.emulators["jira"].settings.rate_limit = RateLimit(limit=3, window_s=60)
    with raw(box) as client:
        responses = [client.get("/rest/api/3/serverInfo") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    limited = responses[-1]
    assert int(limited.headers["Retry-After"]) >= 1 and limited.headers["RateLimit-Reason"] == "jira-burst-based"
    assert limited.headers["X-RateLimit-Limit"] == "3" and responses[0].headers["X-RateLimit-Remaining"] == "2"


@pytest.mark.parametrize("kind", ["status", "malformed_json", "truncated", "invalid_record", "timeout", "reset"])
def test_injected_fault_is_seen_on_the_wire(box: Sandbox, kind: str) -> None:
    emulator = box.emulators["jira"]
    options = {"status": 503} if kind == "status" else {"delay_s": 0.05} if kind == "timeout" else {}
    emulator.inject(kind, path="/search/jql", **options)
    params = {"jql": "project = PLA ORDER BY key", "fields": "duedate,created"}
    with raw(box) as client:
        try:
            response: httpx.Response | None = client.get("/rest/api/3/search/jql", params=params)
        except httpx.TransportError:
            response = None
        healthy = client.get("/rest/api/3/search/jql", params=params)
    assert healthy.status_code == 200 and emulator.stats.faults == 1
    if kind == "reset":
        # The framework aborts the response; uvicorn then closes the connection after a bare text/plain 500.
        assert response is None or (response.status_code == 500 and b"errorMessages" not in response.content)
        return
    assert response is not None
    if kind in ("status", "timeout"):
        assert response.status_code == (503 if kind == "status" else 504) and response.json()["errorMessages"]
    elif kind in ("malformed_json", "truncated"):
        with pytest.raises(ValueError):
            response.json()
    elif kind == "invalid_record":
        first = response.json()["issues"][0]["fields"]
        assert first != healthy.json()["issues"][0]["fields"]
        assert first["duedate"] == "next tuesday-ish" or not isinstance(first["created"], str)
