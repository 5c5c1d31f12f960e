"""Per-number throttle against the real Redis: every window, retry_after, quota kept and given back, ihuyi's blocks."""
from __future__ import annotations

import hashlib
import re
import threading
import time

import pytest

from config.settings import Window
from tests.worker.stores.rules import RuleThrottle
from worker.stores.throttle import number_key

MOBILE = "13800138000"
OTHER = "13912345678"


@pytest.mark.parametrize("window", [Window(1, 1), Window(3, 3), Window(2, 5)])
def test_each_window_allows_its_limit_then_says_how_long_to_wait(redis_db, window):
    throttle = RuleThrottle(redis_db, [window])
    started = time.time()
    assert [throttle.acquire(MOBILE) for _ in range(window.limit)] == [0.0] * window.limit
    retry = throttle.acquire(MOBILE)
    assert window.seconds - (time.time() - started) - 0.01 <= retry <= window.seconds
    assert throttle.retry_after(MOBILE) == pytest.approx(retry, abs=0.05)


def test_the_longest_wait_over_all_windows_wins(redis_db):
    throttle = RuleThrottle(redis_db, [Window(1, 1), Window(2, 3)])
    assert throttle.acquire(MOBILE) == 0.0
    first = throttle.acquire(MOBILE)
    assert 0.9 < first <= 1.0  # only the 1 s window is full
    time.sleep(first)
    assert throttle.acquire(MOBILE) == 0.0
    second = throttle.acquire(MOBILE)
    assert 1.9 < second <= 2.0  # the 1 s window frees in 1 s, the 3 s window only in 2 s


def test_a_call_is_allowed_again_after_retry_after(redis_db):
    throttle = RuleThrottle(redis_db, [Window(1, 1)])
    assert throttle.acquire(MOBILE) == 0.0
    time.sleep(throttle.retry_after(MOBILE))
    assert throttle.retry_after(MOBILE) == 0.0
    assert throttle.acquire(MOBILE) == 0.0


def test_retry_after_records_nothing(redis_db):
    throttle = RuleThrottle(redis_db, [Window(1, 60)])
    assert [throttle.retry_after(MOBILE) for _ in range(5)] == [0.0] * 5
    assert redis_db.keys("*") == []
    assert throttle.acquire(MOBILE) == 0.0


def test_a_throttled_call_does_not_use_up_the_quota(redis_db):
    throttle = RuleThrottle(redis_db, [Window(1, 1), Window(2, 60)])
    assert throttle.acquire(MOBILE) == 0.0
    assert all(throttle.acquire(MOBILE) > 0 for _ in range(5))
    time.sleep(throttle.retry_after(MOBILE))
    assert throttle.acquire(MOBILE) == 0.0  # the 5 refusals did not count towards 2/60s
    assert throttle.acquire(MOBILE) > 1.0


def test_release_gives_the_call_back(redis_db):
    throttle = RuleThrottle(redis_db, [Window(1, 60)])
    assert throttle.acquire(MOBILE, "r-1") == 0.0
    assert throttle.acquire(MOBILE, "r-2") > 59
    throttle.release(MOBILE, "r-1")
    assert throttle.retry_after(MOBILE) == 0.0
    assert throttle.acquire(MOBILE, "r-2") == 0.0
    throttle.release(OTHER, "r-2")  # nothing recorded: nothing happens


def test_a_request_is_counted_once_however_many_attempts_it_takes(redis_db):
    throttle = RuleThrottle(redis_db, [Window(1, 60)])
    assert throttle.acquire(MOBILE, "login:13800138000") == 0.0
    assert throttle.acquire(MOBILE, "login:13800138000") == 0.0  # its retry
    assert throttle.acquire(MOBILE, "another") > 59
    assert redis_db.zcard(number_key("voicecode:throttle:", MOBILE)) == 1


def test_numbers_are_independent(redis_db):
    throttle = RuleThrottle(redis_db, [Window(1, 60)])
    assert throttle.acquire(MOBILE) == 0.0
    assert throttle.acquire(OTHER) == 0.0
    assert throttle.acquire(MOBILE) > 0 and throttle.acquire(OTHER) > 0


def test_concurrent_callers_get_exactly_the_limit(redis_db):
    throttle = RuleThrottle(redis_db, [Window(3, 60)])
    start, answers = threading.Barrier(20), []

    def call() -> None:
        start.wait()
        answers.append(throttle.acquire(MOBILE))

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(0.0) == 3


def test_no_windows_never_throttles_by_itself(redis_db):
    throttle = RuleThrottle(redis_db, [])
    assert [throttle.acquire(MOBILE) for _ in range(10)] == [0.0] * 10
    assert throttle.retry_after(MOBILE) == 0.0
    throttle.release(MOBILE, "r-1")
    assert redis_db.keys("*") == []


def test_redis_never_holds_the_number(redis_db):
    throttle = RuleThrottle(redis_db, [Window(1, 1), Window(5, 3600)])
    throttle.acquire(MOBILE, f"login:{MOBILE}")
    keys = [k.decode() for k in redis_db.keys("*")]
    assert keys == ["voicecode:throttle:" + hashlib.sha256(MOBILE.encode()).hexdigest()[:24]]
    stored = keys[0] + " ".join(m.decode() for m in redis_db.zrange(keys[0], 0, -1))
    runs = {MOBILE[i:i + 4] for i in range(len(MOBILE) - 3)}
    assert not any(run in stored for run in runs)
    assert not re.search(r"1[3-9]\d{9}", stored)


def test_log_is_trimmed_to_the_longest_window_and_expires(redis_db):
    throttle = RuleThrottle(redis_db, [Window(5, 1)])
    throttle.acquire(MOBILE)
    time.sleep(1.05)
    throttle.acquire(MOBILE)
    (key,) = redis_db.keys("*")
    assert redis_db.zcard(key) == 1
    assert 1000 < redis_db.pttl(key) <= 2000


def test_a_block_refuses_the_number_for_its_window_whatever_the_windows(redis_db):
    for windows in ([], [Window(5, 60)]):
        throttle = RuleThrottle(redis_db, windows)
        throttle.block(MOBILE, 60)
        assert 59 < throttle.retry_after(MOBILE) <= 60
        assert 59 < throttle.acquire(MOBILE, "r-1") <= 60
        assert throttle.retry_after(OTHER) == 0.0  # its number only
        redis_db.flushdb()


def test_a_block_ends_with_its_window(redis_db):
    throttle = RuleThrottle(redis_db, [])
    throttle.block(MOBILE, 0.3)
    assert throttle.acquire(MOBILE) > 0
    time.sleep(throttle.retry_after(MOBILE) + 0.01)
    assert throttle.acquire(MOBILE) == 0.0


def test_a_shorter_block_never_cuts_a_longer_one(redis_db):
    throttle = RuleThrottle(redis_db, [])
    throttle.block(MOBILE, 86400)
    throttle.block(MOBILE, 60)
    assert throttle.retry_after(MOBILE) > 86000
    throttle.block(OTHER, 60)
    throttle.block(OTHER, 3600)
    assert throttle.retry_after(OTHER) > 3500


def test_a_block_keeps_the_number_out_of_redis(redis_db):
    RuleThrottle(redis_db, []).block(MOBILE, 60)
    (key,) = [k.decode() for k in redis_db.keys("*")]
    assert key == number_key("voicecode:throttle:", MOBILE) + ":blocked"
    assert MOBILE not in key + redis_db.get(key).decode()


def test_the_producers_reservation_sees_a_block(redis_db):
    """The producer's reservation (worker/stores/idempotency_reserve.lua) refuses a new request to a blocked number."""
    from worker.stores.idempotency import IdempotencyStore

    RuleThrottle(redis_db, []).block(MOBILE, 3600)
    requests, throttle = IdempotencyStore(redis_db, lease_seconds=0), RuleThrottle(redis_db, [])
    refused = requests.reserve("r-1", "t-1", (MOBILE,), (MOBILE,), throttle=(*throttle.keys(MOBILE), "m1"), windows=[])
    assert refused.status == "throttled" and 3599 < refused.retry_after <= 3600
    assert requests.reserve("r-2", "t-2", (OTHER,), (OTHER,), throttle=(*throttle.keys(OTHER), "m2"),
                            windows=[]).status == "new"