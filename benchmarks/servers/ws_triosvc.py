"""The WebSocket benchmark's service on triosvc, run through ``triosvc.runners.run_services``.

Run by ``benchmarks/websocket.py`` as
``python benchmarks/servers/ws_triosvc.py [send_buffer] [hypercorn|triosvc]`` (the engine,
``WEB_SERVER_ENGINE``: hypercorn's trio worker by default, or triosvc's own); prints
``PORT <n>`` once it accepts connections, then serves until killed. Three ``@rpc`` methods on
``/ws``: ``join(room)`` subscribes the socket to a room, ``echo(value)`` answers ``value``,
and ``fanout(room, count)`` broadcasts ``count`` events to the room through the hub (each
encoded once, for every subscriber), then answers ``count``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import trio
from _common import announce, argument
from ws_common import (
    EVENT,
    HEARTBEAT_INTERVAL,
    MAX_MESSAGE_SIZE,
    PATH,
    raise_nofile,
    send_buffer,
    tick,
)

from triosvc.runners import run_services
from triosvc.web.websocket import WebSocketHubProvider, rpc

ENGINES = ("hypercorn", "triosvc")


class WsBenchService:
    name = "wsbench"
    hub = WebSocketHubProvider()

    @rpc
    async def join(self, socket_id: str, room: str) -> None:
        self.hub.subscribe(socket_id, room)

    @rpc
    async def echo(self, socket_id: str, value: object) -> object:
        return value

    @rpc
    async def fanout(self, socket_id: str, room: str, count: int) -> int:
        for seq in range(count):
            self.hub.broadcast(room, EVENT, tick(seq, count))
        return count


def config(engine: str = "hypercorn") -> dict[str, object]:
    return {
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "WEB_SERVER_ENGINE": engine,
        "SHUTDOWN_GRACE_PERIOD": 1,
        "WEBSOCKET_PATH": PATH,
        "WEBSOCKET_HUB_CONFIG": {
            "max_connections": 100_000,  # the runner decides how many; the default is 1000
            "heartbeat_interval": HEARTBEAT_INTERVAL,
            "max_message_size": MAX_MESSAGE_SIZE,
            "send_buffer": send_buffer(),
        },
    }


async def main(engine: str) -> None:
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(run_services, config(engine), WsBenchService)
        announce(urlsplit(runner.url).port)


if __name__ == "__main__":
    raise_nofile()
    trio.run(main, argument(2, ENGINES))
