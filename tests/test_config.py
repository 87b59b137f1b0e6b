"""pmsync.yaml: the example loads, paths resolve, `${VAR}` substitutes, a bad file is one clear sentence."""

from __future__ import annotations

import copy
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pmsync.cli import app
from pmsync.config import (
    Config,
    GraphToken,
    MsProjectConnection,
    check_cron,
    example_text,
    load_config,
    redact,
    write_example,
)
from pmsync.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PMSYNC = REPO / ".venv" / "bin" / "pmsync"
PYTHON = REPO / ".venv" / "bin" / "python"

ENV = {
    "JIRA_EMAIL": "coordinator@example.com",
    "JIRA_API_TOKEN": "jira-s3cret-token-001",
    "ASANA_TOKEN": "asana-s3cret-token-002",
    "TRELLO_KEY": "trello-s3cret-key-003",
    "TRELLO_TOKEN": "trello-s3cret-token-004",
    "GRAPH_TENANT_ID": "tenant-0000",
    "GRAPH_CLIENT_ID": "client-0000",
    "GRAPH_SECRET": "graph-s3cret-005",
}
SECRETS = [
    ENV[name] for name in ("JIRA_API_TOKEN", "ASANA_TOKEN", "TRELLO_KEY", "TRELLO_TOKEN", "GRAPH_SECRET")
]


def write(tmp_path: Path, text: str, name: str = "pmsync.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


MINIMAL = """\
    warehouse: duckdb:///state/pmsync.duckdb
    connections:
      - {name: eng-jira, tool: jira, url: "http://127.0.0.1:8700",
         auth: {email: a@example.com, token: "${JIRA_API_TOKEN}"}, projects: [PLAT]}
"""


def test_example_loads_when_its_environment_variables_are_set(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, example_text()), ENV)

    assert [c.name for c in config.connections] == [
        "eng-jira",
        "mkt-asana",
        "ops-trello",
        "pmo-planner",
        "pmo-files",
    ]
    assert config.connection("eng-jira").auth.token.get_secret_value() == ENV["JIRA_API_TOKEN"]
    assert config.connection("pmo-planner").token_url == (
        "https://login.microsoftonline.com/tenant-0000/oauth2/v2.0/token"
    )
    assert config.tzinfo.key == "America/Toronto"
    assert config.sync.cron == "*/15 * * * *"
    assert config.links[0].predecessor_connection == "eng-jira"


def test_example_explains_every_key_it_sets_in_a_comment() -> None:
    lines = example_text().splitlines()
    assert sum(line.lstrip().startswith("#") or " # " in line for line in lines) >= 40
    for variable in ENV:
        assert f"${{{variable}}}" in example_text()


def test_init_writes_the_example_that_then_loads(tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "pmsync.yaml"

    result = CliRunner().invoke(app, ["init", "--config", str(target)])

    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == example_text()
    assert load_config(target, ENV).connection("mkt-asana").tool == "asana"


def test_init_refuses_to_overwrite_an_existing_file_without_force(tmp_path: Path) -> None:
    target = write(tmp_path, "# mine\n")

    refused = CliRunner().invoke(app, ["init", "--config", str(target)])
    assert isinstance(refused.exception, ConfigError)
    assert "already exists" in str(refused.exception) and "--force" in str(refused.exception)
    assert target.read_text(encoding="utf-8") == "# mine\n"

    forced = CliRunner().invoke(app, ["init", "--config", str(target), "--force"])
    assert forced.exit_code == 0
    assert target.read_text(encoding="utf-8") == example_text()


def test_write_example_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    target = write_example(tmp_path / "pmsync.yaml")
    with pytest.raises(ConfigError, match="already exists"):
        write_example(target)
    assert write_example(target, force=True) == target


def test_relative_duckdb_path_resolves_against_the_config_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, MINIMAL, "conf/pmsync.yaml"), ENV)

    expected = (tmp_path / "conf" / "state" / "pmsync.duckdb").resolve()
    assert config.duckdb_path == expected
    assert config.warehouse_url == f"duckdb:///{expected}"
    assert config.reports.out_dir == (tmp_path / "conf" / "reports").resolve()


def test_absolute_duckdb_and_postgresql_urls_are_kept(tmp_path: Path) -> None:
    absolute = load_config(write(tmp_path, MINIMAL.replace("duckdb:///state", "duckdb:////srv/state")), ENV)
    assert absolute.duckdb_path == Path("/srv/state/pmsync.duckdb")

    text = MINIMAL.replace("duckdb:///state/pmsync.duckdb", "postgresql://postgres@127.0.0.1:5432/test")
    postgres = load_config(write(tmp_path, text), ENV)
    assert postgres.warehouse_url == "postgresql://postgres@127.0.0.1:5432/test"
    assert postgres.duckdb_path is None


def test_a_jira_project_listed_twice_is_searched_once(tmp_path: Path) -> None:
    twice = MINIMAL.replace("projects: [PLAT]}", "projects: [PLAT, WEB, PLAT]}")
    assert load_config(write(tmp_path, twice), ENV).connections[0].projects == ["PLAT", "WEB"]


def test_jira_overlap_is_the_connections_own_else_the_sync_sections(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL), ENV).connections[0].overlap_minutes == 0
    inherited = load_config(write(tmp_path, MINIMAL + "    sync: {overlap_minutes: 3}\n"), ENV)
    assert inherited.connections[0].overlap_minutes == 3
    own = MINIMAL.replace("projects: [PLAT]}", "projects: [PLAT], overlap_minutes: 1}")
    overridden = load_config(write(tmp_path, own + "    sync: {overlap_minutes: 3}\n"), ENV)
    assert overridden.connections[0].overlap_minutes == 1


def test_variable_default_applies_when_unset_or_empty_and_a_set_value_wins(tmp_path: Path) -> None:
    text = (
        MINIMAL + '    timezone: "${PMSYNC_TZ:-Europe/Paris}"\n    sync: {overlap_minutes: "${OVERLAP:-7}"}\n'
    )
    path = write(tmp_path, text)

    assert load_config(path, ENV).timezone == "Europe/Paris"
    assert load_config(path, {**ENV, "PMSYNC_TZ": ""}).timezone == "Europe/Paris"
    assert load_config(path, {**ENV, "PMSYNC_TZ": "Asia/Tokyo"}).timezone == "Asia/Tokyo"
    assert load_config(path, ENV).sync.overlap_minutes == 7


def test_double_dollar_writes_a_literal_variable_reference(tmp_path: Path) -> None:
    text = MINIMAL.replace("email: a@example.com", 'email: "$${NOT_A_VAR}"')
    config = load_config(write(tmp_path, text), ENV)
    assert config.connection("eng-jira").auth.email == "${NOT_A_VAR}"


def test_secrets_never_show_in_repr_and_redact_removes_them(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, example_text()), ENV)
    log_line = "calling with " + " and ".join(SECRETS) + f" {config!r}"

    cleaned = redact(log_line, config)

    for secret in SECRETS:
        assert secret not in repr(config)
        assert secret not in cleaned
    assert cleaned.startswith("calling with *** and ***")


def test_redact_removes_a_postgresql_password(tmp_path: Path) -> None:
    text = MINIMAL.replace("duckdb:///state/pmsync.duckdb", "postgresql://app:pg-pass-77@db:5432/pmsync")
    config = load_config(write(tmp_path, text), ENV)
    assert (
        redact("connect failed: postgresql://app:pg-pass-77@db", config)
        == "connect failed: postgresql://app:***@db"
    )
    assert "pg-pass-77" not in repr(config)


def test_msproject_files_resolve_against_the_config_folder_and_need_no_auth_when_local(
    tmp_path: Path,
) -> None:
    text = (
        MINIMAL
        + '      - {name: pmo-files, tool: msproject, files: ["file:plans/a.mpp", "file:/srv/b.xml"]}\n'
    )
    connection = load_config(write(tmp_path, text), ENV).connection("pmo-files")

    assert isinstance(connection, MsProjectConnection)
    assert [f.path for f in connection.files] == [
        (tmp_path / "plans" / "a.mpp").resolve(),
        Path("/srv/b.xml"),
    ]
    assert connection.auth is None


def test_graph_connections_accept_a_static_token_and_a_sandbox_base_url(tmp_path: Path) -> None:
    text = MINIMAL + (
        '      - {name: pmo-planner, tool: planner, base_url: "http://127.0.0.1:8703/v1.0",\n'
        "         auth: {token: sandbox-graph-token}, groups: [g1]}\n"
    )
    planner = load_config(write(tmp_path, text), ENV).connection("pmo-planner")
    assert isinstance(planner.auth, GraphToken)
    assert planner.api_url == "http://127.0.0.1:8703/v1.0"
    assert planner.token_url is None


def test_ca_bundle_resolves_against_the_config_folder_and_becomes_the_verify_argument(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    text = MINIMAL.replace("projects: [PLAT]}", "projects: [PLAT], ca_bundle: ca.pem}")
    jira = load_config(write(tmp_path, text), ENV).connection("eng-jira")
    assert jira.tls_verify == str(tmp_path / "ca.pem")


def test_writeback_fills_in_each_tools_defaults(tmp_path: Path) -> None:
    text = MINIMAL + "    writeback: {eng-jira: {labels: false}}\n"
    targets = load_config(write(tmp_path, text), ENV).writeback_for("eng-jira")
    assert (targets.property, targets.labels, targets.comments, targets.custom_fields) == (
        True,
        False,
        True,
        {},
    )
    assert targets.categories is False


@pytest.mark.parametrize("cron", ["*/15 * * * *", "0 6 * * mon-fri", "30 2 1,15 jan-jun *", "0 0 * * 7"])
def test_standard_cron_lines_are_accepted(cron: str) -> None:
    assert check_cron(cron) == cron


@pytest.mark.parametrize("cron", ["*/15 * * *", "0 24 * * *", "*/0 * * * *", "0 0 * * funday", "@hourly"])
def test_malformed_cron_lines_are_rejected(cron: str) -> None:
    with pytest.raises(ValueError):
        check_cron(cron)


def assert_one_sentence(message: str, path: Path, *fragments: str) -> None:
    assert "\n" not in message and message.endswith("."), message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    for secret in SECRETS:
        assert secret not in message, message


# (replace this in the example, with this) -> the key the sentence must name, and a piece of its fix.
BAD_EXAMPLES = {
    "unknown_key_suggests_closest": (("timezone:", "timezon:"), "timezon", "did you mean `timezone`"),
    "unknown_key_in_a_connection": (
        ("projects: [PLAT, WEB]", "projcts: [PLAT, WEB]"),
        "connections[eng-jira].projcts",
        "did you mean `projects`",
    ),
    "unknown_key_in_auth": (
        ('token: "${ASANA_TOKEN}"}', 'token: "${ASANA_TOKEN}", tokn: x}'),
        "connections[mkt-asana].auth.tokn",
        "did you mean `token`",
    ),
    "wrong_type_number": (("at_risk_days: 3", "at_risk_days: soon"), "schedule.at_risk_days", "integer"),
    "wrong_type_list": (
        ("projects: [PLAT, WEB]", "projects: {PLAT: 1}"),
        "connections[eng-jira].projects",
        "list",
    ),
    "secret_of_wrong_type": (
        ('token: "${JIRA_API_TOKEN}"', "token: [1, 2]"),
        "connections[eng-jira].auth.token",
        "string",
    ),
    "duplicate_connection_names": (
        ("name: mkt-asana", "name: eng-jira"),
        "connections[eng-jira]",
        "unique name",
    ),
    "link_to_unknown_connection": (
        ('successor: "mkt-asana:1209"', 'successor: "mkt-asna:1209"'),
        "links[0].successor",
        "mkt-asana",
    ),
    "unknown_tool": (("tool: trello", "tool: trelo"), "connections[ops-trello]", "jira, asana, trello"),
    "bad_time_zone": (("America/Toronto", "America/Torono"), "timezone", "IANA"),
    "cron_with_four_fields": (('"*/15 * * * *"', '"*/15 * * *"'), "sync.cron", 'like "*/15 * * * *"'),
    "unknown_baseline": (("baseline: original", "baseline: orignal"), "schedule.baseline", "'first_seen'"),
    "writeback_target_the_tool_lacks": (
        ("{custom_fields: true, comments: true}", "{labels: true}"),
        "writeback.ops-trello.labels",
        "custom_fields, comments",
    ),
    "writeback_for_unknown_connection": (
        ("ops-trello: {custom_fields", "ops-trelo: {custom_fields"),
        "writeback.ops-trelo",
        "ops-trello",
    ),
    "portfolio_on_wrong_tool": (
        ("{connection: ops-trello", "{connection: mkt-asana"),
        "writeback.portfolio.trello_board.connection",
        "ops-trello",
    ),
    "bad_connection_name": (
        ("name: ops-trello", "name: Ops_Trello"),
        "connections[Ops_Trello].name",
        "rename it",
    ),
    "unknown_warehouse": (
        ("duckdb:///data/pmsync.duckdb\n", "sqlite:///x.db\n"),
        "warehouse",
        "postgresql://",
    ),
    "msproject_file_without_scheme": (
        ('"file:plans/datacenter.mpp"', '"plans/datacenter.mpp"'),
        "connections[pmo-files].files[1]",
        "file:",
    ),
    "red_below_amber": (
        ("red_slip_days: 10", "red_slip_days: 1"),
        "schedule.health.red_slip_days",
        "at least",
    ),
    "missing_required_key": (("    boards: [aB3dE5]\n", ""), "connections[ops-trello].boards", "add it"),
    "planner_without_plans": (("plans: [xqQg5FS2]", "plans: []"), "connections[pmo-planner].plans", "groups"),
    "jira_url_without_scheme": (
        ("url: https://acme.atlassian.net", "url: acme.atlassian.net"),
        "connections[eng-jira].url",
        "https://",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_EXAMPLES))
def test_bad_config_is_one_sentence_naming_file_key_and_fix(tmp_path: Path, case: str) -> None:
    (old, new), key, fix = BAD_EXAMPLES[case]
    assert old in example_text()
    path = write(tmp_path, example_text().replace(old, new, 1))

    with pytest.raises(ConfigError) as raised:
        load_config(path, ENV)

    assert_one_sentence(str(raised.value), path, f" {key} ", fix)


def test_missing_variable_names_the_key_and_the_variable_but_no_value(tmp_path: Path) -> None:
    path = write(tmp_path, example_text())
    env = {name: value for name, value in ENV.items() if name != "JIRA_API_TOKEN"}

    with pytest.raises(ConfigError) as raised:
        load_config(path, env)

    assert_one_sentence(
        str(raised.value),
        path,
        "connections[eng-jira].auth.token",
        "${JIRA_API_TOKEN}",
        "not set in the environment",
        "export JIRA_API_TOKEN",
    )


def test_empty_secret_is_reported_as_empty(tmp_path: Path) -> None:
    path = write(tmp_path, example_text())
    with pytest.raises(ConfigError) as raised:
        load_config(path, {**ENV, "ASANA_TOKEN": ""})
    assert_one_sentence(str(raised.value), path, "connections[mkt-asana].auth.token is empty")


def test_missing_file_points_at_init_and_config(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert_one_sentence(str(raised.value), path, "not found", "pmsync init", "--config")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("warehouse: duckdb:///x.duckdb\nsync: cron: x\n", 2),
        ("timezone: UTC\nsync:\n\tcron: x\n", 3),
        ("timezone: UTC\ntimezone: Europe/Paris\n", 2),
    ],
)
def test_yaml_syntax_error_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path, ENV)
    assert_one_sentence(str(raised.value), path, f"line {line},", "fix the syntax")


def test_empty_file_and_non_mapping_file_are_sentences(tmp_path: Path) -> None:
    for text in ("", "- just\n- a list\n"):
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as raised:
            load_config(path, ENV)
        assert_one_sentence(str(raised.value), path, "pmsync init")


def test_unprintable_connection_name_is_labelled_by_position(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("name: eng-jira", 'name: "\\n"'))
    with pytest.raises(ConfigError) as raised:
        load_config(path, ENV)
    assert_one_sentence(str(raised.value), path, "connections[0].name")


def test_secret_written_literally_never_appears_in_an_error(tmp_path: Path) -> None:
    text = MINIMAL.replace('"${JIRA_API_TOKEN}"', "literal-s3cret-999, extra: literal-s3cret-999")
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), ENV)
    assert "literal-s3cret-999" not in str(raised.value)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in children:
        found += _paths(value, prefix + (key,))
    return found


EXAMPLE_TREE = yaml.safe_load(example_text())
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["name", "tool", "x", "token"]), st.text(max_size=5), max_size=2),
    st.sampled_from(["${JIRA_API_TOKEN}", "${UNSET_VAR}", "${", "duckdb:///", "jira", "eng-jira:1"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    where=st.sampled_from(_paths(EXAMPLE_TREE)),
    action=st.sampled_from(["replace", "delete", "rename"]),
    junk=JUNK,
)
def test_any_damaged_example_loads_or_fails_with_one_config_sentence(
    tmp_path: Path, where, action, junk
) -> None:
    tree = copy.deepcopy(EXAMPLE_TREE)
    *parents, last = where
    container = tree
    for key in parents:
        container = container[key]
    if action == "replace":
        container[last] = junk
    elif action == "delete":
        del container[last]
    elif isinstance(container, dict):
        container[f"{last}x"] = container.pop(last)
    path = write(tmp_path, yaml.safe_dump(tree, sort_keys=False))

    try:
        config = load_config(path, ENV)
    except ConfigError as exc:
        assert_one_sentence(str(exc), path)
    else:
        assert isinstance(config, Config)


def test_pmsync_init_over_an_existing_file_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    target = write(tmp_path, "# mine\n")
    done = subprocess.run(
        [str(PMSYNC), "init", "--config", str(target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert "already exists" in done.stderr and "--force" in done.stderr
    assert target.read_text(encoding="utf-8") == "# mine\n"


# A command registered only in this child process, run through the real `pmsync.cli.main` error handling.
CHECK_THROUGH_MAIN = """
import sys
from pathlib import Path
from pmsync.cli import app, main
from pmsync.config import load_config

@app.command("check-config")
def check_config(config: Path) -> None:
    load_config(config)

sys.argv = ["pmsync", "check-config", sys.argv[1]]
main()
"""


def run_check_through_main(path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "1000", **ENV}
    return subprocess.run(
        [str(PYTHON), "-c", CHECK_THROUGH_MAIN, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def test_bad_config_through_main_exits_non_zero_with_one_sentence_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, example_text().replace("projects: [PLAT, WEB]", "projcts: [PLAT, WEB]"))

    done = run_check_through_main(path)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(path) in done.stderr and "projcts is not a known key" in done.stderr
    for secret in SECRETS:
        assert secret not in done.stderr + done.stdout


def test_connection_name_in_brackets_survives_the_terminal(tmp_path: Path) -> None:
    path = write(tmp_path, example_text().replace("projects: [PLAT, WEB]", "projcts: [PLAT, WEB]"))
    assert "connections[eng-jira].projcts" in run_check_through_main(path).stderr
