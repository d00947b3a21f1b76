"""A ``redis-server`` of the tests' own: on a free loopback port, in a temporary directory,
persisting nothing; stopped and started again by the tests of outages."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import pytest
import trio

if TYPE_CHECKING:
    from pathlib import Path

#: Real seconds a starting or stopping server may take.
SERVER_TIMEOUT = 10


def require_redis() -> str:
    """The path of ``redis-server``; skips without it (and coredis), fails if CI is set."""
    missing = []
    executable = shutil.which("redis-server")
    if executable is None:
        missing.append("redis-server (apt-get install redis-server)")
    try:
        import coredis  # noqa: F401
    except ImportError:
        missing.append("coredis (pip install -e '.[redis,test]')")
    if missing:
        what = " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, but the Redis tests cannot run without {what}")
        pytest.skip(f"the Redis tests need {what}; set CI=1 to make their absence a failure")
    assert executable is not None
    return executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` keep its port."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None
        log = (self.directory / "redis.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # A real process starting: poll, briefly and within a bound.
        give_up = time.monotonic() + SERVER_TIMEOUT
        while True:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"redis-server did not start; see {self.directory}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(SERVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def start_async(self) -> None:
        await trio.to_thread.run_sync(self.start)

    async def stop_async(self) -> None:
        await trio.to_thread.run_sync(self.stop)

    def command(self, *args: str) -> str:
        """Send one command (plain RESP2, no client library); its answer as text."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=SERVER_TIMEOUT) as conn:
            conn.sendall(request.encode())
            answer = conn.recv(65536).decode()
        if answer.startswith("-"):
            raise RuntimeError(f"redis-server refused {args}: {answer.strip()}")
        return answer[1:].strip()
