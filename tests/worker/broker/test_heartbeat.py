"""A process's heartbeat: kept by a thread of its own whatever the rest of the process does,
gone when the process is, and a process of its own for a forked child."""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.servers import redis_client
from tests.support import wait_for
from tests.worker.broker.conftest import DB
from worker.stores.heartbeats import KEY_PREFIX, Heartbeat


@pytest.fixture
def heartbeat() -> Iterator[Heartbeat]:
    """A heartbeat of 1 s rewritten every 0.2 s (the service's: 10 s, every 2 s)."""
    beat = Heartbeat(ttl=1.0, every=0.2)
    yield beat
    beat.stop()


def test_the_key_names_the_process_and_is_written_before_keep_on_returns(heartbeat, redis_db):
    identity = heartbeat.keep_on(redis_db)
    host, pid, nonce = identity.rsplit(":", 2)
    assert (host, int(pid), len(nonce)) == (socket.gethostname(), os.getpid(), 8)
    assert heartbeat.key == KEY_PREFIX + identity
    assert 0 < redis_db.pttl(heartbeat.key) <= 1000


def test_the_key_outlives_a_main_thread_blocked_or_busy_for_longer_than_its_ttl(heartbeat, redis_db, caplog):
    """The event loop blocked (a solo-pool task, a slow call) or spinning: the thread beats on."""
    heartbeat.keep_on(redis_db)
    with caplog.at_level(logging.WARNING, logger="worker.stores.heartbeats"):
        time.sleep(1.5)  # blocked for 1.5 TTLs
        assert redis_db.exists(heartbeat.key)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # busy in pure Python, holding the GIL but for its switches
            sum(range(10_000))
        assert redis_db.exists(heartbeat.key)
    assert "lapsed" not in caplog.text


def test_stop_deletes_the_key_at_once(heartbeat, redis_db):
    heartbeat.keep_on(redis_db)
    heartbeat.stop()
    assert not redis_db.exists(heartbeat.key)
    time.sleep(0.5)
    assert not redis_db.exists(heartbeat.key)  # and the thread wrote it no more


def test_a_lapse_is_logged_and_mended(heartbeat, redis_db, caplog):
    heartbeat.keep_on(redis_db)
    with caplog.at_level(logging.WARNING, logger="worker.stores.heartbeats"):
        redis_db.delete(heartbeat.key)  # as Redis sees a process that stood still past the TTL
        wait_for(lambda: redis_db.exists(heartbeat.key), 2, what="the key written again")
    assert "had lapsed" in caplog.text


def test_a_forked_child_beats_as_a_process_of_its_own_and_its_key_dies_with_it(heartbeat, redis_db):
    parent = heartbeat.keep_on(redis_db)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say who it is, then die without any clean-up
        try:
            os.write(write, heartbeat.keep_on(redis_client(DB)).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child.split(":")[1] == str(pid) and child != parent
    assert redis_db.exists(KEY_PREFIX + child)
    wait_for(lambda: not redis_db.exists(KEY_PREFIX + child), 2, what="the dead child's key to expire")
    assert redis_db.exists(heartbeat.key)  # the parent's beats on


def test_every_must_be_below_the_ttl():
    with pytest.raises(ValueError, match="every"):
        Heartbeat(ttl=2, every=2)
