"""The cluster benchmark's service (``benchmarks/cluster.py``), run by ``triosvc run``.

``triosvc run --workers 2 --define BROKER_URL=redis://... cluster_app`` (from this folder):
every worker is a node of one cluster-wide hub. On ``/ws``: ``join(room)``, ``whoami()``
(the node's id, or ``"local"`` on a memory broker) and ``fanout(room, count)``, which
broadcasts ``count`` events to the room (the benchmark's ``tick`` events). ``GET /hello``
answers ``hello`` for wrk.
"""

from __future__ import annotations

from _common import HELLO
from ws_common import EVENT, tick

from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHubProvider, rpc


class ClusterBench:
    name = "clusterbench"
    hub = WebSocketHubProvider()

    @rpc
    async def join(self, socket_id: str, room: str) -> None:
        self.hub.subscribe(socket_id, room)

    @rpc
    async def whoami(self, socket_id: str) -> str:
        cluster = self.hub.statistics().cluster
        return cluster.node_id if cluster is not None else "local"

    @rpc
    async def fanout(self, socket_id: str, room: str, count: int) -> int:
        for seq in range(count):
            self.hub.broadcast(room, EVENT, tick(seq, count))
        return count

    @rpc
    async def stats(self, socket_id: str) -> dict[str, object]:
        cluster = self.hub.statistics().cluster
        if cluster is None:
            return {}
        return {
            "published": cluster.published,
            "received": cluster.received,
            "dropped": cluster.dropped,
            "gaps": cluster.gaps,
            "nodes": cluster.nodes,
        }

    @http("GET", "/hello")
    async def hello(self, request: object) -> str:
        return HELLO
