"""The contract harness itself: the vendors' specs load, good exchanges pass, and departures are reported."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import requests

from .specs import (
    VENDORS,
    Exchange,
    assert_conforms,
    load_spec,
    match_operation,
    operations,
    require_specs,
    validate_exchange,
)

JSON = {"Content-Type": "application/json; charset=UTF-8"}
TRELLO_CARD_ID = "5abbe4b7ddc1b351ef961414"
TRELLO_BOARD_ID = "5abbe4b7ddc1b351ef961415"
TRELLO_LIST_ID = "5abbe4b7ddc1b351ef961416"


@pytest.fixture(autouse=True)
def _vendor_specs_present() -> None:
    require_specs()


def response(method: str, path: str, status: int, body: Any, **fields: Any) -> Exchange:
    """An exchange whose response carries ``body`` as JSON."""
    return Exchange(
        method=method,
        path=path,
        status=status,
        response_headers=JSON,
        response_body=orjson.dumps(body),
        **fields,
    )


def jira_issue(**overrides: Any) -> dict[str, Any]:
    fields = {"summary": "Pour the slab", "duedate": "2024-05-01", "status": {"name": "In Progress"}}
    return {
        "id": "10002",
        "key": "PLAT-1",
        "self": "https://acme.atlassian.net/rest/api/3/issue/10002",
        "fields": fields,
        **overrides,
    }


def asana_task(**overrides: Any) -> dict[str, Any]:
    project = {"gid": "1202", "resource_type": "project", "name": "Stuff to buy"}
    return {
        "gid": "1209",
        "resource_type": "task",
        "name": "Buy catnip",
        "resource_subtype": "default_task",
        "completed": False,
        "completed_at": None,
        "due_on": "2019-09-15",
        "due_at": None,
        "start_on": None,
        "assignee": None,
        "created_at": "2012-02-22T02:06:58.147Z",
        "modified_at": "2012-02-22T02:06:58.147Z",
        "notes": "Mittens really likes the stuff from Humboldt.",
        "parent": None,
        "projects": [project],
        "memberships": [
            {"project": project, "section": {"gid": "1", "resource_type": "section", "name": "Next"}}
        ],
        "custom_fields": [],
        "tags": [],
        "num_subtasks": 3,
        **overrides,
    }


def trello_card(**overrides: Any) -> dict[str, Any]:
    label = {"id": "5abbe4b7ddc1b351ef961420", "idBoard": TRELLO_BOARD_ID, "name": "Urgent", "color": "red"}
    return {
        "id": TRELLO_CARD_ID,
        "name": "👋 What? Why? How?",
        "desc": "",
        "closed": False,
        "idBoard": TRELLO_BOARD_ID,
        "idList": TRELLO_LIST_ID,
        "due": "2019-09-16T16:19:17.156Z",
        "dueComplete": False,
        "start": None,
        "dateLastActivity": "2019-09-16T16:19:17.156Z",
        "pos": 65535,
        "shortUrl": "https://trello.com/c/H0TZyzbK",
        "idLabels": [label["id"]],
        "labels": [label],
        "idMembers": [],
        "idChecklists": [],
        **overrides,
    }


def planner_task(**overrides: Any) -> dict[str, Any]:
    return {
        "@odata.etag": 'W/"JzEtVGFzayAgQEBAQEBAQEBAQEBAQEBAWCc="',
        "id": "01gzSlKkIUSUl6DF_EilrmQAKDhh",
        "planId": "xqQg5FS2LkCp935s-FIFm2QAFkHM",
        "bucketId": "gcrYAaAkgU2EQUvpkNNXLGQAGTtu",
        "title": "Order the racks",
        "percentComplete": 50,
        "priority": 5,
        "startDateTime": None,
        "dueDateTime": "2024-06-30T00:00:00Z",
        "completedDateTime": None,
        "createdDateTime": "2024-01-05T09:30:00Z",
        "assignments": {},
        "appliedCategories": {"category1": True},
        "orderHint": "8585269241124367253",
        **overrides,
    }


# --- loading ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "known_operation"),
    [
        ("jira", ("GET", "/rest/api/3/search/jql")),
        ("asana", ("GET", "/tasks/{task_gid}")),
        ("trello", ("GET", "/cards/{id}")),
        ("graph", ("GET", "/planner/tasks/{plannerTask-id}")),
    ],
)
def test_each_vendor_spec_loads_and_lists_its_operations(
    vendor: str, known_operation: tuple[str, str]
) -> None:
    spec = load_spec(vendor)
    assert spec["openapi"].startswith("3.0")
    assert known_operation in operations(vendor)


def test_a_spec_is_parsed_once_per_process() -> None:
    assert all(load_spec(vendor) is load_spec(vendor) for vendor in VENDORS)


def test_unknown_vendor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown vendor"):
        load_spec("basecamp")


def test_asana_integer_response_codes_become_strings() -> None:
    responses = load_spec("asana")["paths"]["/tasks/{task_gid}"]["get"]["responses"]
    assert "200" in responses
    assert all(isinstance(code, str) for code in responses)


def test_jira_examples_stored_as_json_text_are_parsed() -> None:
    media = load_spec("jira")["paths"]["/rest/api/3/search/jql"]["get"]["responses"]["200"]["content"]
    assert isinstance(media["application/json"]["example"], dict)


# --- routing ----------------------------------------------------------------------------------------------------


def test_literal_path_segments_win_over_templates() -> None:
    assert match_operation("jira", "GET", "/rest/api/3/issue/createmeta") == (
        "GET",
        "/rest/api/3/issue/createmeta",
    )
    assert match_operation("jira", "GET", "/rest/api/2/issue/PLAT-1") == (
        "GET",
        "/rest/api/3/issue/{issueIdOrKey}",
    )


def test_trello_singular_aliases_and_double_slashes_reach_the_plural_paths() -> None:
    assert match_operation("trello", "GET", f"/1//board/{TRELLO_BOARD_ID}/cards") == (
        "GET",
        "/boards/{id}/cards",
    )
    assert match_operation("trello", "PUT", f"/1/card/{TRELLO_CARD_ID}") == ("PUT", "/cards/{id}")


def test_vendor_prefixes_are_required() -> None:
    assert match_operation("asana", "GET", "/api/1.0/tasks/1209") == ("GET", "/tasks/{task_gid}")
    assert match_operation("asana", "GET", "/tasks/1209") is None
    assert match_operation("graph", "GET", "/v1.0/planner/tasks/abc") == (
        "GET",
        "/planner/tasks/{plannerTask-id}",
    )


# --- exchanges that conform ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["2", "3"])
def test_jira_search_jql_page_from_the_specs_own_example_conforms(api_version: str) -> None:
    media = load_spec("jira")["paths"]["/rest/api/3/search/jql"]["get"]["responses"]["200"]["content"]
    exchange = response(
        "GET",
        f"/rest/api/{api_version}/search/jql",
        200,
        media["application/json"]["example"],
        query={"jql": "project = PLAT"},
    )
    assert validate_exchange("jira", exchange) == []


def test_jira_search_jql_page_with_jira_style_timestamps_conforms() -> None:
    page = {
        "issues": [
            jira_issue(changelog={"histories": [{"id": "1", "created": "2023-06-24T19:24:50.000+0000"}]})
        ],
        "isLast": False,
        "nextPageToken": "CAEaAggD",
    }
    assert validate_exchange("jira", response("GET", "/rest/api/3/search/jql", 200, page)) == []


def test_asana_task_in_data_envelope_with_nulls_conforms() -> None:
    assert (
        validate_exchange("asana", response("GET", "/api/1.0/tasks/1209", 200, {"data": asana_task()})) == []
    )


def test_trello_card_with_label_objects_conforms() -> None:
    assert (
        validate_exchange("trello", response("GET", f"/1/cards/{TRELLO_CARD_ID}", 200, trello_card())) == []
    )


def test_trello_label_without_colour_conforms() -> None:
    label = {"id": "5abbe4b7ddc1b351ef961420", "idBoard": TRELLO_BOARD_ID, "name": "", "color": None}
    exchange = response("GET", f"/1/cards/{TRELLO_CARD_ID}", 200, trello_card(labels=[label]))
    assert validate_exchange("trello", exchange) == []


def test_asana_nullable_enum_admits_null() -> None:
    project = {"gid": "1202", "resource_type": "project", "name": "Launch", "color": None, "icon": None}
    assert validate_exchange("asana", response("GET", "/api/1.0/projects/1202", 200, {"data": project})) == []
    problems = validate_exchange(
        "asana", response("GET", "/api/1.0/projects/1202", 200, {"data": dict(project, icon="sparkles")})
    )
    assert len(problems) == 1
    assert "$.data.icon: 'sparkles' is not one of" in problems[0]


def test_trello_board_cards_are_checked_as_an_array_of_cards() -> None:
    path = f"/1/boards/{TRELLO_BOARD_ID}/cards"
    assert validate_exchange("trello", response("GET", path, 200, [trello_card()])) == []
    problems = validate_exchange("trello", response("GET", path, 200, [trello_card(closed="no")]))
    assert problems == [f"GET {path} -> 200: response body at $[0].closed: 'no' is not of type 'boolean'"]


def test_graph_planner_task_collection_with_odata_annotations_conforms() -> None:
    page = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#planner/plans('x')/tasks",
        "@odata.count": 1,
        "value": [planner_task()],
        "@odata.nextLink": None,
    }
    assert validate_exchange("graph", response("GET", "/v1.0/planner/plans/xqQg5FS2/tasks", 200, page)) == []


def test_graph_patch_with_if_match_answered_204_conforms() -> None:
    exchange = Exchange(
        method="PATCH",
        path="/v1.0/planner/tasks/01gzSlKk",
        request_headers={"If-Match": 'W/"x"', **JSON},
        request_body={"dueDateTime": "2024-07-01T00:00:00Z"},
        status=204,
    )
    assert validate_exchange("graph", exchange) == []


def test_undeclared_error_status_is_tolerated() -> None:
    exchange = response("GET", "/rest/api/3/search/jql", 429, {"errorMessages": ["Rate limit exceeded"]})
    assert validate_exchange("jira", exchange) == []


# --- departures that are reported ---------------------------------------------------------------------------------


def test_string_where_the_spec_says_integer_is_reported() -> None:
    problems = validate_exchange(
        "asana", response("GET", "/api/1.0/tasks/1209", 200, {"data": asana_task(num_subtasks="3")})
    )
    assert problems == [
        "GET /api/1.0/tasks/1209 -> 200: response body at $.data.num_subtasks: '3' is not of type 'integer'"
    ]


def test_object_where_the_spec_says_array_is_reported() -> None:
    problems = validate_exchange(
        "jira", response("GET", "/rest/api/2/search/jql", 200, {"issues": {}, "isLast": True})
    )
    assert problems == [
        "GET /rest/api/2/search/jql -> 200: response body at $.issues: {} is not of type 'array'"
    ]


def test_null_where_the_spec_does_not_allow_it_is_reported() -> None:
    problems = validate_exchange(
        "jira", response("GET", "/rest/api/3/search/jql", 200, {"issues": [], "isLast": None})
    )
    assert problems == [
        "GET /rest/api/3/search/jql -> 200: response body at $.isLast: None is not of type 'boolean'"
    ]


def test_missing_required_property_is_reported() -> None:
    board = {"name": "Datacenter move", "closed": False}
    problems = validate_exchange("trello", response("GET", f"/1/boards/{TRELLO_BOARD_ID}", 200, board))
    assert problems == [
        f"GET /1/boards/{TRELLO_BOARD_ID} -> 200: response body at $: 'id' is a required property"
    ]


def test_graph_error_answer_is_checked_against_the_default_response() -> None:
    problems = validate_exchange(
        "graph", response("GET", "/v1.0/planner/tasks/nope", 404, {"message": "Not found"})
    )
    assert problems == [
        "GET /v1.0/planner/tasks/nope -> 404: response body at $: 'error' is a required property"
    ]


def test_trello_id_that_is_not_24_hex_digits_is_reported() -> None:
    problems = validate_exchange("trello", response("GET", "/1/cards/c1", 200, trello_card(id="c1")))
    assert len(problems) == 1
    assert "$.id: 'c1' does not match" in problems[0]


def test_timestamp_that_is_not_iso_8601_is_reported() -> None:
    problems = validate_exchange(
        "asana", response("GET", "/api/1.0/tasks/1209", 200, {"data": asana_task(due_at="soon")})
    )
    assert problems == [
        "GET /api/1.0/tasks/1209 -> 200: response body at $.data.due_at: 'soon' is not a 'date-time'"
    ]


def test_trello_any_success_status_is_checked_against_the_200_schema() -> None:
    exchange = response("POST", "/1/cards", 201, trello_card(idShort="7"), query={"idList": TRELLO_LIST_ID})
    problems = validate_exchange("trello", exchange)
    assert problems == ["POST /1/cards -> 201: response body at $.idShort: '7' is not of type 'integer'"]


def test_trello_required_query_parameter_may_come_in_the_json_body() -> None:
    card = orjson.dumps({"idList": TRELLO_LIST_ID, "name": "Order racks"})
    sent_in_body = response("POST", "/1/cards", 200, trello_card(), request_body=card, request_headers=JSON)
    assert validate_exchange("trello", sent_in_body) == []
    missing = response(
        "POST", "/1/cards", 200, trello_card(), request_body=b'{"name": "x"}', request_headers=JSON
    )
    assert validate_exchange("trello", missing) == [
        "POST /1/cards -> 200: request lacks required query parameter 'idList'"
    ]


def test_undeclared_success_status_is_reported() -> None:
    problems = validate_exchange("jira", response("GET", "/rest/api/3/search/jql", 201, {"issues": []}))
    assert len(problems) == 1
    assert "status 201 is not declared" in problems[0]


@pytest.mark.parametrize(
    ("vendor", "method", "path", "reason"),
    [
        ("jira", "GET", "/rest/api/3/no/such/resource", "no path template matches"),
        ("jira", "GET", "/rest/agile/1.0/board/1", "outside the vendor's API prefix"),
        ("asana", "PATCH", "/api/1.0/tasks/1209", "declares only DELETE, GET, PUT"),
        ("graph", "GET", "/v1.0/me/drive", "no path template matches"),
    ],
)
def test_unknown_operation_is_reported_as_not_in_spec(
    vendor: str, method: str, path: str, reason: str
) -> None:
    problems = validate_exchange(vendor, response(method, path, 200, {}))
    assert len(problems) == 1
    assert problems[0].startswith(f"{method} {path} -> 200: operation not in spec")
    assert reason in problems[0]


def test_json_write_whose_body_breaks_the_request_schema_is_reported() -> None:
    exchange = response(
        "PUT",
        "/api/1.0/tasks/1209",
        200,
        {"data": asana_task()},
        request_headers=JSON,
        request_body=b'{"data": {"completed": "yes"}}',
    )
    problems = validate_exchange("asana", exchange)
    assert problems == [
        "PUT /api/1.0/tasks/1209 -> 200: request body at $.data.completed: 'yes' is not of type 'boolean'"
    ]


def test_missing_required_header_parameter_is_reported() -> None:
    exchange = Exchange(
        method="PATCH",
        path="/v1.0/planner/tasks/01gzSlKk",
        request_headers=JSON,
        request_body={"percentComplete": 100},
        status=204,
    )
    problems = validate_exchange("graph", exchange)
    assert problems == [
        "PATCH /v1.0/planner/tasks/01gzSlKk -> 204: request lacks required header parameter 'If-Match'"
    ]


def test_response_without_content_type_or_not_json_is_reported() -> None:
    no_type = Exchange(
        method="GET",
        path="/api/1.0/tasks/1209",
        status=200,
        response_body=orjson.dumps({"data": asana_task()}),
    )
    assert validate_exchange("asana", no_type) == [
        "GET /api/1.0/tasks/1209 -> 200: response has no Content-Type header"
    ]
    html = Exchange(
        method="GET", path="/api/1.0/tasks/1209", status=200, response_headers=JSON, response_body=b"<html>"
    )
    problems = validate_exchange("asana", html)
    assert len(problems) == 1
    assert "response body is not JSON" in problems[0]


def test_assert_conforms_lists_every_problem() -> None:
    exchanges = [
        response("GET", "/api/1.0/tasks/1", 200, {"data": asana_task(num_subtasks="3")}),
        response("GET", "/api/1.0/tasks/2", 200, {"data": asana_task(completed="no")}),
        response("GET", "/api/1.0/tasks/3", 200, {"data": asana_task()}),
    ]
    with pytest.raises(AssertionError) as failure:
        assert_conforms("asana", exchanges)
    message = str(failure.value)
    assert "2 departure(s) from the asana spec" in message
    assert "/tasks/1 -> 200" in message and "/tasks/2 -> 200" in message and "/tasks/3" not in message


def test_assert_conforms_excuses_only_allowed_problems() -> None:
    agile = response("GET", "/rest/agile/1.0/board/1/issue", 200, {"issues": []})
    broken = response("GET", "/rest/api/3/search/jql", 200, {"issues": {}})
    assert_conforms("jira", [agile], allow=["GET /rest/agile/1.0/*"])
    with pytest.raises(AssertionError, match=r"1 departure\(s\)"):
        assert_conforms("jira", [agile, broken], allow=["* operation not in spec"])


def test_assert_conforms_refuses_an_empty_recording() -> None:
    with pytest.raises(AssertionError, match="no exchanges"):
        assert_conforms("trello", [])


# --- building exchanges from client responses -------------------------------------------------------------------


def test_exchange_from_httpx_keeps_path_query_headers_and_bodies() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": asana_task()})

    with httpx.Client(transport=httpx.MockTransport(answer), base_url="https://app.asana.com") as client:
        sent = client.put(
            "/api/1.0/tasks/1209", params={"opt_fields": "name"}, json={"data": {"completed": True}}
        )
    exchange = Exchange.from_httpx(sent)
    assert (exchange.method, exchange.path, exchange.status) == ("PUT", "/api/1.0/tasks/1209", 200)
    assert exchange.query == [("opt_fields", "name")]
    assert orjson.loads(exchange.request_body) == {"data": {"completed": True}}
    assert validate_exchange("asana", exchange) == []


def test_exchange_from_requests_keeps_path_query_and_bodies() -> None:
    prepared = requests.Request(
        "GET", "https://api.trello.com/1/cards/" + TRELLO_CARD_ID, params={"fields": "all"}
    ).prepare()
    answered = requests.Response()
    answered.status_code, answered.request, answered._content = (
        200,
        prepared,
        orjson.dumps(trello_card(closed=1)),
    )
    answered.headers.update(JSON)
    exchange = Exchange.from_requests(answered)
    assert (exchange.path, exchange.query) == (f"/1/cards/{TRELLO_CARD_ID}", [("fields", "all")])
    assert validate_exchange("trello", exchange) == [
        f"GET /1/cards/{TRELLO_CARD_ID} -> 200: response body at $.closed: 1 is not of type 'boolean'"
    ]
