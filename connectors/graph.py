"""Microsoft Graph plumbing shared by the Planner and MS Project connectors, on `msgraph-sdk`.

A `GraphSession` owns one `GraphServiceClient`, pointed at the connection's API root (`request_adapter.base_url`),
authenticated with a static bearer token or with client credentials (azure-identity's ClientSecretCredential,
whose authority is the connection's `login_url` when given), and one private event loop on which every coroutine
of that client runs: the SDK is async and its httpx client is bound to the loop it first ran on.

Retries and counts: kiota's own RetryHandler is left out of the middleware chain and the innermost httpx
transport is wrapped in `RetryingTransport`, which applies the shared `RetryPolicy` (Retry-After, backoff, broken
JSON bodies) and counts every attempt on the wire in the connector's `RequestStats`, redirects included (kiota's
RedirectHandler re-sends through the same transport). The token requests of client credentials go through
azure-identity's own pipeline and are not counted (one per hour).

Responses are read as raw JSON bytes through the SDK's request builders (`send_primitive_async(..., "bytes")`),
so that the records stay exactly what Graph sent, `@odata.etag` included.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Coroutine
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware import (
    BodyInspectionHandler,
    HeadersInspectionHandler,
    ParametersNameDecodingHandler,
    RedirectHandler,
    UrlReplaceHandler,
)
from kiota_http.middleware.user_agent_handler import UserAgentHandler
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph_core import GraphClientFactory
from msgraph_core.authentication import AzureIdentityAuthenticationProvider

from connectors.http import Pacer, RequestStats, RetryPolicy, is_broken_json, parse_retry_after, retry_delay
from pmsync.errors import ConnectionFailed

log = logging.getLogger("pmsync.graph")

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
TIMEOUT = httpx.Timeout(60.0, connect=15.0)
ERROR_MAP: dict[str, Any] = {"XXX": ODataError}


class GraphNotFound(ConnectionFailed):
    """Graph answered 404: the plan, group, user or file named does not exist (or is not visible)."""


class GraphPreconditionFailed(ConnectionFailed):
    """Graph answered 412: the If-Match etag is no longer the resource's (someone changed it since it was read)."""


class RequestBuilder(Protocol):
    def to_get_request_information(self, request_configuration: Any = None) -> RequestInformation: ...


class StaticToken:
    """An azure.core TokenCredential handing out a bearer token the user obtained (or the sandbox's)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


class RetryingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that counts every attempt and retries per `RetryPolicy` (the async twin of
    `connectors.http.RetryingAdapter`). A request's slot under the `pacer` is awaited, not slept on."""

    def __init__(self, inner: httpx.AsyncBaseTransport, policy: RetryPolicy, stats: RequestStats,
                 pacer: Pacer | None = None) -> None:
        self.inner = inner
        self.policy = policy
        self.stats = stats
        self.pacer = pacer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        for attempt in range(policy.max_attempts):
            last = attempt == policy.max_attempts - 1
            if self.pacer is not None:
                await asyncio.sleep(self.pacer.wait())
            self.stats.add(requests=1)
            try:
                response = await self.inner.handle_async_request(request)
            except httpx.TransportError as exc:
                self.stats.add(connection_errors=1)
                # A certificate the CA bundle does not trust will not become trusted by waiting.
                if last or is_tls_failure(exc):
                    raise
                await self._wait(attempt, None, f"{type(exc).__name__} on {request.method} {request.url.path}")
                continue
            status = response.status_code
            if status in policy.retry_statuses and not last:
                self.stats.add(throttled=1) if status == 429 else self.stats.add(server_errors=1)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                await response.aclose()
                await self._wait(attempt, retry_after, f"{status} on {request.method} {request.url.path}")
                continue
            if (policy.check_json and not last and request.method == "GET" and 200 <= status < 300
                    and "json" in response.headers.get("Content-Type", "")):
                try:
                    await response.aread()
                except httpx.TransportError:  # the body was cut off on the wire
                    self.stats.add(connection_errors=1)
                    await self._wait(attempt, None, f"dropped body on GET {request.url.path}")
                    continue
                if is_broken_json(response.content):
                    self.stats.add(bad_bodies=1)
                    await self._wait(attempt, None, f"unreadable JSON body on GET {request.url.path}")
                    continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        await asyncio.sleep(retry_delay(self.policy, self.stats, attempt, retry_after, why))

    async def aclose(self) -> None:
        await self.inner.aclose()


def is_tls_failure(exc: BaseException) -> bool:
    """True when a transport error is a failed certificate verification (anywhere in its causes)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def kiota_middleware() -> list[Any]:
    """kiota's default middleware without its RetryHandler (retries and counts live in `RetryingTransport`)."""
    return [RedirectHandler(), ParametersNameDecodingHandler(), UrlReplaceHandler(), UserAgentHandler(),
            HeadersInspectionHandler(), BodyInspectionHandler()]


def policy_for(rate_limit: Any) -> RetryPolicy:
    """The retry policy of a connection: its `rate_limit` overrides on the shared defaults."""
    defaults = RetryPolicy()
    return RetryPolicy(
        max_attempts=(rate_limit.max_retries + 1) if rate_limit.max_retries is not None else defaults.max_attempts,
        max_delay_s=rate_limit.max_wait_seconds or defaults.max_delay_s,
    )


def pacer_of(rate_limit: Any) -> Pacer | None:
    """A pacer for the connection's requests_per_second whose waits the transport awaits (None when unlimited)."""
    per_second = rate_limit.requests_per_second
    return Pacer(per_second, sleep=lambda _: None) if per_second else None


class GraphSession:
    """One Graph client with its own event loop, retrying transport and request counts.

    `tool` names the tool in failure sentences ("Microsoft Planner", "MS Project files").
    """

    def __init__(
        self,
        tool: str,
        api_url: str,
        credential: Any,
        stats: RequestStats,
        *,
        verify: bool | str = True,
        policy: RetryPolicy | None = None,
        pacer: Pacer | None = None,
        who: str = "the configured token",
    ) -> None:
        self.tool = tool
        self.api_url = api_url.rstrip("/")
        self.stats = stats
        self.policy = policy or RetryPolicy()
        self.who = who
        self._loop = asyncio.new_event_loop()
        self._running = threading.Lock()  # write-back calls from several threads; one loop runs one at a time
        inner = httpx.AsyncHTTPTransport(verify=_ssl_context(verify))
        http = httpx.AsyncClient(transport=RetryingTransport(inner, self.policy, stats, pacer), timeout=TIMEOUT)
        http = GraphClientFactory.create_with_custom_middleware(kiota_middleware(), client=http)
        host = urlsplit(self.api_url).hostname or ""
        # Scopes name Graph itself whatever host serves it (the sandbox's tokens ignore them).
        auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host])
        self.adapter = GraphRequestAdapter(auth, client=http)
        self.adapter.base_url = self.api_url
        self.client = GraphServiceClient(request_adapter=self.adapter)
        self._http = http

    @classmethod
    def from_config(cls, tool: str, conn: Any, stats: RequestStats) -> GraphSession:
        """The session of a configured Planner or MS Project connection (no request is made yet)."""
        auth = conn.auth
        if hasattr(auth, "token"):
            credential: Any = StaticToken(auth.token.get_secret_value())
            who = "the configured token"
        else:
            from azure.identity import ClientSecretCredential

            options: dict[str, Any] = {}
            if conn.login_url:
                options["authority"] = conn.login_url
                options["disable_instance_discovery"] = True
            if isinstance(conn.tls_verify, str):
                options["connection_verify"] = conn.tls_verify
            credential = ClientSecretCredential(auth.tenant_id, auth.client_id,
                                                auth.client_secret.get_secret_value(), **options)
            who = f"app {auth.client_id}"
        return cls(tool, conn.api_url, credential, stats, verify=conn.tls_verify,
                   policy=policy_for(conn.rate_limit), pacer=pacer_of(conn.rate_limit), who=who)

    # -- running ----------------------------------------------------------------------------------------------
    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run one coroutine of this client to completion on the session's own loop."""
        with self._running:
            return self._loop.run_until_complete(coroutine)

    def get_json(self, builder: RequestBuilder, doing: str, url: str | None = None) -> Any:
        """GET a resource through an SDK request builder (or the absolute `url`, e.g. an `@odata.nextLink`) and
        return the JSON exactly as Graph sent it; every failure is one ConnectionFailed sentence."""
        body = self.get_bytes(builder, doing, url)
        return orjson.loads(body) if body else None

    def get_bytes(self, builder: RequestBuilder, doing: str, url: str | None = None) -> bytes:
        """GET a resource's raw bytes (redirects followed), failures as one ConnectionFailed sentence."""
        return self.run(self.fetch_bytes(builder, doing, url))

    async def fetch_bytes(self, builder: RequestBuilder, doing: str, url: str | None = None) -> bytes:
        """`get_bytes` as a coroutine, for callers already running on the session's loop (several reads in
        flight at once)."""
        info = builder.to_get_request_information()
        if url is not None:
            info.url = url
        return await self._send(info, doing)

    def send_json(self, method: str, builder: RequestBuilder, doing: str, body: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None) -> Any:
        """Send a write (PATCH, POST, DELETE) with a JSON body to the resource of an SDK request builder and
        return the JSON Graph answered (None on 204). Headers such as If-Match and Prefer are sent as given; a 412
        raises GraphPreconditionFailed, any other failure one ConnectionFailed sentence."""
        info = builder.to_get_request_information()
        info.http_method = Method[method.upper()]
        for name, value in (headers or {}).items():
            info.headers.try_add(name, value)
        if body is not None:
            info.headers.try_add("Content-Type", "application/json")
            info.content = orjson.dumps(body)
        answer = self.run(self._send(info, doing))
        return orjson.loads(answer) if answer else None

    async def _send(self, info: RequestInformation, doing: str) -> bytes:
        try:
            return await self.adapter.send_primitive_async(info, "bytes", ERROR_MAP) or b""
        except APIError as exc:
            raise self.failure(exc.response_status_code, doing) from None
        except ClientAuthenticationError:
            raise ConnectionFailed(
                f"{self.tool}: the Microsoft identity platform refused the client credentials of {self.who}; "
                "check auth.tenant_id, auth.client_id and auth.client_secret (and login_url if set)."
            ) from None
        except httpx.TransportError as exc:
            if is_tls_failure(exc):
                raise ConnectionFailed(
                    f"{self.tool} at {self.api_url} failed TLS verification; set ca_bundle to your CA's PEM file, "
                    "or check base_url."
                ) from None
            raise ConnectionFailed(
                f"{self.tool} at {self.api_url} could not be reached ({type(exc).__name__}); check base_url and "
                "the network."
            ) from None
        except orjson.JSONDecodeError:
            raise ConnectionFailed(
                f"{self.tool} at {self.api_url} kept answering {doing} with unreadable JSON; try again later."
            ) from None

    def failure(self, status: int | None, doing: str) -> ConnectionFailed:
        """One sentence for an HTTP error status, naming the tool and URL, never a secret."""
        if status == 401:
            return ConnectionFailed(
                f"{self.tool} at {self.api_url} refused {self.who} during {doing}; check the connection's auth "
                "(a valid token, or the app's client credentials)."
            )
        if status == 403:
            return ConnectionFailed(
                f"{self.tool} at {self.api_url} denied {self.who} access during {doing}; grant the app "
                "Tasks.Read.All, Files.Read.All and User.Read.All (or share the plans and files with it)."
            )
        if status == 412:
            return GraphPreconditionFailed(f"{self.tool} at {self.api_url} refused a stale If-Match etag during "
                                           f"{doing}; the item changed meanwhile.")
        if status == 404:
            return GraphNotFound(f"{self.tool} at {self.api_url} found nothing for {doing}; check the "
                                 "connection's plans, groups or files.")
        return ConnectionFailed(f"{self.tool} at {self.api_url} answered HTTP {status} to {doing} after "
                                f"{self.policy.max_attempts} attempts; try again later.")

    def close(self) -> None:
        """Close the HTTP client and the event loop (idempotent)."""
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(self._http.aclose())
        finally:
            self._loop.close()


def _ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify
