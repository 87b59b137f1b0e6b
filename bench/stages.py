"""pmsync's own work for one benchmark size, run in a child process so that its peak memory is pmsync's alone.

`python bench/stages.py full --config PATH --out JSON --spool DIR`: a full sync (every batch handed to
`prepare_batch` is timed and spooled to DIR), the schedule, then two pushes. `incremental`: an incremental sync, the
schedule, the push plan and a push. `replay --spool DIR --out JSON`: normalize and load the spooled pages into a
fresh DuckDB file, timed alone, with a profile of where that time goes. `memory --config PATH --out JSON`: a full
sync, the schedule and the push plan, for peak memory at sizes where the timed run would take hours
(bench/bench_memory.py). Each mode writes its figures as JSON, the process's peak resident memory (VmHWM)
included. The orchestrator is bench/run.py.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import itertools
import json
import pickle
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

import pmsync.sync as sync_module  # noqa: E402
from pmsync.config import Config, SyncSettings, load_config  # noqa: E402
from pmsync.run import open_config_warehouse, run_sync  # noqa: E402

# The spool keeps this many raw task records at most: enough for a steady throughput figure at every size.
SPOOL_MAX_RECORDS = 200_000


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def emulator_bases(config: Config) -> dict[str, str]:
    """The emulators' base URLs (where `/_sandbox/...` is served), by vendor."""
    bases = {}
    for connection in config.connections:
        url = getattr(connection, "url", None) or getattr(connection, "base_url", None)
        vendor = {"jira": "jira", "asana": "asana", "trello": "trello"}.get(connection.tool, "graph")
        base = str(url).rstrip("/")
        for root in ("/api/1.0", "/v1.0", "/1"):
            base = base.removesuffix(root)
        bases[vendor] = base
    return bases


def emulator_writes(config: Config) -> int:
    """Write requests every emulator has served since its counters were last reset."""
    return sum(httpx.get(f"{base}/_sandbox/stats", timeout=30).json()["writes"]
               for base in emulator_bases(config).values())


class LoadRecorder:
    """Wraps `pmsync.sync.prepare_batch` and `write_batch` while installed: times both (normalize on the pull's
    thread, the write under the warehouse's lock) and spools the batches prepared (up to a cap) for the replay."""

    def __init__(self, spool: Path | None) -> None:
        self.seconds: dict[str, float] = {}
        self.tasks: dict[str, int] = {}
        self.spooled = 0
        self._lock = threading.Lock()
        self._file = (spool / "batches.pickle").open("wb") if spool else None
        self._prepare = sync_module.prepare_batch
        self._write = sync_module.write_batch

    def install(self) -> None:
        sync_module.prepare_batch, sync_module.write_batch = self.prepare, self.write

    def uninstall(self) -> None:
        sync_module.prepare_batch, sync_module.write_batch = self._prepare, self._write

    def _count(self, connection: str, seconds: float, tasks: int = 0) -> None:
        with self._lock:
            self.seconds[connection] = self.seconds.get(connection, 0.0) + seconds
            self.tasks[connection] = self.tasks.get(connection, 0) + tasks

    def prepare(self, connection: str, tool: str, batch: Any, mapping: Any, timezone: str, state: Any = None) -> Any:
        if self._file is not None and self.spooled < SPOOL_MAX_RECORDS:
            with self._lock:
                pickle.dump((connection, tool, batch, mapping, timezone), self._file, pickle.HIGHEST_PROTOCOL)
                self.spooled += len(batch.records)
        started = time.perf_counter()
        prepared = self._prepare(connection, tool, batch, mapping, timezone, state)
        self._count(connection, time.perf_counter() - started)
        return prepared

    def write(self, warehouse: Any, prepared: Any, run_id: str) -> tuple[int, int]:
        started = time.perf_counter()
        loaded, quarantined = self._write(warehouse, prepared, run_id)
        self._count(prepared.connection, time.perf_counter() - started, loaded)
        return loaded, quarantined

    def close(self) -> None:
        self.uninstall()
        if self._file is not None:
            self._file.close()


def timed_sync(config: Config, full: bool, recorder: LoadRecorder | None = None) -> dict[str, Any]:
    """One `pmsync sync` (all connections, concurrently) with per-connection figures from `sync_runs`."""
    if recorder is not None:
        recorder.install()
    started = time.perf_counter()
    outcome = run_sync(config, full=full)
    wall = time.perf_counter() - started
    with open_config_warehouse(config) as warehouse:
        runs = warehouse.query(
            "SELECT connection, mode, started_at, finished_at, requests, requests_429, records_pulled, records_loaded, "
            "status, error FROM sync_runs WHERE run_id = ANY(%s)", [[r.run_id for r in outcome.results]])
    connections = {}
    for row in runs.to_dict("records"):
        connections[row["connection"]] = {
            "mode": row["mode"], "seconds": (row["finished_at"] - row["started_at"]).total_seconds(),
            "requests": int(row["requests"] or 0), "requests_429": int(row["requests_429"] or 0),
            "pulled": int(row["records_pulled"] or 0), "loaded": int(row["records_loaded"] or 0),
            "status": row["status"], "error": row["error"],
            "load_seconds": recorder.seconds.get(row["connection"], 0.0) if recorder else None,
        }
    return {"seconds": wall, "connections": connections, "failures": outcome.failures}


def timed_schedule(config: Config) -> dict[str, Any]:
    from schedule.compute import compute_and_store

    started = time.perf_counter()
    try:
        with open_config_warehouse(config) as warehouse:
            result = compute_and_store(warehouse, config)
    except Exception as exc:  # a failing stage is a finding to report, not the end of the benchmark
        return {"seconds": time.perf_counter() - started, "error": f"{type(exc).__name__}: {exc}"}
    return {"seconds": time.perf_counter() - started, "rows": result.stored.get("schedule", 0)}


def push_available() -> bool:
    """True once writeback/push.py (another engineer's part) provides `run_push`."""
    if importlib.util.find_spec("writeback.push") is None:
        return False
    return hasattr(importlib.import_module("writeback.push"), "run_push")


def timed_push(config: Config) -> dict[str, Any]:
    """One push (with write-back setup, as a first-time user runs it), and the writes the emulators saw."""
    from writeback.push import run_push

    before = emulator_writes(config)
    started = time.perf_counter()
    outcome = run_push(config, setup=True)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds, "emulator_writes": emulator_writes(config) - before,
        "planned": sum(r.planned for r in outcome.results.values()),
        "written": sum(r.written for r in outcome.results.values()),
        "failed": sum(r.failed for r in outcome.results.values()),
        "skipped": sum(r.skipped for r in outcome.results.values()),
        "failures": outcome.failures,
        "errors": {name: r.errors[:2] for name, r in outcome.results.items() if r.errors},
    }


def planned_push(config: Config) -> int:
    """Writes the push plan needs now (values whose hash differs from the ledger's)."""
    from writeback.push import run_push

    return sum(r.planned for r in run_push(config, dry_run=True).results.values())


def run_full(config: Config, spool: Path, push: bool = True) -> dict[str, Any]:
    recorder = LoadRecorder(spool)
    try:
        figures: dict[str, Any] = {"sync": timed_sync(config, full=True, recorder=recorder)}
    finally:
        recorder.close()
    figures["spooled_records"] = recorder.spooled
    figures["schedule"] = timed_schedule(config)
    if push and push_available():
        figures["push_first"] = timed_push(config)
        figures["push_second"] = timed_push(config)
    return figures


def run_incremental(config: Config, push: bool = True) -> dict[str, Any]:
    figures: dict[str, Any] = {"sync": timed_sync(config, full=False, recorder=LoadRecorder(None))}
    figures["schedule"] = timed_schedule(config)
    if push and push_available():
        figures["push_planned"] = planned_push(config)
        figures["push_after_change"] = timed_push(config)
    return figures


def run_pull(config: Config, name: str) -> dict[str, Any]:
    """One connection's full pull alone (the stage `pull` of the issue, without normalize and load): its batches
    consumed as the sync consumes them, timed from the first request to the last batch. The connector is built
    (its SDK imported) before the clock starts; what the pull itself starts (MS Project's JVM) is timed."""
    from connectors.registry import build_connector

    connector = build_connector(config.connection(name), config.timezone)
    records = batches = 0
    try:
        started = time.perf_counter()
        for batch in connector.pull(None):
            records += len(batch.records)
            batches += 1
        seconds = time.perf_counter() - started
        stats = connector.stats.snapshot()
    finally:
        connector.close()
    return {"seconds": seconds, "records": records, "batches": batches, "requests": int(stats["requests"]),
            "requests_429": int(stats["throttled"])}


MEMORY_STEPS = ("sync", "schedule", "plan")


def run_memory(config: Config, steps: tuple[str, ...] = MEMORY_STEPS) -> dict[str, Any]:
    """Everything pmsync keeps in memory for a portfolio, in one process: a full sync, the schedule and the push
    plan (`pmsync push --dry-run`: the plan is the push's large structure; its writes then go one at a time), or
    some of those `steps` (the warehouse a sync left can be planned from later, in a process of its own)."""
    figures: dict[str, Any] = {}
    if "sync" in steps:
        figures["sync"] = timed_sync(config, full=True)
        figures["sync"]["peak_rss_mb"] = peak_rss_mb()
    if "schedule" in steps:
        figures["schedule"] = timed_schedule(config)
        figures["schedule"]["peak_rss_mb"] = peak_rss_mb()
    if "plan" in steps and push_available():
        started = time.perf_counter()
        try:
            figures["push_plan"] = {"planned": planned_push(config)}
        except Exception as exc:  # a failing step is a finding to report; the figures before it still count
            figures["push_plan"] = {"error": f"{type(exc).__name__}: {exc}"}
        figures["push_plan"].update(seconds=time.perf_counter() - started, peak_rss_mb=peak_rss_mb())
    return figures


def read_spool(spool: Path) -> list[tuple]:
    batches = []
    with (spool / "batches.pickle").open("rb") as file:
        while True:
            try:
                batches.append(pickle.load(file))
            except EOFError:
                return batches


def normalize_all(batches: list[tuple]) -> float:
    """Seconds to normalize every spooled page, grouped as `prepare_batch` sees them (nothing is written)."""
    from mappings.normalize import normalize_tasks

    started = time.perf_counter()
    for connection, _, group, mapping, timezone in replay_groups(batches):
        normalize_tasks(group.records, mapping, connection, timezone)
    return time.perf_counter() - started


def replay_groups(batches: list[tuple]) -> Iterator[tuple]:
    """The spooled pages grouped into transactions as `pmsync sync` groups them by default:
    (connection, tool, group, mapping, timezone) per group."""
    defaults = SyncSettings()
    # The full sync pulls its connections concurrently, so the spool interleaves their pages; each connection is
    # loaded by its own sync, which groups only its own pages. Put each connection's pages together (in their
    # order) before grouping, or the replay would cut a transaction at every switch of connection.
    order = {connection: k for k, connection in enumerate(dict.fromkeys(b[0] for b in batches))}
    batches = sorted(batches, key=lambda b: order[b[0]])
    for (connection, tool, mapping, timezone), run in itertools.groupby(
            batches, key=lambda b: (b[0], b[1], b[3], b[4])):
        pages = [page for _, _, page, _, _ in run]
        for group in sync_module.grouped(pages, defaults.commit_every_records, defaults.commit_every_seconds):
            yield connection, tool, group, mapping, timezone


def load_all(batches: list[tuple], warehouse: Any) -> tuple[float, int]:
    """Normalize and load every group into `warehouse`, one transaction each, as `pmsync sync` does: each group is
    normalized on a thread of its own ahead of the write (`prepare_batch` on the pull's side), then written under
    the transaction (`write_batch`): (seconds, tasks loaded)."""
    groups = list(replay_groups(batches))
    run_ids = {connection: warehouse.start_run(connection, "full") for connection in dict.fromkeys(g[0] for g in groups)}
    started = time.perf_counter()
    loaded = 0
    state = sync_module._RunState()
    prepared = (sync_module.prepare_batch(connection, tool, group, mapping, timezone, state)
                for connection, tool, group, mapping, timezone in groups)
    for ready in sync_module.pulled_ahead(prepared, "pmsync-replay"):
        with warehouse.transaction():
            loaded += sync_module.write_batch(warehouse, ready, run_ids[ready.connection])[0]
    return time.perf_counter() - started, loaded


def replay(batches: list[tuple]) -> tuple[float, float, int]:
    """Normalize alone, then normalize and load every batch into a fresh DuckDB file, grouped into transactions as
    `pmsync sync` groups them by default: (normalize-only seconds, normalize+load seconds, tasks loaded)."""
    from warehouse import open_warehouse

    normalize_s = normalize_all(batches)
    with tempfile.TemporaryDirectory(prefix="pmsync-bench-load-") as tmp:
        warehouse = open_warehouse(f"duckdb:///{tmp}/load.duckdb")
        try:
            load_s, loaded = load_all(batches, warehouse)
            # Closing checkpoints what the WAL still holds: part of writing the rows, so timed with them.
            closing = time.perf_counter()
        finally:
            warehouse.close()
        load_s += time.perf_counter() - closing
    return normalize_s, load_s, loaded


def profiled_replay(batches: list[tuple], lines: int = 40, sort: str = "cumulative") -> str:
    """cProfile of one more replay, the top `lines` functions by `sort`."""
    profiler = cProfile.Profile()
    profiler.enable()
    replay(batches)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(lines)
    return text.getvalue()


def run_replay(spool: Path, profile_out: Path) -> dict[str, Any]:
    batches = read_spool(spool)
    normalize_s, load_s, loaded = replay(batches)
    profile_out.write_text(profiled_replay(batches))
    records = sum(len(b[2].records) for b in batches)
    return {"batches": len(batches), "records": records, "loaded": loaded, "normalize_seconds": normalize_s,
            "normalize_load_seconds": load_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("full", "incremental", "pull", "replay", "memory"))
    parser.add_argument("--config", type=Path)
    parser.add_argument("--connection", help="pull mode: the connection to pull")
    parser.add_argument("--no-push", action="store_true", help="full and incremental modes: no push after them")
    parser.add_argument("--spool", type=Path)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", default=",".join(MEMORY_STEPS), help="memory mode: which of sync,schedule,plan")
    args = parser.parse_args()
    if args.mode == "replay":
        figures = run_replay(args.spool, args.profile)
    elif args.mode == "pull":
        figures = run_pull(load_config(args.config), args.connection)
    elif args.mode == "memory":
        figures = run_memory(load_config(args.config), tuple(args.steps.split(",")))
    else:
        config = load_config(args.config)
        push = not args.no_push
        figures = run_full(config, args.spool, push) if args.mode == "full" else run_incremental(config, push)
    figures["peak_rss_mb"] = peak_rss_mb()
    args.out.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
