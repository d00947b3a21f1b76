"""Access log, health answers and Prometheus metrics (triosvc.web.observability).

Lines are logged, and requests counted, once the answer is sent: the server's task may do
it after the client has read the answer, so tests wait for every task to block before
looking (``wait_all_tasks_blocked``), never on a sleep.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from triosvc.exceptions import ConfigurationError
from triosvc.runners import ServiceRunner
from triosvc.web import asgi_app, mount
from triosvc.web.handlers import http
from triosvc.web.server import WebServer
from triosvc.web.websocket import WebSocketHubProvider, open_websocket_client, rpc

from ..conftest import SOCKET_TEST_TIMEOUT, on_both_engines
from .test_shutdown import RawConnection, get

if TYPE_CHECKING:
    from triosvc.web.asgi import Receive, Scope, Send

ACCESS = "triosvc.access"
HEALTH = {"WEB_SERVER_HEALTH_PATH": "/health"}
METRICS = {"WEB_SERVER_METRICS": True}


class Gate:
    """A request held inside its handler until the test releases it."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()


def make_service(gate: Gate | None = None) -> type:
    held = gate or Gate()

    class Users:
        name = "users"
        hub = WebSocketHubProvider()

        @http("GET", "/users/<int:user_id>")
        async def get_user(self, request, user_id):
            return {"id": user_id}

        @http("POST", "/users")
        async def create_user(self, request):
            return {"id": 1}, 201

        @http("GET", "/items/")
        async def items(self, request):
            return []

        @http("GET", "/health")
        async def own_health(self, request):
            return "the service's own route"

        @http("GET", "/slow", timeout=60)
        async def slow(self, request):
            held.entered.set()
            await held.release.wait()
            return "finished"

        @rpc
        async def echo(self, socket_id, value):
            return value

    return Users


async def settle() -> None:
    """Let the server's tasks finish what follows an answer (its log line, its count)."""
    await trio.testing.wait_all_tasks_blocked()


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == ACCESS]


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=ACCESS)
    return caplog


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str):
    return found.get((name, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient, path: str = "/metrics"):
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def served_app_client(runner: ServiceRunner) -> httpx.AsyncClient:
    """httpx straight into what the engine serves (no socket): for the drain's answers."""
    server = runner.shared_extension(WebServer)
    assert isinstance(server, WebServer)
    transport = httpx.ASGITransport(app=server.served_app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


# -- access log ---------------------------------------------------------------------------------


async def test_one_access_line_per_request_with_its_fields(
    local_config, runner_factory, http_client, access_log
):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, make_service())
        async with http_client(runner) as client:
            assert (await client.get("/users/42?verbose=1")).status_code == 200
            assert (await client.post("/users", json={})).status_code == 201
            assert (await client.get("/nowhere")).status_code == 404
        await settle()

    found, created, missing = access_records(access_log)
    assert found.levelno == logging.INFO
    assert re.fullmatch(
        r"GET /users/42\?verbose=1 200 \d+\.\dms call_id=users\.get_user\.[0-9a-f-]{36}",
        found.getMessage(),
    )
    assert (found.protocol, found.method, found.path, found.query, found.status) == (
        "http",
        "GET",
        "/users/42",
        "verbose=1",
        200,
    )
    assert found.duration_ms > 0
    assert found.call_id.startswith("users.get_user.")
    assert found.getMessage().endswith(found.call_id)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", found.client)
    assert created.status == 201
    assert created.call_id.startswith("users.create_user.")
    # no handler ran: no call id
    assert re.fullmatch(r"GET /nowhere 404 \d+\.\dms", missing.getMessage())
    assert missing.call_id is None


async def test_a_websocket_connection_is_one_line_when_it_ends(
    local_config, runner_factory, access_log
):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, make_service())
        async with open_websocket_client(runner.url) as ws:
            assert await ws.rpc("echo", value=1) == 1
            await settle()
            assert access_records(access_log) == []  # not before it ends
        await settle()

    [line] = access_records(access_log)
    # the close code as the engine tells it: hypercorn says 1006 for the client's 1000
    assert re.fullmatch(r"WebSocket /ws 101 \d+\.\dms close=10\d\d", line.getMessage())
    assert (line.protocol, line.path, line.status) == ("websocket", "/ws", 101)
    assert line.close_code in (1000, 1006)


async def test_switched_off_no_line_is_logged(
    local_config, runner_factory, http_client, access_log
):
    config = {**local_config, "WEB_SERVER_ACCESS_LOG": False}
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(config, make_service())
        async with http_client(runner) as client:
            assert (await client.get("/users/1")).status_code == 200
        async with open_websocket_client(runner.url) as ws:
            assert await ws.rpc("echo", value=1) == 1
        await settle()
    assert access_records(access_log) == []
    # with everything off, the engine serves the services' app itself: nothing in between
    server = runner.shared_extension(WebServer)
    assert isinstance(server, WebServer)
    assert server.observability is None
    assert server.served_app is server.app


async def test_no_line_while_the_logger_is_not_enabled_for_info(
    local_config, runner_factory, http_client, caplog
):
    caplog.set_level(logging.WARNING, logger=ACCESS)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, make_service())
        async with http_client(runner) as client:
            assert (await client.get("/users/1")).status_code == 200
        await settle()
    assert access_records(caplog) == []


# -- health -------------------------------------------------------------------------------------


async def test_liveness_and_readiness_over_the_wire(local_config, runner_factory, http_client):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory({**local_config, **HEALTH}, make_service())
        async with http_client(runner) as client:
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
            head = await client.head("/health/ready")
            post = await client.post("/health/ready")
            own = await client.get("/health")  # the service's own route is untouched

    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert ready.headers["content-type"] == "application/json"
    assert ready.headers["cache-control"] == "no-store"
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == ready.headers["content-length"]
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    assert post.json()["error"] == "MethodNotAllowed"
    assert (own.status_code, own.text) == (200, "the service's own route")


async def test_no_health_answers_unless_asked_for(local_config, runner_factory, http_client):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, make_service())
        async with http_client(runner) as client:
            assert (await client.get("/health/ready")).status_code == 404


async def test_readiness_is_503_until_the_server_serves():
    runner = ServiceRunner({"WEB_SERVER_ADDRESS": "127.0.0.1:0", **HEALTH})
    runner.add_service(make_service())
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with served_app_client(runner) as client:
            ready = await client.get("/health/ready")
            live = await client.get("/health/live")
    assert (ready.status_code, ready.json()) == (503, {"status": "starting"})
    assert live.status_code == 200


async def test_readiness_is_503_while_draining_and_liveness_stays_200(
    local_config, runner_factory, http_client
):
    gate = Gate()
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory({**local_config, **HEALTH}, make_service(gate))
        async with (
            http_client(runner) as wire,
            served_app_client(runner) as client,
            trio.open_nursery() as nursery,
        ):
            in_flight: list[httpx.Response] = []

            async def call() -> None:
                in_flight.append(await wire.get("/slow"))

            nursery.start_soon(call)
            await gate.entered.wait()
            nursery.start_soon(runner.stop)
            await settle()
            ready = await client.get("/health/ready")
            live = await client.get("/health/live")
            other = await client.get("/users/1")
            gate.release.set()
        assert runner.stopped

    assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
    assert ready.headers["connection"] == "close"
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert live.headers["connection"] == "close"
    assert other.json()["error"] == "ServiceUnavailable"  # the drain's own answer, as ever
    assert [r.status_code for r in in_flight] == [200]


@on_both_engines(
    "hypercorn closes idle keep-alive connections as soon as the drain begins, "
    "where SPEC §8 asks to answer requests on them with 503 and Connection: close"
)
async def test_readiness_on_an_open_connection_during_the_drain(
    local_config, runner_factory, engine
):
    gate = Gate()
    config = {**local_config, **HEALTH, "WEB_SERVER_ENGINE": engine}
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(config, make_service(gate))
        in_flight = await RawConnection.open(runner.url)
        probe = await RawConnection.open(runner.url)
        async with in_flight.stream, probe.stream, trio.open_nursery() as nursery:
            await probe.send(get("/health/ready"))
            before = await probe.response()
            await in_flight.send(get("/slow"))
            await gate.entered.wait()
            nursery.start_soon(runner.stop)
            await settle()
            try:
                await probe.send(get("/health/ready"))
                during = await probe.response()
            finally:
                gate.release.set()
    assert before is not None
    assert before.status == 200
    assert during is not None, "the server closed the connection unanswered"
    assert (during.status, during.body) == (503, b'{"status": "draining"}')


# -- metrics ------------------------------------------------------------------------------------


async def test_metrics_are_off_by_default(local_config, runner_factory, http_client):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, make_service())
        async with http_client(runner) as client:
            assert (await client.get("/metrics")).status_code == 404


async def test_requests_are_counted_by_route_rule_and_status(
    local_config, runner_factory, http_client
):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory({**local_config, **METRICS}, make_service())
        async with http_client(runner) as client:
            for user_id in (1, 2, 3):
                assert (await client.get(f"/users/{user_id}")).status_code == 200
            assert (await client.get("/nowhere")).status_code == 404
            assert (await client.get("/elsewhere/deep")).status_code == 404
            assert (await client.delete("/users/1")).status_code == 405
            assert (await client.get("/items")).status_code == 308
            await settle()
            found = await scrape(client)

    def requests(route: str, status: str, method: str = "GET") -> float | None:
        return sample(
            found, "triosvc_http_requests_total", method=method, route=route, status=status
        )

    assert requests("/users/<int:user_id>", "200") == 3
    assert requests("<unmatched>", "404") == 2  # one label for every path no rule matches
    assert requests("/users/<int:user_id>", "405", method="DELETE") == 1
    assert requests("/items/", "308") == 1
    buckets = {
        labels: value
        for (name, labels), value in found.items()
        if name == "triosvc_http_request_duration_seconds_bucket"
        and ("route", "/users/<int:user_id>") in labels
    }
    assert len(buckets) > 5
    assert (
        buckets[frozenset({("method", "GET"), ("route", "/users/<int:user_id>"), ("le", "+Inf")})]
        == 3
    )
    assert (
        sample(
            found,
            "triosvc_http_request_duration_seconds_count",
            method="GET",
            route="/users/<int:user_id>",
        )
        == 3
    )
    assert sample(found, "triosvc_workers_max", service="users") == 10
    # the first scrape is counted once it is answered: the second one sees it
    async with http_client(runner) as client:
        await settle()
        again = await scrape(client)
    assert (
        sample(again, "triosvc_http_requests_total", method="GET", route="/metrics", status="200")
        == 1
    )


async def test_workers_busy_while_a_request_is_held(local_config, runner_factory, http_client):
    gate = Gate()
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory({**local_config, **METRICS}, make_service(gate))
        async with http_client(runner) as client, trio.open_nursery() as nursery:
            nursery.start_soon(client.get, "/slow")
            await gate.entered.wait()
            during = await scrape(client)
            gate.release.set()
        await settle()
        async with http_client(runner) as client:
            after = await scrape(client)

    assert sample(during, "triosvc_workers_busy", service="users") == 1
    assert sample(during, "triosvc_http_requests_in_flight") == 1
    assert sample(after, "triosvc_workers_busy", service="users") == 0
    assert sample(after, "triosvc_http_requests_in_flight") == 0


async def test_websocket_connections_and_hub_messages(local_config, runner_factory, http_client):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory({**local_config, **METRICS}, make_service())
        async with http_client(runner) as client:
            async with open_websocket_client(runner.url) as ws:
                assert await ws.rpc("echo", value=1) == 1
                assert await ws.rpc("echo", value=2) == 2
                connected = await scrape(client)
            await settle()
            closed = await scrape(client)

    assert sample(connected, "triosvc_websocket_connections") == 1
    assert sample(connected, "triosvc_hub_messages_sent_total") == 2  # the two replies
    assert sample(connected, "triosvc_hub_slow_consumers_total") == 0
    assert sample(closed, "triosvc_websocket_connections") == 0


async def test_each_runner_counts_its_own_requests(runner_factory, http_client):
    config = {"WEB_SERVER_ADDRESS": "127.0.0.1:0", "WEB_SERVER_METRICS": "/internal/metrics"}
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        first = await runner_factory(config, make_service())
        second = await runner_factory(config, make_service())
        async with http_client(first) as client:
            assert (await client.get("/users/1")).status_code == 200
            assert (await client.get("/users/2")).status_code == 200
        async with http_client(second) as client:
            assert (await client.get("/users/1")).status_code == 200
        await settle()
        async with http_client(first) as client:
            assert (await client.get("/metrics")).status_code == 404  # the path given instead
            one = await scrape(client, "/internal/metrics")
        async with http_client(second) as client:
            two = await scrape(client, "/internal/metrics")

    labels = {"method": "GET", "route": "/users/<int:user_id>", "status": "200"}
    assert sample(one, "triosvc_http_requests_total", **labels) == 2
    assert sample(two, "triosvc_http_requests_total", **labels) == 1


async def test_the_services_as_an_asgi_app_answer_health_and_metrics():
    app = asgi_app({**HEALTH, **METRICS}, make_service())
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with (
            app.running(),
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        ):
            ready = await client.get("/health/ready")
            assert (await client.get("/users/7")).json() == {"id": 7}
            found = await scrape(client)
    assert ready.json() == {"status": "ready"}
    labels = {"method": "GET", "route": "/users/<int:user_id>", "status": "200"}
    assert sample(found, "triosvc_http_requests_total", **labels) == 1


async def admin_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A mounted ASGI app: its lifespan, and "admin" for any request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"admin"})


async def test_a_mounted_apps_requests_share_one_route_label(
    local_config, runner_factory, http_client
):
    class Mounting:
        name = "mounting"
        admin = mount("/admin", admin_app)

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory({**local_config, **METRICS}, Mounting)
        async with http_client(runner) as client:
            assert (await client.get("/admin/users/1")).text == "admin"
            assert (await client.get("/admin/users/2")).text == "admin"
            await settle()
            found = await scrape(client)
    labels = {"method": "GET", "route": "/admin/*", "status": "200"}
    assert sample(found, "triosvc_http_requests_total", **labels) == 2


def test_triosvc_routes_lists_the_paths_answered_by_triosvc():
    runner = ServiceRunner({**HEALTH, "WEB_SERVER_METRICS": "/stats"})
    runner.add_service(route_at("/hello"))
    server = runner.shared_extension(WebServer)
    assert isinstance(server, WebServer)
    assert server.routes() == [
        ("GET", "/hello", "clashing.handler"),
        ("GET,HEAD", "/health/live", "triosvc (WEB_SERVER_HEALTH_PATH)"),
        ("GET,HEAD", "/health/ready", "triosvc (WEB_SERVER_HEALTH_PATH)"),
        ("GET,HEAD", "/stats", "triosvc (WEB_SERVER_METRICS)"),
    ]


# -- definition and config errors ---------------------------------------------------------------


def route_at(url: str) -> type:
    class Clashing:
        name = "clashing"

        @http("GET", url)
        async def handler(self, request, **arguments):
            return "the route"

    return Clashing


@pytest.mark.parametrize(
    ("config", "url", "key"),
    [
        (HEALTH, "/health/ready", "WEB_SERVER_HEALTH_PATH"),
        (HEALTH, "/health/live", "WEB_SERVER_HEALTH_PATH"),
        (METRICS, "/metrics", "WEB_SERVER_METRICS"),
        ({"WEB_SERVER_METRICS": "/stats"}, "/stats", "WEB_SERVER_METRICS"),
    ],
)
def test_a_route_at_a_path_answered_by_triosvc_is_a_definition_error(config, url, key):
    runner = ServiceRunner(config)
    with pytest.raises(
        ConfigurationError, match=rf"Clashing\.handler: {url} is answered by .*{key}"
    ):
        runner.add_service(route_at(url))


async def test_a_rule_with_variables_is_not_refused_and_the_answer_wins(
    local_config, runner_factory, http_client
):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory({**local_config, **HEALTH}, route_at("/health/<check>"))
        async with http_client(runner) as client:
            ready = await client.get("/health/ready")
            other = await client.get("/health/other")
    assert ready.json() == {"status": "ready"}
    assert other.text == "the route"


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never served")


@pytest.mark.parametrize("prefix", ["/health", "/health/ready"])
def test_a_mount_over_a_health_path_is_a_definition_error(prefix):
    class Mounting:
        name = "mounting"
        admin = mount(prefix, _nothing)

    runner = ServiceRunner(HEALTH)
    with pytest.raises(
        ConfigurationError, match=r"Mounting\.admin: /health/\w+ lies under the mount"
    ):
        runner.add_service(Mounting)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (
            {"WEB_SERVER_ACCESS_LOG": "yes"},
            r"^WEB_SERVER_ACCESS_LOG='yes': expected true or false$",
        ),
        ({"WEB_SERVER_ACCESS_LOG": None}, r"^WEB_SERVER_ACCESS_LOG=None: expected true or false$"),
        (
            {"WEB_SERVER_HEALTH_PATH": "health"},
            r"^WEB_SERVER_HEALTH_PATH='health': expected a URL path",
        ),
        (
            {"WEB_SERVER_HEALTH_PATH": "/<x>"},
            r"^WEB_SERVER_HEALTH_PATH='/<x>': expected a URL path",
        ),
        ({"WEB_SERVER_HEALTH_PATH": True}, r"^WEB_SERVER_HEALTH_PATH=True: expected a URL path"),
        ({"WEB_SERVER_METRICS": 1}, r"^WEB_SERVER_METRICS=1: expected true, false or a URL path"),
        ({"WEB_SERVER_METRICS": "metrics"}, r"^WEB_SERVER_METRICS='metrics': expected true, false"),
        ({"WEB_SERVER_METRICS": None}, r"^WEB_SERVER_METRICS=None: expected true, false"),
        (
            {**HEALTH, "WEB_SERVER_METRICS": "/health/live"},
            r"^WEB_SERVER_METRICS='/health/live': /health/live is where WEB_SERVER_HEALTH_PATH",
        ),
        (
            {"WEB_SERVER_METRIC": True},
            r"^WEB_SERVER_METRIC: unknown triosvc key; did you mean WEB_SERVER_METRICS\?$",
        ),
    ],
)
def test_bad_values_are_config_errors(config, match):
    with pytest.raises(ConfigurationError, match=match):
        ServiceRunner(config)


def test_metrics_without_prometheus_client_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(
        ConfigurationError,
        match=r"^WEB_SERVER_METRICS=True: metrics need the prometheus_client package: "
        r"pip install 'triosvc\[metrics\]'$",
    ):
        ServiceRunner(METRICS)
    ServiceRunner({"WEB_SERVER_METRICS": False})  # off: not needed


@pytest.mark.parametrize(
    ("value", "paths"),
    [
        ("/health", ("/health/live", "/health/ready")),
        ("/ops/", ("/ops/live", "/ops/ready")),
        ("/", ("/live", "/ready")),
    ],
)
def test_health_paths(value, paths):
    runner = ServiceRunner({"WEB_SERVER_HEALTH_PATH": value})
    assert runner.config.settings.health_paths == paths
    assert runner.config["WEB_SERVER_HEALTH_PATH"] == value  # the mapping keeps what was given
