"""The peers benchmark's own helpers: the proxy's request handling and rewriting, catalog selection, record counts.

The taps themselves never run here (they live in their own venvs, made by `make bench-peers`).
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import threading
from pathlib import Path

import httpx
import orjson
import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers.proxy import (  # noqa: E402
    PeerProxy,
    Request,
    Route,
    complete_jira_search,
    forwarded_headers,
    oauth_token_answer,
    parse_head,
    path_of,
    read_request,
    render_response,
    upstream_url,
)
from bench.peers.run import Measurement, count_records, figures, select_streams  # noqa: E402


def test_parse_head_reads_method_target_and_headers_of_a_connect():
    method, target, headers = parse_head(b"CONNECT api.trello.com:443 HTTP/1.1\r\nHost: api.trello.com:443\r\n\r\n")
    assert (method, target, headers) == ("CONNECT", "api.trello.com:443", [("Host", "api.trello.com:443")])


def test_upstream_url_keeps_path_and_query_and_drops_an_absolute_form_host():
    assert upstream_url("https://127.0.0.1:9000/", "/1/boards/ab?fields=id") == "https://127.0.0.1:9000/1/boards/ab?fields=id"
    assert upstream_url("https://127.0.0.1:9000", "https://api.trello.com/1//x?a=1") == "https://127.0.0.1:9000/1//x?a=1"
    assert path_of("https://api.trello.com/1/members/me?key=k") == "/1/members/me"


def test_forwarded_headers_drop_hop_by_hop_and_encoding_negotiation():
    headers = [("Host", "h"), ("Connection", "keep-alive"), ("Accept-Encoding", "gzip"), ("Authorization", "Basic x"),
               ("Content-Length", "3"), ("User-Agent", "tap")]
    assert forwarded_headers(headers) == [("Authorization", "Basic x"), ("User-Agent", "tap")]


def test_render_response_frames_the_body_with_its_own_length():
    raw = render_response(200, "OK", [("Transfer-Encoding", "chunked"), ("Content-Type", "application/json")], b"{}")
    assert raw == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_complete_jira_search_adds_the_keys_tap_jira_pops_and_keeps_what_is_there():
    page = {"issues": [
        {"id": "1", "fields": {"summary": "a"}},
        {"id": "2", "fields": {"comment": {"comments": [{"id": "9"}]}}, "changelog": {"histories": [{"id": "5"}]},
         "transitions": [{"id": "31"}]},
    ], "isLast": True}
    done = orjson.loads(complete_jira_search("GET", "/rest/api/2/search/jql", orjson.dumps(page)))
    first, second = done["issues"]
    assert first["transitions"] == [] and first["changelog"]["histories"] == []
    assert first["fields"]["comment"]["comments"] == [] and first["fields"]["summary"] == "a"
    assert second["transitions"] == [{"id": "31"}] and second["changelog"]["histories"] == [{"id": "5"}]
    assert second["fields"]["comment"]["comments"] == [{"id": "9"}]


def test_complete_jira_search_leaves_other_paths_and_non_json_untouched():
    body = orjson.dumps({"issues": [{"id": "1"}]})
    assert complete_jira_search("GET", "/rest/api/2/issue/1", body) == body
    assert complete_jira_search("GET", "/rest/api/2/search/jql", b"not json") == b"not json"


def test_oauth_token_answer_hands_out_the_given_access_token():
    status, body = oauth_token_answer("sandbox-pat")("POST", "/-/oauth_token", b"grant_type=refresh_token")
    assert status == 200 and orjson.loads(body)["access_token"] == "sandbox-pat"


def test_read_request_reads_a_content_length_body_then_a_chunked_one_on_the_same_connection():
    async def scenario() -> list[Request | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                         b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         b"2\r\nhi\r\n3\r\n!!!\r\n0\r\n\r\n")
        reader.feed_eof()
        return [await read_request(reader), await read_request(reader), await read_request(reader)]

    first, second, third = asyncio.run(scenario())
    assert (first.target, first.body, first.keep_alive) == ("/a", b"abc", True)
    assert (second.target, second.body, second.keep_alive) == ("/b", b"hi!!!", False)
    assert third is None


def test_select_streams_selects_exactly_the_named_streams():
    catalog = {"streams": [
        {"tap_stream_id": "issues", "metadata": [{"breadcrumb": [], "metadata": {"inclusion": "available"}}]},
        {"tap_stream_id": "users", "metadata": [{"breadcrumb": [], "metadata": {"selected": True}}]},
        {"tap_stream_id": "changelogs"},
    ]}
    chosen = select_streams(catalog, ("issues", "changelogs"))
    top = {e["tap_stream_id"]: next(m for m in e["metadata"] if m["breadcrumb"] == [])["metadata"]
           for e in chosen["streams"]}
    assert top == {"issues": {"inclusion": "available", "selected": True}, "users": {"selected": False},
                   "changelogs": {"selected": True}}


def test_count_records_counts_record_messages_per_stream_only():
    output = b"\n".join([
        b'{"type": "SCHEMA", "stream": "cards", "schema": {}}',
        b'{"type": "RECORD", "stream": "cards", "record": {"id": "1"}}',
        b'{"type": "RECORD", "stream": "cards", "record": {"name": "\\"RECORD\\""}}',
        b'{"type": "RECORD", "stream": "actions", "record": {}}',
        b'{"type": "STATE", "value": {"note": "RECORD"}}',
    ])
    assert count_records(output) == {"cards": 2, "actions": 1}


def test_figures_meet_targets_only_at_a_third_of_the_wall_time_and_no_more_requests():
    ours, theirs = Measurement(10.0, 100, 0), Measurement(30.0, 99, 0, extra_requests=1)
    rows = {r["name"]: r for r in figures("jira", ours, theirs)}
    assert rows["peers jira: wall time pmsync / tap-jira"]["met"] is True
    assert rows["peers jira: requests pmsync / tap-jira"]["met"] is True
    slower = {r["name"]: r for r in figures("jira", Measurement(10.1, 101, 0), theirs)}
    assert slower["peers jira: wall time pmsync / tap-jira"]["met"] is False
    assert slower["peers jira: requests pmsync / tap-jira"]["met"] is False
    failed = {r["name"]: r for r in figures("jira", Measurement(1.0, 1, 0, error="boom"), theirs)}
    assert failed["peers jira: requests pmsync / tap-jira"]["met"] is False


@pytest.fixture
def upstream(tmp_path: Path):
    """A tiny TLS upstream on loopback answering every request with its method, path and body as JSON."""
    ca = trustme.CA()

    async def echo(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"method": request.method, "path": request.url.path, "query": request.url.query,
                             "body": (await request.body()).decode(), "issues": [{"id": "1", "fields": {}}]})

    app = Starlette(routes=[StarletteRoute("/{rest:path}", echo, methods=["GET", "POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    directory = tmp_path
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ssl_certfile=str(directory / "server.pem"),
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.01)
    yield f"https://127.0.0.1:{sock.getsockname()[1]}", directory / "ca.pem", directory
    server.should_exit = True
    thread.join(10)


def test_proxy_relays_connect_tunnels_and_the_tls_front_to_the_upstream_and_answers_tokens_locally(upstream):
    base, upstream_ca, directory = upstream
    routes = {
        "jira": Route(upstream=base, rewrite=complete_jira_search),
        "api.trello.com": Route(upstream=base),
        "app.asana.com": Route(answer=oauth_token_answer("pat")),
    }
    with PeerProxy(routes, default_host="jira", upstream_ca=upstream_ca, directory=directory / "proxy") as proxy:
        verify = ssl.create_default_context(cafile=str(proxy.ca_pem))
        with httpx.Client(proxy=proxy.proxy_url, verify=verify) as client:
            tunnelled = client.get("https://api.trello.com/1//members/me/boards?key=k").json()
            token = client.post("https://app.asana.com/-/oauth_token", data={"grant_type": "refresh_token"}).json()
            with pytest.raises(httpx.ProxyError, match="403"):
                client.get("https://example.com/")
        with httpx.Client(verify=verify) as client:
            front = client.get(f"https://127.0.0.1:{proxy.front_port}/rest/api/2/search/jql?jql=x").json()
    assert (tunnelled["path"], tunnelled["query"]) == ("/1//members/me/boards", "key=k")
    assert token["access_token"] == "pat"
    assert front["issues"][0]["transitions"] == [] and front["path"] == "/rest/api/2/search/jql"
    assert (proxy.forwarded, proxy.answered) == (2, 1)
