"""The cluster-wide hub and ``triosvc run --workers 2``: cross-node WebSocket fan-out, and HTTP
throughput with two worker processes against one (issue 4, item 4).

One run starts a ``redis-server`` of its own on a free port, then, round after round (the
order of the set-ups rotated each round), runs ``benchmarks/servers/cluster_app.py`` through
``triosvc run``:

* ``1 process``: ``triosvc run cluster_app`` on the default ``memory://`` broker (the hub is
  the process's own: the baseline);
* ``1 process, redis``: the same with ``BROKER_URL: redis://`` (one node: every broadcast is
  also published to Redis, which nobody else reads; what the link costs a node);
* ``2 workers``: ``triosvc run --workers 2`` with ``BROKER_URL: redis://``: two processes
  sharing one listening socket, two nodes of one hub.

Per round and set-up:

* **fan-out**: ``--sockets`` sockets from this process (the `websockets` sans-I/O client of
  ``benchmarks/websocket.py``, counting events by their prefix), spread evenly over the
  workers (each socket asks ``whoami`` which node it reached; sockets are opened until each
  node has its half), all in one room; one socket calls ``fanout(room, --broadcasts)``, once
  unmeasured, then ``--fanouts`` times: deliveries/s = sockets x broadcasts / the time until
  the last socket has the last event (the median fan-out of the round), with the time to the
  last delivery on the caller's node and on the other one, the serving processes' CPU per
  delivery and this (client) process's CPU share;
* **latency**: one socket per node, ``--latency-broadcasts`` single broadcasts one at a time:
  from the call to the delivery on the caller's node and on the other one (p50, p99);
* **HTTP**: ``wrk -t1 -c64 --latency`` on ``GET /hello`` for ``--duration`` seconds after
  ``--warmup`` seconds (nothing pinned: the workers, wrk and Redis share the machine's CPUs,
  as they would on a small host), with the servers' and wrk's CPU shares.

The client of the fan-out shares the machine with the servers: on two CPUs it is often what
limits the rate (its CPU share says so), so the fan-out rates compare set-ups loosely; the
times to the last delivery per node and the latencies show what crossing Redis costs.

It prints the medians over the rounds and the ratios to ``1 process``. Needs ``redis-server``,
``wrk`` and ``pip install -e '.[redis]' websockets``.

    python benchmarks/cluster.py                    # the defaults: about 2 minutes
    python benchmarks/cluster.py --rounds 5 --sockets 2000 --json /tmp/cluster.json
"""

# As in benchmarks/websocket.py: this folder must not stay first on sys.path, where http.py
# would stand in for the standard library's http package (which the websockets library
# imports). The benchmark scripts this one borrows from are loaded by path.

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_DIR = HERE / "servers"
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(SERVER_DIR))

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import trio  # noqa: E402
from _processes import CLOCK_TICKS, Redis, free_port, load_script, triosvc_revision  # noqa: E402
from ws_common import raise_nofile  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator


ws_bench: Any = load_script("_bench_websocket", HERE / "websocket.py")
http_bench: Any = load_script("_bench_http", HERE / "http.py")

ROOM = "bench"
SETUPS = ("1 process", "1 process, redis", "2 workers")
BASELINE = "1 process"
#: The issue's target: HTTP requests/s with --workers 2 at least this many times one process.
HTTP_TARGET = 1.7
#: Seconds a server may take to answer, and a fan-out to complete.
READY_TIMEOUT = 30.0
FANOUT_TIMEOUT = 60.0


class BenchmarkError(Exception):
    """A server or a client did not behave: the run stops with this message."""


# -- processes ---------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Service:
    """``triosvc run [--workers 2] cluster_app`` in a session of its own, on a free port."""

    def __init__(self, setup: str, redis: Redis, log_dir: Path) -> None:
        self.setup = setup
        self.port = free_port()
        command = [sys.executable, "-m", "triosvc", "run"]
        defines = [
            f"WEB_SERVER_ADDRESS=127.0.0.1:{self.port}",
            "WEB_SERVER_ENGINE=triosvc",
            "SHUTDOWN_GRACE_PERIOD=1",
            'WEBSOCKET_HUB_CONFIG={"max_connections": 100000}',
        ]
        self.workers = 2 if setup == "2 workers" else 1
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        if "redis" in setup or self.workers > 1:
            defines.append(f"BROKER_URL={redis.url}")
        for define in defines:
            command += ["--define", define]
        command.append("cluster_app")
        name = setup.replace(" ", "-").replace(",", "")
        self.log = (log_dir / f"{name}.log").open("ab")
        self.process = subprocess.Popen(
            command,
            cwd=SERVER_DIR,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = log_dir / f"{name}.log"

    def pids(self) -> list[int]:
        """The processes that serve: the worker processes, or the one process."""
        if self.workers == 1:
            return [self.process.pid]
        return children(self.process.pid)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchmarkError(f"{self.setup}: exited; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# -- the WebSocket client (this process) -------------------------------------------------------

ClientSocket = ws_bench.ClientSocket


class Clients:
    """The sockets of one fan-out: spread evenly over the nodes, in one room."""

    def __init__(self, service: Service, nursery: trio.Nursery) -> None:
        self.service = service
        self.nursery = nursery
        self.by_node: dict[str, list[Any]] = {}

    async def _open(self, count: int) -> list[tuple[str, Any]]:
        opened: list[tuple[str, Any]] = []
        limiter = trio.CapacityLimiter(64)

        async def one() -> None:
            async with limiter:
                client = await ClientSocket.connect(self.service.port)
                self.nursery.start_soon(client.read)
                node = await client.call("whoami")
            opened.append((str(node), client))

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        return opened

    async def open(self, sockets: int) -> None:
        """Open ``sockets`` sockets, as many on each node (within a few hundred tries)."""
        nodes = self.service.workers
        share = sockets // nodes
        tries = 0
        with trio.fail_after(READY_TIMEOUT):
            while True:
                count = sockets if not tries else 64
                for node, client in await self._open(count):
                    if len(self.by_node.setdefault(node, [])) < share:
                        self.by_node[node].append(client)
                    else:
                        await client.aclose()
                tries += count
                full = [n for n, c in self.by_node.items() if len(c) == share]
                if len(full) == nodes:
                    break
                if tries > 20 * sockets + 50 * 64:
                    raise BenchmarkError(f"could not spread {sockets} sockets over {nodes} nodes")
                await trio.sleep(0.05)  # the node that took them all may be busy: let it be
        limiter = trio.CapacityLimiter(64)

        async def join(client: Any) -> None:
            async with limiter:
                await client.call("join", room=ROOM)

        with trio.fail_after(READY_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for client in self.all():
                    nursery.start_soon(join, client)

    def all(self) -> Iterator[Any]:
        for clients in self.by_node.values():
            yield from clients

    async def close(self) -> None:
        for client in self.all():
            await client.aclose()


@dataclass
class Fanout:
    sockets: int
    broadcasts: int
    deliveries_per_s: float
    last_ms: float
    #: The last delivery on the node that broadcast, and on the other one (nan: one node).
    last_local_ms: float
    last_remote_ms: float
    #: CPU of the serving processes per delivery, in microseconds; Redis's over the fan-out.
    server_cpu_us: float
    redis_cpu_ms: float
    #: This process's CPU (the client of every socket) over the fan-out's wall time.
    client_cpu_percent: float


async def one_fanout(service: Service, redis: Redis, clients: Clients, broadcasts: int) -> Fanout:
    """One ``fanout`` call; every socket counts its events until the last."""
    nodes = list(clients.by_node)
    caller_node = nodes[0]
    caller = clients.by_node[caller_node][0]
    sockets = sum(len(c) for c in clients.by_node.values())
    remaining = sockets
    all_done = trio.Event()

    def one_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            all_done.set()

    for client in clients.all():
        client.arm(broadcasts, one_done)
    pids = service.pids()
    cpu0, redis0 = cpu_seconds(pids), cpu_seconds([redis.process.pid])
    own0 = os.times()
    started = time.monotonic()
    with trio.fail_after(FANOUT_TIMEOUT):
        await caller.call("fanout", room=ROOM, count=broadcasts)
        await all_done.wait()
    cpu1, redis1 = cpu_seconds(pids), cpu_seconds([redis.process.pid])
    own1 = os.times()
    wall = time.monotonic() - started
    bad = sum(c.bad_last + c.closed for c in clients.all())
    if bad:
        raise BenchmarkError(f"{service.setup}: {bad} sockets closed or out of order")

    def last(node: str) -> float:
        return 1e3 * (max(c.done_at for c in clients.by_node[node]) - started)

    delivered = sockets * broadcasts
    last_all = max(last(node) for node in nodes)
    return Fanout(
        sockets=sockets,
        broadcasts=broadcasts,
        deliveries_per_s=delivered / (last_all / 1e3),
        last_ms=last_all,
        last_local_ms=last(caller_node),
        last_remote_ms=last(nodes[1]) if len(nodes) > 1 else float("nan"),
        server_cpu_us=1e6 * (cpu1 - cpu0) / delivered,
        redis_cpu_ms=1e3 * (redis1 - redis0),
        client_cpu_percent=100 * (own1.user - own0.user + own1.system - own0.system) / wall,
    )


async def fanout(service: Service, redis: Redis, args: argparse.Namespace) -> Fanout:
    """One unmeasured fan-out (the sockets settle), then the median of ``--fanouts``."""
    async with trio.open_nursery() as nursery:
        clients = Clients(service, nursery)
        await clients.open(args.sockets)
        await one_fanout(service, redis, clients, args.broadcasts)
        runs = [
            await one_fanout(service, redis, clients, args.broadcasts) for _ in range(args.fanouts)
        ]
        await clients.close()
        nursery.cancel_scope.cancel()
    runs.sort(key=lambda f: f.deliveries_per_s)
    return runs[len(runs) // 2]


@dataclass
class Latency:
    """One broadcast at a time to one socket per node: from the call to each delivery."""

    broadcasts: int
    local_p50_ms: float
    remote_p50_ms: float
    local_p99_ms: float
    remote_p99_ms: float


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latency(service: Service, broadcasts: int) -> Latency:
    async with trio.open_nursery() as nursery:
        clients = Clients(service, nursery)
        await clients.open(2 if service.workers == 1 else service.workers)
        nodes = list(clients.by_node)
        caller = clients.by_node[nodes[0]][0]
        sockets = [clients.by_node[node][-1] for node in nodes]
        times: list[list[float]] = [[] for _ in sockets]
        with trio.fail_after(FANOUT_TIMEOUT):
            for _ in range(broadcasts):
                done = trio.Event()
                remaining = [len(sockets)]

                def one_done(remaining: list[int] = remaining, done: trio.Event = done) -> None:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

                for client in sockets:
                    client.arm(1, one_done)
                started = time.monotonic()
                await caller.call("fanout", room=ROOM, count=1)
                await done.wait()
                for measured, client in zip(times, sockets, strict=True):
                    measured.append(1e3 * (client.done_at - started))
        await clients.close()
        nursery.cancel_scope.cancel()
    remote = times[1] if service.workers > 1 else []
    return Latency(
        broadcasts=broadcasts,
        local_p50_ms=quantile(times[0], 0.5),
        remote_p50_ms=quantile(remote, 0.5),
        local_p99_ms=quantile(times[0], 0.99),
        remote_p99_ms=quantile(remote, 0.99),
    )


# -- HTTP --------------------------------------------------------------------------------------


@dataclass
class Http:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_percent: float
    wrk_cpu_percent: float


def wrk(port: int, seconds: int, connections: int, threads: int) -> Any:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        f"http://127.0.0.1:{port}/hello",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=seconds + 30)
    if process.returncode != 0:
        raise BenchmarkError(f"wrk failed: {err.decode(errors='replace')}")
    return http_bench.parse_wrk(out.decode())


def http_load(service: Service, args: argparse.Namespace) -> Http:
    if args.warmup:
        wrk(service.port, args.warmup, args.connections, args.wrk_threads)
    pids = service.pids()
    cpu0, wall0 = cpu_seconds(pids), time.monotonic()
    children0 = os.times()
    sample = wrk(service.port, args.duration, args.connections, args.wrk_threads)
    cpu = cpu_seconds(pids) - cpu0
    children1 = os.times()  # wrk's CPU: the one child of this process that ended meanwhile
    wrk_cpu = (children1.children_user - children0.children_user) + (
        children1.children_system - children0.children_system
    )
    service.check_alive()
    return Http(
        requests_per_s=sample.requests_per_s,
        p50_ms=sample.p50_ms,
        p99_ms=sample.p99_ms,
        errors=sample.errors,
        server_cpu_percent=100 * cpu / (time.monotonic() - wall0),
        wrk_cpu_percent=100 * wrk_cpu / (time.monotonic() - wall0),
    )


# -- the run -----------------------------------------------------------------------------------


async def wait_ready(service: Service) -> None:
    """Until every worker answers: a socket on each node (``whoami`` tells them apart)."""
    seen: set[str] = set()
    with trio.fail_after(READY_TIMEOUT):
        while len(seen) < service.workers:
            service.check_alive()
            try:
                client = await ClientSocket.connect(service.port)
            except OSError:
                await trio.sleep(0.1)
                continue
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.read)
                seen.add(str(await client.call("whoami")))
                await client.aclose()
    # Each worker subscribes to Redis before it accepts: broadcasts reach it from now on.


@dataclass
class Round:
    setup: str
    fanout: Fanout | None
    latency: Latency | None
    http: Http | None


async def one_round(setup: str, redis: Redis, args: argparse.Namespace, logs: Path) -> Round:
    service = Service(setup, redis, logs)
    try:
        await wait_ready(service)
        result = Round(setup, None, None, None)
        if not args.skip_websocket:
            result.fanout = await fanout(service, redis, args)
            result.latency = await latency(service, args.latency_broadcasts)
        if not args.skip_http and setup != "1 process, redis":
            result.http = await trio.to_thread.run_sync(http_load, service, args)
        return result
    finally:
        await trio.to_thread.run_sync(service.stop)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(rounds: list[Round], args: argparse.Namespace) -> list[str]:
    lines = []
    if not args.skip_websocket:
        lines.append(
            f"\nFan-out: {args.sockets} sockets in one room (spread evenly over the nodes), "
            f"{args.broadcasts} broadcasts from one socket; medians of {args.rounds} rounds "
            f"of {args.fanouts} fan-outs each"
        )
        header = (
            f"{'set-up':<18} {'deliveries/s':>12} {'vs 1 proc':>9} {'last ms':>8} "
            f"{'local ms':>8} {'remote ms':>9} {'srv CPU us':>10} {'redis ms':>8} {'cli CPU%':>8}"
        )
        lines += [header, "-" * len(header)]
        base = None
        for setup in SETUPS:
            runs = [r.fanout for r in rounds if r.setup == setup and r.fanout is not None]
            if not runs:
                continue
            rate = median([f.deliveries_per_s for f in runs])
            base = base or rate
            lines.append(
                f"{setup:<18} {rate:>12,.0f} {rate / base:>8.2f}x "
                f"{median([f.last_ms for f in runs]):>8.0f} "
                f"{median([f.last_local_ms for f in runs]):>8.0f} "
                f"{median([f.last_remote_ms for f in runs]):>9.0f} "
                f"{median([f.server_cpu_us for f in runs]):>10.1f} "
                f"{median([f.redis_cpu_ms for f in runs]):>8.0f} "
                f"{median([f.client_cpu_percent for f in runs]):>8.0f}"
            )
        lines.append(
            f"\nLatency: {args.latency_broadcasts} single broadcasts, one at a time, to one "
            "socket per node; from the call to the delivery, p50 / p99 (medians of the rounds)"
        )
        header = f"{'set-up':<18} {'local ms':>16} {'remote ms':>16}"
        lines += [header, "-" * len(header)]
        for setup in SETUPS:
            probes = [r.latency for r in rounds if r.setup == setup and r.latency is not None]
            if not probes:
                continue
            local = (
                f"{median([p.local_p50_ms for p in probes]):.2f} / "
                f"{median([p.local_p99_ms for p in probes]):.2f}"
            )
            remote = (
                f"{median([p.remote_p50_ms for p in probes]):.2f} / "
                f"{median([p.remote_p99_ms for p in probes]):.2f}"
            )
            lines.append(f"{setup:<18} {local:>16} {remote:>16}")
    if not args.skip_http:
        lines.append(
            f"\nHTTP: wrk -t{args.wrk_threads} -c{args.connections} GET /hello, "
            f"{args.duration:g} s per run; medians of {args.rounds} rounds"
        )
        header = (
            f"{'set-up':<18} {'req/s':>9} {'vs 1 proc':>9} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'srv CPU%':>8} {'wrk CPU%':>8} {'req/CPU-s':>9}"
        )
        lines += [header, "-" * len(header)]
        rates = {}
        for setup in SETUPS:
            runs = [r.http for r in rounds if r.setup == setup and r.http is not None]
            if not runs:
                continue
            rate = rates[setup] = median([h.requests_per_s for h in runs])
            lines.append(
                f"{setup:<18} {rate:>9,.0f} {rate / rates[BASELINE]:>8.2f}x "
                f"{median([h.p50_ms for h in runs]):>7.2f} "
                f"{median([h.p99_ms for h in runs]):>7.2f} "
                f"{median([h.server_cpu_percent for h in runs]):>8.0f} "
                f"{median([h.wrk_cpu_percent for h in runs]):>8.0f} "
                f"{median([100 * h.requests_per_s / h.server_cpu_percent for h in runs]):>9,.0f}"
            )
        if "2 workers" in rates:
            ratio = rates["2 workers"] / rates[BASELINE]
            mark = "met" if ratio >= HTTP_TARGET else "NOT met"
            lines.append(
                f"target: --workers 2 >= {HTTP_TARGET}x one process on {os.cpu_count()} CPUs: "
                f"{ratio:.2f}x, {mark}"
            )
    return lines


async def run(args: argparse.Namespace) -> list[Round]:
    logs = Path(tempfile.mkdtemp(prefix="triosvc-cluster-bench-"))
    redis = Redis(logs)
    rounds: list[Round] = []
    try:
        for index in range(args.rounds):
            order = SETUPS[index % len(SETUPS) :] + SETUPS[: index % len(SETUPS)]
            for setup in order:
                if setup not in args.setups:
                    continue
                result = await one_round(setup, redis, args, logs)
                rounds.append(result)
                parts = [f"round {index + 1}/{args.rounds} {setup:<18}"]
                if result.fanout is not None:
                    parts.append(
                        f"{result.fanout.deliveries_per_s:>9,.0f} deliveries/s, last "
                        f"{result.fanout.last_ms:.0f} ms"
                    )
                if result.http is not None:
                    parts.append(f"{result.http.requests_per_s:>8,.0f} req/s")
                print("  ".join(parts), flush=True)
    finally:
        redis.stop()
        shutil.rmtree(logs, ignore_errors=True)
    return rounds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=1000, help="sockets in the fan-out")
    parser.add_argument("--broadcasts", type=int, default=50, help="events of the fan-out")
    parser.add_argument(
        "--fanouts", type=int, default=5, help="fan-outs per round (after one unmeasured)"
    )
    parser.add_argument(
        "--latency-broadcasts", type=int, default=200, help="single broadcasts timed one by one"
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk before each")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-websocket", action="store_true")
    parser.add_argument("--json", type=Path, help="write every round's figures there")
    args = parser.parse_args(argv)
    if args.sockets < 2:
        parser.error("--sockets: at least 2 (one per node)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is needed (apt-get install {tool.split('-')[0]})", file=sys.stderr)
            return 2
    raise_nofile(2 * args.sockets + 256)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{now}; {os.cpu_count()} CPUs; triosvc at {triosvc_revision(HERE.parent)}; "
        f"{args.rounds} rounds of {', '.join(args.setups)}",
        flush=True,
    )
    rounds = trio.run(run, args)
    print("\n".join(report(rounds, args)))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rounds], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
