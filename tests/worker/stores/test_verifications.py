"""VerificationStore against the real Redis (database 5): codes, attempts, expiry, races, secrecy."""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import redis

from worker.stores.verifications import CheckResult, Verification, VerificationStore, new_code

MOBILE = "13800138000"
SECRET = b"test-secret"

T = TypeVar("T")


@pytest.fixture
def client(redis_db: redis.Redis) -> redis.Redis:
    """The shared empty test database (tests/worker/conftest.py)."""
    return redis_db


@pytest.fixture
def store(client: redis.Redis) -> VerificationStore:
    return VerificationStore(client, SECRET)


def start(store: VerificationStore, mobile: str, ttl: int, length: int = 6) -> tuple[Verification, str]:
    """A new verification by a new code, and that code."""
    code = new_code(length)
    return store.start(mobile, ttl, code), code


def wrong(code: str) -> str:
    """A code of the same length that is not ``code``."""
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def concurrently(count: int, call: Callable[[], T]) -> list[T]:
    """``call()`` from ``count`` threads released together."""
    barrier = threading.Barrier(count)

    def run() -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(count) as pool:
        return [f.result() for f in [pool.submit(run) for _ in range(count)]]


@pytest.mark.parametrize("length", [4, 5, 6])
def test_start_makes_a_code_of_the_length_and_a_masked_verification(
    client: redis.Redis, store: VerificationStore, length: int
) -> None:
    verification, code = start(store, MOBILE, ttl=300, length=length)
    now = float(client.time()[0])
    assert len(code) == length and code.isascii() and code.isdigit()
    assert verification.mobile == "138****8000"
    assert verification.status == "pending"
    assert verification.replaced_task_id is None
    assert verification.id
    assert now + 298 <= verification.expires_at <= now + 302


@pytest.mark.parametrize("length", [3, 7])
def test_start_refuses_a_length_outside_4_to_6(store: VerificationStore, length: int) -> None:
    with pytest.raises(ValueError, match="length"):
        start(store, MOBILE, ttl=300, length=length)


def test_start_refuses_a_ttl_under_one_second(store: VerificationStore) -> None:
    with pytest.raises(ValueError, match="ttl"):
        start(store, MOBILE, ttl=0)


def test_the_right_code_is_approved_once_then_not_found(store: VerificationStore) -> None:
    _, code = start(store, MOBILE, ttl=300)
    assert store.check(MOBILE, code) == CheckResult("approved")
    assert store.check(MOBILE, code) == CheckResult("not_found")


def test_wrong_codes_count_down_then_lock_even_the_right_code(store: VerificationStore) -> None:
    _, code = start(store, MOBILE, ttl=300)
    answers = [store.check(MOBILE, wrong(code)) for _ in range(5)]
    assert answers == [CheckResult("rejected", left) for left in (4, 3, 2, 1, 0)]
    assert store.check(MOBILE, wrong(code)) == CheckResult("locked")
    assert store.check(MOBILE, code) == CheckResult("locked")


def test_max_attempts_is_configurable(client: redis.Redis) -> None:
    store = VerificationStore(client, SECRET, max_attempts=2)
    _, code = start(store, MOBILE, ttl=300)
    assert store.check(MOBILE, wrong(code)) == CheckResult("rejected", 1)
    assert store.check(MOBILE, wrong(code)) == CheckResult("rejected", 0)
    assert store.check(MOBILE, code) == CheckResult("locked")


def test_an_expired_code_answers_expired_not_not_found(client: redis.Redis, store: VerificationStore) -> None:
    verification, code = start(store, MOBILE, ttl=1)
    deadline = time.monotonic() + 5
    while _redis_now(client) < verification.expires_at:
        assert time.monotonic() < deadline, "the Redis clock did not pass the expiry"
        time.sleep(0.05)
    assert store.check(MOBILE, code) == CheckResult("expired")
    assert store.check(MOBILE, code) == CheckResult("expired")


def test_the_record_outlives_its_expiry_by_the_grace(client: redis.Redis) -> None:
    store = VerificationStore(client, SECRET, grace=100)
    start(store, MOBILE, ttl=10)
    [key] = client.keys("*")
    assert 100 < client.ttl(key) <= 110


def test_not_found_without_a_verification_or_for_another_number(store: VerificationStore) -> None:
    assert store.check(MOBILE, "123456") == CheckResult("not_found")
    _, code = start(store, MOBILE, ttl=300)
    assert store.check("13900139000", code) == CheckResult("not_found")


@pytest.mark.parametrize("code", ["123", "1234567", "12a4", "١٢٣٤", "1234\n", " 1234", ""])
def test_a_malformed_code_is_refused_without_costing_an_attempt(store: VerificationStore, code: str) -> None:
    _, right = start(store, MOBILE, ttl=300)
    with pytest.raises(ValueError, match="code"):
        store.check(MOBILE, code)
    assert store.check(MOBILE, wrong(right)) == CheckResult("rejected", 4)


def test_concurrent_wrong_codes_never_exceed_the_attempt_limit(client: redis.Redis, store: VerificationStore) -> None:
    _, code = start(store, MOBILE, ttl=300)
    answers = concurrently(50, lambda: store.check(MOBILE, wrong(code)))
    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {"rejected", "locked"}
    assert statuses["rejected"] == 5
    assert sorted(a.attempts_left for a in answers if a.status == "rejected") == [0, 1, 2, 3, 4]
    [key] = client.keys("*")
    assert client.hget(key, "attempts") == b"5"


def test_concurrent_right_codes_approve_exactly_once(store: VerificationStore) -> None:
    _, code = start(store, MOBILE, ttl=300)
    answers = concurrently(50, lambda: store.check(MOBILE, code))
    assert Counter(a.status for a in answers) == {"approved": 1, "not_found": 49}


def test_a_new_start_replaces_the_pending_verification(store: VerificationStore) -> None:
    old, old_code = start(store, MOBILE, ttl=300)
    assert store.attach_task(MOBILE, old.id, "task-1")
    new, new_code = start(store, MOBILE, ttl=300)
    assert new.id != old.id
    assert new.replaced_task_id == "task-1"
    assert not store.attach_task(MOBILE, old.id, "task-2")
    if old_code != new_code:
        assert store.check(MOBILE, old_code) == CheckResult("rejected", 4)
    assert store.check(MOBILE, new_code) == CheckResult("approved")


def test_attach_task_needs_a_live_verification(store: VerificationStore) -> None:
    assert not store.attach_task(MOBILE, "no-such-id", "task-1")
    verification, code = start(store, MOBILE, ttl=300)
    assert store.attach_task(MOBILE, verification.id, "task-1")
    store.check(MOBILE, code)
    assert not store.attach_task(MOBILE, verification.id, "task-1")


def test_neither_the_code_nor_the_number_is_stored(client: redis.Redis, store: VerificationStore) -> None:
    verification, code = start(store, MOBILE, ttl=300)
    store.attach_task(MOBILE, verification.id, "task-1")
    store.check(MOBILE, wrong(code))
    other_mobile = "13900139000"
    _, other_code = start(store, other_mobile, ttl=300)
    secrets_ = [MOBILE.encode(), code.encode(), other_mobile.encode(), other_code.encode()]
    stored = []
    for key in client.scan_iter("*"):
        assert client.type(key) == b"hash"
        stored.append(key)
        for field, value in client.hgetall(key).items():
            stored += [field, value]
    assert len(stored) > 2
    for blob in stored:
        for secret in secrets_:
            assert secret not in blob, (secret, blob)


def test_another_secret_sees_nothing(client: redis.Redis, store: VerificationStore) -> None:
    _, code = start(store, MOBILE, ttl=300)
    assert VerificationStore(client, b"another").check(MOBILE, code) == CheckResult("not_found")


def test_an_empty_secret_is_refused(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="secret"):
        VerificationStore(client, b"")


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000
