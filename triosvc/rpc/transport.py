"""The transport interface of service RPC: what a broker must do, and nothing more.

The RPC layer (``@rpc``, ``RpcProxy``, the standalone clients) talks to a broker only
through the three small classes below. A transport moves opaque strings; it never
parses a payload. Implementations: :mod:`triosvc.rpc._memory` (``memory://``,
``memory://<name>``) and :mod:`triosvc.rpc._redis` (``redis://host[:port][/db]``, loaded
only when used, since it needs the ``redis`` extra).

Contract
========

Names and messages
    Services are named by strings (the routing key). A payload is ASCII JSON text made
    by the RPC layer: a call ``{"method", "args", "kwargs", "context"}`` one way, a
    reply ``{"result"}`` or ``{"error"}`` the other. A transport may wrap payloads in an
    envelope of its own (a reply address, a deadline, a message id), never change them.

Opening
    :func:`open_transport` (``async with open_transport(url) as transport``) connects
    one trio run (a runner, or a standalone client) to the broker ``url`` names. The
    transport's background tasks (a reply listener, lease renewal) live inside that
    block; leaving it ends them, unregisters what is still registered and answers the
    deliveries still unanswered with ``ServiceUnavailable`` where the broker allows it.
    A transport is used from the trio run that opened it, and from no other thread.

Calling: :meth:`Transport.call`
    ``await transport.call(service, payload, deadline)`` hands the call to exactly one
    live instance of ``service`` and returns that instance's reply payload. ``deadline``
    is in trio's clock of the calling run; the transport honours it itself, since the
    outcome depends on how far the call got:

    - No live instance: raise ``UnknownService`` at once, without waiting.
    - Every live instance's inbox full: wait for room until ``deadline``, then raise
      ``ServiceUnavailable``: the call never reached an instance. A broker that cannot
      be reached fails the same way, within the deadline.
    - The instance it was queued to stops before taking it: hand it to another live
      instance with room, else raise ``ServiceUnavailable``.
    - Delivered, and no reply by ``deadline``: raise ``RpcTimeout`` (the call may have
      run, in part or in full).
    - Cancellation (the caller's own cancel scope) is safe at any point: the call is
      withdrawn if it is still queued, a late reply is dropped, and nothing is left
      behind that grows (on Redis: every key has a lifetime).

    ``deadline`` also travels with the call, so that the instance stops working on it
    when nobody waits for the answer any more.

Serving: :meth:`Transport.register` and :class:`Inbox`
    ``async with transport.register(service, capacity=n) as inbox`` makes this run a
    live instance of ``service`` for the block. Calls queue in the instance's inbox, at
    most ``capacity`` of them; the server *pulls* them with :meth:`Inbox.receive` when
    it has a free worker, so that a busy instance leaves calls to idle ones.
    :meth:`Inbox.close` (plain, idempotent) stops the instance being live at once: new
    calls go to other instances (or fail with ``UnknownService``), calls queued here
    and not yet received are handed on as :meth:`Transport.call` says, and ``receive``
    raises ``trio.EndOfChannel``. Deliveries already received can still be answered.
    Leaving the block closes the inbox and unregisters, even when cancelled.

    Several instances of a service (in one runner each) share its calls: each call is
    received by exactly one instance while that instance lives. The memory transport
    sends calls round-robin among the instances with room; Redis to the first idle
    instance that asks (the instances share one queue, and ``capacity`` is pooled).

Answering: :class:`Delivery`
    A received call has its ``payload`` and its ``deadline`` in trio's clock *of the
    receiving run*: the transport converts the caller's deadline, counting the time the
    call spent queued. ``await delivery.reply(payload)`` answers it, once; it never
    raises for a caller that has gone (the reply is dropped) and takes bounded time.

Liveness
    An instance is live from ``register`` until ``close``. A transport across processes
    must also notice instances that die without closing: Redis holds a lease per
    instance, renewed in the background, so that a dead one stops being live within
    15 seconds (SPEC §6).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

__all__ = ["Delivery", "Inbox", "Transport", "open_transport"]


class Delivery(ABC):
    """One call received by an instance: its payload, its deadline, a way to answer."""

    #: The call, as the caller's RPC layer wrote it (JSON text).
    payload: str
    #: When the caller stops waiting, in ``trio.current_time()`` of the receiving run.
    deadline: float

    @abstractmethod
    async def reply(self, payload: str) -> None:
        """Send the answer to the caller; once; dropped without error if it has gone."""


class Inbox(ABC):
    """The calls queued for one registered instance of a service."""

    @abstractmethod
    async def receive(self) -> Delivery:
        """The next call for this instance; ``trio.EndOfChannel`` once closed."""

    @abstractmethod
    def close(self) -> None:
        """Stop being live at once; hand on the calls queued and not received yet."""


class Transport(ABC):
    """One trio run's connection to a broker: it calls services and serves some."""

    #: The broker URL, as given to :func:`open_transport`.
    url: str

    @abstractmethod
    async def call(self, service: str, payload: str, deadline: float) -> str:
        """Deliver a call to one live instance of ``service``; its reply payload.

        Raises:
            UnknownService: at once, when ``service`` has no live instance.
            ServiceUnavailable: when the call could not be handed to an instance
                before ``deadline``, or the instance stopped before taking it.
            RpcTimeout: delivered, but not answered by ``deadline``.
        """

    def register(self, service: str, *, capacity: int) -> AbstractAsyncContextManager[Inbox]:
        """``async with transport.register(name, capacity=n) as inbox``: serve ``name``."""
        if capacity < 1:
            raise ValueError(f"an inbox holds at least one call, not {capacity}")
        return self._register(service, capacity)

    @abstractmethod
    def _register(self, service: str, capacity: int) -> AbstractAsyncContextManager[Inbox]:
        """:meth:`register`, ``capacity`` checked."""


#: How to open each scheme's transport: ``factory(url)`` gives an async context manager.
TRANSPORTS: dict[str, Callable[[str], AbstractAsyncContextManager[Transport]]] = {}


def open_transport(url: str) -> AbstractAsyncContextManager[Transport]:
    """``async with open_transport(url) as transport``: connect to the broker ``url``.

    Raises:
        ConfigurationError: for a scheme that has no transport (yet).
    """
    from . import _memory  # noqa: F401 - registers memory://

    scheme = url.partition("://")[0]
    if scheme == "redis" and scheme not in TRANSPORTS:
        _load_redis()
    factory = TRANSPORTS.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"BROKER_URL={url!r}: no RPC transport for {scheme!r}; expected 'memory://' "
            "or 'redis://host[:port][/db]'"
        )
    return factory(url)


def _load_redis() -> None:
    """Register redis://; coredis is an optional dependency (the ``redis`` extra)."""
    try:
        from . import _redis  # noqa: F401 - registers redis://
    except ImportError as exc:
        raise ConfigurationError(
            "BROKER_URL is a redis:// URL, but the Redis transport needs coredis, which "
            f"cannot be imported ({exc}); install it with: pip install 'triosvc[redis]'"
        ) from None
