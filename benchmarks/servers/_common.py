"""What the three hello-world servers share: the listening socket, hypercorn's settings, the
"ready" line the benchmark runner waits for, and the two endpoints' bodies."""

from __future__ import annotations

import socket
import sys

from hypercorn.config import Config


def user(user_id: int) -> dict[str, object]:
    """What ``GET /users/<user_id>`` answers, as JSON."""
    return {"id": user_id, "name": f"user-{user_id}", "active": True}


HELLO = "hello"
BACKLOG = 1024  # as triosvc.web.server.BACKLOG


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on a free port of ``host``, bound the way triosvc binds it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def hypercorn_config(sock: socket.socket) -> Config:
    """hypercorn's settings as triosvc's engine sets them (triosvc/web/engines/hypercorn.py).

    Those that change what a keep-alive load costs: no access log, no Server header, and no
    cap on requests per connection (hypercorn's default closes a connection after 1000).
    """
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 1.0
    config.read_timeout = 30  # type: ignore[assignment]
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_max_requests = sys.maxsize
    config.include_server_header = False
    config.accesslog = None
    return config


def announce(port: int) -> None:
    """Tell the runner where this server listens: it reads this one line from stdout."""
    print(f"PORT {port}", flush=True)
