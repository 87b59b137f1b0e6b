"""pmsync's pull against the Singer taps (tap-jira, tap-asana, tap-trello) on the same sandbox data.

One sandbox (`pmsync sandbox --tls`, in its own process so that neither side shares an interpreter with the
emulators; vendor latency, the vendors' rate limits on) serves both sides. For each tool, pmsync pulls its one
connection with `run_sync` into a fresh DuckDB, then the tap runs from its own virtual environment
(`bench/peers/.venvs/tap-<tool>`, made by `make bench-peers`) with only the streams equivalent to what pmsync
pulls selected; the emulator's request counters are reset (through `/_sandbox/stats/reset`) before each side.
Writes `bench/results/peers.json` and `bench/peers/RESULTS.md`.

    .venv/bin/python -m bench.peers.run --size 2000 --latency-ms 50
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers.proxy import PeerProxy, Route, complete_jira_search, oauth_token_answer  # noqa: E402
from sandbox.core import CREDENTIALS  # noqa: E402
from sandbox.generator import ASANA, JIRA, TRELLO  # noqa: E402
from sandbox.server import API_ROOTS, CONNECTION_NAMES  # noqa: E402

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
SITE = HERE / "site"
RESULTS_JSON = ROOT / "bench" / "results" / "peers.json"
RESULTS_MD = HERE / "RESULTS.md"
WALL_TARGET = 1 / 3  # pmsync's wall time at most a third of the tap's
REQUEST_TARGET = 1.0  # and no more requests
START_DATE = "2000-01-01T00:00:00Z"


@dataclass(frozen=True)
class Peer:
    """One tap and what it is compared on: the streams selected, the tool's connection in the sandbox config."""

    tool: str
    tap: str
    connection: str
    streams: tuple[str, ...]
    catalog_flag: str  # tap-jira silently ignores --catalog


PEERS = {
    "jira": Peer("jira", "tap-jira", CONNECTION_NAMES[JIRA], ("issues", "changelogs"), "--properties"),
    "asana": Peer("asana", "tap-asana", CONNECTION_NAMES[ASANA], ("tasks", "stories"), "--catalog"),
    "trello": Peer("trello", "tap-trello", CONNECTION_NAMES[TRELLO], ("boards", "cards", "actions"), "--catalog"),
}


@dataclass
class Measurement:
    """One side's pull of one tool: wall time, requests the emulator served, 429s, records by stream."""

    wall_s: float
    requests: int
    rate_limited: int
    records: dict[str, int] = field(default_factory=dict)
    by_route: dict[str, int] = field(default_factory=dict)
    extra_requests: int = 0  # answered by the proxy, not the emulator (tap-asana's OAuth refresh)
    startup_s: float = 0.0  # the tap's interpreter start and imports, included in wall_s
    error: str | None = None


@dataclass
class ServedSandbox:
    """A `pmsync sandbox` serving in another process: its written configuration, and its emulators' counters."""

    config: dict[str, Any]
    ca_bundle: Path

    def connection(self, name: str) -> dict[str, Any]:
        return next(c for c in self.config["connections"] if c["name"] == name)

    def base_url(self, tool: str) -> str:
        """The emulator's root URL (its API root, e.g. Trello's `/1`, stripped)."""
        connection = self.connection(PEERS[tool].connection)
        url = connection.get("url") or connection["base_url"]
        return url[: len(url) - len(API_ROOTS[tool])] if API_ROOTS[tool] else url

    def api_url(self, tool: str) -> str:
        return self.base_url(tool) + API_ROOTS[tool]

    def reset_stats(self, tool: str) -> None:
        httpx.post(f"{self.base_url(tool)}/_sandbox/stats/reset", verify=str(self.ca_bundle)).raise_for_status()

    def stats(self, tool: str) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url(tool)}/_sandbox/stats", verify=str(self.ca_bundle))
        response.raise_for_status()
        return response.json()


def read_written_config(path: Path) -> dict[str, Any] | None:
    """The configuration the sandbox wrote, once it is complete (None before)."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) and config.get("sync") else None


@contextmanager
def served_sandbox(size: str | int, seed: int, latency_ms: float, work: Path) -> Iterator[ServedSandbox]:
    """Start `pmsync sandbox --tls` on free ports, wait for the configuration it writes, stop it afterwards."""
    config_path = work / "sandbox.yaml"
    pmsync = Path(sys.executable).parent / "pmsync"
    process = subprocess.Popen(
        [str(pmsync), "sandbox", "--size", str(size), "--seed", str(seed), "--port", "0", "--tls",
         "--latency-ms", f"{latency_ms:g}", "--write-config", str(config_path)],
        stdout=subprocess.DEVNULL, stderr=open(work / "sandbox.log", "wb"),
    )
    try:
        deadline = time.monotonic() + 600
        while (config := read_written_config(config_path)) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start: {(work / 'sandbox.log').read_text()[-2000:]}")
            time.sleep(0.2)
        ca_bundle = Path(next(c["ca_bundle"] for c in config["connections"] if c.get("ca_bundle")))
        yield ServedSandbox(config, ca_bundle)
    finally:
        process.send_signal(signal.SIGINT)  # its Ctrl-C path removes the throwaway CA's directory
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# -- the taps' side -----------------------------------------------------------------------------------------------
def tap_config(peer: Peer, proxy: PeerProxy) -> dict[str, Any]:
    """The tap's config.json: the sandbox's literal credentials, a start date before any generated data."""
    if peer.tool == "jira":
        jira = CREDENTIALS["jira"]
        return {"start_date": START_DATE, "username": jira["email"], "password": jira["token"],
                "base_url": f"127.0.0.1:{proxy.front_port}", "user_agent": "pmsync-bench-peers"}
    if peer.tool == "asana":
        # No access_token key: the tap always refreshes first, at https://app.asana.com/-/oauth_token.
        return {"start_date": START_DATE, "client_id": "bench", "client_secret": "bench",
                "redirect_uri": "https://localhost/", "refresh_token": "bench"}
    trello = CREDENTIALS["trello"]
    return {"start_date": START_DATE, "api_key": trello["key"], "api_token": trello["token"],
            "user_agent": "pmsync-bench-peers"}


def tap_environment(peer: Peer, box: ServedSandbox, proxy: PeerProxy, bundle: Path) -> dict[str, str]:
    """Environment for the tap: the proxy for fixed hosts, the bundle to trust, the sitecustomize hooks."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CURL_CA_BUNDLE")}
    env.update({
        "PYTHONPATH": str(SITE), "PMSYNC_BENCH_CA_BUNDLE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle),
        "HTTPS_PROXY": proxy.proxy_url, "https_proxy": proxy.proxy_url, "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    if peer.tool == "asana":
        env["PMSYNC_BENCH_ASANA_HOST"] = box.api_url("asana")
    return env


def select_streams(catalog: dict[str, Any], streams: tuple[str, ...]) -> dict[str, Any]:
    """The discovered catalog with exactly `streams` selected (stream-level metadata) and every other one not."""
    for entry in catalog["streams"]:
        chosen = entry["tap_stream_id"] in streams
        top = next((m for m in entry.setdefault("metadata", []) if m.get("breadcrumb") == []), None)
        if top is None:
            top = {"breadcrumb": [], "metadata": {}}
            entry["metadata"].append(top)
        top["metadata"]["selected"] = chosen
    return catalog


def count_records(lines: bytes) -> dict[str, int]:
    """RECORD messages per stream in a tap's Singer output."""
    counts: Counter[str] = Counter()
    for line in lines.splitlines():
        if b'"RECORD"' in line:
            message = orjson.loads(line)
            if message.get("type") == "RECORD":
                counts[message["stream"]] += 1
    return dict(counts)


def tap_binary(peer: Peer) -> Path:
    """The tap's console script inside its own virtual environment."""
    return VENVS / peer.tap / "bin" / peer.tap


def startup_time(peer: Peer, env: dict[str, str]) -> float:
    """Seconds the tap's interpreter takes to start and import the tap (part of its wall time, not of pmsync's)."""
    python = VENVS / peer.tap / "bin" / "python"
    module = peer.tap.replace("-", "_")
    started = time.perf_counter()
    subprocess.run([str(python), "-c", f"import {module}"], env=env, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - started


def measure_tap(peer: Peer, box: ServedSandbox, proxy: PeerProxy, bundle: Path, work: Path) -> Measurement:
    """Discover (untimed), then run the tap with the selected streams and time it to its last byte of output."""
    env = tap_environment(peer, box, proxy, bundle)
    config = work / f"{peer.tap}-config.json"
    config.write_text(json.dumps(tap_config(peer, proxy)))
    discovered = subprocess.run([str(tap_binary(peer)), "--config", str(config), "--discover"],
                                env=env, capture_output=True, timeout=600)
    if discovered.returncode:
        return Measurement(0.0, 0, 0, error=f"discovery failed: {discovered.stderr.decode()[-2000:]}")
    catalog = work / f"{peer.tap}-catalog.json"
    catalog.write_text(json.dumps(select_streams(json.loads(discovered.stdout), peer.streams)))
    box.reset_stats(peer.tool)
    answered_before = proxy.answered
    started = time.perf_counter()
    run = subprocess.run([str(tap_binary(peer)), "--config", str(config), peer.catalog_flag, str(catalog)],
                         env=env, capture_output=True, timeout=7200)
    wall = time.perf_counter() - started
    stats = box.stats(peer.tool)
    (work / f"{peer.tap}.stderr.log").write_bytes(run.stderr)
    error = None if run.returncode == 0 else f"exit {run.returncode}: {run.stderr.decode()[-2000:]}"
    return Measurement(wall, stats["requests"], stats["rate_limited"], count_records(run.stdout), stats["by_route"],
                       proxy.answered - answered_before, startup_time(peer, env), error)


# -- pmsync's side ------------------------------------------------------------------------------------------------
# What pmsync reads by default beyond what the tap can read, switched off for the comparison on the same data (and
# measured on its own as "pmsync, all it reads"): Jira remote links (one request per issue), Asana subtasks that no
# project lists (one listing per task with subtasks, and their stories).
BEYOND_THE_TAP = {"jira": {"remote_links": False}, "asana": {"subtasks": False}}


def pmsync_config(box: ServedSandbox, peer: Peer, work: Path, same_data: bool = True) -> Path:
    """The sandbox's pmsync.yaml with just the tool's connection and a fresh DuckDB in `work`; with `same_data`,
    without what pmsync reads beyond the tap (BEYOND_THE_TAP)."""
    suffix = "" if same_data else "-all"
    config = dict(box.config, warehouse=f"duckdb:///{work / f'pmsync-{peer.tool}{suffix}.duckdb'}", links=[])
    connection = dict(box.connection(peer.connection))
    if same_data:
        connection.update(BEYOND_THE_TAP.get(peer.tool, {}))
    config["connections"] = [connection]
    path = work / f"pmsync-{peer.tool}{suffix}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def measure_pmsync(peer: Peer, box: ServedSandbox, work: Path, same_data: bool = True) -> Measurement:
    """pmsync's full pull of the tool's connection, into DuckDB, timed in-process."""
    from pmsync.config import load_config
    from pmsync.run import run_sync

    config = load_config(pmsync_config(box, peer, work, same_data))
    box.reset_stats(peer.tool)
    started = time.perf_counter()
    outcome = run_sync(config, names=[peer.connection])
    wall = time.perf_counter() - started
    stats = box.stats(peer.tool)
    pulled = sum(r.pulled for r in outcome.results)
    error = "; ".join(f"{k}: {v}" for k, v in outcome.failures.items()) or None
    return Measurement(wall, stats["requests"], stats["rate_limited"], {"tasks": pulled}, stats["by_route"],
                       error=error)


# -- results ------------------------------------------------------------------------------------------------------
def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def figures(tool: str, ours: Measurement, theirs: Measurement) -> list[dict[str, Any]]:
    """The `{name, value, unit, target, met}` rows for one tool."""
    wall_ratio = ratio(ours.wall_s, theirs.wall_s)
    request_ratio = ratio(ours.requests, theirs.requests + theirs.extra_requests)
    usable = ours.error is None and theirs.error is None
    return [
        {"name": f"peers {tool}: pmsync wall time", "value": round(ours.wall_s, 2), "unit": "s",
         "target": None, "met": None},
        {"name": f"peers {tool}: {PEERS[tool].tap} wall time", "value": round(theirs.wall_s, 2), "unit": "s",
         "target": None, "met": None},
        {"name": f"peers {tool}: pmsync requests", "value": ours.requests, "unit": "requests",
         "target": None, "met": None},
        {"name": f"peers {tool}: {PEERS[tool].tap} requests", "value": theirs.requests + theirs.extra_requests,
         "unit": "requests", "target": None, "met": None},
        {"name": f"peers {tool}: wall time pmsync / {PEERS[tool].tap}", "value": wall_ratio, "unit": "ratio",
         "target": round(WALL_TARGET, 3), "met": usable and wall_ratio is not None and wall_ratio <= WALL_TARGET},
        {"name": f"peers {tool}: requests pmsync / {PEERS[tool].tap}", "value": request_ratio, "unit": "ratio",
         "target": REQUEST_TARGET,
         "met": usable and request_ratio is not None and request_ratio <= REQUEST_TARGET},
    ]


def table(tool: str, ours: Measurement, theirs: Measurement, ours_all: Measurement | None = None) -> str:
    """A markdown table for one tool, with what each side pulled and any failure; `ours_all` is pmsync reading
    everything it reads by default (more than the tap), shown apart."""
    tap = PEERS[tool].tap
    rows = figures(tool, ours, theirs)
    wall, requests = rows[4], rows[5]
    mark = {True: "met", False: "**missed**", None: "n/a"}
    tap_requests = f"{theirs.requests}" + (f" + {theirs.extra_requests} OAuth" if theirs.extra_requests else "")
    lines = [
        f"#### {tool}: pmsync vs {tap}", "",
        f"| | pmsync | {tap} | pmsync / {tap} | target | |",
        "|---|---:|---:|---:|---:|---|",
        f"| wall time (s) | {ours.wall_s:.2f} | {theirs.wall_s:.2f} | {wall['value']} | <= 0.333 | {mark[wall['met']]} |",
        f"| requests | {ours.requests} | {tap_requests} | {requests['value']} | <= 1.0 | {mark[requests['met']]} |",
        f"| 429s met | {ours.rate_limited} | {theirs.rate_limited} | | | |",
        f"| of the wall time: interpreter start and imports (s) | (warm) | {theirs.startup_s:.2f} | | | |",
        "",
        f"pmsync pulled {ours.records.get('tasks', 0)} tasks; {tap} emitted "
        + (", ".join(f"{n} {s}" for s, n in sorted(theirs.records.items())) or "no records") + ".",
    ]
    if ours_all is not None:
        beyond = ", ".join(f"`{key}: {str(value).lower()}`" for key, value in BEYOND_THE_TAP[tool].items())
        lines.append(
            f"\nThe comparison above is on the same data: pmsync without what the tap cannot read ({beyond}). "
            f"With it, as pmsync runs by default: {ours_all.wall_s:.2f} s ({ratio(ours_all.wall_s, theirs.wall_s)} "
            f"of the tap's), {ours_all.requests} requests, {ours_all.records.get('tasks', 0)} tasks.")
    for side, m in (("pmsync", ours), (tap, theirs)):
        if m.error:
            lines.append(f"\n{side} failed: `{m.error.strip().splitlines()[-1][:300]}`")
    return "\n".join(lines)


def write_results(rows: list[dict[str, Any]], sections: list[str], args: argparse.Namespace) -> None:
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(rows, indent=2) + "\n")
    header = [
        "### Against the Singer taps", "",
        f"Sandbox: `pmsync sandbox --size {args.size} --seed {args.seed} --tls --latency-ms {args.latency_ms:g}` "
        "(its tasks spread over Jira, Asana, Trello, Planner and Project files), https, "
        f"{args.latency_ms:g} ms per request, the vendors' rate limits on. One run, on this machine, "
        f"{time.strftime('%Y-%m-%d')}. Produced by `make bench-peers` "
        f"(`bench/peers/run.py --size {args.size} --latency-ms {args.latency_ms:g}`); "
        "how each tap is pointed at the sandbox and what it pulls: `bench/peers/README.md`.",
        "",
        "Requests are those the emulator served (reset before each side); wall time is pmsync's `run_sync` of the "
        "one connection into a fresh DuckDB (pull, normalize, load, link resolution) against the tap process from start "
        "to exit (Singer output to a pipe, no target).", "",
    ]
    RESULTS_MD.write_text("\n".join(header) + "\n" + "\n\n".join(sections) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2000", help="tasks in the sandbox portfolio (or small/medium/large)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--tools", default="jira,asana,trello", help="comma-separated subset of jira,asana,trello")
    parser.add_argument("--keep", type=Path, help="keep configs, catalogs and the taps' logs in this directory")
    args = parser.parse_args(argv)
    args.size = int(args.size) if str(args.size).isdigit() else args.size
    return args


def run_pairs(tools: list[str], box: ServedSandbox, work: Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Each tool's pmsync pull then its tap's run, through one proxy: the result rows, the tables, failed tools."""
    routes = {
        "jira": Route(upstream=box.base_url("jira"), rewrite=complete_jira_search),
        "api.trello.com": Route(upstream=box.base_url("trello")),
        "app.asana.com": Route(answer=oauth_token_answer(CREDENTIALS["asana"]["token"])),
    }
    rows: list[dict[str, Any]] = []
    sections: list[str] = []
    failed: list[str] = []
    with PeerProxy(routes, default_host="jira", upstream_ca=box.ca_bundle, directory=work) as proxy:
        assert proxy.ca_pem is not None
        bundle = work / "bundle.pem"
        bundle.write_text(proxy.ca_pem.read_text() + box.ca_bundle.read_text())
        for tool in tools:
            peer = PEERS[tool]
            ours = measure_pmsync(peer, box, work)
            ours_all = measure_pmsync(peer, box, work, same_data=False) if tool in BEYOND_THE_TAP else None
            theirs = measure_tap(peer, box, proxy, bundle, work)
            if ours.error or theirs.error or (ours_all is not None and ours_all.error):
                failed.append(tool)
            rows += figures(tool, ours, theirs)
            if ours_all is not None:
                rows.append({"name": f"peers {tool}: pmsync wall time, all it reads by default",
                             "value": round(ours_all.wall_s, 2), "unit": "s", "target": None, "met": None})
                rows.append({"name": f"peers {tool}: pmsync requests, all it reads by default",
                             "value": ours_all.requests, "unit": "requests", "target": None, "met": None})
            sections.append(table(tool, ours, theirs, ours_all))
            print(sections[-1], "\n", flush=True)
            print(f"  pmsync routes: {ours.by_route}\n  {peer.tap} routes: {theirs.by_route}\n", flush=True)
    return rows, sections, failed


def main(argv: list[str] | None = None) -> int:
    """Run every selected tool's pair, print the tables, write the results; 1 if any side failed."""
    args = parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    missing = [PEERS[t].tap for t in tools if not tap_binary(PEERS[t]).exists()]
    if missing:
        print(f"not installed: {', '.join(missing)}; run `make bench-peers` first", file=sys.stderr)
        return 2
    import pmsync.run  # noqa: F401  (warm: pmsync's imports are not timed, the taps' start-up is reported)

    # requests lets REQUESTS_CA_BUNDLE override a session's own `verify`, which would send pmsync's connectors to
    # the system bundle instead of the sandbox CA its config names; the taps get their own environment anyway.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="pmsync-bench-peers-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        with served_sandbox(args.size, args.seed, args.latency_ms, work) as box:
            rows, sections, failed = run_pairs(tools, box, work)
        write_results(rows, sections, args)
    print(f"wrote {RESULTS_JSON.relative_to(ROOT)} and {RESULTS_MD.relative_to(ROOT)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
