"""The Dagster code location: it loads, the whole graph materializes against the sandbox (DuckDB and PostgreSQL),
a change in a tool requests a run of that connection only, and a failed run reaches `sync_runs`."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sandbox.server import Sandbox, native_id
from warehouse import open_warehouse

REPO = Path(__file__).resolve().parents[1]
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
JIRA = dg.AssetKey(["ingest", "eng-jira"])


def write_sandbox_config(box: Sandbox, folder: Path, warehouse: str, split_jira: bool = False,
                         tools: tuple[str, ...] | None = None) -> Path:
    """The sandbox's pmsync.yaml, keeping the connections whose connector and mapping exist (and, with `split_jira`, the
    Jira projects split over two connections so that there are always two connections to tell apart)."""
    path = box.write_config(folder / "pmsync.yaml", warehouse=warehouse)
    config = yaml.safe_load(path.read_text())
    connections = [c for c in config["connections"]
                   if is_supported(c["tool"]) and (tools is None or c["tool"] in tools)]
    if split_jira:
        jira = next(c for c in connections if c["tool"] == "jira")
        first, rest = jira["projects"][:1], jira["projects"][1:]
        assert rest, "the sandbox's Jira has a single project; nothing to split"
        connections.append({**jira, "name": f"{jira['name']}-b", "projects": rest})
        jira["projects"] = first
    names = {c["name"] for c in connections}
    config["connections"] = connections
    config["links"] = [link for link in config["links"]
                       if {link["predecessor"].split(":")[0], link["successor"].split(":")[0]} <= names]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def is_supported(tool: str) -> bool:
    """Whether the engine can sync this tool yet (its connector and its mapping are in the tree)."""
    return importlib.util.find_spec(f"connectors.{tool}") is not None and (REPO / "mappings" / f"{tool}.yaml").exists()


def load_definitions(config: Path | None, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    """The code location's definitions as `dagster dev` loads them, for the configuration at `config`."""
    monkeypatch.setenv("PMSYNC_CONFIG", str(config) if config else "/nonexistent/pmsync.yaml")
    from pipelines.definitions import defs

    return defs()


@pytest.fixture
def dagster_home(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance in a temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def postgres_schema_url() -> str:
    """A fresh schema on the local PostgreSQL server; skips the test when no server answers."""
    import psycopg

    try:
        psycopg.connect(POSTGRES, connect_timeout=2).close()
    except (OSError, psycopg.Error) as exc:
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES} ({type(exc).__name__})")
    return f"{POSTGRES}?schema=pmsync_dagster_{uuid.uuid4().hex[:10]}"


def drop_schema(url: str) -> None:
    import psycopg

    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def materialize_everything(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("pmsync_sync").execute_in_process(instance=instance, raise_on_error=False)
    failures = [event.event_specific_data.error.message for event in result.all_events if event.is_step_failure]
    assert result.success, f"the sync job failed: {failures}"
    return result


def assert_whole_graph_materialized(result: dg.ExecuteInProcessResult, defs: dg.Definitions, warehouse_url: str,
                                    base_dir: Path) -> None:
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert materialized == set(defs.resolve_asset_graph().get_all_asset_keys())
    ingested = [e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key.path[0] == "ingest"]
    assert JIRA in materialized and ingested
    for ingest in ingested:
        assert ingest["dagster/row_count"].value > 0
        assert ingest["requests"].value > 0
        assert ingest["cursor"].value
    schedule = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                    if e.asset_key == dg.AssetKey("schedule"))
    assert "| task | title | baseline |" in schedule["worst slippage"].value
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {"schema", "quarantine_ratio", "dangling_dependencies", "cycles"} <= set(checks)
    assert checks["schema"].passed and checks["quarantine_ratio"].passed
    with open_warehouse(warehouse_url, base_dir) as warehouse:
        assert warehouse.count("tasks") == sum(ingest["dagster/row_count"].value for ingest in ingested)
        assert warehouse.count("schedule") > 0
        assert warehouse.count("project_health") > 0
        assert warehouse.count("sync_runs", "status = 'succeeded'") == len(ingested)


def test_definitions_load_with_an_ingest_asset_check_and_sensor_per_connection(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_sandbox_config(sandbox, tmp_path, "duckdb:///pmsync.duckdb", split_jira=True)
    defs = load_definitions(config, monkeypatch)
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    second = dg.AssetKey(["ingest", "eng-jira-b"])
    assert {JIRA, second, dg.AssetKey("links"), dg.AssetKey("schedule"), dg.AssetKey("project_health")} <= set(
        graph.get_all_asset_keys())
    ingest = defs.resolve_assets_def(JIRA)
    assert ingest.specs_by_key[JIRA].kinds == {"jira"}
    assert ingest.op.pool == "jira_api"
    assert ingest.op.retry_policy is not None and ingest.op.retry_policy.max_retries > 0
    assert graph.get(dg.AssetKey("links")).parent_keys >= {JIRA, second}
    names = [c["name"] for c in yaml.safe_load(config.read_text())["connections"]]
    assert {s.name for s in repository.sensor_defs} == {
        *(f"ingest__{name.replace('-', '_')}_changes" for name in names), "record_failed_runs"}
    schedule = repository.get_schedule_def("pmsync_sync_schedule")
    assert schedule.cron_schedule == "*/15 * * * *"
    check_keys = {key.name for key in graph.asset_check_keys}
    assert {"schema", "quarantine_ratio", "dangling_dependencies", "cycles"} <= check_keys
    checks = [check for checks_def in defs.asset_checks for check in checks_def.check_specs]
    assert checks and all(check.blocking for check in checks)


def test_definitions_without_a_configuration_load_with_no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    defs = load_definitions(None, monkeypatch)
    dg.Definitions.validate_loadable(defs)
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert not [key for key in keys if key.path[0] == "ingest"]
    assert dg.AssetKey("schedule") in keys


def test_duckdb_runs_steps_in_process_and_postgresql_in_parallel(
    shared_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    duckdb = load_definitions(write_sandbox_config(shared_sandbox, tmp_path / "d", "duckdb:///x.duckdb"), monkeypatch)
    assert duckdb.resolve_job_def("pmsync_sync").executor_def.name == "in_process"
    assert duckdb.resolve_job_def("pmsync_sync").run_tags["pmsync/warehouse"] == "duckdb"
    postgres = load_definitions(write_sandbox_config(shared_sandbox, tmp_path / "p", POSTGRES), monkeypatch)
    assert postgres.resolve_job_def("pmsync_sync").executor_def.name == "multiprocess"


def test_dg_check_defs_accepts_the_code_location(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_sandbox_config(shared_sandbox, tmp_path, "duckdb:///pmsync.duckdb")
    env = {**os.environ, "PMSYNC_CONFIG": str(config), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([str(Path(sys.executable).parent / "dg"), "check", "defs"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_whole_graph_materializes_against_the_sandbox_on_duckdb(
    shared_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dagster_home: dg.DagsterInstance
) -> None:
    config = write_sandbox_config(shared_sandbox, tmp_path, "duckdb:///pmsync.duckdb")
    defs = load_definitions(config, monkeypatch)
    result = materialize_everything(defs, dagster_home)
    assert_whole_graph_materialized(result, defs, "duckdb:///pmsync.duckdb", tmp_path)


@pytest.mark.postgres
def test_whole_graph_materializes_against_the_sandbox_on_postgresql(
    shared_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dagster_home: dg.DagsterInstance
) -> None:
    url = postgres_schema_url()
    try:
        defs = load_definitions(write_sandbox_config(shared_sandbox, tmp_path, url), monkeypatch)
        result = materialize_everything(defs, dagster_home)
        assert_whole_graph_materialized(result, defs, url, tmp_path)
    finally:
        drop_schema(url)


def first_task_of_project(box: Sandbox, project_key: str) -> int:
    """The index of a Jira task in the project with this key."""
    portfolio = box.portfolio
    assert portfolio is not None
    project = next(p for p in portfolio.projects if getattr(p, "key", None) == project_key)
    for i in range(portfolio.tasks.size):
        if int(portfolio.tasks.project[i]) == project.index and native_id(portfolio, i).isdigit():
            return i
    raise AssertionError(f"no task in {project_key}")


def evaluate(defs: dg.Definitions, sensor_name: str, instance: dg.DagsterInstance):
    sensor = defs.get_sensor_def(sensor_name)
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        return sensor.evaluate_tick(context)


def test_a_change_in_the_sandbox_requests_a_run_of_that_connection_only(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dagster_home: dg.DagsterInstance
) -> None:
    # Two Jira connections over different projects: a change in one project must wake one sensor only.
    config = write_sandbox_config(sandbox, tmp_path, "duckdb:///pmsync.duckdb", split_jira=True, tools=("jira",))
    defs = load_definitions(config, monkeypatch)
    materialize_everything(defs, dagster_home)
    # The push's own comments and labels touch issues, as in Jira itself: one more sync takes them in, and the
    # push after it writes nothing, so the sensors settle.
    materialize_everything(defs, dagster_home)
    sensors = ["ingest__eng_jira_changes", "ingest__eng_jira_b_changes"]
    assert [evaluate(defs, name, dagster_home).run_requests for name in sensors] == [[], []]

    project_key = yaml.safe_load(config.read_text())["connections"][0]["projects"][0]
    task = first_task_of_project(sandbox, project_key)
    sandbox.call(sandbox.portfolio.set_due, task, int(sandbox.portfolio.tasks.due[task]) + 9)

    changed, unchanged = (evaluate(defs, name, dagster_home) for name in sensors)
    assert unchanged.run_requests == []
    assert len(changed.run_requests) == 1
    request = changed.run_requests[0]
    assert request.asset_selection is None  # the sensor's own target
    targeted = defs.get_sensor_def(sensors[0]).job.selection.resolve(defs.resolve_asset_graph())
    assert JIRA in targeted and dg.AssetKey("schedule") in targeted
    assert not [key for key in targeted if key.path[0] == "ingest" and key != JIRA]
    assert request.tags["pmsync/connection"] == "eng-jira"


def test_a_failed_run_is_recorded_in_sync_runs_for_pmsync_status(
    shared_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dagster_home: dg.DagsterInstance
) -> None:
    config = write_sandbox_config(shared_sandbox, tmp_path, "duckdb:///pmsync.duckdb")
    data = yaml.safe_load(config.read_text())
    data["connections"][0]["auth"]["token"] = "${PMSYNC_TEST_JIRA_TOKEN}"
    config.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("PMSYNC_TEST_JIRA_TOKEN", str(shared_sandbox.config()["connections"][0]["auth"]["token"]))
    defs = load_definitions(config, monkeypatch)
    # The variable vanishes between loading and running: every step fails on the configuration, without retries.
    monkeypatch.delenv("PMSYNC_TEST_JIRA_TOKEN")
    result = defs.resolve_job_def("pmsync_sync").execute_in_process(instance=dagster_home, raise_on_error=False)
    assert not result.success
    monkeypatch.setenv("PMSYNC_TEST_JIRA_TOKEN", "restored")

    run = dagster_home.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    sensor = defs.get_sensor_def("record_failed_runs")
    context = dg.build_run_status_sensor_context(
        sensor_name="record_failed_runs", dagster_event=failure, dagster_instance=dagster_home, dagster_run=run,
        resources=defs.resources,
    ).for_run_failure()
    sensor(context)
    with open_warehouse("duckdb:///pmsync.duckdb", tmp_path) as warehouse:
        rows = warehouse.query("SELECT * FROM sync_runs WHERE run_id = %s ORDER BY connection", [result.run_id])
    # The configuration fails to load in every ingest step, so every connection's sync failed.
    assert rows["connection"].tolist() == sorted(c["name"] for c in data["connections"])
    assert set(rows["status"]) == {"failed"}
    assert all("PMSYNC_TEST_JIRA_TOKEN" in error for error in rows["error"])

