"""The Redis transport (``redis://host[:port][/db]``): RPC between processes and hosts.

Built on coredis (the ``redis`` extra: coredis 6, whose anyio core runs on trio; 6.9 or
later for the connection API used here). Needs Redis 6.2 or later (``BLMOVE``); a single
server, not Redis Cluster (the scripts touch keys they compute).

Layout: lists, not streams
==========================

Each service has one queue, a list shared by all its instances: callers push calls on
the left, instances take them from the right with ``BLMOVE`` into a list of their own
(``taken``) *when they have a free worker*. This is the pull model of the contract:
an instance blocked in ``BLMOVE`` is an idle one, a busy instance is not waiting, so a
call goes to whichever instance frees a worker first and never waits behind a busy
one. ``BLMOVE`` is atomic, so each call is taken by exactly one instance; Redis serves
the instances blocked on a list in turn, so idle instances share the calls.

Streams with consumer groups were the other candidate. What they add is redelivery:
a message stays pending until acknowledged and can be claimed by another consumer.
That is the wrong guarantee for RPC, where a call that an instance took and may have
run in part must *fail* to its caller (``ServiceUnavailable``), not run again
elsewhere; and withdrawing a queued call, bounding the queue and expiring old entries
all take extra bookkeeping (``XDEL``, trimming, ``XAUTOCLAIM`` sweeps) that lists do
not need: ``LREM`` withdraws a call, ``LLEN`` measures the room left.

The keys (prefix ``triosvc``; details in :mod:`triosvc.rpc._redis_lua`):
``leases`` (every instance holding a lease, by expiry), ``live:<service>`` (the
instances taking calls, and their capacity), ``queue:<service>``, ``taken:<instance>``
and ``reply:<transport>``. Every script that creates a key gives it a lifetime, so that
nothing outlives the processes that use it by more than a lease or a reply TTL.

How the contract is met
=======================

- Queueing (one script): reap dead instances; no live instance: ``UnknownService`` at
  once; queue full (as many calls as the live instances' capacities together): the
  caller polls for room (every 10 ms to 250 ms) until its deadline, then
  ``ServiceUnavailable``; else push the call with its deadline in *Redis's clock*
  (``TIME`` plus the time the caller has left), so that deadlines survive clock
  differences between hosts and count the time spent queued.
- Taking: ``BLMOVE`` then one script that gives the receiver the time left (converted
  to its own trio clock) and drops a call whose deadline passed while it was queued.
  The same script moves up to one more queued call per other free worker of the
  instance (``capacity`` less the calls it runs, at most ``batch``): a busy service
  drains its queue in batches, two round trips per batch rather than per call, and an
  instance still never takes more calls than it has free workers. The calls taken
  ahead wait in the inbox (bounded by its free workers) until ``receive``; closing hands
  them back like any call moved and not delivered.
- Replies: one list per transport, read by one ``BLPOP`` task that hands each answer
  to its waiting caller, then drains the answers queued behind it with ``LPOP`` (up to
  ``batch`` a round trip) before blocking again; an answer for a caller that has gone
  is dropped. Lists rather
  than pub/sub, so that a reply sent while the caller's connection blinks is not lost.
  Answering removes the call from ``taken`` first, in the same script, so a call is
  answered at most once even when a reaper failed it meanwhile.
- Withdrawal: a caller that gives up (cancelled, timed out) removes its call from the
  queue by its id, in the background so that cancelling is immediate (a call cancelled
  while it was being queued is found too).
- Liveness: a lease per instance in ``leases`` and ``live:<service>``, renewed every
  ``lease_interval`` (5 s) for ``lease_ttl`` (15 s) by each transport's maintenance
  task. A live set filtered by expiry makes a dead instance stop counting as live
  within 15 s; every script that queues a call, and every renewal, *reaps* expired
  leases: the calls the dead instance took fail to their callers
  (``ServiceUnavailable``), and the calls queued for a service with no instance left
  fail too. ``close()`` leaves the live set at once (one round trip, started at once);
  the calls the instance moved but never delivered go back to the head of the queue,
  or fail if no instance is left. A transport that closes fails the calls its
  instances took and did not answer.
- Redis unreachable: every round trip is bounded (by the call's deadline, or
  ``op_timeout``); a caller gets ``ServiceUnavailable`` naming Redis; the reply
  listener losing its connection fails the calls waiting for answers at once (the
  answer may never come). Receivers, the reply listener and the maintenance task
  retry with exponential backoff (50 ms to 2 s), the maintenance task re-registers the
  instances as soon as Redis answers again (a restarted Redis has forgotten them), and
  the transition is logged once each way. Services keep running throughout.

Structured concurrency: the coredis client (its connection pool and the pool's
connection tasks) lives in a task of the transport's own nursery, shielded from
cancellation until the transport has finished closing, so that the answers a runner
sends while it is being cancelled (killed, or out of grace period) still reach Redis.
Every other task (reply listener, maintenance, unregistrations, withdrawals) runs in
that nursery too. The client, its holder, the backoff and the log-once outage tracking
are shared with the cluster-wide hub (:mod:`triosvc._redis_client`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import coredis  # noqa: TC002 - at run time: without coredis this module must not load
import trio
from coredis.exceptions import ResponseError
from coredis.tokens import PureToken

from .._redis_client import REDIS_ERRORS, ConnectionOptions, Health, hold_client, make_client
from .._redis_client import Backoff as _Backoff
from .._redis_client import describe as _text
from .._redis_client import milliseconds as _ms
from .._redis_client import where as _where
from ..exceptions import RpcTimeout, ServiceUnavailable, UnknownService
from . import _redis_lua as lua
from .transport import TRANSPORTS, Delivery, Inbox, Transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from coredis.commands.script import Script

__all__ = ["DEFAULTS", "RedisOptions", "RedisTransport", "open_redis_transport"]

LOGGER = logging.getLogger("triosvc.rpc.redis")

T = TypeVar("T")


@attrs.frozen
class RedisOptions(ConnectionOptions):
    """Timings of the Redis transport, in seconds; tests make them short."""

    #: An instance that stops renewing its lease stops being live this long after.
    lease_ttl: float = 15.0
    #: How often each transport renews its leases (and reaps dead instances').
    lease_interval: float = 5.0
    #: How long one ``BLMOVE``/``BLPOP`` waits in Redis before it is sent again.
    block: float = 5.0
    #: Lifetime of a reply list that nobody reads any more (its caller's process died).
    reply_ttl: float = 60.0
    #: Polling for room in a full queue, from the first to the longest pause.
    room_poll: tuple[float, float] = (0.01, 0.25)
    #: Connections in the pool: each inbox's ``BLMOVE`` and the reply listener hold one.
    max_connections: int = 256
    #: Most calls an inbox takes in one round trip (bounded by its free workers too), and
    #: most answers the reply listener reads in one.
    batch: int = 64

    def __attrs_post_init__(self) -> None:
        if not 0 < self.lease_interval < self.lease_ttl:
            raise ValueError("RedisOptions: 0 < lease_interval < lease_ttl")
        if self.batch < 1:
            raise ValueError("RedisOptions: batch >= 1")


#: The options :func:`open_transport` uses for ``redis://`` URLs.
DEFAULTS = RedisOptions()


def _client(url: str, options: RedisOptions) -> coredis.Redis[str]:
    """A coredis client for ``redis://[user:password@]host[:port][/db]``."""
    return make_client(
        url, connect_timeout=options.connect_timeout, max_connections=options.max_connections
    )


class _Pending:
    """A caller waiting for its answer."""

    __slots__ = ("done", "error", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: str | None = None
        self.error: Exception | None = None

    def settle(self, reply: str | None = None, error: Exception | None = None) -> None:
        if not self.done.is_set():
            self.reply = reply
            self.error = error
            self.done.set()


class _Instance:
    """One registration of a service by this transport."""

    def __init__(self, prefix: str, service: str, capacity: int, backoff: _Backoff) -> None:
        self.id = uuid.uuid4().hex
        self.service = service
        self.capacity = capacity
        self.lease_member = f"{self.id} {capacity} {service}"
        self.live_member = f"{self.id} {capacity}"
        self.live_key = f"{prefix}:live:{service}"
        self.queue_key = f"{prefix}:queue:{service}"
        self.taken_key = f"{prefix}:taken:{self.id}"
        #: Takes calls: from register until close.
        self.accepting = True
        #: The calls delivered to the RPC layer and not answered yet (by call id).
        self.delivered: set[str] = set()
        #: Calls taken ahead (accepted in the same script as the one received), waiting
        #: for ``receive``: at most one per free worker, so at most ``capacity``.
        self.ready: collections.deque[_RedisDelivery] = collections.deque()
        #: Held by the receiving task; unregistering waits for it.
        self.receiving = trio.Lock()
        self.receive_scope: trio.CancelScope | None = None
        #: A receive was cut short: the taken list may hold calls nobody delivered.
        self.needs_sweep = False
        #: Pauses of the receiver while Redis fails.
        self.backoff = backoff
        #: Closed, and the live set told.
        self.stopped = trio.Event()
        #: The lease is gone (or going): nothing more to renew.
        self.released = False


class _RedisDelivery(Delivery):
    __slots__ = (
        "_answered",
        "_call_id",
        "_envelope",
        "_instance",
        "_transport",
        "deadline",
        "payload",
    )

    def __init__(
        self,
        transport: RedisTransport,
        instance: _Instance,
        envelope: str,
        call_id: str,
        deadline: float,
    ) -> None:
        self._transport = transport
        self._instance = instance
        self._envelope = envelope
        self._call_id = call_id
        self._answered = False
        self.payload = envelope.partition("\n")[2]
        self.deadline = deadline

    async def reply(self, payload: str) -> None:
        if self._answered:
            return
        self._answered = True
        try:
            await self._transport._answer(self._instance, self._envelope, self._call_id, payload)
        finally:
            self._instance.delivered.discard(self._call_id)
            self._transport._maybe_release(self._instance)


class _RedisInbox(Inbox):
    def __init__(self, transport: RedisTransport, instance: _Instance) -> None:
        self._transport = transport
        self._instance = instance

    async def receive(self) -> Delivery:
        instance = self._instance
        async with instance.receiving:
            while True:
                if not instance.accepting:
                    instance.ready.clear()  # unregistering hands them back
                    raise trio.EndOfChannel
                if instance.ready:
                    ahead = instance.ready.popleft()
                    instance.delivered.add(ahead._call_id)
                    return ahead
                delivery: Delivery | None = None
                with trio.CancelScope() as scope:
                    instance.receive_scope = scope
                    try:
                        delivery = await self._transport._take(instance)
                    finally:
                        instance.receive_scope = None
                if scope.cancelled_caught:
                    # Closed while moving a call: unregistering hands it back.
                    instance.needs_sweep = True
                elif delivery is not None:
                    return delivery

    def close(self) -> None:
        instance = self._instance
        if not instance.accepting:
            return
        instance.accepting = False
        # The calls taken ahead were never delivered: unregistering hands them back.
        instance.ready.clear()
        if instance.receive_scope is not None:
            instance.receive_scope.cancel()
        if not self._transport._spawn(self._transport._unregister, instance):
            instance.stopped.set()  # the transport has closed: nothing left to tell Redis


class RedisTransport(Transport):
    """One trio run's connection to a Redis broker; see the module's docstring.

    ``client`` (a ``coredis.Redis[str]``, responses decoded) and ``options`` are public
    so that other parts of a node (the cluster-wide hub) can share the connection.
    """

    def __init__(
        self,
        url: str,
        client: coredis.Redis[str],
        options: RedisOptions,
        nursery: trio.Nursery,
    ) -> None:
        self.url = url
        self.where = _where(url)
        self.client = client
        self.options = options
        self._nursery = nursery
        self.id = uuid.uuid4().hex
        self.prefix = options.prefix
        self.reply_key = f"{self.prefix}:reply:{self.id}"
        self._leases_key = f"{self.prefix}:leases"
        self._pending: dict[str, _Pending] = {}
        self._instances: dict[str, _Instance] = {}
        #: Instances whose lease is being dropped in the background.
        self._releasing: set[_Instance] = set()
        self._wake_maintenance = trio.Event()
        self._health = Health(
            LOGGER, self.where, "RPC calls fail with ServiceUnavailable until it answers"
        )
        self._closed = False
        self._scripts: dict[str, Script[str]] = {
            name: client.register_script(getattr(lua, name))
            for name in (
                "ENQUEUE",
                "WITHDRAW",
                "ACCEPT",
                "REPLY",
                "RENEW",
                "STOP",
                "HAND_BACK",
                "DROP",
            )
        }

    # -- round trips --------------------------------------------------------------------

    async def _ask(self, request: Callable[[], Awaitable[T]], deadline: float) -> T:
        """One round trip, by ``deadline``.

        Raises:
            ServiceUnavailable: Redis could not be reached, or did not answer in time.
        """
        began = trio.current_time()
        with trio.move_on_at(deadline):
            try:
                result = await request()
            except ResponseError as exc:  # Redis answered, and refused
                LOGGER.error("Redis at %s refused a request: %s", self.where, exc)
                raise ServiceUnavailable(f"Redis at {self.where} refused: {exc}") from None
            except REDIS_ERRORS as exc:
                self._trouble(exc)
                raise ServiceUnavailable(
                    f"cannot reach Redis at {self.where} ({_text(exc)})"
                ) from None
            self._fine()
            return result
        if deadline - began >= self.options.op_timeout:  # not just a caller's short deadline
            self._trouble(TimeoutError(f"no answer within {self.options.op_timeout:g}s"))
        raise ServiceUnavailable(f"Redis at {self.where} did not answer in time")

    async def _script(
        self, name: str, keys: list[str], args: list[str | int], deadline: float | None = None
    ) -> Any:
        if deadline is None:
            deadline = trio.current_time() + self.options.op_timeout
        script = self._scripts[name]
        return await self._ask(lambda: script(keys=keys, args=args), deadline)

    def _trouble(self, exc: BaseException) -> None:
        """Redis failed a round trip: say so once, and get the leases renewed soon."""
        if not self._closed:
            self._health.lost(exc)
        self._wake_maintenance.set()

    def _fine(self) -> None:
        self._health.answered()

    def _spawn(self, function: Callable[..., Awaitable[object]], *args: object) -> bool:
        """Run a short task in the transport's nursery; False once it is closed."""
        try:
            self._nursery.start_soon(function, *args)
        except RuntimeError:  # the nursery is closed: the transport has gone
            return False
        return True

    # -- calling --------------------------------------------------------------------------

    async def call(self, service: str, payload: str, deadline: float) -> str:
        if self._closed:
            raise ServiceUnavailable(f"this connection to {self.where} is closed")
        call_id = uuid.uuid4().hex
        pending = self._pending[call_id] = _Pending()
        queue = f"{self.prefix}:queue:{service}"
        try:
            await self._enqueue(service, queue, call_id, payload, deadline)
            with trio.move_on_at(deadline):
                await pending.done.wait()
            if not pending.done.is_set():
                raise RpcTimeout(f"{service!r} did not answer by the call's deadline")
        finally:
            del self._pending[call_id]
            if pending.reply is None:
                # Given up, or failed (perhaps while being queued): take the call back if
                # it is still queued. In the background, so that cancelling is immediate.
                self._spawn(self._withdraw, queue, call_id)
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        return pending.reply

    async def _enqueue(
        self, service: str, queue: str, call_id: str, payload: str, deadline: float
    ) -> None:
        """Queue the call, waiting for room until ``deadline``."""
        options = self.options
        room = _Backoff(options.room_poll)
        while True:
            left = max(0, round((deadline - trio.current_time()) * 1000))
            result = await self._script(
                "ENQUEUE",
                [f"{self.prefix}:live:{service}", queue],
                [
                    self.prefix,
                    service,
                    left,
                    call_id,
                    self.reply_key,
                    payload,
                    _ms(options.reply_ttl),
                    1000,
                    _ms(options.lease_ttl),
                ],
                deadline,
            )
            if result[0] == "queued":
                return
            if result[0] == "unknown":
                raise UnknownService(f"no live instance of service {service!r} on {self.where}")
            pause = room.next()
            if trio.current_time() + pause >= deadline:
                await trio.sleep_until(deadline)
                raise ServiceUnavailable(
                    f"every instance of {service!r} kept a full inbox until the call's "
                    "deadline; the call was not delivered"
                )
            await trio.sleep(pause)

    async def _withdraw(self, queue: str, call_id: str) -> None:
        with contextlib.suppress(ServiceUnavailable):
            await self._script("WITHDRAW", [queue], [call_id])

    async def _listen(self) -> None:
        """Hand each answer in this transport's reply list to its waiting caller."""
        backoff = _Backoff(self.options.backoff)
        block = self.options.block
        batch = self.options.batch
        # The last read found answers, so more may be queued behind them: read with a
        # non-blocking LPOP (up to a batch) until one finds none, then block again.
        draining = False
        while True:
            try:
                answers: list[str] = []
                if draining:
                    # Non-blocking: the answers that queued while the last ones were read.
                    with trio.move_on_after(self.options.op_timeout) as stalled:
                        answers = await self.client.lpop(self.reply_key, batch) or []
                    draining = bool(answers)
                else:
                    with trio.move_on_after(block + self.options.op_timeout) as stalled:
                        item = await self.client.blpop([self.reply_key], timeout=block)
                    if item is not None:
                        answers = [item[1]]
                    draining = bool(answers)
                if stalled.cancelled_caught:
                    raise TimeoutError("Redis did not answer a BLPOP/LPOP in time")
            except REDIS_ERRORS as exc:
                draining = False
                self._trouble(exc)
                # The answers may never come (a restarted Redis has lost them): the
                # callers hear of it now rather than at their deadlines.
                error = (
                    f"lost Redis at {self.where} ({_text(exc)}) while waiting for the "
                    "answer; the call may or may not have run"
                )
                for pending in self._pending.values():
                    pending.settle(error=ServiceUnavailable(error))
                await trio.sleep(backoff.next())
                continue
            backoff.reset()
            self._fine()
            for answer in answers:
                self._dispatch(answer)
            # Drain only while callers still wait: a lone caller's answer costs no extra
            # round trip (an answer for a caller that has gone waits for the next BLPOP).
            draining = draining and any(not p.done.is_set() for p in self._pending.values())

    def _dispatch(self, message: str) -> None:
        head, _, body = message.partition("\n")
        call_id, _, kind = head.partition(" ")
        pending = self._pending.get(call_id)
        if pending is None:
            return  # its caller has gone
        if kind == "reply":
            pending.settle(reply=body)
        else:
            pending.settle(error=ServiceUnavailable(body))

    # -- serving --------------------------------------------------------------------------

    @asynccontextmanager
    async def _register(self, service: str, capacity: int) -> AsyncIterator[Inbox]:
        if self._closed:
            raise ServiceUnavailable(f"this connection to {self.where} is closed")
        instance = _Instance(self.prefix, service, capacity, _Backoff(self.options.backoff))
        self._instances[instance.id] = instance
        # If Redis cannot be reached (logged), the maintenance task registers it later.
        with contextlib.suppress(ServiceUnavailable):
            await self._renew([instance])
        inbox = _RedisInbox(self, instance)
        try:
            yield inbox
        finally:
            inbox.close()
            with trio.CancelScope(shield=True) as shielded:
                shielded.deadline = trio.current_time() + self.options.close_timeout
                await instance.stopped.wait()

    async def _take(self, instance: _Instance) -> Delivery | None:
        """Wait (one ``block``) for a call to this instance's service; None if none came.

        Takes up to one more call per other free worker too, into ``instance.ready``
        (empty when this is called: ``receive`` serves those first).
        """
        options = self.options
        try:
            if instance.needs_sweep:
                await self._sweep(instance)
            with trio.move_on_after(options.block + options.op_timeout) as stalled:
                envelope = await self.client.blmove(
                    instance.queue_key,
                    instance.taken_key,
                    PureToken.RIGHT,
                    PureToken.LEFT,
                    timeout=options.block,
                )
            if stalled.cancelled_caught:
                raise TimeoutError("Redis did not answer a BLMOVE in time")
        except (*REDIS_ERRORS, ServiceUnavailable) as exc:
            if not isinstance(exc, ServiceUnavailable):
                self._trouble(exc)
            await trio.sleep(instance.backoff.next())
            return None
        instance.backoff.reset()
        if envelope is None:
            return None
        self._fine()
        # The calls this instance runs hold a worker each; one more is receiving this.
        more = min(options.batch - 1, instance.capacity - len(instance.delivered) - 1)
        try:
            answer = await self._script(
                "ACCEPT",
                [self._leases_key, instance.taken_key, instance.queue_key],
                [
                    self.prefix,
                    instance.service,
                    instance.lease_member,
                    envelope,
                    _ms(2 * options.lease_ttl),
                    _ms(options.reply_ttl),
                    1000,
                    max(0, more),
                ],
            )
        except ServiceUnavailable:
            instance.needs_sweep = True
            return None
        if answer[0] == "lapsed":
            # Redis forgot this instance (restarted, or reaped it while unreachable).
            self._wake_maintenance.set()
            return None
        now = trio.current_time()
        # Calls whose deadline passed while they were queued were dropped, not listed.
        for index in range(1, len(answer), 2):
            taken, left = answer[index], int(answer[index + 1])
            call_id = taken.split(" ", 2)[1]
            delivery = _RedisDelivery(self, instance, taken, call_id, now + left / 1000)
            instance.ready.append(delivery)
        if not instance.ready:
            return None
        first = instance.ready.popleft()
        instance.delivered.add(first._call_id)
        return first

    async def _sweep(self, instance: _Instance) -> None:
        """Hand back the calls this instance moved and never delivered."""
        await self._script(
            "HAND_BACK",
            [instance.taken_key],
            [
                self.prefix,
                instance.service,
                _ms(self.options.reply_ttl),
                1000,
                f"every instance of {instance.service!r} stopped before taking it; "
                "the call did not run",
                *instance.delivered,
            ],
        )
        instance.needs_sweep = False

    async def _answer(self, instance: _Instance, envelope: str, call_id: str, payload: str) -> None:
        if self._closed:
            return  # closing failed the call already (ServiceUnavailable)
        reply_key = envelope.partition("\n")[0].split(" ", 2)[2]
        try:
            await self._script(
                "REPLY",
                [instance.taken_key, reply_key],
                [envelope, f"{call_id} reply\n{payload}", _ms(self.options.reply_ttl)],
            )
        except ServiceUnavailable as exc:
            LOGGER.warning("could not answer a call to %r: %s", instance.service, exc)

    async def _unregister(self, instance: _Instance) -> None:
        """Leave the live set at once; then hand back what was moved but not delivered."""
        try:
            deadline = trio.current_time() + self.options.close_timeout
            message = (
                f"every instance of {instance.service!r} stopped before taking it; "
                "the call did not run"
            )
            await self._script(
                "STOP",
                [instance.live_key],
                [
                    self.prefix,
                    instance.service,
                    instance.live_member,
                    _ms(self.options.reply_ttl),
                    message,
                ],
                deadline,
            )
            with trio.move_on_at(deadline):
                async with instance.receiving:  # the receiver is out of BLMOVE
                    await self._sweep(instance)
        except ServiceUnavailable as exc:
            LOGGER.warning("could not unregister %r from Redis: %s", instance.service, exc)
        finally:
            instance.stopped.set()
            self._maybe_release(instance)

    def _maybe_release(self, instance: _Instance) -> None:
        """Once closed and answered, end the instance's lease."""
        if (
            instance.released
            or instance.accepting
            or not instance.stopped.is_set()
            or instance.delivered
        ):
            return
        instance.released = True
        self._instances.pop(instance.id, None)
        self._releasing.add(instance)
        self._spawn(self._drop, [instance])

    async def _drop(self, instances: list[_Instance], deadline: float | None = None) -> None:
        if not instances:
            return
        try:
            await self._script(
                "DROP",
                [self._leases_key],
                [
                    self.prefix,
                    _ms(self.options.reply_ttl),
                    _ms(self.options.lease_ttl),
                    *(instance.lease_member for instance in instances),
                ],
                deadline,
            )
        except ServiceUnavailable as exc:
            LOGGER.warning("could not end the leases of this runner's services: %s", exc)
        finally:
            self._releasing.difference_update(instances)

    # -- leases ---------------------------------------------------------------------------

    async def _renew(self, instances: list[_Instance]) -> None:
        """Renew these leases (re-registering if Redis forgot them), and reap dead ones.

        Raises:
            ServiceUnavailable: Redis could not be reached.
        """
        members: list[str | int] = []
        for instance in instances:
            if not instance.released:
                members += [instance.lease_member, "1" if instance.accepting else "0"]
        await self._script(
            "RENEW",
            [self._leases_key],
            [self.prefix, _ms(self.options.lease_ttl), _ms(self.options.reply_ttl), *members],
        )

    async def _maintain(self) -> None:
        """Renew every lease each ``lease_interval``; after a failure, retry with backoff."""
        backoff = _Backoff(self.options.backoff)
        failing = False
        while True:
            if failing:
                # Other tasks' failures wake it too: keep to its own pace meanwhile.
                await trio.sleep(backoff.next())
            else:
                with trio.move_on_after(self.options.lease_interval):
                    await self._wake_maintenance.wait()
            self._wake_maintenance = trio.Event()
            try:
                await self._renew(list(self._instances.values()))
            except ServiceUnavailable:
                failing = True
            else:
                failing = False
                backoff.reset()

    # -- closing --------------------------------------------------------------------------

    async def _close(self) -> None:
        """Stop serving: fail the calls taken and not answered, end every lease."""
        self._closed = True
        instances = [i for i in self._instances.values() if not i.released]
        for instance in instances:
            instance.accepting = False
            instance.released = True
            if instance.receive_scope is not None:
                instance.receive_scope.cancel()
        self._instances.clear()
        # Drops still in flight in the background are done again here: the nursery's
        # cancellation may cut them short.
        instances += self._releasing
        await self._drop(instances, trio.current_time() + self.options.close_timeout)
        for pending in self._pending.values():
            pending.settle(error=ServiceUnavailable(f"the connection to {self.where} closed"))


@asynccontextmanager
async def open_redis_transport(
    url: str, options: RedisOptions | None = None
) -> AsyncIterator[RedisTransport]:
    """Connect the current trio run to the Redis broker ``url``.

    Redis need not be reachable yet: calls fail with ``ServiceUnavailable`` and the
    services register once it answers.
    """
    options = options or DEFAULTS
    client = _client(url, options)
    release = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(hold_client, client, release)
            transport = RedisTransport(url, client, options, nursery)
            try:
                # Reach Redis once, so that a bad address is logged at once (not fatal).
                with contextlib.suppress(ServiceUnavailable):
                    await transport._renew([])
                nursery.start_soon(transport._listen)
                nursery.start_soon(transport._maintain)
                yield transport
            finally:
                with trio.CancelScope(shield=True):
                    await transport._close()
                release.set()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The transport's own tasks never raise: a lone exception is the block's own,
        # and leaves it as itself (as with the memory transport), not in a group.
        if len(group.exceptions) != 1:
            raise
        own = group.exceptions[0]
        raise own from own.__cause__


def _open(url: str) -> contextlib.AbstractAsyncContextManager[Transport]:
    # Read DEFAULTS when opening, so that tests (and embedders) may replace it.
    return open_redis_transport(url, DEFAULTS)


TRANSPORTS["redis"] = _open
