"""Wakes a worker's event loop the moment a message lands on one of its queues.

The transport takes messages with a Lua script (worker/broker/transport.py), and a script
cannot block, so an idle worker polls and a new message waits for the next poll. Here each
queue's list also gets a connection of its own, blocked in ``BLMOVE list list RIGHT RIGHT``:
Redis answers it as soon as the list holds a message, by moving the message at the tail of the
list to the tail of the same list, which leaves the list as it was, in one step. Nothing is
taken, so a worker killed meanwhile loses nothing. The answer makes the socket readable, and
the event loop takes at once.

A list's wait is sent only once a take has found the queues empty, so a busy worker sends
none. It lasts ``WAIT_SECONDS`` on the server; a reply that does not come within that and
``STALE_SECONDS`` more (a half-open connection) drops the connection, to be made anew. Lists of
priorities other than the default are left to polling, and so is everything on a Redis older
than 6.2, which has no BLMOVE.
"""
from __future__ import annotations

import logging
from time import monotonic
from typing import Any

from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

#: How long one wait lasts on the server before it answers nothing and is sent again.
WAIT_SECONDS = 5.0
#: How much longer than that a wait may go unanswered before its connection is dropped.
STALE_SECONDS = 5.0
#: The event loop's name for a wait's socket: kombu's poller maps each socket to (channel, kind).
KIND = "WAKE"


class ListWaiter:
    """One list's ``BLMOVE`` wait, on a connection of its own from the channel's async pool.

    Its ``connection`` makes it look like a redis client to kombu's poller, which forgets the
    socket when that connection is dropped.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.kind = f"{KIND} {key}"
        self.connection: Any = None
        self.sent_at: float | None = None
        self.refused = False  # the server does not know BLMOVE: polling only

    def arm(self, channel: Any, cycle: Any) -> None:
        """Send the wait unless one is out; register its socket with the event loop's poller."""
        if self.refused:
            return
        if self.sent_at is not None:
            if monotonic() - self.sent_at < WAIT_SECONDS + STALE_SECONDS:
                return
            log.warning("Redis wait on %s got no reply for %.0f s; dropping its connection", self.key,
                        monotonic() - self.sent_at)
            self.drop()
        if self.connection is None:  # once: a dropped one connects again when it sends
            self.connection = channel.async_pool.get_connection()
        self.connection.send_command("BLMOVE", self.key, self.key, "RIGHT", "RIGHT", WAIT_SECONDS)
        self.sent_at = monotonic()
        sock = self.connection._sock
        cycle._fd_to_chan[sock.fileno()] = (channel, self.kind)
        cycle._chan_to_sock[(channel, self, self.kind)] = sock
        cycle.poller.register(sock, cycle.eventflags)

    def read(self) -> None:
        """Read the answer (a message is there, or the wait ran out); the next ``arm`` sends again."""
        self.sent_at = None
        try:
            self.connection.read_response()
        except ResponseError as exc:
            self.refused = True
            log.warning("Redis refused BLMOVE (%s): queue %s is polled only; Redis 6.2 or later wakes "
                        "workers the moment a message lands", exc, self.key)
        except Exception as exc:  # noqa: BLE001 - a lost wait only means polling until the next one
            log.debug("Redis wait on %s failed (%s); made anew on the next empty take", self.key, exc)
            self.drop()

    def drop(self) -> None:
        """Close the connection (kombu's poller forgets its socket) and forget the wait."""
        self.sent_at = None
        if self.connection is not None:
            self.connection.disconnect()
