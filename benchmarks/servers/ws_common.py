"""What the WebSocket benchmark's two servers share: the event they broadcast, the settings
that must match between them, and the file-descriptor limit.

Both servers take one optional argument, the outbox bound in messages (``send_buffer``):
``python ws_triosvc.py 1024``. Both listen on 127.0.0.1, serve WebSocket on ``/ws`` and print
``PORT <n>`` once they accept connections (``_common.announce``).
"""

from __future__ import annotations

import resource
import sys

#: The event every broadcast sends; its data is ``tick(seq, count)``.
EVENT = "tick"
#: Where both servers serve WebSocket (triosvc's default ``WEBSOCKET_PATH``).
PATH = "/ws"
#: triosvc's default ``heartbeat_interval``: both servers ping every socket this often.
HEARTBEAT_INTERVAL = 30
#: The read timeout triosvc's engine sets with that heartbeat (two silent heartbeats).
READ_TIMEOUT = 2 * HEARTBEAT_INTERVAL
#: triosvc's default ``max_message_size``.
MAX_MESSAGE_SIZE = 1024 * 1024
#: triosvc's default ``send_buffer``, used when the runner passes none.
DEFAULT_SEND_BUFFER = 256
#: hypercorn's settings as triosvc's engine sets them for a WebSocket endpoint with the
#: default heartbeat (on top of ``_common.hypercorn_config``'s).
HYPERCORN_SETTINGS = {
    "websocket_ping_interval": HEARTBEAT_INTERVAL,
    "read_timeout": READ_TIMEOUT,
    "websocket_max_message_size": MAX_MESSAGE_SIZE,
}


def tick(seq: int, count: int) -> dict[str, object]:
    """The data of broadcast ``seq`` of ``count``: a small JSON object."""
    return {"seq": seq, "of": count}


def send_buffer() -> int:
    """The outbox bound (messages per socket) the runner asked for: ``argv[1]``."""
    return int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SEND_BUFFER


def raise_nofile(needed: int = 0) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the new soft limit.

    A thousand sockets need a thousand descriptors; the usual soft limit is 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        soft = hard if hard != resource.RLIM_INFINITY else max(needed, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if needed and soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"RLIMIT_NOFILE is {soft}, below the {needed} descriptors needed")
    return soft
