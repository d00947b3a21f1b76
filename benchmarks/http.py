"""HTTP throughput and latency of triosvc (on its own engine and on hypercorn) against bare
hypercorn, quart-trio, uvicorn+Starlette and nameko.

One run starts each server (``benchmarks/servers/``) in its own process pinned to one CPU,
one at a time, drives each route with wrk pinned to another CPU (``GET /hello``,
``GET /users/42``, and ``POST /echo`` with a 64 KiB body through ``wrk/post.lua``), and prints
a table of the medians over several interleaved rounds, with each figure's ratio to bare
hypercorn-trio on the same route, then the issue's targets. See benchmarks/README.md. Needs
``wrk`` (Debian: ``apt-get install wrk``), ``taskset`` (util-linux) and, for the servers
beyond triosvc and bare hypercorn, ``pip install -r benchmarks/requirements.txt`` and
nameko's own interpreter (``--nameko-python``); a server that cannot start is skipped.

    python benchmarks/http.py                       # the defaults: a few minutes
    python benchmarks/http.py --duration 10 --rounds 3
"""

# This file is named http.py and Python puts its folder first on sys.path: it must not
# import anything that imports the standard library's ``http`` package (urllib.request,
# http.client...), which would find this file instead. The servers run in processes of
# their own, from benchmarks/servers/, and are not affected.

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent / "servers"))  # the shared helpers

if TYPE_CHECKING:
    from collections.abc import Callable

from _common import POST_PATH, POST_SIZE
from _processes import (
    CLOCK_TICKS,
    NAMEKO_PYTHON_VARIABLE,
    READY_TIMEOUT,
    ServerSpec,
    absolute_python,
    default_nameko_python,
    pinned,
    rotated,
    spawn,
    stop,
    stop_all,
    terminate,
    triosvc_revision,
    usable_servers,
)

HERE = Path(__file__).resolve().parent
SERVER_DIR = HERE / "servers"
POST_SCRIPT = HERE / "wrk" / "post.lua"

#: name -> how to start the server of the three endpoints (it prints ``PORT <n>`` once ready).
SERVERS = {
    "triosvc": ServerSpec(
        "triosvc_app.py", ("triosvc",), description="triosvc on its own engine (httptools)"
    ),
    "triosvc-hypercorn": ServerSpec(
        "triosvc_app.py", ("hypercorn",), description="triosvc on hypercorn's trio worker"
    ),
    "hypercorn-trio": ServerSpec(
        "bare_hypercorn.py", ("trio",), description="a bare ASGI app on hypercorn's trio worker"
    ),
    "hypercorn-asyncio": ServerSpec(
        "bare_hypercorn.py", ("asyncio",), description="the same on hypercorn's asyncio worker"
    ),
    "quart-trio": ServerSpec(
        "quart_trio_app.py", modules=("quart_trio",), description="quart-trio on hypercorn-trio"
    ),
    "uvicorn-starlette": ServerSpec(
        "starlette_app.py",
        modules=("uvicorn", "starlette"),
        description="Starlette on uvicorn (uvloop, httptools)",
    ),
    "nameko": ServerSpec(
        "nameko_app.py", nameko=True, description="nameko's @http on its eventlet server"
    ),
}
#: What runs unless --servers says otherwise (those that cannot start here are skipped).
DEFAULT_SERVERS = [name for name in SERVERS if name != "hypercorn-asyncio"]
BASELINE = "hypercorn-trio"
OURS = "triosvc"


@dataclass(frozen=True)
class Route:
    """One measured request: what wrk sends, and how to check the answer before the load."""

    method: str
    path: str
    #: A check of the body the server answers (run once per server start, before any load).
    check: Callable[[bytes], bool]
    #: The request body's size (a POST, sent by wrk/post.lua).
    body_size: int = 0

    @property
    def name(self) -> str:
        return self.path if self.method == "GET" else f"{self.method} {self.body_size // 1024}K"


ROUTES = {
    route.name: route
    for route in (
        Route("GET", "/hello", lambda body: body == b"hello"),
        Route("GET", "/users/42", lambda body: json.loads(body).get("id") == 42),
        Route(
            "POST",
            POST_PATH,
            lambda body: json.loads(body).get("received") == POST_SIZE,
            POST_SIZE,
        ),
    )
}

#: The issue's targets (issue 5) for triosvc on its own engine on GET /hello: at least
#: this many requests/s, this many times nameko's, this share of uvicorn+Starlette's, and
#: a p99 latency below bare hypercorn-trio's.
TARGET_HELLO_RPS = 4400
TARGET_VS_NAMEKO = 3.0
TARGET_VS_UVICORN = 0.5
#: nameko's figure in the issue, the reference when nameko does not run here.
ISSUE_NAMEKO_RPS = 1464
#: The earlier target: triosvc on hypercorn at >= this share of bare hypercorn-trio.
TARGET_RATIO = 0.85


class BenchmarkError(Exception):
    """A server or wrk did not behave: the run stops with this message."""


# -- child processes ---------------------------------------------------------------------------


class Server:
    """One server program running in a child process pinned to ``cpu``."""

    def __init__(self, name: str, cpu: int, log_dir: Path, nameko_python: str | None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        spec = SERVERS[name]
        command = [spec.python(nameko_python), str(SERVER_DIR / spec.program), *spec.args]
        self.process = spawn(
            pinned(cpu, command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=SERVER_DIR,
        )
        self.port = self._read_port()

    def _read_port(self) -> int:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([stdout], [], [], remaining)[0]:
                raise BenchmarkError(f"{self.name}: not ready after {READY_TIMEOUT}s{self._tail()}")
            chunk = os.read(stdout.fileno(), 1)
            if not chunk:
                raise BenchmarkError(f"{self.name}: exited before it was ready{self._tail()}")
            line += chunk
        match = re.fullmatch(rb"PORT (\d+)\s*", line)
        if match is None:
            raise BenchmarkError(f"{self.name}: expected 'PORT <n>', got {line!r}")
        return int(match[1])

    def _tail(self) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip()
        return f"; its log ({self.log_path}) ends with:\n{text[-2000:]}" if text else ""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (/proc/<pid>/stat)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchmarkError(f"{self.name}: exited during the run{self._tail()}")

    def stop(self) -> None:
        stop(self.process)
        self._log.close()


def http_request(port: int, route: Route, timeout: float = 5.0) -> tuple[int, bytes]:
    """One request on loopback over a raw socket (urllib would import ``http``: see the top).

    The body is read by its Content-Length: quart-trio on hypercorn leaves the connection
    open after its answer even when the request asks for ``Connection: close``.
    """
    body = b"x" * route.body_size
    request = (
        f"{route.method} {route.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + (f"Content-Length: {len(body)}\r\n" if route.method != "GET" else "")
        + "\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None:
            raise BenchmarkError(f"{route.name}: an answer without Content-Length: {head!r}")
        while len(body) < int(length[1]) and (chunk := sock.recv(65536)):
            body += chunk
    return int(head.split(b" ", 2)[1]), body


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One wrk run's figures."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    #: Non-2xx/3xx responses and socket errors (connect, read, write, timeout).
    errors: int
    #: CPU time the server process used per request (user + system), in microseconds: what
    #: a request costs, much less sensitive than req/s to other tenants of a shared machine.
    cpu_us_per_request: float = math.nan
    #: The server's CPU time over the run's wall time: near 100% when it is the bottleneck
    #: and had its CPU to itself; less when others took CPU 0 (or wrk was the bottleneck).
    cpu_percent: float = math.nan


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk(output: str) -> Sample:
    """The figures of wrk's ``--latency`` report."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchmarkError(f"wrk's report has no {pattern!r}:\n{output}")
        return match

    errors = 0
    if non_2xx := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output):
        errors += int(non_2xx[1])
    if socket_errors := re.search(r"Socket errors:(.*)$", output, re.MULTILINE):
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors[1]))
    return Sample(
        requests_per_s=float(find(r"^Requests/sec:\s*([\d.]+)")[1]),
        p50_ms=_duration_ms(find(r"^\s*50%\s+(\S+)")[1]),
        p99_ms=_duration_ms(find(r"^\s*99%\s+(\S+)")[1]),
        requests=int(find(r"^\s*(\d+) requests in")[1]),
        errors=errors,
    )


def run_wrk(args: argparse.Namespace, port: int, route: Route, seconds: int) -> Sample:
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--latency",
        f"http://127.0.0.1:{port}{route.path}",
    ]
    if route.method == "POST":
        command[-1:-1] = ["-s", str(POST_SCRIPT)]
        command += ["--", str(route.body_size)]
    process = spawn(
        pinned(args.client_cpu, command), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = process.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"wrk did not finish within {seconds + 30}s") from None
    finally:
        stop(process)
    if process.returncode != 0:
        raise BenchmarkError(f"wrk failed ({process.returncode}): {err.decode(errors='replace')}")
    return parse_wrk(out.decode())


# -- the run -----------------------------------------------------------------------------------


def check_routes(server: Server) -> None:
    """One GET per route before any load: each server must answer the same thing."""
    for route in ROUTES.values():
        try:
            status, body = http_request(server.port, route)
        except OSError as exc:
            raise BenchmarkError(f"{server.name}: {route.name} failed: {exc}") from None
        try:
            answered = status == 200 and route.check(body)
        except (ValueError, AttributeError):  # not JSON, or not a JSON object
            answered = False
        if not answered:
            raise BenchmarkError(f"{server.name}: {route.name} answered {status} {body[:200]!r}")


def measure(args: argparse.Namespace, server: Server, route: Route) -> Sample:
    """Warm up, then one measured wrk run, with the server's CPU time over it."""
    if args.warmup:
        run_wrk(args, server.port, route, args.warmup)
    cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
    sample = run_wrk(args, server.port, route, args.duration)
    server.check_alive()
    cpu = server.cpu_seconds() - cpu_before
    sample.cpu_percent = 100 * cpu / (time.monotonic() - wall_before)
    sample.cpu_us_per_request = 1e6 * cpu / max(sample.requests, 1)
    return sample


def _progress(round_index: int, rounds: int, server: str, path: str, sample: Sample) -> str:
    return (
        f"  round {round_index + 1}/{rounds}  {server:<17} {path:<10}"
        f" {sample.requests_per_s:>6.0f} req/s  p50 {sample.p50_ms:6.1f} ms"
        f"  p99 {sample.p99_ms:6.1f} ms  {sample.cpu_us_per_request:5.0f} us CPU/req"
        f"  (server CPU {sample.cpu_percent:3.0f}%)"
        + (f"  ERRORS {sample.errors}" if sample.errors else "")
    )


def run(args: argparse.Namespace) -> dict[tuple[str, str], list[Sample]]:
    """Every round: each server in turn (order rotated), started, loaded on each route, stopped."""
    samples: dict[tuple[str, str], list[Sample]] = {
        (s, r): [] for s in args.servers for r in ROUTES
    }
    log_dir = Path(tempfile.mkdtemp(prefix="triosvc-bench-"))
    for round_index in range(args.rounds):
        for server_name in rotated(args.servers, round_index):
            server = Server(server_name, args.server_cpu, log_dir, args.nameko_python)
            try:
                check_routes(server)
                for path in rotated(list(ROUTES), round_index):
                    sample = measure(args, server, ROUTES[path])
                    samples[(server_name, path)].append(sample)
                    print(
                        _progress(round_index, args.rounds, server_name, path, sample), flush=True
                    )
            finally:
                server.stop()
    shutil.rmtree(log_dir, ignore_errors=True)
    return samples


@dataclass
class Summary:
    """The medians of one server and route over the rounds."""

    server: str
    route: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    cpu_percent: float
    min_requests_per_s: float
    max_requests_per_s: float
    errors: int
    #: Ratios to BASELINE on the same route (None without a baseline).
    requests_per_s_ratio: float | None = None
    p50_ratio: float | None = None
    p99_ratio: float | None = None
    #: BASELINE's CPU per request over this one's: the req/s ratio the two would have
    #: with a whole CPU each (above 1 is better, like requests_per_s_ratio).
    cpu_efficiency_ratio: float | None = None
    #: OURS's req/s over this one's on the same route (None without OURS).
    ours_ratio: float | None = None

    @property
    def spread(self) -> float:
        """(max - min) / median of the rounds' req/s: how noisy this row was."""
        return (self.max_requests_per_s - self.min_requests_per_s) / self.requests_per_s


def summarize(samples: dict[tuple[str, str], list[Sample]]) -> list[Summary]:
    rows = {
        key: Summary(
            server=key[0],
            route=key[1],
            requests_per_s=statistics.median(s.requests_per_s for s in runs),
            p50_ms=statistics.median(s.p50_ms for s in runs),
            p99_ms=statistics.median(s.p99_ms for s in runs),
            cpu_us_per_request=statistics.median(s.cpu_us_per_request for s in runs),
            cpu_percent=statistics.median(s.cpu_percent for s in runs),
            min_requests_per_s=min(s.requests_per_s for s in runs),
            max_requests_per_s=max(s.requests_per_s for s in runs),
            errors=sum(s.errors for s in runs),
        )
        for key, runs in samples.items()
    }
    for (_, route), row in rows.items():
        base = rows.get((BASELINE, route))
        if base is not None:
            row.requests_per_s_ratio = row.requests_per_s / base.requests_per_s
            row.p50_ratio = row.p50_ms / base.p50_ms
            row.p99_ratio = row.p99_ms / base.p99_ms
            row.cpu_efficiency_ratio = base.cpu_us_per_request / row.cpu_us_per_request
        ours = rows.get((OURS, route))
        if ours is not None:
            row.ours_ratio = ours.requests_per_s / row.requests_per_s
    return list(rows.values())


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_table(rows: list[Summary]) -> None:
    header = (
        f"{'server':<17} {'route':<9} {'req/s':>6} {'vs bare':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'vs bare':>7} {'CPU us/req':>10} {'bare/it':>7} {'CPU%':>4} {'spread':>6}"
        f" {'errors':>6} {'triosvc/it':>10}"
    )
    print(header)
    print("-" * len(header))
    for route in ROUTES:
        for row in (r for r in rows if r.route == route):
            print(
                f"{row.server:<17} {row.route:<9} {row.requests_per_s:>6.0f}"
                f" {_ratio(row.requests_per_s_ratio):>7}"
                f" {row.p50_ms:>7.1f} {row.p99_ms:>7.1f} {_ratio(row.p99_ratio):>7}"
                f" {row.cpu_us_per_request:>10.0f} {_ratio(row.cpu_efficiency_ratio):>7}"
                f" {row.cpu_percent:>4.0f} {row.spread:>6.0%} {row.errors:>6}"
                f" {_ratio(row.ours_ratio):>10}"
            )
    print(
        "Medians over the rounds. 'vs bare': the figure over bare hypercorn-trio's on the same\n"
        "route (above 1.00x: better for req/s, worse for latency). 'CPU us/req': the server\n"
        "process's CPU time per request; 'bare/it': bare's CPU per request over this one's, the\n"
        "req/s ratio with a whole CPU each (above 1.00x: cheaper than bare). 'CPU%': the server's\n"
        "share of CPU during the run. 'spread': (max - min) / median of the rounds' req/s.\n"
        "'triosvc/it': triosvc's req/s (on its own engine) over this row's."
    )


def _mark(ok: bool) -> str:
    return "met   " if ok else "MISSED"


def verdict(rows: list[Summary]) -> list[str]:
    """The issue's targets, checked on the medians: one line each."""
    by_key = {(r.server, r.route): r for r in rows}
    lines = []
    hello = by_key.get((OURS, "/hello"))
    if hello is not None:
        rps = hello.requests_per_s
        lines.append(
            f"{_mark(rps >= TARGET_HELLO_RPS)} triosvc >= {TARGET_HELLO_RPS} req/s on /hello:"
            f" {rps:.0f} req/s ({1e6 / hello.cpu_us_per_request:.0f} req/s by its CPU per"
            " request, with a whole CPU)"
        )
        nameko = by_key.get(("nameko", "/hello"))
        if nameko is not None:
            ratio = rps / nameko.requests_per_s
            lines.append(
                f"{_mark(ratio >= TARGET_VS_NAMEKO)} triosvc >= {TARGET_VS_NAMEKO:.0f}x nameko on"
                f" /hello: {ratio:.2f}x ({nameko.requests_per_s:.0f} req/s;"
                f" {nameko.cpu_us_per_request / hello.cpu_us_per_request:.2f}x by CPU per request)"
            )
        else:
            ratio = rps / ISSUE_NAMEKO_RPS
            lines.append(
                f"{_mark(ratio >= TARGET_VS_NAMEKO)} triosvc >= {TARGET_VS_NAMEKO:.0f}x nameko on"
                f" /hello: nameko did not run; against the issue's {ISSUE_NAMEKO_RPS} req/s:"
                f" {ratio:.2f}x"
            )
        uvicorn = by_key.get(("uvicorn-starlette", "/hello"))
        if uvicorn is not None:
            ratio = rps / uvicorn.requests_per_s
            lines.append(
                f"{_mark(ratio >= TARGET_VS_UVICORN)} triosvc >= {TARGET_VS_UVICORN}x"
                f" uvicorn+Starlette on /hello: {ratio:.2f}x ({uvicorn.requests_per_s:.0f} req/s;"
                f" {uvicorn.cpu_us_per_request / hello.cpu_us_per_request:.2f}x by CPU per"
                " request)"
            )
    for route in ROUTES:
        ours, bare = by_key.get((OURS, route)), by_key.get((BASELINE, route))
        if ours is not None and bare is not None:
            lines.append(
                f"{_mark(ours.p99_ms < bare.p99_ms)} triosvc's p99 below bare hypercorn-trio's"
                f" on {route}: {ours.p99_ms:.1f} ms against {bare.p99_ms:.1f} ms"
            )
    for route in ROUTES:
        ours = by_key.get(("triosvc-hypercorn", route))
        if ours is not None and ours.requests_per_s_ratio is not None:
            lines.append(
                f"{_mark(ours.requests_per_s_ratio >= TARGET_RATIO)} (earlier target)"
                f" triosvc-hypercorn >= {TARGET_RATIO}x bare hypercorn-trio on {route}:"
                f" {ours.requests_per_s_ratio:.2f}x req/s"
                f" ({_ratio(ours.cpu_efficiency_ratio)} by CPU per request)"
            )
    noisy = [f"{r.server} {r.route}" for r in rows if r.spread > 0.2]
    if noisy:
        lines.append(
            f"noisy: the rounds' req/s differ by more than 20% for {', '.join(noisy)}: the"
            " ratios are that uncertain; run more --rounds, or when the machine is quieter"
            " (a server CPU% under 100 means others took its CPU)"
        )
    return lines


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/http.py",
        description=(
            "Benchmark triosvc's HTTP entrypoint, on its own engine and on hypercorn, against a "
            "bare ASGI app on hypercorn, quart-trio, uvicorn+Starlette and nameko: the same "
            "three endpoints (GET /hello, GET /users/42, POST /echo with 64 KiB), each server "
            "alone in a process pinned to one CPU, wrk pinned to another, on loopback. Prints "
            "medians over interleaved rounds and ratios to bare hypercorn-trio."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds of each measured wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of unmeasured load before each run (0: none)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--server-cpu", type=int, default=0, help="the CPU the servers run on")
    parser.add_argument("--client-cpu", type=int, default=1, help="the CPU wrk runs on")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(SERVERS),
        metavar="NAME",
        help=f"which servers, among: {', '.join(SERVERS)} (default: all but hypercorn-asyncio,"
        " those that cannot start here skipped)",
    )
    parser.add_argument(
        "--nameko-python",
        default=default_nameko_python(),
        metavar="PATH",
        help="the Python of a virtual environment with nameko (default:"
        f" ${NAMEKO_PYTHON_VARIABLE}, else benchmarks/.venv-nameko if it exists; without"
        " either, nameko is skipped)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--duration and --rounds must be >= 1, --warmup >= 0")
    args.explicit_servers = args.servers is not None
    args.nameko_python = absolute_python(args.nameko_python)
    args.servers = list(dict.fromkeys(args.servers or DEFAULT_SERVERS))
    return args


def _preflight(args: argparse.Namespace) -> dict[str, str]:
    """Check the tools and CPUs; drop the servers that cannot start here (and say why)."""
    for tool, hint in (("wrk", "apt-get install wrk"), ("taskset", "apt-get install util-linux")):
        if shutil.which(tool) is None:
            raise BenchmarkError(f"{tool} is not installed ({hint})")
    available = os.sched_getaffinity(0)
    for option, cpu in (("--server-cpu", args.server_cpu), ("--client-cpu", args.client_cpu)):
        if cpu not in available:
            raise BenchmarkError(
                f"{option} {cpu}: this process may only use CPUs {sorted(available)}"
            )
    if args.server_cpu == args.client_cpu:
        print("warning: server and wrk share one CPU; the figures will mostly measure wrk")
    try:
        args.servers, skipped = usable_servers(
            SERVERS, args.servers, args.explicit_servers, args.nameko_python
        )
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    if not args.servers:
        raise BenchmarkError("no server to measure")
    return skipped


def estimate_seconds(args: argparse.Namespace, servers: int | None = None) -> int:
    servers = len(args.servers) if servers is None else servers
    runs = args.rounds * servers * len(ROUTES)
    return runs * (args.duration + args.warmup + 1) + 2 * args.rounds * servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl+C (even where a shell started this with SIGINT ignored) and SIGTERM both stop the
    # run through the finally blocks that stop the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    started = datetime.datetime.now().astimezone()
    clock = time.monotonic()
    try:
        skipped = _preflight(args)
        estimate = estimate_seconds(args)
        revision = triosvc_revision(HERE.parent)
        print(
            f"{started:%Y-%m-%d %H:%M %Z}: {len(args.servers)} servers x {len(ROUTES)} routes"
            f" x {args.rounds} rounds of {args.duration}s (+{args.warmup}s warm-up),"
            f" wrk -t{args.threads} -c{args.connections}; servers on CPU {args.server_cpu},"
            f" wrk on CPU {args.client_cpu}; triosvc at {revision};"
            f" about {estimate // 60}m{estimate % 60:02d}s",
            flush=True,
        )
        load_before = os.getloadavg()
        samples = run(args)
        load_after = os.getloadavg()
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()
    rows = summarize(samples)
    print()
    print_table(rows)
    print()
    verdicts = verdict(rows)
    for line in verdicts:
        print(line)
    print(
        f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}"
        f" ({os.cpu_count()} CPUs); took {time.monotonic() - clock:.0f}s"
    )
    if args.json is not None:
        report = {
            "date": started.isoformat(timespec="seconds"),
            "triosvc": revision,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "skipped": skipped,
            "load_average": [load_before[0], load_after[0]],
            "results": [asdict(row) for row in rows],
            "verdict": verdicts,
            "samples": {f"{s} {r}": [asdict(x) for x in v] for (s, r), v in samples.items()},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
