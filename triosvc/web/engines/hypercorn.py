"""The hypercorn engine: hypercorn's trio worker, embedded with ``hypercorn.trio.serve``."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    import trio

    from ..asgi import ASGIApp
    from . import EngineOptions

__all__ = ["serve"]

#: hypercorn logs its errors here, and an INFO line per listener we leave quiet by default.
LOGGER = logging.getLogger("triosvc.engine.hypercorn")


async def serve(
    app: ASGIApp,
    sock: socket.socket,
    options: EngineOptions,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[None],
) -> None:
    config = HypercornConfig()
    # hypercorn adopts the file descriptor; detaching keeps two socket objects from
    # both closing it (the second close could hit an unrelated, reused descriptor).
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = options.graceful_timeout
    config.read_timeout = options.read_timeout  # type: ignore[assignment]
    config.h11_max_incomplete_size = options.max_header_size
    config.keep_alive_max_requests = sys.maxsize  # SPEC: at least 10,000 per connection
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = LOGGER
    await hypercorn_serve(
        app,  # type: ignore[arg-type]
        config,
        shutdown_trigger=shutdown_trigger,  # type: ignore[arg-type]
        task_status=task_status,  # type: ignore[arg-type]
    )
