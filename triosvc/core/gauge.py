"""A count of things in progress that can be waited on to fall to zero."""

from __future__ import annotations

import trio

__all__ = ["Gauge"]


class Gauge:
    """How many calls (or connections) are in progress; ``wait_zero`` for none."""

    def __init__(self) -> None:
        self.value = 0
        self._zero = trio.Event()
        self._zero.set()

    def up(self) -> None:
        self.value += 1
        if self.value == 1:
            self._zero = trio.Event()

    def down(self) -> None:
        self.value -= 1
        if self.value == 0:
            self._zero.set()

    async def wait_zero(self) -> None:
        while self.value:
            await self._zero.wait()
        await trio.lowlevel.checkpoint()
