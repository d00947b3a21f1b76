"""Where one benchmark server spends its CPU under load: py-spy, summarized.

HTTP (the default): starts one server of ``benchmarks/servers/`` pinned to one CPU, loads
one route with wrk pinned to another (as benchmarks/http.py does) and records the server
with ``py-spy record`` meanwhile. WebSocket (``--websocket``): starts one WebSocket server,
opens ``--sockets`` sockets from a client process of benchmarks/websocket.py, subscribes them
to a room, and records the server during one long broadcast fan-out to them.

It prints the share of the samples spent in the server engine (hypercorn and h11, or
triosvc's own engine with httptools and wsproto, and the trio socket calls they make), in
the app (triosvc's code, with the werkzeug, trio and stdlib calls it makes) and in trio's
run loop; the app's functions that cost the most; and the costliest functions of all, by
own time (the innermost frame) and in total (anywhere on the stack). Needs wrk and
``pip install py-spy``.

    python benchmarks/profile_server.py triosvc /users/42
    python benchmarks/profile_server.py hypercorn-trio /users/42 --raw /tmp/bare.txt
    python benchmarks/profile_server.py --websocket triosvc --speedscope /tmp/fanout.json

py-spy samples in its default, blocking mode (it pauses the server for each sample, so the
stacks are exact and the rates under it are lower than the benchmarks').
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_DIR = HERE / "servers"
# benchmarks/http.py would stand in for the standard library's http package, which the
# WebSocket client (benchmarks/websocket.py, loaded from its file) imports.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(SERVER_DIR))

import argparse  # noqa: E402
import collections  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from _processes import load_script, pinned, spawn, stop, stop_all  # noqa: E402


@dataclass(frozen=True)
class Profiled:
    """A server to profile: its program and arguments, and the files of "the app"."""

    program: str
    args: tuple[str, ...]
    #: Prefixes of the files of the app in py-spy's frames.
    app_files: tuple[str, ...]


_TRIOSVC_HTTP = ("triosvc/", "triosvc_app.py")
_TRIOSVC_WS = ("triosvc/", "ws_triosvc.py")
_HUB = ("ws_baseline.py", "ws_hub.py")
HTTP_SERVERS = {
    "triosvc": Profiled("triosvc_app.py", ("triosvc",), _TRIOSVC_HTTP),
    "triosvc-hypercorn": Profiled("triosvc_app.py", ("hypercorn",), _TRIOSVC_HTTP),
    "hypercorn-trio": Profiled("bare_hypercorn.py", ("trio",), ("bare_hypercorn.py",)),
    "hypercorn-asyncio": Profiled("bare_hypercorn.py", ("asyncio",), ("bare_hypercorn.py",)),
    "quart-trio": Profiled("quart_trio_app.py", (), ("quart/", "quart_trio/", "quart_trio_app.py")),
}
#: The WebSocket servers take the outbox bound first (added when started).
WS_SERVERS = {
    "triosvc": Profiled("ws_triosvc.py", ("triosvc",), _TRIOSVC_WS),
    "triosvc-hypercorn": Profiled("ws_triosvc.py", ("hypercorn",), _TRIOSVC_WS),
    "hypercorn-trio": Profiled("ws_baseline.py", ("trio",), _HUB),
    "hypercorn-asyncio": Profiled("ws_baseline.py", ("asyncio",), _HUB),
}
#: Frames of the server engine (what calls the app, and what the app's send calls).
SERVER_FILES = (
    "hypercorn/",
    "h11/",
    "wsproto/",
    "httptools/",
    "wsgiref/",
    "triosvc/web/engines/",
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _wrk(args: argparse.Namespace) -> list[str]:
    return pinned(args.client_cpu, ["wrk", "-t1", f"-c{args.connections}"])


def _py_spy(args: argparse.Namespace, pid: int, raw: Path) -> None:
    """Record ``pid`` for ``--duration`` seconds: its collapsed stacks to ``raw``."""
    spy = ["py-spy", "record", "-p", str(pid), "-d", str(args.duration), "-r", str(args.rate)]
    subprocess.run([*spy, "-f", "raw", "-o", str(raw)], check=True, capture_output=True)


def record_http(args: argparse.Namespace, raw: Path, log_dir: Path) -> str:
    """Run the server under wrk's load and py-spy; return what the load achieved."""
    profiled = HTTP_SERVERS[args.server]
    with (log_dir / "server.log").open("wb") as log:
        server = spawn(
            pinned(args.server_cpu, [sys.executable, profiled.program, *profiled.args]),
            cwd=SERVER_DIR,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            stderr=log,
        )
    assert server.stdout is not None
    if not select.select([server.stdout], [], [], 30)[0] or server.poll() is not None:
        raise SystemExit(f"{args.server} did not start:\n{(log_dir / 'server.log').read_text()}")
    port = int(server.stdout.readline().split()[1])
    url = f"http://127.0.0.1:{port}{args.route}"
    subprocess.run([*_wrk(args), "-d2s", url], check=True, capture_output=True)  # warm-up
    load = spawn([*_wrk(args), f"-d{args.duration + 4}s", "--latency", url], stdout=subprocess.PIPE)
    time.sleep(2)
    _py_spy(args, server.pid, raw)
    out, _ = load.communicate(timeout=args.duration + 30)
    stop(load)
    stop(server)
    rps = re.search(r"Requests/sec:\s*(\S+)", out.decode())
    return f"{args.server} {args.route}: {rps[1] if rps else '?'} req/s under py-spy"


def record_websocket(args: argparse.Namespace, raw: Path, log_dir: Path) -> str:
    """Record the server during one fan-out to ``--sockets`` sockets; what it achieved."""
    ws = load_script("triosvc_bench_websocket", HERE / "websocket.py")
    ws.raise_nofile()
    # websocket.py's Server starts its SERVERS[name], which WS_SERVERS names alike.
    server = ws.Server(args.server, args.server_cpu, log_dir, args.broadcasts, None)
    client = ws.Client(0, server, args.client_cpu, log_dir)
    timeout = 30 + args.sockets / 50
    client.request("control", calls=200)
    client.request("open", timeout + 5, count=args.sockets, within=timeout)
    client.request("join", timeout + 5, room="bench", within=timeout)
    client.request("arm", count=args.broadcasts)
    fanout_timeout = max(60.0, args.sockets * args.broadcasts / 1000)
    client.send("fanout", room="bench", count=args.broadcasts, within=fanout_timeout)
    time.sleep(1)
    _py_spy(args, server.process.pid, raw)
    sent = client.reply(fanout_timeout + 5)
    collected = client.request("collect", fanout_timeout + 5, within=fanout_timeout)
    client.stop()
    server.stop()
    deliveries = args.sockets * args.broadcasts
    if collected["last"] is None:
        return f"{args.server}: the fan-out did not complete"
    seconds = float(collected["last"]) - float(sent["t0"])
    note = (
        ""
        if seconds > args.duration + 1
        else " (it ended before py-spy did: raise --broadcasts, or the profile has idle time)"
    )
    return (
        f"{args.server}: fan-out of {args.broadcasts} broadcasts to {args.sockets} sockets,"
        f" {deliveries / seconds:,.0f} deliveries/s under py-spy, {seconds:.1f}s{note}"
    )


def _frame_file(frame: str) -> str:
    match = _FRAME.match(frame)
    return match["file"] if match else ""


def _without_line(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)


def summarize(raw: Path, app_files: tuple[str, ...], top: int) -> None:
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    total = sum(count for _, count in stacks)
    if not total:
        print("no samples")
        return
    layers: collections.Counter[str] = collections.Counter()
    app_functions: collections.Counter[str] = collections.Counter()
    app_leaves: collections.Counter[str] = collections.Counter()
    callees: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        own[_without_line(frames[-1])] += count
        for function in {_without_line(frame) for frame in frames}:
            inclusive[function] += count
        # A sample belongs to the innermost frame of the server or of the app: time in
        # the engine's send() called by the app is the engine's, time in werkzeug called
        # by the app is the app's.
        owner, index = "loop", -1
        for i, frame in enumerate(frames):
            file = _frame_file(frame)
            if file.startswith(SERVER_FILES):
                owner, index = "server", i
            elif file.startswith(app_files) and not frame.startswith("<module>"):
                owner, index = "app", i
        layers[owner] += count
        if owner == "app":
            function = _without_line(frames[index])
            app_functions[function] += count
            app_leaves[_frame_file(frames[-1]).split("/")[0]] += count
            callee = frames[index + 1] if index + 1 < len(frames) else "(its own lines)"
            callees[function][_without_line(callee)] += count
    names = {
        "server": "the engine: hypercorn/h11, or triosvc's own with httptools/wsproto (and the"
        " trio socket calls they make)",
        "app": "the app (its code, and the werkzeug/trio/stdlib calls it makes)",
        "loop": "the event loop (trio's, or asyncio's: scheduling, epoll) and other",
    }

    def share(count: int) -> str:
        return f"{100 * count / total:5.1f}%"

    print(f"{total} samples")
    for key, count in layers.most_common():
        print(f"  {share(count)}  {names[key]}")
    print("the app's samples by the module of the innermost frame:")
    for key, count in app_leaves.most_common(8):
        print(f"  {share(count)}  {key}")
    print("the app's samples by its innermost app function (and that function's top callees):")
    for function, count in app_functions.most_common(top):
        print(f"  {share(count)}  {function}")
        for callee, n in callees[function].most_common(3):
            print(f"            {share(n)}  {callee[:90]}")
    print("the costliest functions by own time (the innermost frame of a sample):")
    for function, count in own.most_common(top):
        print(f"  {share(count)}  {function[:110]}")
    print("the costliest functions in total (anywhere on the stack), run loop frames left out:")
    shown = 0
    for function, count in inclusive.most_common():
        if function.startswith(("run (trio/_core/_run.py", "unrolled_run (", "<module>")):
            continue
        print(f"  {share(count)}  {function[:110]}")
        shown += 1
        if shown == top:
            break


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/profile_server.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("server", choices=sorted({*HTTP_SERVERS, *WS_SERVERS}))
    parser.add_argument("route", nargs="?", default="/users/42", help="HTTP: the GET route")
    parser.add_argument(
        "--websocket", action="store_true", help="profile a broadcast fan-out instead of HTTP"
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds recorded")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=64, help="HTTP: wrk -c")
    parser.add_argument("--sockets", type=int, default=1000, help="WebSocket: sockets in the room")
    parser.add_argument(
        "--broadcasts",
        type=int,
        default=400,
        help="WebSocket: events of the fan-out (it must outlast --duration)",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--top", type=int, default=12, help="functions listed per table")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    parser.add_argument(
        "--speedscope",
        type=Path,
        help="also write the samples in speedscope's format here (https://www.speedscope.app)",
    )
    args = parser.parse_args()
    servers = WS_SERVERS if args.websocket else HTTP_SERVERS
    if args.server not in servers:
        parser.error(f"{args.server}: not a {'WebSocket' if args.websocket else 'HTTP'} server")
    for tool in ("taskset", "py-spy", *(() if args.websocket else ("wrk",))):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "stacks.txt"
        try:
            record = record_websocket if args.websocket else record_http
            print(record(args, raw, Path(tmp)))
        finally:
            stop_all()
        summarize(raw, servers[args.server].app_files, args.top)
        if args.speedscope is not None:
            write_speedscope(raw, args.speedscope)
            print(f"speedscope profile: {args.speedscope}")


def write_speedscope(raw: Path, path: Path) -> None:
    """The collapsed stacks as a speedscope "sampled" profile (one sample per stack line,
    weighted by its count)."""
    import json

    frames: dict[str, int] = {}
    samples: list[list[int]] = []
    weights: list[int] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples.append([frames.setdefault(frame, len(frames)) for frame in stack.split(";")])
        weights.append(int(count))
    profile = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": name} for name in frames]},
        "profiles": [
            {
                "type": "sampled",
                "name": raw.name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
    }
    path.write_text(json.dumps(profile))


if __name__ == "__main__":
    main()
