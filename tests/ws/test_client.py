"""The Python WebSocket RPC client against real services over 127.0.0.1 (SPEC §5, §9).

Every test runs under ``trio.fail_after(TIMEOUT)`` and synchronises on events, replies and
``wait_all_tasks_blocked``, never on sleeps. Orderings the tests rely on come from the server:
a socket's frames leave in the order they were queued, so events a call sends reach the
client before the call's reply.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trio_websocket

from triosvc import exceptions
from triosvc.exceptions import (
    ConnectionNotFound,
    HttpError,
    IncorrectSignature,
    MethodNotFound,
    NotFound,
    RemoteError,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
)
from triosvc.runners import ServiceRunner
from triosvc.web.handlers import http
from triosvc.web.websocket import (
    WebSocketClient,
    WebSocketClosed,
    WebSocketHubProvider,
    on_connect,
    on_disconnect,
    open_websocket_client,
    rpc,
)
from triosvc.ws.client import CloseReason, remote_exception, websocket_url
from triosvc.ws.protocol import Event, Failure, UnencodableValue

#: Upper bound, in seconds, for each test.
TIMEOUT = 10

HttpClient = Callable[[ServiceRunner], AbstractAsyncContextManager[httpx.AsyncClient]]


class CustomError(Exception):
    """An exception the service expects: it reaches the client as itself."""


class Unexpected(Exception):
    """An exception the service does not expect: the client sees InternalServerError."""


class EchoService:
    name = "echo"
    hub = WebSocketHubProvider()

    @rpc
    async def echo(self, socket_id: str, value: object) -> object:
        return value

    @rpc
    def blocking_echo(self, socket_id: str, value: object) -> object:
        return value

    @rpc
    async def add(self, socket_id: str, a: int, b: int = 0) -> int:
        return a + b

    @rpc
    async def whoami(self, socket_id: str) -> str:
        return socket_id

    @rpc
    async def raise_http(self, socket_id: str, name: str, message: str) -> None:
        raise getattr(exceptions, name)(message)

    @rpc(expected_exceptions=CustomError)
    async def custom(self, socket_id: str, message: str) -> None:
        raise CustomError(message)

    @rpc
    async def crash(self, socket_id: str) -> None:
        raise Unexpected("secret details")

    @rpc
    async def remote_failure(self, socket_id: str) -> None:
        raise RemoteError("ValueError", "bad value in another service")

    @rpc
    async def unencodable(self, socket_id: str) -> object:
        return {1, 2}

    @rpc(timeout=0.05)
    async def too_slow(self, socket_id: str) -> None:
        await trio.sleep_forever()

    @rpc
    async def notify_me(self, socket_id: str, events: list[list[Any]]) -> int:
        for name, data in events:
            self.hub.unicast(socket_id, name, data)
        return len(events)

    @rpc
    async def unicast_to(self, socket_id: str, target: str, event: str, data: object) -> None:
        self.hub.unicast(target, event, data)

    @rpc
    async def subscribe(self, socket_id: str, channel: str) -> None:
        self.hub.subscribe(socket_id, channel)

    @rpc
    def shout(self, socket_id: str, channel: str, event: str, data: object) -> None:
        self.hub.broadcast(channel, event, data)  # from a worker thread

    @http("POST", "/unicast/<socket_id>")
    def http_unicast(self, request: Any, socket_id: str) -> None:
        body = request.get_json()
        self.hub.unicast(socket_id, body["event"], body["data"])

    @http("POST", "/broadcast/<channel>")
    async def http_broadcast(self, request: Any, channel: str) -> None:
        body = request.get_json()
        self.hub.broadcast(channel, body["event"], body["data"])


def ws_url(runner: ServiceRunner) -> str:
    assert runner.url is not None
    return runner.url.replace("http", "ws") + "/ws"


@pytest.fixture
async def runner(runner_factory: Any, local_config: dict[str, object]) -> ServiceRunner:
    started: ServiceRunner = await runner_factory(local_config, EchoService)
    return started


@pytest.fixture
async def client(runner: ServiceRunner) -> AsyncIterator[WebSocketClient]:
    """A client of ``EchoService``; tests still bound their own time with fail_after."""
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as connected:
            yield connected


def tasks_under(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    """Every task in the nurseries ``task`` has open, recursively."""
    found: list[trio.lowlevel.Task] = []
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            found.append(child)
            found.extend(tasks_under(child))
    return found


# -- calls --------------------------------------------------------------------------------------


JSON_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -17,
    2**62,
    1.5,
    -0.0,
    "",
    "text",
    'ünïcödé ☃ \U0001f600 "quoted" \\ \n',
    [],
    {},
    [1, "two", None, [3.0, {"four": [5]}]],
    {"nested": {"list": [1, 2, {"deep": True}]}, "empty": [], "null": None},
    "x" * 100_000,
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=lambda value: repr(value)[:30])
async def test_rpc_returns_the_result(client: WebSocketClient, value: object) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.rpc("echo", value=value)
        assert result == value
        assert type(result) is type(value)
        assert await client.rpc("blocking_echo", value=value) == value


async def test_rpc_passes_keyword_arguments(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        assert await client.rpc("add", a=2, b=3) == 5
        assert await client.rpc("add", a=2) == 2
        assert await client.rpc("whoami") == client.socket_id


async def test_method_and_data_named_like_rpc_parameters(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    """``rpc(method, /, **data)``: a method may take an argument called ``method`` or ``self``."""

    class Odd:
        name = "odd"

        @rpc
        async def describe(self, socket_id: str, method: str, data: object) -> list[object]:
            return [method, data]

    runner = await runner_factory(local_config, Odd)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:
            assert await client.rpc("describe", method="GET", data=[1]) == ["GET", [1]]


# -- remote errors ------------------------------------------------------------------------------


async def test_unknown_method_is_method_not_found(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(MethodNotFound, match="no_such_method"):
            await client.rpc("no_such_method", x=1)
        assert await client.rpc("add", a=1) == 1  # the socket stays open


@pytest.mark.parametrize(
    "data", [{"a": 1, "c": 2}, {}, {"b": 2}], ids=["unknown-argument", "none", "missing"]
)
async def test_wrong_arguments_are_incorrect_signature(
    client: WebSocketClient, data: dict[str, object]
) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(IncorrectSignature, match="add"):
            await client.rpc("add", **data)
        assert await client.rpc("add", a=1) == 1


@pytest.mark.parametrize(
    "name", ["BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "HttpError"]
)
async def test_http_errors_come_back_as_their_class(client: WebSocketClient, name: str) -> None:
    cls = getattr(exceptions, name)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(cls) as info:
            await client.rpc("raise_http", name=name, message=f"no, says {name}")
    assert type(info.value) is cls
    assert str(info.value) == f"no, says {name}"
    assert info.value.status_code == cls.status_code


async def test_expected_custom_exception_is_remote_error_with_its_type(
    client: WebSocketClient,
) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(RemoteError) as info:
            await client.rpc("custom", message="it went wrong as foreseen")
    assert info.value.exc_type == "CustomError"
    assert info.value.value == "it went wrong as foreseen"
    assert str(info.value) == "CustomError it went wrong as foreseen"


async def test_unexpected_exception_is_internal_server_error(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(RemoteError) as info:
            await client.rpc("crash")
        assert info.value.exc_type == "InternalServerError"
        assert "secret" not in str(info.value)
        assert await client.rpc("add", a=1) == 1


async def test_remote_error_let_through_keeps_its_original_type(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(RemoteError) as info:
            await client.rpc("remote_failure")
    assert (info.value.exc_type, info.value.value) == ("ValueError", "bad value in another service")


async def test_unencodable_result_is_internal_server_error(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(RemoteError) as info:
            await client.rpc("unencodable")
        assert info.value.exc_type == "InternalServerError"
        assert "unencodable" in info.value.value


async def test_deadline_is_timeout(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(Timeout, match="too_slow"):
            await client.rpc("too_slow")
        assert await client.rpc("add", a=1) == 1


async def test_hub_error_is_connection_not_found(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionNotFound, match="nobody"):
            await client.rpc("unicast_to", target="nobody", event="e", data=None)


async def test_unencodable_argument_is_refused_before_sending(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(UnencodableValue, match="set"):
            await client.rpc("echo", value={1, 2})
        with pytest.raises(UnencodableValue, match="NaN"):
            await client.rpc("echo", value=math.nan)
        assert client.statistics().calls_pending == 0
        assert await client.rpc("echo", value=[1]) == [1]


@pytest.mark.parametrize(
    ("exc_type", "value", "exc_args", "expected"),
    [
        ("MethodNotFound", "no", (), MethodNotFound("no")),
        ("ServiceUnavailable", "busy", (), ServiceUnavailable("busy")),
        ("Timeout", "late", (), Timeout("late")),
        ("RemoteError", "KeyError 'k'", ("KeyError", "'k'"), RemoteError("KeyError", "'k'")),
        ("RemoteError", "odd", (), RemoteError("RemoteError", "odd")),
        ("KeyError", "'k'", ("k",), RemoteError("KeyError", "'k'")),
        ("UnknownError", "", (), RemoteError("UnknownError", "")),
        # names that are not exception classes of triosvc.exceptions
        ("annotations", "x", (), RemoteError("annotations", "x")),
        ("Exception", "x", (), RemoteError("Exception", "x")),
    ],
)
def test_remote_exception_mapping(
    exc_type: str, value: str, exc_args: tuple[object, ...], expected: Exception
) -> None:
    error = remote_exception(Failure(7, exc_type, value, exc_args))
    assert type(error) is type(expected)
    assert error.args == expected.args
    assert str(error) == str(expected)


# -- concurrency ----------------------------------------------------------------------------------


async def test_concurrent_calls_answered_out_of_order(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    """50 calls at once on one client; released last first, each gets its own answer."""
    calls = 50
    gates = [trio.Event() for _ in range(calls)]
    arrived: list[int] = []
    all_arrived = trio.Event()

    class Gated:
        name = "gated"

        @rpc
        async def gated(self, socket_id: str, n: int) -> dict[str, int]:
            arrived.append(n)
            if len(arrived) == calls:
                all_arrived.set()
            await gates[n].wait()
            return {"n": n, "square": n * n}

    runner = await runner_factory({**local_config, "WEB_SERVER_MAX_WORKERS": calls}, Gated)
    results: dict[int, object] = {}
    answered = [trio.Event() for _ in range(calls)]

    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:

            async def call(n: int) -> None:
                results[n] = await client.rpc("gated", n=n)
                answered[n].set()

            async with trio.open_nursery() as nursery:
                for n in range(calls):
                    nursery.start_soon(call, n)
                await all_arrived.wait()
                assert client.statistics().calls_pending == calls
                for n in reversed(range(calls)):
                    gates[n].set()
                    await answered[n].wait()
                    assert sorted(results) == list(range(n, calls))
            assert client.statistics().calls_pending == 0
    assert results == {n: {"n": n, "square": n * n} for n in range(calls)}


async def test_cancelled_call_does_not_disturb_the_others(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    """A call given up on (fail_after) drops its late reply; the next calls are unaffected."""
    gate = trio.Event()
    entered = trio.Event()
    finished = trio.Event()

    class Late:
        name = "late"

        @rpc
        async def late(self, socket_id: str) -> str:
            entered.set()
            await gate.wait()
            finished.set()
            return "too late"

        @rpc
        async def quick(self, socket_id: str) -> str:
            return "quick"

    runner = await runner_factory(local_config, Late)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.rpc, "late")
                    await entered.wait()
                    scope.cancel()
            assert client.statistics().calls_pending == 0
            gate.set()
            await finished.wait()
            assert await client.rpc("quick") == "quick"  # the late reply came first: dropped
            assert not client.closed


# -- events ---------------------------------------------------------------------------------------


async def test_events_channel_and_wait_for_event(client: WebSocketClient) -> None:
    """wait_for_event takes the first event of its name; the others stay, in order."""
    with trio.fail_after(TIMEOUT):
        sent = [["a", 1], ["b", {"x": [1, 2]}], ["a", 2], ["c", None], ["b", "second b"]]
        assert await client.rpc("notify_me", events=sent) == 5
        assert client.statistics().events_queued == 5
        assert await client.wait_for_event("b") == {"x": [1, 2]}
        assert await client.wait_for_event("c") is None
        assert client.events.receive_nowait() == Event("a", 1)
        assert client.events.receive_nowait() == Event("a", 2)
        assert await client.events.receive() == Event("b", "second b")
        with pytest.raises(trio.WouldBlock):
            client.events.receive_nowait()


async def test_connected_event_gives_socket_id(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    seen: list[str] = []

    class Hooked:
        name = "hooked"

        @on_connect
        async def hello(self, socket_id: str, request: Any) -> None:
            seen.append(socket_id)

        @rpc
        async def whoami(self, socket_id: str) -> str:
            return socket_id

    runner = await runner_factory(local_config, Hooked)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:
            assert client.socket_id
            assert seen == [client.socket_id]
            assert await client.rpc("whoami") == client.socket_id
            assert client.statistics().events_queued == 0  # `connected` is not in events
        async with open_websocket_client(ws_url(runner)) as other:
            assert other.socket_id != client.socket_id


async def test_wait_for_event_waits_for_a_later_event(client: WebSocketClient) -> None:
    got: list[object] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def wait() -> None:
                got.append(await client.wait_for_event("later"))

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert client.statistics().event_waiters == 1
            await client.rpc("notify_me", events=[["other", 1], ["later", "here"], ["later", 2]])
        assert got == ["here"]
        # the waiter took its event straight from the reader; the rest stayed in events
        assert client.events.receive_nowait() == Event("other", 1)
        assert client.events.receive_nowait() == Event("later", 2)
        stats = client.statistics()
        assert (stats.events_queued, stats.event_waiters, stats.events_dropped) == (0, 0, 0)


async def test_waiters_of_one_name_are_served_in_turn(client: WebSocketClient) -> None:
    got: list[tuple[int, object]] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def wait(n: int) -> None:
                got.append((n, await client.wait_for_event("turn")))

            for n in range(3):
                nursery.start_soon(wait, n)
                await trio.testing.wait_all_tasks_blocked()
            await client.rpc("notify_me", events=[["turn", "first"], ["turn", "second"]])
            await client.rpc("notify_me", events=[["turn", "third"]])
        assert got == [(0, "first"), (1, "second"), (2, "third")]


async def test_cancelled_wait_loses_no_event(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(0):
            await client.wait_for_event("never")
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def wait() -> None:
                with scope:
                    await client.wait_for_event("x")

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
        assert client.statistics().event_waiters == 0
        await client.rpc("notify_me", events=[["x", 1]])
        assert client.events.receive_nowait() == Event("x", 1)


async def test_full_buffer_drops_the_oldest_and_replies_flow(runner: ServiceRunner) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner), event_buffer=3) as client:
            sent = [[f"e{n}", n] for n in range(10)]
            assert await client.rpc("notify_me", events=sent) == 10  # the reader never blocked
            stats = client.statistics()
            assert (stats.events_queued, stats.events_dropped) == (3, 7)
            assert [client.events.receive_nowait() for _ in range(3)] == [
                Event("e7", 7),
                Event("e8", 8),
                Event("e9", 9),
            ]
            # a waiter still finds what is left, and new events after the drops
            await client.rpc("notify_me", events=[["a", 1], ["b", 2], ["c", 3], ["d", 4]])
            assert await client.wait_for_event("b") == 2
            assert [client.events.receive_nowait() for _ in range(2)] == [
                Event("c", 3),
                Event("d", 4),
            ]
            assert client.statistics().events_dropped == 8


async def test_events_closed_by_the_application_drops_new_events(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        await client.events.aclose()
        assert await client.rpc("notify_me", events=[["a", 1]]) == 1
        assert client.statistics().events_dropped == 1
        assert await client.rpc("add", a=1) == 1


async def test_unicast_and_broadcast_from_another_clients_call(runner: ServiceRunner) -> None:
    url = ws_url(runner)
    with trio.fail_after(TIMEOUT):
        async with (
            open_websocket_client(url) as alice,
            open_websocket_client(url) as bob,
            open_websocket_client(url) as carol,
        ):
            await alice.rpc("subscribe", channel="room")
            await carol.rpc("subscribe", channel="room")
            await bob.rpc("unicast_to", target=alice.socket_id, event="psst", data={"from": "bob"})
            assert await alice.wait_for_event("psst") == {"from": "bob"}

            await bob.rpc("shout", channel="room", event="said", data={"text": "hi all"})
            assert await alice.wait_for_event("said") == {"text": "hi all"}
            assert await carol.wait_for_event("said") == {"text": "hi all"}
            # bob is not subscribed: anything for him would have come before his reply
            assert bob.statistics().events_queued == 0
            assert carol.statistics().events_queued == 0


async def test_unicast_and_broadcast_from_an_http_handler(
    runner: ServiceRunner, http_client: HttpClient
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client, http_client(runner) as web:
            await client.rpc("subscribe", channel="news")
            response = await web.post(
                f"/unicast/{client.socket_id}", json={"event": "direct", "data": [1, "two"]}
            )
            assert response.status_code == 204
            assert await client.wait_for_event("direct") == [1, "two"]

            response = await web.post("/broadcast/news", json={"event": "headline", "data": "!"})
            assert response.status_code == 204
            assert await client.wait_for_event("headline") == "!"

            response = await web.post("/unicast/nobody", json={"event": "x", "data": None})
            assert response.status_code == 500  # ConnectionNotFound is not an HttpError


# -- handshake ------------------------------------------------------------------------------------


class Guarded:
    name = "guarded"

    @on_connect
    async def check(self, socket_id: str, request: Any) -> None:
        if request.args.get("fail") == "crash":
            raise Unexpected("hidden")
        good = request.headers.get("Authorization") == "Bearer good"
        if not good and request.args.get("token") != "good":
            raise Unauthorized("a token is required")

    @rpc
    async def hello(self, socket_id: str) -> str:
        return "hello"


@pytest.fixture
async def guarded(runner_factory: Any, local_config: dict[str, object]) -> ServiceRunner:
    started: ServiceRunner = await runner_factory(local_config, Guarded)
    return started


async def test_refused_handshake_raises_the_error_class(guarded: ServiceRunner) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(Unauthorized) as info:
            async with open_websocket_client(ws_url(guarded)):
                raise AssertionError("the handshake should have been refused")
    error = info.value
    assert type(error) is Unauthorized
    assert error.status_code == 401
    assert str(error) == "a token is required"
    assert isinstance(error.__cause__, trio_websocket.ConnectionRejected)
    assert error.__cause__.status_code == 401


async def test_accepted_with_token_in_query_or_header(guarded: ServiceRunner) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(guarded) + "?token=good") as client:
            assert await client.rpc("hello") == "hello"
        headers_forms: list[Any] = [
            {"Authorization": "Bearer good"},
            [("Authorization", "Bearer good")],
            [(b"Authorization", b"Bearer good")],
        ]
        for headers in headers_forms:
            async with open_websocket_client(ws_url(guarded), extra_headers=headers) as client:
                assert await client.rpc("hello") == "hello"


async def test_refusal_without_a_triosvc_class_is_http_error(guarded: ServiceRunner) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(HttpError) as info:
            async with open_websocket_client(ws_url(guarded) + "?fail=crash"):
                raise AssertionError("the handshake should have been refused")
    assert type(info.value) is HttpError
    assert info.value.status_code == 500
    assert "HTTP 500: InternalServerError: internal server error" in str(info.value)
    assert "hidden" not in str(info.value)


async def test_max_connections_refusal_is_service_unavailable(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    config = {**local_config, "WEBSOCKET_HUB_CONFIG": {"max_connections": 1}}
    runner = await runner_factory(config, EchoService)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as first:
            with pytest.raises(ServiceUnavailable) as info:
                async with open_websocket_client(ws_url(runner)):
                    raise AssertionError("the handshake should have been refused")
            assert info.value.status_code == 503
            assert await first.rpc("add", a=1) == 1


async def test_wrong_path_is_not_found(runner: ServiceRunner) -> None:
    assert runner.url is not None
    with trio.fail_after(TIMEOUT):
        with pytest.raises(NotFound) as info:
            async with open_websocket_client(runner.url + "/"):
                raise AssertionError("there is no WebSocket at /")
    # SPEC §4.2's JSON body, raised as the class it names
    assert info.value.status_code == 404
    assert str(info.value) == "no WebSocket endpoint at /"


async def test_http_url_without_path_reaches_the_endpoint(runner: ServiceRunner) -> None:
    assert runner.url is not None
    assert runner.url.startswith("http://")
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(runner.url) as client:
            assert client.url == ws_url(runner)
            assert await client.rpc("add", a=4) == 4


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:8000", "ws://h:8000/ws"),
        ("https://h", "wss://h/ws"),
        ("HTTP://h:1?token=a%20b", "ws://h:1/ws?token=a%20b"),
        ("ws://h:1/ws", "ws://h:1/ws"),
        ("wss://h/custom/path?x=1#frag", "wss://h/custom/path?x=1"),
        ("http://h:1/", "ws://h:1/"),
        ("http://[::1]:8000", "ws://[::1]:8000/ws"),
    ],
)
def test_websocket_url(url: str, expected: str) -> None:
    assert websocket_url(url) == expected


@pytest.mark.parametrize(
    "url", ["ftp://h/ws", "h:8000", "/ws", "http:///ws", "", "http://h:port/", "ws://h:70000"]
)
def test_websocket_url_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        websocket_url(url)


@pytest.mark.parametrize("event_buffer", [0, -1, 1.5, True])
async def test_bad_event_buffer(runner: ServiceRunner, event_buffer: Any) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(ValueError, match="event_buffer"):
        async with open_websocket_client(ws_url(runner), event_buffer=event_buffer):
            raise AssertionError("unreachable")


async def test_connection_refused_is_a_handshake_error(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    runner = await runner_factory(local_config, EchoService)
    url = ws_url(runner)
    await runner.stop()
    with trio.fail_after(TIMEOUT):
        with pytest.raises(trio_websocket.HandshakeError):
            async with open_websocket_client(url):
                raise AssertionError("nothing listens any more")


# -- closing --------------------------------------------------------------------------------------


async def test_leaving_closes_with_1000_and_leaves_no_task(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    gone: list[str] = []
    disconnected = trio.Event()

    class Watched:
        name = "watched"

        @rpc
        async def ping(self, socket_id: str) -> str:
            return "pong"

        @on_disconnect
        async def bye(self, socket_id: str) -> None:
            gone.append(socket_id)
            disconnected.set()

    runner = await runner_factory(local_config, Watched)
    me = trio.lowlevel.current_task()
    nurseries = list(me.child_nurseries)  # pytest-trio's own
    assert tasks_under(me) == []
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:
            names = [task.name for task in tasks_under(me)]
            assert any(name.endswith("WebSocketClient._read_frames") for name in names)
            assert any(name.endswith("WebSocketClient._send_frames") for name in names)
            assert await client.rpc("ping") == "pong"
        assert tasks_under(me) == []
        assert me.child_nurseries == nurseries
        assert client.closed
        assert client.close_reason == CloseReason(1000, "NORMAL_CLOSURE")
        await disconnected.wait()
        assert gone == [client.socket_id]
        with pytest.raises(WebSocketClosed) as info:
            await client.rpc("ping")
        assert info.value.reason.code == 1000
        assert isinstance(info.value, trio.BrokenResourceError)
        with pytest.raises(WebSocketClosed):
            await client.wait_for_event("anything")
        await client.aclose()  # idempotent


async def test_body_exception_propagates_as_itself(runner: ServiceRunner) -> None:
    me = trio.lowlevel.current_task()
    with trio.fail_after(TIMEOUT):
        with pytest.raises(KeyError, match="mine") as info:
            async with open_websocket_client(ws_url(runner)) as client:
                raise KeyError("mine")
        assert info.value.__context__ is None
        assert client.closed
        assert tasks_under(me) == []


async def test_cancelled_body_leaves_cleanly(runner: ServiceRunner) -> None:
    me = trio.lowlevel.current_task()
    with trio.fail_after(TIMEOUT):
        with trio.CancelScope() as scope:
            async with open_websocket_client(ws_url(runner)) as client:
                scope.cancel()
                await client.rpc("add", a=1)
        assert scope.cancelled_caught
        assert client.closed
        assert tasks_under(me) == []


async def test_aclose_fails_pending_calls_and_ends_events(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    entered = trio.Event()

    class Stuck:
        name = "stuck"
        hub = WebSocketHubProvider()

        @rpc
        async def stuck(self, socket_id: str) -> None:
            self.hub.unicast(socket_id, "before", 1)
            self.hub.unicast(socket_id, "before", 2)
            entered.set()
            await trio.sleep_forever()

    runner = await runner_factory(local_config, Stuck)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    with pytest.raises(WebSocketClosed) as info:
                        await client.rpc("stuck")
                    assert info.value.reason.code == 1000

                async def wait() -> None:
                    with pytest.raises(WebSocketClosed):
                        await client.wait_for_event("never")

                nursery.start_soon(call)
                nursery.start_soon(wait)
                await entered.wait()
                await client.events.receive()  # the first event has arrived ...
                await trio.testing.wait_all_tasks_blocked()
                await client.aclose()
            assert client.close_reason is not None
            assert client.close_reason.code == 1000
            # ... events received before the close stay readable; then iteration ends
            assert [event async for event in client.events] == [Event("before", 2)]


async def test_wait_for_event_after_close_skips_to_its_event(client: WebSocketClient) -> None:
    with trio.fail_after(TIMEOUT):
        sent = [["a", 1], ["b", 2], ["a", 3], ["c", 4]]
        await client.rpc("notify_me", events=sent)
        await client.aclose()
        assert await client.wait_for_event("a") == 1
        assert await client.wait_for_event("c") == 4  # b and a(3) are skipped, gone
        with pytest.raises(WebSocketClosed):
            await client.wait_for_event("b")
        assert [event async for event in client.events] == []


async def test_server_stop_closes_with_1001_and_fails_pending_call(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    entered = trio.Event()

    class Stuck:
        name = "stuck"

        @rpc
        async def stuck(self, socket_id: str) -> None:
            entered.set()
            await trio.sleep_forever()

    # The grace period is how long the stop waits for the stuck call: a deadline, not a sleep.
    runner = await runner_factory({**local_config, "SHUTDOWN_GRACE_PERIOD": 0.2}, Stuck)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    with pytest.raises(WebSocketClosed) as info:
                        await client.rpc("stuck")
                    assert info.value.reason.code == 1001

                nursery.start_soon(call)
                await entered.wait()
                await runner.stop()
            assert client.closed
            assert client.close_reason is not None
            assert client.close_reason.code == 1001
            assert client.close_reason.name == "GOING_AWAY"
            with pytest.raises(WebSocketClosed):
                await client.rpc("stuck")


async def test_server_stop_answers_calls_in_flight_and_refuses_new_ones(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    gate = trio.Event()
    entered = trio.Event()

    class Draining:
        name = "draining"

        @rpc
        async def slow(self, socket_id: str) -> str:
            entered.set()
            await gate.wait()
            return "finished"

        @rpc
        async def quick(self, socket_id: str) -> str:
            return "quick"

    runner = await runner_factory({**local_config, "SHUTDOWN_GRACE_PERIOD": 5}, Draining)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:
            async with trio.open_nursery() as nursery:
                results: list[object] = []

                async def call() -> None:
                    results.append(await client.rpc("slow"))

                nursery.start_soon(call)
                await entered.wait()
                nursery.start_soon(runner.stop)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(ServiceUnavailable):
                    await client.rpc("quick")
                gate.set()
            assert results == ["finished"]
            assert [event async for event in client.events] == []  # ends at the close
            with pytest.raises(WebSocketClosed):
                await client.rpc("quick")
            assert client.close_reason is not None
            assert client.close_reason.code == 1001


async def test_frame_over_max_message_size_closes_with_1009(runner: ServiceRunner) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner), max_message_size=1000) as client:
            assert await client.rpc("echo", value="x" * 500) == "x" * 500
            with pytest.raises(WebSocketClosed) as info:
                await client.rpc("echo", value="x" * 5000)
            assert info.value.reason.code == 1009
            assert client.close_reason == info.value.reason


async def test_stop_is_not_held_up_by_a_closed_websocket(
    runner_factory: Any, local_config: dict[str, object]
) -> None:
    """A socket closed before the stop leaves nothing for the stop to wait for.

    Heartbeats are on (the default): hypercorn's ping task of a socket outlives it by up to one
    interval, which the server must not wait for.
    """
    runner = await runner_factory({**local_config, "SHUTDOWN_GRACE_PERIOD": 5}, EchoService)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_client(ws_url(runner)) as client:
            assert await client.rpc("notify_me", events=[["e", 1]]) == 1
            assert await client.wait_for_event("e") == 1
    with trio.fail_after(1):
        await runner.stop()
