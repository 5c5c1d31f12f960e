"""The parking lot (a delay queue in the real Redis) and the Mover thread that empties it."""
from __future__ import annotations

import collections
import logging
import threading
import time

import pytest
import redis

from tests.support import wait_for
from worker.stores.parking import Mover, ParkingLot

SECRET = {"mobile": "13800138000", "code": "4821"}


@pytest.fixture
def lot(redis_db) -> ParkingLot:
    return ParkingLot(redis_db)


def test_entries_come_out_in_due_order(lot):
    for n, delay in enumerate([0.2, 0.0, 0.1]):
        lot.park(delay, {"n": n})
    time.sleep(0.25)
    assert [m["n"] for _, m in lot.take_due().entries] == [1, 2, 0]


def test_entries_not_due_are_not_taken(lot):
    assert lot.next_due_in() is None
    lot.park(10, {"n": 0})
    assert lot.take_due().entries == []
    assert 9.9 < lot.next_due_in() <= 10
    lot.park(-1, {"n": 1})
    assert lot.next_due_in() == 0
    assert [m for _, m in lot.take_due().entries] == [{"n": 1}]
    assert lot.size() == 2


def test_take_due_respects_the_limit(lot):
    for n in range(5):
        lot.park(0, {"n": n})
    assert len(lot.take_due(limit=3).entries) == 3
    assert len(lot.take_due(limit=3).entries) == 2
    assert lot.take_due(limit=3).entries == []


def test_a_lease_that_runs_out_makes_the_entry_due_again(lot, redis_db):
    lot.park(0, SECRET)
    [(entry_id, message)] = lot.take_due(lease=0.2).entries
    assert message == SECRET
    again = lot.take_due()
    assert again.entries == [] and 0.1 < again.next_due_in <= 0.2  # due again once the lease runs out
    assert lot.size() == 1
    time.sleep(0.25)
    assert lot.take_due() == ([(entry_id, SECRET)], 30.0)
    lot.done(entry_id)
    assert lot.size() == 0 and lot.next_due_in() is None
    assert redis_db.keys("*") == []


def test_two_movers_publish_every_message_exactly_once(lot):
    count, published, lock = 10_000, [], threading.Lock()

    def publish(message: dict) -> None:
        with lock:
            published.append(message["n"])

    movers = [Mover(lot, publish).start() for _ in range(2)]
    try:
        for n in range(count):
            lot.park((n % 1000) / 1000, {"n": n})
        wait_for(lambda: len(published) >= count, timeout=15, what="every parked message published")
        time.sleep(0.2)  # a duplicate would show up by now
    finally:
        for mover in movers:
            mover.stop()
    assert collections.Counter(published) == collections.Counter(range(count))
    assert lot.size() == 0


def test_an_idle_mover_polls_seldom_and_moves_a_park_of_its_process_at_once(lot):
    polls, published = [], []
    take_due = lot.take_due

    def counted(*args, **kwargs):
        polls.append(time.monotonic())
        return take_due(*args, **kwargs)

    lot.take_due = counted
    mover = Mover(lot, published.append, idle=5.0).start()
    try:
        wait_for(lambda: polls, timeout=5, what="the first poll")
        lot.park(0.3, {"n": 1})
        parked = time.monotonic()
        wait_for(lambda: published, timeout=5, what="the parked message")
        moved = time.monotonic() - parked
    finally:
        mover.stop()
    assert published == [{"n": 1}] and 0.25 < moved < 1.0
    assert len(polls) <= 4  # the first, the park's, the due time's (and the stop's), not one every 50 ms


def test_a_failed_publish_keeps_the_message_until_its_lease_runs_out(lot, caplog):
    attempts = []

    def publish(message: dict) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError(f"broker down while sending {message}")

    lot.park(0, SECRET)
    mover = Mover(lot, publish, interval=0.01, lease=0.3).start()
    try:
        wait_for(lambda: len(attempts) == 1, timeout=5, what="the first publish")
        assert lot.size() == 1
        wait_for(lambda: lot.size() == 0, timeout=5, what="the retried publish")
    finally:
        mover.stop()
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.28
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "RuntimeError" in warnings[0]
    assert SECRET["mobile"] not in caplog.text and SECRET["code"] not in caplog.text


def test_the_mover_outlives_redis_failures(caplog):
    down = ParkingLot(redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5))
    mover = Mover(down, lambda message: None, interval=0.01).start()
    try:
        wait_for(lambda: len(caplog.records) >= 3, timeout=5, what="several failed polls")
        assert mover.is_alive()
    finally:
        mover.stop()
    assert not mover.is_alive()
    assert all("ConnectionError" in r.getMessage() for r in caplog.records)
