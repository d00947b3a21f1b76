"""WebSocket fan-out, call round trips and memory per socket: triosvc (on its own engine and on
hypercorn) against a bare ASGI hub on hypercorn's trio and asyncio workers, quart-trio,
uvicorn+Starlette and nameko.

One run starts each server (``benchmarks/servers/ws_*.py``) in its own process pinned to one
CPU, one at a time, drives it with client processes (this script, ``--worker``) pinned to
another CPU, and prints the medians over several interleaved rounds, with each figure's ratio
to the baseline (``ws_baseline.py``: a minimal hub on ``hypercorn.trio.serve``). Per round and
server it measures:

* memory: the server's VmRSS before and after opening ``--sockets`` idle sockets;
* fan-out: those sockets join one room, and one call ``fanout(room, count)`` makes the server
  broadcast ``--broadcasts`` small JSON events to it: deliveries/s and the time until the
  last socket has the last event;
* round trips: sequential ``echo`` calls on one socket, then on ``--echo-sockets`` sockets at
  once, for ``--echo-duration`` seconds each.

See benchmarks/README.md. Needs ``taskset`` (util-linux) and ``pip install websockets`` (the
client); trio and hypercorn come with triosvc; the other servers need
``pip install -r benchmarks/requirements.txt``, and nameko its own interpreter
(``--nameko-python``); a server that cannot start is skipped.

    python benchmarks/websocket.py                    # the defaults: a few minutes
    python benchmarks/websocket.py --rounds 5 --json /tmp/ws-bench.json
"""

# Python puts this file's folder first on sys.path, where benchmarks/http.py would stand in
# for the standard library's http package, which the websockets library imports (and this
# file, websocket.py, for the websocket-client package): the folder is taken out before any
# import that could need them, and the servers' folder put in for ws_common.

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_DIR = HERE / "servers"
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(SERVER_DIR))

import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import trio  # noqa: E402
from _processes import BenchmarkError, Child, ServerProcess, ServerSpec, rotated  # noqa: E402
from _runner import (  # noqa: E402
    add_cpu_options,
    add_json_option,
    add_rounds_option,
    add_server_options,
    mark,
    new_parser,
    preflight,
    resolve_servers,
)
from _runner import run as run_benchmark  # noqa: E402
from websockets.client import ClientProtocol  # noqa: E402
from websockets.frames import Opcode  # noqa: E402
from websockets.uri import parse_uri  # noqa: E402
from ws_common import EVENT, PATH, raise_nofile  # noqa: E402

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable

    from websockets.frames import Frame

#: name -> how to start the server of /ws (it prints ``PORT <n>`` once ready); each program
#: takes the outbox bound (send_buffer) as its first argument, before the spec's own.
SERVERS = {
    "triosvc": ServerSpec(
        "ws_triosvc.py", ("triosvc",), description="triosvc's hub on its own engine (wsproto)"
    ),
    "triosvc-hypercorn": ServerSpec(
        "ws_triosvc.py", ("hypercorn",), description="triosvc's hub on hypercorn's trio worker"
    ),
    "hypercorn-trio": ServerSpec(
        "ws_baseline.py", ("trio",), description="a bare ASGI hub on hypercorn's trio worker"
    ),
    "hypercorn-asyncio": ServerSpec(
        "ws_baseline.py", ("asyncio",), description="the same on hypercorn's asyncio worker"
    ),
    "quart-trio": ServerSpec(
        "ws_quart_trio.py", modules=("quart_trio",), description="the same hub in quart-trio"
    ),
    "uvicorn-starlette": ServerSpec(
        "ws_starlette.py",
        modules=("uvicorn", "starlette", "uvloop"),
        description="the same hub in Starlette on uvicorn (uvloop, websockets)",
    ),
    "nameko": ServerSpec("ws_nameko.py", nameko=True, description="nameko's own hub (eventlet)"),
}
BASELINE = "hypercorn-trio"
OURS = "triosvc"

#: The issue's targets (issue 5): triosvc's fan-out on its own engine at >= this many
#: deliveries/s, and at least hypercorn's asyncio worker's; at most this much resident
#: memory per idle socket. The earlier one: triosvc on hypercorn at >= FANOUT_TARGET times
#: the bare hub on hypercorn-trio.
TARGET_DELIVERIES_PER_S = 30_000
FANOUT_REFERENCE = "hypercorn-asyncio"
FANOUT_TARGET = 0.8
MEMORY_TARGET_KIB = 50.0

ROOM = "bench"
#: Seconds for a worker to answer a command that is not bounded by its own timeout.
COMMAND_TIMEOUT = 60.0
#: Seconds the server is left alone before its RSS is read (sockets finish settling).
SETTLE = 1.0


# == the client (worker processes) ============================================================
#
# Each worker is this script run with --worker, pinned to the client CPU. It holds sockets
# and obeys one JSON command per line on stdin, answering one JSON line on stdout. A socket
# is a trio TCP stream driven by websockets' sans-I/O protocol: every receive_some() of up to
# 64 KiB is parsed at once, and an event frame is counted by its prefix, without decoding
# the JSON (only a socket's last expected event is decoded, to check its sequence number).
# Parsing costs about 3 us of client CPU per message here, where trio-websocket costs about
# 34 us (see the README): the client keeps most of its CPU free during the fan-out, which the
# run reports ('cli CPU%'), so the servers are what is measured.

RECEIVE_SIZE = 65536
CONNECT_CONCURRENCY = 64
# nameko's json.dumps puts a space after ':' and ','; the others answer compact JSON.
_TICK_PREFIX = (
    b'{"type":"event","event":"' + EVENT.encode() + b'"',
    b'{"type": "event", "event": "' + EVENT.encode() + b'"',
)
_RESULT_PREFIX = (b'{"type":"result"', b'{"type": "result"')
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class CallFailed(Exception):
    """A call answered with an error frame, or whose socket closed first."""


class _Waiter:
    __slots__ = ("event", "message")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.message: dict[str, object] | None = None


class ClientSocket:
    """One client WebSocket: calls with correlation ids, and a count of broadcast events."""

    def __init__(self, stream: trio.SocketStream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.send_lock = trio.Lock()
        self.pending: dict[int, _Waiter] = {}
        self.next_id = 0
        self.closed = False
        # the fan-out being counted
        self.ticks = 0
        self.target = 0
        self.done_at: float | None = None
        self.bad_last = 0
        self.on_done: Callable[[], None] | None = None

    @classmethod
    async def connect(cls, port: int) -> ClientSocket:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{PATH}"), max_size=None)
            protocol.send_request(protocol.connect())
            await stream.send_all(b"".join(protocol.data_to_send()))
            events: list[object] = []
            while not events:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    raise ConnectionError("the server closed the connection during the handshake")
                protocol.receive_data(data)
                events = protocol.events_received()  # type: ignore[assignment]
            if protocol.handshake_exc is not None:
                raise ConnectionError(f"handshake refused: {protocol.handshake_exc}")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        client = cls(stream, protocol)
        client._frames(events[1:])  # type: ignore[arg-type]
        return client

    def arm(self, target: int, on_done: Callable[[], None]) -> None:
        self.ticks, self.target, self.done_at, self.bad_last = 0, target, None, 0
        self.on_done = on_done

    async def read(self) -> None:
        """Read and dispatch frames until the connection ends (run as a task)."""
        protocol = self.protocol
        try:
            while True:
                data = await self.stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                protocol.receive_data(data)
                self._frames(protocol.events_received())  # type: ignore[arg-type]
                out = b"".join(protocol.data_to_send())  # pongs to the server's pings
                if out:
                    async with self.send_lock:
                        await self.stream.send_all(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed = True
            for waiter in self.pending.values():
                waiter.event.set()
            self.pending.clear()

    def _frames(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            if frame.opcode is not Opcode.TEXT:
                continue
            data = frame.data
            if data.startswith(_TICK_PREFIX):
                self.ticks += 1
                if self.ticks == self.target:
                    self.done_at = time.monotonic()
                    if json.loads(data)["data"]["seq"] != self.target - 1:
                        self.bad_last += 1
                    if self.on_done is not None:
                        self.on_done()
            elif data.startswith(_RESULT_PREFIX):
                message = json.loads(data)
                waiter = self.pending.pop(message.get("correlation_id"), None)
                if waiter is not None:
                    waiter.message = message
                    waiter.event.set()
            # anything else (triosvc's "connected" event) is not counted

    async def call(self, method: str, **data: object) -> object:
        if self.closed:
            raise CallFailed("the socket is closed")
        self.next_id += 1
        correlation_id = self.next_id
        waiter = self.pending[correlation_id] = _Waiter()
        frame = {"method": method, "data": data, "correlation_id": correlation_id}
        self.protocol.send_text(_ENCODE(frame).encode())
        async with self.send_lock:
            await self.stream.send_all(b"".join(self.protocol.data_to_send()))
        await waiter.event.wait()
        message = waiter.message
        if message is None:
            raise CallFailed(f"{method}: the socket closed before the answer")
        if message.get("success") is not True:
            raise CallFailed(f"{method}: {message.get('error')}")
        return message.get("data")

    async def aclose(self) -> None:
        self.closed = True
        await trio.aclose_forcefully(self.stream)


class Worker:
    """The commands a worker process obeys; its sockets live in one nursery."""

    def __init__(self, port: int, nursery: trio.Nursery) -> None:
        self.port = port
        self.nursery = nursery
        self.subscribers: list[ClientSocket] = []
        self.control: ClientSocket | None = None
        self._remaining = 0
        self._all_done = trio.Event()

    async def _open(self, count: int) -> list[ClientSocket]:
        opened: list[ClientSocket] = []
        limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

        async def one() -> None:
            async with limiter:
                client = await ClientSocket.connect(self.port)
            opened.append(client)
            self.nursery.start_soon(client.read)

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        return opened

    async def cmd_control(self, calls: int) -> dict[str, object]:
        """Open the control socket and warm the server up with a few echo calls."""
        (self.control,) = await self._open(1)
        for i in range(calls):
            await self.control.call("echo", value=i)
        return {}

    async def cmd_open(self, count: int, within: float) -> dict[str, object]:
        started = time.monotonic()
        with trio.fail_after(within):
            self.subscribers += await self._open(count)
        return {"opened": count, "seconds": time.monotonic() - started}

    async def cmd_join(self, room: str, within: float) -> dict[str, object]:
        limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

        async def join(client: ClientSocket) -> None:
            async with limiter:
                await client.call("join", room=room)

        with trio.fail_after(within):
            async with trio.open_nursery() as nursery:
                for client in self.subscribers:
                    nursery.start_soon(join, client)
        return {"joined": len(self.subscribers)}

    async def cmd_arm(self, count: int) -> dict[str, object]:
        self._remaining = len(self.subscribers)
        self._all_done = trio.Event()
        if not self._remaining:
            self._all_done.set()
        for client in self.subscribers:
            client.arm(count, self._one_done)
        return {"armed": len(self.subscribers)}

    def _one_done(self) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            self._all_done.set()

    async def cmd_fanout(self, room: str, count: int, within: float) -> dict[str, object]:
        if self.control is None:
            raise BenchmarkError("fanout before control")
        with trio.fail_after(within):
            started = time.monotonic()
            answer = await self.control.call("fanout", room=room, count=count)
            answered = time.monotonic()
        return {"t0": started, "t_reply": answered, "answer": answer}

    async def cmd_collect(self, within: float) -> dict[str, object]:
        with trio.move_on_after(within):
            await self._all_done.wait()
        done = [c.done_at for c in self.subscribers if c.done_at is not None]
        return {
            "done": len(done),
            "ticks": sum(c.ticks for c in self.subscribers),
            "first": min(done, default=None),
            "last": max(done, default=None),
            "bad_last": sum(c.bad_last for c in self.subscribers),
            "closed": sum(c.closed for c in self.subscribers),
        }

    async def cmd_echo(self, sockets: int, seconds: float, warmup: float) -> dict[str, object]:
        """``sockets`` new sockets, each making sequential echo calls: warm-up, then measured."""
        with trio.fail_after(COMMAND_TIMEOUT):
            clients = await self._open(sockets)
        latencies: list[float] = []
        bounds: list[float] = []

        async def loop(client: ClientSocket, until: float, record: bool) -> None:
            i = 0
            while (now := time.perf_counter()) < until:
                i += 1
                if await client.call("echo", value=i) != i:
                    raise CallFailed("echo answered another value")
                if record:
                    latencies.append(time.perf_counter() - now)
            bounds.append(time.perf_counter())

        try:
            with trio.fail_after(warmup + seconds + COMMAND_TIMEOUT):
                for record, span in ((False, warmup), (True, seconds)):
                    if span <= 0:
                        continue
                    bounds.clear()
                    started = time.perf_counter()
                    async with trio.open_nursery() as nursery:
                        for client in clients:
                            nursery.start_soon(loop, client, started + span, record)
        finally:
            for client in clients:
                await client.aclose()
        elapsed = max(bounds) - started
        latencies.sort()
        return {
            "calls": len(latencies),
            "seconds": elapsed,
            "p50_ms": 1e3 * latencies[len(latencies) // 2] if latencies else math.nan,
            "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)] if latencies else math.nan,
        }


async def _worker(port: int) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with trio.open_nursery() as nursery:
        worker = Worker(port, nursery)
        while True:
            while b"\n" not in buffer:
                chunk = await stdin.receive_some(65536)
                if not chunk:  # the runner went away: so do we
                    nursery.cancel_scope.cancel()
                    return
                buffer += chunk
            line, _, buffer = buffer.partition(b"\n")
            command = json.loads(line)
            name = command.pop("cmd")
            try:
                reply = await getattr(worker, f"cmd_{name}")(**command)
            except Exception as exc:
                traceback.print_exc()
                reply = {"error": f"{name}: {type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)


def worker_main(port: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us (SIGTERM, or EOF)
    raise_nofile()
    trio.run(_worker, port)
    return 0


# == the runner ===============================================================================


class Server(ServerProcess):
    """One server program running in a child process pinned to ``cpu``."""

    def __init__(
        self, name: str, cpu: int, log_dir: Path, send_buffer: int, nameko_python: str | None
    ) -> None:
        spec = SERVERS[name]
        super().__init__(name, spec, cpu, log_dir, nameko_python, (str(send_buffer),))

    def rss_kib(self) -> int:
        """The server's resident memory now (VmRSS in /proc/<pid>/status), in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s*(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise BenchmarkError(f"{self.name}: no VmRSS in /proc/{self.process.pid}/status")
        return int(match[1])


class Client(Child):
    """One worker process of the load generator (this script with ``--worker``)."""

    def __init__(self, index: int, server: Server, cpu: int, log_dir: Path) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(server.port)]
        name = f"client{index}-{server.name}"
        super().__init__(name, command, cpu, log_dir, stdin=subprocess.PIPE)

    def send(self, cmd: str, **arguments: object) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps({"cmd": cmd, **arguments}).encode() + b"\n")
            stdin.flush()
        except BrokenPipeError:
            raise BenchmarkError(f"{self.name}: exited{self.tail()}") from None

    def reply(self, timeout: float = COMMAND_TIMEOUT) -> dict[str, object]:
        answer = json.loads(self.read_line(timeout))
        if "error" in answer:
            raise BenchmarkError(f"{self.name}: {answer['error']}{self.tail()}")
        return answer

    def request(self, cmd: str, timeout: float = COMMAND_TIMEOUT, **arguments: object) -> dict:
        self.send(cmd, **arguments)
        return self.reply(timeout)


def _all(clients: list[Client], cmd: str, timeout: float, each: list[dict]) -> list[dict]:
    """Send one command to every client (``each[i]``: client i's arguments), then the replies."""
    for client, arguments in zip(clients, each, strict=True):
        client.send(cmd, **arguments)
    return [client.reply(timeout) for client in clients]


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Memory:
    rss_before_kib: int
    rss_after_kib: int
    sockets: int
    open_seconds: float

    @property
    def kib_per_socket(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.sockets


@dataclass
class Fanout:
    sockets: int
    broadcasts: int
    #: Seconds from the fanout call's frame going out until the last socket had the last event.
    last_seconds: float
    #: ... until the first socket had all of them, and until the fanout call was answered.
    first_seconds: float
    reply_seconds: float
    delivered: int
    #: Sockets whose last event was not the last broadcast, or that were closed.
    bad: int
    server_cpu_us_per_delivery: float
    server_cpu_percent: float
    client_cpu_percent: float

    @property
    def deliveries_per_s(self) -> float:
        return self.sockets * self.broadcasts / self.last_seconds


@dataclass
class Echo:
    sockets: int
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_call: float
    server_cpu_percent: float
    client_cpu_percent: float

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds


@dataclass
class Round:
    memory: Memory
    fanout: Fanout
    echo: dict[int, Echo] = field(default_factory=dict)


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def measure_memory(args: argparse.Namespace, server: Server, clients: list[Client]) -> Memory:
    time.sleep(SETTLE)
    before = server.rss_kib()
    started = time.monotonic()
    shares = _shares(args.sockets, len(clients))
    timeout = 30 + args.sockets / 50
    _all(clients, "open", timeout + 5, [{"count": n, "within": timeout} for n in shares])
    opened = time.monotonic() - started
    time.sleep(SETTLE)
    server.check_alive()
    return Memory(before, server.rss_kib(), args.sockets, opened)


def _cpu(server: Server, clients: list[Client]) -> tuple[float, float, float]:
    return time.monotonic(), server.cpu_seconds(), sum(c.cpu_seconds() for c in clients)


def fanout(
    args: argparse.Namespace, server: Server, clients: list[Client], broadcasts: int
) -> Fanout:
    """One fanout call; every subscriber counts its events until the last."""
    _all(clients, "arm", COMMAND_TIMEOUT, [{"count": broadcasts}] * len(clients))
    wall0, server0, client0 = _cpu(server, clients)
    sent = clients[0].request(
        "fanout", args.fanout_timeout + 5, room=ROOM, count=broadcasts, within=args.fanout_timeout
    )
    each = [{"within": args.fanout_timeout}] * len(clients)
    collected = _all(clients, "collect", args.fanout_timeout + 5, each)
    wall1, server1, client1 = _cpu(server, clients)
    server.check_alive()
    t0 = float(sent["t0"])  # CLOCK_MONOTONIC: one clock for every process of the machine
    lasts = [float(c["last"]) for c in collected if c["last"] is not None]
    firsts = [float(c["first"]) for c in collected if c["first"] is not None]
    done = sum(int(c["done"]) for c in collected)
    delivered = sum(int(c["ticks"]) for c in collected)
    if done < args.sockets:
        raise BenchmarkError(
            f"{server.name}: fan-out of {broadcasts}: only {done} of {args.sockets} sockets had"
            f" every event within {args.fanout_timeout:.0f}s ({delivered} of"
            f" {args.sockets * broadcasts} delivered;"
            f" {sum(int(c['closed']) for c in collected)} sockets closed by the server)"
        )
    return Fanout(
        sockets=args.sockets,
        broadcasts=broadcasts,
        last_seconds=max(lasts) - t0,
        first_seconds=min(firsts) - t0,
        reply_seconds=float(sent["t_reply"]) - t0,
        delivered=delivered,
        bad=sum(int(c["bad_last"]) + int(c["closed"]) for c in collected),
        server_cpu_us_per_delivery=1e6 * (server1 - server0) / max(delivered, 1),
        server_cpu_percent=100 * (server1 - server0) / (wall1 - wall0),
        client_cpu_percent=100 * (client1 - client0) / (wall1 - wall0),
    )


def echo(args: argparse.Namespace, server: Server, clients: list[Client], sockets: int) -> Echo:
    # The warm-up is inside the CPU window's bounds, so measure the CPU around a run of its own.
    if args.echo_warmup > 0:
        clients[0].request("echo", sockets=sockets, seconds=args.echo_warmup, warmup=0)
    wall0, server0, client0 = _cpu(server, clients)
    result = clients[0].request(
        "echo",
        COMMAND_TIMEOUT + args.echo_duration,
        sockets=sockets,
        seconds=args.echo_duration,
        warmup=0,
    )
    wall1, server1, client1 = _cpu(server, clients)
    server.check_alive()
    calls = int(result["calls"])
    return Echo(
        sockets=sockets,
        calls=calls,
        seconds=float(result["seconds"]),
        p50_ms=float(result["p50_ms"]),
        p99_ms=float(result["p99_ms"]),
        server_cpu_us_per_call=1e6 * (server1 - server0) / max(calls, 1),
        server_cpu_percent=100 * (server1 - server0) / (wall1 - wall0),
        client_cpu_percent=100 * (client1 - client0) / (wall1 - wall0),
    )


def measure(args: argparse.Namespace, server: Server, clients: list[Client]) -> Round:
    clients[0].request("control", calls=200)
    memory = measure_memory(args, server, clients)
    timeout = 30 + args.sockets / 50
    _all(clients, "join", timeout + 5, [{"room": ROOM, "within": timeout}] * len(clients))
    if args.fanout_warmup:
        fanout(args, server, clients, args.fanout_warmup)
    result = Round(memory, fanout(args, server, clients, args.broadcasts))
    for sockets in args.echo_sockets:
        result.echo[sockets] = echo(args, server, clients, sockets)
    return result


def _progress(index: int, rounds: int, name: str, r: Round) -> str:
    f = r.fanout
    parts = [
        f"  round {index + 1}/{rounds}  {name:<17}",
        f"{r.memory.kib_per_socket:5.1f} KiB/socket",
        f"fan-out {f.deliveries_per_s:7.0f}/s, last at {f.last_seconds:6.2f}s"
        f" ({f.server_cpu_us_per_delivery:4.1f} us CPU/delivery, server CPU"
        f" {f.server_cpu_percent:3.0f}%, clients {f.client_cpu_percent:3.0f}%)",
    ]
    parts += [
        f"echo x{n}: {e.calls_per_s:5.0f}/s (server CPU {e.server_cpu_percent:3.0f}%)"
        for n, e in r.echo.items()
    ]
    return "  ".join(parts)


def run(args: argparse.Namespace) -> dict[str, list[Round]]:
    """Every round: each server in turn (order rotated), started, measured, stopped."""
    rounds: dict[str, list[Round]] = {name: [] for name in args.servers}
    log_dir = Path(tempfile.mkdtemp(prefix="triosvc-ws-bench-"))
    for index in range(args.rounds):
        for name in rotated(args.servers, index):
            server = Server(name, args.server_cpu, log_dir, args.send_buffer, args.nameko_python)
            clients: list[Client] = []
            try:
                clients = [
                    Client(i, server, args.client_cpu, log_dir)
                    for i in range(args.client_processes)
                ]
                result = measure(args, server, clients)
            finally:
                for client in clients:
                    client.stop()
                server.stop()
            rounds[name].append(result)
            print(_progress(index, args.rounds, name, result), flush=True)
    shutil.rmtree(log_dir, ignore_errors=True)
    return rounds


# -- the summary -------------------------------------------------------------------------------


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def _spread(values: list[float]) -> float:
    """(max - min) / median: how much the rounds disagree."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else math.nan


def paired(
    rounds: dict[str, list[Round]],
    name: str,
    figure: Callable[[Round], float],
    against: str = BASELINE,
) -> list[float]:
    """Per round, ``name``'s figure over ``against``'s in the same round ([] for ``against``
    itself, or when it did not run).

    The servers of a round ran one after the other, so these ratios share most of the
    machine's drift, which the ratio of the medians over the rounds does not.
    """
    base = rounds.get(against)
    if base is None or name == against:
        return []
    return [
        _over(figure(ours), figure(theirs)) for ours, theirs in zip(rounds[name], base, strict=True)
    ]


def _fanout_rate(r: Round) -> float:
    return r.fanout.deliveries_per_s


def _fanout_efficiency(r: Round) -> float:
    return _over(1, r.fanout.server_cpu_us_per_delivery)


def _echo_rate(n: int) -> Callable[[Round], float]:
    return lambda r: r.echo[n].calls_per_s


def summarize(rounds: dict[str, list[Round]]) -> dict[str, dict[str, float]]:
    """Per server, the medians over the rounds of every figure the table shows.

    ``*_paired``: the median over the rounds of the per-round ratio to the baseline.
    """
    summary: dict[str, dict[str, float]] = {}
    for name, runs in rounds.items():
        row = {
            "kib_per_socket": _median(r.memory.kib_per_socket for r in runs),
            "rss_before_mib": _median(r.memory.rss_before_kib / 1024 for r in runs),
            "deliveries_per_s": _median(r.fanout.deliveries_per_s for r in runs),
            "fanout_spread": _spread([r.fanout.deliveries_per_s for r in runs]),
            "last_s": _median(r.fanout.last_seconds for r in runs),
            "first_s": _median(r.fanout.first_seconds for r in runs),
            "reply_s": _median(r.fanout.reply_seconds for r in runs),
            "fanout_cpu_us": _median(r.fanout.server_cpu_us_per_delivery for r in runs),
            "fanout_server_cpu": _median(r.fanout.server_cpu_percent for r in runs),
            "fanout_client_cpu": _median(r.fanout.client_cpu_percent for r in runs),
            "fanout_bad": sum(r.fanout.bad for r in runs),
            "fanout_paired": _median(paired(rounds, name, _fanout_rate) or [math.nan]),
            "fanout_cpu_paired": _median(paired(rounds, name, _fanout_efficiency) or [math.nan]),
        }
        for n in runs[0].echo:
            echoes = [r.echo[n] for r in runs]
            row[f"echo{n}_per_s"] = _median(e.calls_per_s for e in echoes)
            row[f"echo{n}_spread"] = _spread([e.calls_per_s for e in echoes])
            row[f"echo{n}_p50_ms"] = _median(e.p50_ms for e in echoes)
            row[f"echo{n}_p99_ms"] = _median(e.p99_ms for e in echoes)
            row[f"echo{n}_cpu_us"] = _median(e.server_cpu_us_per_call for e in echoes)
            row[f"echo{n}_server_cpu"] = _median(e.server_cpu_percent for e in echoes)
            row[f"echo{n}_client_cpu"] = _median(e.client_cpu_percent for e in echoes)
            row[f"echo{n}_paired"] = _median(paired(rounds, name, _echo_rate(n)) or [math.nan])
        summary[name] = row
    return summary


def _paired(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _vs(summary: dict[str, dict[str, float]], name: str, key: str, inverse: bool = False) -> str:
    base = summary.get(BASELINE, {}).get(key)
    value = summary[name][key]
    if base is None or not value or not base:
        return "-"
    return f"{(base / value if inverse else value / base):.2f}x"


def print_tables(args: argparse.Namespace, summary: dict[str, dict[str, float]]) -> None:
    deliveries = args.sockets * args.broadcasts
    print(
        f"Fan-out: {args.sockets} sockets in one room, {args.broadcasts} broadcasts"
        f" ({deliveries:,} deliveries), one fanout call"
    )
    header = (
        f"{'server':<17} {'deliv/s':>8} {'vs base':>7} {'paired':>6} {'last s':>7} {'first s':>7}"
        f" {'reply s':>7} {'CPU us/deliv':>12} {'base/it':>7} {'srv CPU%':>8}"
        f" {'cli CPU%':>8} {'spread':>6} {'bad':>4}"
    )
    print(header)
    print("-" * len(header))
    for name, row in summary.items():
        print(
            f"{name:<17} {row['deliveries_per_s']:>8.0f}"
            f" {_vs(summary, name, 'deliveries_per_s'):>7}"
            f" {_paired(row['fanout_paired']):>6} {row['last_s']:>7.2f}"
            f" {row['first_s']:>7.2f} {row['reply_s']:>7.2f}"
            f" {row['fanout_cpu_us']:>12.1f} {_vs(summary, name, 'fanout_cpu_us', True):>7}"
            f" {row['fanout_server_cpu']:>8.0f} {row['fanout_client_cpu']:>8.0f}"
            f" {row['fanout_spread']:>6.0%} {row['fanout_bad']:>4.0f}"
        )
    if args.echo_sockets:
        print()
        print_echo_table(args, summary)
    print()
    print_memory_table(args, summary)
    print(
        "\nMedians over the rounds. 'vs base': the figure over the baseline's. 'paired': the"
        "\nmedian of the per-round ratios to the baseline (both ran back to back in each round)."
        "\n'last s': from the fanout call's frame going out until the last socket had the last"
        "\nevent ('first s': the first socket; 'reply s': the call's answer). 'CPU us/...': the"
        "\nserver process's CPU time per delivery or call; 'base/it': the baseline's over this"
        "\none's (above 1.00x: cheaper). 'srv/cli CPU%': the server's and the client processes'"
        "\nshare of a CPU during the measurement. 'spread': (max - min) / median of the rounds'"
        "\nrates. 'bad': sockets whose last event was out of order, or that the server closed."
    )


def print_echo_table(args: argparse.Namespace, summary: dict[str, dict[str, float]]) -> None:
    print(
        f"Round trips: sequential echo calls per socket, {args.echo_duration}s"
        f" (after {args.echo_warmup}s of warm-up)"
    )
    header = (
        f"{'server':<17} {'sockets':>7} {'calls/s':>8} {'vs base':>7} {'paired':>6}"
        f" {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU us/call':>11} {'base/it':>7} {'srv CPU%':>8} {'cli CPU%':>8} {'spread':>6}"
    )
    print(header)
    print("-" * len(header))
    for n in args.echo_sockets:
        for name, row in summary.items():
            print(
                f"{name:<17} {n:>7} {row[f'echo{n}_per_s']:>8.0f}"
                f" {_vs(summary, name, f'echo{n}_per_s'):>7}"
                f" {_paired(row[f'echo{n}_paired']):>6}"
                f" {row[f'echo{n}_p50_ms']:>7.2f} {row[f'echo{n}_p99_ms']:>7.2f}"
                f" {row[f'echo{n}_cpu_us']:>11.0f} {_vs(summary, name, f'echo{n}_cpu_us', True):>7}"
                f" {row[f'echo{n}_server_cpu']:>8.0f} {row[f'echo{n}_client_cpu']:>8.0f}"
                f" {row[f'echo{n}_spread']:>6.0%}"
            )


def print_memory_table(args: argparse.Namespace, summary: dict[str, dict[str, float]]) -> None:
    print(f"Memory: server VmRSS before and after opening {args.sockets} idle sockets")
    header = f"{'server':<17} {'RSS before MiB':>14} {'KiB/socket':>10} {'vs base':>7}"
    print(header)
    print("-" * len(header))
    for name, row in summary.items():
        print(
            f"{name:<17} {row['rss_before_mib']:>14.1f} {row['kib_per_socket']:>10.1f}"
            f" {_vs(summary, name, 'kib_per_socket'):>7}"
        )


def _listed(ratios: list[float]) -> str:
    return ", ".join(f"{r:.2f}" for r in ratios)


def _over(a: float, b: float) -> float:
    """a / b, NaN when b is 0 (a run too short for the CPU clock's ticks)."""
    return a / b if b else math.nan


def _paired_status(ratio: float, pair: float, target: float) -> str:
    if (ratio >= target) == (pair >= target):
        return mark(ratio >= target)
    return "UNSURE"  # the two ways of taking the ratio disagree: too noisy to say


def _compare(
    rounds: dict[str, list[Round]],
    summary: dict[str, dict[str, float]],
    name: str,
    against: str,
    target: float,
) -> str | None:
    """One verdict line: ``name``'s fan-out >= ``target`` x ``against``'s, by the ratio of the
    medians and by the median of the per-round ratios (both must agree)."""
    ours, theirs = summary.get(name), summary.get(against)
    if ours is None or theirs is None:
        return None
    ratio = ours["deliveries_per_s"] / theirs["deliveries_per_s"]
    rates = paired(rounds, name, _fanout_rate, against)
    efficiencies = paired(rounds, name, _fanout_efficiency, against)
    pair = _median(rates)
    return (
        f"{_paired_status(ratio, pair, target)} {name} fan-out >= {target}x {against}'s"
        f" deliveries/s: {ratio:.2f}x the medians, {pair:.2f}x paired (per round:"
        f" {_listed(rates)}); by CPU per delivery"
        f" {_over(theirs['fanout_cpu_us'], ours['fanout_cpu_us']):.2f}x,"
        f" {_median(efficiencies):.2f}x paired (per round: {_listed(efficiencies)})"
    )


def verdict(rounds: dict[str, list[Round]], summary: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    ours = summary.get(OURS)
    if ours is not None:
        rate = ours["deliveries_per_s"]
        lines.append(
            f"{mark(rate >= TARGET_DELIVERIES_PER_S)} {OURS} fan-out >="
            f" {TARGET_DELIVERIES_PER_S:,} deliveries/s: {rate:,.0f}/s"
            f" ({_over(1e6, ours['fanout_cpu_us']):,.0f}/s by its CPU per delivery, with a whole"
            " CPU)"
        )
    for name, against, target in (
        (OURS, FANOUT_REFERENCE, 1.0),
        ("triosvc-hypercorn", BASELINE, FANOUT_TARGET),
    ):
        line = _compare(rounds, summary, name, against, target)
        if line is not None:
            lines.append(line + (" (earlier target)" if name != OURS else ""))
    base = summary.get(BASELINE)
    for name in (OURS, "triosvc-hypercorn"):
        row = summary.get(name)
        if row is None:
            continue
        kib = row["kib_per_socket"]
        lines.append(
            f"{mark(kib < MEMORY_TARGET_KIB)} {name} memory per idle socket"
            f" < {MEMORY_TARGET_KIB:.0f} KiB: {kib:.1f} KiB"
            + (f" ({BASELINE}: {base['kib_per_socket']:.1f} KiB)" if base else "")
        )
    for name, row in summary.items():
        if row["fanout_client_cpu"] > 90:
            lines.append(
                f"warning: the clients used {row['fanout_client_cpu']:.0f}% of their CPU during"
                f" {name}'s fan-out: they may have been the bottleneck"
            )
        noisy = [k for k in row if k.endswith("spread") and row[k] > 0.2]
        if noisy:
            lines.append(
                f"noisy: {name}'s rounds differ by more than 20% in"
                f" {', '.join(k.removesuffix('_spread') for k in noisy)}"
            )
    return lines


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = new_parser(
        "websocket.py",
        (
            "Benchmark triosvc's WebSocket layer against a minimal hub written as a bare ASGI "
            "app on hypercorn-trio: broadcast fan-out to one room, echo call round trips on one "
            "and on many sockets, and resident memory per idle socket. Each server runs alone "
            "in a process pinned to one CPU; the client processes are pinned to another; "
            "loopback only. Prints medians over interleaved rounds and ratios to the baseline."
        ),
    )
    add_rounds_option(parser)
    parser.add_argument(
        "--sockets", type=int, default=1000, help="idle sockets opened, then subscribed to a room"
    )
    parser.add_argument(
        "--broadcasts", type=int, default=100, help="events one fanout call broadcasts"
    )
    parser.add_argument(
        "--fanout-warmup",
        type=int,
        default=10,
        metavar="N",
        help="broadcasts of an unmeasured fan-out first (0: none)",
    )
    parser.add_argument(
        "--fanout-timeout",
        type=float,
        help="seconds one fan-out may take (default: a second per 1,000 deliveries, at least 60)",
    )
    parser.add_argument(
        "--send-buffer",
        type=int,
        help="each socket's outbox bound, in messages, on both servers (default: --broadcasts,"
        " at least triosvc's default of 256: the fanout call queues every event at once)",
    )
    parser.add_argument(
        "--echo-sockets",
        type=int,
        nargs="*",
        default=[1, 50],
        metavar="N",
        help="socket counts of the echo runs (none: skip them)",
    )
    parser.add_argument(
        "--echo-duration", type=float, default=3, help="seconds of each measured echo run"
    )
    parser.add_argument(
        "--echo-warmup", type=float, default=1, help="seconds of unmeasured echo calls first"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="client processes the sockets are spread over (all on --client-cpu)",
    )
    add_cpu_options(parser, "the CPU the clients run on")
    add_server_options(parser, SERVERS, "all")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if min(args.rounds, args.sockets, args.broadcasts, args.client_processes) < 1:
        parser.error("--rounds, --sockets, --broadcasts and --client-processes must be >= 1")
    if args.echo_duration <= 0 or args.echo_warmup < 0 or args.fanout_warmup < 0:
        parser.error("--echo-duration must be > 0, --echo-warmup and --fanout-warmup >= 0")
    if any(n < 1 for n in args.echo_sockets):
        parser.error("--echo-sockets must be >= 1")
    if args.fanout_timeout is None:
        args.fanout_timeout = max(60.0, args.sockets * args.broadcasts / 1000)
    if args.send_buffer is None:
        args.send_buffer = max(256, args.broadcasts, args.fanout_warmup)
    if args.send_buffer < max(args.broadcasts, args.fanout_warmup):
        print(
            "warning: --send-buffer is below --broadcasts: the servers will drop sockets as slow"
            " consumers and the fan-out will fail"
        )
    resolve_servers(args, SERVERS)
    args.echo_sockets = list(dict.fromkeys(args.echo_sockets))
    return args


def _preflight(args: argparse.Namespace) -> dict[str, str]:
    """Check the tools, CPUs and descriptors; drop the servers that cannot start here."""
    needed = args.sockets + max(args.echo_sockets, default=0) + 64
    soft = raise_nofile()
    if soft != -1 and soft < needed:  # the children inherit our limits
        raise BenchmarkError(f"RLIMIT_NOFILE is {soft}: {needed} descriptors are needed")
    return preflight(args, SERVERS, ("taskset",), "the clients")


def estimate_seconds(args: argparse.Namespace, servers: int | None = None) -> int:
    """Seconds the run should take on a shared 2-CPU VM (fan-out at about 8,000 deliveries/s)."""
    per_server = (
        3
        + 2 * SETTLE
        + args.sockets / 300
        + (args.broadcasts + args.fanout_warmup) * args.sockets / 8000
        + len(args.echo_sockets) * (2 * args.echo_warmup + args.echo_duration + 1)
    )
    servers = len(args.servers) if servers is None else servers
    return int(args.rounds * servers * per_server)


def _describe(args: argparse.Namespace) -> str:
    return (
        f"{len(args.servers)} servers x {args.rounds} rounds; {args.sockets} sockets,"
        f" {args.broadcasts} broadcasts, echo on {args.echo_sockets} sockets for"
        f" {args.echo_duration}s; send_buffer {args.send_buffer}; servers on CPU"
        f" {args.server_cpu}, {args.client_processes} client process(es) on CPU"
        f" {args.client_cpu}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(int(argv[1]))
    args = parse_args(argv)
    done = run_benchmark(args, _preflight, estimate_seconds, _describe, run)
    if isinstance(done, int):
        return done
    rounds = done.results
    summary = summarize(rounds)
    print()
    print_tables(args, summary)
    print()
    return done.finish(
        args,
        verdict(rounds, summary),
        summary=summary,
        paired={
            name: {
                "fanout": paired(rounds, name, _fanout_rate),
                "fanout_cpu": paired(rounds, name, _fanout_efficiency),
                **{f"echo{n}": paired(rounds, name, _echo_rate(n)) for n in args.echo_sockets},
            }
            for name in rounds
            if name != BASELINE
        },
        rounds={name: [asdict(r) for r in runs] for name, runs in rounds.items()},
    )


if __name__ == "__main__":
    sys.exit(main())
