"""The cluster-wide hub (SPEC §6): several nodes (runners) on one real Redis.

Broadcasts reach every node's subscribers in order; unicast, subscribe and unsubscribe
reach sockets of other nodes; ``get_subscriptions`` and ``ConnectionNotFound`` hold
cluster-wide once the view has caught up; a node that stops is forgotten at once, one
that is killed within the (shortened) snapshot lifetime; a Redis outage keeps local
delivery going and ends with ``hub_gap`` events; every key has a lifetime.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import coredis
import pytest
import trio

from triosvc.exceptions import ConfigurationError, ConnectionNotFound
from triosvc.web.websocket import WebSocketClient, open_websocket_client
from triosvc.ws.cluster import GAP_EVENT, ClusterStatistics, open_cluster_link
from triosvc.ws.hub import WebSocketHub

from ..clients import hub_of
from .service import Node

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosvc.runners import ServiceRunner
    from triosvc.ws.redis_cluster import ClusterOptions

    from ...rpc.redis.server import RedisServer

    StartNode = Callable[..., Awaitable[ServiceRunner]]

#: Real seconds any test here may take.
TEST_TIMEOUT = 15


async def eventually(condition: Callable[[], bool], what: str, within: float = 3.0) -> float:
    """Poll ``condition`` until it holds (Redis is a real clock); the seconds it took.

    A bounded poll, not an event: what changes is another node's view, fed by Redis.
    """
    began = trio.current_time()
    with trio.move_on_after(within):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)
        return trio.current_time() - began
    raise AssertionError(f"not within {within}s: {what}")


def cluster(hub: WebSocketHub) -> ClusterStatistics:
    stats = hub.statistics().cluster
    assert stats is not None
    return stats


def nothing_queued(client: WebSocketClient) -> None:
    try:
        event = client.events.receive_nowait()
    except trio.WouldBlock:
        return
    raise AssertionError(f"an unexpected event: {event}")


async def hub_keys(url: str) -> dict[str, int]:
    """Every key of the hub, with its milliseconds left to live (-1: none)."""
    found = {}
    async with coredis.Redis.from_url(url, decode_responses=True) as redis:
        async for key in redis.scan_iter(match="triosvc:hub:*"):
            ttl = await redis.pttl(key)
            if ttl != -2:  # gone meanwhile
                found[key] = ttl
    return found


@pytest.fixture
def start_node(runner_factory, redis_url: str) -> StartNode:
    async def start(url: str = redis_url) -> ServiceRunner:
        config = {"BROKER_URL": url, "WEB_SERVER_ADDRESS": "127.0.0.1:0"}
        return await runner_factory(config, Node)

    return start


async def test_a_broadcast_from_an_http_handler_reaches_every_node_in_order(
    start_node: StartNode, http_client
):
    with trio.fail_after(TEST_TIMEOUT):
        a, b = await start_node(), await start_node()
        async with AsyncExitStack() as stack:
            members = [
                await stack.enter_async_context(open_websocket_client(node.url))
                for node in (a, b, b, a)
            ]
            bystander = await stack.enter_async_context(open_websocket_client(b.url))
            for member in members:
                assert await member.rpc("join", channels=["room"]) == ["room"]
            async with http_client(a) as http:
                response = await http.post("/broadcast/room/50")
                assert response.json() == {"sent": 50}
            for member in members:
                assert [await member.wait_for_event("t") for _ in range(50)] == list(range(50))
            # The bystander got none of them: a marker sent after them is its next event.
            hub_a = hub_of(a)
            await eventually(lambda: cluster(hub_a).remote_sockets == 3, "A sees B's three sockets")
            hub_a.unicast(bystander.socket_id, "marker", None)
            await bystander.wait_for_event("marker")
            nothing_queued(bystander)
            stats = cluster(hub_a)
            assert stats.nodes == 2
            assert stats.published >= 50
            assert stats.dropped == 0
            assert cluster(hub_of(b)).received >= 50


async def test_unicast_subscribe_and_unsubscribe_reach_a_socket_on_another_node(
    start_node: StartNode, http_client
):
    with trio.fail_after(TEST_TIMEOUT):
        a, b = await start_node(), await start_node()
        hub_a, hub_b = hub_of(a), hub_of(b)
        async with open_websocket_client(b.url) as remote:
            socket_id = remote.socket_id
            await remote.rpc("join", channels=["lobby"])
            took = await eventually(
                lambda: hub_a.get_subscriptions(socket_id) == ["lobby"],
                "A's view has B's socket and its subscription",
            )
            assert took < 1  # a change is sent at once, not at the next refresh

            hub_a.unicast(socket_id, "hello", {"from": "a"})
            assert await remote.wait_for_event("hello") == {"from": "a"}

            hub_a.subscribe(socket_id, "news")
            assert hub_a.get_subscriptions(socket_id) == ["lobby", "news"]  # at once
            hub_a.broadcast("news", "n", 1)  # sent after the subscription: it arrives
            assert await remote.wait_for_event("n") == 1
            assert hub_b.get_subscriptions(socket_id) == ["lobby", "news"]

            hub_a.unsubscribe(socket_id, "news")
            hub_a.broadcast("news", "n", 2)
            hub_a.unicast(socket_id, "marker", None)
            await remote.wait_for_event("marker")
            nothing_queued(remote)
            assert hub_b.get_subscriptions(socket_id) == ["lobby"]
            await eventually(lambda: hub_a.get_subscriptions(socket_id) == ["lobby"], "A sees it")

            # The same from a blocking HTTP handler of A (a worker thread).
            async with http_client(a) as http:
                response = await http.post(
                    "/hub/unicast", json={"socket_id": socket_id, "event": "e", "data": [1]}
                )
                assert response.json() == {"result": None}
                assert await remote.wait_for_event("e") == [1]
                response = await http.post("/hub/get_subscriptions", json={"socket_id": socket_id})
                assert response.json() == {"result": ["lobby"]}
                response = await http.post(
                    "/hub/subscribe", json={"socket_id": "nobody", "channel": "x"}
                )
                assert response.json()["error"] == "ConnectionNotFound"

        # The socket has gone: every node says so.
        await eventually(
            lambda: cluster(hub_a).remote_sockets == 0, "A forgets the socket that left"
        )
        for hub in (hub_a, hub_b):
            with pytest.raises(ConnectionNotFound):
                hub.unicast(socket_id, "late", None)
            with pytest.raises(ConnectionNotFound):
                hub.subscribe(socket_id, "late")
            hub.unsubscribe(socket_id, "late")
            assert hub.get_subscriptions(socket_id) == []


async def test_a_node_that_stops_is_forgotten_at_once(start_node: StartNode, redis_url: str):
    with trio.fail_after(TEST_TIMEOUT):
        a, b = await start_node(), await start_node()
        hub_a = hub_of(a)
        b_id = cluster(hub_of(b)).node_id
        async with open_websocket_client(b.url) as remote:
            await remote.rpc("join", channels=["lobby"])
            await eventually(lambda: cluster(hub_a).remote_sockets == 1, "A sees B's socket")
            await b.stop()  # closes the socket (1001), then says goodbye
            took = await eventually(lambda: cluster(hub_a).nodes == 1, "A forgets B")
        assert took < 1  # its goodbye, not its snapshot's 2 s lifetime
        assert cluster(hub_a).remote_sockets == 0
        assert f"triosvc:hub:nodes:{b_id}" not in await hub_keys(redis_url)


async def test_a_node_killed_outright_is_forgotten_within_the_snapshot_lifetime(
    start_node: StartNode, redis_url: str, fast_cluster: ClusterOptions
):
    child = Path(__file__).with_name("node.py")
    with trio.fail_after(TEST_TIMEOUT):
        a = await start_node()
        hub_a = hub_of(a)
        process = await trio.lowlevel.open_process(
            [sys.executable, str(child), redis_url], stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the child node exited before it was ready"
                line += chunk
            word, url = line.decode().split()
            assert word == "ready"
            async with open_websocket_client(url) as doomed:
                socket_id = doomed.socket_id
                await doomed.rpc("join", channels=["lobby"])
                await eventually(
                    lambda: hub_a.get_subscriptions(socket_id) == ["lobby"], "A sees the child"
                )
                process.kill()
                await process.wait()
                killed = trio.current_time()
                await eventually(
                    lambda: cluster(hub_a).nodes == 1,
                    "A forgets the killed node",
                    within=fast_cluster.snapshot_ttl + 3 * fast_cluster.refresh_interval + 1,
                )
                elapsed = trio.current_time() - killed
            assert elapsed > fast_cluster.refresh_interval  # its snapshot had to expire
            with pytest.raises(ConnectionNotFound):
                hub_a.unicast(socket_id, "late", None)
            keys = await hub_keys(redis_url)
            assert keys.keys() == {
                "triosvc:hub:nodes",
                f"triosvc:hub:nodes:{cluster(hub_a).node_id}",
            }
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_a_redis_outage_keeps_local_delivery_and_ends_with_a_gap_event(
    start_node: StartNode, own_server: RedisServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="triosvc.ws.cluster")
    with trio.fail_after(TEST_TIMEOUT):
        a, b = await start_node(own_server.url), await start_node(own_server.url)
        hub_a = hub_of(a)
        async with (
            open_websocket_client(a.url) as near,
            open_websocket_client(b.url) as far,
        ):
            for client in (near, far):
                await client.rpc("join", channels=["room"])
            hub_a.broadcast("room", "t", "before")
            for client in (near, far):
                assert await client.wait_for_event("t") == "before"

            await own_server.stop_async()
            hub_a.broadcast("room", "t", "during")
            assert await near.wait_for_event("t") == "during"  # local delivery goes on
            await eventually(lambda: not cluster(hub_a).connected, "A notices the outage")
            await eventually(lambda: cluster(hub_a).dropped >= 1, "the message is dropped")

            await own_server.start_async()
            for client in (near, far):
                gap = await client.wait_for_event(GAP_EVENT)
                assert gap["channels"] == ["room"]
                assert gap["duration"] > 0

            # Cross-node delivery works again, once A's publisher has recovered too.
            async def probe() -> None:
                for i in range(100):
                    hub_a.broadcast("room", "probe", i)
                    await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(probe)
                await far.wait_for_event("probe")
                nursery.cancel_scope.cancel()
            for i in range(20):
                hub_a.broadcast("room", "t", i)
            for client in (near, far):
                assert [await client.wait_for_event("t") for _ in range(20)] == list(range(20))
            assert cluster(hub_a).connected
    lost = [r for r in caplog.records if "lost Redis" in r.getMessage()]
    back = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert 2 <= len(lost) <= 4, [r.getMessage() for r in lost]  # once per node, or so
    assert len(back) == len(lost)


async def test_a_subscription_that_redis_drops_ends_with_a_gap_event(
    start_node: StartNode, redis_server: RedisServer
):
    """Redis pub/sub forgets what is published while a subscriber reconnects: its sockets are
    told, and the next broadcast arrives (the publisher never stopped)."""
    with trio.fail_after(TEST_TIMEOUT):
        a, b = await start_node(), await start_node()
        hub_a = hub_of(a)
        async with (
            open_websocket_client(a.url) as near,
            open_websocket_client(b.url) as far,
            open_websocket_client(b.url) as loner,
        ):
            for client in (near, far):
                await client.rpc("join", channels=["room", "other"])
            assert redis_server.command("CLIENT", "KILL", "TYPE", "pubsub") == "2"
            for client in (near, far, loner):
                gap = await client.wait_for_event(GAP_EVENT)
                assert gap["channels"] == ([] if client is loner else ["other", "room"])
            hub_a.broadcast("room", "t", 1)
            for client in (near, far):
                assert await client.wait_for_event("t") == 1
            assert cluster(hub_a).gaps == 1
            assert cluster(hub_of(b)).gaps == 2
            assert cluster(hub_a).dropped == 0


async def test_a_full_queue_drops_messages_for_other_nodes_and_says_so(
    start_node: StartNode,
    fast_cluster: ClusterOptions,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    from triosvc.ws import redis_cluster

    monkeypatch.setattr(redis_cluster, "DEFAULTS", attrs.evolve(fast_cluster, queue_size=8))
    caplog.set_level(logging.WARNING, logger="triosvc.ws.cluster")
    with trio.fail_after(TEST_TIMEOUT):
        a, b = await start_node(), await start_node()
        hub_a = hub_of(a)
        async with (
            open_websocket_client(a.url) as near,
            open_websocket_client(b.url) as far,
            open_websocket_client(b.url) as elsewhere,
        ):
            await near.rpc("join", channels=["room"])
            await far.rpc("join", channels=["room", "other"])
            await elsewhere.rpc("join", channels=["other"])
            for i in range(200):  # in one go: the publisher cannot take any meanwhile
                hub_a.broadcast("room", "t", i)
            assert [await near.wait_for_event("t") for _ in range(200)] == list(range(200))
            gap = await far.wait_for_event(GAP_EVENT)
            assert gap["channels"] == ["room"]  # the channel concerned, not all of its own
            received = []
            while True:
                try:
                    event = far.events.receive_nowait()
                except trio.WouldBlock:
                    break
                received.append(event.data)
            assert received == list(range(len(received)))  # the first ones, in order
            assert len(received) <= 8 + 1  # the queue, and the one the publisher took
            await eventually(
                lambda: hub_a.get_subscriptions(elsewhere.socket_id) == ["other"], "A sees it"
            )
            hub_a.unicast(elsewhere.socket_id, "marker", None)  # a socket not concerned
            await elsewhere.wait_for_event("marker")
            nothing_queued(elsewhere)
            stats = cluster(hub_a)
            assert stats.dropped == 200 - len(received)
    [warning] = [r for r in caplog.records if "queue to Redis is full" in r.getMessage()]
    assert "dropped 1 message" in warning.getMessage()  # the first; later ones are counted


async def test_a_storm_of_sockets_leaves_no_key_without_a_lifetime(
    start_node: StartNode, redis_url: str
):
    with trio.fail_after(TEST_TIMEOUT):
        a, b = await start_node(), await start_node()
        hub_a, hub_b = hub_of(a), hub_of(b)

        async def visit(url: str, channel: str) -> None:
            async with open_websocket_client(url) as client:
                await client.rpc("join", channels=[channel, "all"])

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(visit, (a, b)[i % 2].url, f"c{i}")
        keys = await hub_keys(redis_url)
        assert len(keys) == 3  # the set of nodes and one snapshot per node
        assert all(ttl > 0 for ttl in keys.values()), keys
        for hub in (hub_a, hub_b):
            await eventually(lambda hub=hub: cluster(hub).remote_sockets == 0, "all gone")
            assert hub.statistics().sockets == 0
        await a.stop()
        await b.stop()
        assert await hub_keys(redis_url) == {}


async def test_a_memory_broker_has_no_cluster_link(runner_factory):
    runner = await runner_factory({"WEB_SERVER_ADDRESS": "127.0.0.1:0"}, Node)
    hub = hub_of(runner)
    assert hub.cluster is None
    assert hub.statistics().cluster is None
    with pytest.raises(ConnectionNotFound):
        hub.unicast("nobody", "e", None)


async def test_a_redis_url_without_coredis_says_which_extra_to_install(monkeypatch) -> None:
    import triosvc.ws

    monkeypatch.delitem(sys.modules, "triosvc.ws.redis_cluster", raising=False)
    monkeypatch.delattr(triosvc.ws, "redis_cluster", raising=False)
    monkeypatch.setitem(sys.modules, "coredis", None)
    hub = WebSocketHub()
    with pytest.raises(ConfigurationError, match=r"needs coredis.*pip install 'triosvc\[redis\]'"):
        async with open_cluster_link("redis://localhost:6379/0", hub):
            pass
    assert hub.cluster is None
