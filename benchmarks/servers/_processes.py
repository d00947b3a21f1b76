"""Child processes of the benchmark scripts: started in sessions of their own, pinned to a
CPU, and all stopped on the way out (Ctrl+C and SIGTERM included); the servers among them
(:class:`ServerSpec`, :class:`ServerProcess`) and the client processes (:class:`Child`)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

#: benchmarks/servers/: the server programs, and where every child process runs.
SERVER_DIR = Path(__file__).resolve().parent

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


class BenchmarkError(Exception):
    """A server, a client or a tool did not behave: the run stops with this message."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class Child:
    """A child process pinned to ``cpu``, run in benchmarks/servers/: its stderr goes to
    ``<log_dir>/<name>.log``, its stdout is read one line at a time."""

    def __init__(
        self,
        name: str,
        command: list[str],
        cpu: int,
        log_dir: Path,
        stdin: int = subprocess.DEVNULL,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self._buffer = b""
        self.process = spawn(
            pinned(cpu, command),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=SERVER_DIR,
        )

    def read_line(self, timeout: float) -> bytes:
        """The next line the process prints (without its newline), waiting ``timeout``
        seconds at the most."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([stdout], [], [], remaining)[0]:
                raise BenchmarkError(f"{self.name}: no answer after {timeout:.0f}s{self.tail()}")
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                raise BenchmarkError(f"{self.name}: exited{self.tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def tail(self) -> str:
        """The end of the process's log, to quote in an error ("" when it is empty)."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip()
        return f"; its log ({self.log_path}) ends with:\n{text[-2000:]}" if text else ""

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchmarkError(f"{self.name}: exited during the run{self.tail()}")

    def stop(self) -> None:
        stop(self.process)
        self._log.close()


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


class ServerProcess(Child):
    """One benchmark server (``spec``) in a child process pinned to ``cpu``, started with
    ``arguments`` before the spec's own; ready once it prints ``PORT <n>``."""

    def __init__(
        self,
        name: str,
        spec: ServerSpec,
        cpu: int,
        log_dir: Path,
        nameko_python: str | None,
        arguments: tuple[str, ...] = (),
    ) -> None:
        program = str(SERVER_DIR / spec.program)
        command = [spec.python(nameko_python), program, *arguments, *spec.args]
        super().__init__(name, command, cpu, log_dir)
        line = self.read_line(READY_TIMEOUT)
        match = re.fullmatch(rb"PORT (\d+)\s*", line)
        if match is None:
            raise BenchmarkError(f"{name}: expected 'PORT <n>', got {line!r}")
        self.port = int(match[1])


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


def load_script(name: str, path: Path) -> ModuleType:
    """The benchmark script at ``path`` imported as module ``name``: http.py and
    websocket.py cannot be imported by their own names (they would stand in for the
    standard library's http package and the websocket-client package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Redis:
    """A ``redis-server`` of this run: a free port, a temporary folder, nothing persisted."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = (log_dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(log_dir),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        give_up = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"redis-server did not start; see {log_dir}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
