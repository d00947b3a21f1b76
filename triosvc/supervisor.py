"""``triosvc run --workers N``: N processes serving one listening socket.

The parent binds the socket (so that a port in use, or the port 0 picks, is settled
once, before any worker starts), then runs N copies of the same ``triosvc run``
command, each serving the inherited socket (``WEB_SERVER_ADDRESS=fd://N``): the kernel
gives each new connection to whichever worker accepts it first, and a connection
waiting in the backlog is never lost when one worker goes. Each worker is a full node
with its own services and its own connection to the (Redis) broker.

Signals: workers run in sessions of their own, so that a Ctrl+C in the terminal
reaches the parent alone, which passes it on. The first SIGINT or SIGTERM stops every
worker gracefully (SIGTERM: each drains as ``triosvc run`` does) and waits for them, up
to the grace period and a margin, then kills what is left; a second SIGINT stops them
at once. A worker that exits while no stop was asked is restarted, after a pause that
grows while it keeps failing.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from typing import TYPE_CHECKING, Final

import attrs
import trio

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Sequence

__all__ = ["EXIT_KILLED", "supervise"]

LOGGER = logging.getLogger("triosvc.supervisor")

#: Exit status after a second SIGINT stopped the services at once (128 + SIGINT).
EXIT_KILLED: Final = 130
#: Seconds, beyond the grace period, a stopping worker gets before it is killed.
STOP_MARGIN: Final = 5.0
#: Seconds a worker must have run for its next failure to count as a first one.
STEADY_AFTER: Final = 60.0
#: Pause before the first restart of a failing worker; it doubles up to MAX_PAUSE.
FIRST_PAUSE: Final = 0.5
MAX_PAUSE: Final = 30.0


@attrs.define
class _Workers:
    command: Sequence[str]
    listener: socket.socket
    stop_timeout: float
    stopping: trio.Event = attrs.field(factory=trio.Event)
    killed: bool = False
    running: set[trio.Process] = attrs.field(factory=set)

    async def keep_running(self, number: int) -> None:
        """Run worker ``number`` until a stop is asked, restarting it when it exits."""
        failures = 0
        while not self.stopping.is_set():
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                list(self.command),
                pass_fds=(self.listener.fileno(),),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
            LOGGER.info("worker %d started (pid %d)", number, process.pid)
            self.running.add(process)
            try:
                status = await process.wait()
            finally:
                self.running.discard(process)
                if process.returncode is None:  # the supervisor itself was cancelled
                    process.kill()
            if self.stopping.is_set():
                return
            failures = 1 if trio.current_time() - started > STEADY_AFTER else failures + 1
            pause = min(MAX_PAUSE, FIRST_PAUSE * 2 ** (failures - 1))
            LOGGER.warning(
                "worker %d (pid %d) exited with status %d; restarting it in %gs",
                number,
                process.pid,
                status,
                pause,
            )
            with trio.move_on_after(pause):
                await self.stopping.wait()

    def signal_all(self, signum: signal.Signals) -> None:
        for process in self.running:
            if process.returncode is None:
                process.send_signal(signum)

    async def watch_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if not self.stopping.is_set():
                LOGGER.info(
                    "%s received: stopping the workers gracefully; a second Ctrl+C stops "
                    "them at once",
                    signal.Signals(signum).name,
                )
                self.stopping.set()
                # Once every worker has closed its copy too, connecting is refused
                # rather than left waiting in a backlog nobody takes from.
                self.listener.close()
                self.signal_all(signal.SIGTERM)
            elif signum == signal.SIGINT:
                LOGGER.warning("SIGINT received while stopping: stopping the workers at once")
                self.killed = True
                self.signal_all(signal.SIGINT)

    async def kill_late_workers(self) -> None:
        await self.stopping.wait()
        await trio.sleep(self.stop_timeout)
        if self.running:
            LOGGER.error(
                "workers still running %gs after the stop: killing them", self.stop_timeout
            )
            self.signal_all(signal.SIGKILL)


async def supervise(
    command: Sequence[str], listener: socket.socket, workers: int, *, grace_period: float
) -> int:
    """Keep ``workers`` processes of ``command`` running until a signal; they inherit
    ``listener`` and serve it. The listener is closed here once the stop begins.

    Returns the exit status: 0 after a graceful stop, 130 after a second SIGINT.
    """
    supervisor = _Workers(command, listener, grace_period + STOP_MARGIN)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.watch_signals, signals)
            nursery.start_soon(supervisor.kill_late_workers)
            async with trio.open_nursery() as processes:
                for number in range(1, workers + 1):
                    processes.start_soon(supervisor.keep_running, number)
            nursery.cancel_scope.cancel()
    LOGGER.info("every worker stopped")
    return EXIT_KILLED if supervisor.killed else 0
