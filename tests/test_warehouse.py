"""The warehouse contract, run on DuckDB and on PostgreSQL (each test in its own fresh schema)."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from conftest import POSTGRES_URL, Backend, postgres_unavailable_reason  # fixtures `backend`, `warehouse` too
from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.schema import TABLES
from warehouse import Warehouse, WarehouseError, duckdb_path, open_warehouse


def task_rows(count: int, connection: str = "eng-jira", **overrides: object) -> pd.DataFrame:
    native_ids = [str(10000 + number) for number in range(count)]
    rows = pd.DataFrame(
        {
            "task_uid": [f"{connection}:{native_id}" for native_id in native_ids],
            "connection": connection,
            "tool": "jira",
            "native_id": native_ids,
            "key": [f"PLAT-{number}" for number in range(count)],
            "title": [f"Task {number}" for number in range(count)],
            "status": "To Do",
            "status_category": "todo",
            "is_milestone": False,
            "due_date": pd.Timestamp("2025-03-01") + pd.to_timedelta(np.arange(count) % 60, unit="D"),
            "updated_at": pd.Timestamp("2025-01-10T09:30:00Z"),
            "percent_complete": 0.0,
            "labels": [["backend", "q1"]] * count,
            "first_seen_at": pd.Timestamp("2025-01-10T10:00:00Z"),
        }
    )
    for name, value in overrides.items():
        rows[name] = value
    return rows


def version(task_uid: str, valid_from: str, due: str | None, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "task_uid": task_uid,
        "valid_from": pd.Timestamp(valid_from, tz="UTC"),
        "due_date": due,
        "start_date": None,
        "status_category": "todo",
        "percent_complete": 0.0,
        "deleted": False,
        "source": "observed",
    }
    row.update(fields)
    return row


def history_of(warehouse: Warehouse, task_uid: str) -> list[tuple[str, str | None, str | None, str]]:
    """(valid_from, valid_to, due_date, source) of every version of one task, oldest first."""
    rows = warehouse.read("task_history", "task_uid = %s", [task_uid], order_by="valid_from")
    return [
        (
            row.valid_from.strftime("%Y-%m-%d"),
            None if pd.isna(row.valid_to) else row.valid_to.strftime("%Y-%m-%d"),
            None if pd.isna(row.due_date) else row.due_date.strftime("%Y-%m-%d"),
            row.source,
        )
        for row in rows.itertuples()
    ]


def test_migrations_create_every_canonical_table_with_contract_columns(warehouse: Warehouse) -> None:
    for table in TABLES.values():
        assert warehouse.existing_columns(table.name) == set(table.column_names), table.name
    applied = warehouse.query("SELECT version FROM schema_migrations")
    assert list(applied["version"]) == [1]


def test_reopening_a_migrated_warehouse_applies_nothing_and_keeps_rows(backend: Backend) -> None:
    with backend.open() as first:
        first.upsert("tasks", task_rows(3))
    with backend.open() as second:
        assert second.migrate() == []
        assert list(second.query("SELECT version FROM schema_migrations")["version"]) == [1]
        assert second.count("tasks") == 3


def test_upsert_inserts_then_updates_by_key_without_duplicates(warehouse: Warehouse) -> None:
    assert warehouse.upsert("tasks", task_rows(3)) == 3
    changed = task_rows(4).iloc[1:].assign(status="In Progress", status_category="in_progress")
    warehouse.upsert("tasks", changed)
    stored = warehouse.read("tasks")
    assert list(stored["task_uid"]) == [f"eng-jira:{10000 + number}" for number in range(4)]
    assert list(stored["status_category"]) == ["todo", "in_progress", "in_progress", "in_progress"]


def test_upsert_of_some_columns_keeps_the_others(warehouse: Warehouse) -> None:
    warehouse.upsert("tasks", task_rows(2))
    warehouse.upsert(
        "tasks", pd.DataFrame({"task_uid": ["eng-jira:10000"], "last_synced_at": ["2025-02-01T00:00:00Z"]})
    )
    stored = warehouse.read("tasks", "task_uid = %s", ["eng-jira:10000"]).iloc[0]
    assert stored["title"] == "Task 0"
    assert stored["last_synced_at"] == pd.Timestamp("2025-02-01T00:00:00Z")


def test_first_seen_at_keeps_its_first_value_on_later_upserts(warehouse: Warehouse) -> None:
    warehouse.upsert("tasks", task_rows(1))
    warehouse.upsert("tasks", task_rows(1, first_seen_at=pd.Timestamp("2025-06-01T00:00:00Z")))
    stored = warehouse.read("tasks").iloc[0]
    assert stored["first_seen_at"] == pd.Timestamp("2025-01-10T10:00:00Z")


def test_upsert_keeps_the_last_row_when_a_frame_repeats_a_key(warehouse: Warehouse) -> None:
    rows = pd.concat([task_rows(1), task_rows(1, title="Renamed")], ignore_index=True)
    assert warehouse.upsert("tasks", rows) == 1
    assert list(warehouse.read("tasks")["title"]) == ["Renamed"]


def test_an_arrow_table_upserts_as_its_frame_does_repeated_keys_included(warehouse: Warehouse) -> None:
    rows = pd.concat([task_rows(3), task_rows(2, title="Renamed"), task_rows(1, title="Renamed again")],
                     ignore_index=True)
    assert warehouse.upsert("tasks", pa.Table.from_pandas(task_rows(2), preserve_index=False)) == 2
    assert warehouse.upsert("tasks", pa.Table.from_pandas(rows, preserve_index=False)) == 3
    assert list(warehouse.read("tasks")["title"]) == ["Renamed again", "Renamed", "Task 2"]


def test_upsert_rejects_unknown_columns_and_missing_keys(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match="no columns \\['colour'\\]"):
        warehouse.upsert("tasks", task_rows(1, colour="red"))
    with pytest.raises(ValueError, match="key columns \\['task_uid'\\]"):
        warehouse.upsert("tasks", task_rows(1).drop(columns=["task_uid"]))


def test_values_round_trip_with_schema_types(warehouse: Warehouse) -> None:
    rows = task_rows(
        1,
        start_date="2025-02-03",
        completed_at="2025-02-10T12:00:00-05:00",
        estimate_hours=7.5,
        extra=[{"story": {"points": 3}}],
        title='Quotes "and" commas, and a\nnewline',
    )
    warehouse.upsert("tasks", rows)
    stored = warehouse.read("tasks").iloc[0]
    assert stored["start_date"] == pd.Timestamp("2025-02-03")
    assert stored["completed_at"] == pd.Timestamp("2025-02-10T17:00:00Z")
    assert stored["estimate_hours"] == 7.5
    assert json.loads(stored["labels"]) == ["backend", "q1"]
    assert json.loads(stored["extra"]) == {"story": {"points": 3}}
    assert stored["title"] == 'Quotes "and" commas, and a\nnewline'
    assert pd.isna(stored["assignee"])


def test_empty_string_and_null_stay_distinct(warehouse: Warehouse) -> None:
    warehouse.upsert("tasks", task_rows(2, assignee=["", None]))
    stored = warehouse.read("tasks")
    assert stored["assignee"].iloc[0] == ""
    assert pd.isna(stored["assignee"].iloc[1])


def test_history_opens_a_version_only_when_a_schedule_field_changes(warehouse: Warehouse) -> None:
    uid = "eng-jira:10000"
    warehouse.apply_task_versions(pd.DataFrame([version(uid, "2025-01-01", "2025-03-01")]))
    warehouse.apply_task_versions(pd.DataFrame([version(uid, "2025-01-05", "2025-03-01")]))
    warehouse.apply_task_versions(pd.DataFrame([version(uid, "2025-01-09", "2025-03-15")]))
    assert history_of(warehouse, uid) == [
        ("2025-01-01", "2025-01-09", "2025-03-01", "observed"),
        ("2025-01-09", None, "2025-03-15", "observed"),
    ]


def test_reapplying_the_same_versions_changes_nothing(warehouse: Warehouse) -> None:
    versions = pd.DataFrame(
        [
            version("eng-jira:1", "2025-01-01", "2025-03-01"),
            version("eng-jira:1", "2025-01-09", "2025-03-15", status_category="in_progress"),
            version("eng-jira:2", "2025-01-02", None),
        ]
    )
    assert warehouse.apply_task_versions(versions) == 3
    before = warehouse.read("task_history")
    assert warehouse.apply_task_versions(versions) == 0
    pd.testing.assert_frame_equal(warehouse.read("task_history"), before)


def test_upsert_tasks_writes_the_history_of_new_tasks_and_extends_that_of_stored_ones(warehouse: Warehouse) -> None:
    tasks = task_rows(4)
    uids = list(tasks["task_uid"])
    first = pd.DataFrame([version(uid, "2025-01-01", "2025-03-01") for uid in uids[:3]])
    assert warehouse.upsert_tasks(tasks.iloc[:3], first) == 3  # all new: nothing stored to read
    # Stored tasks: their versions are read, and the new one closes the one before it.
    warehouse.upsert_tasks(tasks.iloc[:1], pd.DataFrame([version(uids[0], "2025-01-09", "2025-03-15")]))
    # One stored task and one new in the same batch.
    warehouse.upsert_tasks(tasks.iloc[[1, 3]], pd.DataFrame([version(uids[1], "2025-01-09", "2025-04-01"),
                                                             version(uids[3], "2025-01-09", "2025-05-01")]))
    assert history_of(warehouse, uids[0]) == [("2025-01-01", "2025-01-09", "2025-03-01", "observed"),
                                              ("2025-01-09", None, "2025-03-15", "observed")]
    assert history_of(warehouse, uids[1]) == [("2025-01-01", "2025-01-09", "2025-03-01", "observed"),
                                              ("2025-01-09", None, "2025-04-01", "observed")]
    assert history_of(warehouse, uids[2]) == [("2025-01-01", None, "2025-03-01", "observed")]
    assert history_of(warehouse, uids[3]) == [("2025-01-09", None, "2025-05-01", "observed")]
    assert warehouse.count("tasks") == 4


def test_tool_history_older_than_stored_versions_is_slotted_in_order(warehouse: Warehouse) -> None:
    uid = "eng-jira:10000"
    warehouse.apply_task_versions(pd.DataFrame([version(uid, "2025-01-10", "2025-03-20")]))
    from_changelog = pd.DataFrame(
        [
            version(uid, "2025-01-01", "2025-03-01", source="tool_history"),
            version(uid, "2025-01-05", "2025-03-20", source="tool_history"),
        ]
    )
    warehouse.apply_task_versions(from_changelog)
    expected = [
        ("2025-01-01", "2025-01-05", "2025-03-01", "tool_history"),
        ("2025-01-05", None, "2025-03-20", "tool_history"),
    ]
    assert history_of(warehouse, uid) == expected
    warehouse.apply_task_versions(from_changelog)
    warehouse.apply_task_versions(pd.DataFrame([version(uid, "2025-01-10", "2025-03-20")]))
    assert history_of(warehouse, uid) == expected


def test_history_of_a_batch_equals_history_applied_one_version_at_a_time(warehouse: Warehouse) -> None:
    versions = [
        version("eng-jira:1", "2025-01-03", "2025-03-01"),
        version("eng-jira:1", "2025-01-01", "2025-02-01", source="tool_history"),
        version("eng-jira:1", "2025-01-07", "2025-03-01", percent_complete=50.0),
        version("eng-jira:1", "2025-01-05", "2025-03-01"),
    ]
    for one in versions:
        warehouse.apply_task_versions(pd.DataFrame([one]))
    one_at_a_time = history_of(warehouse, "eng-jira:1")
    warehouse.delete("task_history")
    warehouse.apply_task_versions(pd.DataFrame(versions))
    assert history_of(warehouse, "eng-jira:1") == one_at_a_time
    assert [row[0] for row in one_at_a_time] == ["2025-01-01", "2025-01-03", "2025-01-07"]


def test_cursor_set_in_a_transaction_that_raises_rolls_back_with_its_rows(warehouse: Warehouse) -> None:
    warehouse.set_cursor("eng-jira", "updated", "2025-01-01T00:00:00Z")
    with pytest.raises(RuntimeError, match="killed mid-page"), warehouse.transaction():
        warehouse.upsert("tasks", task_rows(5))
        warehouse.set_cursor("eng-jira", "updated", "2025-02-01T00:00:00Z")
        raise RuntimeError("killed mid-page")
    assert warehouse.get_cursor("eng-jira", "updated") == "2025-01-01T00:00:00Z"
    assert warehouse.count("tasks") == 0


def test_cursor_commits_with_its_rows_and_survives_reopening(backend: Backend) -> None:
    with backend.open() as first:
        assert first.get_cursor("eng-jira", "updated") is None
        with first.transaction():
            first.upsert("tasks", task_rows(5))
            first.set_cursor("eng-jira", "updated", "2025-02-01T00:00:00Z")
    with backend.open() as second:
        assert second.get_cursor("eng-jira", "updated") == "2025-02-01T00:00:00Z"
        assert second.count("tasks") == 5


def test_quarantine_keeps_the_raw_payload_and_reason(warehouse: Warehouse) -> None:
    payloads = [{"id": "10042", "fields": {"duedate": "not a date"}}, '{"fields": {"summary": "no id"}}']
    records = pd.DataFrame(
        {
            "connection": "eng-jira",
            "native_id": ["10042", None],
            "raw_payload": payloads,
            "reason": ["duedate is not a date", "issue has no id"],
        }
    )
    assert warehouse.quarantine(records) == 2
    stored = warehouse.read("quarantine", order_by="reason")
    assert json.loads(stored["raw_payload"].iloc[0]) == payloads[0]
    assert json.loads(stored["raw_payload"].iloc[1]) == json.loads(payloads[1])
    assert stored["native_id"].iloc[1].startswith("sha1:")
    assert stored["quarantined_at"].notna().all()
    warehouse.clear_quarantine("eng-jira", ["10042"])
    assert list(warehouse.read("quarantine")["reason"]) == ["issue has no id"]


def test_mark_deleted_sets_deleted_at_and_opens_a_deleted_version(warehouse: Warehouse) -> None:
    warehouse.upsert("tasks", task_rows(3))
    warehouse.apply_task_versions(pd.DataFrame([version("eng-jira:10001", "2025-01-10", "2025-03-02")]))
    gone_at = pd.Timestamp("2025-02-01T08:00:00Z")
    assert warehouse.mark_deleted("eng-jira", ["eng-jira:10001", "eng-jira:10002"], gone_at) == 2
    assert warehouse.mark_deleted("eng-jira", ["eng-jira:10001"], pd.Timestamp("2025-02-02T08:00:00Z")) == 0
    tasks = warehouse.read("tasks").set_index("task_uid")
    assert pd.isna(tasks.loc["eng-jira:10000", "deleted_at"])
    assert tasks.loc["eng-jira:10001", "deleted_at"] == gone_at
    history = warehouse.read("task_history", "task_uid = %s", ["eng-jira:10001"], order_by="valid_from")
    assert list(history["deleted"]) == [False, True]
    assert history["due_date"].iloc[1] == pd.Timestamp("2025-03-02")
    assert history["valid_to"].iloc[0] == gone_at


def test_sync_runs_record_start_and_finish_with_counts(warehouse: Warehouse) -> None:
    run_id = warehouse.start_run("eng-jira", "incremental")
    running = warehouse.read("sync_runs").iloc[0]
    assert (running["run_id"], running["status"], running["mode"]) == (run_id, "running", "incremental")
    warehouse.finish_run(run_id, "eng-jira", "succeeded", requests=7, requests_429=2, records_loaded=10)
    finished = warehouse.read("sync_runs").iloc[0]
    assert finished["status"] == "succeeded"
    assert (finished["requests"], finished["requests_429"], finished["records_loaded"]) == (7, 2, 10)
    assert pd.isna(finished["records_deleted"])
    assert finished["finished_at"] >= finished["started_at"]
    with pytest.raises(ValueError, match="no sync run"):
        warehouse.finish_run("never-started", "eng-jira", "failed")


def test_replace_swaps_the_matching_rows_only(warehouse: Warehouse) -> None:
    health = pd.DataFrame({"project_uid": ["eng-jira:PLAT", "eng-jira:WEB"], "health": ["green", "amber"]})
    warehouse.upsert("project_health", health)
    warehouse.replace(
        "project_health",
        pd.DataFrame({"project_uid": ["eng-jira:OPS"], "health": ["red"]}),
        "project_uid <> %s",
        ["eng-jira:PLAT"],
    )
    assert list(warehouse.read("project_health")["project_uid"]) == ["eng-jira:OPS", "eng-jira:PLAT"]


def test_upsert_of_100k_tasks_stores_every_row_once(warehouse: Warehouse) -> None:
    rows = task_rows(100_000)
    assert warehouse.upsert("tasks", rows) == 100_000
    assert warehouse.upsert("tasks", rows.assign(status_category="done")) == 100_000
    assert warehouse.count("tasks") == 100_000
    assert warehouse.count("tasks", "status_category = %s", ["done"]) == 100_000
    stored = warehouse.read("tasks", columns=["task_uid", "due_date"]).set_index("task_uid")["due_date"]
    expected = rows.set_index("task_uid")["due_date"].astype("datetime64[us]")
    pd.testing.assert_series_equal(stored.loc[expected.index], expected)


def test_relative_duckdb_path_resolves_against_the_configuration_folder(tmp_path: Path) -> None:
    assert duckdb_path("duckdb:///data/pmsync.duckdb", tmp_path) == str(
        tmp_path.resolve() / "data/pmsync.duckdb"
    )
    assert duckdb_path("duckdb:////srv/pmsync.duckdb", tmp_path) == "/srv/pmsync.duckdb"
    with open_warehouse("duckdb:///data/pmsync.duckdb", tmp_path):
        pass
    assert (tmp_path / "data" / "pmsync.duckdb").exists()


def test_unknown_warehouse_url_is_one_clear_sentence() -> None:
    with pytest.raises(WarehouseError, match="neither duckdb:///path.duckdb nor postgresql://"):
        open_warehouse("mysql://nowhere/db")


def test_unreachable_postgres_is_one_clear_sentence() -> None:
    with pytest.raises(WarehouseError, match="Cannot connect to the PostgreSQL warehouse .*\\*\\*\\*@"):
        open_warehouse("postgresql://postgres:secret@127.0.0.1:1/test")


@pytest.mark.postgres
def test_postgres_schema_can_come_from_the_search_path_option() -> None:
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    schema = f"pmsync_test_{uuid.uuid4().hex[:12]}"
    try:
        with open_warehouse(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}") as opened:
            opened.upsert("tasks", task_rows(2))
        with psycopg.connect(POSTGRES_URL) as connection:
            count = connection.execute(f'SELECT COUNT(*) FROM "{schema}".tasks').fetchone()
        assert count == (2,)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_partial_rows_for_new_keys_fail_on_their_missing_required_columns(warehouse: Warehouse) -> None:
    with pytest.raises(Exception, match="(?i)null"):
        warehouse.upsert("tasks", pd.DataFrame({"task_uid": ["eng-jira:1"], "title": ["orphan"]}))
    assert warehouse.count("tasks") == 0


_due_dates = st.sampled_from([None, "2025-03-01", "2025-03-15", "2025-04-01"])
_versions = st.lists(
    st.tuples(
        st.sampled_from(["t:1", "t:2"]), st.integers(1, 20), _due_dates, st.sampled_from(["todo", "done"])
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=20, deadline=None)
@given(batch=_versions)
def test_history_is_a_minimal_ordered_chain_and_reapplying_is_a_no_op(
    batch: list[tuple[str, int, str | None, str]],
) -> None:
    rows = pd.DataFrame(
        [
            version(uid, f"2025-01-{day:02d}", due, status_category=category)
            for uid, day, due, category in batch
        ]
    ).drop_duplicates(["task_uid", "valid_from"], keep="last")
    with open_warehouse("duckdb:///:memory:") as opened:
        opened.apply_task_versions(rows.sample(frac=1.0, random_state=len(batch)))
        once = opened.read("task_history")
        assert opened.apply_task_versions(rows) == 0
        for _, chain in once.groupby("task_uid"):
            assert chain["valid_from"].is_monotonic_increasing
            assert list(chain["valid_to"].iloc[:-1]) == list(chain["valid_from"].iloc[1:])
            assert pd.isna(chain["valid_to"].iloc[-1])
            fields = chain[["due_date", "status_category"]].astype("str").to_numpy()
            assert all((fields[i] != fields[i + 1]).any() for i in range(len(fields) - 1))
        one_at_a_time = open_warehouse("duckdb:///:memory:")
        for _, one in rows.sort_values("valid_from", kind="stable").iterrows():
            one_at_a_time.apply_task_versions(pd.DataFrame([one]))
        pd.testing.assert_frame_equal(one_at_a_time.read("task_history"), once)
        one_at_a_time.close()


def test_duckdb_warehouses_opened_and_closed_from_many_threads_never_conflict(tmp_path):
    # pmsync syncs its connections in threads, each with its own warehouse connection: DuckDB refuses to attach a
    # file while the last connection to it is closing ("Unique file handle conflict") unless that is serialized.
    from warehouse.duckdb_backend import DuckDBWarehouse

    path = tmp_path / "shared.duckdb"
    DuckDBWarehouse(path).close()
    errors: list[str] = []

    def open_and_close() -> None:
        for _ in range(100):
            try:
                DuckDBWarehouse(path).close()
            except Exception as error:  # collected: the assertion below names them
                errors.append(str(error))

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
