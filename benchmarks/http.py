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

import json
import math
import re
import shutil
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
    import argparse
    from collections.abc import Callable

from _common import POST_PATH, POST_SIZE
from _processes import BenchmarkError, ServerProcess, ServerSpec, pinned, rotated, spawn, stop
from _runner import (
    add_cpu_options,
    add_json_option,
    add_rounds_option,
    add_server_options,
    mark,
    new_parser,
    preflight,
    resolve_servers,
)
from _runner import run as run_benchmark

HERE = Path(__file__).resolve().parent
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


# -- a server's answers ------------------------------------------------------------------------


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


def check_routes(server: ServerProcess) -> None:
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


def measure(args: argparse.Namespace, server: ServerProcess, route: Route) -> Sample:
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
            server = ServerProcess(
                server_name, SERVERS[server_name], args.server_cpu, log_dir, args.nameko_python
            )
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


def _hello_against(hello: Summary, other: Summary, target: float, label: str) -> str:
    """The verdict on triosvc's /hello at >= ``target`` x ``other``'s (``label``)."""
    ratio = hello.requests_per_s / other.requests_per_s
    return (
        f"{mark(ratio >= target)} triosvc >= {target:g}x {label} on /hello: {ratio:.2f}x"
        f" ({other.requests_per_s:.0f} req/s;"
        f" {other.cpu_us_per_request / hello.cpu_us_per_request:.2f}x by CPU per request)"
    )


def verdict(rows: list[Summary]) -> list[str]:
    """The issue's targets, checked on the medians: one line each."""
    by_key = {(r.server, r.route): r for r in rows}
    lines = []
    hello = by_key.get((OURS, "/hello"))
    if hello is not None:
        rps = hello.requests_per_s
        lines.append(
            f"{mark(rps >= TARGET_HELLO_RPS)} triosvc >= {TARGET_HELLO_RPS} req/s on /hello:"
            f" {rps:.0f} req/s ({1e6 / hello.cpu_us_per_request:.0f} req/s by its CPU per"
            " request, with a whole CPU)"
        )
        nameko = by_key.get(("nameko", "/hello"))
        if nameko is not None:
            lines.append(_hello_against(hello, nameko, TARGET_VS_NAMEKO, "nameko"))
        else:
            ratio = rps / ISSUE_NAMEKO_RPS
            lines.append(
                f"{mark(ratio >= TARGET_VS_NAMEKO)} triosvc >= {TARGET_VS_NAMEKO:g}x nameko on"
                f" /hello: nameko did not run; against the issue's {ISSUE_NAMEKO_RPS} req/s:"
                f" {ratio:.2f}x"
            )
        uvicorn = by_key.get(("uvicorn-starlette", "/hello"))
        if uvicorn is not None:
            lines.append(_hello_against(hello, uvicorn, TARGET_VS_UVICORN, "uvicorn+Starlette"))
    for route in ROUTES:
        ours, bare = by_key.get((OURS, route)), by_key.get((BASELINE, route))
        if ours is not None and bare is not None:
            lines.append(
                f"{mark(ours.p99_ms < bare.p99_ms)} triosvc's p99 below bare hypercorn-trio's"
                f" on {route}: {ours.p99_ms:.1f} ms against {bare.p99_ms:.1f} ms"
            )
    for route in ROUTES:
        ours = by_key.get(("triosvc-hypercorn", route))
        if ours is not None and ours.requests_per_s_ratio is not None:
            lines.append(
                f"{mark(ours.requests_per_s_ratio >= TARGET_RATIO)} (earlier target)"
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
    parser = new_parser(
        "http.py",
        (
            "Benchmark triosvc's HTTP entrypoint, on its own engine and on hypercorn, against a "
            "bare ASGI app on hypercorn, quart-trio, uvicorn+Starlette and nameko: the same "
            "three endpoints (GET /hello, GET /users/42, POST /echo with 64 KiB), each server "
            "alone in a process pinned to one CPU, wrk pinned to another, on loopback. Prints "
            "medians over interleaved rounds and ratios to bare hypercorn-trio."
        ),
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds of each measured wrk run")
    add_rounds_option(parser)
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of unmeasured load before each run (0: none)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    add_cpu_options(parser, "the CPU wrk runs on")
    add_server_options(parser, SERVERS, "all but hypercorn-asyncio")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--duration and --rounds must be >= 1, --warmup >= 0")
    resolve_servers(args, DEFAULT_SERVERS)
    return args


def _preflight(args: argparse.Namespace) -> dict[str, str]:
    return preflight(args, SERVERS, ("wrk", "taskset"), "wrk")


def estimate_seconds(args: argparse.Namespace, servers: int | None = None) -> int:
    servers = len(args.servers) if servers is None else servers
    runs = args.rounds * servers * len(ROUTES)
    return runs * (args.duration + args.warmup + 1) + 2 * args.rounds * servers


def _describe(args: argparse.Namespace) -> str:
    return (
        f"{len(args.servers)} servers x {len(ROUTES)} routes x {args.rounds} rounds of"
        f" {args.duration}s (+{args.warmup}s warm-up), wrk -t{args.threads}"
        f" -c{args.connections}; servers on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    done = run_benchmark(args, _preflight, estimate_seconds, _describe, run)
    if isinstance(done, int):
        return done
    samples = done.results
    rows = summarize(samples)
    print()
    print_table(rows)
    print()
    return done.finish(
        args,
        verdict(rows),
        results=[asdict(row) for row in rows],
        samples={f"{s} {r}": [asdict(x) for x in v] for (s, r), v in samples.items()},
    )


if __name__ == "__main__":
    sys.exit(main())
