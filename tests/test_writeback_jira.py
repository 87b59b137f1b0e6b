"""Jira write-back against the sandbox, read back through the `jira` SDK: the schedule property on every issue,
labels that follow the state, one comment per task edited in place, no user-owned field touched, zero writes
when nothing changed, failed writes kept in the ledger and completed by the next push, and a dry run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jira
import pandas as pd
import yaml
from conftest import incremental_sync

from pmsync.config import Config, load_config
from pmsync.run import open_config_warehouse, run_sync
from sandbox.core import CREDENTIALS
from sandbox.generator import JIRA, day_number
from sandbox.server import Sandbox, native_id
from schedule.compute import compute_and_store
from writeback.ledger import read_ledger
from writeback.push import PushOutcome, run_push

PMSYNC = Path(sys.executable).with_name("pmsync")
PROPERTY = "pmsync.schedule"
PMSYNC_LABELS = {"pmsync-late", "pmsync-at-risk"}
STATE_LABELS = {"late": {"pmsync-late"}, "at_risk": {"pmsync-at-risk"}}
USER_FIELDS = "summary,duedate,status,assignee,description,labels"


def jira_config(box: Sandbox, folder: Path, **connection: Any) -> Path:
    """The sandbox's configuration with only its Jira connection and a DuckDB warehouse in `folder`."""
    config = box.config(warehouse=f"duckdb:///{folder / 'pmsync.duckdb'}")
    config["connections"] = [{**c, **connection} for c in config["connections"] if c["tool"] == "jira"]
    config["links"] = []
    path = folder / "pmsync.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def refresh(box: Sandbox, path: Path) -> Config:
    """Sync Jira and compute the schedule as of the sandbox's today."""
    config = load_config(path)
    outcome = run_sync(config)
    assert outcome.ok, outcome.failures
    with open_config_warehouse(config) as warehouse:
        compute_and_store(warehouse, config, box.as_of)
    return config


def push(config: Config) -> PushOutcome:
    outcome = run_push(config)
    assert not outcome.failures, outcome.failures
    return outcome


def schedule_of(config: Config) -> pd.DataFrame:
    with open_config_warehouse(config) as warehouse:
        tasks = warehouse.read("tasks", "deleted_at IS NULL", columns=["task_uid", "native_id"])
        return tasks.merge(warehouse.read("schedule"), on="task_uid").set_index("native_id")


def client(box: Sandbox) -> jira.JIRA:
    creds = CREDENTIALS["jira"]
    return jira.JIRA(server=box.urls["jira"], basic_auth=(creds["email"], creds["token"]), get_server_info=False,
                     max_retries=0, options={"rest_api_version": "3"})


def comment_text(body: Any) -> str:
    """The plain text of an ADF (v3) comment body."""
    if isinstance(body, str):
        return body
    return "".join(node.get("text", "") for block in body.get("content", ()) for node in block.get("content", ()))


def pmsync_comments(sdk: jira.JIRA, issue_id: str) -> list[tuple[str, str]]:
    return [(c.raw["id"], comment_text(c.raw["body"])) for c in sdk.comments(issue_id)
            if comment_text(c.raw["body"]).startswith("pmsync:")]


def user_fields(sdk: jira.JIRA, issue_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every issue's own fields as the SDK reads them, pmsync's labels left out."""
    snapshot = {}
    for issue_id in issue_ids:
        fields = dict(sdk.issue(issue_id, fields=USER_FIELDS).raw["fields"])
        fields["labels"] = sorted(set(fields.get("labels") or ()) - PMSYNC_LABELS)
        fields["status"] = (fields.get("status") or {}).get("name")
        fields["assignee"] = (fields.get("assignee") or {}).get("accountId")
        snapshot[issue_id] = fields
    return snapshot


def day(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).date().isoformat()


def expected_property(row: Any) -> dict[str, Any]:
    return {"baseline_due": day(row.baseline_due), "forecast_finish": day(row.forecast_finish),
            "slip_days": None if pd.isna(row.slip_days) else int(row.slip_days), "state": row.state,
            "on_critical_path": bool(row.on_critical_path), "as_of": day(row.as_of)}


def test_a_push_puts_the_computed_schedule_on_every_issue_and_touches_nothing_else(sandbox: Sandbox, tmp_path: Path):
    config = refresh(sandbox, jira_config(sandbox, tmp_path))
    schedule = schedule_of(config)
    sdk = client(sandbox)
    before = user_fields(sdk, list(schedule.index))

    outcome = push(config)
    assert outcome.results["eng-jira"].written > 0 and outcome.ok

    assert user_fields(sdk, list(schedule.index)) == before
    for issue_id, row in schedule.iterrows():
        assert sdk.issue_property(issue_id, PROPERTY).raw["value"] == expected_property(row), issue_id
        labels = set(sdk.issue(issue_id, fields="labels").raw["fields"]["labels"])
        assert labels & PMSYNC_LABELS == STATE_LABELS.get(row.state, set()), issue_id
        comments = pmsync_comments(sdk, issue_id)
        assert len(comments) == (0 if row.state == "on_track" else 1), issue_id
        if comments:
            assert f"({row.state.replace('_', ' ')})" in comments[0][1]


def test_a_second_push_with_nothing_changed_makes_zero_write_requests(sandbox: Sandbox, tmp_path: Path):
    path = jira_config(sandbox, tmp_path)
    push(refresh(sandbox, path))
    writes = sandbox.emulators["jira"].stats.writes
    # The push itself touched the issues (comments, labels): syncing them again changes no schedule value.
    again = push(refresh(sandbox, path))
    assert again.results["eng-jira"].planned == 0 and again.results["eng-jira"].written == 0
    assert sandbox.emulators["jira"].stats.writes == writes


def test_a_task_whose_state_changes_gets_its_comment_edited_and_its_labels_switched(sandbox: Sandbox, tmp_path: Path):
    path = jira_config(sandbox, tmp_path)
    config = refresh(sandbox, path)
    push(config)
    sdk = client(sandbox)
    schedule = schedule_of(config)
    late = schedule[(schedule.state == "late") & schedule.due_date.notna()].index[0]
    (comment_id, old_text), = pmsync_comments(sdk, late)
    p = sandbox.portfolio
    index = next(int(i) for i in p.task_indexes(JIRA) if native_id(p, int(i)) == late)
    sandbox.call(p.set_due, index, day_number(sandbox.as_of) + 30)

    config = refresh(sandbox, path)
    assert schedule_of(config).loc[late, "state"] == "at_risk"
    writes = dict(sandbox.emulators["jira"].stats.writes_by_route)
    push(config)

    comments = pmsync_comments(sdk, late)
    assert len(comments) == 1 and comments[0][0] == comment_id and comments[0][1] != old_text
    assert "(at risk)" in comments[0][1]
    assert set(sdk.issue(late, fields="labels").raw["fields"]["labels"]) & PMSYNC_LABELS == {"pmsync-at-risk"}
    made = {route: n - writes.get(route, 0) for route, n in sandbox.emulators["jira"].stats.writes_by_route.items()}
    assert made.get("POST /rest/api/{version}/issue/{issue}/comment", 0) == 0


def test_writes_failing_with_500_stay_in_the_ledger_and_the_next_push_completes_them(sandbox: Sandbox, tmp_path: Path):
    path = jira_config(sandbox, tmp_path, rate_limit={"max_retries": 0})
    config = refresh(sandbox, path)
    emulator = sandbox.emulators["jira"]
    for method in ("PUT", "POST"):
        emulator.inject("status", status=500, method=method, path=r"/rest/api/\d/issue/", times=-1)

    failed = run_push(config)
    planned = failed.results["eng-jira"].planned
    assert planned > 0 and failed.results["eng-jira"].failed == planned and not failed.ok
    with open_config_warehouse(config) as warehouse:
        ledger = read_ledger(warehouse, ["eng-jira"])
    assert len(ledger) == planned and set(ledger.status) == {"failed"}
    assert ledger.error.str.contains("500").any()

    cli = subprocess.run([str(PMSYNC), "push", "--config", str(path)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"}, check=False)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"eng-jira: 0 write(s) made, {planned} failed" in cli.stdout

    emulator.clear_faults()
    completed = push(config)
    assert completed.results["eng-jira"].written == planned and completed.ok
    with open_config_warehouse(config) as warehouse:
        assert set(read_ledger(warehouse, ["eng-jira"]).status) == {"written"}
    sdk = client(sandbox)
    for issue_id, row in schedule_of(config).iterrows():
        assert len(pmsync_comments(sdk, issue_id)) == (0 if row.state == "on_track" else 1)


def test_pmsync_push_dry_run_prints_the_plan_and_makes_no_write_request(sandbox: Sandbox, tmp_path: Path):
    path = jira_config(sandbox, tmp_path)
    config = refresh(sandbox, path)
    late = schedule_of(config).query("state == 'late'").iloc[0]
    done = subprocess.run([str(PMSYNC), "push", "--dry-run", "--config", str(path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "250"}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run: nothing changed" in done.stdout
    assert "jira.property" in done.stdout and "jira.comment" in done.stdout and "pmsync-late" in done.stdout
    assert late.task_uid in done.stdout
    assert sandbox.emulators["jira"].stats.writes == 0
    with open_config_warehouse(config) as warehouse:
        assert read_ledger(warehouse).empty


def with_custom_fields(path: Path) -> dict[str, Any]:
    """Have the configuration write slip and forecast into two of the sandbox's custom fields; returns it."""
    data = yaml.safe_load(path.read_text())
    data["writeback"] = {"eng-jira": {"custom_fields": {"slip_days": "customfield_10050",
                                                        "forecast_finish": "customfield_10051"}}}
    path.write_text(yaml.safe_dump(data))
    return data


def test_custom_fields_are_checked_by_setup_and_written_with_the_schedule(sandbox: Sandbox, tmp_path: Path):
    path = jira_config(sandbox, tmp_path)
    data = with_custom_fields(path)
    config = refresh(sandbox, path)
    outcome = run_push(config, setup=True)
    assert outcome.ok, (outcome.failures, outcome.results)
    assert any("customfield_10050" in line and "nothing to create" in line
               for line in outcome.results["eng-jira"].setup)
    sdk = client(sandbox)
    for issue_id, row in schedule_of(config).iterrows():
        fields = sdk.issue(issue_id, fields="customfield_10050,customfield_10051").raw["fields"]
        assert fields["customfield_10050"] == (None if pd.isna(row.slip_days) else int(row.slip_days))
        assert fields["customfield_10051"] == day(row.forecast_finish)

    data["writeback"]["eng-jira"]["custom_fields"]["state"] = "customfield_99999"
    path.write_text(yaml.safe_dump(data))
    missing = run_push(load_config(path), setup=True)
    assert "customfield_99999" in missing.failures["eng-jira"]


def test_the_sync_after_a_push_leaves_out_pmsyncs_own_edits_and_reads_everyone_elses(sandbox: Sandbox,
                                                                                       tmp_path: Path):
    path = jira_config(sandbox, tmp_path)
    with_custom_fields(path)
    config = refresh(sandbox, path)
    outcome = push(config)
    assert outcome.results["eng-jira"].written > 0
    schedule = schedule_of(config)
    # Issues pmsync commented on: labels, custom fields and comment all moved their `updated`.
    commented = list(schedule[schedule.state.isin(["late", "at_risk"])].index)
    due_moved, linked, labelled = commented[:3]
    sdk = client(sandbox)
    sdk.issue(due_moved).update(fields={"duedate": "2031-01-15"})
    sdk.add_remote_link(linked, {"url": "https://example.com/blocker", "title": "blocker"},
                        relationship="is blocked by")
    sdk.issue(labelled).update(update={"labels": [{"add": "customer-facing"}]})

    result, remote_reads = incremental_sync(config, sandbox.emulators["jira"],
                                            "GET /rest/api/{version}/issue/{issue}/remotelink")
    # Only the three issues someone else changed are read again; the rest of the push echo is left out.
    assert result.loaded == 3
    assert remote_reads == 3
    with open_config_warehouse(config) as warehouse:
        tasks = warehouse.read("tasks", columns=["native_id", "due_date", "labels"]).set_index("native_id")
        links = warehouse.read("dependencies", columns=["predecessor_uid", "successor_uid"])
    assert pd.Timestamp(tasks.loc[due_moved, "due_date"]).date().isoformat() == "2031-01-15"
    assert "customer-facing" in str(tasks.loc[labelled, "labels"])
    assert "url:https://example.com/blocker" in set(links.loc[links.successor_uid == f"eng-jira:{linked}",
                                                              "predecessor_uid"])
    # A push after that finds nothing of its own to re-write for the echo.
    with open_config_warehouse(config) as warehouse:
        compute_and_store(warehouse, config, sandbox.as_of)
    writes = sandbox.emulators["jira"].stats.writes
    again = push(config)
    assert again.results["eng-jira"].planned == sandbox.emulators["jira"].stats.writes - writes
