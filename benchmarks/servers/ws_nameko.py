"""The WebSocket benchmark's service on nameko: its own hub (``nameko.web.websocket``).

Run by ``benchmarks/websocket.py`` as ``<nameko's python> benchmarks/servers/ws_nameko.py
[send_buffer]``; prints ``PORT <n>`` once it accepts connections, then serves until killed.
The same three calls as ``ws_triosvc.py``, whose service model and wire format are
nameko's. nameko's hub writes each broadcast to every socket directly, from the calling
worker, without an outbox: ``send_buffer`` is accepted and ignored. nameko answers with
``json.dumps``'s default separators (``{"type": "event", ...}``): the client reads both.
Runs from nameko's own virtual environment (see ``nameko_app.py``).

nameko 2.14.1's websocket module reads ``werkzeug.__version__``, which werkzeug 3.1 no longer
has: it is set from the installed distribution's metadata first.
"""

import eventlet

eventlet.monkey_patch()

import importlib.metadata  # noqa: E402

import werkzeug  # noqa: E402

if not hasattr(werkzeug, "__version__"):
    werkzeug.__version__ = importlib.metadata.version("werkzeug")

from nameko.web.websocket import WebSocketHubProvider, rpc  # noqa: E402
from nameko_app import run  # noqa: E402
from ws_common import EVENT, raise_nofile, tick  # noqa: E402


class WsBenchService:
    name = "wsbench"
    hub = WebSocketHubProvider()

    @rpc
    def join(self, socket_id: str, room: str) -> None:
        self.hub.subscribe(socket_id, room)

    @rpc
    def echo(self, socket_id: str, value: object) -> object:
        return value

    @rpc
    def fanout(self, socket_id: str, room: str, count: int) -> int:
        for seq in range(count):
            self.hub.broadcast(room, EVENT, tick(seq, count))
        return count


if __name__ == "__main__":
    raise_nofile()
    run(WsBenchService)
