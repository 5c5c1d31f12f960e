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
from kombu.utils.json import loads

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

class QoS(kombu_redis.QoS):
    """Skips kombu's own unacked bookkeeping for messages the take script already recorded,
    and drops a tag's owner record wherever kombu drops its unacked entry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("worker.broker.transport does not support the global_keyprefix transport option")
        self.next_take = 0.0
        self.last_taken = monotonic()
        self.heartbeat: Heartbeat = self.connection.heartbeat
        self.owner_keys = OwnerKeys.of(self.unacked_key)
        self._on_client: tuple[Any, Recovery] | None = None  # the take and recovery scripts
        self._queue_of: dict[tuple[str, ...], dict[str, str]] = {}
        self._waiters: dict[str, ListWaiter] = {}  # by queue

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


def install() -> None:
    """Make this process's ``redis://``, ``rediss://`` and ``redis+socket://`` connections use this transport.

    By name, not with Celery's ``broker_transport``: kombu ignores that for ``redis+socket://``
    URLs, and Flower reads the broker's kind from a URL that would then name this module.
    """
    for alias in ("redis", "rediss"):
        kombu.transport.TRANSPORT_ALIASES[alias] = f"{__name__}:Transport"
        kombu.transport._transport_cache.pop(alias, None)  # resolved before install: resolve again
