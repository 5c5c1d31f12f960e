"""kombu's Redis transport, changed so that a killed worker cannot lose a message it had taken.

Stock kombu takes a message with BRPOP, which removes it from the queue, and records it in
the ``unacked`` hash (where the visibility timeout finds it again) only after the reply
has been read. A worker killed between the two loses the message: about 1 run in 18 of
the worker-kill test lost 1 of 150 tasks (a known limit of kombu's Redis transport, unfixed upstream for years).

Here the worker's event loop takes messages with a Lua script that moves them from the
queues into ``unacked`` in one step, then delivers them. Redis scripts cannot block, so the
worker polls: on every loop turn while messages come, every ``POLL_SECONDS`` when the queues
are empty, every ``IDLE_POLL_SECONDS`` once they have been empty for a second. Once a take
finds the queues empty, a blocked wait on each queue's list (worker/broker/wake.py) turns the
loop the moment a message lands, so a message need not wait for the next poll.
The same step records which worker process took each message, and every
``RECOVER_SECONDS`` the loop gives the messages of workers whose heartbeat expired back to
their queues (worker/broker/heartbeat.py): a killed worker's messages come back within
seconds, not after the visibility timeout. Everything else (acks, rejects, restoring after the
visibility timeout, fanout, the synchronous ``drain_events`` path used outside a worker) is
kombu's own. Worker processes :func:`install` it (worker/celeryconf.py); producers, beat and
Flower keep kombu's.

The same works on a primary behind Redis Sentinel (``sentinel://`` URLs, kombu's
``SentinelChannel`` with the ``master_name`` transport option): :class:`SentinelTransport`.
With the ``wait_replicas`` transport option (REDIS_WAIT_REPLICAS: 1 by default behind
Sentinel), every publish is followed, on the same connection, by ``WAIT <n> WAIT_TIMEOUT_MS``:
the publish returns once a replica holds the message, so a failover that promotes that replica
cannot lose a task whose enqueue returned. The producer API publishes with this transport too
when it waits for replicas (tasks/producer.py).
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from time import monotonic, time
from typing import Any

import kombu.transport
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads
from redis.exceptions import ReadOnlyError

from worker.broker.envelope import check_redis_envelope
from worker.broker.heartbeat import RECOVER_SECONDS, OwnerKeys, Recovery
from worker.broker.wake import KIND as WAKE, ListWaiter
from worker.stores import scripts
from worker.stores.heartbeats import PROCESS, Heartbeat

log = logging.getLogger(__name__)

#: Counts the messages this process took that were not kombu envelopes, for the log line.
_dropped = itertools.count(1)

#: How often a worker looks at its empty queues while messages are coming...
POLL_SECONDS = 0.01
#: ...and once none has come for IDLE_AFTER_SECONDS: the most an idle worker adds to a task's
#: wait. Each look is a Redis round trip; at 10 ms an idle worker used 4 % of a core.
IDLE_POLL_SECONDS = 0.05
IDLE_AFTER_SECONDS = 1.0
#: The most messages one script call takes, so one worker does not take a whole backlog.
TAKE_MAX = 32
#: How long a publish waits for its replicas (milliseconds) before it returns without them:
#: a replica down or far behind must not stop every enqueue. That case is logged and counted.
WAIT_TIMEOUT_MS = 2000

#: How often a publishing channel asks its primary how many replicas it has (``INFO replication``):
#: a publish waits for no more replicas than are connected, so a primary left alone after a
#: failover (its old primary dead) does not hold every publish for WAIT_TIMEOUT_MS.
REPLICAS_CHECK_SECONDS = 1.0

#: Publishes that returned before enough replicas held them (replica down or slow), in this process.
_unreplicated = itertools.count(1)

#: Delivery tags whose unacked entries the send's own last step dropped (worker/stores/idempotency.py's
#: ``TaskResult``): their ack is kombu's in-memory part only, with no round trip of its own.
_acked_by_finish: set[str] = set()


def ack_keys(identity: str) -> list[str]:
    """What an ack drops a message from, in the order idempotency_finish.lua takes them: the
    unacked index and hash, the owner hash and the owned set of ``identity``, its taker."""
    owners = OwnerKeys.of(Channel.unacked_key)
    return [Channel.unacked_index_key, Channel.unacked_key, owners.owner_of, owners.owned(identity)]


def acked_by_finish(delivery_tag: str) -> None:
    """The message ``delivery_tag`` was acked in Redis with its request's result: Celery's ack
    of it, after the task returns, need not go to Redis again."""
    _acked_by_finish.add(delivery_tag)


class QoS(kombu_redis.QoS):
    """Skips kombu's own unacked bookkeeping for messages the take script already recorded, and
    the ack's round trip for those the send's last step acked; drops a tag's owner record
    wherever kombu drops its unacked entry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()

    def ack(self, delivery_tag: str) -> None:
        try:
            _acked_by_finish.remove(delivery_tag)
        except KeyError:
            return super().ack(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        # Every ack, reject, restore (shutdown, visibility timeout, recovery) and drop comes here.
        keys = self.channel.owner_keys
        return (super()._remove_from_indices(delivery_tag, pipe)
                .hdel(keys.owner_of, delivery_tag)
                .srem(keys.owned(self.channel.heartbeat.identity), delivery_tag))


class Channel(kombu_redis.Channel):
    QoS = QoS
    from_transport_options = kombu_redis.Channel.from_transport_options + ("wait_replicas",)
    #: How many replicas must hold a published message before the publish returns (0: none).
    wait_replicas = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replicas: tuple[float, int] = (float("-inf"), 0)  # (when looked, how many to wait for)
        self._short = False  # fewer replicas connected than wait_replicas, when last looked
        if self.global_keyprefix:
            raise ValueError("worker.broker.transport does not support the global_keyprefix transport option")
        self.next_take = 0.0
        self.last_taken = monotonic()
        self.heartbeat: Heartbeat = self.connection.heartbeat
        self.owner_keys = OwnerKeys.of(self.unacked_key)
        self._on_client: tuple[Any, Recovery] | None = None  # the take and recovery scripts
        self._queue_of: dict[tuple[str, ...], dict[str, str]] = {}
        self._waiters: dict[str, ListWaiter] = {}  # by queue

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish, then ``WAIT`` for ``wait_replicas`` replicas on the same connection."""
        if not self.wait_replicas or kwargs.get("_publish_batch") is not None:
            return super()._put(queue, message, **kwargs)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            wanted = self._replicas_to_wait_for(client)
            if not wanted:
                return super()._put(queue, message, **kwargs)
            pipe = client.pipeline(transaction=False)  # one connection: WAIT counts what it wrote
            pipe.lpush(key, dumps(message))
            if self._expires and queue in self._expires:
                for pri in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, pri), self._expires[queue])
            pipe.execute_command("WAIT", wanted, WAIT_TIMEOUT_MS)
            held = pipe.execute()[-1]
        if held < wanted:
            self._replicas = (float("-inf"), 0)  # look again at the next publish
            log.warning("a message published to %s is held by %d of %d replicas after %d ms: a failover now "
                        "could lose it (%d such publishes in this process)", queue, held, wanted, WAIT_TIMEOUT_MS,
                        next(_unreplicated))
        return None

    def _replicas_to_wait_for(self, client: Any) -> int:
        """``wait_replicas``, or fewer while fewer replicas are connected to the primary (looked
        at every REPLICAS_CHECK_SECONDS): nothing waits for a replica that is not there."""
        looked, wanted = self._replicas
        now = monotonic()
        if now - looked < REPLICAS_CHECK_SECONDS:
            return wanted
        connected = int(client.info("replication").get("connected_slaves", 0))
        short = connected < self.wait_replicas
        if short != self._short:  # said once per change, per channel
            self._short = short
            if short:
                log.warning("the Redis broker's primary has %d of the %d replicas a publish waits for "
                            "(REDIS_WAIT_REPLICAS): until they are back, losing this primary could lose the "
                            "tasks just published", connected, self.wait_replicas)
            else:
                log.info("the Redis broker's primary has its %d replicas again: each publish waits for them",
                         self.wait_replicas)
        self._replicas = (now, min(connected, self.wait_replicas))
        return self._replicas[1]

    def take(self, limit: int) -> int:
        """Move up to ``limit`` messages from the queues to ``unacked`` and deliver them."""
        queues = tuple(self._queue_cycle.consume(len(self.active_queues)))
        if not queues:
            return 0
        queue_of = self._lists_of(queues)
        me, owners = self.heartbeat.identity, self.owner_keys
        take, _ = self._scripts()
        reply = take(keys=[self.unacked_index_key, self.unacked_key, owners.owner_of, owners.owned(me), owners.owners,
                           self.heartbeat.key, *queue_of],
                     args=[time(), limit, len(self.priority_steps), me])
        for key, raw, tag in zip(reply[0::3], reply[1::3], reply[2::3]):
            self._deliver_taken(queue_of[key.decode()], raw, tag.decode())
        return len(reply) // 3

    def recover_dead(self) -> int:
        """Put the messages of worker processes whose heartbeat expired back on their queues; how many."""
        _, recovery = self._scripts()
        claimed = recovery.claim_dead(self.heartbeat.identity)
        for tag in claimed.tags:
            self.qos.restore_by_tag(tag, recovery.client)
        if claimed.tags:
            log.warning("gave %d messages of %s back to their queues: no heartbeat for %g s",
                        len(claimed.tags), ", ".join(claimed.dead), self.heartbeat.ttl)
        return len(claimed.tags)

    def idle(self, now: float) -> bool:
        """True once no message has come for ``IDLE_AFTER_SECONDS``."""
        return now - self.last_taken >= IDLE_AFTER_SECONDS

    def waiting(self) -> bool:
        """True while a wait is out on every consumed queue: polling then only backs them up."""
        return bool(self._waiters) and all(waiter.sent_at is not None for waiter in self._waiters.values())

    def take_if_due(self) -> None:
        """Take what prefetch allows, unless the queues were found empty too recently."""
        now = monotonic()
        if not (self.active_queues and self.qos.can_consume() and now >= self.next_take):
            return
        if self.take(min(self.qos.can_consume_max_estimate() or TAKE_MAX, TAKE_MAX)):
            self.last_taken = self.next_take = now
        else:
            self._wait_for_messages()
            interval = IDLE_POLL_SECONDS if self.idle(now) or self.waiting() else POLL_SECONDS
            # Less half the shorter period: the timer tick meant to look may come a little early.
            self.next_take = now + interval - POLL_SECONDS / 2

    def _wait_for_messages(self) -> None:
        """Keep a wait out on each consumed queue's list (worker/broker/wake.py); drop those of others."""
        for queue in set(self._waiters) - set(self.active_queues):
            self._waiters.pop(queue).drop()
        for queue in self.active_queues:
            waiter = self._waiters.setdefault(queue, ListWaiter(self._q_for_pri(queue, 0)))
            try:
                waiter.arm(self, self.connection.cycle)
            except self.connection_errors as exc:
                log.debug("waiting on queue %s failed (%s); polling meanwhile", queue, exc)
                waiter.drop()

    def woken(self, kind: str) -> None:
        """A wait answered: read it, and take at once."""
        for waiter in self._waiters.values():
            if waiter.kind == kind:
                waiter.read()
        self.next_take = 0.0
        self.take_if_due()

    def close(self) -> None:
        for waiter in self._waiters.values():
            waiter.drop()
        self._waiters.clear()
        super().close()

    def _lists_of(self, queues: tuple[str, ...]) -> dict[str, str]:
        """Each list of ``queues`` (one per priority, in take order) -> its queue; kept per queue order."""
        if queues not in self._queue_of:
            self._queue_of[queues] = {self._q_for_pri(queue, pri): queue
                                      for queue in queues for pri in self.priority_steps}
        return self._queue_of[queues]

    def _scripts(self) -> tuple[Any, Recovery]:
        # One client for every take, renewed when kombu replaces the pool after a disconnect:
        # kombu's own conn_or_acquire builds a new client each time, most of an idle poll's cost.
        if self._on_client is None or self._on_client[1].client.connection_pool is not self.pool:
            client = self._create_client()
            self.heartbeat.keep_on(client)  # beating before the first take, which needs it
            self._on_client = scripts.register(client, "take", Path(__file__).parent), Recovery(client, self.owner_keys)
        return self._on_client

    def _deliver_taken(self, queue: str, raw: bytes, tag: str) -> None:
        self._queue_cycle.rotate(queue)
        try:
            payload = loads(raw.decode("utf-8"))
            check_redis_envelope(payload)
        except ValueError:  # InvalidEnvelope and JSON errors alike
            self._drop(queue, raw, tag)
            return
        if tag:
            self.qos.recorded.add(tag)
        self.connection._deliver(payload, queue)

    def _drop(self, queue: str, raw: bytes, tag: str) -> None:
        """Forget bytes that are not a kombu envelope: there is nothing to dead-letter or retry."""
        log.error("dropped an unreadable message (%d bytes) from queue %s; %d dropped by this process",
                  len(raw), queue, next(_dropped))
        if tag:
            self.qos._remove_from_indices(tag).execute()


class MultiChannelPoller(kombu_redis.MultiChannelPoller):
    """In a worker's event loop, takes messages with the script instead of BRPOP."""

    on_event_loop = False

    def on_poll_start(self) -> None:
        if not self.on_event_loop:
            return super().on_poll_start()
        for channel in self._channels:
            if channel.active_fanout_queues:
                self._register_LISTEN(channel)
            channel.take_if_due()

    def on_readable(self, fileno: int) -> None:
        channel_and_kind = self._fd_to_chan.get(fileno)
        if channel_and_kind is not None and channel_and_kind[1].startswith(WAKE):
            # Read whatever the prefetch allows: an unread answer would keep the socket readable.
            channel_and_kind[0].woken(channel_and_kind[1])
            return
        super().on_readable(fileno)

    def recover_dead(self) -> None:
        """Called by the event loop every ``RECOVER_SECONDS``: one channel looks, for the whole broker."""
        for channel in self._channels:
            if channel.active_queues:
                try:
                    channel.recover_dead()
                except channel.connection_errors:
                    log.debug("recovering dead workers' messages: connection error, next time", exc_info=True)
                except channel.ResponseError as exc:
                    log.warning("recovering dead workers' messages failed (%s), next time", exc)
                return

    def wake_interval(self) -> float:
        now = monotonic()
        slow = all(channel.idle(now) or channel.waiting() for channel in self._channels)
        return IDLE_POLL_SECONDS if slow else POLL_SECONDS


class Transport(kombu_redis.Transport):
    Channel = Channel
    #: ``READONLY`` (a client still on a primary that was made a replica, behind one endpoint
    #: that a failover moved) is a connection error: the worker reconnects, finding the new primary.
    connection_errors = (ReadOnlyError, *kombu_redis.Transport.connection_errors)
    #: Whose messages this transport's channels take: this process's.
    heartbeat: Heartbeat = PROCESS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = MultiChannelPoller()

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        cycle = self.cycle
        if not cycle.on_event_loop:
            log.info("taking Redis messages with the unacked-first script (worker/broker/transport.py) "
                     "as %s, giving back those of workers without a heartbeat", self.heartbeat.identity)
        cycle.on_event_loop = True
        for tref in (getattr(cycle, "_wake_tref", None), getattr(cycle, "_recover_tref", None)):
            if tref is not None:
                tref.cancel()
        cycle._recover_tref = loop.call_repeatedly(RECOVER_SECONDS, cycle.recover_dead)

        def wake() -> None:
            # Nothing is readable while waiting for a message: this timer turns the loop, whose
            # on_poll_start looks at the queues again.
            cycle._wake_tref = loop.call_later(cycle.wake_interval(), wake)

        wake()


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The channel above on the primary the sentinels name (kombu's ``SentinelChannel`` finds it)."""

    from_transport_options = kombu_redis.SentinelChannel.from_transport_options + ("wait_replicas",)


class SentinelTransport(Transport):
    """``sentinel://h1:26379;sentinel://h2:26379`` with the ``master_name`` transport option."""

    default_port = kombu_redis.SentinelTransport.default_port
    Channel = SentinelChannel


def transport_for(url: str) -> str:
    """This module's transport for a ``redis://``, ``rediss://`` or ``sentinel://`` URL, by name."""
    return f"{__name__}:{'SentinelTransport' if url.startswith('sentinel') else 'Transport'}"


def install() -> None:
    """Make this process's ``redis://``, ``rediss://``, ``redis+socket://`` and ``sentinel://``
    connections use this transport.

    By name, not with Celery's ``broker_transport``: kombu ignores that for ``redis+socket://``
    URLs, and Flower reads the broker's kind from a URL that would then name this module.
    """
    for alias, name in (("redis", "Transport"), ("rediss", "Transport"), ("sentinel", "SentinelTransport")):
        kombu.transport.TRANSPORT_ALIASES[alias] = f"{__name__}:{name}"
        kombu.transport._transport_cache.pop(alias, None)  # resolved before install: resolve again
