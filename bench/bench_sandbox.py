"""How fast the emulators serve pages, and how much memory a large sandbox takes.

The sandbox runs in its own process (`pmsync sandbox`), exactly as the demo and the benchmarks use it; this script
reads its main listing endpoints page after page over keep-alive connections with no latency and no rate limits,
and reads the server's peak resident memory from /proc. Run: `.venv/bin/python bench/bench_sandbox.py --size 1000000`.
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
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# A page must cost the emulator well under the 50 ms of vendor-like latency the pull benchmarks inject.
TARGET_PAGES_PER_SECOND = 50.0
TARGET_PEAK_MB = 2048.0


def start_sandbox(size: str, config_path: Path) -> subprocess.Popen:
    pmsync = Path(sys.executable).with_name("pmsync")
    process = subprocess.Popen(
        [str(pmsync), "sandbox", "--size", size, "--port", "0", "--no-rate-limits", "--write-config", str(config_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 600
    while not config_path.exists():
        if process.poll() is not None:
            raise SystemExit(f"the sandbox exited: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the sandbox did not start within 10 minutes")
        time.sleep(0.2)
    time.sleep(0.5)
    return process


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pages(client: httpx.Client, first_url: str, next_url, limit: int) -> tuple[int, int, float]:
    """Follow a listing for up to `limit` pages: (pages, records, seconds)."""
    started = time.perf_counter()
    url, count, records = first_url, 0, 0
    while url and count < limit:
        response = client.get(url)
        response.raise_for_status()
        body = response.json()
        count += 1
        got, url = next_url(body, url)
        records += got
    return count, records, time.perf_counter() - started


def across(client: httpx.Client, first_urls: list[str], next_url, limit: int) -> tuple[int, int, float]:
    """`pages` over several projects (each listing to its end) until `limit` pages were read."""
    total_pages, total_records, total_seconds = 0, 0, 0.0
    for url in first_urls:
        count, records, seconds = pages(client, url, next_url, limit - total_pages)
        total_pages, total_records, total_seconds = total_pages + count, total_records + records, total_seconds + seconds
        if total_pages >= limit:
            break
    return total_pages, total_records, total_seconds


def measure(config: dict, max_pages: int) -> dict[str, tuple[int, int, float]]:
    by_tool = {c["tool"]: c for c in config["connections"]}
    out = {}
    jira = by_tool["jira"]
    with httpx.Client(auth=(jira["auth"]["email"], jira["auth"]["token"]), timeout=120) as client:
        base = f"{jira['url']}/rest/api/3/search/jql"
        fields = "summary,status,duedate,created,updated,parent,project,assignee,labels,issuetype,customfield_10015"
        jql = f"project in ({','.join(jira['projects'])}) ORDER BY updated ASC"

        def jira_next(body, url):
            token = body.get("nextPageToken")
            nxt = None
            if token:
                nxt = str(httpx.URL(base, params={"jql": jql, "fields": fields, "maxResults": 100,
                                                  "nextPageToken": token}))
            return len(body["issues"]), nxt

        out["jira search/jql (100 issues, 11 fields)"] = pages(
            client, str(httpx.URL(base, params={"jql": jql, "fields": fields, "maxResults": 100})), jira_next, max_pages)
    asana = by_tool["asana"]
    with httpx.Client(headers={"Authorization": f"Bearer {asana['auth']['token']}"}, timeout=120) as client:
        firsts = [f"{asana['base_url']}/tasks?project={project}&limit=100&opt_fields=name,due_on,start_on,"
                  "completed,modified_at,assignee.email,parent,memberships.section.name" for project in asana["projects"]]
        out["asana tasks (100, opt_fields)"] = across(
            client, firsts, lambda b, u: (len(b["data"]), (b.get("next_page") or {}).get("uri")), max_pages)
    trello = by_tool["trello"]
    with httpx.Client(params=trello["auth"], timeout=120) as client:
        firsts = [f"{trello['base_url']}/boards/{board}/cards/all?limit=1000&customFieldItems=true"
                  for board in trello["boards"]]

        def trello_next(body, url):
            if len(body) < 1000:
                return len(body), None
            return len(body), f"{url.split('&before=')[0]}&before={body[-1]['id']}"

        out["trello board cards (1000)"] = across(client, firsts, trello_next, max_pages)
    planner = by_tool["planner"]
    with httpx.Client(headers={"Authorization": f"Bearer {planner['auth']['token']}"}, timeout=120) as client:
        firsts = [f"{planner['base_url']}/planner/plans/{plan}/tasks" for plan in planner["plans"]]
        out["graph plan tasks (~400)"] = across(
            client, firsts, lambda b, u: (len(b["value"]), b.get("@odata.nextLink")), max_pages)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="100000")
    parser.add_argument("--pages", type=int, default=200, help="pages to read per endpoint at most")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "pmsync.yaml"
        started = time.perf_counter()
        process = start_sandbox(args.size, config_path)
        ready_s = time.perf_counter() - started
        try:
            config = yaml.safe_load(config_path.read_text())
            figures = measure(config, args.pages)
            peak = peak_rss_mb(process.pid)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    results = [
        {"name": f"sandbox {args.size} tasks: start-up", "value": round(ready_s, 2), "unit": "s", "target": None, "met": None},
        {"name": f"sandbox {args.size} tasks: peak memory", "value": round(peak, 1), "unit": "MB",
         "target": TARGET_PEAK_MB, "met": peak <= TARGET_PEAK_MB},
    ]
    print(f"sandbox of {args.size} tasks ready in {ready_s:.1f} s, peak resident memory {peak:,.0f} MB "
          f"(target {TARGET_PEAK_MB:,.0f} MB, ratio {peak / TARGET_PEAK_MB:.2f})")
    print(f"{'endpoint':<44} {'pages':>6} {'records':>8} {'pages/s':>8} {'records/s':>10} {'ratio to target':>16}")
    for name, (count, records, seconds) in figures.items():
        rate = count / seconds if seconds else float("inf")
        print(f"{name:<44} {count:>6} {records:>8} {rate:>8.1f} {records / seconds:>10,.0f} "
              f"{rate / TARGET_PAGES_PER_SECOND:>16.2f}")
        results.append({"name": f"sandbox {name}: pages per second", "value": round(rate, 1), "unit": "pages/s",
                        "target": TARGET_PAGES_PER_SECOND, "met": rate >= TARGET_PAGES_PER_SECOND})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sandbox.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
