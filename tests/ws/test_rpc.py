"""WebSocket RPC over real sockets (SPEC §5.1, and the hooks of §5.2): the exact frames.

Every behaviour runs with three clients: trio-websocket, and two that triosvc did not write
either: the ``websockets`` library's sans-IO ``ClientProtocol`` driven over a trio socket, and
its blocking ``websockets.sync.client`` run in worker threads. Frames are compared after
parsing, values with their types (``1 == 1.0 == True`` would hide a wrong echo).
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from triosvc.exceptions import ConfigurationError, Conflict, ConnectionNotFound, NotFound
from triosvc.exceptions import Unauthorized as UnauthorizedError
from triosvc.web.handlers import http
from triosvc.web.websocket import (
    WebSocketHubProvider,
    on_connect,
    on_disconnect,
    rpc,
    websocket_rpc,
)

from .clients import (
    TEST_TIMEOUT,
    Rejected,
    SansIOClient,
    call,
    connect,
    connected,
    connected_client,
    exact,
    failure,
    recv_json,
    still_open,
    success,
    ws_url,
)

if TYPE_CHECKING:
    import httpx


# -- services ------------------------------------------------------------------------------


class MissingThing(Exception):
    """An application exception the service declares as expected."""


class Calls:
    name = "calls"

    @rpc
    async def echo(self, socket_id, value=None):
        return value

    @websocket_rpc
    async def whoami(self, socket_id):
        return socket_id

    @rpc
    async def add(self, socket_id, a, b):
        return a + b

    @rpc
    async def unencodable(self, socket_id, what):
        values = {"set": {1, 2}, "nan": float("nan"), "object": object(), "bytes": b"x"}
        return {"nested": [values[what]]}

    @rpc
    async def crash(self, socket_id):
        raise ValueError("a detail the client must not see")

    @rpc
    async def own_error(self, socket_id):
        raise NotFound("no such order")

    @rpc
    async def lookup_socket(self, socket_id):
        raise ConnectionNotFound("no WebSocket with socket id 'x' is connected")

    @websocket_rpc(expected_exceptions=(MissingThing, KeyError))
    async def expected(self, socket_id, which):
        if which == "missing":
            raise MissingThing("thing 7 is missing", 7)
        raise KeyError("the key")

    @rpc
    async def group_of_one(self, socket_id, which):
        inner = {
            "own": Conflict("already taken"),
            "other": RuntimeError("hidden"),
        }[which]
        raise ExceptionGroup("one failure", [inner])

    @rpc(expected_exceptions=MissingThing)
    async def expected_in_group(self, socket_id):
        raise ExceptionGroup("one failure", [MissingThing("in a group")])

    @rpc(timeout=0.2)
    async def too_slow(self, socket_id):
        await trio.sleep_forever()

    @rpc
    def blocking(self, socket_id, value):
        return {
            "value": value,
            "main_thread": threading.current_thread() is threading.main_thread(),
        }


# -- the frames ----------------------------------------------------------------------------


async def test_connected_event_then_call_and_success_frame(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connect(kind, ws_url(runner)) as client:
            first = await recv_json(client)
            assert isinstance(first, dict)
            assert list(first) == ["type", "event", "data"]
            assert first["type"] == "event"
            assert first["event"] == "connected"
            assert list(first["data"]) == ["socket_id"]
            socket_id = first["data"]["socket_id"]
            assert isinstance(socket_id, str)
            assert socket_id

            reply = await call(client, "add", {"a": 2, "b": 3}, 41)
            assert exact(reply) == exact(success(5, 41))
            assert list(reply) == ["type", "success", "data", "correlation_id"]
            # the method gets the socket's own id
            assert await call(client, "whoami", {}, "me") == success(socket_id, "me")
        async with connect(kind, ws_url(runner)) as other:
            assert await connected(other) != socket_id


async def test_data_missing_or_null_means_no_arguments(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            await client.send(json.dumps({"method": "echo", "correlation_id": 1}))
            assert exact(await recv_json(client)) == exact(success(None, 1))
            await client.send(json.dumps({"method": "echo", "data": None, "correlation_id": 2}))
            assert exact(await recv_json(client)) == exact(success(None, 2))
            await client.send(json.dumps({"method": "echo", "data": {}, "correlation_id": 3}))
            assert exact(await recv_json(client)) == exact(success(None, 3))
            # a method with required arguments called with none
            await client.send(json.dumps({"method": "add", "correlation_id": 4}))
            failure(await recv_json(client), "IncorrectSignature", 4)


@pytest.mark.parametrize("data", [[1, 2], [], "a", "", 5, 0, 1.5, True, False])
async def test_data_not_an_object_is_incorrect_signature(runner_factory, config, kind, data):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            await client.send(json.dumps({"method": "echo", "data": data, "correlation_id": "c"}))
            failure(await recv_json(client), "IncorrectSignature", "c")
            await still_open(client)


CORRELATION_IDS = [
    0,
    1,
    -7,
    2**53 + 1,
    10**30,
    1.5,
    -0.25,
    1e300,
    "",
    "abc",
    "é ✓ 😀",
    True,
    False,
    [],
    [1, "a", None, [True]],
    {},
    {"k": [1, {"deep": 1.0}], "n": None},
]


async def test_correlation_id_echoed_exactly(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            for correlation_id in CORRELATION_IDS:
                reply = await call(client, "echo", {"value": 1}, correlation_id)
                assert exact(reply) == exact(success(1, correlation_id))
                # on error frames too
                reply = await call(client, "nope", {}, correlation_id)
                failure(reply, "MethodNotFound", correlation_id)
            # absent, or null: null
            await client.send(json.dumps({"method": "echo", "data": {"value": 2}}))
            assert exact(await recv_json(client)) == exact(success(2, None))
            reply = await call(client, "echo", {"value": 3}, None)
            assert exact(reply) == exact(success(3, None))


async def test_unknown_method(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            error = failure(await call(client, "no_such_method", {"x": 1}, 9), "MethodNotFound", 9)
            assert "no_such_method" in error["value"]
            assert error["exc_args"] == [error["value"]]
            await still_open(client)


@pytest.mark.parametrize(
    ("frame", "correlation_id"),
    [
        ("this is not JSON", None),
        ("", None),
        ('{"method": "echo"', None),
        ('{"method": "echo", "correlation_id": NaN}', None),
        ("[1, 2]", None),
        ('"echo"', None),
        ("null", None),
        ('{"data": {}, "correlation_id": 7}', 7),
        ('{"correlation_id": ["x", 1]}', ["x", 1]),
        ('{"method": null, "correlation_id": "n"}', "n"),
        ('{"method": 5, "correlation_id": "five"}', "five"),
        ('{"method": ["echo"], "data": {}}', None),
    ],
)
async def test_malformed_request(runner_factory, config, kind, frame, correlation_id):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            await client.send(frame)
            error = failure(await recv_json(client), "MalformedRequest", correlation_id)
            assert error["value"]
            await still_open(client)


async def test_binary_frame_is_malformed_request(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            await client.send_bytes(json.dumps({"method": "echo", "correlation_id": 1}).encode())
            failure(await recv_json(client), "MalformedRequest", None)
            await client.send_bytes(b"\x00\xff" * 100)
            failure(await recv_json(client), "MalformedRequest", None)
            await still_open(client)


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1},  # missing b
        {"a": 1, "b": 2, "c": 3},  # unexpected c
        {"b": 2},
        {"a": 1, "b": 2, "socket_id": "forged"},  # socket_id is the server's to give
        {"self": 1, "a": 1, "b": 2},
    ],
)
async def test_wrong_arguments_are_incorrect_signature(runner_factory, config, kind, data):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            error = failure(await call(client, "add", data, "sig"), "IncorrectSignature", "sig")
            assert "add" in error["value"]
            await still_open(client)


@pytest.mark.parametrize("what", ["set", "nan", "object", "bytes"])
async def test_unencodable_return_value_is_an_error_frame(runner_factory, config, kind, what):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            reply = await call(client, "unencodable", {"what": what}, {"id": what})
            failure(reply, "InternalServerError", {"id": what})
            await still_open(client)


async def test_call_past_its_deadline_is_timeout(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            start = trio.current_time()
            error = failure(await call(client, "too_slow", {}, "late"), "Timeout", "late")
            assert 0.2 <= trio.current_time() - start < 5
            assert error["value"]
            await still_open(client)


async def test_web_server_timeout_applies_to_rpc(runner_factory, config, kind):
    class Slow:
        name = "slow"

        @rpc
        async def forever(self, socket_id):
            await trio.sleep_forever()

        @rpc
        async def echo(self, socket_id, value=None):
            return value

    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory({**config, "WEB_SERVER_TIMEOUT": 0.3}, Slow)
        async with connected_client(runner, kind) as client:
            start = trio.current_time()
            failure(await call(client, "forever", None, 1), "Timeout", 1)
            assert 0.3 <= trio.current_time() - start < 5
            await still_open(client)


async def test_unexpected_exception_is_hidden(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            error = failure(await call(client, "crash", {}, 1), "InternalServerError", 1)
            assert "must not see" not in json.dumps(error)
            error = failure(
                await call(client, "group_of_one", {"which": "other"}, 2), "InternalServerError", 2
            )
            assert "hidden" not in json.dumps(error)
            await still_open(client)


async def test_unexpected_exception_shown_in_debug(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory({**config, "WEB_SERVER_DEBUG": True}, Calls)
        async with connected_client(runner, kind) as client:
            error = failure(await call(client, "crash", {}, 1), "ValueError", 1)
            assert error["value"] == "a detail the client must not see"
            assert error["exc_args"] == ["a detail the client must not see"]
            await still_open(client)


async def test_own_and_expected_exceptions_as_themselves(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            error = failure(await call(client, "own_error", {}, 1), "NotFound", 1)
            assert error["value"] == "no such order"
            assert error["exc_args"] == ["no such order"]

            error = failure(await call(client, "lookup_socket", {}, 2), "ConnectionNotFound", 2)
            assert error["value"] == "no WebSocket with socket id 'x' is connected"

            reply = await call(client, "expected", {"which": "missing"}, 3)
            error = failure(reply, "MissingThing", 3)
            assert error["value"] == str(MissingThing("thing 7 is missing", 7))
            assert error["exc_args"] == ["thing 7 is missing", 7]

            error = failure(await call(client, "expected", {"which": "key"}, 4), "KeyError", 4)
            assert error["value"] == str(KeyError("the key"))
            assert error["exc_args"] == ["the key"]
            await still_open(client)


async def test_exception_group_of_one_maps_as_its_exception(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            error = failure(await call(client, "group_of_one", {"which": "own"}, 1), "Conflict", 1)
            assert error["value"] == "already taken"
            assert error["exc_args"] == ["already taken"]
            error = failure(await call(client, "expected_in_group", {}, 2), "MissingThing", 2)
            assert error["value"] == "in a group"
            await still_open(client)


async def test_calls_on_one_socket_run_concurrently(runner_factory, config, kind):
    gate = trio.Event()
    entered = trio.Event()

    class Gated:
        name = "gated"

        @rpc
        async def slow(self, socket_id):
            entered.set()
            await gate.wait()
            return "slow"

        @rpc
        async def quick(self, socket_id, n):
            return n

    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Gated)
        async with connected_client(runner, kind) as client:
            await client.send(json.dumps({"method": "slow", "correlation_id": "slow"}))
            await entered.wait()
            for n in range(5):
                await client.send(
                    json.dumps({"method": "quick", "data": {"n": n}, "correlation_id": n})
                )
                assert await recv_json(client) == success(n, n)
            assert not gate.is_set()
            gate.set()
            assert await recv_json(client) == success("slow", "slow")


async def test_blocking_methods_run_in_threads(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            reply = await call(client, "blocking", {"value": [1, "two"]}, "b")
            assert reply == success({"value": [1, "two"], "main_thread": False}, "b")
            failure(await call(client, "blocking", {}, "b2"), "IncorrectSignature", "b2")


def worker_limited(held: trio.Event, release: trio.Event) -> type:
    class Limited:
        name = "limited"

        @http("GET", "/hold", timeout=15)
        async def hold(self, request):
            held.set()
            await release.wait()
            return "released"

        @rpc(timeout=0.5)
        async def quick(self, socket_id):
            return "quick"

        @rpc(timeout=15)
        async def patient(self, socket_id):
            return "patient"

    return Limited


async def test_max_workers_counts_http_and_websocket_together(
    runner_factory, config, http_client, kind
):
    held = trio.Event()
    release = trio.Event()
    config = {**config, "WEB_SERVER_MAX_WORKERS": 1}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, worker_limited(held, release))
        async with (
            http_client(runner) as http_session,
            connect(kind, ws_url(runner)) as client,
            trio.open_nursery() as nursery,
        ):
            await connected(client)
            responses: list[httpx.Response] = []

            async def get_hold() -> None:
                responses.append(await http_session.get("/hold"))

            nursery.start_soon(get_hold)
            await held.wait()  # the HTTP request holds the only worker
            # a call that cannot get the slot before its deadline
            start = trio.current_time()
            error = failure(await call(client, "quick", None, 1), "ServiceUnavailable", 1)
            assert 0.5 <= trio.current_time() - start < 5
            assert error["value"]
            # a call that waits for the slot, and gets it when the HTTP request ends
            await client.send(json.dumps({"method": "patient", "correlation_id": 2}))
            await client.nothing_for(0.3)  # no answer while the HTTP request holds the worker
            release.set()
            assert await recv_json(client) == success("patient", 2)
        assert responses[0].status_code == 200
        assert responses[0].text == "released"


async def test_max_workers_websocket_holds_http(runner_factory, config, http_client, kind):
    """The other way round: a WebSocket call holding the only worker makes HTTP wait."""
    entered = trio.Event()
    gate = trio.Event()

    class Limited:
        name = "limited"

        @http("GET", "/quick", timeout=0.5)
        async def quick(self, request):
            return "quick"

        @rpc(timeout=15)
        async def hold(self, socket_id):
            entered.set()
            await gate.wait()
            return "held"

    config = {**config, "WEB_SERVER_MAX_WORKERS": 1}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Limited)
        async with http_client(runner) as http_session, connect(kind, ws_url(runner)) as client:
            await connected(client)
            await client.send(json.dumps({"method": "hold", "correlation_id": 1}))
            await entered.wait()
            response = await http_session.get("/quick")
            assert response.status_code == 503
            assert response.json()["error"] == "ServiceUnavailable"
            gate.set()
            assert await recv_json(client) == success("held", 1)
            assert (await http_session.get("/quick")).text == "quick"


async def test_socket_stays_open_after_every_error(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, Calls)
        async with connected_client(runner, kind) as client:
            bad = [
                "garbage",
                json.dumps({"method": "nope"}),
                json.dumps({"method": "add", "data": {"a": 1}}),
                json.dumps({"method": "add", "data": [1]}),
                json.dumps({"method": "crash"}),
                json.dumps({"method": "own_error"}),
                json.dumps({"method": "unencodable", "data": {"what": "set"}}),
                json.dumps({"method": "too_slow"}),
                json.dumps({"method": "expected", "data": {"which": "key"}}),
            ]
            for frame in bad:
                await client.send(frame)
                reply = await recv_json(client)
                assert isinstance(reply, dict)
                assert reply["success"] is False, (frame, reply)
            await still_open(client)


async def test_same_method_name_in_two_services_is_a_configuration_error(runner_factory, config):
    class First:
        name = "first"

        @rpc
        async def shared_name(self, socket_id):
            return 1

    class Second:
        name = "second"

        @rpc
        async def shared_name(self, socket_id):
            return 2

    with trio.fail_after(TEST_TIMEOUT):
        with pytest.raises(ConfigurationError, match="shared_name"):
            await runner_factory(config, First, Second)


# -- connect and disconnect hooks ---------------------------------------------------------------


def hooked(seen: list[dict[str, object]], gone: list[dict[str, object]], done: trio.Event) -> type:
    class Hooked:
        name = "hooked"
        hub = WebSocketHubProvider()

        @on_connect
        async def authenticate(self, socket_id, request):
            seen.append(
                {
                    "socket_id": socket_id,
                    "token": request.headers.get("X-Token"),
                    "room": request.args.get("room"),
                    "args": request.args.to_dict(flat=False),
                    "path": request.path,
                }
            )
            if request.headers.get("X-Token") != "secret":
                raise UnauthorizedError("a token is required")

        @on_disconnect
        async def left(self, socket_id):
            try:
                self.hub.unicast(socket_id, "bye", None)
            except ConnectionNotFound:
                unicast = "ConnectionNotFound"
            else:
                unicast = "delivered"
            gone.append(
                {
                    "socket_id": socket_id,
                    "subscriptions": self.hub.get_subscriptions(socket_id),
                    "unicast": unicast,
                }
            )
            done.set()

        @rpc
        async def join(self, socket_id, room):
            self.hub.subscribe(socket_id, room)
            return self.hub.get_subscriptions(socket_id)

    return Hooked


async def test_on_connect_sees_headers_and_query_string(runner_factory, config, kind):
    seen: list[dict[str, object]] = []
    gone: list[dict[str, object]] = []
    done = trio.Event()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hooked(seen, gone, done))
        url = ws_url(runner) + "?room=lobby&tag=a&tag=b"
        async with connect(kind, url, {"X-Token": "secret"}) as client:
            socket_id = await connected(client)
            assert await call(client, "join", {"room": "lobby"}, 1) == success(["lobby"], 1)
        assert seen == [
            {
                "socket_id": socket_id,
                "token": "secret",
                "room": "lobby",
                "args": {"room": ["lobby"], "tag": ["a", "b"]},
                "path": "/ws",
            }
        ]
        # on_disconnect runs once the socket is gone from the hub
        await done.wait()
        assert gone == [
            {"socket_id": socket_id, "subscriptions": [], "unicast": "ConnectionNotFound"}
        ]


async def test_on_connect_refuses_with_401_and_json_body(runner_factory, config, kind):
    seen: list[dict[str, object]] = []
    gone: list[dict[str, object]] = []
    done = trio.Event()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hooked(seen, gone, done))
        for headers in (None, {"X-Token": "wrong"}):
            with pytest.raises(Rejected) as refused:
                async with connect(kind, ws_url(runner), headers):
                    raise AssertionError("the handshake was accepted")
            assert refused.value.status == 401
            assert refused.value.content_type == "application/json"
            assert json.loads(refused.value.body) == {
                "error": "Unauthorized",
                "message": "a token is required",
            }
        assert [s["token"] for s in seen] == [None, "wrong"]
        # a refused socket never connected: no disconnect hook, and the next one is served
        async with connect(kind, ws_url(runner), {"X-Token": "secret"}) as client:
            await connected(client)
        await done.wait()
        assert len(gone) == 1


async def test_on_disconnect_after_an_abrupt_close(runner_factory, config):
    """Abrupt TCP close (no close frame): the hook still runs, the hub forgets the socket."""
    seen: list[dict[str, object]] = []
    gone: list[dict[str, object]] = []
    done = trio.Event()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hooked(seen, gone, done))
        client = await SansIOClient.open(ws_url(runner), {"X-Token": "secret"})
        socket_id = await connected(client)
        assert await call(client, "join", {"room": "r"}, 1) == success(["r"], 1)
        await client.aclose()  # no close handshake at all
        await done.wait()
        assert gone == [
            {"socket_id": socket_id, "subscriptions": [], "unicast": "ConnectionNotFound"}
        ]
