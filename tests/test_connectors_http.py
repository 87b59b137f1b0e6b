"""The shared retry policy: Retry-After in both forms, backoff, counting every attempt, broken bodies retried."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.http import (
    Pacer,
    RequestStats,
    RetryingAdapter,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
)
from sandbox.server import serve_app


def test_retry_after_is_read_as_seconds_decimals_or_an_http_date():
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("2.128") == pytest.approx(2.128)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_backoff_grows_exponentially_within_its_cap_unless_the_server_says_when():
    policy = RetryPolicy(base_delay_s=1, max_delay_s=10)
    assert 0.5 <= backoff_delay(0, policy) <= 1
    assert 4 <= backoff_delay(3, policy) <= 8
    assert 5 <= backoff_delay(10, policy) <= 10
    assert backoff_delay(0, policy, retry_after=3) == 3


class Script:
    """A server that answers a scripted list of responses, then 200s."""

    def __init__(self, *responses: Response) -> None:
        self.responses = list(responses)
        self.calls = 0

    async def handle(self, request: Request) -> Response:
        self.calls += 1
        if self.responses:
            return self.responses.pop(0)
        return JSONResponse({"ok": True})


def session_for(stats: RequestStats, waits: list[float], attempts: int = 5) -> requests.Session:
    session = requests.Session()
    adapter = RetryingAdapter(RetryPolicy(max_attempts=attempts), stats, sleep=waits.append)
    session.mount("http://", adapter)
    return session


def test_429_and_5xx_are_retried_honouring_retry_after_and_every_attempt_is_counted():
    date_header = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    script = Script(
        Response("slow", status_code=429, headers={"Retry-After": "3"}),
        Response("slow", status_code=429, headers={"Retry-After": date_header}),
        Response("oops", status_code=503),
    )
    app = Starlette(routes=[Route("/x", script.handle)])
    stats, waits = RequestStats(), []
    with serve_app(app) as url:
        response = session_for(stats, waits).get(f"{url}/x")
    assert response.json() == {"ok": True}
    assert script.calls == 4
    assert (stats.requests, stats.retries, stats.throttled, stats.server_errors) == (4, 3, 2, 1)
    assert waits[0] == 3 and 15 < waits[1] <= 20 and 1 <= waits[2] <= 2  # third attempt: 0.5 s doubled twice, jittered


def test_a_truncated_json_page_is_fetched_again():
    script = Script(Response(b'{"issues": [{"id": "1"', media_type="application/json"))
    app = Starlette(routes=[Route("/x", script.handle)])
    stats, waits = RequestStats(), []
    with serve_app(app) as url:
        response = session_for(stats, waits).get(f"{url}/x")
    assert response.json() == {"ok": True} and stats.bad_bodies == 1


def test_a_json_page_checked_on_arrival_is_handed_to_its_reader_without_parsing_it_again(monkeypatch):
    app = Starlette(routes=[Route("/x", lambda r: JSONResponse({"issues": [{"id": "1"}]}))])
    stats, waits = RequestStats(), []
    with serve_app(app) as url:
        response = session_for(stats, waits).get(f"{url}/x")
    # The adapter parsed the body to check it: the reader gets that document, and requests' own parser is not run.
    monkeypatch.setattr(requests.models, "complexjson", None)
    first = response.json()
    assert first == {"issues": [{"id": "1"}]}
    first["issues"].clear()
    assert response.json() == {"issues": [{"id": "1"}]}  # a second reader gets the body again, not the first's edits


def test_the_last_attempt_returns_a_broken_json_page_for_its_reader_to_reject():
    script = Script(*[Response(b'{"issues": [', media_type="application/json") for _ in range(2)])
    app = Starlette(routes=[Route("/x", script.handle)])
    stats, waits = RequestStats(), []
    with serve_app(app) as url:
        response = session_for(stats, waits, attempts=2).get(f"{url}/x")
    assert stats.bad_bodies == 1 and script.calls == 2
    with pytest.raises(ValueError):
        response.json()


def test_the_last_attempt_returns_the_error_to_the_caller():
    app = Starlette(routes=[Route("/x", Script(*[Response("no", status_code=500) for _ in range(5)]).handle)])
    stats, waits = RequestStats(), []
    with serve_app(app) as url:
        response = session_for(stats, waits, attempts=3).get(f"{url}/x")
    assert response.status_code == 500 and stats.requests == 3 and len(waits) == 2


def test_rewrite_points_a_fixed_base_url_at_another_host():
    app = Starlette(routes=[Route("/1/members/me", lambda r: JSONResponse({"path": r.url.path}))])
    stats = RequestStats()
    with serve_app(app) as url:
        session = requests.Session()
        session.mount("https://", RetryingAdapter(RetryPolicy(), stats, rewrite=("https://api.trello.com/1", f"{url}/1")))
        assert session.get("https://api.trello.com/1/members/me").json() == {"path": "/1/members/me"}


def test_a_pacer_spaces_requests_to_the_configured_rate():
    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    pacer = Pacer(per_second=4, clock=lambda: clock[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert waits == [0.25, 0.25, 0.25, 0.25]
    clock[0] += 10
    assert pacer.wait() == 0


def test_an_untrusted_certificate_is_not_retried():
    import subprocess
    import sys

    stats, waits = RequestStats(), []
    session = requests.Session()
    session.mount("https://", RetryingAdapter(RetryPolicy(max_attempts=5), stats, sleep=waits.append))
    server = subprocess.Popen(
        [sys.executable, "-c", SELF_SIGNED_SERVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        port = int(server.stdout.readline())
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"https://127.0.0.1:{port}/x", timeout=10)
    finally:
        server.kill()
    assert stats.requests == 1 and waits == []


SELF_SIGNED_SERVER = """
import http.server, ssl, tempfile, os, trustme
ca = trustme.CA()
cert = ca.issue_cert("127.0.0.1")
d = tempfile.mkdtemp()
pem = os.path.join(d, "c.pem")
cert.private_key_and_cert_chain_pem.write_to_path(pem)
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(pem)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def test_the_connections_ca_bundle_wins_over_requests_ca_bundle_in_the_environment(monkeypatch, tmp_path):
    from sandbox.server import Sandbox

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    with Sandbox(size="small", rate_limits=False, tls=True) as box:
        stats = RequestStats()
        session = requests.Session()
        session.mount("https://", RetryingAdapter(RetryPolicy(max_attempts=1), stats,
                                                  verify=str(box.tls_files.ca_bundle)))
        response = session.get(f"{box.urls['jira']}/rest/api/3/serverInfo",
                               auth=("coordinator@acme.example", "sandbox-jira-api-token"))
    assert response.status_code == 200
