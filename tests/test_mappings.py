"""Mappings: validated YAML, vectorized normalization, and quarantine that loses nothing."""
from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
import pytest

from mappings.mapping import MappingError, load_mapping, load_mapping_file
from mappings.normalize import TASK_COLUMNS, normalize_tasks

JIRA_ISSUE = {
    "id": "10001", "key": "PLA-1", "self": "https://x/rest/api/3/issue/10001",
    "fields": {
        "summary": "Ship it", "duedate": "2026-11-30", "customfield_10015": "2026-11-02",
        "created": "2026-01-17T12:34:00.000+0000", "updated": "2026-02-17T12:34:00.000+0000",
        "status": {"name": "In Progress", "statusCategory": {"key": "indeterminate"}},
        "issuetype": {"name": "Story"}, "labels": ["web", "milestone"], "project": {"key": "PLA"},
        "parent": {"id": "10000"}, "timeoriginalestimate": 7200, "customfield_10016": 5,
        "assignee": {"accountId": "a1", "displayName": "Ada Abbott", "emailAddress": "ada.abbott@acme.example"},
    },
}


def issue(**fields):
    record = orjson.loads(orjson.dumps(JIRA_ISSUE))
    record["fields"].update(fields)
    return record


def test_a_jira_issue_becomes_one_canonical_row_with_every_contract_column():
    page = normalize_tasks([JIRA_ISSUE], load_mapping("jira"), "eng-jira")
    assert list(page.tasks.columns) == list(TASK_COLUMNS)
    row = page.tasks.iloc[0]
    assert row.task_uid == "eng-jira:10001" and row.parent_uid == "eng-jira:10000" and row.project_uid == "eng-jira:PLA"
    assert row.status_category == "in_progress" and bool(row.is_milestone) is True
    assert row.due_date == pd.Timestamp("2026-11-30") and row.start_date == pd.Timestamp("2026-11-02")
    assert row.created_at == pd.Timestamp("2026-01-17T12:34:00Z")
    assert row.estimate_hours == pytest.approx(2.0) and row.story_points == 5
    assert orjson.loads(row.labels) == ["milestone", "web"] and row.assignee_email == "ada.abbott@acme.example"
    assert page.quarantine.empty


@pytest.mark.parametrize(
    "status, category_key, resolution, expected",
    [("To Do", "new", None, "todo"), ("Done", "done", {"name": "Done"}, "done"),
     ("Done", "done", {"name": "Won't Do"}, "cancelled"), ("Weird", "unknown", None, "todo")],
)
def test_jira_statuses_fall_into_categories_with_resolutions_first(status, category_key, resolution, expected):
    record = issue(status={"name": status, "statusCategory": {"key": category_key}}, resolution=resolution)
    assert normalize_tasks([record], load_mapping("jira"), "c").tasks.status_category[0] == expected


def test_malformed_records_are_quarantined_with_payload_and_reason_while_the_rest_load():
    records = [JIRA_ISSUE, issue(duedate="next tuesday-ish"), {"id": 10003, "fields": {}}, "junk", {"fields": {}}]
    records[1]["id"] = "10002"
    page = normalize_tasks(records, load_mapping("jira"), "eng-jira")
    assert page.tasks.native_id.tolist() == ["10001"]
    q = page.quarantine.set_index("native_id")
    assert q.loc["10002", "reason"] == "fields.duedate 'next tuesday-ish' is not a date"
    assert orjson.loads(q.loc["10002", "raw_payload"])["fields"]["duedate"] == "next tuesday-ish"
    assert q.loc["10003", "reason"] == "id should be a string but is a number"
    assert len(page.quarantine) == 4
    assert all(n.startswith("sha1:") for n in page.quarantine.native_id if n not in ("10002", "10003"))


def test_datetimes_read_as_dates_land_on_the_day_in_the_configured_zone(tmp_path):
    mapping = load_mapping("jira").with_overrides({"due_date": "fields.due_at"})
    record = issue(due_at="2026-11-30T03:00:00Z")
    assert normalize_tasks([record], mapping, "c", timezone="America/Toronto").tasks.due_date[0] == pd.Timestamp("2026-11-29")
    assert normalize_tasks([record], mapping, "c", timezone="UTC").tasks.due_date[0] == pd.Timestamp("2026-11-30")


def test_the_same_rows_whatever_the_page_size():
    records = [issue() for _ in range(10)]
    for k, record in enumerate(records):
        record["id"] = str(20000 + k)
    whole = normalize_tasks(records, load_mapping("jira"), "c").tasks
    halves = pd.concat([normalize_tasks(records[:4], load_mapping("jira"), "c").tasks,
                        normalize_tasks(records[4:], load_mapping("jira"), "c").tasks], ignore_index=True)
    pd.testing.assert_frame_equal(whole, halves)


@pytest.mark.parametrize(
    "fields, reason",
    [({"timeoriginalestimate": True}, "should be a number but is a boolean"),
     ({"labels": "milestone"}, "should be a array but is a string"),
     ({"status": ["In Progress"]}, "should be a object but is a array")],
)
def test_values_of_the_wrong_json_type_are_quarantined_not_coerced(fields, reason):
    # Arrow's conversion from Python objects would read True as 1.0, a string as a list of its letters and a list
    # as an object; the JSON reader's rules are the ones that hold.
    records = [JIRA_ISSUE, issue(**fields)]
    records[1]["id"] = "10002"
    page = normalize_tasks(records, load_mapping("jira"), "eng-jira")
    assert page.tasks.native_id.tolist() == ["10001"]
    assert page.quarantine.native_id.tolist() == ["10002"] and reason in page.quarantine.reason[0]


def test_dates_in_every_iso_form_read_as_pandas_reads_them():
    forms = ["2026-11-30", "2026-11-30T23:30:00Z", "2026-11-30T23:30:00.1234567+02:00", "2026-11-30 23:30:00",
             "2026-11-30T23:30", "1969-12-31T23:59:59.9999999Z"]
    mapping = load_mapping("jira").with_overrides({"due_date": "fields.due_at"})
    records = [issue(due_at=form, updated=form) for form in forms]
    for k, record in enumerate(records):
        record["id"] = str(30000 + k)
    tasks = normalize_tasks(records, mapping, "c", timezone="America/Toronto").tasks
    text = pd.Series(forms, dtype="string")
    instants = pd.to_datetime(text, format="ISO8601", utc=True)
    local = instants.dt.tz_convert("America/Toronto").dt.tz_localize(None).dt.normalize()
    expected_due = local.where(text.str.len() != 10, instants.dt.tz_localize(None))
    assert tasks.due_date.tolist() == expected_due.astype("datetime64[us]").tolist()
    assert tasks.updated_at.tolist() == instants.astype("datetime64[us, UTC]").tolist()


@pytest.mark.parametrize(
    "text, message",
    [
        ("tool: jira\nfields: {native_id: {path: id}, title: {path: x}, titel: {path: y}}\n"
         "status_category: {from: title}\n", "fields.titel is not known; did you mean 'title'?"),
        ("tool: jira\nfields: {native_id: {path: id}}\nstatus_category: {from: native_id}\n", "fields.title is missing"),
        ("tool: jira\nfields: {native_id: {path: id}, title: {path: x}}\nstatus_category: {from: nope}\n",
         "column 'nope' is not known"),
        ("tool: jira\nfields: {native_id: {path: id}, title: {path: x}}\nstatus_category: {from: title}\nextra: 1\n",
         "extra: this key is not known"),
        ("tool: jira\nfields: [\n", "the YAML does not parse at line"),
    ],
)
def test_a_bad_mapping_file_names_the_file_the_key_and_the_fix(tmp_path: Path, text, message):
    path = tmp_path / "jira.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mapping_file(path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_the_contract_document_lists_every_table_as_the_schema_defines_it():
    from mappings.schema_doc import tables_markdown

    contract = (Path(__file__).resolve().parents[1] / "docs" / "contract.md").read_text()
    assert contract.endswith(tables_markdown()), "regenerate docs/contract.md: python -m mappings.schema_doc"
