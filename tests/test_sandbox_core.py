"""The layer every emulator shares: authentication, rate limits, faults, counters, recording and admin routes."""
from __future__ import annotations

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sandbox.core import Emulator, EmulatorSettings, JSONBody, RateLimit, VendorProfile, retry_after_seconds


class Profile(VendorProfile):
    name = "toy"

    def principal(self, request: Request) -> str | None:
        return "alice" if request.headers.get("authorization") == "Bearer ok" else None

    def unauthorized(self, request: Request) -> Response:
        return PlainTextResponse("who are you", status_code=401)

    def too_many_requests(self, retry_after_s: float) -> Response:
        return JSONBody({"error": "slow down"}, status_code=429, headers={"Retry-After": retry_after_seconds(retry_after_s)})

    def error(self, status: int, message: str) -> Response:
        return JSONBody({"error": message}, status_code=status)


async def items(request: Request) -> Response:
    return JSONBody({"data": [{"id": "1", "due_on": "2026-11-30"}, {"id": "2", "due_on": "2026-12-01"}]})


async def create(request: Request) -> Response:
    return JSONBody({"data": await request.json()}, status_code=201)


def client(emulator: Emulator, auth: str = "Bearer ok") -> TestClient:
    return TestClient(emulator, base_url="http://toy", headers={"authorization": auth})


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(Profile(), [Route("/items", items), Route("/items", create, methods=["POST"])], EmulatorSettings())


def test_missing_credentials_get_the_vendors_401_and_are_counted(emulator):
    r = client(emulator, auth="Bearer wrong").get("/items")
    assert r.status_code == 401 and r.text == "who are you"
    assert emulator.stats.unauthorized == 1


def test_requests_past_the_budget_get_429_with_retry_after_until_the_window_ends(emulator):
    emulator.settings.rate_limit = RateLimit(limit=3, window_s=60)
    codes = [client(emulator).get("/items").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = client(emulator).get("/items")
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert emulator.stats.rate_limited == 3


def test_reads_and_writes_are_counted_per_route(emulator):
    c = client(emulator)
    c.get("/items")
    c.post("/items", json={"name": "x"})
    assert (emulator.stats.reads, emulator.stats.writes) == (1, 1)
    assert emulator.stats.writes_by_route == {"POST /items": 1}


@pytest.mark.parametrize(
    "kind, check",
    [
        ("status", lambda r: r.status_code == 503 and r.json() == {"error": "Injected fault"}),
        ("malformed_json", lambda r: r.status_code == 200 and _not_json(r.content)),
        ("truncated", lambda r: r.status_code == 200 and _not_json(r.content)),
        ("invalid_record", lambda r: r.json()["data"][0]["due_on"] == "next tuesday-ish"),
    ],
)
def test_each_injected_fault_appears_as_configured_then_stops(emulator, kind, check):
    fault = emulator.inject(kind, status=503, path="^/items$", times=1)
    c = client(emulator)
    assert check(c.get("/items"))
    assert c.get("/items").json()["data"][0]["due_on"] == "2026-11-30"
    assert fault.fired == 1 and emulator.stats.faults == 1


def test_a_fault_every_third_request_hits_only_those(emulator):
    emulator.inject("status", status=500, every=3, times=-1)
    codes = [client(emulator).get("/items").status_code for _ in range(6)]
    assert codes == [200, 200, 500, 200, 200, 500]


def test_recorded_exchanges_hold_request_and_response_bodies(emulator):
    emulator.settings.record = True
    client(emulator).post("/items?x=1", json={"name": "x"})
    (exchange,) = emulator.recorded
    assert exchange.method == "POST" and exchange.query == "x=1" and exchange.status == 201
    assert orjson.loads(exchange.request_body) == {"name": "x"}
    assert orjson.loads(exchange.response_body) == {"data": {"name": "x"}}


def test_admin_routes_steer_an_emulator_in_another_process_without_credentials(emulator):
    c = client(emulator, auth="")
    assert c.put("/_sandbox/settings", json={"latency_s": 0.001, "rate_limit": {"limit": 1, "window_s": 10}}).status_code == 200
    assert emulator.settings.rate_limit.limit == 1 and emulator.settings.latency_s == 0.001
    c.post("/_sandbox/faults", json={"kind": "status", "status": 502})
    assert client(emulator).get("/items").status_code == 502
    assert c.get("/_sandbox/stats").json()["faults"] == 1
    c.delete("/_sandbox/faults")
    assert emulator.faults == []


def _not_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return False


def test_a_reset_fault_cuts_the_connection_mid_body():
    import httpx

    from sandbox.server import serve_app

    emulator = Emulator(Profile(), [Route("/items", items)], EmulatorSettings())
    emulator.inject("reset", path="^/items$")
    with serve_app(emulator) as url:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/items", headers={"authorization": "Bearer ok"})
        assert httpx.get(f"{url}/items", headers={"authorization": "Bearer ok"}).status_code == 200
