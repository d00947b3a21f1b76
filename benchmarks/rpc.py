"""Service RPC round trips: the memory transport against Redis, 1 and 50 concurrent callers.

One trio run holds the service (a runner with one ``@rpc`` echo method) and a standalone
client (``open_rpc_client``); for Redis, a ``redis-server`` of the benchmark's own on a
free loopback port (Debian's ``redis-server``; persisting nothing). Each round measures
every transport and caller count in turn (interleaved, the order rotated per round) and
reports calls/s and the p50/p99 latency of single calls; the medians of the rounds are
printed, with Redis's ratio to memory.

    python benchmarks/rpc.py                 # 3 rounds
    python benchmarks/rpc.py --rounds 5 --calls 4000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This folder first on sys.path would make benchmarks/http.py stand in for the standard
# library's http package: keep the servers' folder only (for _processes).
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE / "servers"))

import trio  # noqa: E402
from _processes import Redis  # noqa: E402

from triosvc.rpc import open_rpc_client, rpc  # noqa: E402
from triosvc.runners import open_services  # noqa: E402

CALLERS = (1, 50)


class EchoService:
    name = "echo"

    @rpc
    async def echo(self, value: object) -> object:
        return value


async def measure(broker_url: str, callers: int, calls: int) -> tuple[float, float, float]:
    """(calls/s, p50 ms, p99 ms) for ``calls`` echo calls made by ``callers`` tasks."""
    config = {"BROKER_URL": broker_url, "WEB_SERVER_MAX_WORKERS": 64}
    latencies: list[float] = []
    async with open_services(config, EchoService), open_rpc_client(config) as client:
        for _ in range(20):  # warm up: connections, scripts loaded
            await client.echo.echo(0)
        per_caller = calls // callers

        async def caller() -> None:
            for n in range(per_caller):
                started = time.perf_counter()
                await client.echo.echo(n)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller)
        elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return len(latencies) / elapsed, p50, p99


async def main(args: argparse.Namespace, redis_url: str) -> None:
    transports = {"memory": "memory://bench", "redis": redis_url}
    cases = [(name, callers) for callers in CALLERS for name in transports]
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for round_number in range(args.rounds):
        shift = round_number % len(cases)
        for name, callers in cases[shift:] + cases[:shift]:
            figures = await measure(transports[name], callers, args.calls)
            results.setdefault((name, callers), []).append(figures)
            print(f"round {round_number + 1}: {name:<6} {callers:>2} callers: "
                  f"{figures[0]:>8.0f} calls/s", file=sys.stderr)  # fmt: skip
    print(f"{'transport':<10} {'callers':>7} {'calls/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'vs memory':>9}")  # fmt: skip
    for callers in CALLERS:
        memory_rate = statistics.median(r[0] for r in results[("memory", callers)])
        for name in transports:
            rounds = results[(name, callers)]
            rate = statistics.median(r[0] for r in rounds)
            p50 = statistics.median(r[1] for r in rounds)
            p99 = statistics.median(r[2] for r in rounds)
            print(f"{name:<10} {callers:>7} {rate:>9.0f} {p50:>7.2f} {p99:>7.2f} "
                  f"{rate / memory_rate:>8.2f}x")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python benchmarks/rpc.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement")
    arguments = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is missing: apt-get install redis-server")
    with tempfile.TemporaryDirectory() as directory:
        redis = Redis(Path(directory))
        try:
            trio.run(main, arguments, redis.url)
        finally:
            redis.stop()
