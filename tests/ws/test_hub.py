"""The hub over real sockets (SPEC §5.2): subscriptions, broadcast, unicast, and cleanup.

Hub calls reach the hub the way applications make them: from ``@rpc`` methods (async and
blocking) and from ``@http`` handlers (async and blocking), through ``WebSocketHubProvider``.
Errors such as ConnectionNotFound are checked as the WebSocket client sees them. To show that
a frame does *not* reach a socket, a marker is unicast to it afterwards: each socket's outbox
is first in, first out, so the marker must be the next frame it reads.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from triosvc.exceptions import ConnectionNotFound
from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHub, WebSocketHubProvider, on_disconnect, rpc

from .clients import (
    CLIENTS,
    TEST_TIMEOUT,
    Disconnects,
    SansIOClient,
    call,
    connect,
    connected,
    connected_client,
    connected_clients,
    endpoint_of,
    event,
    failure,
    hub_of,
    recv_json,
    still_open,
    success,
    ws_url,
)

# -- services ------------------------------------------------------------------------------


HUB_OPERATIONS = ("subscribe", "unsubscribe", "broadcast", "unicast", "get_subscriptions")


def run_hub(hub: WebSocketHub, op: str, args: dict[str, object]) -> object:
    assert op in HUB_OPERATIONS
    return getattr(hub, op)(**args)


def http_hub(hub: WebSocketHub, op: str, args: dict[str, object]) -> dict[str, object]:
    try:
        return {"result": run_hub(hub, op, args)}
    except ConnectionNotFound as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


def hub_service(
    disconnects: Disconnects | None = None,
    gate: trio.Event | None = None,
    hanging: Disconnects | None = None,
) -> type:
    class Hubbed:
        name = "hubbed"
        hub = WebSocketHubProvider()

        @rpc
        async def hub_op(self, socket_id, op, args):
            return run_hub(self.hub, op, args)

        @rpc
        def blocking_hub_op(self, socket_id, op, args):
            return run_hub(self.hub, op, args)

        @rpc
        async def join(self, socket_id, channels):
            for channel in channels:
                self.hub.subscribe(socket_id, channel)
            return self.hub.get_subscriptions(socket_id)

        @rpc
        async def broadcast_many(self, socket_id, channel, count, tag="t"):
            for i in range(count):
                self.hub.broadcast(channel, tag, i)
            return count

        @rpc
        def blocking_broadcast_many(self, socket_id, channel, count, tag="t"):
            for i in range(count):
                self.hub.broadcast(channel, tag, i)
            return count

        @rpc(timeout=15)
        async def hang(self, socket_id):
            assert gate is not None
            if hanging is not None:
                hanging.add(socket_id)
            await gate.wait()

        @rpc
        async def echo(self, socket_id, value=None):
            return value

        @rpc
        async def bad_event(self, socket_id, target):
            try:
                self.hub.unicast(target, "bad", {"a set": {1, 2}})
            except TypeError:
                pass
            else:
                raise AssertionError("unicast accepted a value JSON cannot hold")
            self.hub.broadcast("room", "bad", float("nan"))

        @http("POST", "/hub/<op>")
        async def http_hub_op(self, request, op):
            return http_hub(self.hub, op, request.get_json())

        @http("POST", "/blocking-hub/<op>")
        def blocking_http_hub_op(self, request, op):
            return http_hub(self.hub, op, request.get_json())

        @http("POST", "/broadcast-many/<channel>")
        async def http_broadcast_many(self, request, channel):
            body = request.get_json()
            for i in range(body["count"]):
                self.hub.broadcast(channel, body["tag"], i)
            return {"result": body["count"]}

        @http("POST", "/blocking-broadcast-many/<channel>")
        def blocking_http_broadcast_many(self, request, channel):
            body = request.get_json()
            for i in range(body["count"]):
                self.hub.broadcast(channel, body["tag"], i)
            return {"result": body["count"]}

        @on_disconnect
        async def left(self, socket_id):
            if disconnects is not None:
                disconnects.add(socket_id)

    return Hubbed


async def marker_next(client: object, hub: WebSocketHub, socket_id: str, mark: object) -> None:
    """Unicast a marker: it must be the next frame the socket reads (nothing came before)."""
    hub.unicast(socket_id, "marker", mark)
    assert await recv_json(client) == event("marker", mark)  # type: ignore[arg-type]


async def hub_call(client: object, op: str, correlation_id: object = None, **args: object):
    """Call the hub through the async ``hub_op`` rpc method; the reply frame."""
    return await call(client, "hub_op", {"op": op, "args": args}, correlation_id)  # type: ignore[arg-type]


# -- subscribe, unsubscribe, get_subscriptions -------------------------------------------------


async def test_subscribe_is_idempotent_and_subscriptions_sorted(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service())
        hub = hub_of(runner)
        async with connect(kind, ws_url(runner)) as client:
            me = await connected(client)
            for channel in ["beta", "alpha", "gamma", "alpha", "beta", "alpha"]:
                assert await hub_call(client, "subscribe", 1, socket_id=me, channel=channel) == (
                    success(None, 1)
                )
            reply = await hub_call(client, "get_subscriptions", 2, socket_id=me)
            assert reply == success(["alpha", "beta", "gamma"], 2)
            stats = hub.statistics()
            assert (stats.sockets, stats.channels, stats.subscriptions) == (1, 3, 3)
            # subscribed twice, delivered once
            hub.broadcast("alpha", "once", [1])
            assert await recv_json(client) == event("once", [1])
            await marker_next(client, hub, me, "after once")
            # channel names are any strings; sorting is by code point
            for channel in ["Zed", "", "é", "10", "9"]:
                await hub_call(client, "subscribe", None, socket_id=me, channel=channel)
            reply = await hub_call(client, "get_subscriptions", 3, socket_id=me)
            assert reply == success(
                sorted(["alpha", "beta", "gamma", "Zed", "", "é", "10", "9"]), 3
            )


async def test_unsubscribe_and_its_no_op_cases(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service())
        hub = hub_of(runner)
        async with connect(kind, ws_url(runner)) as client:
            me = await connected(client)
            await call(client, "join", {"channels": ["a", "b"]})
            # not subscribed to that channel, a channel nobody has, an unknown socket: no-ops
            assert await hub_call(client, "unsubscribe", 1, socket_id=me, channel="zzz") == (
                success(None, 1)
            )
            assert await hub_call(client, "unsubscribe", 2, socket_id="nobody", channel="a") == (
                success(None, 2)
            )
            assert hub.statistics().subscriptions == 2
            assert await hub_call(client, "unsubscribe", 3, socket_id=me, channel="a") == (
                success(None, 3)
            )
            # twice is fine
            assert await hub_call(client, "unsubscribe", 4, socket_id=me, channel="a") == (
                success(None, 4)
            )
            assert await hub_call(client, "get_subscriptions", 5, socket_id=me) == success(["b"], 5)
            stats = hub.statistics()
            assert (stats.channels, stats.subscriptions) == (1, 1)  # "a" is gone with its last one
            hub.broadcast("a", "to a", None)
            hub.broadcast("b", "to b", None)
            assert await recv_json(client) == event("to b", None)


async def test_unknown_socket(runner_factory, config, kind):
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service(disconnects))
        async with connected_client(runner, kind) as client:
            for op, args in [
                ("subscribe", {"socket_id": "no-such-socket", "channel": "a"}),
                ("unicast", {"socket_id": "no-such-socket", "event": "e", "data": 1}),
            ]:
                for method in ("hub_op", "blocking_hub_op"):
                    reply = await call(client, method, {"op": op, "args": args}, [op, method])
                    error = failure(reply, "ConnectionNotFound", [op, method])
                    assert "no-such-socket" in error["value"]
            reply = await hub_call(client, "get_subscriptions", "g", socket_id="no-such-socket")
            assert reply == success([], "g")
            # a socket that was connected, and is no more
            async with connect(kind, ws_url(runner)) as other:
                gone = await connected(other)
            await disconnects.wait(1)
            reply = await hub_call(client, "unicast", "u", socket_id=gone, event="e", data=None)
            failure(reply, "ConnectionNotFound", "u")
            await still_open(client)


# -- broadcast and unicast ----------------------------------------------------------------------


async def test_broadcast_reaches_exactly_the_subscribers(runner_factory, config):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service())
        hub = hub_of(runner)
        url = ws_url(runner)
        async with (
            connect("trio-websocket", url) as a,
            connect("websockets", url) as b,
            connect("websockets-sync", url) as c,
            connect("trio-websocket", url) as d,
        ):
            ids = {}
            for name, client, channels in [
                ("a", a, ["news", "sport"]),
                ("b", b, ["news"]),
                ("c", c, ["weather"]),
                ("d", d, []),
            ]:
                ids[name] = await connected(client)
                assert await call(client, "join", {"channels": channels}) == success(
                    sorted(channels), None
                )
            payload = {"headline": "é ✓", "n": [1, 2.5, None, True]}
            reply = await call(
                d,
                "hub_op",
                {"op": "broadcast", "args": {"channel": "news", "event": "flash", "data": payload}},
                "d",
            )
            assert reply == success(None, "d")
            hub.broadcast("sport", "goal", 1)
            hub.broadcast("nobody-listens", "void", 1)
            assert await recv_json(a) == event("flash", payload)
            assert await recv_json(a) == event("goal", 1)
            assert await recv_json(b) == event("flash", payload)
            for name, client in [("a", a), ("b", b), ("c", c), ("d", d)]:
                await marker_next(client, hub, ids[name], name)


async def test_unicast(runner_factory, config, kind):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service())
        hub = hub_of(runner)
        url = ws_url(runner)
        async with connect(kind, url) as sender, connect(kind, url) as target:
            sender_id = await connected(sender)
            target_id = await connected(target)
            reply = await hub_call(
                sender, "unicast", "u", socket_id=target_id, event="dm", data={"text": "hi"}
            )
            assert reply == success(None, "u")
            assert await recv_json(target) == event("dm", {"text": "hi"})
            await marker_next(sender, hub, sender_id, "nothing before this")
            await marker_next(target, hub, target_id, "exactly one")


async def test_unencodable_event_is_the_callers_error(runner_factory, config, kind):
    """Encoded once, before delivery: a value JSON cannot hold reaches nobody."""
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service())
        hub = hub_of(runner)
        url = ws_url(runner)
        async with connect(kind, url) as sender, connect(kind, url) as target:
            await connected(sender)
            target_id = await connected(target)
            await call(target, "join", {"channels": ["room"]})
            reply = await call(sender, "bad_event", {"target": target_id}, "bad")
            failure(reply, "InternalServerError", "bad")
            await marker_next(target, hub, target_id, "nothing reached it")
            await still_open(sender)


@pytest.mark.parametrize("via", ["rpc", "blocking rpc"])
async def test_broadcast_order_500(runner_factory, config, via):
    """500 broadcasts made by one call: every subscriber sees all of them, in order."""
    count = 500
    config = {**config, "WEBSOCKET_HUB_CONFIG": {"send_buffer": 1024}}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service())
        hub = hub_of(runner)
        url = ws_url(runner)
        async with connected_clients(url) as (a, b, c):
            for client in (a, b, c):
                await call(client, "join", {"channels": ["ticks"]})
            method = "broadcast_many" if via == "rpc" else "blocking_broadcast_many"
            await a.send(
                json.dumps(
                    {
                        "method": method,
                        "data": {"channel": "ticks", "count": count},
                        "correlation_id": "done",
                    }
                )
            )
            seen: dict[str, list[object]] = {}

            async def read(name: str, client: object, replies: int) -> None:
                frames = []
                while len(frames) < count + replies:
                    frames.append(await recv_json(client))  # type: ignore[arg-type]
                seen[name] = frames

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, "a", a, 1)
                nursery.start_soon(read, "b", b, 0)
                nursery.start_soon(read, "c", c, 0)
            expected = [event("t", i) for i in range(count)]
            assert seen["a"] == [*expected, success(count, "done")]
            assert seen["b"] == expected
            assert seen["c"] == expected
            assert hub.statistics().slow_consumers == 0


async def test_concurrent_broadcasters_every_subscriber_sees_one_order(
    runner_factory, config, http_client
):
    """Broadcasts from async and blocking rpc and HTTP workers at once: one order for all."""
    count = 100
    config = {**config, "WEBSOCKET_HUB_CONFIG": {"send_buffer": 1024}}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service())
        url = ws_url(runner)
        async with (
            http_client(runner) as session,
            connect("trio-websocket", url) as a,
            connect("websockets", url) as b,
            connect("trio-websocket", url) as caller,
        ):
            for client in (a, b, caller):
                await connected(client)
            for client in (a, b):
                await call(client, "join", {"channels": ["mix"]})
            seen: dict[str, list[object]] = {}
            total = 4 * count

            async def read(name: str, client: object) -> None:
                frames = []
                while len(frames) < total:
                    frames.append(await recv_json(client))  # type: ignore[arg-type]
                seen[name] = frames

            async def rpc_broadcasts(method: str, tag: str) -> None:
                async with connect("websockets", url) as own:
                    await connected(own)
                    reply = await call(own, method, {"channel": "mix", "count": count, "tag": tag})
                    assert reply == success(count, None)

            async def http_broadcasts(path: str, tag: str) -> None:
                response = await session.post(f"/{path}/mix", json={"count": count, "tag": tag})
                assert response.json() == {"result": count}

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, "a", a)
                nursery.start_soon(read, "b", b)
                nursery.start_soon(rpc_broadcasts, "broadcast_many", "rpc")
                nursery.start_soon(rpc_broadcasts, "blocking_broadcast_many", "blocking-rpc")
                nursery.start_soon(http_broadcasts, "broadcast-many", "http")
                nursery.start_soon(http_broadcasts, "blocking-broadcast-many", "blocking-http")
            assert seen["a"] == seen["b"]
            for tag in ("rpc", "blocking-rpc", "http", "blocking-http"):
                assert [f["data"] for f in seen["a"] if f["event"] == tag] == list(range(count))


# -- the hub from every kind of worker -----------------------------------------------------


@pytest.mark.parametrize("via", ["rpc", "blocking rpc", "http", "blocking http"])
async def test_hub_from_every_kind_of_worker(runner_factory, config, http_client, kind, via):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service())
        hub = hub_of(runner)
        url = ws_url(runner)
        async with (
            http_client(runner) as session,
            connect(kind, url) as caller,
            connect(kind, url) as target,
        ):
            await connected(caller)
            target_id = await connected(target)

            async def op(name: str, **args: object) -> dict[str, object]:
                """Run a hub method through ``via``: {"result": ...} or {"error": ...}."""
                if via.endswith("http"):
                    prefix = "blocking-hub" if via.startswith("blocking") else "hub"
                    response = await session.post(f"/{prefix}/{name}", json=args)
                    assert response.status_code == 200, response.text
                    answer = response.json()
                    answer.pop("message", None)
                    return answer
                method = "blocking_hub_op" if via.startswith("blocking") else "hub_op"
                reply = await call(caller, method, {"op": name, "args": args})
                if reply["success"]:
                    return {"result": reply["data"]}
                return {"error": reply["error"]["exc_type"]}  # type: ignore[index]

            assert await op("subscribe", socket_id=target_id, channel="room") == {"result": None}
            assert await op("subscribe", socket_id=target_id, channel="lobby") == {"result": None}
            assert await op("get_subscriptions", socket_id=target_id) == {
                "result": ["lobby", "room"]
            }
            assert await op("broadcast", channel="room", event="said", data={"via": via}) == {
                "result": None
            }
            assert await recv_json(target) == event("said", {"via": via})
            assert await op("unicast", socket_id=target_id, event="dm", data=[via]) == {
                "result": None
            }
            assert await recv_json(target) == event("dm", [via])
            assert await op("unsubscribe", socket_id=target_id, channel="room") == {"result": None}
            assert await op("broadcast", channel="room", event="unheard", data=None) == {
                "result": None
            }
            assert await op("get_subscriptions", socket_id=target_id) == {"result": ["lobby"]}
            assert await op("subscribe", socket_id="ghost", channel="room") == {
                "error": "ConnectionNotFound"
            }
            assert await op("unicast", socket_id="ghost", event="e", data=None) == {
                "error": "ConnectionNotFound"
            }
            assert await op("get_subscriptions", socket_id="ghost") == {"result": []}
            assert await op("unsubscribe", socket_id="ghost", channel="room") == {"result": None}
            await marker_next(target, hub, target_id, "nothing else")


# -- no trace -----------------------------------------------------------------------------------


async def test_disconnected_socket_leaves_no_trace(runner_factory, config, kind):
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service(disconnects))
        hub = hub_of(runner)
        url = ws_url(runner)
        async with connect(kind, url) as stays:
            stays_id = await connected(stays)
            await call(stays, "join", {"channels": ["shared"]})
            async with connect(kind, url) as leaves:
                leaves_id = await connected(leaves)
                await call(leaves, "join", {"channels": ["shared", "own-1", "own-2"]})
                # messages queued for it that it never reads
                for i in range(5):
                    hub.unicast(leaves_id, "pending", i)
                stats = hub.statistics()
                assert (stats.sockets, stats.channels, stats.subscriptions) == (2, 3, 4)
            await disconnects.wait(1)
            assert disconnects.gone == [leaves_id]
            stats = hub.statistics()
            assert (stats.sockets, stats.channels, stats.subscriptions) == (1, 1, 1)
            assert stats.queued_messages == 0
            assert hub.get_subscriptions(leaves_id) == []
            for op, args in [
                ("subscribe", {"socket_id": leaves_id, "channel": "shared"}),
                ("unicast", {"socket_id": leaves_id, "event": "e", "data": 1}),
            ]:
                failure(await call(stays, "hub_op", {"op": op, "args": args}), "ConnectionNotFound")
            # a broadcast to the channel it shared reaches the one that stayed, once
            hub.broadcast("shared", "still", 1)
            hub.broadcast("own-1", "nobody", 1)
            assert await recv_json(stays) == event("still", 1)
            await marker_next(stays, hub, stays_id, "end")


async def test_storm_of_connects_and_disconnects_leaves_the_hub_empty(runner_factory, config):
    """200 sockets come and go in batches: subscribed, mid-call, with queued messages,
    closed politely or dropped; the hub and the endpoint end at zero."""
    sockets = 200
    batch = 25
    disconnects = Disconnects()
    gate = trio.Event()  # never set: calls to hang are in flight when their sockets go
    hanging = Disconnects()  # the sockets whose call to hang has begun
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, hub_service(disconnects, gate, hanging))
        hub = hub_of(runner)
        endpoint = endpoint_of(runner)
        url = ws_url(runner)
        async with connect("trio-websocket", url) as watcher:
            watcher_id = await connected(watcher)
            await call(watcher, "join", {"channels": ["all"]})

            async def one(n: int) -> None:
                kind = CLIENTS[n % len(CLIENTS)]
                async with connect(kind, url) as client:
                    socket_id = await connected(client)
                    style = n % 4
                    if style >= 1:
                        reply = await call(
                            client, "join", {"channels": ["all", f"c{n % 7}", f"own{n}"]}
                        )
                        assert reply["success"] is True
                    if style == 2:  # leaves with a call in flight (begun: see the reliability
                        # tests for a call dropped before it begins)
                        await client.send(json.dumps({"method": "hang", "correlation_id": n}))
                        await hanging.wait_for(socket_id)
                    if style == 3:  # leaves with messages queued for it, unread
                        for i in range(3):
                            hub.unicast(socket_id, "unread", i)
                    if style == 0 and isinstance(client, SansIOClient):
                        await client.aclose()  # dropped: no close frame

            for start in range(0, sockets, batch):
                async with trio.open_nursery() as nursery:
                    for n in range(start, start + batch):
                        nursery.start_soon(one, n)
                hub.broadcast("all", "batch", start)
            await disconnects.wait(sockets)
            # the watcher saw every batch's broadcast, in order, and nothing else
            for start in range(0, sockets, batch):
                assert await recv_json(watcher) == event("batch", start)
            await marker_next(watcher, hub, watcher_id, "end")
            stats = hub.statistics()
            assert (stats.sockets, stats.channels, stats.subscriptions) == (1, 1, 1)
            assert stats.queued_messages == 0
            assert stats.slow_consumers == 0
            assert endpoint.statistics().calls_in_flight == 0
            assert endpoint.statistics().connections == 1
        await disconnects.wait(sockets + 1)
        stats = hub.statistics()
        assert (stats.sockets, stats.channels, stats.subscriptions, stats.queued_messages) == (
            0,
            0,
            0,
            0,
        )
        assert endpoint.statistics().connections == 0
        assert not gate.is_set()
