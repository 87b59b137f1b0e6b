"""Every exchange py-trello (and a raw client) has with the Trello emulator conforms to Trello's OpenAPI spec."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from trello import TrelloClient

from sandbox.core import CREDENTIALS
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox
from tests.contract.specs import Exchange, assert_conforms, require_specs
from tests.test_sandbox_trello import SandboxSession

KEY, TOKEN = CREDENTIALS["trello"]["key"], CREDENTIALS["trello"]["token"]

# Departures kept on purpose, each the real API's behaviour where the spec says otherwise.
ALLOWED = (
    # Trello answers a created attachment as one object; the spec declares an array.
    "POST /1/cards/*/attachments -> 200: response body at $: * is not of type 'array'",
    # py-trello writes single fields through `PUT /cards/{id}/{field}` (`due`, `idList`...), which Trello
    # accepts; the spec declares only GET there.
    "PUT /1/cards/* -> 200: operation not in spec (/cards/{id}/{field} declares only GET)",
    # py-trello creates custom fields without `pos`, which Trello accepts; the spec marks it required.
    "POST /1/customFields -> 200: request body at $: 'pos' is a required property",
    # The spec's item body is a oneOf whose branches require nothing, so every valid body matches both.
    "PUT /1/cards/*/customField/*/item -> 200: request body at $: * is valid under each of",
    # Trello's errors are text/plain; the spec declares JSON error bodies for 401/404.
    "* -> 401: response Content-Type text/plain is not declared",
    "* -> 404: response Content-Type text/plain is not declared",
)


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    require_specs()
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=True, vendors=("trello",)) as sandbox_:
        sandbox_.emulators["trello"].settings.record = True
        sandbox_.emulators["trello"].settings.rate_limit.limit = 10_000
        yield sandbox_


def _exchanges(box: Sandbox) -> list[Exchange]:
    return [Exchange.from_recorded(r) for r in box.emulators["trello"].recorded]


def test_sdk_session_conforms_to_the_trello_spec(box):
    client = TrelloClient(KEY, api_secret=TOKEN, http_service=SandboxSession(box.api_url("trello")))
    board = client.get_board(client.list_boards()[0].id)
    board.fetch()
    lists = board.all_lists()
    cards = board.all_cards()
    board.open_cards()
    board.get_members()
    board.get_labels()
    definitions = {d.name: d for d in board.get_custom_field_definitions()}
    board.add_custom_field_definition("Customer", "text")
    board.fetch_actions("all", action_limit=20)
    card = cards[0]
    card.fetch()
    card.set_custom_field("3", definitions["Estimate (h)"])
    comment = card.comment("Waiting on legal")
    card.update_comment(comment["id"], "Legal signed")
    card.get_comments()
    card.attach(name="Spec", url="https://docs.acme.example/spec")
    card.get_attachments()
    card.set_due(datetime(2027, 2, 1, tzinfo=UTC))
    card.change_list(lists[-2].id)
    card.fetch_actions("updateCard:due")
    lists[1].list_cards()
    lists[1].add_card("Order rack rails").delete()
    client.get_card(cards[1].id)
    assert_conforms("trello", _exchanges(box), allow=ALLOWED)


def test_raw_reads_and_writes_conform_to_the_trello_spec(box):
    base = box.api_url("trello")
    with httpx.Client(base_url=base, params={"key": KEY, "token": TOKEN}) as http:
        board_id = http.get("/members/me/boards").json()[0]["id"]
        http.get("/members/me")
        http.get(f"/boards/{board_id}", params={"lists": "open", "cards": "all", "customFields": "true",
                                                  "labels": "all", "card_customFieldItems": "true"})
        cards = http.get(f"/boards/{board_id}/cards", params={"limit": 1000, "customFieldItems": "true",
                                                                "attachments": "true"}).json()
        http.get(f"/boards/{board_id}/cards/closed", params={"fields": "id,name,due,closed"})
        http.get(f"/boards/{board_id}/actions", params={"filter": "updateCard,deleteCard,commentCard",
                                                         "limit": 1000})
        card_id = cards[0]["id"]
        http.get(f"/cards/{card_id}", params={"customFieldItems": "true", "attachments": "true",
                                              "actions": "commentCard"})
        http.get(f"/cards/{card_id}/customFieldItems")
        http.get(f"/cards/{card_id}/checklists")
        http.put(f"/cards/{card_id}", params={"due": "2027-03-01T17:00:00.000Z", "dueComplete": "true",
                                              "name": "Renamed", "desc": "Moved after review"})
        comment = http.post(f"/cards/{card_id}/actions/comments", params={"text": "Started"}).json()
        http.put(f"/actions/{comment['id']}/text", params={"value": "Started today"})
        http.get(f"/actions/{comment['id']}")
        http.delete(f"/actions/{comment['id']}")
        http.post(f"/cards/{card_id}/attachments", params={"url": "https://acme.example/x"})
        fields = http.get(f"/boards/{board_id}/customFields").json()
        http.get(f"/customFields/{fields[0]['id']}")
        new_field = http.post("/customFields", json={"idModel": board_id, "modelType": "board", "name": "Go-live",
                                                     "type": "date", "pos": "bottom"}).json()
        http.put(f"/cards/{card_id}/customField/{new_field['id']}/item",
                 json={"value": {"date": "2027-03-01T00:00:00.000Z"}})
        created = http.post("/cards", params={"idList": cards[0]["idList"], "name": "New", "due": "2027-01-01"})
        http.delete(f"/cards/{created.json()['id']}")
        http.get("/cards/0123456789abcdef01234567")
        http.get("/members/me", params={"token": "wrong"})
    assert_conforms("trello", _exchanges(box), allow=ALLOWED)
