"""HTTP concerns every connector shares, written once: retries with Retry-After and backoff, and request counts.

The vendor SDKs each bring their own transport (requests for jira and py-trello, urllib3 for asana, httpx for
msgraph), so the policy lives here and each transport gets a thin adapter over it. A retry happens on 429, on
5xx, on a dropped connection, and on a 2xx GET whose JSON body is cut short or malformed (a proxy truncating a
page must not lose records). Retry-After is honoured in both of its forms, seconds (with decimals, as Graph sends)
and HTTP dates (which the jira SDK's own retry mishandles).
"""
from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger("pmsync.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per request, and the exponential backoff used where no Retry-After is given."""

    max_attempts: int = 8
    # A host that refuses or drops connections is more often down or misconfigured than briefly busy.
    max_connection_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0
    retry_statuses: frozenset[int] = RETRY_STATUSES
    check_json: bool = True


@dataclass
class RequestStats:
    """What a connection cost on the wire: every attempt, and the 429s and 5xx absorbed on the way."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    bad_bodies: int = 0
    waited_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {k: getattr(self, k) for k in
                    ("requests", "retries", "throttled", "server_errors", "connection_errors", "bad_bodies", "waited_s")}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: integer or decimal seconds, or an HTTP date; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, policy: RetryPolicy, retry_after: float | None = None) -> float:
    """How long to wait before attempt `attempt + 1`: the server's Retry-After, else full-jitter exponential."""
    if retry_after is not None:
        return min(policy.max_delay_s, retry_after)
    ceiling = min(policy.max_delay_s, policy.base_delay_s * (2 ** attempt))
    return random.uniform(ceiling / 2, ceiling)


def retry_delay(policy: RetryPolicy, stats: RequestStats, attempt: int, retry_after: float | None, why: str) -> float:
    """The wait before the next attempt, counted in `stats` and logged; the caller sleeps it (or awaits it)."""
    delay = backoff_delay(attempt, policy, retry_after)
    stats.add(retries=1, waited_s=delay)
    log.info("retrying after %.2fs: %s", delay, why)
    return delay


def is_broken_json(body: bytes) -> bool:
    """True when a body that should be JSON does not parse (a truncated or malformed page)."""
    return parsed_json(body) is BROKEN


BROKEN = object()  # what `parsed_json` answers for a body that does not parse


def parsed_json(body: bytes) -> Any:
    """The document of a JSON body, None for an empty one, or BROKEN when it does not parse."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return BROKEN


class ParsedOnce:
    """A response's `json()` that answers the document its body was already parsed into, so that the SDK reading
    it does not parse a large page a second time (and with the slower standard library); a second call parses the
    body again, since the first caller may have changed what it got."""

    def __init__(self, response: requests.Response, document: Any) -> None:
        self.response = response
        self.document: Any = document
        self.taken = False

    def __call__(self, **_: Any) -> Any:
        if self.taken:
            return orjson.loads(self.response.content)
        self.taken = True
        document, self.document = self.document, None
        return document


class RetryingAdapter(HTTPAdapter):
    """A requests transport adapter that counts every attempt and retries per `RetryPolicy`.

    `rewrite` maps a URL prefix to another (py-trello's base URL is fixed; this points it at another host).
    `sleep` is injectable so that tests of the policy need not wait.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        stats: RequestStats,
        rewrite: tuple[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        pacer: Pacer | None = None,
        verify: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(pool_connections=4, pool_maxsize=16, **kwargs)
        self.policy = policy
        self.stats = stats
        self.rewrite = rewrite
        self.sleep = sleep
        self.pacer = pacer
        self.verify = verify

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.verify is not None:
            # requests lets REQUESTS_CA_BUNDLE override a session's own `verify`; the connection's setting wins.
            kwargs["verify"] = self.verify
        if self.rewrite and request.url and request.url.startswith(self.rewrite[0]):
            request.url = self.rewrite[1] + request.url[len(self.rewrite[0]):]
        policy = self.policy
        connection_failures = 0
        for attempt in range(policy.max_attempts):
            last = attempt == policy.max_attempts - 1
            if self.pacer is not None:
                self.pacer.wait()
            self.stats.add(requests=1)
            try:
                response = super().send(request, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self.stats.add(connection_errors=1)
                connection_failures += 1
                # A certificate the CA bundle does not trust will not become trusted by waiting.
                if (last or isinstance(exc, requests.exceptions.SSLError)
                        or connection_failures >= policy.max_connection_attempts):
                    raise
                self._wait(attempt, None, f"{type(exc).__name__} on {request.method} {_path(request.url)}")
                continue
            status = response.status_code
            if status in policy.retry_statuses and not last:
                self.stats.add(throttled=1) if status == 429 else self.stats.add(server_errors=1)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                response.close()
                self._wait(attempt, retry_after, f"{status} on {request.method} {_path(request.url)}")
                continue
            if (policy.check_json and request.method == "GET" and 200 <= status < 300
                    and "json" in response.headers.get("Content-Type", "")):
                document = parsed_json(response.content)
                if document is BROKEN and not last:
                    self.stats.add(bad_bodies=1)
                    self._wait(attempt, None, f"unreadable JSON body on GET {_path(request.url)}")
                    continue
                if document is not BROKEN and document is not None:
                    response.json = ParsedOnce(response, document)  # type: ignore[method-assign]
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        self.sleep(retry_delay(self.policy, self.stats, attempt, retry_after, why))


class Pacer:
    """Spaces requests to at most `per_second` (shared by every thread of a connection), so that a client stays
    under a vendor's budget instead of spending requests on 429s."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until this request's slot; returns how long it waited."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            self.sleep(delay)
        return delay


class BudgetPacer:
    """Client-side pacing to a vendor's window budget: at most `limit` requests in any `window_s` seconds
    (sleeping until one may go)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = max(1, limit)
        self.window_s = window_s
        self.clock = clock
        self.sleep = sleep
        self.sent: deque[float] = deque()
        self._lock = threading.Lock()

    @classmethod
    def for_rate(cls, requests_per_second: float | None, budget: tuple[int, float]) -> BudgetPacer:
        """Evenly spaced requests at a configured rate, else the vendor's (limit, window) budget."""
        if requests_per_second:
            return cls(1, 1.0 / requests_per_second)
        return cls(*budget)

    def reserve(self) -> float:
        """Spend the next slot and return how long to wait before using it (0 when one is free now); for callers
        that wait their own way, such as a coroutine on an event loop."""
        with self._lock:
            now = self.clock()
            while self.sent and now - self.sent[0] >= self.window_s:
                self.sent.popleft()
            delay = 0.0
            if len(self.sent) >= self.limit:
                delay = max(0.0, self.sent[0] + self.window_s - now)
                self.sent.popleft()
            self.sent.append(now + delay)
            return delay

    def wait(self) -> None:
        delay = self.reserve()
        if delay:
            self.sleep(delay)


def policy_for(rate_limit: Any) -> RetryPolicy:
    """The retry policy a connection's `rate_limit` settings ask for (max_retries, max_wait_seconds)."""
    defaults = RetryPolicy()
    retries = getattr(rate_limit, "max_retries", None)
    return RetryPolicy(
        max_attempts=retries + 1 if retries is not None else defaults.max_attempts,
        max_delay_s=getattr(rate_limit, "max_wait_seconds", None) or defaults.max_delay_s,
    )


def pacer_for(requests_per_second: float | None) -> Pacer | None:
    """A pacer for a configured request rate, or None when the rate is not limited."""
    return Pacer(requests_per_second) if requests_per_second else None


def mount_retrying(
    session: requests.Session, policy: RetryPolicy, stats: RequestStats, rewrite: tuple[str, str] | None = None,
    pacer: Pacer | None = None, verify: bool | str | None = None,
) -> RetryingAdapter:
    """Install one retrying adapter for both schemes on a session; returns it. `verify` (a CA bundle path, or
    False) is applied to every request whatever the environment says."""
    adapter = RetryingAdapter(policy, stats, rewrite=rewrite, pacer=pacer, verify=verify)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return adapter


def _path(url: str | None) -> str:
    """A URL without its query string, for logs: queries may carry credentials (Trello's key and token)."""
    return (url or "").split("?", 1)[0]
