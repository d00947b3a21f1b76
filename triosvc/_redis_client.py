"""What every part of a node that talks to Redis shares: the client, its holder, outages.

The RPC transport (:mod:`triosvc.rpc._redis`) and the cluster-wide hub
(:mod:`triosvc.ws.redis_cluster`) each open a coredis client of their own through
:func:`make_client`, keep it open in a task of their own nursery with :func:`hold_client`
(shielded from cancellation until they have finished closing), pause between attempts
with :class:`Backoff`, and log outages with :class:`Health`: once when Redis stops
answering, once when it answers again. Needs coredis (the ``redis`` extra): import this
module only once a ``redis://`` URL is in use.
"""

from __future__ import annotations

import math
import urllib.parse
from typing import TYPE_CHECKING, Final

import anyio
import attrs
import coredis
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from coredis.connection import TCPConnection, TCPLocation
from coredis.exceptions import RedisError
from coredis.pool import ConnectionPool
from coredis.retry import NoRetryPolicy

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    import logging

__all__ = [
    "REDIS_ERRORS",
    "Backoff",
    "ConnectionOptions",
    "Health",
    "describe",
    "hold_client",
    "is_outage",
    "make_client",
    "milliseconds",
    "where",
]

#: What a failing round trip to Redis may raise (a lost or refused connection, a stall).
REDIS_ERRORS: Final = (RedisError, OSError)


@attrs.frozen
class ConnectionOptions:
    """What every user of Redis here sets the same way (seconds); tests make them short."""

    #: Bound on a connection attempt, and on each round trip that has no deadline of its own.
    connect_timeout: float = 2.0
    op_timeout: float = 5.0
    #: Bound on closing (the last messages and answers): shielded from cancellation.
    close_timeout: float = 2.0
    #: Retrying after Redis failed, from the first to the longest pause.
    backoff: tuple[float, float] = (0.05, 2.0)
    #: The first part of every key and channel.
    prefix: str = "triosvc"


def where(url: str) -> str:
    """The URL without its credentials, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "redis://<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"redis://{host}:{port}/{parts.path.strip('/') or 0}"


def milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception in its group) says Redis failed a round trip.

    coredis's anyio task groups (a pub/sub subscription's) raise groups, and a
    connection that broke may raise anyio's closed-stream errors.
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(is_outage(inner) for inner in exc.exceptions)
    return isinstance(
        exc, (*REDIS_ERRORS, TimeoutError, anyio.ClosedResourceError, anyio.BrokenResourceError)
    )


class _Connection(TCPConnection):
    """coredis's connection, closing its buffers when a connection attempt fails.

    coredis opens them in ``__init__`` and closes them only once connected, so every
    failed attempt (Redis down) would leave a ResourceWarning for the garbage collector.
    """

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            for value in list(vars(self).values()):
                if isinstance(value, MemoryObjectSendStream | MemoryObjectReceiveStream):
                    value.close()


def make_client(url: str, *, connect_timeout: float, max_connections: int) -> coredis.Redis[str]:
    """A coredis client for ``redis://[user:password@]host[:port][/db]``, never retrying.

    Raises:
        ConfigurationError: ``url`` is not such a URL.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or 6379
        db = int(parts.path.strip("/") or 0)
    except ValueError as exc:
        raise ConfigurationError(f"BROKER_URL={where(url)}: {exc}") from None
    if parts.scheme != "redis" or not host:
        raise ConfigurationError(
            f"BROKER_URL={where(url)}: expected 'redis://[user:password@]host[:port][/db]'"
        )
    pool: ConnectionPool[_Connection] = ConnectionPool(
        connection_class=_Connection,
        location=TCPLocation(host, port),
        db=db,
        username=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password else None,
        decode_responses=True,
        connect_timeout=connect_timeout,
        max_connections=max_connections,
    )
    # No retries: a retried push could queue a call twice, a retried publish deliver twice.
    return coredis.Redis(connection_pool=pool, decode_responses=True, retry_policy=NoRetryPolicy())


async def hold_client(
    client: coredis.Redis[str], release: trio.Event, *, task_status: trio.TaskStatus[None]
) -> None:
    """Keep the client's pool (and its connection tasks) open until ``release``.

    Shielded: a runner that is cancelled still sends its last answers, failures and
    goodbyes; whoever sets ``release`` bounds that time.
    """
    with trio.CancelScope(shield=True):
        async with client:
            task_status.started()
            await release.wait()


class Backoff:
    """Exponential pauses between attempts: first, doubled each time, up to longest."""

    def __init__(self, pauses: tuple[float, float]) -> None:
        self.first, self.longest = pauses
        self.pause = self.first

    def next(self) -> float:
        pause = self.pause
        self.pause = min(self.pause * 2, self.longest)
        return pause

    def reset(self) -> None:
        self.pause = self.first


class Health:
    """Whether Redis answers; each transition is logged once (WARNING).

    ``consequence`` says what the part that owns it does meanwhile, e.g. "RPC calls
    fail with ServiceUnavailable until it answers".
    """

    def __init__(self, logger: logging.Logger, where: str, consequence: str) -> None:
        self.logger = logger
        self.where = where
        self.consequence = consequence
        self.healthy = True
        #: Redis has answered at least once.
        self.reached = False
        #: ``trio.current_time()`` when the current outage began (None: no outage).
        self.since: float | None = None

    def lost(self, exc: BaseException) -> bool:
        """Redis failed a round trip; True if that is news (it was answering)."""
        if not self.healthy:
            return False
        self.healthy = False
        self.since = trio.current_time()
        self.logger.warning(
            "%s Redis at %s (%s): %s; trying again in the background",
            "lost" if self.reached else "cannot reach",
            self.where,
            describe(exc),
            self.consequence,
        )
        return True

    def answered(self) -> bool:
        """Redis answered; True if that is news (it was failing)."""
        news = not self.healthy
        if news:
            self.logger.warning("Redis at %s answers again", self.where)
        self.healthy = self.reached = True
        self.since = None
        return news
