"""The watchdog and the watched pools, on real sockets."""
from __future__ import annotations

import os
import socket
import time
from typing import Callable, Iterator

import pytest

from ihuyi.sandbox import Sandbox
from ihuyi.transport import new_session, within
from ihuyi.watchdog import WATCHDOG, Watch
from tests.support import wait_for

Pair = tuple[socket.socket, socket.socket]
Arm = Callable[..., Watch]


@pytest.fixture
def pair() -> Iterator[Pair]:
    a, b = socket.socketpair()
    with a, b:
        yield a, b


@pytest.fixture
def arm() -> Iterator[Arm]:
    """WATCHDOG.arm, every watch disarmed after the test."""
    watches: list[Watch] = []

    def arm_(deadline: float, sock: socket.socket | None = None) -> Watch:
        watches.append(WATCHDOG.arm(deadline, sock))
        return watches[-1]

    yield arm_
    for watch in watches:
        WATCHDOG.disarm(watch)
    assert len(WATCHDOG) == 0


def test_a_blocked_recv_ends_at_the_deadline(pair: Pair, arm: Arm) -> None:
    ours, _ = pair
    ours.settimeout(30)
    started = time.monotonic()
    watch = arm(started + 0.3, ours)
    assert ours.recv(10) == b""  # shut down under it
    assert 0.3 <= time.monotonic() - started < 0.5
    assert watch.fired and len(WATCHDOG) == 0


def test_a_disarmed_watch_never_fires(pair: Pair, arm: Arm) -> None:
    early = arm(time.monotonic() + 0.1, pair[0])
    WATCHDOG.disarm(early)
    later = arm(time.monotonic() + 0.2)
    wait_for(lambda: later.fired, 2, interval=0.01, what="the later watch")
    assert not early.fired
    pair[1].sendall(b"x")
    assert pair[0].recv(1) == b"x"  # still usable


def test_a_socket_connected_after_the_deadline_is_refused(pair: Pair, arm: Arm) -> None:
    watch = arm(time.monotonic())
    wait_for(lambda: watch.fired, 2, interval=0.01, what="the watch")
    assert WATCHDOG.attach(watch, pair[0]) is False


def test_the_earliest_deadline_wakes_the_watchdog(pair: Pair, arm: Arm) -> None:
    arm(time.monotonic() + 60)  # the watchdog sleeps until this one...
    started = time.monotonic()
    soon = arm(started + 0.2, pair[0])  # ...unless woken for an earlier one
    pair[0].settimeout(5)
    assert pair[0].recv(1) == b""
    assert soon.fired and time.monotonic() - started < 0.4 and len(WATCHDOG) == 1


def test_a_forked_child_has_its_own_empty_watchdog(pair: Pair, arm: Arm) -> None:
    arm(time.monotonic() + 60)
    pid = os.fork()
    if pid == 0:  # the child: the parent's watch is not here, and its own fires
        status = 1
        try:
            empty = len(WATCHDOG) == 0
            WATCHDOG.arm(time.monotonic() + 0.2, pair[0])
            pair[0].settimeout(5)
            status = 0 if empty and pair[0].recv(1) == b"" else 2
        finally:
            os._exit(status)  # never back into pytest
    assert os.waitpid(pid, 0)[1] == 0


def test_a_cut_connection_is_closed_before_it_goes_back_to_the_pool() -> None:
    with Sandbox({"C1": "k"}) as sandbox, new_session() as session:
        pool = session.manager_for(sandbox.url).connection_from_url(sandbox.url)
        with within(time.monotonic() + 0.2) as call:
            conn = pool._get_conn()
            conn.connect()
            wait_for(lambda: call.cut, 2, interval=0.01, what="the cut")
            pool._put_conn(conn)
        assert conn.sock is None
        assert len(WATCHDOG) == 0
