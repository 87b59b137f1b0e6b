"""Trello write-back against the Trello emulator: pmsync's custom-field items and comment on every card, its
portfolio board, and what a push must never touch. The tool is synced into DuckDB, the schedule computed, and
the plan pushed; everything is read back through py-trello."""
from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import incremental_sync
from trello import TrelloClient

from connectors.base import Write
from connectors.registry import build_connector
from connectors.trello import ITEM_MARK, PMSYNC_FIELDS, TrelloConnector, health_list_name, own_edits_only
from pmsync.config import Config, load_config
from pmsync.run import open_config_warehouse, run_sync
from sandbox.core import CREDENTIALS
from sandbox.generator import TRELLO, day_number
from sandbox.pytest_plugin import TEST_AS_OF
from sandbox.server import Sandbox, native_id, task_uid
from schedule.compute import compute_and_store
from warehouse.base import Warehouse
from writeback.plan import plan_writes

HAS_PUSH = importlib.util.find_spec("writeback.push") is not None
FIELD_NAMES = [name for name, _, _ in PMSYNC_FIELDS]
CARD_OWN_FIELDS = ("name", "desc", "due", "start", "dueComplete", "idList", "closed", "idMembers", "idLabels", "pos")


@pytest.fixture
def box(sandbox: Sandbox) -> Sandbox:
    """A small sandbox of the test's own, which it may change."""
    return sandbox


def trello_config(box: Sandbox, tmp_path: Path, portfolio_board: str | None = None, also: tuple[str, ...] = (),
                  **connection: Any) -> Config:
    """A configuration with just the sandbox's Trello connection (paced fast: the emulator has no limits), plus
    the connections of the tools in `also`."""
    raw = box.config(f"duckdb:///{tmp_path / 'pmsync.duckdb'}")
    conn = next(c for c in raw["connections"] if c["tool"] == "trello")
    conn.update({"rate_limit": {"requests_per_second": 5000}, **connection})
    raw["connections"] = [conn, *(c for c in raw["connections"] if c["tool"] in also)]
    raw["links"] = []
    if portfolio_board:
        raw["writeback"] = {"portfolio": {"trello_board": {"connection": conn["name"], "id": portfolio_board}}}
    path = tmp_path / "pmsync.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def sync_and_schedule(config: Config) -> Warehouse:
    outcome = run_sync(config, None)
    assert outcome.ok, outcome.failures
    warehouse = open_config_warehouse(config)
    compute_and_store(warehouse, config, TEST_AS_OF)
    return warehouse


def push(config: Config, warehouse: Warehouse, connector: TrelloConnector) -> None:
    """A push through `writeback.push.run_push` where it exists; else the planned writes through the connector,
    recorded in the ledger the way a push records them."""
    if HAS_PUSH:
        from writeback.push import run_push

        run_push(config)
        return
    from writeback.ledger import record_failed, record_written

    for row in plan_writes(warehouse, config).query("needed").itertuples(index=False):
        try:
            result = connector.write(Write(row.target, row.native_id, row.payload, row.previous, row.remote_ref))
        except Exception as error:  # noqa: BLE001 - a push records any failure and goes on
            record_failed(warehouse, row.target, row.connection, row.task_uid, error=str(error))
            continue
        record_written(warehouse, row.target, row.connection, row.task_uid, payload=row.payload,
                       payload_hash=row.payload_hash, remote_ref=result.remote_ref)


def sdk(box: Sandbox) -> TrelloClient:
    from requests import Session

    session = Session()
    base = box.api_url("trello")

    class Rebased(Session):
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            return session.request(method, url.replace("https://api.trello.com/1", base), *args, **kwargs)

    creds = CREDENTIALS["trello"]
    return TrelloClient(creds["key"], api_secret=creds["token"], http_service=Rebased())


def cards_by_id(client: TrelloClient, boards: list[str]) -> dict[str, dict[str, Any]]:
    """Every card of the boards (archived too) as Trello holds it, with its custom-field items by field name."""
    out = {}
    for board_id in boards:
        definitions = {d["id"]: d for d in client.fetch_json(f"boards/{board_id}/customFields")}
        for card in client.fetch_json(f"boards/{board_id}/cards/all", query_params={"customFieldItems": "true"}):
            card["items"] = {definitions[i["idCustomField"]]["name"]: read_item(definitions[i["idCustomField"]], i)
                             for i in card.get("customFieldItems") or ()}
            out[card["id"]] = card
    return out


def read_item(definition: dict[str, Any], item: dict[str, Any]) -> Any:
    if definition["type"] == "list":
        return next(o["value"]["text"] for o in definition["options"] if o["id"] == item.get("idValue"))
    value = item["value"]
    return value.get("number") or value.get("date") or value.get("text") or value.get("checked")


def comments_of(client: TrelloClient, card_id: str) -> list[dict[str, Any]]:
    return client.fetch_json(f"cards/{card_id}/actions", query_params={"filter": "commentCard"})


def schedule_by_native_id(warehouse: Warehouse) -> pd.DataFrame:
    tasks = warehouse.read("tasks", "deleted_at IS NULL")[["task_uid", "native_id"]]
    return tasks.merge(warehouse.read("schedule"), on="task_uid").set_index("native_id")


def user_fields(cards: dict[str, dict[str, Any]]) -> dict[str, tuple]:
    """What belongs to the card's people: its own fields and custom-field items other than pmsync's."""
    return {card_id: (tuple(str(card.get(k)) for k in CARD_OWN_FIELDS),
                      tuple(sorted((k, str(v)) for k, v in card["items"].items() if k not in FIELD_NAMES)))
            for card_id, card in cards.items()}


def test_push_writes_every_cards_schedule_once_and_touches_nothing_of_the_users(box: Sandbox, tmp_path: Path) -> None:
    config = trello_config(box, tmp_path)
    connection = config.connections[0]
    connector = build_connector(connection)
    emulator = box.emulators["trello"]
    client = sdk(box)
    warehouse = sync_and_schedule(config)
    before = cards_by_id(client, connection.boards)

    created = connector.setup_writeback(connection.boards)
    writes_after_setup = emulator.stats.writes
    assert len(created) == 3 * len(connection.boards)
    assert build_connector(connection).setup_writeback(connection.boards) == []
    assert emulator.stats.writes == writes_after_setup

    push(config, warehouse, connector)
    after = cards_by_id(client, connection.boards)
    schedule = schedule_by_native_id(warehouse)
    assert len(schedule) > 30 and set(schedule.index) <= set(after)
    for card_id, row in schedule.iterrows():
        items = after[card_id]["items"]
        slip = None if pd.isna(row["slip_days"]) else int(row["slip_days"])
        forecast = None if pd.isna(row["forecast_finish"]) else pd.Timestamp(row["forecast_finish"]).date()
        assert (float(items["pmsync slip days"]) if "pmsync slip days" in items else None) == slip, card_id
        shown = items.get("pmsync forecast finish")
        assert (pd.Timestamp(shown).date() if shown else None) == forecast, card_id
        assert items.get("pmsync state") == row["state"], card_id
        mine = [c for c in comments_of(client, card_id) if c["data"]["text"].startswith("pmsync")]
        assert len(mine) == (0 if row["state"] == "on_track" else 1), card_id
    assert user_fields(after) == user_fields(before)

    writes = emulator.stats.writes
    push(config, warehouse, build_connector(connection))
    assert emulator.stats.writes == writes


def test_a_state_change_edits_the_comment_in_place_and_a_deleted_comment_comes_back(
        box: Sandbox, tmp_path: Path) -> None:
    config = trello_config(box, tmp_path)
    connection = config.connections[0]
    client = sdk(box)
    warehouse = sync_and_schedule(config)
    push(config, warehouse, build_connector(connection))
    schedule = schedule_by_native_id(warehouse)
    p = box.portfolio
    late = [i for i in p.task_indexes(TRELLO, None, False)
            if native_id(p, int(i)) in schedule.index and schedule.loc[native_id(p, int(i)), "state"] == "late"]
    assert late, "the sandbox has late cards"
    i = int(late[0])
    card_id = native_id(p, i)
    (first,) = [c for c in comments_of(client, card_id) if c["data"]["text"].startswith("pmsync")]

    box.call(p.set_due, i, day_number(TEST_AS_OF) + 30, -1)
    warehouse = sync_and_schedule(config)
    assert schedule_by_native_id(warehouse).loc[card_id, "state"] != "late"
    push(config, warehouse, build_connector(connection))
    (edited,) = [c for c in comments_of(client, card_id) if c["data"]["text"].startswith("pmsync")]
    assert edited["id"] == first["id"]
    assert edited["data"]["text"] != first["data"]["text"]

    client.fetch_json(f"actions/{edited['id']}", http_method="DELETE")
    box.call(p.set_due, i, day_number(TEST_AS_OF) - 5, -1)
    warehouse = sync_and_schedule(config)
    push(config, warehouse, build_connector(connection))
    (again,) = [c for c in comments_of(client, card_id) if c["data"]["text"].startswith("pmsync")]
    assert again["id"] != first["id"]
    assert task_uid(p, i) in set(warehouse.read("schedule")["task_uid"])


@pytest.mark.skipif(not HAS_PUSH, reason="writeback/push.py (run_push) does not exist yet")
def test_writes_failing_with_500_are_recorded_and_completed_by_the_next_push(box: Sandbox, tmp_path: Path,
                                                                             monkeypatch) -> None:
    # Every field write fails while the comments succeed; with four writers the order in which they end varies, and
    # five field failures ending in a row would stop the push (the tool looks down) before some comments. That
    # stop is not what this test is about: it is kept out of reach here.
    monkeypatch.setattr("writeback.push.MAX_CONSECUTIVE_FAILURES", 10**6)
    config = trello_config(box, tmp_path, rate_limit={"requests_per_second": 5000, "max_retries": 1,
                                                      "max_wait_seconds": 0.01})
    connection = config.connections[0]
    build_connector(connection).setup_writeback(connection.boards)
    warehouse = sync_and_schedule(config)
    emulator = box.emulators["trello"]
    fault = emulator.inject("status", status=500, method="PUT", times=-1)
    push(config, warehouse, build_connector(connection))
    ledger = warehouse.read("writeback_ledger")
    failed = ledger[ledger["target"] == "trello.custom_fields"]
    assert len(failed) and (failed["status"] == "failed").all()
    assert (ledger[ledger["target"] == "trello.comment"]["status"] == "written").all()

    emulator.faults.remove(fault)
    push(config, warehouse, build_connector(connection))
    ledger = warehouse.read("writeback_ledger")
    assert (ledger["status"] == "written").all(), ledger.loc[ledger["status"] != "written", ["target", "task_uid", "error"]].to_dict("records")
    schedule = schedule_by_native_id(warehouse)
    cards = cards_by_id(sdk(box), connection.boards)
    assert all(cards[card_id]["items"].get("pmsync state") == state for card_id, state in schedule["state"].items())


def portfolio_cards(client: TrelloClient, board_id: str) -> dict[str, dict[str, Any]]:
    lists = {item["id"]: item["name"] for item in client.fetch_json(f"boards/{board_id}/lists")}
    cards = client.fetch_json(f"boards/{board_id}/cards/all")
    return {card["id"]: {**card, "list": lists[card["idList"]]} for card in cards if ITEM_MARK in card["desc"]}


def test_portfolio_board_holds_one_card_per_project_and_milestone_and_archives_vanished_ones(
        box: Sandbox, tmp_path: Path) -> None:
    p = box.portfolio
    boards = [pr.index for pr in p.projects_of(TRELLO)]
    container = native_board_id(box, boards[0])
    # The container is not synced itself: its cards are pmsync's items, not work to schedule.
    config = trello_config(box, tmp_path, portfolio_board=container, also=("asana",),
                           boards=[native_board_id(box, b) for b in boards[1:]])
    connection = config.connections[0]
    client = sdk(box)
    build_connector(connection).setup_writeback([container])
    warehouse = sync_and_schedule(config)
    planned = plan_writes(warehouse, config).query("target == 'portfolio.item'")
    sources = warehouse.read("projects")
    tasks = warehouse.read("tasks", "deleted_at IS NULL")
    milestones = tasks[tasks["is_milestone"].fillna(False).astype(bool)
                       & tasks["project_uid"].isin(sources["project_uid"])]
    assert len(milestones) > 0
    assert sorted(planned["task_uid"]) == sorted([*sources["project_uid"], *milestones["task_uid"]])
    push(config, warehouse, build_connector(connection))

    cards = portfolio_cards(client, container)
    assert len(cards) == len(planned)
    for row in planned.itertuples(index=False):
        (card,) = [c for c in cards.values() if c["name"] == row.payload["title"]]
        assert card["list"] == health_list_name(row.payload["health"])
        assert not card["closed"]
    writes = box.emulators["trello"].stats.writes
    push(config, warehouse, build_connector(connection))
    assert box.emulators["trello"].stats.writes == writes
    assert portfolio_cards(client, container) == cards

    milestone = next(row for row in planned.itertuples(index=False) if row.payload["kind"] == "milestone")
    i = next(int(i) for i in range(p.tasks.size) if task_uid(p, i) == milestone.task_uid)
    box.call(p.delete, i)
    warehouse = sync_and_schedule(config)
    push(config, warehouse, build_connector(connection))
    after = portfolio_cards(client, container)
    assert set(after) == set(cards)
    closed = [c for c in after.values() if c["closed"]]
    assert [c["name"] for c in closed] == [milestone.payload["title"]]


def test_portfolio_item_moves_between_health_lists_and_recreates_a_deleted_card(box: Sandbox) -> None:
    p = box.portfolio
    board = native_board_id(box, [pr.index for pr in p.projects_of(TRELLO)][0])
    raw = {"name": "ops-trello", "tool": "trello", "base_url": box.api_url("trello"),
           "auth": CREDENTIALS["trello"], "boards": [board], "rate_limit": {"requests_per_second": 5000}}
    from pmsync.config import TrelloConnection

    connector = TrelloConnector.from_config(TrelloConnection.model_validate(raw))
    client = sdk(box)
    payload = {"kind": "project", "title": "Platform (Jira)", "tool": "jira", "health": "green", "state": None,
               "forecast_finish": "2026-12-01", "baseline_due": "2026-11-20", "slip_days": 11,
               "url": "https://acme.atlassian.net/browse/PLAT"}
    first = connector.write(Write("portfolio.item", board, payload))
    again = connector.write(Write("portfolio.item", board, {**payload, "health": "red"}, payload, first.remote_ref))
    assert again.remote_ref == first.remote_ref
    assert portfolio_cards(client, board)[first.remote_ref]["list"] == "Red"

    fresh = TrelloConnector.from_config(TrelloConnection.model_validate(raw))
    found = fresh.write(Write("portfolio.item", board, {**payload, "health": "amber"}))
    assert found.remote_ref == first.remote_ref, "a lost ledger row finds pmsync's card instead of adding one"

    client.fetch_json(f"cards/{first.remote_ref}", http_method="DELETE")
    recreated = fresh.write(Write("portfolio.item", board, payload, payload, first.remote_ref))
    assert recreated.remote_ref != first.remote_ref
    assert [c["list"] for c in portfolio_cards(client, board).values()] == ["Green"]


def native_board_id(box: Sandbox, board: int) -> str:
    from sandbox import ids

    return ids.trello_object_id(box.portfolio, 1, board)


def test_a_push_leaves_due_dates_unchanged_in_the_portfolio_truth(box: Sandbox, tmp_path: Path) -> None:
    config = trello_config(box, tmp_path)
    p = box.portfolio
    due_before = p.tasks.due.copy()
    status_before = p.tasks.status.copy()
    warehouse = sync_and_schedule(config)
    push(config, warehouse, build_connector(config.connections[0]))
    assert (p.tasks.due[: len(due_before)] == due_before).all()
    assert (p.tasks.status[: len(status_before)] == status_before).all()


def test_values_a_board_cannot_take_before_setup_are_written_once_setup_has_run(box: Sandbox, tmp_path: Path) -> None:
    from writeback.push import run_push

    config = trello_config(box, tmp_path)
    run_sync(config)
    with open_config_warehouse(config) as warehouse:
        compute_and_store(warehouse, config, as_of=TEST_AS_OF)
    before = run_push(config).results["ops-trello"]
    assert before.skipped > 0 and before.failed == 0
    after = run_push(config, setup=True).results["ops-trello"]
    assert after.skipped == 0 and after.written >= before.skipped
    with open_config_warehouse(config) as warehouse:
        assert warehouse.count("writeback_ledger", "status = 'skipped'") == 0


@pytest.mark.skipif(not HAS_PUSH, reason="writeback/push.py (run_push) does not exist yet")
def test_the_sync_after_a_push_leaves_out_pmsyncs_own_edits_and_reads_everyone_elses(box: Sandbox,
                                                                                       tmp_path: Path) -> None:
    from writeback.push import run_push

    config = trello_config(box, tmp_path)
    connection = config.connections[0]
    sync_and_schedule(config).close()
    assert build_connector(connection).setup_writeback(connection.boards)
    pushed = run_push(config)
    assert pushed.ok and pushed.results[connection.name].written > 30
    client = sdk(box)
    cards = cards_by_id(client, connection.boards)
    written = sorted(card_id for card_id, card in cards.items() if "pmsync state" in card["items"]
                     and not card.get("closed"))
    due_moved, moved, estimated = written[:3]
    # Someone else's changes through py-trello on three cards pmsync wrote: a due date, a list, and a custom
    # field that is not pmsync's (by the same token's member, so the field, not the member, tells them apart).
    client.get_card(due_moved).set_due(datetime(2031, 1, 15, 12, tzinfo=UTC))
    lists = client.get_board(cards[moved]["idBoard"]).all_lists()
    other_list = next(found for found in lists if found.id != cards[moved]["idList"])
    client.get_card(moved).change_list(other_list.id)
    board_fields = {d["name"]: d for d in client.fetch_json(f"boards/{cards[estimated]['idBoard']}/customFields")}
    client.fetch_json(f"cards/{estimated}/customField/{board_fields['Estimate (h)']['id']}/item",
                      http_method="PUT", post_args={"value": {"number": "99"}})

    result, card_reads = incremental_sync(config, box.emulators["trello"], "GET /1/cards/{id}")
    # Only the three cards someone else changed are read again; the push echo (an updateCustomFieldItem action
    # per field pmsync wrote on every card) is left out.
    assert result.loaded == 3
    assert card_reads == 3
    with open_config_warehouse(config) as warehouse:
        tasks = warehouse.read("tasks", columns=["native_id", "status", "due_date", "estimate_hours"],
                               ).set_index("native_id")
    assert pd.Timestamp(tasks.loc[due_moved, "due_date"]).date().isoformat() == "2031-01-15"
    assert tasks.loc[moved, "status"] == other_list.name
    assert tasks.loc[estimated, "estimate_hours"] == 99


def test_only_pmsync_field_updates_by_the_tokens_member_count_as_its_own_edits() -> None:
    def action(card: str, kind: str, member: str = "me", field_id: str | None = "f-state") -> dict[str, Any]:
        data: dict[str, Any] = {"card": {"id": card}}
        if field_id:
            data["customField"] = {"id": field_id}
        return {"id": f"{card}-{kind}", "type": kind, "idMemberCreator": member, "data": data}

    own = frozenset({"f-state", "f-slip"})
    actions = [
        action("echo", "updateCustomFieldItem"), action("echo", "updateCustomFieldItem", field_id="f-slip"),
        action("by-someone", "updateCustomFieldItem", member="colleague"),
        action("other-field", "updateCustomFieldItem", field_id="f-estimate"),
        action("also-moved", "updateCustomFieldItem"), action("also-moved", "updateCard", field_id=None),
    ]
    assert own_edits_only(actions, "me", own) == {"echo"}
