"""What the ASGI app alone costs per request, without HTTP: triosvc's against a bare one.

Calls each app of ``benchmarks/servers/`` in-process, in one trio run, with a ready-made
``GET`` scope, a ``receive`` that returns the empty body and a ``send`` that drops the
messages; several interleaved repetitions, the minimum kept (the least disturbed by other
work on the machine). hypercorn's own cost is not in these figures: benchmarks/http.py
measures the whole. Use it to see what a change to triosvc's request path saves.

    python benchmarks/app_layer.py
    python benchmarks/app_layer.py --calls 5000 --repeat 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Python put this folder first on sys.path, and benchmarks/http.py would then stand in for
# the standard library's http package, which werkzeug imports: take the folder out, and
# put the servers' folder in (the apps come from there).
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE / "servers"))

import trio  # noqa: E402
from bare_hypercorn import app as bare_app  # noqa: E402
from triosvc_app import CONFIG, HelloService  # noqa: E402

from triosvc.runners import ServiceRunner  # noqa: E402
from triosvc.web.server import WebServer  # noqa: E402

ROUTES = ("/hello", "/users/42")


def triosvc_app() -> object:
    """The ASGI app triosvc's runner serves, built as run_services builds it (not started)."""
    runner = ServiceRunner(CONFIG)
    runner.add_service(HelloService)
    server = runner.shared_extension(WebServer)
    assert isinstance(server, WebServer)
    return server.served_app  # what the engine serves (the access log layer included)


def scope_for(path: str) -> dict[str, object]:
    """A scope as hypercorn builds it for wrk's request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


async def receive() -> dict[str, object]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, object]) -> None:
    pass


async def per_call_us(app, path: str, calls: int) -> float:  # app: any ASGI app
    scope = scope_for(path)
    start = time.perf_counter()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - start) / calls * 1e6


async def main(args: argparse.Namespace) -> None:
    apps = {"hypercorn-trio (bare app)": bare_app, "triosvc": triosvc_app()}
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for name, app in apps.items():
            for path in ROUTES:
                results.setdefault((name, path), []).append(
                    await per_call_us(app, path, args.calls)
                )
    print(f"{'app':<26} {'route':<10} {'min us/call':>11} {'median':>8}")
    for (name, path), times in results.items():
        print(f"{name:<26} {path:<10} {min(times):>11.1f} {statistics.median(times):>8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python benchmarks/app_layer.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=3000, help="calls per repetition")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--cpu", type=int, default=0, help="pin this process to this CPU")
    arguments = parser.parse_args()
    os.sched_setaffinity(0, {arguments.cpu})
    trio.run(main, arguments)
