"""The cluster-wide hub on Redis (``BROKER_URL: redis://...``): SPEC §6, issue 4 item 4.

Every runner is a *node* (a uuid of its own). Its hub keeps its own sockets as before;
this module's :class:`RedisClusterLink` carries the rest over Redis, on a coredis client
of its own (opened with :mod:`triosvc._redis_client`, as the RPC transport opens its
own: the hub's lifetime is the WebSocket endpoint's, which need not have an RPC server).

Messages: pub/sub
=================

Two pub/sub channels per node: ``<prefix>:hub:broadcast``, which every node subscribes
to, and ``<prefix>:hub:node:<id>``, its own.

- ``broadcast(channel, ...)`` delivers to the node's own subscribers at once and queues
  the already-encoded message for the broadcast channel; every other node hands it to
  its own subscribers of ``channel``. Nodes do not filter by their view of who
  subscribes where: a subscription made a moment ago on another node must get the next
  broadcast, and the view may lag.
- ``unicast``, ``subscribe`` and ``unsubscribe`` for a socket of another node (found in
  the view, below) are *directed* messages on that node's channel, applied there by the
  hub itself. ``subscribe`` also updates the view at once (optimistically), so that
  ``get_subscriptions`` on the calling node shows it; the owner's next snapshot confirms.
- Nothing blocks a hub method: messages go into a bounded queue (``queue_size``) that one
  publisher task drains, taking what is queued into one round trip (a Lua script
  publishing each run of consecutive messages for the same Redis channel as one
  payload, so that a burst of broadcasts costs one ``PUBLISH``). A full queue drops the
  message: counted (``ClusterStatistics.dropped``), logged at most every 10 s, and
  remembered as *lost*, as are messages Redis failed to take.
- Order: one publisher, one Redis connection, one script per batch, and each node
  reads both its channels on one subscription connection; so each socket receives what
  one node sent it (broadcasts and unicasts alike) in the order that node sent it.
  Messages from different nodes have no order among them.

Losses are made visible, never silent
-------------------------------------

Redis pub/sub forgets what is published while a subscriber is disconnected. So:

- When a node's subscription comes back after it was lost (Redis restarted, the
  connection broke, or no message at all came for ``silence_limit`` (15 s) although
  Redis answers: the node hears its own snapshots, so silence means a dead
  subscription), every socket of that node receives the event ``hub_gap`` with
  ``{"channels": <its subscriptions>, "duration": <seconds without a subscription>}``.
- A node that lost messages on its way out (full queue, Redis failing) publishes a gap
  notice, first thing once Redis takes messages again, naming the channels and sockets
  they were for (or "everything", past ``max_lost`` names); each node sends ``hub_gap``
  to its sockets concerned, with the channels concerned.

A socket may be told twice of one outage (by its node and by a sender); a client that
receives ``hub_gap`` should refetch what it shows.

The view: snapshots with lifetimes
==================================

Each node writes a snapshot of its sockets and their subscriptions (JSON, with a
sequence number) to ``<prefix>:hub:nodes:<id>`` with a lifetime of ``snapshot_ttl``
(20 s), and adds its id to the set ``<prefix>:hub:nodes`` (lifetime twice ``snapshot_ttl``,
renewed by every write). It rewrites the snapshot every ``refresh_interval`` (5 s), and
after a change: at once for the first, then at most once per ``change_delay`` (1 s),
so that a storm of connections costs one write a second. The write (a script) also
publishes the snapshot on the broadcast channel, so that the other nodes take it at
once without a round trip each. Every ``refresh_interval`` each node also reads every
snapshot (a script: the set's members and their keys, in one round trip, removing the
ids whose key has expired), and replaces its view with what it read; a snapshot older
than the one a node holds (by sequence number) is ignored.

Hence, while Redis answers: a change to a node's sockets is seen by the others within
a round trip, or ``change_delay`` in a storm; if that notice is lost, within
``change_delay + refresh_interval`` (6 s; SPEC §6 allows 10). A node that dies stops
writing, its key expires within ``snapshot_ttl``, and the next read forgets it: within
``snapshot_ttl + refresh_interval`` (25 s; SPEC allows 30). A directed message that
Redis delivers to no subscriber (the node has died, or its subscription is down) makes
the sender forget that node at once, until it writes a newer snapshot. A node that
cannot read the view for ``snapshot_ttl`` forgets the other nodes (their sockets are
unknown: ``ConnectionNotFound``) until it can. A node that stops cleanly deletes its
key, leaves the set and says so: forgotten at once.

Every key has a lifetime; pub/sub keeps nothing. All runners on one Redis database with
the same prefix form one hub.

Choices, against the plainer design this started from (a "changed" notice on which every
node fetches the changed node's key, and ``SCAN`` + ``MGET`` for the periodic read):

- The notice *is* the snapshot: a change costs one message to each node instead of one
  ``GET`` from each node (N nodes changing at once would make N² round trips).
- A set of node ids read by one script instead of ``SCAN``: one round trip whose cost
  grows with the nodes, not with the database (the RPC transport's keys live there too).
- Sequence numbers, so that a read in flight never replaces a newer snapshot taken from
  a notice; the time a snapshot came, so that a read begun before a new node published
  its first does not forget it.
- ``PUBLISH``'s count of receivers: a directed message that reached nobody tells the
  sender at once that the node has gone (or lost its subscription).
- Gap notices from senders: a dropped message is made known to its sockets even when the
  receiving node's own subscription never broke.

Structured concurrency
======================

:func:`open_redis_cluster` runs, in a nursery of its own: the client's holder (shielded,
as the RPC transport's), the subscriber, the publisher and the refresher. Leaving it
(the endpoint's lifespan ends once every socket has closed) detaches the link from the
hub, publishes what is still queued, deletes the node's snapshot and says goodbye,
within ``close_timeout`` and shielded from cancellation; a process killed outright is
forgotten by the lifetimes above.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import attrs
import coredis  # noqa: TC002 - at run time: without coredis this module must not load
import trio
from coredis.retry import NoRetryPolicy

from .._redis_client import (
    Backoff,
    ConnectionOptions,
    Health,
    hold_client,
    is_outage,
    make_client,
    milliseconds,
    where,
)
from .cluster import GAP_EVENT, ClusterStatistics
from .protocol import encode_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from coredis.commands.script import Script

    from .hub import WebSocketHub

__all__ = ["DEFAULTS", "ClusterOptions", "RedisClusterLink", "open_redis_cluster"]

LOGGER = logging.getLogger("triosvc.ws.cluster")


@attrs.frozen
class ClusterOptions(ConnectionOptions):
    """Timings and bounds of the cluster-wide hub, in seconds; tests make them short."""

    #: Lifetime of a node's snapshot: a node that stops writing is forgotten after it.
    snapshot_ttl: float = 20.0
    #: How often each node rewrites its snapshot and reads everyone's.
    refresh_interval: float = 5.0
    #: Least time between two writes of a node's snapshot after changes.
    change_delay: float = 1.0
    #: Messages waiting for the publisher; beyond, messages for other nodes are dropped.
    queue_size: int = 10_000
    #: Characters of messages the publisher takes into one round trip (then one more).
    batch_size: int = 256 * 1024
    #: Channels and sockets a gap notice names; beyond, it says "everything".
    max_lost: int = 1000
    #: A subscription that hears nothing this long (not even this node's own snapshots,
    #: published every ``refresh_interval``) while Redis answers is made again: a gap.
    silence_limit: float = 15.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.refresh_interval < self.snapshot_ttl:
            raise ValueError("ClusterOptions: 0 < refresh_interval < snapshot_ttl")
        if self.silence_limit <= self.refresh_interval:
            raise ValueError("ClusterOptions: silence_limit > refresh_interval")
        if self.change_delay < 0 or self.queue_size < 1:
            raise ValueError("ClusterOptions: change_delay >= 0 and queue_size >= 1")


#: The options :func:`open_redis_cluster` uses unless given others (tests replace it).
DEFAULTS = ClusterOptions()

#: Seconds between two warnings about a full outgoing queue.
LOG_EVERY: Final = 10.0

# -- scripts -----------------------------------------------------------------------------------

#: KEYS: the set of nodes, this node's key. ARGV: node id, snapshot, lifetime (ms),
#: broadcast channel, the notice's header. Writes the snapshot and tells every node.
WRITE: Final = """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ARGV[2])
return 1
"""

#: KEYS: the set of nodes. ARGV: the prefix of node keys. Every live node's id and
#: snapshot, flat; the ids whose key has expired leave the set.
READ: Final = """
local found = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local snapshot = redis.call('GET', ARGV[1] .. id)
  if snapshot then
    found[#found + 1] = id
    found[#found + 1] = snapshot
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return found
"""

#: KEYS: the set of nodes, this node's key. ARGV: node id, broadcast channel, goodbye.
GONE: Final = """
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

#: ARGV: channel, payload, channel, payload, ... Published in that order; the number of
#: subscribers each reached.
PUBLISH: Final = """
local reached = {}
for i = 1, #ARGV, 2 do
  reached[#reached + 1] = redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return reached
"""

# -- payloads ----------------------------------------------------------------------------------
#
# Each payload is lines: "<kind> <origin node>", then the kind's body. Messages are the hub's
# encoded events, compact JSON without a raw newline, so lines can hold them as they are.
#
#   b  broadcasts: pairs of lines, the channel (JSON) and the message
#   d  directed: pairs of lines, [op, socket id, channel or null] (JSON) and the message
#      (empty but for op "u"); op "u" unicast, "s" subscribe, "r" unsubscribe
#   v  a snapshot: {"seq": n, "sockets": {socket id: [channel, ...]}} (JSON)
#   g  a gap notice: {"duration": s, "channels": [...] or null (all), "sockets": [...]}
#   x  the node has stopped

_BROADCAST = "b"
_DIRECTED = "d"
_SNAPSHOT = "v"
_GAP = "g"
_GONE = "x"


class _Item(NamedTuple):
    """One message waiting for the publisher."""

    target: str  # the Redis channel
    kind: str
    head: str
    body: str
    #: What is lost if it never leaves: the hub channel, or the socket it is for.
    channel: str | None
    socket_id: str | None


class _Outage(Exception):
    """A round trip to Redis failed (already told to the link's Health)."""


@attrs.define
class _Lost:
    """What this node failed to send since its last gap notice."""

    limit: int
    channels: set[str] = attrs.Factory(set)
    sockets: set[str] = attrs.Factory(set)
    everything: bool = False
    since: float | None = None

    def add(self, item: _Item) -> None:
        if self.since is None:
            self.since = trio.current_time()
        if self.everything:
            return
        if item.channel is not None:
            self.channels.add(item.channel)
        if item.socket_id is not None:
            self.sockets.add(item.socket_id)
        self._bound()

    def merge(self, other: _Lost) -> None:
        """Take back what a notice that failed to go out was to say."""
        if other.since is None:
            return
        self.since = other.since if self.since is None else min(self.since, other.since)
        self.everything |= other.everything
        if not self.everything:
            self.channels |= other.channels
            self.sockets |= other.sockets
        self._bound()

    def _bound(self) -> None:
        if self.everything or len(self.channels) + len(self.sockets) > self.limit:
            self.everything = True
            self.channels.clear()
            self.sockets.clear()

    def notice(self, origin: str) -> str:
        assert self.since is not None
        body = {
            "duration": round(trio.current_time() - self.since, 3),
            "channels": None if self.everything else sorted(self.channels),
            "sockets": sorted(self.sockets),
        }
        return f"{_GAP} {origin}\n{json.dumps(body)}"


def _head(value: object) -> str:
    # ASCII JSON: no newline, no lone surrogate, whatever the channel's name holds.
    return json.dumps(value, separators=(",", ":"))


class RedisClusterLink:
    """One node's link to the others through Redis; see the module's docstring."""

    def __init__(
        self,
        url: str,
        client: coredis.Redis[str],
        hub: WebSocketHub,
        options: ClusterOptions,
    ) -> None:
        self.client = client
        self.hub = hub
        self.options = options
        self.where = where(url)
        self.node_id = uuid.uuid4().hex
        prefix = f"{options.prefix}:hub"
        self._all = f"{prefix}:broadcast"
        self._node_prefix = f"{prefix}:node:"
        self._own = self._node_prefix + self.node_id
        self._nodes_key = f"{prefix}:nodes"
        self._key_prefix = f"{prefix}:nodes:"
        self._key = self._key_prefix + self.node_id
        scripts = {"WRITE": WRITE, "READ": READ, "GONE": GONE, "PUBLISH": PUBLISH}
        self._scripts: dict[str, Script[str]] = {
            name: client.register_script(text) for name, text in scripts.items()
        }
        self._health = Health(
            LOGGER,
            self.where,
            "WebSocket hub messages for other nodes are dropped until it answers, and "
            "their sockets are told (hub_gap)",
        )
        self._outgoing, self._queued = trio.open_memory_channel[_Item](options.queue_size)
        self._lost = _Lost(options.max_lost)
        # The view: other nodes' sockets (id -> channels, sorted), and where each socket is.
        self._nodes: dict[str, dict[str, tuple[str, ...]]] = {}
        self._where: dict[str, str] = {}
        #: The newest snapshot taken from each node (kept for a node forgotten early), and
        #: when it came.
        self._seqs: dict[str, int] = {}
        self._updated: dict[str, float] = {}
        self._seq = 0
        #: Set when this node's sockets changed; the refresher writes the snapshot.
        self._dirty = trio.Event()
        #: Read every snapshot at the next refresh (after a gap).
        self._resync = False
        self._last_write = -float("inf")
        self._last_read = trio.current_time()
        self._last_heard = trio.current_time()
        self._listen_scope: trio.CancelScope | None = None
        #: The refresher's: cancelled first when closing, so that no snapshot is written
        #: after the goodbye.
        self._refresh_scope = trio.CancelScope()
        self._published_all = trio.Event()
        self._published = 0
        self._received = 0
        self._dropped = 0
        self._gaps = 0
        self._last_warning = -float("inf")
        self._unwarned = 0

    # -- what the hub calls (trio's thread; never blocks) --------------------------------------

    def changed(self) -> None:
        self._dirty.set()

    def broadcast(self, channel: str, message: str) -> None:
        self._queue(_Item(self._all, _BROADCAST, _head(channel), message, channel, None))

    def unicast(self, socket_id: str, event: str, data: object) -> bool:
        node = self._where.get(socket_id)
        if node is None:
            return False
        message = encode_event(event, data)
        head = _head(["u", socket_id, None])
        self._queue(_Item(self._node_prefix + node, _DIRECTED, head, message, None, socket_id))
        return True

    def subscribe(self, socket_id: str, channel: str) -> bool:
        node = self._where.get(socket_id)
        if node is None:
            return False
        sockets = self._nodes[node]
        if channel not in sockets[socket_id]:
            sockets[socket_id] = tuple(sorted((*sockets[socket_id], channel)))
        head = _head(["s", socket_id, channel])
        self._queue(_Item(self._node_prefix + node, _DIRECTED, head, "", None, socket_id))
        return True

    def unsubscribe(self, socket_id: str, channel: str) -> None:
        node = self._where.get(socket_id)
        if node is None:
            return
        sockets = self._nodes[node]
        sockets[socket_id] = tuple(c for c in sockets[socket_id] if c != channel)
        # Sent even when the view says "not subscribed": the view may not know yet.
        head = _head(["r", socket_id, channel])
        self._queue(_Item(self._node_prefix + node, _DIRECTED, head, "", None, socket_id))

    def subscriptions(self, socket_id: str) -> list[str]:
        node = self._where.get(socket_id)
        return list(self._nodes[node][socket_id]) if node is not None else []

    def statistics(self) -> ClusterStatistics:
        return ClusterStatistics(
            node_id=self.node_id,
            connected=self._health.healthy and self._health.reached,
            nodes=len(self._nodes) + 1,
            remote_sockets=len(self._where),
            published=self._published,
            received=self._received,
            dropped=self._dropped,
            gaps=self._gaps,
        )

    def _queue(self, item: _Item) -> None:
        try:
            self._outgoing.send_nowait(item)
        except trio.WouldBlock:
            self._drop(item, full=True)
        except trio.ClosedResourceError:
            self._drop(item)  # closing: the hub is detached right after

    def _drop(self, item: _Item, *, full: bool = False) -> None:
        self._dropped += 1
        self._lost.add(item)
        if not full or not self._health.healthy:
            return  # an outage is logged as such
        self._unwarned += 1
        now = trio.current_time()
        if now - self._last_warning >= LOG_EVERY:
            LOGGER.warning(
                "the WebSocket hub's queue to Redis is full (%d messages): dropped %d "
                "message(s) for other nodes; their sockets are told (hub_gap)",
                self.options.queue_size,
                self._unwarned,
            )
            self._last_warning = now
            self._unwarned = 0

    # -- round trips ---------------------------------------------------------------------------

    async def _ask(self, request: Callable[[], Awaitable[Any]]) -> Any:
        """One round trip within ``op_timeout``; raises _Outage when Redis fails it."""
        with trio.move_on_after(self.options.op_timeout):
            try:
                result = await request()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._health.lost(exc)
                raise _Outage from None
            self._health.answered()
            return result
        self._health.lost(TimeoutError(f"no answer within {self.options.op_timeout:g}s"))
        raise _Outage

    async def _script(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        script = self._scripts[name]
        return await self._ask(lambda: script(keys=keys, args=args))

    # -- publishing ------------------------------------------------------------------------------

    async def _publish(self) -> None:
        """Drain the queue into Redis, batch by batch, until it is closed."""
        try:
            while True:
                try:
                    item = self._queued.receive_nowait()
                except trio.WouldBlock:
                    if self._lost.since is not None:
                        # Messages were dropped and none follows to carry the notice.
                        if not await self._send([]):
                            await self._recover()
                        continue
                    try:
                        item = await self._queued.receive()
                    except trio.EndOfChannel:
                        return
                except trio.EndOfChannel:
                    return
                # Let this tick's local deliveries go out first (coredis takes a while per
                # round trip), and let the rest of the tick's messages join the batch.
                await trio.lowlevel.checkpoint()
                batch = [item]
                size = len(item.head) + len(item.body)
                while size < self.options.batch_size:
                    try:
                        item = self._queued.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.append(item)
                    size += len(item.head) + len(item.body)
                if not await self._send(batch):
                    await self._recover()
        finally:
            self._published_all.set()

    async def _send(self, batch: list[_Item]) -> bool:
        """Publish a batch (after the gap notice owed, if any); False if Redis failed it."""
        runs: list[tuple[str, list[_Item]]] = []
        for item in batch:
            if runs and runs[-1][0] == item.target and runs[-1][1][0].kind == item.kind:
                runs[-1][1].append(item)
            else:
                runs.append((item.target, [item]))
        args: list[str | int] = []
        owed = self._take_lost()
        if owed is not None:
            args += [self._all, owed.notice(self.node_id)]
        for target, items in runs:
            lines = [f"{items[0].kind} {self.node_id}"]
            for item in items:
                lines += (item.head, item.body)
            args += [target, "\n".join(lines)]
        try:
            reached = await self._script("PUBLISH", [], args)
        except _Outage:
            if owed is not None:
                self._lost.merge(owed)
            for item in batch:
                self._drop(item)
            return False
        if owed is not None:
            reached = reached[1:]
        for (target, items), count in zip(runs, reached, strict=True):
            if count == 0 and target != self._all:
                # Nobody listens on that node's channel: it has died, or its subscription
                # is down (then it tells its own sockets of the gap when it is back).
                self._forget(target.removeprefix(self._node_prefix))
                self._dropped += len(items)
            else:
                self._published += len(items)
        return True

    async def _recover(self) -> None:
        """After a failed batch: drop what queues meanwhile, until the gap notice goes out."""
        backoff = Backoff(self.options.backoff)
        while self._lost.since is not None:
            await trio.sleep(backoff.next())
            while True:
                try:
                    self._drop(self._queued.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            owed = self._take_lost()
            if owed is None:
                return
            try:
                await self._script("PUBLISH", [], [self._all, owed.notice(self.node_id)])
            except _Outage:
                self._lost.merge(owed)
            else:
                return  # Redis takes messages again: what is queued now goes out

    def _take_lost(self) -> _Lost | None:
        """What the next gap notice says; what is lost from now on goes into the one after."""
        owed = self._lost
        if owed.since is None:
            return None
        self._lost = _Lost(self.options.max_lost)
        return owed

    # -- receiving -------------------------------------------------------------------------------

    async def _listen(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Hold the subscription to both channels; after a gap, tell the sockets."""
        backoff = Backoff(self.options.backoff)
        started = False
        lost_at: float | None = None
        while True:
            try:
                with trio.CancelScope() as self._listen_scope:
                    async with self.client.pubsub(
                        channels=[self._all, self._own],
                        ignore_subscribe_messages=True,
                        retry_policy=NoRetryPolicy(),
                        subscription_timeout=self.options.op_timeout,
                        max_idle_seconds=self.options.refresh_interval,
                    ) as pubsub:
                        self._last_heard = trio.current_time()
                        self._health.answered()
                        backoff.reset()
                        if lost_at is not None:
                            self._after_gap(trio.current_time() - lost_at)
                            lost_at = None
                        if not started:
                            task_status.started()
                            started = True
                        async for message in pubsub:
                            if message["type"] == "message":
                                self._receive(str(message["data"]))
                # Restarted by the refresher (a silent subscription), or ended: a gap.
                if lost_at is None:
                    lost_at = trio.current_time()
            except BaseException as exc:
                if isinstance(exc, BaseExceptionGroup):
                    cancelled, _ = exc.split(trio.Cancelled)
                    if cancelled is not None:
                        # The link is closing (or the runner cancelled): what coredis's
                        # subscription raises while it is torn down is of no interest.
                        raise cancelled from None
                if not is_outage(exc):
                    raise
                self._health.lost(exc)
                if lost_at is None:
                    lost_at = self._health.since or trio.current_time()
                if not started:
                    task_status.started()  # the node serves meanwhile; it subscribes later
                    started = True
                await trio.sleep(backoff.next())

    def _after_gap(self, duration: float) -> None:
        """The subscription is back: every socket here may have missed messages."""
        self._resync = True
        self._dirty.set()
        hub = self.hub
        for socket_id in hub.socket_ids:
            self._tell_gap(socket_id, hub.get_subscriptions(socket_id), duration)

    def _tell_gap(self, socket_id: str, channels: list[str], duration: float) -> None:
        message = encode_event(GAP_EVENT, {"channels": channels, "duration": round(duration, 3)})
        if self.hub.send(socket_id, message):
            self._gaps += 1

    def _receive(self, payload: str) -> None:
        self._last_heard = trio.current_time()
        header, _, body = payload.partition("\n")
        kind, _, origin = header.partition(" ")
        if origin == self.node_id:
            return  # this node's own message, back from Redis
        try:
            if kind == _BROADCAST:
                self._take_broadcasts(body.split("\n"))
            elif kind == _DIRECTED:
                self._take_directed(body.split("\n"))
            elif kind == _SNAPSHOT:
                self._take_snapshot(origin, body)
            elif kind == _GAP:
                self._take_gap(json.loads(body))
            elif kind == _GONE:
                self._forget(origin)
                self._seqs[origin] = sys.maxsize  # a read still in flight must not revive it
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            # Another version of triosvc, or something else on these channels: not ours.
            LOGGER.warning("ignored a WebSocket hub message from node %s: %s", origin, exc)

    def _take_broadcasts(self, lines: list[str]) -> None:
        hub = self.hub
        head, channel = "", ""
        for i in range(0, len(lines) - 1, 2):
            if lines[i] != head:  # a burst is usually for one channel: decode it once
                head = lines[i]
                channel = json.loads(head)
            hub.fan_out(channel, lines[i + 1])
            self._received += 1

    def _take_directed(self, lines: list[str]) -> None:
        hub = self.hub
        for i in range(0, len(lines) - 1, 2):
            op, socket_id, channel = json.loads(lines[i])
            self._received += 1
            if not hub.is_connected(socket_id):
                continue  # it has gone meanwhile: as a local socket that just left
            if op == "u":
                hub.send(socket_id, lines[i + 1])
            elif op == "s":
                hub.subscribe(socket_id, channel)
            elif op == "r":
                hub.unsubscribe(socket_id, channel)

    def _take_gap(self, notice: dict[str, Any]) -> None:
        hub = self.hub
        everything = notice["channels"] is None
        lost = set(notice["channels"] or ())
        sockets = set(notice["sockets"])
        duration = float(notice["duration"])
        for socket_id in hub.socket_ids:
            channels = hub.get_subscriptions(socket_id)
            concerned = channels if everything else [c for c in channels if c in lost]
            if everything or concerned or socket_id in sockets:
                self._tell_gap(socket_id, concerned, duration)

    # -- the view --------------------------------------------------------------------------------

    def _take_snapshot(self, node: str, text: str) -> None:
        if node == self.node_id:
            return
        snapshot = json.loads(text)
        seq = int(snapshot["seq"])
        if seq <= self._seqs.get(node, 0):
            return  # older than (or the same as) what this node holds
        self._seqs[node] = seq
        self._updated[node] = trio.current_time()
        sockets = {str(s): tuple(channels) for s, channels in snapshot["sockets"].items()}
        old = self._nodes.get(node)
        if old is not None:
            for socket_id in old.keys() - sockets.keys():
                if self._where.get(socket_id) == node:
                    del self._where[socket_id]
        for socket_id in sockets:
            self._where[socket_id] = node
        self._nodes[node] = sockets

    def _forget(self, node: str) -> None:
        sockets = self._nodes.pop(node, None)
        for socket_id in sockets or ():
            if self._where.get(socket_id) == node:
                del self._where[socket_id]

    def _snapshot(self) -> str:
        hub = self.hub
        self._seq += 1
        sockets = {s: hub.get_subscriptions(s) for s in hub.socket_ids}
        return json.dumps({"seq": self._seq, "sockets": sockets}, separators=(",", ":"))

    async def _write(self) -> None:
        self._dirty = trio.Event()  # a change from now on makes another write
        self._last_write = trio.current_time()
        await self._script(
            "WRITE",
            [self._nodes_key, self._key],
            [
                self.node_id,
                self._snapshot(),
                milliseconds(self.options.snapshot_ttl),
                self._all,
                f"{_SNAPSHOT} {self.node_id}\n",
            ],
        )

    async def _read(self) -> None:
        asked = trio.current_time()
        found = await self._script("READ", [self._nodes_key], [self._key_prefix])
        self._last_read = trio.current_time()
        self._resync = False
        live = set()
        for i in range(0, len(found) - 1, 2):
            node, text = str(found[i]), str(found[i + 1])
            live.add(node)
            try:
                self._take_snapshot(node, text)
            except (ValueError, TypeError, KeyError) as exc:
                LOGGER.warning("ignored the WebSocket hub snapshot of node %s: %s", node, exc)
        # Not in Redis: its snapshot expired (it died) or was deleted (it stopped); unless
        # it came meanwhile (a node that has just started and published its first).
        for node in set(self._seqs) - live:
            if self._updated.get(node, asked) <= asked:
                self._forget(node)
                del self._seqs[node]
                self._updated.pop(node, None)
        for node in set(self._nodes) - live - set(self._seqs):
            self._forget(node)

    async def _refresh(self) -> None:
        """Write this node's snapshot on changes and every interval; read everyone's."""
        with self._refresh_scope:
            await self._refreshing()

    async def _refreshing(self) -> None:
        options = self.options
        backoff = Backoff(options.backoff)
        failing = False
        next_read = trio.current_time() + options.refresh_interval
        while True:
            if failing:
                await trio.sleep(backoff.next())
            else:
                with trio.move_on_at(min(next_read, self._last_write + options.refresh_interval)):
                    await self._dirty.wait()
                if self._dirty.is_set():
                    await trio.sleep_until(self._last_write + options.change_delay)
            try:
                await self._write()
                if failing or self._resync or trio.current_time() >= next_read:
                    await self._read()
                    next_read = trio.current_time() + options.refresh_interval
            except _Outage:
                failing = True
                if trio.current_time() - self._last_read > options.snapshot_ttl:
                    for node in list(self._nodes):  # too old to vouch for: unknown now
                        self._forget(node)
                continue
            failing = False
            backoff.reset()
            silent = trio.current_time() - self._last_heard
            if silent > options.silence_limit and self._listen_scope is not None:
                # Redis answers, yet this node has not even heard its own snapshots.
                LOGGER.warning(
                    "the WebSocket hub's subscription to Redis at %s has been silent for "
                    "%.0fs: subscribing again",
                    self.where,
                    silent,
                )
                self._last_heard = trio.current_time()
                self._listen_scope.cancel()

    # -- starting and stopping -------------------------------------------------------------------

    async def _start(self) -> None:
        """Publish this node's snapshot and read the others', if Redis answers (bounded)."""
        with contextlib.suppress(_Outage):
            await self._write()
            await self._read()

    async def _close(self) -> None:
        """Send what is queued, then delete this node's snapshot and say goodbye."""
        self._refresh_scope.cancel()
        self._outgoing.close()
        with trio.move_on_after(self.options.close_timeout / 2):  # leave time for goodbye
            await self._published_all.wait()
        with contextlib.suppress(_Outage):
            await self._script(
                "GONE",
                [self._nodes_key, self._key],
                [self.node_id, self._all, f"{_GONE} {self.node_id}"],
            )


@asynccontextmanager
async def open_redis_cluster(
    url: str, hub: WebSocketHub, options: ClusterOptions | None = None
) -> AsyncIterator[RedisClusterLink]:
    """Link ``hub`` to the other nodes on the Redis at ``url`` for the block.

    Redis need not be reachable yet: the hub serves its own sockets, and links up once
    Redis answers (its sockets are then told of the gap).
    """
    options = options or DEFAULTS
    client = make_client(url, connect_timeout=options.connect_timeout, max_connections=8)
    release = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(hold_client, client, release)
            link = RedisClusterLink(url, client, hub, options)
            try:
                await nursery.start(link._listen)
                await link._start()
                nursery.start_soon(link._refresh)
                nursery.start_soon(link._publish)
                hub.cluster = link
                yield link
            finally:
                hub.cluster = None
                with trio.CancelScope(shield=True) as closing:
                    closing.deadline = trio.current_time() + options.close_timeout
                    await link._close()
                release.set()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The link's own tasks raise only on a bug: a lone exception is the block's own,
        # and leaves it as itself, not in a group.
        if len(group.exceptions) != 1:
            raise
        own = group.exceptions[0]
        raise own from own.__cause__
