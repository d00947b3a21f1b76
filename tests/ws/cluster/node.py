"""A node in a child process, for the test that kills one with SIGKILL.

``python node.py <redis url>`` serves :class:`~.service.Node` with the tests' short
lifetimes on a free port and prints ``ready <url>``; the test connects a socket to it and
kills the process: no goodbye, no deleted snapshot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))

from service import FAST, Node

from triosvc.runners import run_services
from triosvc.ws import redis_cluster

redis_cluster.DEFAULTS = redis_cluster.ClusterOptions(**FAST)  # type: ignore[arg-type]


async def main(url: str) -> None:
    async with trio.open_nursery() as nursery:
        config = {"BROKER_URL": url, "WEB_SERVER_ADDRESS": "127.0.0.1:0"}
        runner = await nursery.start(run_services, config, Node)
        print("ready", runner.url, flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
