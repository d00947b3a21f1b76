"""What the benchmark runners (``http.py``, ``websocket.py``, and ``engines.py`` over both)
share around their measurements: the common options, the checks before a run, and the frame
of a run (its first line, Ctrl+C and SIGTERM, every child stopped on the way out, the load
average, the JSON report's common fields)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from _processes import (
    NAMEKO_PYTHON_VARIABLE,
    BenchmarkError,
    absolute_python,
    default_nameko_python,
    stop_all,
    terminate,
    triosvc_revision,
    usable_servers,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _processes import ServerSpec

#: The checkout whose triosvc is measured.
ROOT = Path(__file__).resolve().parents[2]
#: How to install the tools a runner may need.
TOOL_HINTS = {"wrk": "apt-get install wrk", "taskset": "apt-get install util-linux"}

Results = TypeVar("Results")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (their help says what happens instead)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def new_parser(script: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``benchmarks/<script>``: its usage line, ``description``, the defaults
    shown."""
    return argparse.ArgumentParser(
        prog=f"python benchmarks/{script}", description=description, formatter_class=HelpFormatter
    )


def add_rounds_option(
    parser: argparse.ArgumentParser, help: str = "interleaved rounds (median taken)"
) -> None:
    """``--rounds``: how many interleaved rounds (3 without it)."""
    parser.add_argument("--rounds", type=int, default=3, help=help)


def add_json_option(
    parser: argparse.ArgumentParser, help: str = "also write the results here"
) -> None:
    """``--json``: where to write the report (none without it)."""
    parser.add_argument("--json", type=Path, metavar="PATH", help=help)


def add_server_options(parser: argparse.ArgumentParser, names: Iterable[str], default: str) -> None:
    """``--servers`` (among ``names``; ``default`` says which run without it) and
    ``--nameko-python``."""
    names = list(names)
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=names,
        metavar="NAME",
        help=f"which servers, among: {', '.join(names)} (default: {default}; those that cannot"
        " start here are skipped)",
    )
    parser.add_argument(
        "--nameko-python",
        default=default_nameko_python(),
        metavar="PATH",
        help="the Python of a virtual environment with nameko (default:"
        f" ${NAMEKO_PYTHON_VARIABLE}, else benchmarks/.venv-nameko if it exists; without"
        " either, nameko is skipped)",
    )


def add_cpu_options(parser: argparse.ArgumentParser, client_help: str) -> None:
    """``--server-cpu`` and ``--client-cpu`` (what drives the servers: ``client_help``)."""
    parser.add_argument("--server-cpu", type=int, default=0, help="the CPU the servers run on")
    parser.add_argument("--client-cpu", type=int, default=1, help=client_help)


def resolve_servers(args: argparse.Namespace, default: Iterable[str]) -> None:
    """After parsing: the servers asked for (``default`` without ``--servers``), each once;
    whether they were named (``args.explicit_servers``); nameko's interpreter, absolute."""
    args.explicit_servers = args.servers is not None
    args.nameko_python = absolute_python(args.nameko_python)
    args.servers = list(dict.fromkeys(args.servers or default))


def preflight(
    args: argparse.Namespace, specs: dict[str, ServerSpec], tools: Iterable[str], load: str
) -> dict[str, str]:
    """Check the tools and CPUs; drop the servers that cannot start here (and say why).

    What is dropped, and why. ``load``: what drives the servers, for a warning.
    """
    for tool in tools:
        if shutil.which(tool) is None:
            raise BenchmarkError(f"{tool} is not installed ({TOOL_HINTS[tool]})")
    available = os.sched_getaffinity(0)
    for option, cpu in (("--server-cpu", args.server_cpu), ("--client-cpu", args.client_cpu)):
        if cpu not in available:
            raise BenchmarkError(
                f"{option} {cpu}: this process may only use CPUs {sorted(available)}"
            )
    if args.server_cpu == args.client_cpu:
        print(f"warning: the servers and {load} share one CPU: the figures will measure both")
    try:
        args.servers, skipped = usable_servers(
            specs, args.servers, args.explicit_servers, args.nameko_python
        )
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    if not args.servers:
        raise BenchmarkError("no server to measure")
    return skipped


def mark(ok: bool) -> str:
    """A verdict line's first word."""
    return "met   " if ok else "MISSED"


@dataclass
class Run(Generic[Results]):
    """One run's results, and what it ran in."""

    results: Results
    started: datetime.datetime
    #: time.monotonic() when it started.
    clock: float
    #: The triosvc measured (``triosvc_revision``).
    revision: str
    #: The servers that could not run here, and why.
    skipped: dict[str, str]
    load_before: float
    load_after: float

    def finish(self, args: argparse.Namespace, verdicts: list[str], **sections: object) -> int:
        """The end of the run, after its tables: the verdicts (one line each), the load
        average and the time it took; the report to ``args.json`` if given (when, what and
        where, the verdicts, then ``sections``). The exit status: 0."""
        for line in verdicts:
            print(line)
        print(
            f"load average before/after: {self.load_before:.2f} / {self.load_after:.2f}"
            f" ({os.cpu_count()} CPUs); took {time.monotonic() - self.clock:.0f}s"
        )
        if args.json is not None:
            report = {
                "date": self.started.isoformat(timespec="seconds"),
                "triosvc": self.revision,
                "settings": {k: v for k, v in vars(args).items() if k != "json"},
                "skipped": self.skipped,
                "load_average": [self.load_before, self.load_after],
                "verdict": verdicts,
                **sections,
            }
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        return 0


def run(
    args: argparse.Namespace,
    check: Callable[[argparse.Namespace], dict[str, str]],
    estimate: Callable[[argparse.Namespace], int],
    describe: Callable[[argparse.Namespace], str],
    measure: Callable[[argparse.Namespace], Results],
) -> Run[Results] | int:
    """``check`` (the preflight: the servers skipped), then ``measure``, after a line that
    says what runs (``describe``), on which triosvc, and for about how long (``estimate``,
    in seconds). Every child is stopped on the way out; an error or Ctrl+C (or SIGTERM)
    returns the exit status (1 or 130) instead of the run."""
    # Ctrl+C (even where a shell started this with SIGINT ignored) and SIGTERM both stop the
    # run through the finally blocks that stop the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    started = datetime.datetime.now().astimezone()
    clock = time.monotonic()
    try:
        skipped = check(args)
        seconds = estimate(args)
        revision = triosvc_revision(ROOT)
        print(
            f"{started:%Y-%m-%d %H:%M %Z}: {describe(args)}; triosvc at {revision};"
            f" about {seconds // 60}m{seconds % 60:02d}s",
            flush=True,
        )
        load_before = os.getloadavg()[0]
        results = measure(args)
        load_after = os.getloadavg()[0]
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()
    return Run(results, started, clock, revision, skipped, load_before, load_after)
