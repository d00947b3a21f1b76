"""Every benchmark in one go, side by side: triosvc on its own engine and on hypercorn-trio, a
bare ASGI app on hypercorn (trio and asyncio workers), quart-trio, uvicorn+Starlette and
nameko; HTTP (``GET /hello``, ``GET /users/42``, a 64 KiB ``POST``) and WebSocket (call round
trips on many sockets, broadcast fan-out to 1,000 sockets).

It runs ``benchmarks/http.py`` and then ``benchmarks/websocket.py`` (each prints its own
tables and targets, servers interleaved in every round), with short rounds by default, then
prints one table of the medians of both, each rate with triosvc's figure over it, and the
issue's targets. A server that cannot start here (a package not installed, no interpreter
with nameko) is skipped, and the run says so. See benchmarks/README.md.

    python benchmarks/engines.py                                # about 9 minutes on 2 CPUs
    python benchmarks/engines.py --rounds 5 --nameko-python .venv-nameko/bin/python
"""

# benchmarks/http.py would stand in for the standard library's http package and
# benchmarks/websocket.py for the websocket-client package: this folder is taken off
# sys.path first (the servers' folder put in, for the shared helpers), and both scripts are
# loaded from their files under other names.

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE / "servers"))

import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from _processes import NAMEKO_VENV, load_script  # noqa: E402
from _runner import add_json_option, add_rounds_option, add_server_options, new_parser  # noqa: E402

if TYPE_CHECKING:
    import argparse

bench_http = load_script("triosvc_bench_http", HERE / "http.py")
bench_ws = load_script("triosvc_bench_websocket", HERE / "websocket.py")

#: The order of the side-by-side table's rows.
SERVER_ORDER = list(dict.fromkeys([*bench_http.SERVERS, *bench_ws.SERVERS]))
OURS = "triosvc"


# -- the run -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = new_parser(
        "engines.py",
        __doc__.split("\n\n")[0].replace("\n", " "),
    )
    add_rounds_option(parser, "interleaved rounds of each benchmark (median taken)")
    parser.add_argument("--duration", type=int, default=2, help="seconds of each HTTP wrk run")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of unmeasured wrk load before each run"
    )
    parser.add_argument(
        "--sockets", type=int, default=1000, help="WebSocket sockets in the fan-out's room"
    )
    parser.add_argument(
        "--broadcasts", type=int, default=50, help="events of one fan-out (to every socket)"
    )
    parser.add_argument(
        "--echo-sockets",
        type=int,
        default=50,
        help="sockets making sequential WebSocket calls at once (the round trips)",
    )
    parser.add_argument(
        "--echo-duration", type=float, default=2, help="seconds of each measured round-trip run"
    )
    add_server_options(parser, SERVER_ORDER, "each script's own")
    parser.add_argument(
        "--setup-nameko",
        action="store_true",
        help="first make benchmarks/.venv-nameko with pip (requirements-nameko.txt), and use it",
    )
    parser.add_argument("--skip-http", action="store_true", help="run only the WebSocket part")
    parser.add_argument("--skip-websocket", action="store_true", help="run only the HTTP part")
    add_json_option(parser, "also write both scripts' results here")
    args = parser.parse_args(argv)
    if args.skip_http and args.skip_websocket:
        parser.error("--skip-http and --skip-websocket leave nothing to run")
    return args


def setup_nameko() -> str:
    """Make (or update) benchmarks/.venv-nameko with nameko in it; its python."""
    python = NAMEKO_VENV / "bin" / "python"
    if not python.exists():
        print(f"making a virtual environment for nameko: {NAMEKO_VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(NAMEKO_VENV)], check=True)
    requirements = HERE / "requirements-nameko.txt"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True
    )
    return str(python)


def _common_argv(args: argparse.Namespace, known: dict[str, object]) -> list[str]:
    argv = ["--rounds", str(args.rounds)]
    if args.nameko_python:
        argv += ["--nameko-python", args.nameko_python]
    if args.servers:
        servers = [name for name in args.servers if name in known]
        if servers:
            argv += ["--servers", *servers]
    return argv


def http_argv(args: argparse.Namespace, json_path: Path) -> list[str]:
    return [
        *_common_argv(args, bench_http.SERVERS),
        *("--duration", str(args.duration), "--warmup", str(args.warmup)),
        *("--json", str(json_path)),
    ]


def websocket_argv(args: argparse.Namespace, json_path: Path) -> list[str]:
    return [
        *_common_argv(args, bench_ws.SERVERS),
        *("--sockets", str(args.sockets), "--broadcasts", str(args.broadcasts)),
        *("--fanout-warmup", "5", "--echo-sockets", str(args.echo_sockets)),
        *("--echo-duration", str(args.echo_duration), "--echo-warmup", "0.5"),
        *("--json", str(json_path)),
    ]


def _estimate(args: argparse.Namespace) -> int:
    seconds = 0
    if not args.skip_http:
        http_args = bench_http.parse_args(http_argv(args, Path(os.devnull)))
        seconds += bench_http.estimate_seconds(http_args)
    if not args.skip_websocket:
        ws_args = bench_ws.parse_args(websocket_argv(args, Path(os.devnull)))
        seconds += bench_ws.estimate_seconds(ws_args)
    return seconds


# -- the side-by-side table --------------------------------------------------------------------


#: (title, the figure's key, "rate" when more is better: its ratio is triosvc's over it)
Column = tuple[str, str, str]


def collect(
    http_report: dict | None, ws_report: dict | None, echo_sockets: int
) -> tuple[dict[str, dict[str, float]], list[Column]]:
    """Per server, the figures of the side-by-side table; and its columns."""
    table: dict[str, dict[str, float]] = {}
    columns: list[Column] = []
    if http_report is not None:
        for route in bench_http.ROUTES:
            columns.append((f"{route} req/s", f"{route} rps", "rate"))
        for row in http_report["results"]:
            figures = table.setdefault(row["server"], {})
            figures[f"{row['route']} rps"] = row["requests_per_s"]
            figures[f"{row['route']} p99"] = row["p99_ms"]
            figures[f"{row['route']} cpu"] = row["cpu_us_per_request"]
    if ws_report is not None:
        n = echo_sockets
        columns.append((f"ws calls/s x{n}", "echo rps", "rate"))
        columns.append(("fan-out deliv/s", "fanout rps", "rate"))
        for name, row in ws_report["summary"].items():
            figures = table.setdefault(name, {})
            figures["echo rps"] = row.get(f"echo{n}_per_s", math.nan)
            figures["echo p99"] = row.get(f"echo{n}_p99_ms", math.nan)
            figures["echo cpu"] = row.get(f"echo{n}_cpu_us", math.nan)
            figures["fanout rps"] = row["deliveries_per_s"]
            figures["fanout cpu"] = row["fanout_cpu_us"]
    return table, columns


def _cell(value: float | None, ours: float | None, inverse: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    if ours is None or math.isnan(ours) or not value:
        return text
    ratio = value / ours if inverse else ours / value
    return f"{text} ({ratio:.2f}x)"


def print_side_by_side(table: dict[str, dict[str, float]], columns: list[Column]) -> None:
    names = [name for name in SERVER_ORDER if name in table]
    ours = table.get(OURS, {})
    sections = (
        ("Rates (medians); in brackets, triosvc's rate over this one's", "rps", False),
        ("p99 latency, ms; in brackets, this one's over triosvc's", "p99", True),
        (
            "Server CPU time, us per request, call or delivery; in brackets, this one's over"
            " triosvc's",
            "cpu",
            True,
        ),
    )
    for title, kind, inverse in sections:
        keys = [
            (heading.rsplit(" ", 1)[0], key.rsplit(" ", 1)[0] + " " + kind)
            for heading, key, _ in columns
        ]
        keys = [(h, k) for h, k in keys if any(k in table[n] for n in names)]
        if not keys:
            continue
        widths = [max(len(h), 18) for h, _ in keys]
        print(title)
        header = f"{'server':<17} " + " ".join(
            f"{h:>{w}}" for (h, _), w in zip(keys, widths, strict=True)
        )
        print(header)
        print("-" * len(header))
        for name in names:
            cells = [
                _cell(table[name].get(key), None if name == OURS else ours.get(key), inverse)
                for _, key in keys
            ]
            print(
                f"{name:<17} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
            )
        print()


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.setup_nameko:
        try:
            args.nameko_python = setup_nameko()
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"error: could not set nameko up: {exc}", file=sys.stderr)
            return 1
    started = datetime.datetime.now().astimezone()
    clock = time.monotonic()
    estimate = _estimate(args)
    print(
        f"{started:%Y-%m-%d %H:%M %Z}: HTTP and WebSocket benchmarks, {args.rounds} rounds each;"
        f" about {estimate // 60}m{estimate % 60:02d}s in all (servers that cannot start are"
        " skipped, which shortens it)",
        flush=True,
    )
    reports: dict[str, dict[str, Any] | None] = {"http": None, "websocket": None}
    with tempfile.TemporaryDirectory(prefix="triosvc-engines-") as tmp:
        for part, title, script, script_argv, skip in (
            ("http", "HTTP", bench_http, http_argv, args.skip_http),
            ("websocket", "WebSocket", bench_ws, websocket_argv, args.skip_websocket),
        ):
            if skip:
                continue
            json_path = Path(tmp) / f"{part}.json"
            print(f"\n== {title} (benchmarks/{part}.py) ==", flush=True)
            status = script.main(script_argv(args, json_path))
            if status == 130:
                return status
            reports[part] = _read(json_path) if status == 0 else None
    http_report, ws_report = reports["http"], reports["websocket"]
    if http_report is None and ws_report is None:
        print("error: neither benchmark completed", file=sys.stderr)
        return 1
    table, columns = collect(http_report, ws_report, args.echo_sockets)
    print(f"\n== Side by side: {started:%Y-%m-%d %H:%M} ==\n")
    print_side_by_side(table, columns)
    print("Targets (issue 5), as each script checked them:")
    for report in (http_report, ws_report):
        for line in (report or {}).get("verdict", []):
            print(f"  {line}")
    skipped = {**(http_report or {}).get("skipped", {}), **(ws_report or {}).get("skipped", {})}
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(f"took {time.monotonic() - clock:.0f}s")
    if args.json is not None:
        report = {
            "date": started.isoformat(timespec="seconds"),
            "http": http_report,
            "websocket": ws_report,
            "side_by_side": table,
        }
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if http_report is not None and ws_report is not None else 1


if __name__ == "__main__":
    sys.exit(main())
