"""Normalize and load alone, in one process, against the 100,000 tasks/s target (issue 8).

Starts the sandbox in this process at `--size N` with no latency and no rate limits, runs one full `run_sync`
while spooling every batch `pmsync.sync.prepare_batch` is handed (bench/stages.py's LoadRecorder), then replays the
spool `--repeats` times: normalize alone, and normalize and load into a fresh DuckDB file, grouped into
transactions as `pmsync sync` groups them by default (bench/stages.py's replay, shared with `make bench`). Prints
the best tasks/s of each, the ratio to the target, and a cProfile top list of one more replay.

Run: `.venv/bin/python bench/bench_load.py --size 10000`. `--spool DIR` keeps the spooled pages in DIR and, when
DIR already holds them, replays them without starting the sandbox (for quick profiling while changing code).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stages import LoadRecorder, profiled_replay, read_spool, replay, timed_sync  # noqa: E402
from pmsync.config import load_config  # noqa: E402

TARGET_TASKS_PER_SECOND = 100_000.0
SEED = 7
AS_OF = date(2026, 11, 22)


def spool_sync(size: int, spool: Path) -> float:
    """One full sync of a fresh sandbox into a scratch DuckDB file, spooling every batch `prepare_batch` is handed
    to `spool`; returns its wall time."""
    from sandbox.server import Sandbox

    with tempfile.TemporaryDirectory(prefix="pmsync-bench-sync-") as tmp, \
            Sandbox(size=size, seed=SEED, as_of=AS_OF, latency_s=0.0, rate_limits=False) as box:
        config = load_config(box.write_config(Path(tmp) / "pmsync.yaml", warehouse=f"duckdb:///{tmp}/sync.duckdb"))
        recorder = LoadRecorder(spool)
        try:
            figures = timed_sync(config, full=True, recorder=recorder)
        finally:
            recorder.close()
    if figures["failures"]:
        raise SystemExit(f"the full sync failed: {figures['failures']}")
    return figures["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="tasks in the sandbox portfolio")
    parser.add_argument("--repeats", type=int, default=3, help="replays to time (the best is reported)")
    parser.add_argument("--spool", type=Path, help="keep the spool here; replay it without a sync if present")
    parser.add_argument("--profile-lines", type=int, default=25)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pmsync-bench-spool-") as scratch:
        spool = args.spool or Path(scratch)
        spool.mkdir(parents=True, exist_ok=True)
        if (spool / "batches.pickle").exists():
            print(f"replaying the spool already in {spool}")
        else:
            seconds = spool_sync(args.size, spool)
            print(f"full sync of {args.size:,} tasks (no latency, no rate limits): {seconds:.1f} s")
        batches = read_spool(spool)

    records = sum(len(batch.records) for _, _, batch, _, _ in batches)
    print(f"spooled: {len(batches):,} pages, {records:,} records")
    normalize_runs, load_runs = [], []
    loaded = 0
    for _ in range(args.repeats):
        normalize_s, load_s, loaded = replay(batches)
        normalize_runs.append(normalize_s)
        load_runs.append(load_s)
    normalize_rate = records / min(normalize_runs)
    load_rate = loaded / min(load_runs)
    print(f"normalize alone:       {normalize_rate:>10,.0f} tasks/s  (best of {args.repeats}: "
          f"{', '.join(f'{s:.3f}' for s in normalize_runs)} s)")
    print(f"normalize and load:    {load_rate:>10,.0f} tasks/s  ({loaded:,} tasks loaded; best of {args.repeats}: "
          f"{', '.join(f'{s:.3f}' for s in load_runs)} s)")
    print(f"ratio to the target of {TARGET_TASKS_PER_SECOND:,.0f} tasks/s: {load_rate / TARGET_TASKS_PER_SECOND:.3f}"
          f" ({'met' if load_rate >= TARGET_TASKS_PER_SECOND else 'not met'})")
    started = time.perf_counter()
    profile = profiled_replay(batches, args.profile_lines, "tottime")
    print(f"\ncProfile of one more replay ({time.perf_counter() - started:.2f} s under the profiler),"
          f" top {args.profile_lines} by own time:")
    print(profile[profile.index("ncalls") if "ncalls" in profile else 0:].rstrip())


if __name__ == "__main__":
    main()
