"""Other ASGI apps mounted beside the services, and the services as an ASGI app (SPEC §4.6).

Tests that start services through ``local_config``/``runner_factory`` run on both engines
(the root conftest); those serving the standalone app through hypercorn run once.
"""

from __future__ import annotations

import signal
import sys
import textwrap
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.utils import LifespanFailureError
from quart import request as quart_request
from quart import websocket as quart_websocket
from quart_trio import QuartTrio
from starlette.applications import Starlette
from starlette.routing import Mount as StarletteMount
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from triosvc.core.groups import sole_exception
from triosvc.exceptions import ConfigurationError, NotFound
from triosvc.extensions import DependencyProvider
from triosvc.runners import ServiceRunner
from triosvc.web import MountStartupError, asgi_app, mount
from triosvc.web.handlers import http
from triosvc.web.server import WebServer
from triosvc.web.websocket import WebSocketHubProvider, open_websocket_client, rpc

from ..conftest import SOCKET_TEST_TIMEOUT
from ..test_cli import child_process, posix_only

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


# -- apps to mount ------------------------------------------------------------------------------


class RawApp:
    """A bare ASGI app: records what it sees, answers by the path under its root."""

    def __init__(self, *, lifespan: bool = True, fail_startup: str | None = None) -> None:
        self.lifespan = lifespan
        self.fail_startup = fail_startup
        self.events: list[str] = []
        self.scopes: list[dict[str, object]] = []
        self.entered = trio.Event()
        self.release = trio.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            if not self.lifespan:
                raise TypeError("this app serves HTTP only")
            await self._lifespan(scope, receive, send)
            return
        self.scopes.append(scope)
        sub_path = scope["path"][len(scope["root_path"]) :]
        if scope["type"] == "websocket":
            await self._websocket(receive, send)
            return
        if sub_path == "/boom":
            raise RuntimeError("the mounted app broke")
        if sub_path == "/silent":
            return
        if sub_path == "/half":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise RuntimeError("broke mid-answer")
        if sub_path == "/wait":
            self.entered.set()
            await self.release.wait()
            await _answer(send, b"waited")
            return
        if sub_path == "/stream":
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for chunk in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = {
            "method": scope["method"],
            "path": scope["path"],
            "root_path": scope["root_path"],
            "query": scope["query_string"].decode(),
            "body": body.decode(),
            "state": scope.get("state", {}).get("greeting"),
        }
        await _answer(send, repr(seen).encode())

    async def _lifespan(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.fail_startup is not None:
                    await send({"type": "lifespan.startup.failed", "message": self.fail_startup})
                    return
                scope["state"]["greeting"] = "hello from startup"
                self.events.append("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.events.append("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _websocket(self, receive, send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.events.append(f"disconnect {message.get('code')}")
                return
            await send({"type": "websocket.send", "text": message["text"].upper()})


async def _answer(send, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def quart_admin(events: list[str], *, fail: bool = False) -> QuartTrio:
    """A QuartTrio app using its lifespan, its nursery, background tasks and a WebSocket."""
    app = QuartTrio("admin")
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = 1
    finished = trio.Event()

    @app.before_serving
    async def started() -> None:
        if fail:
            raise RuntimeError("no database")
        events.append("startup")

    @app.after_serving
    async def stopped() -> None:
        events.append("shutdown")

    @app.route("/where")
    async def where():
        return {"path": quart_request.path, "root_path": quart_request.root_path}

    @app.route("/items", methods=["POST"])
    async def add_item():
        data = await quart_request.get_json()
        return {"added": data["name"]}, 201

    @app.route("/later", methods=["POST"])
    async def later():
        async def job() -> None:
            events.append("background job ran")
            finished.set()

        app.add_background_task(job)
        return {"queued": True}, 202

    @app.route("/finished")
    async def wait_finished():
        await finished.wait()
        return "finished"

    @app.websocket("/echo")
    async def echo() -> None:
        while True:
            text = await quart_websocket.receive()
            await quart_websocket.send(f"echo {text} at {quart_websocket.path}")

    return app


def service_with(*mounts: tuple[str, object], name: str = "svc") -> type:
    """A service with a route, a route with a variable first segment, and ``mounts``."""

    class Service:
        @http("GET", "/hello")
        async def hello(self, request):
            return f"hi {type(self.mounted_0).__name__}" if mounts else "hi"

        @http("GET", "/<word>/x")
        async def anything_x(self, request, word):
            return f"service {word}"

        @http("GET", "/where")
        async def where(self, request):
            return {"path": request.path, "script_root": request.script_root}

    Service.name = name
    Service.__qualname__ = name.capitalize()
    for index, (prefix, app) in enumerate(mounts):
        setattr(Service, f"mounted_{index}", mount(prefix, app))
    return Service


@asynccontextmanager
async def client_for(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url) as client:
        yield client


@asynccontextmanager
async def websocket_to(url: str, path: str) -> AsyncIterator[WebSocketConnection]:
    """A plain WebSocket client to ``path`` on ``url``'s server.

    Over a stream of our own: trio-websocket's open_websocket_url leaves its socket
    open when the server closes first (a ResourceWarning, an error in this suite).
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, f"{host}:{port}", path)
            try:
                yield ws
            finally:
                with trio.move_on_after(2, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


# -- HTTP through a mount -----------------------------------------------------------------------


async def test_a_mounted_app_sees_root_path_full_path_query_and_body(local_config, runner_factory):
    app = RawApp()
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/tools/raw", app)))
        async with client_for(runner.url) as client:
            response = await client.post("/tools/raw/a/b%20c?q=1&r=2", content=b"x" * 100_000)
            chunked = await client.post("/tools/raw/up", content=_chunks([b"ab", b"cd"]))
    assert response.status_code == 200
    assert eval(response.text) == {
        "method": "POST",
        "path": "/tools/raw/a/b c",
        "root_path": "/tools/raw",
        "query": "q=1&r=2",
        "body": "x" * 100_000,
        "state": "hello from startup",  # the lifespan's state reaches every request
    }
    assert eval(chunked.text)["body"] == "abcd"
    assert app.scopes[0]["raw_path"] == b"/tools/raw/a/b%20c"


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_mounted_app_streams_its_response(local_config, runner_factory):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", RawApp())))
        async with (
            client_for(runner.url) as client,
            client.stream("GET", "/raw/stream") as response,
        ):
            chunks = [chunk async for chunk in response.aiter_raw()]
    assert response.status_code == 200
    assert response.headers.get("transfer-encoding") == "chunked"
    assert b"".join(chunks) == b"one,two,three"


async def test_quart_routes_under_its_root_path(local_config, runner_factory):
    events: list[str] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/admin", quart_admin(events))))
        async with client_for(runner.url) as client:
            where = await client.get("/admin/where")
            added = await client.post("/admin/items", json={"name": "bolt"})
            missing = await client.get("/admin/nothing")
    assert where.json() == {"path": "/where", "root_path": "/admin"}
    assert (added.status_code, added.json()) == (201, {"added": "bolt"})
    assert missing.status_code == 404  # Quart's own answer: the path is the app's


async def test_the_bare_prefix_redirects_to_the_prefix_with_a_slash(local_config, runner_factory):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", RawApp())))
        async with client_for(runner.url) as client:
            get = await client.get("/raw?a=b")
            post = await client.post("/raw", content=b"kept")
            followed = await client.post("/raw", content=b"kept", follow_redirects=True)
    assert (get.status_code, get.headers["location"]) == (308, "/raw/?a=b")
    assert (post.status_code, post.headers["location"]) == (308, "/raw/")
    assert eval(followed.text)["body"] == "kept"  # 308: the method and body are kept


async def test_the_services_routes_are_unaffected(local_config, runner_factory):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", RawApp())))
        async with client_for(runner.url) as client:
            hello = await client.get("/hello")
            beside = await client.get("/rawer/x")  # not under /raw: a segment boundary
            shadowed = await client.get("/raw/x")  # the mount wins over /<word>/x
            missing = await client.get("/nothing")
            where = await client.get("/where")
    assert (hello.status_code, hello.text) == (200, "hi RawApp")  # self.mounted_0 is the app
    assert beside.text == "service rawer"
    assert eval(shadowed.text)["path"] == "/raw/x"
    assert (missing.status_code, missing.json()["error"]) == (404, "NotFound")
    assert where.json() == {"path": "/where", "script_root": ""}


async def test_errors_of_a_mounted_app_are_json_500s_and_the_server_goes_on(
    local_config, runner_factory, caplog
):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", RawApp())))
        async with client_for(runner.url) as client:
            boom = await client.get("/raw/boom")
            silent = await client.get("/raw/silent")
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/raw/half")  # the connection is closed: the body is short
            after = await client.get("/raw/fine")
            hello = await client.get("/hello")
    assert boom.status_code == 500
    assert boom.headers["content-type"] == "application/json"
    assert boom.json() == {"error": "InternalServerError", "message": "internal server error"}
    assert (silent.status_code, silent.json()["error"]) == (500, "InternalServerError")
    assert after.status_code == hello.status_code == 200
    assert "the app mounted at /raw" in caplog.text
    assert "the mounted app broke" in caplog.text  # the traceback is logged


async def test_requests_to_a_mount_take_no_worker_slots(local_config, runner_factory):
    """WEB_SERVER_MAX_WORKERS bounds the services' workers, not the mounted app."""
    arrived = 0
    all_in = trio.Event()

    async def app(scope, receive, send) -> None:
        nonlocal arrived
        if scope["type"] != "http":
            return
        arrived += 1
        if arrived == 3:
            all_in.set()
        await all_in.wait()  # only returns once three requests run at once
        await _answer(send, b"ok")

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        config = {**local_config, "WEB_SERVER_MAX_WORKERS": 1}
        runner = await runner_factory(config, service_with(("/raw", app)))
        async with client_for(runner.url) as client, trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(client.get, "/raw/")
    assert all_in.is_set()


# -- WebSocket through a mount ------------------------------------------------------------------


async def test_a_websocket_through_a_mount(local_config, runner_factory):
    events: list[str] = []
    app = RawApp()
    mounts = (("/admin", quart_admin(events)), ("/raw", app))
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(*mounts))
        async with websocket_to(runner.url, "/admin/echo?x=1") as quart_socket:
            await quart_socket.send_message("hi")
            assert await quart_socket.get_message() == "echo hi at /echo"
        async with websocket_to(runner.url, "/raw/sock") as raw_socket:
            await raw_socket.send_message("hi")
            assert await raw_socket.get_message() == "HI"
    assert app.scopes[-1]["path"] == "/raw/sock"
    assert app.scopes[-1]["root_path"] == "/raw"


async def test_a_websocket_handshake_on_the_bare_prefix_is_refused(local_config, runner_factory):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", RawApp())))
        with pytest.raises(NotFound, match="no WebSocket endpoint at /raw"):
            async with open_websocket_client(runner.url + "/raw"):
                raise AssertionError("the handshake should have been refused")


async def test_mounted_websockets_are_closed_with_1001_on_stop(local_config, runner_factory):
    app = RawApp()
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", app)))
        async with websocket_to(runner.url, "/raw/s") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "HI"
            await runner.stop()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 1001
    assert app.events == ["startup", "disconnect 1001", "shutdown"]


# -- lifespan -----------------------------------------------------------------------------------


class Recorder(DependencyProvider):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def setup(self) -> None:
        self.events.append("provider setup")

    async def stop(self) -> None:
        self.events.append("provider stop")


async def test_lifespan_starts_before_serving_and_stops_after_the_drain(
    local_config, runner_factory, asgi_client
):
    app = RawApp()
    service = service_with(("/raw", app))
    service.recorder = Recorder(app.events)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service)
        assert app.events == ["provider setup", "startup"]  # before nursery.start returned
        async with asgi_client(runner) as client, trio.open_nursery() as nursery:
            answers: list[httpx.Response] = []

            async def call() -> None:
                answers.append(await client.get("/raw/wait"))

            nursery.start_soon(call)
            await app.entered.wait()
            nursery.start_soon(runner.stop)
            await trio.testing.wait_all_tasks_blocked()
            # Draining: the request in flight goes on, a new one gets the services' 503.
            assert app.events == ["provider setup", "startup"]
            refused = await client.get("/raw/fine")
            assert (refused.status_code, refused.json()["error"]) == (503, "ServiceUnavailable")
            assert refused.headers["retry-after"] == "1"
            app.release.set()
    assert [(r.status_code, r.text) for r in answers] == [(200, "waited")]
    assert app.events == ["provider setup", "startup", "shutdown", "provider stop"]


async def test_a_quart_trio_app_gets_its_nursery_and_background_tasks(local_config, runner_factory):
    events: list[str] = []
    app = quart_admin(events)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/admin", app)))
        async with client_for(runner.url) as client:
            queued = await client.post("/admin/later")
            finished = await client.get("/admin/finished")  # waits for the background job
        await runner.stop()
    assert (queued.status_code, finished.text) == (202, "finished")
    assert events == ["startup", "background job ran", "shutdown"]


async def test_a_failed_startup_stops_the_runner_with_a_clear_error(local_config, runner_factory):
    events: list[str] = []
    first = RawApp()
    service = service_with(("/first", first), ("/admin", quart_admin(events, fail=True)))
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        with pytest.raises(
            MountStartupError,
            match=r"mounted at /admin \(Svc\.mounted_1\) failed to start: no database",
        ):
            await runner_factory(local_config, service)
    assert first.events == ["startup", "shutdown"]  # the one that had started was stopped


async def test_a_startup_failed_message_names_the_mount(local_config, runner_factory):
    service = service_with(("/raw", RawApp(fail_startup="cannot reach the database")))
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        with pytest.raises(MountStartupError) as caught:
            await runner_factory(local_config, service)
    assert str(caught.value) == (
        "the app mounted at /raw (Svc.mounted_0) failed to start: cannot reach the database"
    )


async def test_an_app_without_lifespan_support_is_served(local_config, runner_factory, caplog):
    app = RawApp(lifespan=False)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", app)))
        async with client_for(runner.url) as client:
            response = await client.get("/raw/x")
    assert eval(response.text)["state"] is None
    assert "does not support the ASGI lifespan (TypeError: this app serves HTTP only)" in (
        caplog.text
    )


async def test_a_lifespan_failing_while_serving_is_logged_and_the_server_goes_on(
    local_config, runner_factory, caplog
):
    crash = trio.Event()

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await crash.wait()
            raise RuntimeError("the background loop died")
        await _answer(send, b"still here")

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", app)))
        crash.set()
        await trio.testing.wait_all_tasks_blocked()
        async with client_for(runner.url) as client:
            response = await client.get("/raw/")
        await runner.stop()
    assert response.text == "still here"
    assert "the lifespan of the app mounted at /raw (Svc.mounted_0) failed while serving" in (
        caplog.text
    )


async def test_a_mounted_websocket_handshake_while_draining_gets_503(local_config, runner_factory):
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, service_with(("/raw", RawApp())))
        await runner.stop()
    server = runner.shared_extension(WebServer)
    assert isinstance(server, WebServer)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/raw/s",
        "root_path": "",
        "headers": [],
        "extensions": {"websocket.http.response": {}},
    }
    await server.app(scope, receive, send)
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 503
    assert b"ServiceUnavailable" in sent[1]["body"]  # type: ignore[operator]


# -- definition errors --------------------------------------------------------------------------


def _clash(local_config, *services: type) -> str:
    """The error adding the last of ``services`` raises (the others are added fine)."""
    runner = ServiceRunner(local_config)
    *first, last = services
    for service in first:
        runner.add_service(service)
    with pytest.raises(ConfigurationError) as caught:
        runner.add_service(last)
    assert runner.url is None
    return str(caught.value)


def _routes_at(url: str, name: str = "routes") -> type:
    class Routes:
        @http("GET", url)
        async def handler(self, request, **arguments):
            return "x"

    Routes.name = name
    Routes.__qualname__ = "Routes"
    return Routes


def _mount_only(prefix: str, app: object, name: str) -> type:
    return type(name, (), {"name": name, "admin": mount(prefix, app)})


@pytest.mark.parametrize("url", ["/admin", "/admin/", "/admin/users/<int:uid>"])
def test_a_route_under_a_mount_is_an_error_in_either_order(local_config, url):
    app = RawApp()
    mounted_first = _clash(local_config, _mount_only("/admin", app, "Admin"), _routes_at(url))
    assert f"Routes.handler: {url} lies under /admin, where Admin.admin mounts RawApp" in (
        mounted_first
    )
    route_first = _clash(local_config, _routes_at(url), _mount_only("/admin", app, "Admin"))
    assert "lies under /admin" in route_first


def test_two_mounts_on_one_prefix_or_nested_are_errors(local_config):
    one = _clash(
        local_config, _mount_only("/admin", RawApp(), "A"), _mount_only("/admin/", RawApp(), "B")
    )
    assert one == "B.admin: /admin is already mounted by A.admin; one prefix serves one app"
    nested = _clash(
        local_config, _mount_only("/admin/x", RawApp(), "A"), _mount_only("/admin", RawApp(), "B")
    )
    assert "mounts may not nest" in nested


def test_a_mount_over_the_websocket_path_is_an_error_in_either_order(local_config):
    class Sockets:
        name = "sockets"
        hub = WebSocketHubProvider()

    config = {**local_config, "WEBSOCKET_PATH": "/admin/ws"}
    first = _clash(config, Sockets, _mount_only("/admin", RawApp(), "Admin"))
    assert "WEBSOCKET_PATH /admin/ws lies under the mount at /admin" in first
    second = _clash(config, _mount_only("/admin", RawApp(), "Admin"), Sockets)
    assert "WEBSOCKET_PATH /admin/ws lies under the mount at /admin" in second


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("/", "mounting at the root"),
        ("", "mounting at the root"),
        ("admin", "static path"),
        ("/a/<int:x>", "static path"),
        ("/a/../b", "static path"),
        ("/a b", "static path"),
        (None, "must be a string"),
    ],
)
def test_bad_prefixes_are_refused(prefix, message):
    with pytest.raises(ConfigurationError, match=message):
        mount(prefix, RawApp())  # type: ignore[arg-type]


@pytest.mark.parametrize("app", [RawApp, "not an app", None])
def test_things_that_are_not_asgi_apps_are_refused(app):
    with pytest.raises(ConfigurationError, match="expected an ASGI 3 application"):
        mount("/x", app)  # type: ignore[arg-type]


def test_routes_lists_the_mounts(local_config):
    runner = ServiceRunner(local_config)
    runner.add_service(service_with(("/admin", quart_admin([]))))
    server = runner.shared_extension(WebServer)
    assert isinstance(server, WebServer)
    assert ("MOUNT", "/admin/", "svc.mounted_0 (QuartTrio 'admin')") in server.routes()


# -- the services as an ASGI app ----------------------------------------------------------------


class Echo:
    name = "echo"

    hub = WebSocketHubProvider()

    @http("GET", "/greet")
    async def greet(self, request):
        return {"hello": "world", "path": request.path, "script_root": request.script_root}

    @rpc
    async def shout(self, socket_id, text):
        return text.upper()


@asynccontextmanager
async def hypercorn_serving(app) -> AsyncIterator[str]:
    """``app`` served by hypercorn's trio worker, in process, on a free port."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 1
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait)
        )
        try:
            yield binds[0]
        finally:
            stop.set()


async def test_the_services_as_an_asgi_app_under_hypercorn():
    events: list[str] = []
    admin = quart_admin(events)
    service = service_with(("/admin", admin))
    service.recorder = Recorder(events)
    app = asgi_app({"SHUTDOWN_GRACE_PERIOD": 2}, service, Echo)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with hypercorn_serving(app) as url:
            assert events == ["provider setup", "startup"]
            async with client_for(url) as client:
                hello = await client.get("/greet")
                where = await client.get("/admin/where")
                await client.post("/admin/later")
                finished = await client.get("/admin/finished")
            async with open_websocket_client(url) as ws:
                assert await ws.rpc("shout", text="hey") == "HEY"
            async with websocket_to(url, "/admin/echo") as s:
                await s.send_message("x")
                assert await s.get_message() == "echo x at /echo"
    assert hello.json() == {"hello": "world", "path": "/greet", "script_root": ""}
    assert where.json() == {"path": "/where", "root_path": "/admin"}
    assert finished.text == "finished"
    assert events == [
        "provider setup",
        "startup",
        "background job ran",
        "shutdown",
        "provider stop",
    ]
    assert not app.runner.running


async def test_the_asgi_app_can_be_served_again_after_a_stop():
    app = asgi_app(None, Echo)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        for _ in range(2):
            async with hypercorn_serving(app) as url, client_for(url) as client:
                assert (await client.get("/greet")).status_code == 200


async def test_the_asgi_app_mounted_in_starlette_sees_its_root_path():
    """The other way round: triosvc's services under another framework's mount."""
    events: list[str] = []
    services = asgi_app(None, Echo, service_with(("/admin", quart_admin(events))))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with services.running():  # Starlette does not run a mounted app's lifespan
            yield

    outer = Starlette(routes=[StarletteMount("/svc", app=services)], lifespan=lifespan)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with hypercorn_serving(outer) as url, client_for(url) as client:
            hello = await client.get("/svc/greet")
            where = await client.get("/svc/admin/where")
    assert hello.json() == {"hello": "world", "path": "/greet", "script_root": "/svc"}
    assert where.json() == {"path": "/where", "root_path": "/svc/admin"}
    assert events == ["startup", "shutdown"]


async def test_the_asgi_app_without_its_lifespan_answers_503():
    app = asgi_app(None, Echo)
    transport = httpx.ASGITransport(app=app)  # runs no lifespan
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/greet")
    assert (response.status_code, response.json()["error"]) == (503, "ServiceUnavailable")
    assert "lifespan" in response.json()["message"]


def test_the_asgi_app_raises_definition_errors_when_built():
    with pytest.raises(ConfigurationError, match="lies under /greet"):
        asgi_app(None, Echo, _mount_only("/greet", RawApp(), "Greet"))


async def test_a_failed_startup_fails_the_hypercorn_lifespan():
    app = asgi_app(None, service_with(("/raw", RawApp(fail_startup="no disk"))))
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        with pytest.raises(BaseExceptionGroup) as caught:
            await hypercorn_serve(app, config)
    failure = sole_exception(caught.value)
    assert isinstance(failure, LifespanFailureError)
    assert (
        "MountStartupError: the app mounted at /raw (Svc.mounted_0) failed to start: no disk"
        in (str(failure))
    )


SERVICE_MODULE = """
import sys
from triosvc.extensions import DependencyProvider
from triosvc.web import asgi_app
from triosvc.web.handlers import http


class Announce(DependencyProvider):
    async def stop(self):
        print("services stopped", file=sys.stderr, flush=True)


class Hello:
    name = "hello"
    announce = Announce()

    @http("GET", "/hello")
    async def hello(self, request):
        return "hello from hypercorn"


app = asgi_app({"SHUTDOWN_GRACE_PERIOD": 2}, Hello)
"""


@pytest.mark.slow
@posix_only
async def test_hypercorn_k_trio_serves_the_asgi_app_in_a_process(tmp_path):
    (tmp_path / "hello_app.py").write_text(textwrap.dedent(SERVICE_MODULE))
    argv = [sys.executable, "-m", "hypercorn", "-k", "trio", "--bind", "127.0.0.1:0"]
    with trio.fail_after(30):
        async with child_process([*argv, "hello_app:app"], tmp_path) as child:
            url = (await child.wait_for(r"Running on (http://127\.0\.0\.1:\d+)"))[1]
            async with client_for(url) as client:
                response = await client.get("/hello")
            child.signal(signal.SIGTERM)
            await child.wait_for("services stopped")
            assert await child.exit_status() == 0
    assert (response.status_code, response.text) == (200, "hello from hypercorn")
