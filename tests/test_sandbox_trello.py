"""The Trello emulator, driven by the real py-trello SDK over HTTP and by raw httpx where the SDK hides the wire."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from trello import TrelloClient
from trello.exceptions import Unauthorized
from urllib3.util.retry import Retry

from sandbox.core import CREDENTIALS, RateLimit
from sandbox.generator import DONE, LINK_ATTACHMENT, NO_DAY, TRELLO, day_number
from sandbox.ids import task_url, trello_id
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox
from sandbox.trello import normalize_path

TRELLO_CLOUD = "https://api.trello.com/1"
KEY, TOKEN = CREDENTIALS["trello"]["key"], CREDENTIALS["trello"]["token"]
AUTH = {"key": KEY, "token": TOKEN}


class SandboxSession(requests.Session):
    """py-trello's base URL is fixed to Trello Cloud: send its requests to the sandbox instead, with retries."""

    def __init__(self, api_url: str) -> None:
        super().__init__()
        self.api_url = api_url
        retry = Retry(total=3, backoff_factor=0.05, status_forcelist=(500, 502, 503, 504), allowed_methods=None)
        self.mount("http://", HTTPAdapter(max_retries=retry))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        return super().request(method, url.replace(TRELLO_CLOUD, self.api_url, 1), *args, **kwargs)


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A small sandbox serving only Trello (the other emulators are not what these tests pin), recording."""
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False, vendors=("trello",)) as sandbox_:
        sandbox_.emulators["trello"].settings.record = True
        yield sandbox_


@pytest.fixture
def client(box: Sandbox) -> TrelloClient:
    return TrelloClient(KEY, api_secret=TOKEN, http_service=SandboxSession(box.api_url("trello")))


@pytest.fixture
def http(box: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=box.api_url("trello"), params=AUTH, timeout=10) as c:
        yield c


def _board_of_index(box: Sandbox, index: int) -> Any:
    return box.portfolio.projects_of(TRELLO)[index]


def test_member_boards_are_the_portfolios_trello_projects(client, box):
    boards = client.list_boards()
    assert [b.name for b in boards] == [pr.name for pr in box.portfolio.projects_of(TRELLO)]
    assert all(len(b.id) == 24 and int(b.id, 16) >= 0 for b in boards)


def test_all_cards_match_the_portfolio_with_full_fields_and_custom_fields(client, box):
    p = box.portfolio
    project = _board_of_index(box, 0)
    board = client.get_board(client.list_boards()[0].id)
    cards = board.all_cards()
    expected = p.task_indexes(TRELLO, project.index)
    assert sorted(c.id for c in cards) == sorted(trello_id(p, int(i)) for i in expected)
    by_id = {c.id: c for c in cards}
    for i in expected[:40]:
        card = by_id[trello_id(p, int(i))]
        assert card.name == p.title(int(i))
        due = int(p.tasks.due[i])
        assert (card.due or None) == (None if due == NO_DAY else f"{p.as_of.fromordinal(due + 719163)}T17:00:00.000Z")
        assert card.is_due_complete == (int(p.tasks.status[i]) == DONE)
    estimates = [cf for c in cards for cf in c.customFields if cf.type == "number"]
    assert estimates and all(isinstance(cf.value, float) for cf in estimates)


def test_cards_are_in_status_lists_and_some_done_cards_are_archived(client, box):
    board = client.get_board(client.list_boards()[0].id)
    names = {lst.id: lst.name for lst in board.all_lists()}
    assert list(names.values()) == ["Backlog", "To Do", "Doing", "Review", "Done", "Won't do"]
    closed = board.closed_cards()
    assert closed and all(names[c.idList] == "Done" and c.closed for c in closed)
    assert len(board.open_cards()) + len(closed) == len(board.all_cards())


def test_custom_field_set_through_singular_card_path_reads_back_as_strings(client, box, http):
    board = client.get_board(client.list_boards()[0].id)
    definitions = {d.name: d for d in board.get_custom_field_definitions()}
    card = board.all_cards()[0]
    card.set_custom_field("7.5", definitions["Estimate (h)"])
    priority = definitions["Priority"]
    high = next(k for k, v in priority.list_options.items() if v == "High")
    card.set_custom_field("High", priority)
    items = http.get(f"/cards/{card.id}/customFieldItems").json()
    values = {item["idCustomField"]: item.get("value") or item.get("idValue") for item in items}
    assert values[definitions["Estimate (h)"].id] == {"number": "7.5"}
    assert values[priority.id] == high
    card.fetch()
    assert {cf.name: cf.value for cf in card.fetch_custom_fields()}["Estimate (h)"] == 7.5


def test_invalid_custom_field_value_is_refused_in_text(box, http):
    fields = http.get(f"/boards/{_board_id(box, http)}/customFields").json()
    number = next(f for f in fields if f["type"] == "number")
    card_id = _first_card_id(box, http)
    response = http.put(f"/card/{card_id}/customField/{number['id']}/item", json={"value": {"number": "lots"}})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Invalid custom field item value."


def test_several_custom_field_items_are_set_in_one_request_or_none_is(box, http):
    fields = {f["type"]: f for f in http.get(f"/boards/{_board_id(box, http)}/customFields").json()}
    number, listed = fields["number"], fields["list"]
    option = listed["options"][0]["id"]
    card_id = _first_card_id(box, http)

    refused = http.put(f"/cards/{card_id}/customFields", json={"customFieldItems": [
        {"idCustomField": number["id"], "value": {"number": "3"}},
        {"idCustomField": listed["id"], "idValue": "0" * 24}]})
    assert refused.status_code == 400
    kept = {i["idCustomField"]: i for i in http.get(f"/cards/{card_id}/customFieldItems").json()}
    assert (kept.get(number["id"]) or {}).get("value") != {"number": "3"}

    answered = http.put(f"/cards/{card_id}/customFields", json={"customFieldItems": [
        {"idCustomField": number["id"], "value": {"number": "3"}},
        {"idCustomField": listed["id"], "idValue": option}]})
    assert answered.status_code == 200
    items = {i["idCustomField"]: i for i in http.get(f"/cards/{card_id}/customFieldItems").json()}
    assert items[number["id"]]["value"] == {"number": "3"} and items[listed["id"]]["idValue"] == option
    actions = http.get(f"/cards/{card_id}/actions", params={"filter": "updateCustomFieldItem"}).json()
    assert {a["data"]["customField"]["id"] for a in actions[:2]} == {number["id"], listed["id"]}


def test_new_custom_field_can_be_created_and_set(client, box, http):
    board = client.get_board(client.list_boards()[0].id)
    definition = board.add_custom_field_definition("Customer", "text")
    card = board.all_cards()[1]
    response = http.put(f"/cards/{card.id}/customField/{definition.id}/item", json={"value": {"text": "Globex"}})
    assert response.status_code == 200 and response.json()["value"] == {"text": "Globex"}
    board.customFieldDefinitions = None
    assert {cf.name: cf.value for cf in board.get_card(card.id).fetch_custom_fields()}["Customer"] == "Globex"


def test_comments_are_added_edited_and_listed_as_actions(client, box):
    card = client.get_board(client.list_boards()[0].id).all_cards()[0]
    added = card.comment("Blocked on the vendor contract")
    assert added["type"] == "commentCard" and added["data"]["text"] == "Blocked on the vendor contract"
    card.update_comment(added["id"], "Unblocked")
    comments = card.get_comments()
    assert [c["data"]["text"] for c in comments] == ["Unblocked"]
    assert "dateLastEdited" in comments[0]["data"]


def test_generated_link_attachments_point_at_the_predecessor_task(client, box):
    p = box.portfolio
    k = int(p.links_of(LINK_ATTACHMENT)[0])
    succ, pred = int(p.link_succ[k]), int(p.link_pred[k])
    card = client.get_card(trello_id(p, succ))
    urls = [a.url for a in card.get_attachments()]
    assert task_url(p, pred) in urls


def test_url_attachment_added_by_a_client_is_listed_and_recorded(client, box, http):
    card = client.get_board(client.list_boards()[0].id).all_cards()[2]
    card.attach(name="Spec", url="https://docs.acme.example/spec")
    attachments = http.get(f"/cards/{card.id}/attachments").json()
    assert attachments[-1]["url"] == "https://docs.acme.example/spec" and attachments[-1]["isUpload"] is False
    actions = http.get(f"/cards/{card.id}/actions", params={"filter": "addAttachmentToCard"}).json()
    assert actions[0]["data"]["attachment"]["name"] == "Spec"


def test_due_change_through_the_sdk_is_an_update_card_action_keeping_the_old_due(client, box, http):
    p = box.portfolio
    card = client.get_board(client.list_boards()[0].id).all_cards()[3]
    i = int(card.id[16:], 16)
    old = int(p.tasks.due[i])
    card.set_due(datetime(2027, 1, 15, 12, 30, tzinfo=UTC))
    assert int(p.tasks.due[i]) == day_number(datetime(2027, 1, 15).date())
    assert p.due_changes(i)[-1].old_day == old
    newest = http.get(f"/cards/{card.id}/actions", params={"filter": "updateCard:due", "limit": 1}).json()[0]
    assert newest["data"]["card"]["due"] == "2027-01-15T17:00:00.000Z"
    assert newest["data"]["old"]["due"] == (None if old == NO_DAY else f"{p.as_of.fromordinal(old + 719163)}T17:00:00.000Z")
    assert http.get(f"/cards/{card.id}").json()["due"] == "2027-01-15T12:30:00.000Z"


def test_generated_due_history_appears_as_update_card_actions(box, http):
    p = box.portfolio
    i = next(int(i) for i in p.task_indexes(TRELLO) if p.tasks.reschedules[i] >= 2 and p.tasks.due[i] != NO_DAY)
    actions = http.get(f"/cards/{trello_id(p, i)}/actions", params={"filter": "updateCard:due"}).json()
    changes = p.due_changes(i)
    assert len(actions) == len(changes)
    assert [a["data"]["old"]["due"][:10] for a in reversed(actions)] == [
        p.as_of.fromordinal(c.old_day + 719163).isoformat() for c in changes]


def test_moving_a_card_to_done_completes_the_task_and_records_the_move(client, box, http):
    p = box.portfolio
    board = client.get_board(client.list_boards()[0].id)
    done = next(lst for lst in board.all_lists() if lst.name == "Done")
    card = next(c for c in board.open_cards() if c.idList != done.id)
    card.change_list(done.id)
    i = int(card.id[16:], 16)
    assert int(p.tasks.status[i]) == DONE
    move = http.get(f"/cards/{card.id}/actions").json()[0]
    assert move["data"]["listAfter"]["id"] == done.id and move["data"]["old"]["idList"] == card.idList


def test_created_card_is_listed_and_deleted_card_leaves_a_delete_action(client, box, http):
    board = client.get_board(client.list_boards()[0].id)
    todo = next(lst for lst in board.all_lists() if lst.name == "To Do")
    card = todo.add_card("Order rack rails", desc="Two sets")
    assert card.id in {c.id for c in board.all_cards()}
    card.delete()
    assert card.id not in {c.id for c in board.all_cards()}
    assert http.get(f"/cards/{card.id}").status_code == 404
    deleted = http.get(f"/boards/{board.id}/actions", params={"filter": "deleteCard"}).json()
    assert deleted[0]["data"]["card"]["id"] == card.id and "name" not in deleted[0]["data"]["card"]


def test_board_actions_page_newest_first_with_before(client, box):
    board = client.get_board(client.list_boards()[0].id)
    seen: list[dict] = []
    before = None
    while True:
        page = board.fetch_actions("all", action_limit=10, before=before)
        if not page:
            break
        seen.extend(page)
        before = page[-1]["id"]
    assert len(seen) == len(board.fetch_actions("all", action_limit=1000)) > 30
    ids = [a["id"] for a in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert {a["type"] for a in seen} >= {"createCard", "updateCard"}


def test_board_actions_since_an_action_id_returns_only_newer(box, http):
    board_id = _board_id(box, http)
    all_actions = http.get(f"/boards/{board_id}/actions", params={"limit": 1000}).json()
    cursor = all_actions[10]["id"]
    newer = http.get(f"/boards/{board_id}/actions", params={"since": cursor, "limit": 1000}).json()
    assert [a["id"] for a in newer] == [a["id"] for a in all_actions[:10]]


def test_board_cards_page_by_limit_and_before_walks_every_card_once(box, http):
    board_id = _board_id(box, http)
    everything = http.get(f"/boards/{board_id}/cards/all").json()
    walked, before = [], None
    while True:
        params = {"limit": 25, **({"before": before} if before else {})}
        page = http.get(f"/boards/{board_id}/cards/all", params=params).json()
        if not page:
            break
        walked.extend(c["id"] for c in page)
        before = page[-1]["id"]
    assert walked == sorted(walked, reverse=True)
    assert sorted(walked) == sorted(c["id"] for c in everything)


def test_limit_above_1000_is_refused(box, http):
    response = http.get(f"/boards/{_board_id(box, http)}/cards", params={"limit": 1001})
    assert response.status_code == 400 and response.text == "invalid value for limit"


def test_member_email_is_shown_only_to_its_owner(box, http):
    me = http.get("/members/me").json()
    assert me["email"] == CREDENTIALS["jira"]["email"]
    other = http.get(f"/boards/{_board_id(box, http)}/members").json()[1]
    assert "email" not in http.get(f"/members/{other['id']}").json()
    assert other["fullName"] == box.portfolio.people[int(other["id"][16:], 16)].display_name(TRELLO)


def test_wrong_key_or_token_gets_trellos_text_401(box, client):
    with httpx.Client(base_url=box.api_url("trello")) as c:
        wrong_key = c.get("/members/me", params={"key": "nope", "token": TOKEN})
        wrong_token = c.get("/members/me", params={"key": KEY, "token": "nope"})
        oauth = c.get("/members/me", headers={"Authorization": f'OAuth oauth_consumer_key="{KEY}", oauth_token="{TOKEN}"'})
    assert (wrong_key.status_code, wrong_key.text) == (401, "invalid key")
    assert (wrong_token.status_code, wrong_token.text) == (401, "invalid token")
    assert oauth.status_code == 200
    with pytest.raises(Unauthorized):
        TrelloClient(KEY, api_secret="nope", http_service=SandboxSession(box.api_url("trello"))).list_boards()


def test_burst_past_the_token_budget_gets_429_without_retry_after(box, http):
    box.emulators["trello"].settings.rate_limit = RateLimit(limit=5, window_s=60, send_retry_after=False)
    responses = [http.get("/members/me") for _ in range(8)]
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
    assert responses[0].headers["x-rate-limit-api-token-max"] == "5"
    assert responses[4].headers["x-rate-limit-api-token-remaining"] == "0"
    limited = responses[-1]
    assert "retry-after" not in limited.headers
    assert limited.json() == {"error": "API_TOKEN_LIMIT_EXCEEDED", "message": "Rate limit exceeded"}


def test_paths_with_double_slashes_and_singular_aliases_are_served(box, http):
    board_id = _board_id(box, http)
    assert normalize_path("/1//card/abc/") == "/1/cards/abc"
    assert http.get(f"/board/{board_id}").json()["id"] == board_id
    assert http.get(f"{box.api_url('trello')}//boards/{board_id}/lists").status_code == 200


def test_delete_answers_value_null(box, http):
    card_id = _first_card_id(box, http)
    response = http.delete(f"/cards/{card_id}")
    assert response.status_code == 200 and response.json() == {"_value": None}


def test_unknown_and_malformed_ids_get_trellos_texts(box, http):
    assert (http.get("/cards/0123456789abcdef01234567").status_code,
            http.get("/cards/0123456789abcdef01234567").text) == (404, "The requested resource was not found.")
    assert (http.get("/cards/not-an-id").status_code, http.get("/cards/not-an-id").text) == (400, "invalid id")


@pytest.mark.parametrize("kind, check", [
    ("status", lambda r: r.status_code == 503 and r.headers["content-type"].startswith("text/plain")),
    ("malformed_json", lambda r: r.status_code == 200 and _not_json(r.content)),
    ("truncated", lambda r: r.status_code == 200 and _not_json(r.content)),
    ("invalid_record", lambda r: r.status_code == 200 and any(c["due"] == "next tuesday-ish" for c in r.json())),
])
def test_each_injected_fault_appears_on_the_card_listing(box, http, kind, check):
    board_id = _board_id(box, http)
    box.emulators["trello"].inject(kind, status=503, path=r"/cards$")
    response = http.get(f"/boards/{board_id}/cards")
    assert check(response)
    assert http.get(f"/boards/{board_id}/cards").json()[0]["due"] != "next tuesday-ish"


def test_timeout_fault_holds_the_request_past_the_clients_patience(box, http):
    box.emulators["trello"].inject("timeout", path=r"/members/me$", delay_s=5)
    with pytest.raises(httpx.ReadTimeout):
        http.get("/members/me", timeout=0.3)


def _board_id(box: Sandbox, http: httpx.Client) -> str:
    return http.get("/members/me/boards").json()[0]["id"]


def _first_card_id(box: Sandbox, http: httpx.Client) -> str:
    return http.get(f"/boards/{_board_id(box, http)}/cards").json()[0]["id"]


def _not_json(body: bytes) -> bool:
    import orjson

    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return False


def test_a_board_created_through_the_api_is_empty_listed_and_takes_lists_and_cards(sandbox):
    import httpx

    from sandbox.core import CREDENTIALS

    auth = CREDENTIALS["trello"]
    base = sandbox.api_url("trello")
    board = httpx.post(f"{base}/boards", params={**auth, "name": "PMO portfolio"}).json()
    assert board["name"] == "PMO portfolio" and len(board["id"]) == 24
    mine = httpx.get(f"{base}/members/me/boards", params=auth).json()
    assert board["id"] in {b["id"] for b in mine}
    assert httpx.get(f"{base}/boards/{board['id']}/cards", params=auth).json() == []
    lists = httpx.get(f"{base}/boards/{board['id']}/lists", params=auth).json()
    card = httpx.post(f"{base}/cards", params={**auth, "idList": lists[0]["id"], "name": "Data launch"}).json()
    assert [c["id"] for c in httpx.get(f"{base}/boards/{board['id']}/cards", params=auth).json()] == [card["id"]]


def test_action_listings_render_only_the_fields_and_member_creator_asked_for(box, http):
    """`fields` and `memberCreator` on a board's actions, and `action_fields` and `action_memberCreator` on a card's
    nested ones, shape each action as Trello does: the id always, then only what was asked for."""
    board_id = _board_id(box, http)
    whole = http.get(f"/boards/{board_id}/actions", params={"limit": 1000}).json()
    assert {"id", "idMemberCreator", "data", "type", "date", "display", "memberCreator"} <= set(whole[0])
    lean = http.get(f"/boards/{board_id}/actions",
                    params={"limit": 1000, "fields": "type,date,data", "memberCreator": "false"}).json()
    assert [set(a) for a in lean] == [{"id", "type", "date", "data"}] * len(whole)
    assert [{k: a[k] for k in ("id", "type", "date", "data")} for a in whole] == lean
    with_creator = http.get(f"/boards/{board_id}/actions", params={"limit": 5, "fields": "type"}).json()
    assert [set(a) for a in with_creator] == [{"id", "type", "memberCreator"}] * 5
    assert [a["memberCreator"] for a in with_creator] == [a["memberCreator"] for a in whole[:5]]
    card_id = lean[0]["data"]["card"]["id"]
    card = http.get(f"/cards/{card_id}", params={"actions": "all", "action_fields": "date",
                                                  "action_memberCreator": "false"}).json()
    assert card["actions"] and all(set(a) == {"id", "date"} for a in card["actions"])
    refused = http.get(f"/boards/{board_id}/actions", params={"memberCreator": "maybe"})
    assert refused.status_code == 400
