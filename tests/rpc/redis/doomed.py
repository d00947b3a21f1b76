"""A runner in a child process, for the test that kills one with SIGKILL mid-call.

``python doomed.py <redis url>`` serves ``doomed`` with the tests' short leases, prints
``ready`` once live and ``holding`` when a ``hold()`` call has begun; it never answers that
call: the test kills it there.
"""

from __future__ import annotations

import sys

import trio

from triosvc.rpc import _redis, rpc
from triosvc.rpc._redis import RedisOptions
from triosvc.runners import run_services

_redis.DEFAULTS = RedisOptions(lease_ttl=2.0, lease_interval=0.25, block=1.0)


class Doomed:
    name = "doomed"

    @rpc
    async def which(self):
        return "child"

    @rpc
    async def hold(self):
        print("holding", flush=True)
        await trio.sleep_forever()


async def main(url: str) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(run_services, {"BROKER_URL": url}, Doomed)
        print("ready", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
