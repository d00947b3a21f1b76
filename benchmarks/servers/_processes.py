"""Child processes of the benchmark scripts: started in sessions of their own, pinned to a
CPU, and all stopped on the way out (Ctrl+C and SIGTERM included)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT = 30.0


STOP_TIMEOUT = 5.0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


#: Every child process still running; killed on the way out, Ctrl+C included.
children: list[subprocess.Popen[bytes]] = []


def spawn(command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl+C reaches only this runner, which then stops its children.
    process = subprocess.Popen(command, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    children.append(process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one child of ours (and its process group): SIGTERM, then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    if process in children:
        children.remove(process)


def stop_all() -> None:
    while children:
        stop(children[-1])


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command]


def rotated(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


def terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the children


#: Where the nameko servers' interpreter is named when --nameko-python is not given.
NAMEKO_PYTHON_VARIABLE = "NAMEKO_PYTHON"
#: The virtual environment ``engines.py --setup-nameko`` makes for them, used when it exists.
NAMEKO_VENV = Path(__file__).resolve().parent.parent / ".venv-nameko"


def default_nameko_python() -> str | None:
    """$NAMEKO_PYTHON, else benchmarks/.venv-nameko's python if it exists, else None."""
    named = os.environ.get(NAMEKO_PYTHON_VARIABLE)
    if named:
        return os.path.abspath(named)
    python = NAMEKO_VENV / "bin" / "python"
    return str(python) if python.exists() else None


def absolute_python(path: str | None) -> str | None:
    """``path`` made absolute without resolving symlinks (a venv's python is one; the servers
    start in benchmarks/servers/, where a relative path would name another file)."""
    return os.path.abspath(path) if path else None


@dataclass(frozen=True)
class ServerSpec:
    """How to start one benchmark server: a program of ``benchmarks/servers/`` and its
    arguments, what it imports beyond triosvc's own dependencies, and whether it runs in
    nameko's interpreter (a virtual environment of its own: see benchmarks/README.md)."""

    program: str
    args: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    nameko: bool = False
    #: What it is, for the tables' notes.
    description: str = ""

    def python(self, nameko_python: str | None) -> str:
        if self.nameko:
            if not nameko_python:
                raise ValueError("nameko's interpreter is not known")
            return nameko_python
        return sys.executable

    def missing(self, nameko_python: str | None) -> str | None:
        """Why this server cannot run here (a module it needs is missing), or None."""
        if self.nameko and not nameko_python:
            return (
                f"no interpreter with nameko: give --nameko-python or set"
                f" {NAMEKO_PYTHON_VARIABLE} (see benchmarks/README.md)"
            )
        modules = self.modules + (("nameko", "eventlet") if self.nameko else ())
        if not modules:
            return None
        try:
            check = subprocess.run(
                [self.python(nameko_python), "-c", f"import {', '.join(modules)}"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{self.python(nameko_python)}: {exc}"
        if check.returncode != 0:
            lines = check.stderr.strip().splitlines()
            return lines[-1] if lines else f"import {', '.join(modules)} failed"
        return None


def usable_servers(
    specs: dict[str, ServerSpec], wanted: list[str], explicit: bool, nameko_python: str | None
) -> tuple[list[str], dict[str, str]]:
    """The servers of ``wanted`` that can run here, and why the others cannot.

    Asked for by name (``explicit``), a server that cannot run is an error (ValueError).
    """
    usable, skipped = [], {}
    for name in wanted:
        reason = specs[name].missing(nameko_python)
        if reason is None:
            usable.append(name)
        elif explicit:
            raise ValueError(f"{name} cannot run: {reason}")
        else:
            skipped[name] = reason
    return usable, skipped


def triosvc_revision(root: Path) -> str:
    """The commit of the triosvc being measured (the checkout at ``root``), and whether
    triosvc/ has changes on top."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "triosvc"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} + changes in triosvc/" if changes else commit
