"""Child processes of the benchmark scripts: started in sessions of their own, pinned to a
CPU, and all stopped on the way out (Ctrl+C and SIGTERM included)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

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
