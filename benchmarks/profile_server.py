"""Where one benchmark server spends its CPU under wrk's load: py-spy, summarized by layer.

Starts one server of ``benchmarks/servers/`` pinned to one CPU, loads one route with wrk
pinned to another (as benchmarks/http.py does), records the server with ``py-spy record``
meanwhile, and prints the share of the samples spent in hypercorn (and h11), in the app
(triosvc's code, with the werkzeug, trio and stdlib calls it makes), and in trio's run
loop; then the app's functions that cost the most. Needs wrk and ``pip install py-spy``.

    python benchmarks/profile_server.py triosvc /users/42
    python benchmarks/profile_server.py hypercorn-trio /users/42 --raw /tmp/bare.txt

py-spy samples in its default, blocking mode (it pauses the server for each sample, so
the stacks are exact and the req/s under it are lower than benchmarks/http.py's).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER_DIR = Path(__file__).resolve().parent / "servers"
#: name -> (program, the prefix of the files of "the app" in py-spy's frames)
SERVERS = {
    "triosvc": ("triosvc_app.py", ("triosvc/", "triosvc_app.py")),
    "hypercorn-trio": ("bare_hypercorn.py", ("bare_hypercorn.py", "_common.py")),
    "quart-trio": ("quart_trio_app.py", ("quart/", "quart_trio/", "quart_trio_app.py")),
}
#: Frames of the HTTP server itself (what the app is called from, and what its send calls).
SERVER_FILES = ("hypercorn/", "h11/", "wsgiref/")
#: triosvc's engine wrapper belongs to the app layer's caller, not to the app's own cost.
NOT_APP = ("triosvc/web/engines/",)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _spawn(command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, start_new_session=True, **kwargs)  # type: ignore[call-overload]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def record(args: argparse.Namespace, raw: Path, log: Path) -> str:
    """Run the server under load and py-spy; return wrk's report. The server logs to ``log``."""
    program, _ = SERVERS[args.server]
    children: list[subprocess.Popen[bytes]] = []
    try:
        server = _spawn(
            ["taskset", "-c", str(args.server_cpu), sys.executable, program],
            cwd=SERVER_DIR,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        children.append(server)
        assert server.stdout is not None
        if not select.select([server.stdout], [], [], 30)[0] or server.poll() is not None:
            raise SystemExit(f"{args.server} did not start:\n{log.read_text()}")
        port = int(server.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}{args.route}"
        wrk = ["taskset", "-c", str(args.client_cpu), "wrk", "-t1", f"-c{args.connections}"]
        subprocess.run([*wrk, "-d2s", url], check=True, capture_output=True)  # warm-up
        load = _spawn([*wrk, f"-d{args.duration + 4}s", "--latency", url], stdout=subprocess.PIPE)
        children.append(load)
        time.sleep(2)
        spy = ["py-spy", "record", "-p", str(server.pid), "-d", str(args.duration)]
        spy += ["-r", str(args.rate), "-f", "raw", "-o", str(raw)]
        subprocess.run(spy, check=True, capture_output=True)
        out, _ = load.communicate(timeout=args.duration + 30)
        return out.decode()
    finally:
        for child in reversed(children):
            _stop(child)


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
    layers: collections.Counter[str] = collections.Counter()
    app_functions: collections.Counter[str] = collections.Counter()
    app_leaves: collections.Counter[str] = collections.Counter()
    callees: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for frames, count in stacks:
        # A sample belongs to the innermost frame of the server or of the app: time in
        # hypercorn's send() called by the app is hypercorn's, time in werkzeug called
        # by the app is the app's.
        owner, index = "loop", -1
        for i, frame in enumerate(frames):
            file = _frame_file(frame)
            if file.startswith(app_files) and not file.startswith(NOT_APP):
                if not frame.startswith("<module>"):
                    owner, index = "app", i
            elif file.startswith(SERVER_FILES):
                owner, index = "server", i
        layers[owner] += count
        if owner == "app":
            function = _without_line(frames[index])
            app_functions[function] += count
            app_leaves[_frame_file(frames[-1]).split("/")[0]] += count
            callee = frames[index + 1] if index + 1 < len(frames) else "(its own lines)"
            callees[function][_without_line(callee)] += count
    names = {
        "server": "hypercorn + h11 (and the trio socket calls they make)",
        "app": "the app (its code, and the werkzeug/trio/stdlib calls it makes)",
        "loop": "trio's run loop (scheduling, epoll) and other",
    }
    print(f"{total} samples")
    for key, count in layers.most_common():
        print(f"  {100 * count / total:5.1f}%  {names[key]}")
    print("the app's samples by the module of the innermost frame:")
    for key, count in app_leaves.most_common(8):
        print(f"  {100 * count / total:5.1f}%  {key}")
    print("the app's samples by its innermost app function (and that function's top callees):")
    for function, count in app_functions.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {function}")
        for callee, n in callees[function].most_common(3):
            print(f"            {100 * n / total:5.1f}%  {callee[:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/profile_server.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("server", choices=list(SERVERS))
    parser.add_argument("route", nargs="?", default="/users/42")
    parser.add_argument("--duration", type=int, default=20, help="seconds recorded")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--top", type=int, default=12, help="app functions listed")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    for tool in ("wrk", "taskset", "py-spy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "stacks.txt"
        report = record(args, raw, Path(tmp) / "server.log")
        rps = re.search(r"Requests/sec:\s*(\S+)", report)
        print(f"{args.server} {args.route}: {rps[1] if rps else '?'} req/s under py-spy")
        summarize(raw, SERVERS[args.server][1], args.top)


if __name__ == "__main__":
    main()
