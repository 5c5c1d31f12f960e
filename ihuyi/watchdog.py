"""One thread per process that cuts sockets still in use at their deadline.

A blocked ``recv`` or ``send`` cannot be given a deadline from inside: a socket timeout
bounds each call, and a peer sending one byte per second never trips it. Shutting the
socket down from another thread ends the blocked call at once, whatever it is waiting
for. The watchdog keeps a heap of armed deadlines and sleeps until the earliest.

Each watch holds its own duplicate of the socket's file descriptor: shutting that down
ends the connection for every descriptor of it, works the same under TLS (it never
touches the SSL object another thread is using), and cannot hit an unrelated socket that
reused the number after the owner closed its descriptor.
"""
from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time


class Watch:
    """One connection's deadline (``time.monotonic()``); ``fired`` once it was cut."""

    __slots__ = ("deadline", "fired", "_sock", "_entry")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self._sock: socket.socket | None = None
        self._entry: tuple[float, int, Watch] | None = None


class Watchdog:
    """Arms, attaches sockets to and disarms watches; cuts each at its deadline."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Empty, with no thread yet: a forked child starts here (its parent's thread is gone)."""
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        """Watches armed and neither fired nor disarmed."""
        with self._cond:
            return len(self._heap)

    def arm(self, deadline: float, sock: socket.socket | None = None) -> Watch:
        """A watch on ``sock`` (or on the socket attached later) that fires at ``deadline``."""
        watch = Watch(deadline)
        if sock is not None:  # system calls outside the lock, which every Submit's thread takes
            watch._sock = _duplicate(sock)
        with self._cond:
            watch._entry = (deadline, next(self._order), watch)
            heapq.heappush(self._heap, watch._entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ihuyi-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0] is watch._entry:
                self._cond.notify()
        return watch

    def attach(self, watch: Watch, sock: socket.socket) -> bool:
        """Watch ``sock`` (just connected) too; False if the deadline has already passed."""
        duplicate = _duplicate(sock)
        with self._cond:
            if not watch.fired:
                watch._sock = duplicate
                return True
        duplicate.close()
        return False

    def disarm(self, watch: Watch) -> None:
        """The call is done with its connection: forget the watch and close its descriptor.

        Disarming again, or a watch that fired, is harmless.
        """
        with self._cond:
            if watch._entry is not None:
                self._heap.remove(watch._entry)
                heapq.heapify(self._heap)
                watch._entry = None
            sock, watch._sock = watch._sock, None
        if sock is not None:
            sock.close()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    self._fire(heapq.heappop(self._heap)[2])
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    @staticmethod
    def _fire(watch: Watch) -> None:
        watch._entry = None
        watch.fired = True
        if watch._sock is not None:
            try:
                watch._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the peer or the owner ended it first


def _duplicate(sock: socket.socket) -> socket.socket:
    """A plain socket on a new descriptor for the same connection (``sock`` may be TLS)."""
    return socket.fromfd(sock.fileno(), sock.family, sock.type)


#: The process's watchdog.
WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._reset)
