"""pmsync's benchmarks: every stage against the sandbox with vendor-like latency and the vendors' rate limits.

For each size, `pmsync sandbox` runs in its own process (50 ms per request, rate limits on) and pmsync's work runs
in child processes (bench/stages.py) whose peak memory is read from /proc: a full sync, the schedule, two pushes;
then, twice, 1% of the tasks get a new due date through the vendors' own write APIs (bench/changes.py) and an
incremental sync, schedule and push follow (the first also reads the first push's echo; the second is the steady
state, after a push of 1%); then the raw pages the full pull handed to `prepare_batch` are normalized and loaded
again alone into a fresh DuckDB file. Minimum requests come from the sandbox's own data (bench/minimum.py).

Writes bench/results/latest.json (a list of {name, value, unit, target, met}, with the sandbox and schedule
benchmarks' results merged in), prints a table, and rewrites the figures in docs/performance.md (keeping its
hand-written analysis). Run: `make bench` (10,000 tasks) or `make bench-full` (10,000, 100,000 and 1,000,000).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.changes import change_due_dates, pick_tasks  # noqa: E402
from bench.minimum import ToolMinimum, minimum_pages  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
QUICK_SIZES = (10_000,)
FULL_SIZES = (10_000, 100_000, 1_000_000)
SEED = 7
LATENCY_MS = 50.0
CHANGED_SHARE = 0.01

TARGET_REQUESTS_RATIO = 1.05
TARGET_PULL_RATIO = 1.25
TARGET_TASKS_PER_SECOND = 100_000.0
TARGET_INCREMENTAL_RATIO = 0.05
TARGET_PEAK_MB = 2048.0
TARGET_SCHEDULE_S = 10.0

VENDOR_OF = {"eng-jira": "jira", "mkt-asana": "asana", "ops-trello": "trello", "pmo-planner": "graph",
             "pmo-files": "graph"}
ANALYSIS_START = "<!-- analysis: kept by bench/run.py -->"
ANALYSIS_END = "<!-- end of analysis -->"


def connector_concurrency() -> dict[str, int]:
    """How many requests each connector has in flight at once (its own worker constants)."""
    from connectors import asana, jira, planner, trello

    return {"eng-jira": jira.REMOTE_LINK_WORKERS, "mkt-asana": asana.WORKERS, "ops-trello": trello.CARD_WORKERS,
            "pmo-planner": planner.WORKERS, "pmo-files": 1}


@dataclass
class Sandbox:
    """A `pmsync sandbox` process and the configuration it wrote."""

    process: subprocess.Popen
    config_path: Path
    config: dict[str, Any]
    bases: dict[str, str]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {vendor: httpx.get(f"{base}/_sandbox/stats", timeout=30).json() for vendor, base in self.bases.items()}

    def reset(self) -> None:
        """Zero the counters and the rate-limit windows (time passes between a user's syncs)."""
        for base in self.bases.values():
            httpx.post(f"{base}/_sandbox/stats/reset", timeout=30).raise_for_status()

    def rate_limits(self) -> dict[str, dict[str, Any] | None]:
        return {vendor: httpx.get(f"{base}/_sandbox/settings", timeout=30).json()["rate_limit"]
                for vendor, base in self.bases.items()}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_sandbox(size: int, as_of: date, folder: Path, latency_ms: float = LATENCY_MS,
                  rate_limits: bool = True) -> Sandbox:
    """`pmsync sandbox` (by default with 50 ms latency and the vendors' rate limits), once it has written its
    configuration."""
    config_path = folder / "pmsync.yaml"
    log = (folder / "sandbox.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("pmsync")), "sandbox", "--size", str(size), "--seed", str(SEED),
         "--as-of", as_of.isoformat(), "--port", "0", "--latency-ms", str(latency_ms),
         "--write-config", str(config_path), *([] if rate_limits else ["--no-rate-limits"])],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder,
    )
    deadline = time.monotonic() + 900
    while not _written(config_path):
        if process.poll() is not None:
            raise SystemExit(f"the sandbox exited: {(folder / 'sandbox.log').read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the sandbox did not start within 15 minutes")
        time.sleep(0.2)
    config = yaml.safe_load(config_path.read_text())
    bases = {}
    for connection in config["connections"]:
        url = connection.get("url") or connection["base_url"]
        for root in ("/api/1.0", "/v1.0", "/1"):
            url = url.removesuffix(root)
        bases[VENDOR_OF[connection["name"]]] = url
    return Sandbox(process, config_path, config, bases)


def _written(config_path: Path) -> bool:
    """True once the sandbox's configuration is complete on disk (it ends with the `sync` section)."""
    try:
        return "sync" in (yaml.safe_load(config_path.read_text()) or {})
    except (FileNotFoundError, yaml.YAMLError):
        return False


def run_stage(mode: str, out: Path, *args: str) -> dict[str, Any]:
    """Run bench/stages.py in a child process and read the figures it wrote."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, str(ROOT / "bench" / "stages.py"), mode, "--out", str(out), *args],
                               cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"bench/stages.py {mode} failed:\n{completed.stderr[-4000:]}")
    figures = json.loads(out.read_text())
    figures["process_seconds"] = time.perf_counter() - started
    return figures


def measure_size(size: int, as_of: date, push: bool = True, alone: bool = True) -> dict[str, Any]:
    """Every figure of one size (raw, before targets are applied). Without `push`, no push is made: one round of 1%
    changed follows the full sync. Without `alone`, the pulls are timed only within the full sync."""
    with tempfile.TemporaryDirectory(prefix=f"pmsync-bench-{size}-") as tmp:
        folder = Path(tmp)
        print(f"\n== {size:,} tasks: starting the sandbox (50 ms latency, vendor rate limits on)", flush=True)
        started = time.perf_counter()
        sandbox = start_sandbox(size, as_of, folder)
        figures: dict[str, Any] = {"size": size, "sandbox_start_s": time.perf_counter() - started}
        try:
            figures["minimum"] = {k: vars(v) for k, v in minimum_pages(size, SEED, as_of).items()}
            figures["rate_limits"] = sandbox.rate_limits()
            config = ["--config", str(sandbox.config_path)]
            # Each tool's full pull alone, in its own process, on the data the minimum counts (before any push adds
            # actions and history): the full sync below pulls all five at once on two cores shared with the
            # emulators, which times the machine's contention more than the pull.
            figures["pulls"] = {}
            for name in figures["minimum"] if alone else ():
                sandbox.reset()
                print(f"   full pull of {name} alone ...", flush=True)
                figures["pulls"][name] = run_stage("pull", folder / f"pull-{name}.json", *config,
                                                   "--connection", name)
            sandbox.reset()
            print(f"   full sync, schedule{', first and second push' if push else ''} ...", flush=True)
            no_push = [] if push else ["--no-push"]
            figures["full"] = run_stage("full", folder / "full.json", *config, "--spool", str(folder), *no_push)
            figures["full"]["emulators"] = sandbox.stats()
            # Two rounds of 1% changed: the first incremental sync after the first push also reads that push's
            # echo (a write to nearly every task); the second is the steady state, where the last push wrote
            # only what the previous 1% changed.
            rounds = (("after_first_push", SEED), ("incremental", SEED + 1)) if push else (("incremental", SEED + 1),)
            for stage, seed in rounds:
                chosen = pick_tasks(str(folder / "pmsync.duckdb"), CHANGED_SHARE, seed)
                sandbox.reset()
                print(f"   changing {sum(map(len, chosen.values())):,} due dates through the vendors' APIs ...",
                      flush=True)
                figures[f"changed_{stage}"] = change_due_dates(sandbox.config, chosen, as_of)
                sandbox.reset()
                print(f"   incremental sync, schedule and push ({stage.replace('_', ' ')}) ...", flush=True)
                figures[stage] = run_stage("incremental", folder / f"{stage}.json", *config, *no_push)
                figures[stage]["emulators"] = sandbox.stats()
            figures["changed"] = figures["changed_incremental"]
        finally:
            sandbox.stop()
        print("   normalize and load of the spooled raw pages, alone ...", flush=True)
        profile = RESULTS / f"profile_load_{size}.txt"
        figures["replay"] = run_stage("replay", folder / "replay.json", "--spool", str(folder),
                                      "--profile", str(profile))
    return figures


# -- figures against targets --------------------------------------------------------------------------------------

def result(name: str, value: float | None, unit: str, target: float | None, higher_is_better: bool = False,
           equal: bool = False) -> dict[str, Any]:
    """One {name, value, unit, target, met} row; `met` is None where there is no target or no value."""
    met = None
    if target is not None and value is not None:
        met = value == target if equal else (value >= target if higher_is_better else value <= target)
    rounded = round(value, 3) if isinstance(value, float) else value
    return {"name": name, "value": rounded, "unit": unit, "target": target, "met": met}


def lower_bound_s(pages: int, concurrency: int, rate_limit: dict[str, Any] | None) -> float:
    """The least time `pages` requests take: latency over the connector's concurrency, or the vendor's fixed
    request windows (the first window's budget goes at once), whichever is longer."""
    latency = LATENCY_MS / 1000
    by_latency = pages * latency / concurrency
    by_budget = 0.0
    if rate_limit:
        by_budget = (math.ceil(pages / rate_limit["limit"]) - 1) * rate_limit["window_s"] + latency
    return max(by_latency, by_budget)


def size_results(f: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark rows of one size."""
    size = f["size"]
    prefix = f"{size} tasks"
    rows = []
    full = f["full"]
    concurrency = connector_concurrency()
    bounds: dict[str, float] = {}
    for name, minimum in f["minimum"].items():
        run = full["sync"]["connections"].get(name)
        if run is None:
            rows.append(result(f"{prefix}: pull {name}: failed ({full['sync']['failures'].get(name)})", None, "", None))
            continue
        tool = ToolMinimum(**minimum)
        rows.append(result(f"{prefix}: pull {name}: requests", run["requests"], "requests", None))
        rows.append(result(f"{prefix}: pull {name}: minimum pages the data needs", tool.pages, "requests", None))
        if tool.per_task_reads:
            rows.append(result(f"{prefix}: pull {name}: of which per-task reads (no bulk API)", tool.per_task_reads,
                               "requests", None))
        rows.append(result(f"{prefix}: pull {name}: requests / minimum", run["requests"] / max(1, tool.pages), "x",
                           TARGET_REQUESTS_RATIO))
        rows.append(result(f"{prefix}: pull {name}: 429s met", run["requests_429"], "responses", None))
        bound = lower_bound_s(tool.pages, concurrency[name], f["rate_limits"].get(VENDOR_OF[name]))
        bounds[name] = bound
        rows.append(result(f"{prefix}: pull {name}: lower bound from latency and rate limit", bound, "s", None))
        alone = f.get("pulls", {}).get(name)
        if alone is not None:
            rows.append(result(f"{prefix}: pull {name} alone: wall time ({alone['requests']:,} requests, "
                               f"{alone['requests_429']} 429s)", alone["seconds"], "s", None))
            rows.append(result(f"{prefix}: pull {name} alone: wall time / lower bound", alone["seconds"] / bound, "x",
                               TARGET_PULL_RATIO))
        in_sync = f"{prefix}: pull {name} in the full sync (all tools at once)"
        rows.append(result(f"{in_sync}: wall time", run["seconds"], "s", None))
        rows.append(result(f"{in_sync}: wall time / lower bound", run["seconds"] / bound, "x",
                           None if alone is not None else TARGET_PULL_RATIO))
    emulated_429 = sum(v["rate_limited"] for v in full["emulators"].values())
    rows.append(result(f"{prefix}: full sync: 429s served by the emulators", emulated_429, "responses", None))
    rows.append(result(f"{prefix}: full sync (all tools at once): wall time", full["sync"]["seconds"], "s", None))
    if bounds:
        rows.append(result(f"{prefix}: full sync (all tools at once): wall time / the longest pull's lower bound",
                           full["sync"]["seconds"] / max(bounds.values()), "x", TARGET_PULL_RATIO))
    replay = f["replay"]
    rows.append(result(f"{prefix}: normalize and load into DuckDB ({replay['loaded']:,} tasks replayed)",
                       replay["loaded"] / replay["normalize_load_seconds"], "tasks/s", TARGET_TASKS_PER_SECOND,
                       higher_is_better=True))
    rows.append(result(f"{prefix}: normalize alone", replay["records"] / replay["normalize_seconds"], "tasks/s", None))
    loaded = sum(c["loaded"] for c in full["sync"]["connections"].values())
    load_s = sum(c["load_seconds"] or 0 for c in full["sync"]["connections"].values())
    rows.append(result(f"{prefix}: normalize and load inside the full sync", loaded / load_s if load_s else None,
                       "tasks/s", None))
    if "error" in full["schedule"]:
        rows.append(result(f"{prefix}: schedule: FAILED ({full['schedule']['error'][:120]})", None, "", None))
    else:
        rows.append(result(f"{prefix}: schedule", full["schedule"]["seconds"], "s", TARGET_SCHEDULE_S))
    steady = "steady state, the last push wrote 1%" if "push_first" in full else "1% changed, no push made"
    rows.extend(incremental_results(prefix, f, "incremental", steady))
    if "after_first_push" in f:
        rows.extend(incremental_results(prefix, f, "after_first_push", "right after the first push, its echo"))
    rows.extend(push_results(prefix, f))
    peak = max(f[stage]["peak_rss_mb"] for stage in ("full", "incremental", "after_first_push") if stage in f)
    rows.append(result(f"{prefix}: peak memory of the pmsync process", peak, "MB", TARGET_PEAK_MB))
    return rows


def incremental_results(prefix: str, f: dict[str, Any], stage: str, when: str) -> list[dict[str, Any]]:
    """An incremental sync's rows against the full sync: its time and requests, and its requests per connection."""
    full, incremental = f["full"], f[stage]
    full_requests = sum(c["requests"] for c in full["sync"]["connections"].values())
    incremental_requests = sum(c["requests"] for c in incremental["sync"]["connections"].values())
    changed = sum(f.get(f"changed_{stage}", f["changed"]).values())
    label = f"{prefix}: incremental sync, {when}"
    rows = [
        result(f"{label} ({changed} tasks changed): wall time", incremental["sync"]["seconds"], "s", None),
        result(f"{label}: incremental / full sync: time", incremental["sync"]["seconds"] / full["sync"]["seconds"],
               "x", TARGET_INCREMENTAL_RATIO),
        result(f"{label}: incremental / full sync: requests", incremental_requests / max(1, full_requests), "x",
               TARGET_INCREMENTAL_RATIO),
    ]
    for name, run in sorted(incremental["sync"]["connections"].items()):
        full_run = full["sync"]["connections"].get(name, {})
        rows.append(result(f"{label}: {name}: requests (full: {full_run.get('requests', 0):,}) and seconds "
                           f"({run['seconds']:.1f} s; full: {full_run.get('seconds', 0):.1f} s)",
                           run["requests"], "requests", None))
    return rows


def push_results(prefix: str, f: dict[str, Any]) -> list[dict[str, Any]]:
    full, incremental = f["full"], f["incremental"]
    if "push_first" not in full:
        return [result(f"{prefix}: push: not measured in this run (--no-push)", None, "", None)]
    first, second = full["push_first"], full["push_second"]
    if "error" in full["schedule"]:
        prefix = f"{prefix} (no schedule: pushes had nothing to write)"
    rows = [
        result(f"{prefix}: first push: wall time", first["seconds"], "s", None),
        result(f"{prefix}: first push: writes", first["emulator_writes"], "writes", None),
        result(f"{prefix}: first push: failed writes", first["failed"], "writes", 0, equal=True),
        result(f"{prefix}: second push, nothing changed: writes", second["emulator_writes"], "writes", 0, equal=True),
        result(f"{prefix}: second push: wall time", second["seconds"], "s", None),
    ]
    echo_push = f.get("after_first_push", {}).get("push_after_change")
    if echo_push:
        rows.append(result(f"{prefix}: push after the sync that read the first push's echo: values written",
                           echo_push["written"], "values", None))
    after = incremental.get("push_after_change")
    if after:
        # The values that changed are the plan's needed writes the tools can take: a write a tool cannot take yet
        # (an Asana subtask in no project, a board without pmsync's fields) is planned, skipped, and makes no
        # request. The target is one write request per changed value.
        planned = incremental["push_planned"]
        changed = planned - after.get("skipped", 0)
        rows.append(result(f"{prefix}: push after 1% changed: values the plan changed", planned, "values", None))
        rows.append(result(f"{prefix}: push after 1% changed: of which the tools cannot take yet (skipped)",
                           after.get("skipped"), "values", None))
        rows.append(result(f"{prefix}: push after 1% changed: values written", after["written"], "values", None))
        rows.append(result(f"{prefix}: push after 1% changed: write requests ({changed} values changed)",
                           after["emulator_writes"], "writes", changed, equal=True))
    return rows


def size_of(row: dict[str, Any]) -> int:
    """The task count a row is about (its name starts "N tasks:"); 0 for the merged rows."""
    head = row["name"].split(" tasks", 1)[0]
    return int(head) if head.isdigit() else 0


def earlier_rows(sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """The rows of the last results for sizes this run does not measure (a run of 100,000 tasks keeps the figures
    of 10,000), marked as kept."""
    path = RESULTS / "latest.json"
    if not path.exists():
        return []
    return [{**row, "name": f"{row['name']} [kept from an earlier run]" if "[kept" not in row["name"] else row["name"]}
            for row in json.loads(path.read_text()) if size_of(row) and size_of(row) not in sizes]


def merged_results() -> list[dict[str, Any]]:
    """The sandbox and schedule benchmarks' latest results (bench/bench_sandbox.py, bench/bench_schedule.py)."""
    rows = []
    for source in ("sandbox.json", "schedule.json"):
        path = RESULTS / source
        if path.exists():
            for row in json.loads(path.read_text()):
                rows.append({**row, "name": f"[{source}] {row['name']}"})
    return rows


def refresh_merged(full: bool) -> None:
    """Run the sandbox and schedule benchmarks again (full runs only: they take 1,000,000 tasks)."""
    if not full:
        return
    for script in ("bench_sandbox.py", "bench_schedule.py"):
        subprocess.run([sys.executable, str(ROOT / "bench" / script), *(["--size", "1000000"]
                        if script == "bench_sandbox.py" else [])], cwd=ROOT, check=True)


# -- output -------------------------------------------------------------------------------------------------------

def ratio_text(row: dict[str, Any]) -> str:
    value, target = row["value"], row["target"]
    if target is None or value is None:
        return ""
    if target == 0:
        return "" if value == 0 else "over"
    return f"{value / target:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'figure':<84} {'value':>14} {'unit':<9} {'target':>10} {'ratio':>6} met"]
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:,.3f}".rstrip("0").rstrip(".")
        target = "" if row["target"] is None else f"{row['target']:,}"
        met = {True: "yes", False: "NO", None: ""}[row["met"]]
        lines.append(f"{row['name'][:84]:<84} {value:>14} {row['unit']:<9} {target:>10} {ratio_text(row):>6} {met}")
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| figure | value | unit | target | ratio to target | met |", "|---|---:|---|---:|---:|---|"]
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:,.3f}".rstrip("0").rstrip(".")
        target = "" if row["target"] is None else f"{row['target']:,}"
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        lines.append(f"| {row['name']} | {value} | {row['unit']} | {target} | {ratio_text(row)} | {met} |")
    return "\n".join(lines)


def write_doc(rows: list[dict[str, Any]], sizes: tuple[int, ...], seconds: float, command: str) -> None:
    """Rewrite docs/performance.md's figures, keeping the hand-written analysis between its markers."""
    analysis = f"{ANALYSIS_START}\n(no analysis yet)\n{ANALYSIS_END}"
    if DOC.exists():
        text = DOC.read_text()
        if ANALYSIS_START in text and ANALYSIS_END in text:
            analysis = text[text.index(ANALYSIS_START):text.index(ANALYSIS_END) + len(ANALYSIS_END)]
    missed = [r for r in rows if r["met"] is False]
    miss_lines = [f"- {r['name']}: {r['value']:,} {r['unit']} against a target of {r['target']:,} "
                  f"({ratio_text(r) + 'x the target' if r['target'] else 'should be 0'})" for r in missed]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(f"""# Performance

The latest figures of pmsync's benchmarks, written by `bench/run.py` (last run: `{command}`, sizes
{', '.join(f'{s:,}' for s in sizes)} tasks, {seconds / 60:.1f} minutes, on {platform.node() or 'this machine'}
with {os.cpu_count()} cores, Python {platform.python_version()}). The machine is shared with other engineers
running test suites while the benchmarks run, so wall times carry noise; request counts and ratios do not.

## How to reproduce
- `make bench`: 10,000 tasks (about 10 minutes). `make bench-full`: 10,000, 100,000 and 1,000,000 tasks (hours:
  Asana's 1,500 requests a minute alone put the 1,000,000-task pull near three hours), then the sandbox and
  schedule benchmarks at 1,000,000 tasks (`bench/bench_sandbox.py`, `bench/bench_schedule.py`).
- Every run writes `bench/results/latest.json` (`{{name, value, unit, target, met}}`), prints the same table, and
  rewrites the figures below; `bench/results/profile_load_<size>.txt` holds the cProfile of normalize and load.
- Setup: `pmsync sandbox --size N --latency-ms 50` in its own process with the vendors' rate limits on (Jira 100/s,
  Asana 1,500/min, Trello 100/10 s, Graph 600/10 s per token); pmsync's work runs in child processes
  (`bench/stages.py`) whose peak resident memory (VmHWM) is reported. Twice, 1% of the Jira, Asana, Trello and
  Planner tasks get a due date a week later through each vendor's own write API (`bench/changes.py`), and an
  incremental sync, schedule and push follow. The first of those syncs also reads the echo of the first push
  (pmsync's own writes to nearly every task, each a change the tools record); the second is the steady state,
  where the last push wrote only what the previous 1% changed. Both are held to the 5% target. Minimum requests
  come from the sandbox's own data (`bench/minimum.py`): Jira and Asana have no bulk read for remote links and for
  history (stories), so one read per task is part of their minimum and is shown apart.
- Pull time: lower bound of a pull = the longer of (minimum pages x 50 ms / the connector's concurrency) and the
  vendor's fixed request windows for those pages. Each tool's full pull is then timed alone, in its own process
  (`bench/stages.py pull --connection NAME`), against its bound: the 1.25 target. The full sync pulls all five at
  once on two cores shared with the emulators; its wall time is held to the same target against the longest
  bound, and each connection's time within it is shown against its bound too, without a target.
- Rows marked `[sandbox.json]` and `[schedule.json]` are merged from the last run of those two scripts.
- Normalize and load alone, in a minute and with a profile: `.venv/bin/python bench/bench_load.py --size 10000`
  (the sandbox in process without latency, a full sync spooled, then replayed into fresh DuckDB files).

## Latest figures
{markdown_table(rows)}

## Targets missed
{chr(10).join(miss_lines) or '- none'}

## Why, and what in pmsync is the bottleneck
{analysis}
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 tasks only")
    parser.add_argument("--sizes", type=int, nargs="*", help="task counts (default: 10,000, 100,000, 1,000,000)")
    parser.add_argument("--no-push", action="store_true",
                        help="no push (at 100,000 tasks the first push alone takes most of an hour)")
    parser.add_argument("--no-alone", action="store_true", help="time the pulls only within the full sync")
    args = parser.parse_args()
    sizes = tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    command = "make bench" if args.quick else ("make bench-full" if not args.sizes else " ".join(sys.argv))
    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    as_of = date.today()
    rows: list[dict[str, Any]] = []
    raw = {}
    for size in sizes:
        figures = measure_size(size, as_of, push=not args.no_push, alone=not args.no_alone)
        raw[str(size)] = figures
        (RESULTS / f"raw_{size}.json").write_text(json.dumps(figures, indent=2, default=str))
        rows.extend(size_results(figures))
    refresh_merged(full=not args.quick and not args.sizes)
    kept = earlier_rows(sizes)
    rows = kept + rows
    rows.extend(merged_results())
    (RESULTS / "latest.json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(table(rows))
    write_doc(rows, tuple(sorted({*sizes, *map(size_of, kept)})), time.perf_counter() - started, command)
    print(f"\nwrote {RESULTS / 'latest.json'} and {DOC} in {(time.perf_counter() - started) / 60:.1f} minutes")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
