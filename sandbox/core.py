"""What every emulator shares: authentication, rate limits, latency, injected faults, counters and recording.

Each vendor module supplies a `VendorProfile` (how that vendor authenticates and how its 401, 429 and 5xx look)
and its Starlette routes; `Emulator` wraps them in one pure-ASGI layer that applies, in the vendor's order:
counting, authentication, the rate limit, latency, then faults on the way out. Tests and benchmarks steer it
through Python (`emulator.settings`, `emulator.inject(...)`, `emulator.stats`) or, for a sandbox in another
process, through the unauthenticated `/_sandbox/...` admin routes.
"""
from __future__ import annotations

import asyncio
import math
import re
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FaultKind = Literal["status", "timeout", "malformed_json", "truncated", "invalid_record", "reset"]

# The sandbox's literal credentials: written into the configuration it generates, accepted by the emulators.
CREDENTIALS = {
    "jira": {"email": "coordinator@acme.example", "token": "sandbox-jira-api-token"},
    "asana": {"token": "2/1201000000000001/1209999999999999:sandboxasanapat"},
    "trello": {"key": "0123456789abcdef0123456789abcdef", "token": "ATTA" + "5a" * 30},
    "graph": {"token": "sandbox-graph-bearer-token", "tenant_id": "00000000-0000-4000-8000-00000000a11c",
              "client_id": "00000000-0000-4000-8000-0000000c11e7", "client_secret": "sandbox-graph-secret"},
}


class JSONBody(Response):
    """A JSON response rendered with orjson: the emulators serve large pages and must not be the bottleneck."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


@dataclass
class RateLimit:
    """A fixed-window request budget per credential, as the vendor applies it."""

    limit: int
    window_s: float
    send_retry_after: bool = True
    enabled: bool = True


@dataclass
class Fault:
    """A fault to inject into matching requests.

    kind: `status` answers `status` with the vendor's error body; `timeout` holds the request for `delay_s` then
    answers 504; `reset` closes the response without a body; `malformed_json` sends a body that is not JSON;
    `truncated` cuts the real body in half; `invalid_record` lets the vendor profile corrupt one record of the
    real response (a wrong type in a date field). It hits matching requests `every` N-th time, `times` times
    (-1 = forever).
    """

    kind: FaultKind
    status: int = 500
    path: str = ""
    method: str | None = None
    times: int = 1
    every: int = 1
    delay_s: float = 30.0
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and re.search(self.path, path) is not None

    def should_fire(self) -> bool:
        """Count a matching request and say whether this one is hit."""
        if self.times != -1 and self.fired >= self.times:
            return False
        self.seen += 1
        if self.seen % self.every:
            return False
        self.fired += 1
        return True


@dataclass
class EmulatorSettings:
    """What a test or benchmark can turn: latency, the rate limit, and whether exchanges are recorded."""

    latency_s: float = 0.0
    rate_limit: RateLimit | None = None
    record: bool = False


@dataclass
class Stats:
    """Counters of what an emulator served, for tests and benchmarks."""

    requests: int = 0
    reads: int = 0
    writes: int = 0
    rate_limited: int = 0
    unauthorized: int = 0
    faults: int = 0
    by_route: Counter = field(default_factory=Counter)
    writes_by_route: Counter = field(default_factory=Counter)
    # Requests being answered at once (past authentication and the rate limit, latency included), and the most
    # seen at once since the last reset: shows whether a client overlaps its requests.
    in_flight: int = 0
    peak_in_flight: int = 0
    # The same per "METHOD /path" (the query left out): whether a client overlaps requests of one kind. Only
    # paths in flight are held, and only peaks above one, so per-task paths leave nothing behind.
    in_flight_by_path: Counter = field(default_factory=Counter)
    peak_in_flight_by_path: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("by_route", "writes_by_route", "in_flight_by_path", "peak_in_flight_by_path"):
            out[name] = dict(getattr(self, name))
        return out


@dataclass
class Recorded:
    """One exchange as it crossed the wire, for contract tests against the vendor's OpenAPI description."""

    method: str
    path: str
    query: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes


class VendorProfile(ABC):
    """How one vendor authenticates and shapes its errors."""

    name: str

    @abstractmethod
    def principal(self, request: Request) -> str | None:
        """The credential a request carries if it is valid (the rate-limit key), else None."""

    @abstractmethod
    def unauthorized(self, request: Request) -> Response:
        """The vendor's 401."""

    @abstractmethod
    def too_many_requests(self, retry_after_s: float) -> Response:
        """The vendor's 429 (with Retry-After where the vendor sends it)."""

    @abstractmethod
    def error(self, status: int, message: str) -> Response:
        """The vendor's error body for any status."""

    def corrupt_record(self, document: Any) -> bool:
        """Make one record of a decoded response invalid in place (a date that is not a date); False if none."""
        return _corrupt_first_date(document)

    def rate_limit_headers(self, limit: RateLimit, remaining: int, reset_at: float) -> dict[str, str]:
        """Headers the vendor adds to every response about its budget (none by default)."""
        return {}


_DATE_KEYS = ("duedate", "due_on", "due", "dueDateTime", "due_at")


def _corrupt_first_date(document: Any) -> bool:
    if isinstance(document, dict):
        for key in _DATE_KEYS:
            if key in document:
                document[key] = "next tuesday-ish"
                return True
        return any(_corrupt_first_date(v) for v in document.values() if isinstance(v, (dict, list)))
    if isinstance(document, list):
        return any(_corrupt_first_date(v) for v in document)
    return False


class _Window:
    """Fixed-window counter of requests per credential."""

    def __init__(self) -> None:
        self.start = 0.0
        self.count = 0


class Emulator:
    """One vendor's ASGI app: its routes wrapped in authentication, rate limits, latency, faults and counters."""

    def __init__(self, profile: VendorProfile, routes: list[BaseRoute], settings: EmulatorSettings | None = None):
        self.profile = profile
        self.name = profile.name
        self.settings = settings or EmulatorSettings()
        self.stats = Stats()
        self.faults: list[Fault] = []
        self.recorded: deque[Recorded] = deque(maxlen=20_000)
        self.base_url = ""
        self._windows: dict[str, _Window] = {}
        self._inner = Starlette(routes=[*self._admin_routes(), *routes])

    # -- steering -------------------------------------------------------------------------------------------
    def inject(self, kind: FaultKind, **options: Any) -> Fault:
        """Add a fault (see `Fault`); returns it so a test can read how often it fired."""
        fault = Fault(kind=kind, **options)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset_stats(self) -> None:
        self.stats = Stats()
        self._windows.clear()

    # -- ASGI -----------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox/"):
            await self._inner(scope, receive, send)
            return
        request = Request(scope, receive)
        method, path = scope["method"], scope["path"]
        stats = self.stats
        stats.requests += 1
        write = method in WRITE_METHODS
        if write:
            stats.writes += 1
        else:
            stats.reads += 1
        principal = self.profile.principal(request)
        if principal is None:
            stats.unauthorized += 1
            await self._respond(scope, receive, send, self.profile.unauthorized(request))
            return
        extra_headers: dict[str, str] = {}
        limit = self.settings.rate_limit
        if limit is not None and limit.enabled:
            retry_after, remaining, reset_at = self._take(principal, limit)
            extra_headers = self.profile.rate_limit_headers(limit, remaining, reset_at)
            if retry_after is not None:
                stats.rate_limited += 1
                await self._respond(scope, receive, send, self.profile.too_many_requests(retry_after))
                return
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        kind = f"{method} {path}"
        stats.in_flight_by_path[kind] += 1
        if stats.in_flight_by_path[kind] > max(1, stats.peak_in_flight_by_path.get(kind, 0)):
            stats.peak_in_flight_by_path[kind] = stats.in_flight_by_path[kind]
        try:
            if self.settings.latency_s:
                await asyncio.sleep(self.settings.latency_s)
            fault = next((f for f in self.faults if f.matches(method, path) and f.should_fire()), None)
            if fault is not None:
                stats.faults += 1
            await self._serve(scope, receive, send, fault, extra_headers, write)
        finally:
            stats.in_flight -= 1
            stats.in_flight_by_path[kind] -= 1
            if not stats.in_flight_by_path[kind]:
                del stats.in_flight_by_path[kind]

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, fault: Fault | None, extra: dict[str, str], write: bool
    ) -> None:
        if fault is not None and fault.kind == "status":
            await self._respond(scope, receive, send, self.profile.error(fault.status, "Injected fault"))
            return
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(fault.delay_s)
            await self._respond(scope, receive, send, self.profile.error(504, "Gateway timeout"))
            return
        body_parts: list[bytes] = []
        start: dict[str, Any] = {}
        request_body = bytearray()

        async def recording_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                request_body.extend(message.get("body", b""))
            return message

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body_parts.append(message.get("body", b""))

        await self._inner(scope, recording_receive, capture)
        route = self._route_name(scope)
        self.stats.by_route[route] += 1
        if write:
            self.stats.writes_by_route[route] += 1
        status = start.get("status", 500)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        body = b"".join(body_parts)
        if fault is not None and fault.kind == "reset":
            # Promise the whole body, send a few bytes, then drop the connection: the client sees it cut mid-body.
            headers.append((b"content-length", str(len(body) + 1).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body[:8], "more_body": True})
            raise ConnectionResetError("injected connection reset")
        if fault is not None:
            body, status = self._apply_body_fault(fault, body, status)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if self.settings.record:
            self._record(scope, bytes(request_body), status, headers, body)

    def _apply_body_fault(self, fault: Fault, body: bytes, status: int) -> tuple[bytes, int]:
        if fault.kind == "malformed_json":
            return b'{"data": [{"gid": "1", "name": "unterminated', status
        if fault.kind == "truncated":
            return body[: max(1, len(body) // 2)], status
        if fault.kind == "invalid_record":
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                return body, status
            self.profile.corrupt_record(document)
            return orjson.dumps(document), status
        return body, status

    async def _respond(self, scope: Scope, receive: Receive, send: Send, response: Response) -> None:
        if not self.settings.record:
            await response(scope, receive, send)
            return
        captured: dict[str, Any] = {}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                captured.update(message)
            await send(message)

        await response(scope, receive, capture)
        self._record(scope, b"", response.status_code, captured.get("headers", []), bytes(response.body))

    def _record(self, scope: Scope, request_body: bytes, status: int, headers: list, body: bytes) -> None:
        self.recorded.append(
            Recorded(
                method=scope["method"],
                path=scope["path"],
                query=scope.get("query_string", b"").decode("latin-1"),
                request_headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])},
                request_body=request_body,
                status=status,
                response_headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
                response_body=body,
            )
        )

    def _take(self, principal: str, limit: RateLimit) -> tuple[float | None, int, float]:
        """Spend one request of the principal's window: (retry-after seconds if over budget, remaining, reset)."""
        now = time.monotonic()
        window = self._windows.setdefault(principal, _Window())
        if now - window.start >= limit.window_s:
            window.start, window.count = now, 0
        window.count += 1
        reset_at = window.start + limit.window_s
        remaining = max(0, limit.limit - window.count)
        if window.count > limit.limit:
            return max(0.001, reset_at - now), 0, reset_at
        return None, remaining, reset_at

    def _route_name(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None) or scope["path"]
        return f"{scope['method']} {path}"

    # -- admin routes ---------------------------------------------------------------------------------------
    def _admin_routes(self) -> list[Route]:
        async def stats(_: Request) -> Response:
            return JSONResponse({"emulator": self.name, **self.stats.as_dict()})

        async def reset(_: Request) -> Response:
            self.reset_stats()
            return JSONResponse({"ok": True})

        async def faults(request: Request) -> Response:
            if request.method == "DELETE":
                self.clear_faults()
                return JSONResponse({"ok": True})
            if request.method == "POST":
                spec = await request.json()
                self.inject(spec.pop("kind"), **spec)
            return JSONResponse([asdict(f) for f in self.faults])

        async def settings(request: Request) -> Response:
            if request.method == "PUT":
                spec = await request.json()
                if "latency_s" in spec:
                    self.settings.latency_s = float(spec["latency_s"])
                if "rate_limit" in spec:
                    self.settings.rate_limit = RateLimit(**spec["rate_limit"]) if spec["rate_limit"] else None
                if "record" in spec:
                    self.settings.record = bool(spec["record"])
            s = self.settings
            return JSONResponse(
                {"latency_s": s.latency_s, "record": s.record,
                 "rate_limit": asdict(s.rate_limit) if s.rate_limit else None}
            )

        return [
            Route("/_sandbox/stats", stats, methods=["GET"]),
            Route("/_sandbox/stats/reset", reset, methods=["POST"]),
            Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sandbox/settings", settings, methods=["GET", "PUT"]),
        ]


def retry_after_seconds(seconds: float) -> str:
    """Retry-After as whole seconds, rounded up, as Jira, Asana and Graph send it."""
    return str(max(1, math.ceil(seconds)))
