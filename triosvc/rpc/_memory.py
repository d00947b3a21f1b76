"""The memory transport: brokers inside one process (``memory://``, ``memory://<name>``).

Each broker name (``""`` for ``memory://``) is one process-global broker, shared by every
runner and client of the process that uses that URL, whichever thread (and so whichever
trio run) they are in. What it guarantees:

- a call goes to exactly one live instance, round-robin among those with room in their
  inbox; an instance is live from ``register`` until its inbox closes (at once, when its
  runner begins to stop);
- every inbox holds at most ``capacity`` calls; a caller finding every inbox full waits
  for room until its deadline, then gets ``ServiceUnavailable``;
- a call withdrawn by its caller (cancelled, timed out) leaves nothing behind: it is
  removed from the inbox it waits in, and a late reply is dropped;
- a transport that closes answers the calls it received and did not answer with
  ``ServiceUnavailable``, so that no caller waits for a runner that has gone.

The broker's state is guarded by one lock. A task of another trio run (a blocking client's
background thread) is woken through that run's :class:`trio.lowlevel.TrioToken`; a task
of the same run directly. Deadlines cross runs as time left on ``time.monotonic()``,
since each trio run has a clock of its own.
"""

from __future__ import annotations

import contextlib
import enum
import re
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import trio

from ..exceptions import ConfigurationError, RpcTimeout, ServiceUnavailable, UnknownService
from .transport import TRANSPORTS, Delivery, Inbox, Transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["MemoryTransport", "broker_name", "open_memory_transport"]

SCHEME: Final = "memory://"
#: What may follow ``memory://``: a name for a separate broker (empty: the default one).
BROKER_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{0,100}")

_BROKERS: dict[str, _Broker] = {}
_BROKERS_LOCK = threading.Lock()


def broker_name(url: str) -> str:
    """The broker name in a ``memory://[name]`` URL; ConfigurationError if it is not one."""
    name = url[len(SCHEME) :] if url.startswith(SCHEME) else None
    if name is None or not BROKER_NAME.fullmatch(name):
        raise ConfigurationError(
            f"BROKER_URL={url!r}: expected 'memory://' or 'memory://<name>' (letters, "
            "digits, '_', '.', '-'; up to 100)"
        )
    return name


class _Waker:
    """Wakes one task of one trio run, from any thread of the process."""

    __slots__ = ("event", "token")

    def __init__(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.event = trio.Event()

    def wake(self) -> None:
        try:
            same_run = trio.lowlevel.current_trio_token() is self.token
        except RuntimeError:  # not in a trio run at all
            same_run = False
        if same_run:
            self.event.set()
        else:
            # That run may have ended: then nobody is left to wake.
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self.event.set)


class _State(enum.Enum):
    NEW = "new"
    QUEUED = "queued"  # in an instance's inbox
    RECEIVED = "received"  # taken by the instance, not answered yet
    DONE = "done"  # answered, or failed by the transport
    WITHDRAWN = "withdrawn"  # the caller stopped waiting


class _Call:
    """One call in flight: what the caller sent, and where its answer goes."""

    __slots__ = (
        "error",
        "expires",
        "instance",
        "local_deadline",
        "origin",
        "payload",
        "reply",
        "state",
        "waker",
    )

    def __init__(self, payload: str, deadline: float) -> None:
        self.payload = payload
        self.origin = trio.lowlevel.current_trio_token()
        #: The deadline in the caller's trio clock; and on time.monotonic() for other runs.
        self.local_deadline = deadline
        self.expires = time.monotonic() + (deadline - trio.current_time())
        self.waker = _Waker()
        self.state = _State.NEW
        self.instance: _Instance | None = None
        self.reply: str | None = None
        self.error: Exception | None = None

    # Every method below runs under the broker's lock.

    def answer(self, payload: str) -> None:
        if self.state is _State.RECEIVED:
            self.state = _State.DONE
            self.reply = payload
            self.waker.wake()

    def fail(self, error: Exception) -> None:
        if self.state in (_State.NEW, _State.QUEUED, _State.RECEIVED):
            self.state = _State.DONE
            self.error = error
            self.waker.wake()

    def withdraw(self) -> None:
        if self.state is _State.QUEUED and self.instance is not None:
            self.instance.queue.remove(self)
            self.instance.service.wake_waiters()
        if self.state is not _State.DONE:
            self.state = _State.WITHDRAWN


class _Instance:
    """One registered instance of a service: its inbox, and the calls it received."""

    __slots__ = ("capacity", "live", "queue", "received", "receiver", "service", "token")

    def __init__(self, service: _Service, capacity: int) -> None:
        self.service = service
        self.capacity = capacity
        self.token = trio.lowlevel.current_trio_token()
        self.queue: deque[_Call] = deque()
        self.received: set[_Call] = set()
        self.live = True
        self.receiver: _Waker | None = None

    def enqueue(self, call: _Call) -> None:
        self.queue.append(call)
        call.instance = self
        call.state = _State.QUEUED
        if self.receiver is not None:
            self.receiver.wake()
            self.receiver = None


class _Service:
    """The live instances of one service name on a broker, and the callers waiting for room."""

    __slots__ = ("instances", "name", "next", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.instances: list[_Instance] = []
        self.next = 0
        self.waiters: set[_Waker] = set()

    def offer(self, call: _Call) -> bool:
        """Queue ``call`` to the next instance with room, round-robin; False if none has."""
        count = len(self.instances)
        for step in range(count):
            index = (self.next + step) % count
            instance = self.instances[index]
            if len(instance.queue) < instance.capacity:
                self.next = (index + 1) % count
                instance.enqueue(call)
                return True
        return False

    def remove(self, instance: _Instance) -> None:
        index = self.instances.index(instance)
        del self.instances[index]
        if index < self.next:
            self.next -= 1
        if self.next >= len(self.instances):
            self.next = 0

    def wake_waiters(self) -> None:
        """Room may have freed (or the last instance gone): let waiting callers look again."""
        for waiter in self.waiters:
            waiter.wake()
        self.waiters.clear()


class _Broker:
    """A process-global broker: the services registered under one ``memory://`` name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.services: dict[str, _Service] = {}
        #: How many open transports use this broker (guarded by _BROKERS_LOCK).
        self.users = 0

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.name}"


class _MemoryDelivery(Delivery):
    __slots__ = ("_call", "_lock", "deadline", "payload")

    def __init__(self, call: _Call, deadline: float, lock: threading.Lock) -> None:
        self._call = call
        self._lock = lock
        self.payload = call.payload
        self.deadline = deadline

    async def reply(self, payload: str) -> None:
        call = self._call
        with self._lock:
            if call.instance is not None:
                call.instance.received.discard(call)
            call.answer(payload)
        await trio.lowlevel.cancel_shielded_checkpoint()


class _MemoryInbox(Inbox):
    def __init__(self, broker: _Broker, instance: _Instance) -> None:
        self._broker = broker
        self._instance = instance

    async def receive(self) -> Delivery:
        instance = self._instance
        lock = self._broker.lock
        while True:
            await trio.lowlevel.checkpoint()
            waker = _Waker()
            with lock:
                if instance.queue:
                    call = instance.queue.popleft()
                    call.state = _State.RECEIVED
                    instance.received.add(call)
                    instance.service.wake_waiters()
                    return _MemoryDelivery(call, self._deadline(call), lock)
                if not instance.live:
                    raise trio.EndOfChannel
                instance.receiver = waker
            try:
                await waker.event.wait()
            finally:
                with lock:
                    if instance.receiver is waker:
                        instance.receiver = None

    def _deadline(self, call: _Call) -> float:
        if call.origin is self._instance.token:
            return call.local_deadline
        return trio.current_time() + (call.expires - time.monotonic())

    def close(self) -> None:
        broker = self._broker
        instance = self._instance
        with broker.lock:
            if not instance.live:
                return
            instance.live = False
            service = instance.service
            service.remove(instance)
            pending = list(instance.queue)
            instance.queue.clear()
            for call in pending:
                call.instance = None
                if not service.offer(call):
                    call.fail(
                        ServiceUnavailable(
                            f"the instance of {service.name!r} this call was queued to stopped "
                            "before taking it, and no other instance had room"
                        )
                    )
            if not service.instances and broker.services.get(service.name) is service:
                del broker.services[service.name]
            service.wake_waiters()
            if instance.receiver is not None:
                instance.receiver.wake()
                instance.receiver = None


class MemoryTransport(Transport):
    """A trio run's connection to one process-global memory broker."""

    def __init__(self, url: str, broker: _Broker) -> None:
        self.url = url
        self._broker = broker
        self._instances: list[_Instance] = []

    async def call(self, service: str, payload: str, deadline: float) -> str:
        broker = self._broker
        call = _Call(payload, deadline)
        try:
            while True:
                room = _Waker()
                with broker.lock:
                    entry = broker.services.get(service)
                    if entry is None or not entry.instances:
                        raise UnknownService(
                            f"no live instance of service {service!r} on {broker.url}"
                        )
                    if entry.offer(call):
                        break
                    entry.waiters.add(room)
                try:
                    with trio.move_on_at(deadline) as waiting:
                        await room.event.wait()
                finally:
                    with broker.lock:
                        entry.waiters.discard(room)
                if waiting.cancelled_caught:
                    raise ServiceUnavailable(
                        f"every instance of {service!r} kept a full inbox until the call's "
                        "deadline; the call was not delivered"
                    )
            with trio.move_on_at(deadline) as waiting:
                await call.waker.event.wait()
            if waiting.cancelled_caught:
                raise RpcTimeout(f"{service!r} did not answer by the call's deadline")
        except BaseException:
            with broker.lock:
                call.withdraw()
            raise
        if call.error is not None:
            raise call.error
        assert call.reply is not None
        return call.reply

    @asynccontextmanager
    async def _register(self, service: str, capacity: int) -> AsyncIterator[Inbox]:
        broker = self._broker
        with broker.lock:
            entry = broker.services.get(service)
            if entry is None:
                entry = broker.services[service] = _Service(service)
            instance = _Instance(entry, capacity)
            entry.instances.append(instance)
            entry.wake_waiters()
        self._instances.append(instance)
        inbox = _MemoryInbox(broker, instance)
        try:
            yield inbox
        finally:
            inbox.close()

    def close(self) -> None:
        """Unregister everything; fail the calls received and never answered."""
        broker = self._broker
        with broker.lock:
            instances, self._instances = self._instances, []
        for instance in instances:
            _MemoryInbox(broker, instance).close()
        with broker.lock:
            for instance in instances:
                for call in list(instance.received):
                    call.fail(
                        ServiceUnavailable(
                            f"the runner serving {instance.service.name!r} stopped before "
                            "answering this call"
                        )
                    )
                instance.received.clear()


@asynccontextmanager
async def open_memory_transport(url: str) -> AsyncIterator[MemoryTransport]:
    """Connect the current trio run to the process-global broker ``url`` names."""
    name = broker_name(url)
    with _BROKERS_LOCK:
        broker = _BROKERS.get(name)
        if broker is None:
            broker = _BROKERS[name] = _Broker(name)
        broker.users += 1
    transport = MemoryTransport(url, broker)
    try:
        await trio.lowlevel.checkpoint()
        yield transport
    finally:
        transport.close()
        with _BROKERS_LOCK:
            broker.users -= 1
            if broker.users == 0 and not broker.services:
                del _BROKERS[name]


TRANSPORTS["memory"] = open_memory_transport
