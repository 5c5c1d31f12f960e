"""EnqueueRecords against the real Redis (database 5): idempotent reserve, throttle, forget."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from worker.stores.enqueues import EnqueueRecords, Reservation, task_id_for

THROTTLE_KEY = "voicecode:throttle:0123456789abcdef01234567"
WINDOWS = [(1, 60), (5, 3600)]


@pytest.fixture
def client(redis_db: redis.Redis) -> redis.Redis:
    """The shared empty test database (tests/worker/conftest.py)."""
    return redis_db


@pytest.fixture
def records(client: redis.Redis) -> EnqueueRecords:
    return EnqueueRecords(client)


def record_call(client: redis.Redis, seconds_ago: float = 0) -> None:
    """A call in the number's throttle log, as the worker records it on Submit."""
    seconds, micros = client.time()
    client.zadd(THROTTLE_KEY, {uuid.uuid4().hex: seconds + micros / 1_000_000 - seconds_ago})


def reserve(records: EnqueueRecords, request_id: str) -> Reservation:
    return records.reserve(request_id, task_id_for(request_id), THROTTLE_KEY, WINDOWS, keep_seconds=600)


def test_task_id_for_is_a_stable_uuid5() -> None:
    task_id = task_id_for("order-42")
    assert task_id == task_id_for("order-42") != task_id_for("order-43")
    assert uuid.UUID(task_id).version == 5
    assert task_id == "558974b6-9d82-55c9-9f10-e72caf470195"


def test_a_new_request_is_reserved_with_its_task_id(records: EnqueueRecords) -> None:
    assert reserve(records, "r1") == Reservation("new", task_id=task_id_for("r1"))


def test_the_same_request_again_is_existing_even_when_the_window_is_full(
    client: redis.Redis, records: EnqueueRecords
) -> None:
    assert reserve(records, "r1").status == "new"
    record_call(client)
    again = records.reserve("r1", "another-task-id", THROTTLE_KEY, WINDOWS, keep_seconds=600)
    assert again == Reservation("existing", task_id=task_id_for("r1"))


def test_a_new_request_for_a_throttled_number_waits(client: redis.Redis, records: EnqueueRecords) -> None:
    record_call(client, seconds_ago=20)
    answer = reserve(records, "r2")
    assert answer.status == "throttled" and answer.task_id is None
    assert 39 < answer.retry_after <= 40
    assert reserve(records, "r2").status == "throttled"


def test_the_longest_wait_over_every_full_window(client: redis.Redis, records: EnqueueRecords) -> None:
    for ago in (3000, 2000, 1000, 500, 100):
        record_call(client, seconds_ago=ago)
    answer = reserve(records, "r3")
    assert answer.status == "throttled"
    assert 599 < answer.retry_after <= 600


def test_reserve_does_not_record_a_call(client: redis.Redis, records: EnqueueRecords) -> None:
    assert reserve(records, "r1").status == "new"
    assert reserve(records, "r2").status == "new"
    assert client.zcard(THROTTLE_KEY) == 0


def test_no_windows_means_no_throttle(client: redis.Redis, records: EnqueueRecords) -> None:
    record_call(client)
    assert records.reserve("r1", "t1", THROTTLE_KEY, [], keep_seconds=600) == Reservation("new", task_id="t1")


def test_the_record_is_kept_for_keep_seconds_under_a_hashed_key(client: redis.Redis, records: EnqueueRecords) -> None:
    records.reserve("13800138000-login", "t1", THROTTLE_KEY, WINDOWS, keep_seconds=120)
    [key] = client.keys("voicecode:enqueue:*")
    assert b"13800138000" not in key
    assert client.get(key) == b"t1"
    assert 110 < client.ttl(key) <= 120


def test_forget_lets_the_request_be_reserved_again(records: EnqueueRecords) -> None:
    assert reserve(records, "r1").status == "new"
    records.forget("r1")
    assert reserve(records, "r1").status == "new"
    records.forget("never-reserved")


def test_racing_producers_reserve_one_request_once(records: EnqueueRecords) -> None:
    barrier = threading.Barrier(20)

    def run() -> str:
        barrier.wait()
        return reserve(records, "r1").status

    with ThreadPoolExecutor(20) as pool:
        answers = Counter(f.result() for f in [pool.submit(run) for _ in range(20)])
    assert answers == {"new": 1, "existing": 19}


def test_an_expired_record_is_a_new_request(client: redis.Redis, records: EnqueueRecords) -> None:
    records.reserve("r1", "t1", THROTTLE_KEY, WINDOWS, keep_seconds=1)
    deadline = time.monotonic() + 5
    while client.keys("voicecode:enqueue:*"):
        assert time.monotonic() < deadline, "the record did not expire"
        time.sleep(0.05)
    assert records.reserve("r1", "t2", THROTTLE_KEY, WINDOWS, keep_seconds=1) == Reservation("new", task_id="t2")

