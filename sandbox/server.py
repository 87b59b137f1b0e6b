"""Serve the four emulators on loopback: a context manager for tests, and `pmsync sandbox` for people.

All four run in one background thread with one event loop, so the shared portfolio is only ever touched by one
thread and needs no locks.
"""
from __future__ import annotations

import asyncio
import importlib
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from sandbox import ids
from sandbox.core import CREDENTIALS, Emulator, EmulatorSettings
from sandbox.generator import ASANA, JIRA, MSPROJECT, PLANNER, TRELLO, Portfolio, generate

VENDORS = ("jira", "asana", "trello", "graph")
GRACEFUL_SHUTDOWN_S = 3  # how long a stopping sandbox waits for requests still in flight
# The API root each connection talks to, below the emulator's base URL.
API_ROOTS = {"jira": "", "asana": "/api/1.0", "trello": "/1", "graph": "/v1.0"}
CONNECTION_NAMES = {
    JIRA: "eng-jira", ASANA: "mkt-asana", TRELLO: "ops-trello", PLANNER: "pmo-planner", MSPROJECT: "pmo-files",
}


@dataclass
class TLSFiles:
    """A throwaway local CA and a certificate for 127.0.0.1/localhost signed by it."""

    directory: Path
    ca_bundle: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> TLSFiles:
        import trustme

        ca = trustme.CA(organization_name="pmsync sandbox local CA")
        server = ca.issue_cert("127.0.0.1", "localhost", "::1")
        directory.mkdir(parents=True, exist_ok=True)
        files = cls(directory, directory / "sandbox-ca.pem", directory / "server.pem", directory / "server.key")
        ca.cert_pem.write_to_path(str(files.ca_bundle))
        server.cert_chain_pems[0].write_to_path(str(files.cert))
        for extra in server.cert_chain_pems[1:]:
            extra.write_to_path(str(files.cert), append=True)
        server.private_key_pem.write_to_path(str(files.key))
        return files


@dataclass
class Sandbox:
    """The four emulators over one generated portfolio, served on 127.0.0.1 while the context is open."""

    size: str | int = "small"
    seed: int = 7
    as_of: date | None = None
    port: int = 0
    tls: bool = False
    latency_s: float = 0.0
    rate_limits: bool = True
    portfolio: Portfolio | None = None
    # Which emulators to serve (all four by default; a test of one vendor may serve just that one).
    vendors: tuple[str, ...] = VENDORS
    emulators: dict[str, Emulator] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    tls_files: TLSFiles | None = None
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _servers: list[uvicorn.Server] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Generate the portfolio (unless given), build the emulators and serve them until `stop()`."""
        if self.portfolio is None:
            self.portfolio = generate(self.seed, self.size, self.as_of)
        self.as_of = self.portfolio.as_of
        scheme = "https" if self.tls else "http"
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="pmsync-sandbox-tls-")
            self.tls_files = TLSFiles.create(Path(self._tmp.name))
        sockets = []
        for k, vendor in enumerate(self.vendors):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port + k if self.port else 0))
            sockets.append(sock)
            self.urls[vendor] = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        self.portfolio.urls.update(self.urls)
        for vendor in self.vendors:
            module = importlib.import_module(f"sandbox.{vendor}")
            settings = EmulatorSettings(
                latency_s=self.latency_s, rate_limit=module.default_rate_limit() if self.rate_limits else None
            )
            emulator = module.create(self.portfolio, settings)
            emulator.base_url = self.urls[vendor]
            self.emulators[vendor] = emulator
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sockets, ready), name="pmsync-sandbox", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the sandbox did not start within 30 seconds")

    def _run(self, sockets: list[socket.socket], ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        tls = {}
        if self.tls_files:
            tls = {"ssl_certfile": str(self.tls_files.cert), "ssl_keyfile": str(self.tls_files.key)}
        for vendor, sock in zip(self.vendors, sockets):
            # A connection still open when the sandbox stops (a client that never hangs up) is cut after a few
            # seconds rather than waited for: Ctrl-C stops the sandbox promptly.
            config = uvicorn.Config(
                self.emulators[vendor], log_level="warning", access_log=False, lifespan="off",
                timeout_keep_alive=30, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **tls,
            )
            self._servers.append(uvicorn.Server(config))

        async def serve_all() -> None:
            tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(self._servers, sockets)]
            while not all(s.started for s in self._servers):
                if any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.01)
            ready.set()
            await asyncio.gather(*tasks)

        try:
            loop.run_until_complete(serve_all())
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop serving; the portfolio stays readable."""
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._servers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def call(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the sandbox's own thread (for changing the portfolio while it serves)."""
        if self._loop is None:
            return fn(*args)
        future: asyncio.Future = asyncio.run_coroutine_threadsafe(_as_coroutine(fn, *args), self._loop)
        return future.result(timeout=30)

    # -- configuration --------------------------------------------------------------------------------------
    def api_url(self, vendor: str) -> str:
        """Where a client's API root is: the base URL plus the vendor's own prefix."""
        return self.urls[vendor] + API_ROOTS[vendor]

    def config(self, warehouse: str = "duckdb:///pmsync.duckdb") -> dict[str, Any]:
        """A complete pmsync.yaml (as a dict) pointing every connection at this sandbox."""
        p = self.portfolio
        assert p is not None, "start the sandbox first"
        jira, asana, trello, graph = (CREDENTIALS[v] for v in VENDORS)
        tls = {"ca_bundle": str(self.tls_files.ca_bundle)} if self.tls_files else {}
        connections = [
            {"name": CONNECTION_NAMES[JIRA], "tool": "jira", "url": self.urls["jira"],
             "auth": {"email": jira["email"], "token": jira["token"]},
             "projects": [pr.key for pr in p.projects_of(JIRA)], **tls},
            {"name": CONNECTION_NAMES[ASANA], "tool": "asana", "base_url": self.api_url("asana"),
             "auth": {"token": asana["token"]}, "workspace": ids.ASANA_WORKSPACE_GID,
             "projects": [ids.asana_project_gid(pr.index) for pr in p.projects_of(ASANA)], **tls},
            {"name": CONNECTION_NAMES[TRELLO], "tool": "trello", "base_url": self.api_url("trello"),
             "auth": {"key": trello["key"], "token": trello["token"]},
             "boards": [ids.trello_object_id(p, 1, pr.index) for pr in p.projects_of(TRELLO)], **tls},
            {"name": CONNECTION_NAMES[PLANNER], "tool": "planner", "base_url": self.api_url("graph"),
             "auth": {"token": graph["token"]},
             "plans": [ids.graph_id(p, "plan", pr.index) for pr in p.projects_of(PLANNER)], **tls},
            {"name": CONNECTION_NAMES[MSPROJECT], "tool": "msproject", "base_url": self.api_url("graph"),
             "auth": {"token": graph["token"]},
             "files": [f"drive:{ids.graph_drive_id(p)}/items/{ids.graph_item_id(p, pr.index)}"
                       for pr in p.projects_of(MSPROJECT)], **tls},
        ]
        return {
            "warehouse": warehouse,
            "timezone": "UTC",
            "connections": connections,
            "links": list(self.config_links()),
            "schedule": {"baseline": "original", "at_risk_days": 3},
            "sync": {"cron": "*/15 * * * *"},
        }

    def config_links(self) -> Iterator[dict[str, str]]:
        """Cross-tool dependencies no tool can record, which the generated configuration lists."""
        from sandbox.generator import LINK_CONFIG

        p = self.portfolio
        assert p is not None
        for k in p.links_of(LINK_CONFIG):
            yield {"predecessor": task_uid(p, int(p.link_pred[k])), "successor": task_uid(p, int(p.link_succ[k]))}

    def write_config(self, path: Path, warehouse: str = "duckdb:///pmsync.duckdb") -> Path:
        """Write the configuration as YAML, with a header saying where it points."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"# Written by `pmsync sandbox` for the local emulators (seed {self.seed}, as of {self.as_of}).\n"
            "# The credentials below are the sandbox's own literal values, not secrets.\n"
        )
        path.write_text(header + yaml.safe_dump(self.config(warehouse), sort_keys=False, width=120))
        return path


def native_id(p: Portfolio, i: int) -> str:
    """The id pmsync keys a task on in its tool (Jira's numeric id, Asana's gid, Trello's id, Graph's id...)."""
    tool = int(p.tasks.tool[i])
    if tool == JIRA:
        return ids.jira_issue_id(i)
    if tool == ASANA:
        return ids.asana_gid(i)
    if tool == TRELLO:
        return ids.trello_id(p, i)
    if tool == PLANNER:
        return ids.graph_id(p, "task", i)
    return f"{ids.graph_item_id(p, int(p.tasks.project[i]))}:{int(p.tasks.seq[i])}"


def task_uid(p: Portfolio, i: int) -> str:
    """`{connection}:{native id}` as pmsync's warehouse names the task."""
    return f"{CONNECTION_NAMES[int(p.tasks.tool[i])]}:{native_id(p, i)}"


async def _as_coroutine(fn: Any, *args: Any) -> Any:
    return fn(*args)


def serve_forever(
    size: str | int, seed: int, port: int, as_of: date | None, write_config: Path | None, tls: bool,
    latency_ms: float, rate_limits: bool,
) -> None:
    """`pmsync sandbox`: serve until Ctrl-C, printing (or writing) the configuration that points here."""
    from rich.console import Console

    console = Console(stderr=True)
    started = time.perf_counter()
    sandbox = Sandbox(size=size, seed=seed, as_of=as_of, port=port, tls=tls, latency_s=latency_ms / 1000,
                      rate_limits=rate_limits)
    try:
        sandbox.start()
    except OSError as exc:
        from pmsync.errors import PmsyncError

        raise PmsyncError(f"the sandbox could not listen on ports {port}..{port + 3} ({exc.strerror}); "
                          "pass --port with a free base port, or --port 0 for any free ports.") from None
    p = sandbox.portfolio
    assert p is not None
    console.print(f"[bold]pmsync sandbox[/] {p.tasks.size:,} tasks in {len(p.projects)} projects, as of {p.as_of}, "
                  f"ready in {time.perf_counter() - started:.1f}s")
    for vendor in VENDORS:
        console.print(f"  {vendor:<7} {sandbox.urls[vendor]}")
    if write_config:
        sandbox.write_config(write_config)
        console.print(f"configuration written to {write_config}")
    else:
        print(yaml.safe_dump(sandbox.config(), sort_keys=False, width=120))
    console.print("serving until Ctrl-C")
    try:
        while sandbox._thread is not None and sandbox._thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()


class serve_app:
    """Serve any ASGI app on a free loopback port in a background thread: `with serve_app(app) as url: ...`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not start within 10 seconds")
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
