"""Peak memory end to end at a size where the timed benchmark would take hours (issue 8: under 2 GB at 1,000,000).

Starts `pmsync sandbox --size N` in its own process with no latency and no rate limits (memory does not depend on
either; time does, and `make bench` measures time), then runs, in one child process (bench/stages.py `memory`):
a full sync of every connection, the schedule, and the push plan. Prints each step's wall time and the child's
peak resident memory (VmHWM) after it, the sandbox's own peak apart, and the ratio to the 2 GB target; writes
bench/results/memory_N.json. The push's writes are not made: the plan is the push's large structure, and its
writes then go one request at a time (`make bench` measures them at 10,000).

Run: `.venv/bin/python bench/bench_memory.py --size 1000000` (over an hour on 2 cores: the sandbox serves
several hundred thousand requests). `--steps sync,schedule --work DIR` keeps the warehouse in DIR, and a later
`--steps plan --work DIR` measures the push plan alone on it, in a process of its own (as `pmsync push` runs).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import RESULTS, run_stage, start_sandbox  # noqa: E402

TARGET_MB = 2048.0
AS_OF = date(2026, 11, 22)


def sandbox_peak_mb(pid: int) -> float:
    """The sandbox process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(size: int, folder: Path, steps: str) -> dict[str, Any]:
    """The memory stage's figures for `steps`; a sandbox is started for a sync (a plan needs only the warehouse
    and the configuration a sync left in `folder`)."""
    if "sync" not in steps.split(","):
        return run_stage("memory", folder / "memory.json", "--config", str(folder / "pmsync.yaml"), "--steps", steps)
    started = time.perf_counter()
    sandbox = start_sandbox(size, AS_OF, folder, latency_ms=0.0, rate_limits=False)
    print(f"sandbox of {size:,} tasks started in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        figures = run_stage("memory", folder / "memory.json", "--config", str(sandbox.config_path), "--steps", steps)
        figures["sandbox_peak_rss_mb"] = sandbox_peak_mb(sandbox.process.pid)
        figures["emulators"] = sandbox.stats()
    finally:
        sandbox.stop()
    return figures


def report(figures: dict[str, Any]) -> None:
    if "sync" in figures:
        sync = figures["sync"]
        pulled = sum(c["pulled"] for c in sync["connections"].values())
        requests = sum(c["requests"] for c in sync["connections"].values())
        print(f"full sync: {sync['seconds']:.0f} s, {pulled:,} records pulled, {requests:,} requests, "
              f"failures: {sync['failures'] or 'none'}")
        print(f"  peak memory after the sync:     {sync['peak_rss_mb']:,.0f} MB")
    if "schedule" in figures:
        schedule = figures["schedule"]
        print(f"schedule: {schedule['seconds']:.1f} s ({schedule.get('rows', '?')} rows"
              f"{', error ' + schedule['error'] if 'error' in schedule else ''})")
        print(f"  peak memory after the schedule: {schedule['peak_rss_mb']:,.0f} MB")
    if "push_plan" in figures:
        plan = figures["push_plan"]
        done = f"{plan['planned']:,} writes planned" if "planned" in plan else f"failed: {plan['error']}"
        print(f"push plan: {done} in {plan['seconds']:.1f} s")
        print(f"  peak memory after the plan:     {plan['peak_rss_mb']:,.0f} MB")
    peak = figures["peak_rss_mb"]
    sandbox = figures.get("sandbox_peak_rss_mb")
    print(f"pmsync's peak resident memory: {peak:,.0f} MB against {TARGET_MB:,.0f} MB: ratio {peak / TARGET_MB:.2f} "
          f"({'met' if peak <= TARGET_MB else 'not met'})"
          + (f"; the sandbox's own: {sandbox:,.0f} MB" if sandbox else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="tasks in the sandbox portfolio")
    parser.add_argument("--steps", default="sync,schedule,plan",
                        help="which of sync,schedule,plan to run in the one measured process")
    parser.add_argument("--work", type=Path,
                        help="keep the warehouse and configuration here (a later run with --steps plan reuses them)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"pmsync-bench-memory-{args.size}-") as tmp:
        folder = args.work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        figures = measure(args.size, folder, args.steps)
    figures.update(size=args.size, steps=args.steps)
    report(figures)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"memory_{args.size}_{args.steps.replace(',', '_')}.json"
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
