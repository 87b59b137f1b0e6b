"""A small HTTPS front for the Singer taps: the vendors' fixed hostnames answered by the local emulators.

The taps cannot all be given a base URL (tap-trello and tap-asana's token refresh use fixed https hosts), so the
proxy listens on 127.0.0.1 twice: as an HTTP proxy that accepts `CONNECT host:443` (what `HTTPS_PROXY` makes
`requests` send) and as a plain TLS front (for tap-jira, whose `base_url` takes host:port). Either way it ends
TLS itself with a certificate for every routed hostname signed by its own throwaway CA, reads the HTTP/1.1
requests inside, and forwards each one to the emulator its hostname is routed to (over the emulator's own TLS,
keeping connections alive). A route is either an upstream base URL or a local answer (the OAuth token endpoints,
which the emulators do not serve). One hook may complete a response body a tap insists on (see `complete_jira_search`).
"""
from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import trustme

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "transfer-encoding",
    "upgrade", "host", "content-length", "content-encoding", "accept-encoding",
})
JIRA_SEARCH = re.compile(r"^/rest/api/\d+/search(/jql)?$")

LocalAnswer = Callable[[str, str, bytes], tuple[int, bytes]]
Rewrite = Callable[[str, str, bytes], bytes]


@dataclass
class Route:
    """Where one hostname's requests go: an upstream base URL, or a local answer, and an optional body rewrite."""

    upstream: str = ""
    answer: LocalAnswer | None = None
    rewrite: Rewrite | None = None


@dataclass
class Request:
    """One HTTP/1.1 request as read off the client's connection."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def keep_alive(self) -> bool:
        return (self.header("connection") or "").lower() != "close"


def parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """Method, target and headers of a request head (the bytes up to and including the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return method.upper(), target, headers


def path_of(target: str) -> str:
    """The path of a request target, without its query (an absolute-form target loses its scheme and host)."""
    target = re.sub(r"^https?://[^/]+", "", target)
    return target.split("?", 1)[0] or "/"


def upstream_url(base: str, target: str) -> str:
    """The emulator URL for a request target: `base` + the target's path and query (absolute-form reduced)."""
    return base.rstrip("/") + re.sub(r"^https?://[^/]+", "", target)


def forwarded_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request headers worth passing on: hop-by-hop ones and the encoding negotiation dropped."""
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


def render_response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 response with an exact Content-Length (upstream framing and encodings dropped)."""
    lines = [f"HTTP/1.1 {status} {reason or 'OK'}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in HOP_BY_HOP]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def complete_jira_search(method: str, path: str, body: bytes) -> bytes:
    """Give every issue of a Jira search page the `transitions`, `changelog` and `fields.comment` keys tap-jira
    pops unconditionally: empty where the emulator did not expand them. Other responses pass unchanged."""
    if not JIRA_SEARCH.match(path) or not body:
        return body
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(page, dict) or not isinstance(page.get("issues"), list):
        return body
    for issue in page["issues"]:
        issue.setdefault("transitions", [])
        issue.setdefault("changelog", {"startAt": 0, "maxResults": 0, "total": 0, "histories": []})
        fields = issue.setdefault("fields", {})
        if not isinstance(fields.get("comment"), dict):
            fields["comment"] = {"comments": [], "startAt": 0, "maxResults": 0, "total": 0}
    return orjson.dumps(page)


def oauth_token_answer(access_token: str) -> LocalAnswer:
    """A token endpoint that hands out `access_token` (the sandbox's literal credential) to any refresh."""

    def answer(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        return 200, orjson.dumps({"access_token": access_token, "token_type": "bearer", "expires_in": 3600,
                                  "refresh_token": "sandbox-refresh-token"})

    return answer


@dataclass
class PeerProxy:
    """The proxy, served on its own thread while the context is open.

    `routes` maps a hostname (as the tap names it in CONNECT, or `default_host` for the TLS front) to its Route.
    After start: `proxy_url` (for HTTPS_PROXY), `front_port` (the TLS front), `ca_pem` (the CA to trust),
    `forwarded` and `answered` (requests relayed upstream and answered locally).
    """

    routes: dict[str, Route]
    default_host: str
    upstream_ca: Path | None = None
    directory: Path = Path(".")
    proxy_url: str = ""
    front_port: int = 0
    ca_pem: Path | None = None
    forwarded: int = 0
    answered: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stopped: asyncio.Event | None = None
    _server_tls: ssl.SSLContext | None = None
    _client: httpx.AsyncClient | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> PeerProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Issue the certificate, listen on two free loopback ports and serve until `stop()`."""
        ca = trustme.CA(organization_name="pmsync bench peers proxy CA")
        hostnames = sorted({*self.routes, "127.0.0.1", "localhost"})
        cert = ca.issue_cert(*hostnames)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_pem = self.directory / "proxy-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_pem))
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._server_tls)
        self._thread = threading.Thread(target=self._run, name="pmsync-bench-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the peers' proxy did not start within 10 seconds")

    def stop(self) -> None:
        """Stop serving and close upstream connections."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        verify: Any = ssl.create_default_context(cafile=str(self.upstream_ca)) if self.upstream_ca else True
        self._client = httpx.AsyncClient(verify=verify, timeout=300, limits=httpx.Limits(max_keepalive_connections=32))
        plain = await asyncio.start_server(self._on_proxy_client, "127.0.0.1", 0)
        front = await asyncio.start_server(self._on_front_client, "127.0.0.1", 0, ssl=self._server_tls)
        self.proxy_url = f"http://127.0.0.1:{plain.sockets[0].getsockname()[1]}"
        self.front_port = front.sockets[0].getsockname()[1]
        self._ready.set()
        async with plain, front:
            await self._stopped.wait()
        await self._client.aclose()

    async def _on_front_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._relay_requests(self.default_host, reader, writer)

    async def _on_proxy_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, target, _headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            writer.close()
            return
        host = target.rsplit(":", 1)[0]
        if method != "CONNECT" or host not in self.routes:
            writer.write(render_response(403, "Forbidden", [], b"not a routed CONNECT target\n"))
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await writer.start_tls(self._server_tls)
        await self._relay_requests(host, reader, writer)

    async def _relay_requests(self, host: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        route = self.routes[host]
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                writer.write(await self._answer(route, request))
                await writer.drain()
                if not request.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _answer(self, route: Route, request: Request) -> bytes:
        path = path_of(request.target)
        if route.answer is not None:
            self.answered += 1
            status, body = route.answer(request.method, path, request.body)
            return render_response(status, "OK", [("Content-Type", "application/json")], body)
        assert self._client is not None
        self.forwarded += 1
        response = await self._client.request(
            request.method, upstream_url(route.upstream, request.target),
            headers=forwarded_headers(request.headers), content=request.body or None,
        )
        body = response.content
        if route.rewrite is not None and response.status_code == 200:
            body = route.rewrite(request.method, path, body)
        return render_response(response.status_code, response.reason_phrase, list(response.headers.items()), body)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a keep-alive connection, or None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    method, target, headers = parse_head(head)
    request = Request(method, target, headers)
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        request.body = await read_chunked(reader)
    elif length := int(request.header("content-length") or 0):
        request.body = await reader.readexactly(length)
    return request


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked request body, de-chunked."""
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
