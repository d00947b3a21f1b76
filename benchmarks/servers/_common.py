"""What the HTTP servers share: the listening socket, hypercorn's settings, the "ready" line
the benchmark runner waits for, and the three endpoints' bodies.

Imports nothing outside the standard library at the top: the nameko servers import this
module in an interpreter of their own, without hypercorn (see benchmarks/README.md).
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypercorn.config import Config


def user(user_id: int) -> dict[str, object]:
    """What ``GET /users/<user_id>`` answers, as JSON."""
    return {"id": user_id, "name": f"user-{user_id}", "active": True}


def received(size: int) -> dict[str, int]:
    """What ``POST /echo`` answers, as JSON: the size of the body it read."""
    return {"received": size}


HELLO = "hello"
#: The route of the POST benchmark, and the size of the body wrk sends it.
POST_PATH = "/echo"
POST_SIZE = 64 * 1024
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
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 1.0
    config.read_timeout = 30  # type: ignore[assignment]
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_max_requests = sys.maxsize
    config.include_server_header = False
    config.accesslog = None
    return config


def argument(index: int, choices: tuple[str, ...]) -> str:
    """``sys.argv[index]``, one of ``choices`` (the first one when it is not given)."""
    value = sys.argv[index] if len(sys.argv) > index else choices[0]
    if value not in choices:
        raise SystemExit(f"argument {index}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def announce(port: int) -> None:
    """Tell the runner where this server listens: it reads this one line from stdout."""
    print(f"PORT {port}", flush=True)
